package caesura

import (
	"context"
	"time"
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
func (s *scope) cancel(cause error) { s.materialize().cancel(cause) }

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
