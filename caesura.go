package caesura

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Yield acquires locks in the middle of a function run by [Run] or
// [Serialize]. It returns only when every lock it was given is held, or with
// an error; on error no lock of that call is held, the function's context is
// cancelled with the error as its cause, and every later call fails at once.
// Locks from earlier calls stay held until the function returns.
//
// The locks of one call are de-duplicated by key and taken in ascending key
// order. A lock the scope holds already is skipped. A lock whose key sorts
// below a key already held is never waited for: see the package doc,
// # Ordering.
//
// A Yield is valid only while its function runs and must not be called
// concurrently with itself: such calls return [ErrScopeEnded] or
// [ErrConcurrentYield].
type Yield func(locks ...Lock) error

// Run calls fn with a context and a [Yield], and releases every lock fn's
// yields acquired when fn ends: on return, on error, on panic (released, then
// re-panicked with the same value) and on runtime.Goexit. Locks are released
// newest first, with a context that keeps ctx's values but not its
// cancellation, bounded by [WithReleaseTimeout].
//
// Run returns fn's error, joined with: the error of a failed yield (even if fn
// dropped it), a [*LostError] if a held lock was lost, and any release error.
// A Run inside another Run or serialized call (its ctx derived from the outer
// function's context) shares the outer scope's held locks for the skip and
// ordering rules, and releases only what it acquired itself.
//
// The context fn receives is cancelled when a yield fails, when a held lock is
// lost (with a [*LostError] as its cause) and after fn returns.
func Run(ctx context.Context, fn func(ctx context.Context, yield Yield) error, opts ...Option) error {
	cfg := &defaultConfig
	if len(opts) > 0 {
		c, err := newConfig(opts)
		if err != nil {
			return err
		}
		cfg = &c
	}
	if fn == nil {
		return errors.New("caesura: Run: nil function")
	}
	_, err := run(ctx, cfg, callPlain, fn)
	return err
}

func callPlain(ctx context.Context, yield Yield, fn func(context.Context, Yield) error) (struct{}, error) {
	return struct{}{}, fn(ctx, yield)
}

// Serialize wraps fn so that every call runs as [Run] runs a function: fn
// receives a [Yield], and every lock it acquires is released when it ends.
// The returned function is safe for concurrent use.
//
// An invalid option makes every call of the returned function return an
// error naming it.
func Serialize[P, R any](fn func(ctx context.Context, yield Yield, p P) (R, error), opts ...Option) func(ctx context.Context, p P) (R, error) {
	cfg, err := newConfig(opts)
	if err == nil && fn == nil {
		err = errors.New("caesura: Serialize: nil function")
	}
	return func(ctx context.Context, p P) (R, error) {
		if err != nil {
			var zero R
			return zero, err
		}
		return run(ctx, &cfg, fn, p)
	}
}

// Token returns the fencing token of the held lock with l's key, from inside
// a function run by [Run] or [Serialize] (ctx is its context, or derived from
// it). ok is false when the scope does not hold l or l's backend issues no
// tokens. Pass the token to storage that rejects writes carrying a lower one.
func Token(ctx context.Context, l Lock) (token uint64, ok bool) {
	if ctx == nil || l == nil {
		return 0, false
	}
	s := scopeFrom(ctx)
	if s == nil {
		return 0, false
	}
	return s.token(l.Key())
}

func run[P, R any](ctx context.Context, cfg *config, fn func(context.Context, Yield, P) (R, error), p P) (R, error) {
	if ctx == nil {
		var zero R
		return zero, errors.New("caesura: nil context")
	}
	outer := scopeFrom(ctx)
	var seen []Lock
	for attempt := 1; ; attempt++ {
		octx, obs := startObserving(ctx, cfg, attempt)
		s := newScope(octx, outer, cfg, obs)
		if len(seen) > 0 {
			// A restart: take every lock seen so far up front, in order.
			if err := s.yieldLocks(seen...); err != nil {
				var zero R
				err = s.result(nil, s.end())
				obs.end(err)
				return zero, err
			}
		}
		res, err := call(s, fn, p)
		if cfg.restart == 0 || attempt > cfg.restart || !s.restartable() {
			obs.end(err)
			return res, err
		}
		obs.emit(Event{Kind: Restart, Err: err})
		obs.end(err)
		seen = s.seenLocks()
	}
}

// call runs fn and ends the scope however fn ends.
func call[P, R any](s *scope, fn func(context.Context, Yield, P) (R, error), p P) (res R, err error) {
	normal := false
	defer func() {
		if normal {
			return
		}
		r := recover() // nil on runtime.Goexit: the goroutine goes on exiting
		_ = s.end()    // a panic or Goexit has no error to join a release error to
		if r != nil {
			s.observer().end(fmt.Errorf("caesura: the function panicked: %v", r))
			panic(r)
		}
		s.observer().end(errors.New("caesura: the function called runtime.Goexit"))
	}()
	res, err = fn(s, s.yieldFunc(), p)
	normal = true
	return res, s.result(err, s.end())
}

// restartable reports whether the scope failed on an out-of-order lock.
func (s *scope) restartable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var oe *OrderError
	err := s.failedLocked()
	return err != nil && errors.As(err, &oe)
}

func (s *scope) seenLocks() []Lock {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.extra().seen
}

// Option configures [Run] and [Serialize].
type Option interface {
	apply(*config) error
}

type config struct {
	restart        int
	releaseTimeout time.Duration
	observers      []Observer
	name           string
}

// DefaultReleaseTimeout bounds the release of a scope's locks when no
// [WithReleaseTimeout] is given.
const DefaultReleaseTimeout = 10 * time.Second

// defaultConfig is the configuration of a Run without options. It is never
// written to.
var defaultConfig = config{releaseTimeout: DefaultReleaseTimeout}

func newConfig(opts []Option) (config, error) {
	cfg := config{releaseTimeout: DefaultReleaseTimeout}
	for _, o := range opts {
		if o == nil {
			return cfg, errors.New("caesura: nil Option")
		}
		if err := o.apply(&cfg); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

// WithRestart turns an out-of-order refusal into a restart: instead of
// failing with [ErrOutOfOrder], the yield fails with it, fn is expected to
// return, every lock is released, and fn runs again from the top with every
// lock seen so far taken up front, in order. After max restarts the
// [ErrOutOfOrder] error is returned. max must be at least 1.
//
// Code before the yields runs again on a restart: keep it free of side
// effects, or make them idempotent.
func WithRestart(max int) Option {
	return optionFunc(func(c *config) error {
		if max < 1 {
			return fmt.Errorf("caesura: WithRestart(%d): the number of restarts must be at least 1", max)
		}
		c.restart = max
		return nil
	})
}

// WithReleaseTimeout bounds how long releasing a scope's locks may take in
// all (default [DefaultReleaseTimeout]). d must be positive.
func WithReleaseTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("caesura: WithReleaseTimeout(%v): the timeout must be positive", d)
		}
		c.releaseTimeout = d
		return nil
	})
}
