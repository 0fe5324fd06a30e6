package demo_test

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/caesura-go/caesura/internal/demo"
	"github.com/caesura-go/caesura/memlock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTransfersKeepBalance(t *testing.T) {
	l := memlock.New(memlock.Options{})
	res, err := demo.Run(context.Background(), demo.Config{Workers: 8, Accounts: 8, Transfers: 2000, Lock: l.Mutex})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() || res.Transfers != 2000 {
		t.Fatalf("result %+v: want 2000 transfers, balance unchanged, no deadlock", res)
	}
	if res.Refusals == 0 || res.Restarts == 0 {
		t.Fatalf("no out-of-order refusal in 2000 transfers over 8 accounts (%+v): the sequential-yield path was not exercised", res)
	}
	var b strings.Builder
	res.Print(&b)
	if !strings.Contains(b.String(), "verdict") || !strings.Contains(b.String(), "OK") {
		t.Fatalf("summary:\n%s", b.String())
	}
	if l.Len() != 0 {
		t.Fatalf("%d keys held after the run", l.Len())
	}
}
