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
