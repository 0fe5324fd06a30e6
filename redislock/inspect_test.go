package redislock_test

import (
	"testing"
	"time"

	"github.com/caesura-go/caesura"
)

// Inspect tells free from held and reports the fencing counter, taking
// neither the lock nor a token.
func TestInspect(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, nil)
	ctx := ctxT(t, 10*time.Second)
	m := l.Mutex("inspected")
	var in caesura.Inspector = m
	st, err := in.Inspect(ctx)
	if err != nil || st.Held || st.Token != 0 {
		t.Fatalf("never locked: %+v, %v", st, err)
	}
	h, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok := h.(caesura.Fenced).Token()
	if st, err = in.Inspect(ctx); err != nil || !st.Held || st.Token != tok {
		t.Fatalf("held: %+v, %v; want held with token %d", st, err, tok)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err = in.Inspect(ctx); err != nil || st.Held || st.Token != tok {
		t.Fatalf("released: %+v, %v; want free with token %d", st, err, tok)
	}
	h, err = m.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(ctx)
	if got := h.(caesura.Fenced).Token(); got != tok+1 {
		t.Fatalf("token after inspections %d, want %d", got, tok+1)
	}
}
