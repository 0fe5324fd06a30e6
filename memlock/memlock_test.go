package memlock_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/caesura-go/caesura/locktest"
	"github.com/caesura-go/caesura/memlock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	l := memlock.New(memlock.Options{})
	locktest.Run(t, locktest.Harness{Lock: l.Mutex})
	if n := l.Len(); n != 0 {
		t.Fatalf("after the suite the Locker keeps %d entries, want 0", n)
	}
}
