package caesura_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// journal records what the test locks do, in order.
type journal struct {
	mu  sync.Mutex
	log []string
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	j.log = append(j.log, fmt.Sprintf(format, args...))
	j.mu.Unlock()
}

func (j *journal) entries() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.log)
}

// probe is a test Lock over a real memlock mutex that journals acquires and
// releases and can be made to fail, to be lost, or to lack TryAcquire.
type probe struct {
	inner      caesura.Lock
	key        string
	j          *journal
	releaseErr error
	checkRel   func(ctx context.Context)
	lost       context.Context
}

func (p *probe) Key() string { return p.key }

func (p *probe) Acquire(ctx context.Context) (caesura.Held, error) {
	h, err := p.inner.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	p.j.add("acquire %s", p.key)
	return &probeHeld{p: p, h: h}, nil
}

type tryProbe struct{ *probe }

func (p tryProbe) TryAcquire(ctx context.Context) (caesura.Held, error) {
	h, err := p.inner.(caesura.TryLocker).TryAcquire(ctx)
	if err != nil {
		return nil, err
	}
	p.j.add("try %s", p.key)
	return &probeHeld{p: p.probe, h: h}, nil
}

type probeHeld struct {
	p *probe
	h caesura.Held
}

func (h *probeHeld) Release(ctx context.Context) error {
	if h.p.checkRel != nil {
		h.p.checkRel(ctx)
	}
	h.p.j.add("release %s", h.p.key)
	if err := h.h.Release(ctx); err != nil {
		return err
	}
	return h.p.releaseErr
}

func (h *probeHeld) Token() uint64 { return h.h.(caesura.Fenced).Token() }

type lossyHeld struct{ *probeHeld }

func (h lossyHeld) Lost() context.Context { return h.p.lost }

type lossyProbe struct{ *probe }

func (p lossyProbe) Acquire(ctx context.Context) (caesura.Held, error) {
	h, err := p.probe.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return lossyHeld{h.(*probeHeld)}, nil
}

type env struct {
	t  *testing.T
	ml *memlock.Locker
	j  *journal
}

func newEnv(t *testing.T) *env {
	return &env{t: t, ml: memlock.New(memlock.Options{Prefix: "x:"}), j: &journal{}}
}

// lock returns a tryable probe with key name.
func (e *env) lock(name string) caesura.Lock {
	return tryProbe{&probe{inner: e.ml.Mutex(name), key: name, j: e.j}}
}

// plain returns a probe that cannot be tried.
func (e *env) plain(name string) *probe {
	return &probe{inner: e.ml.Mutex(name), key: name, j: e.j}
}

func (e *env) held(name string) bool {
	h, err := e.ml.Mutex(name).(caesura.TryLocker).TryAcquire(context.Background())
	if err != nil {
		return true
	}
	_ = h.Release(context.Background())
	return false
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Rule 1: on error no lock of that yield is held; earlier yields stay held.
func TestYieldFailureKeepsEarlierLocks(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	blocker, _ := e.ml.Mutex("c").Acquire(ctx)
	defer blocker.Release(ctx)
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err := caesura.Run(wctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(e.lock("a")); err != nil {
			return err
		}
		// b is free, c is held by another: the yield fails and gives b back.
		err := yield(e.lock("b"), e.lock("c"))
		if !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("yield: got %v, want ErrNotAcquired and DeadlineExceeded", err)
		}
		if e.held("b") {
			t.Error("b held after the yield that took it failed")
		}
		if !e.held("a") {
			t.Error("a, from an earlier yield, was released by a later failure")
		}
		return err
	})
	if !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("Run: got %v, want ErrNotAcquired", err)
	}
	if e.held("a") || e.held("b") {
		t.Fatal("a lock is held after Run")
	}
	want := []string{"acquire a", "acquire b", "release b", "release a"}
	if got := e.j.entries(); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// Rule 2: de-duplicated by key, ascending byte-wise order.
func TestYieldSortsAndDeduplicates(t *testing.T) {
	e := newEnv(t)
	err := caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error {
		return yield(e.lock("b"), e.lock("a"), e.lock("B"), e.lock("b"), e.lock("é"), e.lock("a"))
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := e.j.entries()
	want := []string{"acquire B", "acquire a", "acquire b", "acquire é", "release é", "release b", "release a", "release B"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// Rule 3: a held key is a no-op; a nested Run shares the held set and
// releases only its own locks.
func TestNestedRunSharesHeldSet(t *testing.T) {
	e := newEnv(t)
	err := caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(e.lock("m")); err != nil {
			return err
		}
		if err := yield(e.lock("m")); err != nil { // no self-deadlock
			return err
		}
		inner := caesura.Serialize(func(ctx context.Context, yield caesura.Yield, k string) (int, error) {
			if err := yield(e.lock("m"), e.lock(k)); err != nil {
				return 0, err
			}
			// The outer scope's "m" counts for the ordering rule: "c" is
			// below it, taken without waiting when free.
			return 1, yield(e.lock("c"))
		})
		n, err := inner(ctx, "z")
		if err != nil || n != 1 {
			return fmt.Errorf("inner: %d, %w", n, err)
		}
		if e.held("z") || e.held("c") {
			t.Error("the inner scope did not release its own locks")
		}
		if !e.held("m") {
			t.Error("the inner scope released the outer scope's lock")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []string{"acquire m", "acquire z", "try c", "release c", "release z", "release m"}
	if got := e.j.entries(); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// Rule 4: a lock below a held key is never waited for.
func TestOutOfOrderRefused(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	for _, tc := range []struct {
		name    string
		lower   caesura.Lock
		taken   bool
		wantErr bool
	}{
		{"free and tryable: taken", e.lock("a1"), false, false},
		{"taken: refused", e.lock("a2"), true, true},
		{"not tryable: refused even when free", e.plain("a3"), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.taken {
				h, _ := e.ml.Mutex(tc.lower.Key()).Acquire(ctx)
				defer h.Release(ctx)
			}
			start := time.Now()
			err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
				if err := yield(e.lock("b")); err != nil {
					return err
				}
				return yield(tc.lower)
			})
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Run took %v: it waited", d)
			}
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				return
			}
			var oe *caesura.OrderError
			if !errors.As(err, &oe) || oe.Key != tc.lower.Key() || oe.Held != "b" {
				t.Fatalf("got %v, want an OrderError for %q below %q", err, tc.lower.Key(), "b")
			}
			if !strings.Contains(err.Error(), `"b"`) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.lower.Key())) {
				t.Fatalf("error %q does not name both keys", err)
			}
		})
	}
}

// Rule 4 with WithRestart: the function runs again with the keys up front.
func TestRestartTakesKeysUpFront(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	h, _ := e.ml.Mutex("a").Acquire(ctx)
	released := make(chan struct{})
	var attempts atomic.Int32
	errc := make(chan error, 1)
	go func() {
		errc <- caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			if attempts.Add(1) == 1 {
				defer func() { _ = h.Release(ctx); close(released) }()
			}
			if err := yield(e.lock("b")); err != nil {
				return err
			}
			return yield(e.lock("a"))
		}, caesura.WithRestart(3))
	}()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	<-released
	if n := attempts.Load(); n != 2 {
		t.Fatalf("function ran %d times, want 2", n)
	}
	got := e.j.entries()
	want := []string{"acquire b", "release b", "acquire a", "acquire b", "release b", "release a"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestRestartBounded(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	var attempts atomic.Int32
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		n := attempts.Add(1)
		// A new, lower key every time: restarts never converge.
		if err := yield(e.lock("m")); err != nil {
			return err
		}
		return yield(e.plain(fmt.Sprintf("a%d", 9-n)))
	}, caesura.WithRestart(2))
	if !errors.Is(err, caesura.ErrOutOfOrder) {
		t.Fatalf("got %v, want ErrOutOfOrder", err)
	}
	if n := attempts.Load(); n != 3 {
		t.Fatalf("function ran %d times, want 3 (1 + 2 restarts)", n)
	}
}

// Rule 5: release on return, error, panic and Goexit, newest first, with a
// context that is not the cancelled caller's and has a deadline.
func TestReleaseAlways(t *testing.T) {
	for _, how := range []string{"return", "error", "panic", "goexit"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			ctx, cancel := context.WithCancel(ctxT(t))
			var relCtxOK atomic.Int32
			mk := func(name string) caesura.Lock {
				p := e.plain(name)
				p.checkRel = func(rctx context.Context) {
					_, hasDeadline := rctx.Deadline()
					if rctx.Err() == nil && hasDeadline && rctx.Value(ctxKey{}) == "v" {
						relCtxOK.Add(1)
					}
				}
				return p
			}
			ctx = context.WithValue(ctx, ctxKey{}, "v")
			var perr any
			done := make(chan error, 1)
			go func() {
				defer func() { perr = recover(); close(done) }()
				done <- caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
					if err := yield(mk("a")); err != nil {
						return err
					}
					if err := yield(mk("b")); err != nil {
						return err
					}
					cancel() // release must still work
					switch how {
					case "error":
						return errors.New("boom")
					case "panic":
						panic("boom")
					case "goexit":
						runtime.Goexit()
					}
					return nil
				})
			}()
			err := <-done
			switch how {
			case "return":
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case "error":
				if err == nil || err.Error() != "boom" {
					t.Fatalf("Run: got %v, want boom", err)
				}
			case "panic":
				if perr != "boom" {
					t.Fatalf("recovered %v, want the same panic value boom", perr)
				}
			}
			want := []string{"acquire a", "acquire b", "release b", "release a"}
			if got := e.j.entries(); !slices.Equal(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
			if n := relCtxOK.Load(); n != 2 {
				t.Fatalf("%d of 2 releases got an uncancelled context with a deadline and the caller's values", n)
			}
		})
	}
}

type ctxKey struct{}

func TestReleaseErrorsJoined(t *testing.T) {
	e := newEnv(t)
	p := e.plain("a")
	relErr := errors.New("release failed")
	p.releaseErr = relErr
	fnErr := errors.New("fn failed")
	err := caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(p); err != nil {
			return err
		}
		return fnErr
	})
	if !errors.Is(err, relErr) || !errors.Is(err, fnErr) {
		t.Fatalf("got %v, want both the function's and the release's error", err)
	}
}

// Rule 6: a failed yield cancels the context and cannot be dropped.
func TestFailedYieldCannotBeIgnored(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	h, _ := e.ml.Mutex("a").Acquire(ctx)
	defer h.Release(ctx)
	var cause, later error
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		_ = yield(e.lock("b"))
		yerr := yield(e.plain("a")) // out of order and taken
		<-ctx.Done()
		cause = context.Cause(ctx)
		later = yield(e.lock("z"))
		if !errors.Is(cause, yerr) {
			t.Errorf("context cause %v is not the yield's error %v", cause, yerr)
		}
		return nil // drops the error
	})
	if !errors.Is(err, caesura.ErrOutOfOrder) {
		t.Fatalf("Run: got %v, want ErrOutOfOrder even though fn returned nil", err)
	}
	if !errors.Is(later, caesura.ErrYieldFailed) || !errors.Is(later, caesura.ErrOutOfOrder) {
		t.Fatalf("later yield: got %v, want ErrYieldFailed wrapping the first error", later)
	}
	if e.held("z") {
		t.Fatal("a yield after a failed one acquired its lock")
	}
}

// Rule 7: a lost lock cancels the context with a lock-lost cause.
func TestLockLoss(t *testing.T) {
	e := newEnv(t)
	lost, lose := context.WithCancelCause(context.Background())
	p := lossyProbe{e.plain("a")}
	p.lost = lost
	runLosing(t, e, p, func(reason error) error { lose(reason); return nil })
}

// runLosing runs a function that yields lock "a" of e, has lose report its
// loss, and checks that the function's context ends with a LostError for
// "a" wrapping the reason, that Run returns ErrLockLost, and that the lock
// is released.
func runLosing(t *testing.T, e *env, lock caesura.Lock, lose func(reason error) error) {
	t.Helper()
	reason := errors.New("lease expired")
	err := caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(lock); err != nil {
			return err
		}
		if err := lose(reason); err != nil {
			return err
		}
		<-ctx.Done()
		c := context.Cause(ctx)
		var le *caesura.LostError
		if !errors.As(c, &le) || le.Key != "a" || !errors.Is(c, reason) {
			t.Errorf("cause %v, want a LostError for %q wrapping the reason", c, "a")
		}
		return ctx.Err()
	})
	if !errors.Is(err, caesura.ErrLockLost) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: got %v, want ErrLockLost (and the function's own error)", err)
	}
	if e.held("a") {
		t.Fatal("lost lock's handle was not released")
	}
}

// A loss watch does not fire for an ordinary release.
func TestNoLossOnRelease(t *testing.T) {
	e := newEnv(t)
	lost, lose := context.WithCancelCause(context.Background())
	p := lossyProbe{e.plain("a")}
	p.lost = lost
	err := caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error { return yield(p) })
	lose(errors.New("late"))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// notifierHeld is a Held whose loss the test reports through the function
// the core registered with OnLost; Lost counts its calls.
type notifierHeld struct {
	*probeHeld
	n *notifier
}

type notifier struct {
	mu      sync.Mutex
	f       func(error)
	lostRun int
}

func (h notifierHeld) Lost() context.Context {
	h.n.mu.Lock()
	defer h.n.mu.Unlock()
	h.n.lostRun++
	return context.Background()
}

func (h notifierHeld) OnLost(f func(error)) {
	h.n.mu.Lock()
	defer h.n.mu.Unlock()
	h.n.f = f
}

type notifierProbe struct {
	*probe
	n *notifier
}

func (p notifierProbe) Acquire(ctx context.Context) (caesura.Held, error) {
	h, err := p.probe.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return notifierHeld{h.(*probeHeld), p.n}, nil
}

// A LossNotifier's loss reaches the function as a Lossy's does, and the core
// registers with OnLost without making the Lost context.
func TestLossNotifier(t *testing.T) {
	e := newEnv(t)
	n := &notifier{}
	runLosing(t, e, notifierProbe{e.plain("a"), n}, func(reason error) error {
		n.mu.Lock()
		f := n.f
		n.mu.Unlock()
		if f == nil {
			return errors.New("the core did not register with OnLost")
		}
		go f(reason)
		return nil
	})
	if n.lostRun != 0 {
		t.Errorf("the core called Lost %d times on a LossNotifier, want 0", n.lostRun)
	}
}

// Rule 8: fencing tokens inside the function.
func TestToken(t *testing.T) {
	ml := memlock.New(memlock.Options{})
	a := ml.Mutex("a")
	var toks []uint64
	for range 3 {
		err := caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error {
			if _, ok := caesura.Token(ctx, a); ok {
				t.Error("Token before the yield: ok")
			}
			if err := yield(a); err != nil {
				return err
			}
			tok, ok := caesura.Token(ctx, a)
			if !ok {
				return errors.New("no token")
			}
			toks = append(toks, tok)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !slices.IsSorted(toks) || toks[0] == toks[1] || toks[1] == toks[2] {
		t.Fatalf("tokens %v, want strictly increasing", toks)
	}
	if _, ok := caesura.Token(context.Background(), a); ok {
		t.Fatal("Token outside a scope: ok")
	}
}

// Rule 9: bad input gets a clear error and leaves nothing held.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	var nilLock caesura.Lock
	for _, tc := range []struct {
		name  string
		locks func() []caesura.Lock
		want  string
	}{
		{"nil lock", func() []caesura.Lock { return []caesura.Lock{nilLock} }, "nil Lock"},
		{"nil among several", func() []caesura.Lock { return []caesura.Lock{e.lock("b"), nil} }, "Lock 2 of 2 is nil"},
		{"empty key", func() []caesura.Lock { return []caesura.Lock{e.lock("")} }, "empty key"},
		{"empty key among several", func() []caesura.Lock { return []caesura.Lock{e.lock("q"), e.lock("")} }, "empty key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
				return yield(tc.locks()...)
			})
			if !errors.Is(err, caesura.ErrInvalidLock) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalidLock saying %q", err, tc.want)
			}
			if e.held("b") || e.held("q") {
				t.Fatal("a lock stayed held")
			}
		})
	}

	t.Run("yield after return", func(t *testing.T) {
		var saved caesura.Yield
		_ = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error { saved = yield; return nil })
		if err := saved(e.lock("late")); !errors.Is(err, caesura.ErrScopeEnded) {
			t.Fatalf("got %v, want ErrScopeEnded", err)
		}
		if e.held("late") {
			t.Fatal("a yield after return acquired its lock")
		}
	})

	t.Run("context of an ended scope is done", func(t *testing.T) {
		var saved context.Context
		_ = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error { saved = ctx; return nil })
		if saved.Err() == nil {
			t.Fatal("the function's context is not done after Run returned")
		}
		select {
		case <-saved.Done():
		default:
			t.Fatal("Done not closed after Run returned")
		}
	})

	t.Run("racing yield", func(t *testing.T) {
		hb, _ := e.ml.Mutex("race2").Acquire(ctx)
		var raceErr error
		err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			started := make(chan struct{})
			go func() {
				for !e.held("race1") {
					runtime.Gosched()
				}
				close(started)
			}()
			done := make(chan error, 1)
			go func() { done <- yield(e.lock("race1"), e.lock("race2")) }() // holds race1, blocks on race2
			<-started
			raceErr = yield(e.lock("other"))
			_ = hb.Release(ctx)
			return <-done
		})
		if !errors.Is(raceErr, caesura.ErrConcurrentYield) {
			t.Fatalf("racing yield: got %v, want ErrConcurrentYield", raceErr)
		}
		if !errors.Is(err, caesura.ErrConcurrentYield) {
			t.Fatalf("Run: got %v, want ErrConcurrentYield", err)
		}
		for _, k := range []string{"race1", "race2", "other"} {
			if e.held(k) {
				t.Fatalf("%s held after Run", k)
			}
		}
	})

	t.Run("context already done", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		ran := false
		err := caesura.Run(cctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(e.lock("d")); err != nil {
				return err
			}
			ran = true
			return nil
		})
		if ran || !errors.Is(err, context.Canceled) || !errors.Is(err, caesura.ErrNotAcquired) {
			t.Fatalf("ran=%v err=%v, want not run and Canceled+ErrNotAcquired", ran, err)
		}
	})

	t.Run("nil context, nil function, bad options", func(t *testing.T) {
		//lint:ignore SA1012 testing the nil-context error
		var nilCtx context.Context
		if err := caesura.Run(nilCtx, func(context.Context, caesura.Yield) error { return nil }); err == nil {
			t.Error("nil context: no error")
		}
		if err := caesura.Run(ctx, nil); err == nil {
			t.Error("nil function: no error")
		}
		if err := caesura.Run(ctx, func(context.Context, caesura.Yield) error { return nil }, caesura.WithRestart(0)); err == nil || !strings.Contains(err.Error(), "WithRestart(0)") {
			t.Errorf("WithRestart(0): got %v", err)
		}
		f := caesura.Serialize(func(context.Context, caesura.Yield, int) (int, error) { return 1, nil }, caesura.WithReleaseTimeout(-time.Second))
		if _, err := f(ctx, 1); err == nil || !strings.Contains(err.Error(), "WithReleaseTimeout") {
			t.Errorf("WithReleaseTimeout(-1s): got %v", err)
		}
	})
}

func TestAdapters(t *testing.T) {
	ctx := ctxT(t)
	var mu sync.Mutex
	l := caesura.FromLocker("mutex", &mu)
	if _, ok := l.(caesura.TryLocker); !ok {
		t.Fatal("FromLocker(*sync.Mutex) does not implement TryLocker")
	}
	var calls []string
	f := caesura.FromFuncs("funcs",
		func(context.Context) error { calls = append(calls, "acquire"); return nil },
		func(context.Context) error { calls = append(calls, "release"); return nil })
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l, f); err != nil {
			return err
		}
		if mu.TryLock() {
			t.Error("sync.Mutex free inside the scope")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !mu.TryLock() {
		t.Fatal("sync.Mutex still locked after Run")
	}
	mu.Unlock()
	if !slices.Equal(calls, []string{"acquire", "release"}) {
		t.Fatalf("calls %q", calls)
	}
	h, _ := f.Acquire(ctx)
	_ = h.Release(ctx)
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("second release: got %v, want ErrNotHeld", err)
	}
	if len(calls) != 4 {
		t.Fatalf("release func called %d times in all, want 2", len(calls)/2)
	}
	if err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		return yield(caesura.FromLocker("nil", nil))
	}); !errors.Is(err, caesura.ErrInvalidLock) {
		t.Fatalf("FromLocker(nil): got %v, want ErrInvalidLock", err)
	}
}

// Deadlock freedom across yields, many goroutines and keys: every wait is for
// a key above every key held, so the run always ends.
func TestNoDeadlockAcrossYields(t *testing.T) {
	e := newEnv(t)
	const workers, rounds, keys = 8, 200, 5
	var wg sync.WaitGroup
	var refused atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				// Each worker yields keys one at a time in its own order.
				err := caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error {
					for i := range 3 {
						k := fmt.Sprintf("k%d", (w*7+r*3+i*(w+1))%keys)
						if err := yield(e.lock(k)); err != nil {
							return err
						}
					}
					return nil
				})
				if errors.Is(err, caesura.ErrOutOfOrder) {
					refused.Add(1)
				} else if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d of %d runs refused out of order, none deadlocked", refused.Load(), workers*rounds)
	if e.ml.Len() != 0 {
		t.Fatalf("%d keys held after all runs", e.ml.Len())
	}
}

// countingBatcher batches memlock locks and counts its calls.
type countingBatcher struct {
	ml                *memlock.Locker
	acquires, batches atomic.Int32
}

type batchLock struct {
	b    *countingBatcher
	name string
}

func (l batchLock) Key() string { return "mem:" + l.name }
func (l batchLock) Acquire(ctx context.Context) (caesura.Held, error) {
	return l.b.ml.Mutex(l.name).Acquire(ctx)
}
func (l batchLock) Batcher() caesura.Batcher { return l.b }

func (b *countingBatcher) AcquireBatch(ctx context.Context, ls []caesura.Lock) ([]caesura.Held, error) {
	b.acquires.Add(1)
	var hs []caesura.Held
	for _, l := range ls {
		h, err := l.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}

func (b *countingBatcher) ReleaseBatch(ctx context.Context, hs []caesura.Held) error {
	b.batches.Add(1)
	var errs []error
	for _, h := range hs {
		errs = append(errs, h.Release(ctx))
	}
	return errors.Join(errs...)
}

// A run of locks from one Batcher is acquired in one call and, when the
// Batcher can, released in one call; other locks around it one by one.
func TestBatchAcquireAndRelease(t *testing.T) {
	ml := memlock.New(memlock.Options{})
	b := &countingBatcher{ml: ml}
	err := caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error {
		return yield(batchLock{b, "c"}, batchLock{b, "a"}, ml.Mutex("b0"), batchLock{b, "d"}, batchLock{b, "e"})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Sorted: mem:a (batch of one: plain Acquire), mem:b0 (memlock's own
	// batcher), mem:c mem:d mem:e (one batch).
	if a, r := b.acquires.Load(), b.batches.Load(); a != 1 || r != 1 {
		t.Fatalf("AcquireBatch called %d times, ReleaseBatch %d times; want 1 and 1", a, r)
	}
	if ml.Len() != 0 {
		t.Fatalf("%d keys held after Run", ml.Len())
	}
}

// The release context lets context.AfterFunc register without a goroutine,
// and reports its own cause, not the cancelled caller's.
func TestReleaseContextAfterFunc(t *testing.T) {
	ctx, cancel := context.WithCancelCause(ctxT(t))
	var checked atomic.Bool
	l := caesura.FromFuncs("x", func(context.Context) error { return nil }, func(rctx context.Context) error {
		before := runtime.NumGoroutine()
		stop := context.AfterFunc(rctx, func() {})
		if after := runtime.NumGoroutine(); after != before {
			t.Errorf("context.AfterFunc on the release context started %d goroutines", after-before)
		}
		stop()
		if c := context.Cause(rctx); c != nil {
			t.Errorf("release context cause %v, want nil (the caller's cancellation must not show)", c)
		}
		checked.Store(true)
		return nil
	})
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l); err != nil {
			return err
		}
		cancel(errors.New("caller gave up"))
		return nil
	})
	if err != nil || !checked.Load() {
		t.Fatalf("Run: %v, release checked: %v", err, checked.Load())
	}
}

// Locks of one BatchReleaser yielded one at a time go back in one call.
func TestSingleYieldsReleasedTogether(t *testing.T) {
	ml := memlock.New(memlock.Options{})
	b := &countingBatcher{ml: ml}
	err := caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error {
		for _, name := range []string{"a", "b", "c"} {
			if err := yield(batchLock{b, name}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if a, r := b.acquires.Load(), b.batches.Load(); a != 0 || r != 1 {
		t.Fatalf("AcquireBatch called %d times, ReleaseBatch %d times; want 0 and 1", a, r)
	}
	if ml.Len() != 0 {
		t.Fatalf("%d keys held after Run", ml.Len())
	}
}

// The function's context is done before its locks are released, and the
// release context leads to no scope (not even an enclosing one).
func TestReleaseAfterContextEnds(t *testing.T) {
	var fnCtx context.Context
	var checked atomic.Bool
	l := caesura.FromFuncs("x", func(context.Context) error { return nil }, func(rctx context.Context) error {
		if fnCtx.Err() == nil {
			t.Error("the function's context is not done when its locks are released")
		}
		if _, ok := caesura.Token(rctx, caesura.FromFuncs("outer", nil, nil)); ok {
			t.Error("Token found a lock through the release context")
		}
		_, ok, err := caesura.Attach(rctx, sessionKey{}, func() (int, error) { return 1, nil },
			func(context.Context, int) error { return nil })
		if ok || err != nil {
			t.Errorf("Attach on the release context: ok %v, err %v; want false, nil", ok, err)
		}
		checked.Store(true)
		return nil
	})
	outer := caesura.FromFuncs("outer", func(context.Context) error { return nil }, func(context.Context) error { return nil })
	err := caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(outer); err != nil {
			return err
		}
		return caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			fnCtx = ctx
			return yield(l)
		})
	})
	if err != nil || !checked.Load() {
		t.Fatalf("Run: %v, release checked: %v", err, checked.Load())
	}
}

// A backend that reports loss with a *LostError of its own gets it back as
// the cause, not wrapped in a second one.
func TestLostErrorNotWrappedTwice(t *testing.T) {
	e := newEnv(t)
	lost, lose := context.WithCancelCause(context.Background())
	p := lossyProbe{e.plain("a")}
	p.lost = lost
	own := &caesura.LostError{Key: "a", Err: errors.New("lease expired")}
	err := caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(p); err != nil {
			return err
		}
		lose(own)
		<-ctx.Done()
		if c := context.Cause(ctx); c != own {
			t.Errorf("cause %v, want the backend's own LostError", c)
		}
		return nil
	})
	if !errors.Is(err, caesura.ErrLockLost) || strings.Count(err.Error(), "lost") != 1 {
		t.Fatalf("Run: %q, want ErrLockLost said once", err)
	}
}

// A huge key does not make the messages that name it huge.
func TestQuoteKeyClipsHugeKeys(t *testing.T) {
	if got := caesura.QuoteKey("a\x00b"); got != `"a\x00b"` {
		t.Errorf("QuoteKey of a short key: %s, want it as %%q quotes it", got)
	}
	huge := strings.Repeat("k", 1<<20)
	got := caesura.QuoteKey(huge)
	if len(got) > 100 || !strings.Contains(got, "1048576 bytes") {
		t.Errorf("QuoteKey of a 1 MiB key: %d bytes (%.80s…), want under 100 naming the length", len(got), got)
	}
	ml := memlock.New(memlock.Options{})
	l := ml.Mutex(huge)
	h, err := l.Acquire(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(ctxT(t))
	err = caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(ml.Mutex("zzz")); err != nil {
			return err
		}
		return yield(l) // sorts below zzz and is taken: refused, naming both keys
	})
	if !errors.Is(err, caesura.ErrOutOfOrder) || len(err.Error()) > 500 {
		t.Fatalf("Run: %d-byte error (%.200s), want ErrOutOfOrder in a short message", len(err.Error()), err)
	}
}
