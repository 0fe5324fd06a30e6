package locktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
)

type suite struct {
	Harness
	prefix string
}

// name returns a lock name unique to this run of the suite.
func (s *suite) name(t *testing.T, part string) string {
	return s.prefix + t.Name() + "/" + part
}

func (s *suite) lock(t *testing.T, part string) caesura.Lock {
	return s.Lock(s.name(t, part))
}

// ctx returns a context that ends well after any correct backend is done.
func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 6*s.HandOff+10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func runSuite(t *testing.T, h Harness) {
	if h.Lock == nil {
		t.Fatal("locktest: Harness.Lock is nil")
	}
	if h.HandOff <= 0 {
		h.HandOff = 10 * time.Second
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	s := &suite{Harness: h, prefix: "locktest-" + hex.EncodeToString(b[:]) + "/"}

	t.Run("AcquireRelease", s.acquireRelease)
	t.Run("StaleRelease", s.staleRelease)
	t.Run("Try", s.try)
	t.Run("FencingTokens", s.fencing)
	t.Run("MutualExclusion", s.mutualExclusion)
	t.Run("CancelWhileWaiting", s.cancelWhileWaiting)
	t.Run("ContextDoneBeforeYield", s.contextDone)
	t.Run("HandOff", s.handOff)
	t.Run("Batch", s.batch)
	t.Run("OutOfOrder", s.outOfOrder)
	t.Run("CrossYieldDeadlockFreedom", s.crossYield)
	t.Run("RandomTransfers", s.randomTransfers)
	t.Run("EmptyName", s.emptyName)
	t.Run("BadInput", s.badInput)
	t.Run("Loss", s.loss)
}

// free reports whether l can be acquired now (within a short wait).
func (s *suite) free(t *testing.T, l caesura.Lock) bool {
	t.Helper()
	if tl, ok := l.(caesura.TryLocker); ok {
		h, err := tl.TryAcquire(s.ctx(t))
		if err != nil {
			if !errors.Is(err, caesura.ErrNotAcquired) {
				t.Fatalf("TryAcquire(%q): got %v, want nil or ErrNotAcquired", l.Key(), err)
			}
			return false
		}
		if err := h.Release(s.ctx(t)); err != nil {
			t.Fatalf("Release(%q): %v", l.Key(), err)
		}
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	h, err := l.Acquire(ctx)
	if err != nil {
		return false
	}
	if err := h.Release(s.ctx(t)); err != nil {
		t.Fatalf("Release(%q): %v", l.Key(), err)
	}
	return true
}

func (s *suite) acquireRelease(t *testing.T) {
	l := s.lock(t, "a")
	ran := false
	err := caesura.Run(s.ctx(t), func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l); err != nil {
			return err
		}
		if s.free(t, l) {
			t.Errorf("lock %q is free while the scope holds it", l.Key())
		}
		// Yielding a held key again is a no-op, not a self-deadlock.
		if err := yield(l, s.Lock(s.name(t, "a"))); err != nil {
			return fmt.Errorf("second yield of a held key: %w", err)
		}
		ran = true
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !ran {
		t.Fatal("the function did not run to its end")
	}
	if !s.free(t, l) {
		t.Fatalf("lock %q is still held after Run returned", l.Key())
	}
}

func (s *suite) staleRelease(t *testing.T) {
	ctx := s.ctx(t)
	l := s.lock(t, "a")
	h1, err := l.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if err := h1.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := h1.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("second Release: got %v, want ErrNotHeld", err)
	}
	h2, err := l.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire after release: %v", err)
	}
	if err := h1.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("stale Release while another holds the lock: got %v, want ErrNotHeld", err)
	}
	if s.free(t, l) {
		t.Fatal("a stale Release freed the new holder's lock")
	}
	if err := h2.Release(ctx); err != nil {
		t.Fatalf("Release by the holder: %v", err)
	}
}

func (s *suite) try(t *testing.T) {
	l := s.lock(t, "a")
	tl, ok := l.(caesura.TryLocker)
	if !ok {
		t.Skipf("%T does not implement caesura.TryLocker", l)
	}
	ctx := s.ctx(t)
	h, err := tl.TryAcquire(ctx)
	if err != nil {
		t.Fatalf("TryAcquire of a free lock: %v", err)
	}
	if _, err := tl.TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("TryAcquire of a held lock: got %v, want ErrNotAcquired", err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	h, err = tl.TryAcquire(ctx)
	if err != nil {
		t.Fatalf("TryAcquire after release: %v", err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

func (s *suite) fencing(t *testing.T) {
	l := s.lock(t, "a")
	var last uint64
	for i := range 5 {
		var tok uint64
		err := caesura.Run(s.ctx(t), func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(l); err != nil {
				return err
			}
			var ok bool
			tok, ok = caesura.Token(ctx, l)
			if !ok {
				return errSkip
			}
			return nil
		})
		if errors.Is(err, errSkip) {
			t.Skipf("%T issues no fencing tokens", l)
		}
		if err != nil {
			t.Fatalf("Run %d: %v", i, err)
		}
		if tok <= last {
			t.Fatalf("acquisition %d: token %d, want above the previous %d", i, tok, last)
		}
		last = tok
	}
}

var errSkip = errors.New("skip")

// mutualExclusion runs a read-pause-write counter from many goroutines: any
// overlap of two holders loses an update.
func (s *suite) mutualExclusion(t *testing.T) {
	const workers, rounds = 8, 25
	l := s.lock(t, "counter")
	var counter, inside, overlaps atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range rounds {
				err := caesura.Run(s.ctx(t), func(ctx context.Context, yield caesura.Yield) error {
					if err := yield(l); err != nil {
						return err
					}
					if inside.Add(1) != 1 {
						overlaps.Add(1)
					}
					v := counter.Load()
					time.Sleep(50 * time.Microsecond)
					counter.Store(v + 1)
					inside.Add(-1)
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Run: %v", err)
	}
	if got, want := counter.Load(), int64(workers*rounds); got != want {
		t.Fatalf("counter = %d, want %d (lost updates: mutual exclusion broken)", got, want)
	}
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("%d critical sections overlapped", n)
	}
}

func (s *suite) cancelWhileWaiting(t *testing.T) {
	ctx := s.ctx(t)
	l := s.lock(t, "a")
	h, err := l.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	ran := false
	err = caesura.Run(wctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l); err != nil {
			return err
		}
		ran = true
		return nil
	})
	if ran {
		t.Fatal("the function ran past a yield whose lock was held by another")
	}
	if !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: got %v, want ErrNotAcquired and DeadlineExceeded", err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	// The cancelled waiter left nothing behind: the lock is free at once.
	if !s.free(t, l) {
		t.Fatal("lock not free after its holder released and its waiter gave up")
	}
}

func (s *suite) contextDone(t *testing.T) {
	ctx, cancel := context.WithCancel(s.ctx(t))
	cancel()
	l := s.lock(t, "a")
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		return yield(l)
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with a cancelled context: got %v, want context.Canceled", err)
	}
	if !s.free(t, l) {
		t.Fatal("lock held after a yield on a cancelled context")
	}
}

func (s *suite) handOff(t *testing.T) {
	ctx := s.ctx(t)
	l := s.lock(t, "a")
	h, err := l.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	got := make(chan time.Time, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(l); err != nil {
				return err
			}
			got <- time.Now()
			return nil
		})
	}()
	time.Sleep(50 * time.Millisecond) // let the waiter queue
	select {
	case <-got:
		t.Fatal("the waiter got a held lock")
	default:
	}
	released := time.Now()
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	select {
	case at := <-got:
		t.Logf("hand-off took %v", at.Sub(released))
	case <-time.After(s.HandOff):
		t.Fatalf("the waiter did not get the lock within %v of its release", s.HandOff)
	}
	if err := <-errc; err != nil {
		t.Fatalf("waiter's Run: %v", err)
	}
}

func (s *suite) batch(t *testing.T) {
	ctx := s.ctx(t)
	var ls []caesura.Lock
	for i := 7; i >= 0; i-- { // given in descending order on purpose
		ls = append(ls, s.lock(t, fmt.Sprintf("k%d", i)))
	}
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(ls...); err != nil {
			return err
		}
		for _, l := range ls {
			if s.free(t, l) {
				t.Errorf("lock %q free inside the scope that yielded it", l.Key())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, l := range ls {
		if !s.free(t, l) {
			t.Errorf("lock %q still held after Run", l.Key())
		}
	}

	// All or nothing: if one lock of the yield cannot be had, none stays held.
	blocker, err := ls[3].Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err = caesura.Run(wctx, func(ctx context.Context, yield caesura.Yield) error { return yield(ls...) })
	if !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("Run with one lock taken: got %v, want ErrNotAcquired", err)
	}
	if err := blocker.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	for _, l := range ls {
		if !s.free(t, l) {
			t.Errorf("lock %q held after a failed yield", l.Key())
		}
	}
}

func (s *suite) outOfOrder(t *testing.T) {
	ctx := s.ctx(t)
	a, b := s.lock(t, "a"), s.lock(t, "b")
	other, err := a.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	ran := false
	err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(b); err != nil {
			return err
		}
		err := yield(a) // below b and taken: refused, never waited for
		if ctx.Err() == nil {
			t.Error("the function's context is not cancelled after a failed yield")
		}
		if err := yield(s.lock(t, "c")); !errors.Is(err, caesura.ErrYieldFailed) {
			t.Errorf("yield after a failed one: got %v, want ErrYieldFailed", err)
		}
		ran = true
		_ = err
		return nil // dropping the error must not hide it
	})
	var oe *caesura.OrderError
	if !errors.As(err, &oe) || !errors.Is(err, caesura.ErrOutOfOrder) {
		t.Fatalf("Run: got %v, want an *OrderError matching ErrOutOfOrder", err)
	}
	if oe.Key != a.Key() || oe.Held != b.Key() {
		t.Fatalf("OrderError names %q below %q, want %q below %q", oe.Key, oe.Held, a.Key(), b.Key())
	}
	if !ran {
		t.Fatal("function did not run to its end")
	}
	if err := other.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if !s.free(t, b) {
		t.Fatal("lock b held after the scope ended")
	}
	if _, ok := a.(caesura.TryLocker); !ok {
		return
	}
	// Free, the lower lock is taken without waiting.
	err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(b); err != nil {
			return err
		}
		return yield(a)
	})
	if err != nil {
		t.Fatalf("out-of-order yield of a free lock: %v", err)
	}
}

// crossYield is the deadlock the single-tuple rule leaves open: one function
// yields A then B, another B then A. With restarts both always finish.
func (s *suite) crossYield(t *testing.T) {
	a, b := s.lock(t, "a"), s.lock(t, "b")
	const rounds = 30
	var wg sync.WaitGroup
	var inA, inB, violations atomic.Int32
	errs := make(chan error, 2)
	for g := range 2 {
		first, second := a, b
		if g == 1 {
			first, second = b, a
		}
		wg.Go(func() {
			for range rounds {
				err := caesura.Run(s.ctx(t), func(ctx context.Context, yield caesura.Yield) error {
					if err := yield(first); err != nil {
						return err
					}
					time.Sleep(100 * time.Microsecond)
					if err := yield(second); err != nil {
						return err
					}
					na, nb := inA.Add(1), inB.Add(1)
					if na != 1 || nb != 1 {
						violations.Add(1)
					}
					inA.Add(-1)
					inB.Add(-1)
					return nil
				}, caesura.WithRestart(10))
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Run: %v", err)
	}
	if n := violations.Load(); n != 0 {
		t.Fatalf("%d overlapping critical sections", n)
	}
}

// randomTransfers moves money between random accounts with one-yield tuples
// and sequential yields in random key orders: the total never changes and
// every worker finishes (no deadlock).
func (s *suite) randomTransfers(t *testing.T) {
	const accounts, workers, transfers = 6, 6, 25
	ls := make([]caesura.Lock, accounts)
	for i := range ls {
		ls[i] = s.lock(t, fmt.Sprintf("acct%d", i))
	}
	// Atomics only so that the race detector, which cannot see a remote
	// backend's hand-off, stays quiet: each update is still a separate
	// read, pause and write, which loses money without mutual exclusion.
	balance := make([]atomic.Int64, accounts)
	for i := range balance {
		balance[i].Store(100)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(uint64(w), 7))
			for range transfers {
				from, to := r.IntN(accounts), r.IntN(accounts-1)
				if to >= from {
					to++
				}
				tuple := r.IntN(2) == 0
				err := caesura.Run(s.ctx(t), func(ctx context.Context, yield caesura.Yield) error {
					if tuple {
						if err := yield(ls[from], ls[to]); err != nil {
							return err
						}
					} else {
						if err := yield(ls[from]); err != nil {
							return err
						}
						if err := yield(ls[to]); err != nil {
							return err
						}
					}
					amt := int64(r.IntN(10))
					b := balance[from].Load()
					time.Sleep(20 * time.Microsecond)
					balance[from].Store(b - amt)
					balance[to].Store(balance[to].Load() + amt)
					return nil
				}, caesura.WithRestart(20))
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("transfer: %v", err)
	}
	var total int64
	for i := range balance {
		total += balance[i].Load()
	}
	if total != 100*accounts {
		t.Fatalf("total balance %d, want %d", total, 100*accounts)
	}
}

func (s *suite) emptyName(t *testing.T) {
	l := s.Lock("")
	err := caesura.Run(s.ctx(t), func(ctx context.Context, yield caesura.Yield) error {
		return yield(l)
	})
	if !errors.Is(err, caesura.ErrInvalidLock) {
		t.Fatalf("yield of an empty name: got %v, want ErrInvalidLock", err)
	}
}

func (s *suite) loss(t *testing.T) {
	if s.Lose == nil {
		t.Skip("the backend's locks cannot be lost (Harness.Lose is nil)")
	}
	name := s.name(t, "a")
	l := s.Lock(name)
	err := caesura.Run(s.ctx(t), func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l); err != nil {
			return err
		}
		s.Lose(t, name)
		select {
		case <-ctx.Done():
		case <-time.After(s.HandOff):
			return errors.New("the function's context was not cancelled after the lock was lost")
		}
		if c := context.Cause(ctx); !errors.Is(c, caesura.ErrLockLost) {
			return fmt.Errorf("context cause: got %v, want ErrLockLost", c)
		}
		return nil
	})
	if !errors.Is(err, caesura.ErrLockLost) {
		t.Fatalf("Run after a lost lock: got %v, want ErrLockLost", err)
	}
}
