package memlock_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

// The allocation budget, kept as a test: allocation counts do not
// depend on the machine's speed, so this cannot flake on a slow machine.
func TestAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	ctx := context.Background()
	l := memlock.New(memlock.Options{}).Mutex("k")
	bare := testing.AllocsPerRun(1000, func() {
		h, err := l.Acquire(ctx)
		if err != nil {
			panic(err)
		}
		_ = h.Release(ctx)
	})
	if bare > 1 {
		t.Errorf("bare acquire+release: %v allocations, want at most 1 (the handle)", bare)
	}
	fn := func(ctx context.Context, yield caesura.Yield) error { return yield(l) }
	run := testing.AllocsPerRun(1000, func() {
		if err := caesura.Run(ctx, fn); err != nil {
			panic(err)
		}
	})
	if run > 3 {
		t.Errorf("Run + one yield + release: %v allocations, want at most 3", run)
	}
}

// A handle in the slot a scope lends behaves as any other: a second release
// fails and changes nothing, even after the key was taken again.
func TestLentHandleIsNotReused(t *testing.T) {
	ctx := context.Background()
	ml := memlock.New(memlock.Options{})
	var first caesura.Held
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		h, err := ml.Mutex("a").Acquire(ctx) // ctx is the scope: the handle is its lent slot
		if err != nil {
			return err
		}
		first = h
		h2, err := ml.Mutex("b").Acquire(ctx) // the slot is gone: a handle of its own
		if err != nil {
			return err
		}
		if err := h2.Release(ctx); err != nil {
			return err
		}
		return h.Release(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := ml.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("stale release: %v, want ErrNotHeld", err)
	}
	if _, err := ml.Mutex("a").(caesura.TryLocker).TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("the stale release freed the new holder's lock: try got %v", err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := ml.Len(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}

// Waiters that got the lock take their handles from a slab of the key's
// entry. Each is still its own: a stale one fails with ErrNotHeld and leaves
// the current holder's lock alone, and tokens still only grow.
func TestHandOffHandlesAreUnique(t *testing.T) {
	ctx := context.Background()
	l := memlock.New(memlock.Options{})
	m := l.Mutex("k")
	const waiters = 70 // more than one slab
	first, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan caesura.Held, waiters)
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(func() {
			h, err := m.Acquire(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			got <- h
			if err := h.Release(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	for l.Waiting("k") != waiters+1 { // the holder and every waiter
		runtime.Gosched()
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(got)
	last, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[caesura.Held]bool{}
	prev := first.(caesura.Fenced).Token()
	for h := range got {
		if seen[h] {
			t.Fatal("two acquisitions got the same handle")
		}
		seen[h] = true
		if tok := h.(caesura.Fenced).Token(); tok <= prev {
			t.Fatalf("token %d after %d", tok, prev)
		} else {
			prev = tok
		}
		if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
			t.Fatalf("stale release: got %v, want ErrNotHeld", err)
		}
	}
	if _, err := m.(caesura.TryLocker).TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("a stale release freed the holder's lock: try got %v", err)
	}
	if err := last.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}

// A yield that waits for its key makes no cancellable context for the wait
// (the scope waits through lend.Waiter): a contended Run allocates what an
// uncontended one does. Making the context would cost four allocations more
// per wait (the cancelCtx, its cancel func, the scope's record of them and
// the Done channel).
func TestContendedRunAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	ctx := context.Background()
	ml := memlock.New(memlock.Options{})
	l := ml.Mutex("k")
	fn := func(ctx context.Context, yield caesura.Yield) error { return yield(l) }
	run := testing.AllocsPerRun(100, func() {
		if err := caesura.Run(ctx, fn); err != nil {
			panic(err)
		}
	})

	// Each round: the test holds the key, a Run in another goroutine
	// waits for it, the test lets it go once the Run is parked, and takes
	// it back after the Run.
	start, done := make(chan struct{}), make(chan error)
	go func() {
		for range start {
			done <- caesura.Run(ctx, fn)
		}
	}()
	defer close(start)
	h, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	contended := testing.AllocsPerRun(100, func() {
		start <- struct{}{}
		for ml.Waiting("k") != 2 { // AllocsPerRun runs on one P: the Run parks before this goroutine runs again
			runtime.Gosched()
		}
		if err := h.Release(ctx); err != nil {
			panic(err)
		}
		if err := <-done; err != nil {
			panic(err)
		}
		if h, err = l.Acquire(ctx); err != nil {
			panic(err)
		}
	})
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// The holder's handle is the one allocation more; the waiters' slab
	// (one per 32 hand-offs) rounds away.
	if contended > run+1 {
		t.Errorf("contended round: %v allocations, want at most %v (an uncontended Run's %v and the holder's handle)", contended, run+1, run)
	}
}
