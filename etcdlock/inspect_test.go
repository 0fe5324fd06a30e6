package etcdlock

import (
	"strings"
	"testing"

	"github.com/caesura-go/caesura"
)

// Inspect reports free, then the holder's token and lease, taking nothing.
func TestInspect(t *testing.T) {
	ctx := testCtx(t)
	l := testLocker(t, sharedClient(t))
	m := l.Mutex("inspected").(caesura.Inspector)
	if st, err := m.Inspect(ctx); err != nil || st != (caesura.LockState{}) {
		t.Fatalf("free: %+v, %v", st, err)
	}
	h, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := m.Inspect(ctx)
	if err != nil || !st.Held || st.Token != h.(caesura.Fenced).Token() || !strings.HasPrefix(st.Holder, "lease ") {
		t.Fatalf("held: %+v, %v; want held, token %d, a lease as holder", st, err, h.(caesura.Fenced).Token())
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Inspect(ctx); err != nil || st.Held {
		t.Fatalf("released: %+v, %v", st, err)
	}
}
