package redislock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/redis/go-redis/v9"
)

// NewRedlock returns a Locker on N independent Redis masters (the Redlock
// algorithm): a lock is held when a quorum of N/2+1 of them granted it within
// its validity (TTL minus the time the attempt took minus Drift), and is
// released on every master when an attempt falls short. Renewal needs the
// quorum too; when it cannot get it before the validity ends, the lock is
// reported lost.
//
// The API is the same as [New]'s, with two differences: waiting re-tries
// with a short randomized backoff (bounded by the holder's remaining lease
// and [Options.Recheck]) instead of the single-Redis FIFO hand-off, which
// could leave waiters each holding part of the masters; and Helds are
// [*UnfencedHeld]s, which carry no fencing token, since counters on
// independent masters do not add up to one that always grows
// ([Options.Unfenced] is implied).
func NewRedlock(clients []Client, opts *Options) (*Locker, error) {
	if len(clients) == 0 {
		return nil, errors.New("redislock: Redlock needs at least one client")
	}
	cluster := false
	for i, c := range clients {
		if c == nil {
			return nil, fmt.Errorf("redislock: nil client %d", i)
		}
		if _, ok := c.(*redis.ClusterClient); ok {
			cluster = true
		}
	}
	l, err := newLocker(opts, cluster, true)
	if err != nil {
		return nil, err
	}
	l.nodes = make([]*conn, len(clients))
	for i, c := range clients {
		l.nodes[i] = newConn(c)
	}
	l.quorum = len(clients)/2 + 1
	return l, nil
}

// onNodes runs f on every master in parallel and returns the errors.
func (l *Locker) onNodes(f func(i int, c *conn) error) []error {
	errs := make([]error, len(l.nodes))
	var wg sync.WaitGroup
	for i, c := range l.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i, c)
		}()
	}
	wg.Wait()
	return errs
}

// nodeCtx bounds each master's share of an operation (as redsync does, with
// a larger floor for loaded machines), so that a dead master cannot eat the
// validity. The calls to the masters run in parallel from the same moment,
// so they share one context (and one runtime timer).
func (l *Locker) nodeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, min(max(l.ttl/10, 100*time.Millisecond), (l.ttl-l.drift)/3))
}

// renew extends tok's lease of key. stolen reports that the lock is gone or
// owned by another token (on too many masters to keep a quorum).
func (l *Locker) renew(ctx context.Context, key, tok string) (stolen bool, err error) {
	run := func(ctx context.Context, c *conn) (int64, error) {
		return renewScript.run(ctx, c, []string{key}, tok, l.ttlArg).Int64()
	}
	if l.nodes == nil {
		idx, err := run(ctx, l.c)
		return err == nil && idx != 0, err
	}
	var mu sync.Mutex
	ok, gone := 0, 0
	nctx, cancel := l.nodeCtx(ctx)
	defer cancel()
	errs := l.onNodes(func(_ int, c *conn) error {
		idx, err := run(nctx, c)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
		case idx == 0:
			ok++
		default:
			gone++
		}
		return err
	})
	switch {
	case ok >= l.quorum:
		return false, nil
	case gone > len(l.nodes)-l.quorum:
		return true, nil
	}
	return false, fmt.Errorf("redislock: renewed on %d of %d masters, quorum %d: %w", ok, len(l.nodes), l.quorum, errors.Join(errs...))
}

// releaseKeys frees keys owned by tok and reports per key whether it was
// held (on a quorum of masters, for Redlock). next is the fencing token
// after the holder's, for one key of a single Redis, or nil; with next, tok
// is the holder's whole value (its token, then its fence), which the
// release script's fast path compares with the key's value at once.
func (l *Locker) releaseKeys(ctx context.Context, keys []string, tok, next any) ([]int64, error) {
	if l.nodes == nil {
		return l.runRelease(ctx, l.c, keys, tok, next)
	}
	var mu sync.Mutex
	count := make([]int, len(keys))
	failed := 0
	errs := l.onNodes(func(_ int, c *conn) error {
		res, err := l.runRelease(ctx, c, keys, tok, nil)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			return err
		}
		for i, v := range res {
			if i < len(count) && v == 1 {
				count[i]++
			}
		}
		return nil
	})
	out := make([]int64, len(keys))
	held := false
	for i, n := range count {
		if n >= l.quorum {
			out[i] = 1
			held = true
		}
	}
	if !held && failed > len(l.nodes)-l.quorum {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// runRelease runs the release script on c and reads its reply (see
// parseRelease). next (nil, or one key's next fencing token, with tok the
// holder's value) lets the script take its fast path.
func (l *Locker) runRelease(ctx context.Context, c *conn, keys []string, tok, next any) ([]int64, error) {
	args := []any{tok, next}
	if next == nil {
		args = args[:1]
	}
	reply, err := releaseScript.run(ctx, c, keys, args...).Result()
	if err != nil {
		return nil, err
	}
	return parseRelease(reply, len(keys))
}

// parseRelease turns the release script's reply for n keys (1 when it freed
// every key, else 1 or 0 per key) into 1 or 0 per key.
func parseRelease(reply any, n int) ([]int64, error) {
	switch r := reply.(type) {
	case int64:
		out := make([]int64, n)
		for i := range out {
			out[i] = r
		}
		return out, nil
	case []any:
		out := make([]int64, len(r))
		for i, v := range r {
			x, ok := v.(int64)
			if !ok {
				return nil, fmt.Errorf("redislock: release reply %v", reply)
			}
			out[i] = x
		}
		return out, nil
	}
	return nil, fmt.Errorf("redislock: release reply %v", reply)
}

// withdraw leaves every queue of keys and frees what tok holds of them, on
// every master.
func (l *Locker) withdraw(ctx context.Context, keys []string, tok string) error {
	run := func(ctx context.Context, c *conn) error {
		return cancelScript.run(ctx, c, keys, tok).Err()
	}
	if l.nodes == nil {
		return run(ctx, l.c)
	}
	var reached int
	var mu sync.Mutex
	errs := l.onNodes(func(_ int, c *conn) error {
		err := run(ctx, c)
		if err == nil {
			mu.Lock()
			reached++
			mu.Unlock()
		}
		return err
	})
	if reached == len(l.nodes) {
		return nil
	}
	// A master that could not be reached keeps its part until the lease
	// ends; that part alone is no quorum.
	return errors.Join(errs...)
}

// redlockAcquire makes attempts on every master until a quorum grants the
// lock in time, ctx ends, or (wait false) after one attempt.
func (l *Locker) redlockAcquire(ctx context.Context, ms []*Mutex, wait bool) ([]*Held, error) {
	keys := make([]string, len(ms))
	for i, m := range ms {
		if m.name == "" {
			return nil, fmt.Errorf("redislock: %w: empty lock name", caesura.ErrInvalidLock)
		}
		keys[i] = m.key
	}
	backoff := time.Millisecond
	unavailable := 0 // consecutive attempts without enough masters
	for {
		if err := ctx.Err(); err != nil {
			return nil, caesura.NotAcquired(keys[0], context.Cause(ctx))
		}
		tok := l.token()
		var val string // a missing key's value when a plain SET takes it
		if len(keys) == 1 {
			val = plainValue(tok)
		}
		start := time.Now()
		var mu sync.Mutex
		ok, failed := 0, 0
		var rem time.Duration
		nctx, cancel := l.nodeCtx(ctx)
		errs := l.onNodes(func(_ int, c *conn) error {
			var (
				granted, done bool
				r             time.Duration
				err           error
			)
			if len(keys) == 1 {
				granted, done, err = c.plainAcquire(nctx, keys[0], val, l.ttlArg)
			}
			if !done {
				granted, _, r, err = l.runAcquire(nctx, c, keys, tok, false)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failed++
			case granted:
				ok++
			default:
				rem = max(rem, r)
			}
			return err
		})
		cancel()
		valid := start.Add(l.ttl - l.drift)
		if ok >= l.quorum && time.Until(valid) > 0 {
			return l.newHelds(ms, tok, make([]uint64, len(ms)), start, false), nil
		}
		// Short of a quorum, or too late: give back what we got.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.ttl/3)
		werr := l.withdraw(cctx, keys, tok)
		cancel()
		if ctx.Err() != nil {
			return nil, caesura.NotAcquired(keys[0], context.Cause(ctx))
		}
		if failed > len(l.nodes)-l.quorum && (!wait || unavailable >= 2) {
			err := fmt.Errorf("redislock: lock %q: %d of %d masters failed, quorum %d: %w", keys[0], failed, len(l.nodes), l.quorum,
				errors.Join(append([]error{ErrUnavailable}, errs...)...))
			if werr != nil {
				err = errors.Join(err, fmt.Errorf("redislock: withdraw %q: %w", keys[0], werr))
			}
			return nil, err
		}
		if failed > len(l.nodes)-l.quorum {
			unavailable++ // a slow moment, or down: try again before saying so
		} else {
			unavailable = 0
		}
		if !wait {
			return nil, fmt.Errorf("redislock: lock %q: %w (granted by %d of %d masters, quorum %d)", keys[0], caesura.ErrNotAcquired, ok, len(l.nodes), l.quorum)
		}
		d := min(backoff, l.recheck)
		if rem > 0 {
			d = min(d, rem+time.Millisecond)
		}
		d = d/2 + rand.N(d/2+1) // jitter, so that contenders do not collide again
		backoff = min(2*backoff, 50*time.Millisecond)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, caesura.NotAcquired(keys[0], context.Cause(ctx))
		}
	}
}
