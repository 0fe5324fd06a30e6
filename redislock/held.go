package redislock

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/caesura-go/caesura"
)

// Held is one acquisition of a [Mutex]. Its lease is renewed every TTL/3
// until Release; if renewal finds the lock gone, or cannot reach Redis
// before the lease's validity ends, Lost is cancelled with a
// [*caesura.LostError] whose reason matches [ErrStolen] or
// [ErrLeaseExpired]. Held implements [caesura.Fenced], [caesura.Lossy] and
// [caesura.LossNotifier].
//
// An idle Held costs no goroutine and no timer of its own: the Locker's
// scheduler runs every Held's renewals and validity checks from one timer.
type Held struct {
	l     *Locker
	key   string
	tok   string
	fence uint64
	// waited is set when the acquisition had to wait: the release then
	// skips the conditional SET, which cannot hand the lock to a waiter.
	waited bool

	renewWG sync.WaitGroup // a renewal in flight

	mu       sync.Mutex
	done     bool // released or lost: no more renewals
	released bool // Release was called
	// lost is made by the first Lost call, so that a Held nobody watches
	// costs no context: until then, ended and cause keep what it would have
	// been cancelled with (a *caesura.LostError, or nil for a release).
	lost     context.Context
	cancel   context.CancelCauseFunc
	notify   func(cause error) // registered by OnLost; called on a loss
	ended    bool
	cause    error
	renewing bool               // a renewal is in flight
	valid    time.Time          // end of the lease's validity, as far as we can prove
	rcancel  context.CancelFunc // cancels the last renewal (nil before the first)

	// Guarded by the Locker's sched.mu.
	next time.Time // when the scheduler runs event
	idx  int       // index in the scheduler's heap; -1 when not in it
}

// UnfencedHeld is one acquisition of a [Mutex] of an unfenced Locker
// ([Options.Unfenced], [NewRedlock]): a [*Held] without the fencing token.
// It implements [caesura.Lossy] and [caesura.LossNotifier].
type UnfencedHeld struct{ h *Held }

var _ caesura.LossNotifier = (*UnfencedHeld)(nil)

// Release gives the lock up (on every master, for Redlock); see
// [Held.Release].
func (u *UnfencedHeld) Release(ctx context.Context) error { return u.h.Release(ctx) }

// Lost returns a context cancelled when the lock is lost (for Redlock, the
// quorum); see [Held.Lost].
func (u *UnfencedHeld) Lost() context.Context { return u.h.Lost() }

// OnLost arranges for f to be called when the lock is lost; see
// [Held.OnLost].
func (u *UnfencedHeld) OnLost(f func(cause error)) { u.h.OnLost(f) }

// Key returns the lock's key.
func (u *UnfencedHeld) Key() string { return u.h.key }

// newHelds makes the Helds of a successful acquisition whose request was
// sent at start (after waiting, if waited), and schedules their renewal.
func (l *Locker) newHelds(ms []*Mutex, tok string, fences []uint64, start time.Time, waited bool) []*Held {
	hs := make([]*Held, len(ms))
	valid := start.Add(l.ttl - l.drift)
	renewAt := time.Now().Add(l.ttl / 3)
	for i, m := range ms {
		hs[i] = &Held{l: l, key: m.key, tok: tok, fence: fences[i], waited: waited, valid: valid, idx: -1}
	}
	l.sched.add(hs, renewAt)
	return hs
}

// Token returns the fencing token: higher for every later acquisition of the
// same key, including after this lease expired.
func (h *Held) Token() uint64 { return h.fence }

// Lost returns a context cancelled when the lock is lost, with a
// [*caesura.LostError] as its cause. Release cancels it too.
func (h *Held) Lost() context.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lost == nil {
		h.lost, h.cancel = context.WithCancelCause(context.Background())
		if h.ended {
			h.cancel(h.cause)
		}
	}
	return h.lost
}

// OnLost arranges for f to be called, in a goroutine of its own, when the
// lock is lost before Release (at once if it was lost already), with the
// cause Lost's context gets. It implements [caesura.LossNotifier], which
// the core uses instead of watching Lost: that saves a context and its
// watch per acquisition.
func (h *Held) OnLost(f func(cause error)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.ended {
		h.notify = f
	} else if h.cause != nil {
		go f(h.cause)
	}
}

// endLocked cancels h's Lost context with cause (nil: released), or keeps
// cause for the Lost call that makes it, and calls the OnLost function for
// a loss. The first end wins. h.mu is held.
func (h *Held) endLocked(cause error) {
	if h.ended {
		return
	}
	h.ended, h.cause = true, cause
	if h.cancel != nil {
		h.cancel(cause)
	}
	if f := h.notify; f != nil && cause != nil {
		go f(cause)
	}
	h.notify = nil
}

// end is endLocked for a caller without h.mu; it returns the loss h was
// told of before, if any.
func (h *Held) end() (lost error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	lost = h.cause // set only by an end, and only a loss has a cause
	h.endLocked(nil)
	return lost
}

// Key returns the lock's key.
func (h *Held) Key() string { return h.key }

// Release gives the lock up and hands it to the first waiter, if any, in one
// round trip. It returns an error matching [caesura.ErrNotHeld] when called
// twice or when the lock was lost (a stale token never releases a newer
// holder's lock), and one matching [ErrUnavailable] when Redis fails (the
// lock then frees itself when its lease ends).
func (h *Held) Release(ctx context.Context) error {
	if err := h.stop(); err != nil {
		return err
	}
	return errors.Join(h.l.release(ctx, []*Held{h})...)
}

// stop ends renewal and marks h released; it fails on a second call.
func (h *Held) stop() error {
	h.mu.Lock()
	if h.released {
		h.mu.Unlock()
		return fmt.Errorf("redislock: release %q: %w", h.key, caesura.ErrNotHeld)
	}
	h.released = true
	h.done = true
	h.l.sched.remove(h)
	if h.rcancel != nil {
		h.rcancel()
	}
	h.mu.Unlock()
	// No renewal starts once done is set; wait for one in flight (it was
	// just cancelled).
	h.renewWG.Wait()
	return nil
}

// event runs when h's scheduled time comes: at the end of the validity it
// reports the lock lost; otherwise it renews the lease, with a validity
// check scheduled for the end of the validity in case the renewal hangs.
func (h *Held) event() {
	h.mu.Lock()
	if h.done {
		h.mu.Unlock()
		return
	}
	l := h.l
	if !time.Now().Before(h.valid) {
		h.loseLocked(fmt.Errorf("%w (no renewal succeeded within %v of sending it)", ErrLeaseExpired, l.ttl-l.drift))
		h.mu.Unlock()
		return
	}
	if h.renewing { // early, while a renewal is in flight: check again at the end
		l.sched.add([]*Held{h}, h.valid)
		h.mu.Unlock()
		return
	}
	h.renewing = true
	h.renewWG.Add(1)
	// Release cancels the renewal through rcancel; the validity bounds it.
	ctx, cancel := context.WithDeadline(context.Background(), h.valid)
	h.rcancel = cancel
	l.sched.add([]*Held{h}, h.valid)
	h.mu.Unlock()
	defer h.renewWG.Done()

	start := time.Now()
	stolen, err := l.renew(ctx, h.key, h.tok)
	cancel()

	h.mu.Lock()
	defer h.mu.Unlock()
	h.renewing = false
	if h.done {
		return
	}
	switch {
	case err == nil && !stolen:
		h.valid = start.Add(l.ttl - l.drift)
		l.sched.add([]*Held{h}, time.Now().Add(l.ttl/3))
	case err == nil:
		h.loseLocked(ErrStolen)
	default:
		// Unreachable or slow: retry soon; the lock is lost if no
		// renewal succeeds before the validity ends.
		retry := time.Now().Add(max(time.Until(h.valid)/4, time.Millisecond))
		if retry.After(h.valid) {
			retry = h.valid
		}
		l.sched.add([]*Held{h}, retry)
	}
}

func (h *Held) loseLocked(reason error) {
	h.done = true
	h.l.sched.remove(h)
	h.endLocked(&caesura.LostError{Key: h.key, Err: reason})
}

// sched runs the renewals and validity checks of a Locker's Helds from one
// runtime timer. A timer per Held would be armed at every acquisition, and
// arming a timer earlier than any other wakes the Go network poller: while
// the goroutine waits for Redis that costs more than all of a lock's own
// bookkeeping. The shared timer stays armed for the earliest event even
// when that Held is gone, so in a steady state an acquisition arms nothing.
type sched struct {
	mu    sync.Mutex
	heap  heldHeap
	timer *time.Timer
	at    time.Time // when timer fires; zero when it is not armed
}

// add (re)schedules each of hs at t. Callers hold each Held's mu or own
// the Helds alone.
func (s *sched) add(hs []*Held, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range hs {
		h.next = t
		if h.idx >= 0 {
			heap.Fix(&s.heap, h.idx)
		} else {
			heap.Push(&s.heap, h)
		}
	}
	if s.at.IsZero() || t.Before(s.at) {
		s.armLocked(t)
	}
}

// remove unschedules h. The timer stays armed.
func (s *sched) remove(h *Held) {
	s.mu.Lock()
	if h.idx >= 0 {
		heap.Remove(&s.heap, h.idx)
	}
	s.mu.Unlock()
}

func (s *sched) armLocked(t time.Time) {
	s.at = t
	if s.timer == nil {
		s.timer = time.AfterFunc(time.Until(t), s.fire)
	} else {
		s.timer.Reset(time.Until(t))
	}
}

// fire runs from the timer: it takes the Helds that are due off the heap,
// re-arms the timer for the next one, and runs their events, each in a
// goroutine of its own (a renewal waits for Redis).
func (s *sched) fire() {
	now := time.Now()
	var due []*Held
	s.mu.Lock()
	s.at = time.Time{}
	for len(s.heap) > 0 && !s.heap[0].next.After(now) {
		due = append(due, heap.Pop(&s.heap).(*Held))
	}
	if len(s.heap) > 0 {
		s.armLocked(s.heap[0].next)
	}
	s.mu.Unlock()
	for _, h := range due {
		go h.event()
	}
}

// heldHeap orders Helds by their next event (container/heap).
type heldHeap []*Held

func (q heldHeap) Len() int           { return len(q) }
func (q heldHeap) Less(i, j int) bool { return q[i].next.Before(q[j].next) }
func (q heldHeap) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].idx = i
	q[j].idx = j
}
func (q *heldHeap) Push(x any) {
	h := x.(*Held)
	h.idx = len(*q)
	*q = append(*q, h)
}
func (q *heldHeap) Pop() any {
	old := *q
	h := old[len(old)-1]
	old[len(old)-1] = nil
	h.idx = -1
	*q = old[:len(old)-1]
	return h
}
