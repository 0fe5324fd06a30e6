package redislock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/caesura-go/caesura"
)

// Held is one acquisition of a [Mutex]. Its lease is renewed every TTL/3
// (from a timer, so an idle Held costs no goroutine) until Release; if
// renewal finds the lock gone, or cannot reach Redis before the lease's
// validity ends, Lost is cancelled with a [*caesura.LostError] whose reason
// matches [ErrStolen] or [ErrLeaseExpired]. Held implements [caesura.Fenced]
// and [caesura.Lossy].
type Held struct {
	l     *Locker
	key   string
	tok   string
	fence uint64

	lost   context.Context
	cancel context.CancelCauseFunc

	rctx    context.Context
	rcancel context.CancelFunc // cancels a renewal in flight
	renewWG sync.WaitGroup     // a renewal in flight

	mu       sync.Mutex
	done     bool      // released or lost: no more renewals
	released bool      // Release was called
	valid    time.Time // end of the lease's validity, as far as we can prove
	renewT   *time.Timer
	expireT  *time.Timer
}

// newHelds makes the Helds of a successful acquisition whose request was
// sent at start, and starts their renewal.
func (l *Locker) newHelds(ms []*Mutex, tok string, fences []uint64, start time.Time) []*Held {
	hs := make([]*Held, len(ms))
	valid := start.Add(l.ttl - l.drift)
	for i, m := range ms {
		h := &Held{l: l, key: m.key, tok: tok, fence: fences[i], valid: valid}
		h.lost, h.cancel = context.WithCancelCause(context.Background())
		h.rctx, h.rcancel = context.WithCancel(context.Background())
		h.mu.Lock()
		h.renewT = time.AfterFunc(l.ttl/3, h.renew)
		h.expireT = time.AfterFunc(time.Until(valid), h.expire)
		h.mu.Unlock()
		hs[i] = h
	}
	return hs
}

// Token returns the fencing token: higher for every later acquisition of the
// same key, including after this lease expired.
func (h *Held) Token() uint64 { return h.fence }

// Lost returns a context cancelled when the lock is lost, with a
// [*caesura.LostError] as its cause. Release cancels it too.
func (h *Held) Lost() context.Context { return h.lost }

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
	h.renewT.Stop()
	h.expireT.Stop()
	h.rcancel()
	h.mu.Unlock()
	// No renewal starts once done is set; wait for one in flight (it was
	// just cancelled).
	h.renewWG.Wait()
	return nil
}

// renew runs from renewT.
func (h *Held) renew() {
	h.mu.Lock()
	if h.done {
		h.mu.Unlock()
		return
	}
	h.renewWG.Add(1)
	valid := h.valid
	h.mu.Unlock()
	defer h.renewWG.Done()

	l := h.l
	start := time.Now()
	ctx, cancel := context.WithDeadline(h.rctx, valid)
	stolen, err := l.renew(ctx, h.key, h.tok)
	cancel()

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return
	}
	switch {
	case err == nil && !stolen:
		h.valid = start.Add(l.ttl - l.drift)
		h.expireT.Reset(time.Until(h.valid))
		h.renewT.Reset(l.ttl / 3)
	case err == nil:
		h.loseLocked(ErrStolen)
	default:
		// Unreachable or slow: retry soon; expire fires if no renewal
		// succeeds before the validity ends.
		h.renewT.Reset(max(time.Until(h.valid)/4, time.Millisecond))
	}
}

// expire runs from expireT at the end of the validity.
func (h *Held) expire() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return
	}
	if d := time.Until(h.valid); d > 0 { // renewed meanwhile
		h.expireT.Reset(d)
		return
	}
	h.loseLocked(fmt.Errorf("%w (no renewal succeeded within %v of sending it)", ErrLeaseExpired, h.l.ttl-h.l.drift))
}

func (h *Held) loseLocked(reason error) {
	h.done = true
	h.renewT.Stop()
	h.expireT.Stop()
	h.cancel(&caesura.LostError{Key: h.key, Err: reason})
}
