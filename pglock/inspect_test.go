package pglock_test

import (
	"strings"
	"testing"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/pglock"
)

// Inspect finds the holder's session in pg_locks, taking nothing.
func TestInspect(t *testing.T) {
	pool := newPool(t, 4)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	m := l.Mutex("inspected").(caesura.Inspector)
	if st, err := m.Inspect(ctx); err != nil || st.Held {
		t.Fatalf("free: %+v, %v", st, err)
	}
	h, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := m.Inspect(ctx)
	if err != nil || !st.Held || !strings.HasPrefix(st.Holder, "pid ") || st.Since.IsZero() {
		t.Fatalf("held: %+v, %v; want held, a pid as holder, a time", st, err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Inspect(ctx); err != nil || st.Held {
		t.Fatalf("released: %+v, %v", st, err)
	}
	if _, err := l.Mutex("").(caesura.Inspector).Inspect(ctx); err == nil {
		t.Fatal("empty name: no error")
	}
}
