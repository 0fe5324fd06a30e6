package caesura

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Attach lets a backend keep one resource per scope: a value that every lock
// of the backend acquired in the scope shares, such as the one database
// session a scope pins for all its locks of that backend.
//
// ctx is the context a [Lock]'s Acquire, TryAcquire or a [Batcher]'s
// AcquireBatch received. If it belongs to a scope (a function run by [Run] or
// [Serialize], or a context derived from one), Attach returns the value
// stored in that scope under key, calling open to make it on first use, and
// ok is true. The scope calls done with the value once, after it has released
// every lock it holds (so after every Held's Release has returned), with the
// release context; done's error is joined to the function's. If ctx belongs
// to no scope, Attach calls nothing and returns ok false: the backend then
// manages the resource per acquisition.
//
// key follows the rules of context keys: a comparable value of a type of the
// backend's own, so that backends never share a value by accident. open runs
// at most once per scope and key at a time, under a lock that the scope's
// other Attach calls share: keep it quick (take a pooled connection lazily,
// on first use, rather than waiting for one in open). If open fails, nothing
// is stored, its error is returned, and a later call tries again. After the
// function returned, Attach fails with [ErrScopeEnded].
//
// done runs after the function's context is cancelled and its locks are
// released; the release context (done's ctx) finds no scope, so a backend
// cannot Attach from Release or done.
//
// A nested scope (a Run inside a Run) has values of its own: done runs when
// the inner function ends.
func Attach[T any](ctx context.Context, key any, open func() (T, error), done func(ctx context.Context, v T) error) (v T, ok bool, err error) {
	if ctx == nil || key == nil || open == nil || done == nil {
		return v, false, errors.New("caesura: Attach: nil context, key or function")
	}
	s := scopeFrom(ctx)
	if s == nil {
		return v, false, nil
	}
	a := s.attachments()
	if a == nil {
		return v, true, ErrScopeEnded
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ended {
		return v, true, ErrScopeEnded
	}
	for _, x := range a.list {
		if x.key == key {
			got, isT := x.v.(T)
			if !isT {
				return v, true, fmt.Errorf("caesura: Attach: key %v holds a value of another type, %T", key, x.v)
			}
			return got, true, nil
		}
	}
	v, err = open()
	if err != nil {
		return v, true, err
	}
	a.list = append(a.list, attached{key: key, v: v, done: func(ctx context.Context) error { return done(ctx, v) }})
	return v, true, nil
}

// attachmentSet is what [Attach] stored in a scope. Its own mutex lets open
// wait (for a pooled connection, say) without blocking the scope's.
type attachmentSet struct {
	mu    sync.Mutex
	ended bool
	list  []attached // in the order attached; few, so a slice beats a map
}

type attached struct {
	key  any
	v    any
	done func(context.Context) error
}

// attachments returns the scope's set, or nil once the function returned.
func (s *scope) attachments() *attachmentSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	// more before the check: end looks at more after it sets flagClosed,
	// so one of the two sees the other.
	m := s.extra()
	if s.flags.Load()&flagClosed != 0 {
		return nil
	}
	if m.attach == nil {
		m.attach = &attachmentSet{}
	}
	return m.attach
}

// detach runs the done functions of a, the scope's set taken when it closed,
// newest first, once the scope's locks are released. An Attach that found
// the set before it closed has either stored its value by now or finds it
// ended.
func (s *scope) detach(a *attachmentSet) error {
	a.mu.Lock()
	a.ended = true
	list := a.list
	a.list = nil
	a.mu.Unlock()
	var errs []error
	for i := len(list) - 1; i >= 0; i-- {
		if err := list[i].done(s.releaseContext()); err != nil {
			errs = append(errs, fmt.Errorf("caesura: release the scope's %v: %w", list[i].key, err))
		}
	}
	return errors.Join(errs...)
}
