package filelock

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
)

// Inspect tells free from held, names the holder and the time it took the
// lock, reports the token, and takes no token itself.
func TestInspect(t *testing.T) {
	ctx := context.Background()
	l := newLocker(t, t.TempDir())
	m := l.Mutex("report").(caesura.Inspector)
	st, err := m.Inspect(ctx)
	if err != nil || st != (caesura.LockState{}) {
		t.Fatalf("never locked: %+v, %v; want the zero state", st, err)
	}
	before := time.Now()
	h := acquire(t, m)
	tok := h.(caesura.Fenced).Token()
	st, err = m.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	wantHolder := fmt.Sprintf("%s pid %d", host, os.Getpid())
	if !st.Held || st.Token != tok || st.Holder != wantHolder || st.Since.Before(before.Add(-time.Second)) || time.Since(st.Since) > time.Minute {
		t.Fatalf("held: %+v; want held, token %d, holder %q, since about %v", st, tok, wantHolder, before)
	}
	// Inspecting does not get in the way of a try, and takes no token.
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = m.Inspect(ctx)
	if err != nil || st.Held || st.Token != tok || st.Holder != "" {
		t.Fatalf("released: %+v, %v; want free with the last token %d", st, err, tok)
	}
	h2, err := m.(caesura.TryLocker).TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Release(ctx)
	if got := h2.(caesura.Fenced).Token(); got != tok+1 {
		t.Fatalf("token after inspections %d, want %d (Inspect must not take tokens)", got, tok+1)
	}
	if _, err := l.Mutex("").(caesura.Inspector).Inspect(ctx); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty name: %v", err)
	}
}
