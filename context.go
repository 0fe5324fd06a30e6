package caesura

import (
	"context"
	"time"

	"github.com/caesura-go/caesura/internal/lend"
)

// The function's context and the release context are created lazily: the
// scope itself implements context.Context and only builds a real
// context.WithCancelCause (two allocations, plus a channel on first Done) when
// someone needs a Done channel or the scope must be cancelled. An uncontended
// Run on the memory backend never does, which keeps its cost near the bare
// lock's (see BenchmarkUncontended). The delegation keeps every guarantee of a real
// context: Value(&cancelCtxKey), which context.Cause and propagateCancel use,
// reaches the inner cancelCtx once it exists, so children register with it
// and Cause returns the cause we set.
//
// A contended Run on the memory backend does not need the Done channel
// either: the backend waits through Send (lend.Waiter), which selects on the
// parent's Done channel and on a reused Wake that the scope's own
// cancellations (cancel and end, the only ones besides the parent's) take and
// signal. So a wait allocates nothing, where materialising would cost the
// cancelCtx, its cancel func, the cancelState and the channel.

type scopeKey struct{}

// cancelState is the materialised cancellable context of a scope.
type cancelState struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// The scope is a context.Context that is cancelled only through cancel:
// Deadline, Done and Err are here, Value in scope.go.

func (s *scope) materialize() *cancelState {
	if in := s.inner.Load(); in != nil {
		return in
	}
	ctx, cancel := context.WithCancelCause(s.parent)
	in := &cancelState{ctx: ctx, cancel: cancel}
	if !s.inner.CompareAndSwap(nil, in) {
		cancel(nil) // another goroutine materialised first: drop ours
		return s.inner.Load()
	}
	if s.flags.Load()&flagDone != 0 {
		in.cancel(ErrScopeEnded)
	}
	return in
}

// cancel cancels the context with cause; the first cause wins.
func (s *scope) cancel(cause error) {
	s.materialize().cancel(cause)
	s.wakeWaiter()
}

// Send implements lend.Waiter: it sends on ch, waiting until ch has room or
// the scope's context is done, without materialising the context.
//
// The scope's context ends in three ways: the parent's Done channel closes,
// cancel runs, or end runs. The wait selects on the first and arms a Wake for
// the other two, which make the cancellation visible (inner set and
// cancelled, or flagDone set) before they take the Wake. Send arms the Wake
// before it looks at inner and flags: so either it sees the cancellation and
// does not wait, or the canceller takes the Wake and wakes it.
func (s *scope) Send(ch chan<- struct{}, wakes *lend.Wakes) (handled bool, err error) {
	if s.inner.Load() != nil { // Done costs no more than a Wake now
		return false, nil
	}
	w := wakes.Get()
	defer wakes.Put(w) // clean again on every way out below
	// One Wake per scope: if another wait armed one, this one waits on Done.
	if !s.wake.CompareAndSwap(nil, w) {
		return false, nil
	}
	if s.inner.Load() != nil || s.flags.Load()&flagDone != 0 {
		s.disarm(w)
		return false, nil
	}
	parent := s.parent.Done() // nil if the parent can never be cancelled
	select {
	case ch <- struct{}{}:
		s.disarm(w)
		return true, nil
	case <-w.C:
		// A canceller took w out of the scope and sent its one value,
		// received here: w is clean.
		return true, s.Err()
	case <-parent:
		s.disarm(w)
		if err := s.Err(); err != nil {
			return true, err
		}
		// A context materialised during the wait learns of the parent's
		// cancellation after the parent's Done channel closes.
		return true, s.parent.Err()
	}
}

// disarm takes w back from the scope after a wait that no canceller ended.
// If a canceller took it meanwhile, disarm waits for its value, which comes
// at once, so that w is clean for reuse.
func (s *scope) disarm(w *lend.Wake) {
	if !s.wake.CompareAndSwap(w, nil) {
		<-w.C
	}
}

// wakeWaiter ends the wait armed in Send, if any. The caller has made the
// scope's cancellation visible first (see Send). The plain load keeps the
// common end, with nothing armed, free of a locked instruction; it is enough,
// as Go's atomics are sequentially consistent: a Send that arms after it
// loaded nil sees the cancellation.
func (s *scope) wakeWaiter() {
	if s.wake.Load() != nil {
		s.wakeArmed()
	}
}

// wakeArmed is wakeWaiter's slow path, kept apart so that wakeWaiter inlines.
func (s *scope) wakeArmed() {
	if w := s.wake.Swap(nil); w != nil {
		w.C <- struct{}{} // never blocks: C is empty while armed, and only the taker sends
	}
}

func (s *scope) Deadline() (time.Time, bool) { return s.parent.Deadline() }

func (s *scope) Done() <-chan struct{} { return s.materialize().ctx.Done() }

func (s *scope) Err() error {
	if in := s.inner.Load(); in != nil {
		return in.ctx.Err()
	}
	if s.flags.Load()&flagDone != 0 {
		return s.materialize().ctx.Err()
	}
	return s.parent.Err()
}

// releaseCtx is the context Release gets: the function's values, none of its
// cancellation, and a deadline that starts when a backend first asks for it
// (the memory backend never does, so it costs nothing there). It is the
// scope seen through another type, so handing it out allocates nothing.
type releaseCtx scope

// releaseTimer is a materialised release context.
type releaseTimer struct {
	ctx  context.Context
	stop context.CancelFunc
}

func (r *releaseCtx) get() context.Context {
	m := (*scope)(r).extra()
	if t := m.timer.Load(); t != nil {
		return t.ctx
	}
	ctx, stop := context.WithTimeout(context.WithoutCancel(r.parent), r.cfg.releaseTimeout)
	t := &releaseTimer{ctx: ctx, stop: stop}
	if !m.timer.CompareAndSwap(nil, t) {
		stop()
		return m.timer.Load().ctx
	}
	return ctx
}

func (r *releaseCtx) Deadline() (time.Time, bool) { return r.get().Deadline() }
func (r *releaseCtx) Done() <-chan struct{}       { return r.get().Done() }
func (r *releaseCtx) Err() error {
	if m := r.more.Load(); m != nil {
		if t := m.timer.Load(); t != nil {
			return t.ctx.Err()
		}
	}
	return nil
}

// Value answers from the materialised context, so that context.Cause and
// the children of the release context see its own cancellation, not the
// caller's.
// It finds no scope: Release runs after the scope's function, and the
// release context must not lead Token or Attach to an enclosing scope.
func (r *releaseCtx) Value(key any) any {
	if key == (scopeKey{}) {
		return nil
	}
	return r.get().Value(key)
}

// AfterFunc lets context.AfterFunc and context.WithCancel on the release
// context register without a goroutine of their own.
func (r *releaseCtx) AfterFunc(f func()) (stop func() bool) { return context.AfterFunc(r.get(), f) }

// closeRelease frees the timer, if a backend started one. A backend that asks
// for the context after the scope ended gets a fresh one whose timer the
// garbage collector frees.
func (s *scope) closeRelease(m *scopeMore) {
	if t := m.timer.Load(); t != nil {
		t.stop()
	}
}
