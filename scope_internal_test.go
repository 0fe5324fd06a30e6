package caesura

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/caesura-go/caesura/internal/lend"
)

// The scope doubles as the closure of its own Yield (see yieldFunc). If a
// compiler lays out method-value closures differently, yieldCode is 0 and
// every Run allocates its Yield again: this test says so instead of letting
// the benchmark drift.
func TestYieldIsTheScope(t *testing.T) {
	if purego {
		t.Skip("built with the purego tag: the Yield is a method value")
	}
	if yieldCode == 0 {
		t.Fatal("the closure of a method value is not laid out as {code, receiver}: yieldFunc falls back to a method value per scope")
	}
	checkYield(t, func(s *scope) {})
}

// The fallback, a method value of its own, behaves the same.
func TestYieldFallback(t *testing.T) {
	checkYield(t, func(s *scope) { s.code = 0 })
}

func checkYield(t *testing.T, prepare func(*scope)) {
	t.Helper()
	ctx := context.Background()
	var mus [2]sync.Mutex
	for i, key := range []string{"a", "b"} { // two scopes at once: each Yield reaches its own
		s := newScope(ctx, nil, &defaultConfig, nil)
		prepare(s)
		yield := s.yieldFunc()
		if err := yield(FromLocker(key, &mus[i])); err != nil {
			t.Fatal(err)
		}
		if got := s.heldLocked(); len(got) != 1 || got[0].key != key {
			t.Fatalf("scope %d holds %v, want [%s]", i, got, key)
		}
		if mus[i].TryLock() {
			t.Fatalf("%s is not held", key)
		}
		if err := s.end(); err != nil {
			t.Fatal(err)
		}
		if !mus[i].TryLock() {
			t.Fatalf("%s still held after end", key)
		}
		mus[i].Unlock()
		if err := yield(FromLocker(key, &mus[i])); !errors.Is(err, ErrScopeEnded) {
			t.Fatalf("yield after end: got %v, want ErrScopeEnded", err)
		}
	}
}

// A function that returns while a yield of its own runs in another
// goroutine: Run cancels the wait, waits for the yield to leave, and leaves
// nothing held; a lock the yield got while Run waited is released by Run.
func TestEndWaitsForRunningYield(t *testing.T) {
	for _, got := range []bool{false, true} {
		var released bool
		entered := make(chan *scope, 1)
		lock := FromFuncs("k", func(ctx context.Context) error {
			s := scopeFrom(ctx)
			entered <- s
			for s.flags.Load()&flagWaiter == 0 { // until end waits for this yield
				runtime.Gosched()
			}
			if got {
				return nil
			}
			<-ctx.Done() // only the scope's cancellation ends this wait
			return context.Cause(ctx)
		}, func(context.Context) error { released = true; return nil })
		yielded := make(chan error, 1)
		err := Run(context.Background(), func(ctx context.Context, yield Yield) error {
			go func() { yielded <- yield(lock) }()
			<-entered
			return nil
		})
		yerr := <-yielded
		if !got {
			if !errors.Is(yerr, ErrScopeEnded) || !errors.Is(err, ErrScopeEnded) {
				t.Fatalf("yield: %v, Run: %v; want both to match ErrScopeEnded", yerr, err)
			}
			if released {
				t.Fatal("released a lock that was never acquired")
			}
			continue
		}
		if yerr != nil || err != nil {
			t.Fatalf("yield: %v, Run: %v; want nil", yerr, err)
		}
		if !released {
			t.Fatal("the lock the yield got while Run waited was not released")
		}
	}
}

type lossyHeld struct {
	Held
	lost context.Context
}

func (h lossyHeld) Lost() context.Context { return h.lost }

// A yield after a held lock was lost fails with the loss as its reason, not
// with an empty yield failure: a loss sets the scope's fault without a
// failed yield.
func TestYieldAfterLoss(t *testing.T) {
	lost, lose := context.WithCancelCause(context.Background())
	var a, b sync.Mutex
	lossy := FromFuncs("a", func(ctx context.Context) error { a.Lock(); return nil }, func(context.Context) error { a.Unlock(); return nil })
	wrap := lossyLock{Lock: lossy, lost: lost}
	var yerr error
	err := Run(context.Background(), func(ctx context.Context, yield Yield) error {
		if err := yield(wrap); err != nil {
			return err
		}
		lose(errors.New("lease expired"))
		<-ctx.Done()
		yerr = yield(FromLocker("b", &b))
		return nil
	})
	if !errors.Is(yerr, ErrNotAcquired) || !errors.Is(yerr, ErrLockLost) {
		t.Fatalf("yield after loss: got %v, want ErrNotAcquired and ErrLockLost", yerr)
	}
	if !errors.Is(err, ErrLockLost) {
		t.Fatalf("Run: got %v, want ErrLockLost", err)
	}
	if !b.TryLock() || !a.TryLock() {
		t.Fatal("a lock stayed held")
	}
}

type lossyLock struct {
	Lock
	lost context.Context
}

func (l lossyLock) Acquire(ctx context.Context) (Held, error) {
	h, err := l.Lock.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return lossyHeld{Held: h, lost: l.lost}, nil
}

// Send ends its wait whichever way the scope's context ends, at whatever
// moment that happens (before the wait arms its Wake, while it arms, while
// it waits), and leaves its Wake clean for the next wait: a value left in a
// reused Wake would end a later wait that nothing cancelled, with no error
// and nothing sent.
func TestSendRaces(t *testing.T) {
	var wakes lend.Wakes // shared by every round, as a Locker's are
	stops := []struct {
		name string
		stop func(s *scope, cancelParent context.CancelFunc, ch chan struct{})
	}{
		{"cancel", func(s *scope, _ context.CancelFunc, _ chan struct{}) { s.cancel(errors.New("boom")) }},
		{"end", func(s *scope, _ context.CancelFunc, _ chan struct{}) { _ = s.end() }},
		{"parent", func(_ *scope, cancelParent context.CancelFunc, _ chan struct{}) { cancelParent() }},
		{"free", func(_ *scope, _ context.CancelFunc, ch chan struct{}) { <-ch }}, // the holder lets go
		// The holder lets go and the scope is cancelled as the waiter
		// wakes with the lock: the cancel takes the Wake of a wait that
		// is over, and the waiter must take the cancel's value out.
		{"free and cancel", func(s *scope, _ context.CancelFunc, ch chan struct{}) { <-ch; s.cancel(errors.New("boom")) }},
	}
	for round := range 4000 {
		st := stops[round%len(stops)]
		parent, cancelParent := context.WithCancel(context.Background())
		ctx := parent
		if round%8 < 4 {
			ctx = context.Background() // a parent that can never be cancelled (but for "parent")
		}
		if st.name == "parent" {
			ctx = parent
		}
		s := newScope(ctx, nil, &defaultConfig, nil)
		ch := make(chan struct{}, 1)
		ch <- struct{}{} // held
		stopped := make(chan struct{})
		stop := func() {
			for range round % 3 { // vary the moment
				runtime.Gosched()
			}
			st.stop(s, cancelParent, ch)
			close(stopped)
		}
		if round%7 == 0 && !strings.HasPrefix(st.name, "free") {
			stop() // before the wait
		} else {
			go stop()
		}
		handled, err := s.Send(ch, &wakes)
		if !handled { // as memlock does
			select {
			case ch <- struct{}{}:
				err = nil
			case <-s.Done():
				err = s.Err()
			}
		}
		<-stopped
		switch st.name {
		case "free":
			if err != nil || len(ch) != 1 {
				t.Fatalf("round %d (%s): err %v, %d in the channel; want nil and the waiter's value", round, st.name, err, len(ch))
			}
		case "free and cancel":
			if (err == nil) != (len(ch) == 1) {
				t.Fatalf("round %d (%s): err %v, %d in the channel; want the waiter's value or an error", round, st.name, err, len(ch))
			}
		default:
			if err == nil {
				t.Fatalf("round %d (%s): the wait ended without an error, and the channel was never freed", round, st.name)
			}
		}
		if s.wake.Load() != nil {
			t.Fatalf("round %d (%s): a Wake stayed armed", round, st.name)
		}
		_ = s.end()
		cancelParent()
	}
}
