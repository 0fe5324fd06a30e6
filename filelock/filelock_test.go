//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package filelock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/locktest"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(childMain(mode))
	}
	goleak.VerifyTestMain(m)
}

func newLocker(t testing.TB, dir string) *Locker {
	t.Helper()
	l, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func acquire(t testing.TB, l caesura.Lock) caesura.Held {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := l.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", l.Key(), err)
	}
	return h
}

func release(t testing.TB, h caesura.Held) {
	t.Helper()
	if err := h.Release(context.Background()); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

// acquireInGoroutine is acquire for goroutines other than the test's: it
// reports failure with t.Error and returns nil.
func acquireInGoroutine(t testing.TB, l caesura.Lock) caesura.Held {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := l.Acquire(ctx)
	if err != nil {
		t.Errorf("Acquire(%q): %v", l.Key(), err)
		return nil
	}
	return h
}

func releaseInGoroutine(t testing.TB, h caesura.Held) {
	if err := h.Release(context.Background()); err != nil {
		t.Errorf("Release: %v", err)
	}
}

// tryTaken checks that l cannot be taken now.
func tryTaken(t testing.TB, l caesura.Lock) {
	t.Helper()
	h, err := l.(caesura.TryLocker).TryAcquire(context.Background())
	if err == nil {
		h.Release(context.Background())
		t.Fatalf("TryAcquire(%q) succeeded, want it taken", l.Key())
	}
	if !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("TryAcquire(%q) = %v, want an error matching ErrNotAcquired", l.Key(), err)
	}
}

func TestDefaults(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	l, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := filepath.Dir(l.Dir()), tmp; got != want {
		t.Errorf("default dir %q is not under TMPDIR %q", l.Dir(), want)
	}
	fi, err := os.Stat(l.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("default dir mode = %v, want 0700", got)
	}
	if got, want := l.Mutex("x").Key(), "file:x"; got != want {
		t.Errorf("Key() = %q, want %q", got, want)
	}
	// A default directory that others can write to is refused.
	if err := os.Chmod(l.Dir(), 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{}); err == nil {
		t.Errorf("New accepted a world-writable default directory")
	}
	// A link in its place is refused too.
	os.Remove(l.Dir())
	if err := os.Symlink(t.TempDir(), l.Dir()); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{}); err == nil {
		t.Errorf("New accepted a symbolic link as the default directory")
	}

	l2, err := New(Options{Dir: filepath.Join(tmp, "a", "b"), Prefix: "host:"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l2.Mutex("x").Key(), "host:x"; got != want {
		t.Errorf("Key() = %q, want %q", got, want)
	}
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Dir: file}); err == nil {
		t.Errorf("New accepted a regular file as its directory")
	}
}

// TestHostileNames checks that any key gets a file inside the directory.
func TestHostileNames(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "locks")
	l := newLocker(t, dir)
	names := []string{"../../etc/passwd", "../escape", "/abs", ".", "..", "\x00", "\xff", "a/b/c", strings.Repeat("../", 100)}
	var helds []caesura.Held
	for _, n := range names {
		helds = append(helds, acquire(t, l.Mutex(n)))
	}
	for _, h := range helds {
		release(t, h)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(entries), len(names); got != want {
		t.Errorf("got %d files, want %d (one per key)", got, want)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			t.Errorf("%s is not a regular file", e.Name())
		}
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, fileName("file:"+n))); err != nil {
			t.Errorf("key %q: %v", n, err)
		}
	}
	if top, _ := os.ReadDir(root); len(top) != 1 {
		t.Errorf("files escaped the lock directory: %v", top)
	}
}

// TestExclusion runs goroutines on two Lockers sharing a directory (two
// Lockers exclude each other like two processes) and checks that no two hold
// the lock at once.
func TestExclusion(t *testing.T) {
	dir := t.TempDir()
	ls := []*Locker{newLocker(t, dir), newLocker(t, dir)}
	var inside atomic.Int32
	counter := 0
	var wg sync.WaitGroup
	const goroutines, rounds = 6, 150
	for i := range goroutines {
		wg.Go(func() {
			lk := ls[i%2].Mutex("shared")
			for range rounds {
				h := acquireInGoroutine(t, lk)
				if h == nil {
					return
				}
				if n := inside.Add(1); n != 1 {
					t.Errorf("%d holders at once, want 1", n)
				}
				counter++
				inside.Add(-1)
				releaseInGoroutine(t, h)
			}
		})
	}
	wg.Wait()
	if got, want := counter, goroutines*rounds; got != want {
		t.Errorf("counter = %d, want %d", got, want)
	}
	for _, l := range ls {
		if n := l.gates.Len(); n != 0 {
			t.Errorf("gate has %d entries after all released, want 0", n)
		}
	}
}

func TestTryAcquire(t *testing.T) {
	dir := t.TempDir()
	a, b := newLocker(t, dir), newLocker(t, dir)
	h := acquire(t, a.Mutex("k"))
	tryTaken(t, a.Mutex("k")) // same Locker: the gate says taken
	tryTaken(t, b.Mutex("k")) // other Locker: flock says taken
	h2, err := b.Mutex("other").(caesura.TryLocker).TryAcquire(context.Background())
	if err != nil {
		t.Fatalf("TryAcquire on a free key: %v", err)
	}
	release(t, h2)
	release(t, h)
	h3, err := b.Mutex("k").(caesura.TryLocker).TryAcquire(context.Background())
	if err != nil {
		t.Fatalf("TryAcquire after release: %v", err)
	}
	release(t, h3)
}

func TestStaleRelease(t *testing.T) {
	dir := t.TempDir()
	a, b := newLocker(t, dir), newLocker(t, dir)
	h1 := acquire(t, a.Mutex("k"))
	release(t, h1)
	h2 := acquire(t, a.Mutex("k"))
	if err := h1.Release(context.Background()); !errors.Is(err, caesura.ErrNotHeld) {
		t.Errorf("second Release = %v, want an error matching ErrNotHeld", err)
	}
	tryTaken(t, a.Mutex("k"))
	tryTaken(t, b.Mutex("k"))
	release(t, h2)
	if err := h2.Release(context.Background()); !errors.Is(err, caesura.ErrNotHeld) {
		t.Errorf("second Release = %v, want an error matching ErrNotHeld", err)
	}
}

func TestFencing(t *testing.T) {
	dir := t.TempDir()
	a, b := newLocker(t, dir), newLocker(t, dir)
	var last uint64
	for i, l := range []*Locker{a, b, a, newLocker(t, dir)} { // the last is a "restart"
		h := acquire(t, l.Mutex("k"))
		tok := h.(caesura.Fenced).Token()
		if tok <= last {
			t.Errorf("acquisition %d: token %d, want more than %d", i, tok, last)
		}
		last = tok
		release(t, h)
	}
	raw, err := os.ReadFile(filepath.Join(dir, fileName("file:k")))
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) < 8 || binary.BigEndian.Uint64(raw[:8]) != last {
		t.Errorf("lock file holds %x, want the last token %d as its first 8 big-endian bytes", raw, last)
	}
	h := acquire(t, a.Mutex("other"))
	if got := h.(caesura.Fenced).Token(); got != 1 {
		t.Errorf("first token of a new key = %d, want 1", got)
	}
	release(t, h)
}

// TestCancel checks that a context ends a wait, both in the gate (same
// Locker) and in flock (another Locker), and that an abandoned flock wait
// frees the key once the holder releases.
func TestCancel(t *testing.T) {
	dir := t.TempDir()
	a, b := newLocker(t, dir), newLocker(t, dir)
	h := acquire(t, a.Mutex("k"))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Mutex("free").Acquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire with a cancelled context = %v, want ErrNotAcquired and context.Canceled", err)
	}

	for _, l := range []*Locker{a, b, b} { // b twice: the second waits in the gate behind b's abandoned helper
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		start := time.Now()
		_, err := l.Mutex("k").Acquire(ctx)
		cancel()
		if !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Acquire of a held lock = %v, want ErrNotAcquired and DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Acquire returned after %v, want about 30ms", d)
		}
	}

	cause := errors.New("shutting down")
	cctx, ccancel := context.WithCancelCause(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); ccancel(cause) }()
	if _, err := b.Mutex("k").Acquire(cctx); !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.Canceled) || !errors.Is(err, cause) {
		t.Errorf("Acquire cancelled with a cause = %v, want ErrNotAcquired, context.Canceled and the cause", err)
	}

	release(t, h)
	// b's abandoned helper now gets the file lock, drops it and frees the
	// gate, so b can take the key.
	h = acquire(t, b.Mutex("k"))
	release(t, h)
	h = acquire(t, a.Mutex("k"))
	release(t, h)
}

// TestDeletedFile checks that a lock file deleted while a Locker keeps it
// open (a temp-file cleaner, say) does not break exclusion: the next
// acquisition notices that its descriptor names a dead file.
func TestDeletedFile(t *testing.T) {
	dir := t.TempDir()
	a, b := newLocker(t, dir), newLocker(t, dir)
	release(t, acquire(t, a.Mutex("k"))) // a keeps the descriptor open
	if err := os.Remove(filepath.Join(dir, fileName("file:k"))); err != nil {
		t.Fatal(err)
	}
	h := acquire(t, b.Mutex("k")) // creates a new file
	tryTaken(t, a.Mutex("k"))
	release(t, h)
	h = acquire(t, a.Mutex("k"))
	tryTaken(t, b.Mutex("k"))
	release(t, h)
}

// TestIdleFiles checks that a Locker keeps at most maxIdleFiles descriptors
// open for keys nobody holds.
func TestIdleFiles(t *testing.T) {
	l := newLocker(t, t.TempDir())
	for i := range maxIdleFiles + 10 {
		release(t, acquire(t, l.Mutex(fmt.Sprint(i))))
	}
	l.idle.mu.Lock()
	n := len(l.idle.fds)
	l.idle.mu.Unlock()
	if n != maxIdleFiles {
		t.Errorf("%d idle descriptors, want %d", n, maxIdleFiles)
	}
	l.idle.closeAll()
	if len(l.idle.fds) != 0 {
		t.Errorf("closeAll left %d descriptors", len(l.idle.fds))
	}
	release(t, acquire(t, l.Mutex("0"))) // still usable: reopens
}

func TestEmptyName(t *testing.T) {
	lk := newLocker(t, t.TempDir()).Mutex("")
	if _, err := lk.Acquire(context.Background()); !errors.Is(err, caesura.ErrInvalidLock) {
		t.Errorf("Acquire of an empty name = %v, want an error matching ErrInvalidLock", err)
	}
	if _, err := lk.(caesura.TryLocker).TryAcquire(context.Background()); !errors.Is(err, caesura.ErrInvalidLock) {
		t.Errorf("TryAcquire of an empty name = %v, want an error matching ErrInvalidLock", err)
	}
}

func TestConformance(t *testing.T) {
	t.Run("OneLocker", func(t *testing.T) {
		l := newLocker(t, t.TempDir())
		locktest.Run(t, locktest.Harness{Lock: l.Mutex})
	})
	// Two Lockers on one directory exclude each other like two processes.
	// Handing out their locks in turn sends the suite's contention through
	// flock(2) rather than the in-process gate.
	t.Run("TwoLockers", func(t *testing.T) {
		dir := t.TempDir()
		ls := []*Locker{newLocker(t, dir), newLocker(t, dir)}
		var n atomic.Int64
		locktest.Run(t, locktest.Harness{Lock: func(name string) caesura.Lock { return ls[n.Add(1)%2].Mutex(name) }})
	})
}

func TestInterfaces(t *testing.T) {
	l := newLocker(t, t.TempDir())
	var lk caesura.Lock = l.Mutex("k")
	if _, ok := lk.(caesura.TryLocker); !ok {
		t.Errorf("Mutex does not implement TryLocker")
	}
	h := acquire(t, lk)
	if _, ok := h.(caesura.Fenced); !ok {
		t.Errorf("Held does not implement Fenced")
	}
	release(t, h)
}
