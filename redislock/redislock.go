package redislock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/redis/go-redis/v9"
)

// Client is the part of a go-redis v9 client that the backend uses: scripts
// and one pub/sub subscription. Every [redis.UniversalClient] (*redis.Client,
// *redis.ClusterClient, a Sentinel failover client) implements it, and also
// has the FCall and FunctionLoad methods with which the backend runs its
// scripts as Redis functions where the server has them (see the package
// documentation).
type Client interface {
	redis.Scripter
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
}

// Defaults used for the zero fields of [Options].
const (
	DefaultPrefix  = "caesura:redis:"
	DefaultTTL     = 10 * time.Second
	DefaultRecheck = time.Second

	// MaxTTL bounds Options.TTL: a queue entry keeps the waiter's TTL in 10
	// digits of milliseconds.
	MaxTTL = 1000 * time.Hour
)

// Options configure a [Locker]. A zero Options (or nil) gives the defaults.
type Options struct {
	// Prefix is put before every lock name to form its Redis key and its
	// caesura key; it also names the pub/sub channels (Prefix + "grants:"
	// and the Locker's id).
	// Zero means DefaultPrefix. Lockers that share locks must share it.
	Prefix string

	// TTL is the lease: how long Redis keeps a lock whose holder stopped
	// renewing it (a crashed process). Held locks are renewed every TTL/3.
	// Zero means DefaultTTL; it must be at least 30ms otherwise, and at most
	// MaxTTL.
	TTL time.Duration

	// Drift is the safety margin for clock drift and scheduling: a holder
	// considers its lease valid until TTL - Drift after it sent the
	// request, and signals loss then if it could not renew. Zero means
	// TTL/100 + 2ms; it must be below TTL/3.
	Drift time.Duration

	// Recheck bounds how long a waiter trusts the push notification: it
	// re-checks the lock at least this often (and when the holder's lease
	// ends), so a lost message costs at most Recheck. Zero means
	// DefaultRecheck; it is lowered to TTL/4 if above.
	Recheck time.Duration

	// Unfenced gives up fencing tokens for a cheaper cycle, as the locks
	// of bsm/redislock and redsync have none: a one-key lock whose key is
	// missing is taken by one plain SET … NX instead of the acquire
	// script, and its release deletes the key instead of keeping the next
	// fencing token there. Helds are then [*UnfencedHeld]s, without a
	// token; leases, renewal, the loss signal, the FIFO hand-off and
	// push-based waiting stay as they are. A lock found taken costs that
	// Acquire one round trip more (the SET, then the script that queues),
	// and for a second after it the Locker's acquisitions of the key go
	// to the script at once. Lockers of both kinds may share locks: a key
	// that holds a fencing counter is acquired and freed by the scripts,
	// which keep the counter, and a key that an unfenced Locker deleted
	// starts from the server clock again, as after an expiry (see the
	// package documentation, # Unfenced Lockers). Lockers of [NewRedlock]
	// are always unfenced.
	Unfenced bool
}

// Locker is a Redis lock backend: it names locks ([Locker.Mutex]) and
// acquires runs of them in one script call ([Locker.AcquireBatch]). It is safe
// for concurrent use. Waiters share one pub/sub subscription, opened on the
// first contended wait; [Locker.Close] ends it.
type Locker struct {
	c       *conn   // the one Redis (nil for Redlock)
	nodes   []*conn // Redlock's independent masters (nil otherwise)
	quorum  int
	prefix  string
	id      string // the first idLen characters of every token of l
	grants  string // the channel grants to l's waiters come on: chanArg + id
	ttl     time.Duration
	drift   time.Duration
	recheck time.Duration
	cluster bool
	// unfenced: no fencing tokens (Options.Unfenced, and Redlock). The
	// Locker's id, and so each of its tokens, starts with unfencedMark.
	unfenced bool

	// The scripts' constant arguments, converted to any once: a string
	// converted at each call costs an allocation. chanArg is the prefix of
	// every Locker's grant channel.
	chanArg, ttlArg, qttlArg any

	sched sched // renewals and validity checks of the Helds

	// taken remembers, by a hash of the key, when an unfenced Locker last
	// found a one-key lock taken at its first attempt (the time since born,
	// 0 for never): for takenFor after that, its acquisitions of the key
	// skip the plain SET, which a taken key would turn into a round trip
	// lost before the script that queues. A collision only costs the SET's
	// saving.
	born  time.Time
	seed  maphash.Seed
	taken [takenSlots]atomic.Int64

	mu      sync.Mutex
	waiters map[string]*waiter // by token
	sub     *redis.PubSub
	ready   chan struct{} // closed once the subscription is confirmed
	loopEnd chan struct{} // closed when the subscription loop returns
	closed  bool
}

// New returns a Locker on client. opts may be nil.
func New(client Client, opts *Options) (*Locker, error) {
	if client == nil {
		return nil, errors.New("redislock: nil client")
	}
	_, cluster := client.(*redis.ClusterClient)
	l, err := newLocker(opts, cluster, false)
	if err != nil {
		return nil, err
	}
	l.c = newConn(client)
	return l, nil
}

// newLocker checks opts and returns a Locker without its connections. A
// Redlock Locker is unfenced whatever opts say.
func newLocker(opts *Options, cluster, redlock bool) (*Locker, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.TTL < 30*time.Millisecond {
		return nil, fmt.Errorf("redislock: TTL %v below 30ms", o.TTL)
	}
	if o.TTL > MaxTTL {
		return nil, fmt.Errorf("redislock: TTL %v above %v", o.TTL, MaxTTL)
	}
	if o.Drift == 0 {
		o.Drift = o.TTL/100 + 2*time.Millisecond
	}
	if o.Drift < 0 || o.Drift >= o.TTL/3 {
		return nil, fmt.Errorf("redislock: Drift %v must be positive and below TTL/3 (%v)", o.Drift, o.TTL/3)
	}
	if o.Recheck == 0 {
		o.Recheck = DefaultRecheck
	}
	if o.Recheck < 0 {
		return nil, fmt.Errorf("redislock: negative Recheck %v", o.Recheck)
	}
	// A lock handed to a waiter is valid from the waiter's last re-check
	// (the earliest moment it can prove), so re-checks stay well inside
	// a lease.
	o.Recheck = min(o.Recheck, o.TTL/4)
	// A waiter refreshes its queue entry at every re-check; three missed
	// re-checks (plus a second of slack) drop it.
	qttl := 3*o.Recheck + time.Second
	unfenced := o.Unfenced || redlock
	id := randomHex("", idLen/2)
	if unfenced {
		id = unfencedMark + id[1:]
	}
	channel := o.Prefix + "grants:"
	return &Locker{
		prefix:   o.Prefix,
		id:       id,
		grants:   channel + id,
		ttl:      o.TTL,
		drift:    o.Drift,
		recheck:  o.Recheck,
		cluster:  cluster,
		unfenced: unfenced,
		chanArg:  channel,
		ttlArg:   strconv.FormatInt(o.TTL.Milliseconds(), 10),
		qttlArg:  strconv.FormatInt(qttl.Milliseconds(), 10),
		born:     time.Now(),
		seed:     maphash.MakeSeed(),
		waiters:  make(map[string]*waiter),
	}, nil
}

// Close ends the shared subscription. Locks still held stay held (release
// them first); Acquire calls that must wait fail afterwards.
func (l *Locker) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	sub, end := l.sub, l.loopEnd
	l.mu.Unlock()
	if sub == nil {
		return nil
	}
	err := sub.Close()
	<-end
	return err
}

// Mutex names the lock name without acquiring it. Its key is the Locker's
// prefix followed by name. In Redis Cluster, names that share a hash tag
// ("{order:42}:lines", "{order:42}:total") share a slot and are acquired
// together in one script call; others are acquired one slot at a time.
func (l *Locker) Mutex(name string) *Mutex {
	return &Mutex{l: l, name: name, key: l.prefix + name}
}

// Mutex is one named Redis lock. It implements [caesura.Lock],
// [caesura.TryLocker] and [caesura.BatchLock]; its Helds implement
// [caesura.Fenced], [caesura.Lossy] and [caesura.LossNotifier] (the
// [*UnfencedHeld]s of an unfenced Locker all but the first). A Mutex may
// be acquired by many goroutines at once: each acquisition is its own
// Held.
type Mutex struct {
	l    *Locker
	name string
	key  string
}

var (
	_ caesura.TryLocker    = (*Mutex)(nil)
	_ caesura.BatchLock    = (*Mutex)(nil)
	_ caesura.Batcher      = (*Locker)(nil)
	_ caesura.Fenced       = (*Held)(nil)
	_ caesura.Lossy        = (*Held)(nil)
	_ caesura.LossNotifier = (*Held)(nil)
)

// Key returns the lock's key: the Locker's prefix followed by the name.
func (m *Mutex) Key() string { return m.key }

// Batcher returns the Locker, which acquires runs of its Mutexes in one call.
func (m *Mutex) Batcher() caesura.Batcher { return m.l }

// Acquire waits until the lock is held, ctx is done (an error matching
// [caesura.ErrNotAcquired] and ctx's error) or Redis fails (an error matching
// [ErrUnavailable]). Waiters are served in FIFO order and woken by a push
// message, not by polling.
func (m *Mutex) Acquire(ctx context.Context) (caesura.Held, error) {
	hs, err := m.l.acquireAny(ctx, []*Mutex{m}, true)
	if err != nil {
		return nil, err
	}
	return m.l.wrap(hs)[0], nil
}

// TryAcquire takes the lock if it is free and nobody queues for it, in one
// round trip (an unfenced Locker's may take two where the key exists: the
// plain SET, then the script). A taken lock gives an error matching
// [caesura.ErrNotAcquired]; a Redis failure one matching [ErrUnavailable].
func (m *Mutex) TryAcquire(ctx context.Context) (caesura.Held, error) {
	hs, err := m.l.acquireAny(ctx, []*Mutex{m}, false)
	if err != nil {
		return nil, err
	}
	return m.l.wrap(hs)[0], nil
}

// acquireAny dispatches to the single-Redis or the Redlock acquisition.
func (l *Locker) acquireAny(ctx context.Context, ms []*Mutex, wait bool) ([]*Held, error) {
	if l.nodes != nil {
		return l.redlockAcquire(ctx, ms, wait)
	}
	return l.acquire(ctx, ms, wait)
}

// AcquireBatch acquires every lock in locks (all Mutexes of this Locker,
// sorted by key, as the core passes them) all-or-nothing in one script call
// (in Redis Cluster: one call per run of keys that share a hash slot, in
// order). While it waits it holds no key above the one it waits for, and
// queues for that one key only. On error no lock of the batch is held.
func (l *Locker) AcquireBatch(ctx context.Context, locks []caesura.Lock) ([]caesura.Held, error) {
	ms := make([]*Mutex, len(locks))
	for i, lk := range locks {
		m, ok := lk.(*Mutex)
		if !ok || m == nil || m.l != l {
			return nil, fmt.Errorf("redislock: batch lock %d (%T): %w: not a Mutex of this Locker", i, lk, caesura.ErrInvalidLock)
		}
		ms[i] = m
	}
	if !l.cluster {
		hs, err := l.acquireAny(ctx, ms, true)
		return l.wrap(hs), err
	}
	var out []*Held
	for len(ms) > 0 {
		n := 1
		for n < len(ms) && slot(ms[n].key) == slot(ms[0].key) {
			n++
		}
		hs, err := l.acquireAny(ctx, ms[:n], true)
		if err != nil {
			if rerr := l.ReleaseBatch(context.WithoutCancel(ctx), l.wrap(out)); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return nil, err
		}
		out = append(out, hs...)
		ms = ms[n:]
	}
	return l.wrap(out), nil
}

// wrap returns hs as caesura.Helds: *Held, or *UnfencedHeld (no fencing
// token) for an unfenced Locker.
func (l *Locker) wrap(hs []*Held) []caesura.Held {
	if hs == nil {
		return nil
	}
	out := make([]caesura.Held, len(hs))
	for i, h := range hs {
		if l.unfenced {
			out[i] = &UnfencedHeld{h: h}
		} else {
			out[i] = h
		}
	}
	return out
}

// ReleaseBatch releases several Helds of this Locker in one script call per
// hash slot. It returns an error matching [caesura.ErrNotHeld] if any of them
// was not held (released already, or lost); the others are released anyway.
func (l *Locker) ReleaseBatch(ctx context.Context, helds []caesura.Held) error {
	var errs []error
	byTok := map[string][]*Held{}
	var order []string
	for _, x := range helds {
		if r, ok := x.(*UnfencedHeld); ok && r != nil {
			x = r.h
		}
		h, ok := x.(*Held)
		if !ok || h == nil || h.l != l {
			errs = append(errs, fmt.Errorf("redislock: release %T: %w: not a Held of this Locker", x, caesura.ErrInvalidLock))
			continue
		}
		if err := h.stop(); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, seen := byTok[h.tok]; !seen {
			order = append(order, h.tok)
		}
		byTok[h.tok] = append(byTok[h.tok], h)
	}
	for _, tok := range order {
		hs := byTok[tok]
		for len(hs) > 0 {
			n := 1
			for l.cluster && n < len(hs) && slot(hs[n].key) == slot(hs[0].key) {
				n++
			}
			if !l.cluster {
				n = len(hs)
			}
			errs = append(errs, l.release(ctx, hs[:n])...)
			hs = hs[n:]
		}
	}
	return errors.Join(errs...)
}

// release releases helds that share a token and have been stopped: one
// key of one Redis taken without waiting by a conditional SET where the
// server has it (see conn.condRelease), else by the release script.
func (l *Locker) release(ctx context.Context, hs []*Held) []error {
	var (
		res  []int64
		err  error
		done bool
	)
	var next, tok any = nil, hs[0].tok
	if len(hs) == 1 && l.unfenced {
		// The value a plain SET wrote where the key was missing (see
		// plainAcquire), which the script compares whole.
		tok = plainValue(hs[0].tok)
	} else if len(hs) == 1 {
		// The key's value while held, which the script's fast path
		// compares whole (an equality of two Lua strings costs the server
		// less than cutting out the token first), and the next fence,
		// which go-redis writes without a string.
		h := hs[0]
		val := strconv.AppendUint(append(make([]byte, 0, len(h.tok)+20), h.tok...), h.fence, 10)
		tok, next = val, h.fence+1
		// A lock that was waited for is likely to have waiters again, whom
		// only the script hands it to: a conditional SET would cost a
		// round trip more.
		if !h.waited {
			var freed bool
			freed, done, err = l.c.condRelease(ctx, h.key, val, h.fence+1)
			res = []int64{0}
			if freed {
				res[0] = 1
			}
		}
	}
	if !done {
		keys := make([]string, len(hs))
		for i, h := range hs {
			keys[i] = h.key
		}
		res, err = l.releaseKeys(ctx, keys, tok, next)
	}
	var errs []error
	for i, h := range hs {
		lostErr := h.end()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("redislock: release %q: %w", h.key, errors.Join(ErrUnavailable, err)))
		case i >= len(res) || res[i] != 1:
			errs = append(errs, fmt.Errorf("redislock: release %q: %w", h.key, caesura.ErrNotHeld))
		case lostErr != nil:
			// The key was still ours and is freed now, but the holder
			// had been told the lock was lost.
			errs = append(errs, fmt.Errorf("redislock: release %q: %w (%w)", h.key, caesura.ErrNotHeld, lostErr))
		}
	}
	return errs
}

// randomHex returns prefix followed by n random bytes in hex (n at most
// 16), in one allocation.
func randomHex(prefix string, n int) string {
	var b [16]byte
	rand.Read(b[:n]) // never fails (crypto/rand, Go 1.24+)
	var hx [32]byte
	hex.Encode(hx[:], b[:n])
	var s strings.Builder // String does not copy
	s.Grow(len(prefix) + 2*n)
	s.WriteString(prefix)
	s.Write(hx[:2*n])
	return s.String()
}

// idLen is the length of a Locker's id, which starts each of its tokens:
// a grant is published on the channel of the waiter's Locker alone
// (channel + id), so a hand-off wakes one process, not every process that
// waits for any lock of the prefix. The other 96 bits of a token are random.
// An id is hex, except that an unfenced Locker's starts with unfencedMark
// instead of its first digit.
const idLen = 8

// takenSlot returns the index of key in l.taken.
func (l *Locker) takenSlot(key string) uint64 { return maphash.String(l.seed, key) % takenSlots }

// takenSlots and takenFor: see Locker.taken.
const (
	takenSlots = 64
	takenFor   = time.Second
)

// unfencedMark starts every token of an unfenced Locker, so that the
// scripts give such a token a fence of 0 where they would read the clock
// (a missing key, a hand-off from a fence of 0), and a key taken with it
// is deleted when freed (see scripts.go, isUnfenced).
const unfencedMark = "u"

// token returns a new token of l: its id and 96 random bits.
func (l *Locker) token() string { return randomHex(l.id, (32-idLen)/2) }

type grantMsg struct {
	key   string
	fence uint64
}

type waiter struct {
	grant chan grantMsg // a release handed us a key
	wake  chan struct{} // re-check now (the subscription reconnected)
}

// acquire takes ms (sorted, one hash slot) all-or-nothing. With wait false it
// makes one attempt.
func (l *Locker) acquire(ctx context.Context, ms []*Mutex, wait bool) ([]*Held, error) {
	keys := make([]string, len(ms))
	for i, m := range ms {
		if m.name == "" {
			return nil, fmt.Errorf("redislock: %w: empty lock name", caesura.ErrInvalidLock)
		}
		keys[i] = m.key
	}
	first := keys[0]
	if err := ctx.Err(); err != nil {
		return nil, caesura.NotAcquired(first, context.Cause(ctx))
	}
	tok := l.token()

	// Queue at once only when the subscription is up, so that no grant can
	// be published before we listen for it. Otherwise try first, and set
	// the subscription up only when we must wait.
	var w *waiter
	if wait {
		w = l.register(tok)
	}
	if w != nil {
		defer l.unregister(tok)
	}
	var confirmed time.Time // send time of the last attempt that found us waiting
	var taken *atomic.Int64 // for one key of an unfenced Locker: see l.taken
	if l.unfenced && len(keys) == 1 {
		taken = &l.taken[l.takenSlot(first)]
	}
	for waited := false; ; waited = true {
		start := time.Now()
		if taken != nil && !waited {
			if t := taken.Load(); t == 0 || start.Sub(l.born)-time.Duration(t) >= takenFor {
				// A missing key is taken by a plain SET; anything else,
				// or a server that refuses the SET, goes to the script.
				ok, done, err := l.c.plainAcquire(ctx, first, plainValue(tok), l.ttlArg)
				if ok {
					return l.newHelds(ms, tok, []uint64{0}, start, false), nil
				}
				if done {
					return nil, l.fail(ctx, keys, tok, err)
				}
			}
		}
		ok, fences, rem, err := l.runAcquire(ctx, l.c, keys, tok, w != nil)
		if err != nil {
			return nil, l.fail(ctx, keys, tok, err)
		}
		if ok {
			return l.newHelds(ms, tok, fences, start, waited), nil
		}
		if taken != nil && !waited {
			taken.Store(int64(max(start.Sub(l.born), 1)))
		}
		if !wait {
			return nil, fmt.Errorf("redislock: lock %q: %w", first, caesura.ErrNotAcquired)
		}
		if w == nil {
			if err := l.subscribe(ctx); err != nil {
				return nil, l.fail(ctx, keys, tok, err)
			}
			w = l.register(tok)
			if w == nil {
				return nil, fmt.Errorf("redislock: lock %q: %w: Locker closed", first, ErrUnavailable)
			}
			defer l.unregister(tok)
			continue
		}
		confirmed = start

		d := l.recheck
		if r := rem + time.Millisecond; rem >= 0 && r < d {
			d = r
		}
		timer := time.NewTimer(d)
		select {
		case g := <-w.grant:
			timer.Stop()
			if len(keys) == 1 && g.key == keys[0] {
				return l.newHelds(ms, tok, []uint64{g.fence}, confirmed, true), nil
			}
			// One key of a batch was handed to us: try the rest.
		case <-w.wake:
			timer.Stop()
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, l.fail(ctx, keys, tok, ctx.Err())
		}
	}
}

// fail withdraws tok from keys (leaving every queue, handing on any key that
// was handed to it) and returns the error for err.
func (l *Locker) fail(ctx context.Context, keys []string, tok string, err error) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.ttl/3)
	cerr := l.withdraw(cctx, keys, tok)
	cancel()
	var out error
	if ctx.Err() != nil {
		out = caesura.NotAcquired(keys[0], context.Cause(ctx))
	} else {
		out = fmt.Errorf("redislock: lock %q: %w", keys[0], errors.Join(ErrUnavailable, err))
	}
	if cerr != nil {
		// The lock may stay ours until its lease ends.
		out = errors.Join(out, fmt.Errorf("redislock: withdraw %q: %w", keys[0], errors.Join(ErrUnavailable, cerr)))
	}
	return out
}

// runAcquire runs the acquire script on c and reads its reply (see
// parseAcquire); with queue it takes a place in the queue of the key that
// blocks it.
func (l *Locker) runAcquire(ctx context.Context, c *conn, keys []string, tok string, queue bool) (ok bool, fences []uint64, rem time.Duration, err error) {
	args := []any{tok, l.ttlArg, l.qttlArg, l.chanArg}
	if !queue {
		args = args[:2]
	}
	reply, err := acquireScript.run(ctx, c, keys, args...).Result()
	if err != nil {
		return false, nil, 0, err
	}
	return parseAcquire(reply, len(keys))
}

// parseAcquire reads the acquire script's reply for n keys: one key's fence,
// {1, fence...}, or {0, i, ms} (see scripts.go).
func parseAcquire(reply any, n int) (ok bool, fences []uint64, rem time.Duration, err error) {
	vals, isList := reply.([]any)
	if !isList {
		if n != 1 {
			return false, nil, 0, fmt.Errorf("redislock: script reply %v for %d keys", reply, n)
		}
		f, err := parseFence(reply)
		if err != nil {
			return false, nil, 0, err
		}
		return true, []uint64{f}, 0, nil
	}
	if len(vals) == 0 {
		return false, nil, 0, errors.New("redislock: empty script reply")
	}
	flag, _ := vals[0].(int64)
	if flag == 1 {
		if len(vals) != n+1 {
			return false, nil, 0, fmt.Errorf("redislock: script reply has %d values, want %d", len(vals), n+1)
		}
		fences = make([]uint64, n)
		for i := range n {
			if fences[i], err = parseFence(vals[i+1]); err != nil {
				return false, nil, 0, err
			}
		}
		return true, fences, 0, nil
	}
	if len(vals) != 3 {
		return false, nil, 0, fmt.Errorf("redislock: script reply has %d values, want 3", len(vals))
	}
	ms, _ := vals[2].(int64)
	return false, nil, time.Duration(ms) * time.Millisecond, nil
}

// parseFence reads a fence of the acquire script's reply: an integer or,
// from 1e14 on, possibly a decimal string (see scripts.go); 0 for an
// unfenced token.
func parseFence(v any) (uint64, error) {
	switch f := v.(type) {
	case int64:
		if f < 0 {
			return 0, fmt.Errorf("redislock: bad fence %d", f)
		}
		return uint64(f), nil
	case string:
		u, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("redislock: bad fence %q: %w", f, err)
		}
		return u, nil
	}
	return 0, fmt.Errorf("redislock: bad fence %v", v)
}

// register adds a waiter for tok if the subscription is ready.
func (l *Locker) register(tok string) *waiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.ready == nil {
		return nil
	}
	select {
	case <-l.ready:
	default:
		return nil
	}
	w := &waiter{grant: make(chan grantMsg, 1), wake: make(chan struct{}, 1)}
	l.waiters[tok] = w
	return w
}

func (l *Locker) unregister(tok string) {
	l.mu.Lock()
	delete(l.waiters, tok)
	l.mu.Unlock()
}

// subscribe opens the shared subscription if needed and waits until Redis
// confirmed it.
func (l *Locker) subscribe(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errors.New("redislock: Locker closed")
	}
	if l.sub == nil {
		l.sub = l.c.Subscribe(context.WithoutCancel(ctx), l.grants)
		l.ready = make(chan struct{})
		l.loopEnd = make(chan struct{})
		go l.loop(l.sub, l.ready, l.loopEnd)
	}
	ready, end := l.ready, l.loopEnd
	l.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-end:
		return errors.New("redislock: Locker closed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop reads the subscription until Close. After an error or a
// re-subscription it tells every waiter to re-check, since messages may have
// been lost meanwhile.
func (l *Locker) loop(sub *redis.PubSub, ready, end chan struct{}) {
	defer close(end)
	confirmed := false
	backoff := time.Millisecond
	for {
		msg, err := sub.Receive(context.Background())
		if err != nil {
			l.mu.Lock()
			closed := l.closed
			l.mu.Unlock()
			if closed {
				return
			}
			l.wakeAll()
			time.Sleep(backoff) // Receive reconnects; do not spin while Redis is down
			backoff = min(2*backoff, 100*time.Millisecond)
			continue
		}
		backoff = time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if !confirmed {
				confirmed = true
				close(ready)
			} else {
				l.wakeAll()
			}
		case *redis.Message:
			l.dispatch(m.Payload)
		}
	}
}

// dispatch delivers "token:fence:key" to the waiter with that token.
func (l *Locker) dispatch(payload string) {
	tok, rest, ok := strings.Cut(payload, ":")
	if !ok {
		return
	}
	fs, key, ok := strings.Cut(rest, ":")
	if !ok {
		return
	}
	f, err := strconv.ParseUint(fs, 10, 64)
	if err != nil {
		return
	}
	l.mu.Lock()
	w := l.waiters[tok]
	l.mu.Unlock()
	if w == nil {
		return
	}
	select {
	case w.grant <- grantMsg{key: key, fence: f}:
	default: // an unread grant is pending; the next attempt sees the state
	}
}

func (l *Locker) wakeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.waiters {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}
