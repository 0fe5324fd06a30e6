// Package memlock is caesura's in-process backend: named mutexes for the
// goroutines of one process, and the embedded default.
//
// Waiting is FIFO per key and honours the context with no polling: a waiter
// parks on a channel and the releaser hands the lock straight to the longest
// waiter, so a releaser that asks again queues behind it. An uncontended
// acquire costs one allocation (the key's entry, which is also the holder's
// handle) and a contended one one more (the waiter's handle); parking channels
// are reused. A key's entry exists only while the key is held or waited for,
// so the Locker does not grow with the number of keys ever used.
//
// Every acquisition gets a fencing token from one counter per Locker, so a
// key's tokens only grow.
package memlock

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/caesura-go/caesura"
)

// DefaultPrefix is the namespace memlock puts before every name to form a
// lock's key, unless Options.Prefix says otherwise.
const DefaultPrefix = "mem:"

const shards = 64

// Options configures a Locker. A zero Options is the default.
type Options struct {
	// Prefix is put before every name to form the key. Empty means
	// DefaultPrefix. Two Lockers with the same prefix used in one scope
	// would be taken for one lock space: give each its own.
	Prefix string
}

// Locker is a set of named in-process mutexes. Create one with New; it is
// safe for concurrent use.
type Locker struct {
	prefix string
	seed   maphash.Seed
	tokens atomic.Uint64
	chans  sync.Pool // parking channels, buffered 1
	shards [shards]shard
}

type shard struct {
	mu sync.Mutex
	m  map[string]*entry
	_  [40]byte // keep shards on separate cache lines
}

// entry is the state of one held key.
type entry struct {
	key     string
	sh      *shard
	holder  *ticket
	waiters []*ticket // FIFO
	first   ticket    // the handle of the acquisition that created the entry
}

// ticket is one acquisition: the Held handed to the caller.
type ticket struct {
	l       *Locker
	e       *entry
	token   uint64
	ch      chan struct{} // set while waiting
	granted bool          // the lock was handed to this waiter (under sh.mu)
}

// New returns a Locker.
func New(opts Options) *Locker {
	l := &Locker{prefix: opts.Prefix, seed: maphash.MakeSeed()}
	if l.prefix == "" {
		l.prefix = DefaultPrefix
	}
	for i := range l.shards {
		l.shards[i].m = make(map[string]*entry)
	}
	l.chans.New = func() any { return make(chan struct{}, 1) }
	return l
}

// Mutex names the lock name without acquiring it. The returned Lock
// implements caesura.TryLocker and caesura.BatchLock; its Helds implement
// caesura.Fenced.
func (l *Locker) Mutex(name string) caesura.Lock {
	return &mutex{l: l, key: l.prefix + name, name: name}
}

type mutex struct {
	l    *Locker
	key  string
	name string
}

func (m *mutex) Key() string { return m.key }

func (m *mutex) Batcher() caesura.Batcher { return m.l }

func (m *mutex) check() error {
	if m.name == "" {
		return fmt.Errorf("memlock: %w: empty name", caesura.ErrInvalidLock)
	}
	return nil
}

func (l *Locker) shard(key string) *shard {
	return &l.shards[maphash.String(l.seed, key)%shards]
}

// Acquire waits until the lock is held or ctx is done. Waiters are served in
// arrival order.
func (m *mutex) Acquire(ctx context.Context) (caesura.Held, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	l := m.l
	sh := l.shard(m.key)
	sh.mu.Lock()
	e := sh.m[m.key]
	if e == nil {
		t := l.newEntry(sh, m.key)
		sh.mu.Unlock()
		return t, nil
	}
	if err := ctx.Err(); err != nil {
		sh.mu.Unlock()
		return nil, caesura.NotAcquired(m.key, err)
	}
	t := &ticket{l: l, e: e, ch: l.chans.Get().(chan struct{})}
	e.waiters = append(e.waiters, t)
	sh.mu.Unlock()

	select {
	case <-t.ch:
		l.chans.Put(t.ch)
		t.ch = nil
		return t, nil
	case <-ctx.Done():
	}
	sh.mu.Lock()
	if t.granted {
		// Handed over while ctx ended: take the token out of the
		// channel and pass the lock on.
		sh.mu.Unlock()
		<-t.ch
		l.chans.Put(t.ch)
		t.ch = nil
		_ = t.Release(context.Background())
		return nil, caesura.NotAcquired(m.key, ctx.Err())
	}
	for i, w := range e.waiters {
		if w == t {
			e.waiters = append(e.waiters[:i], e.waiters[i+1:]...)
			break
		}
	}
	sh.mu.Unlock()
	l.chans.Put(t.ch)
	t.ch = nil
	return nil, caesura.NotAcquired(m.key, ctx.Err())
}

// newEntry makes key held by a new entry; sh.mu is held.
func (l *Locker) newEntry(sh *shard, key string) *ticket {
	e := &entry{key: key, sh: sh}
	t := &e.first
	t.l, t.e, t.token = l, e, l.tokens.Add(1)
	e.holder = t
	sh.m[key] = e
	return t
}

// TryAcquire acquires the lock if it is free, and fails at once with an error
// matching caesura.ErrNotAcquired otherwise.
func (m *mutex) TryAcquire(context.Context) (caesura.Held, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	sh := m.l.shard(m.key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m[m.key] != nil {
		return nil, fmt.Errorf("memlock: %q: %w", m.key, caesura.ErrNotAcquired)
	}
	return m.l.newEntry(sh, m.key), nil
}

// AcquireBatch acquires locks (memlock Locks of l, sorted by key) one after
// the other, waiting in that order. On error none is held.
func (l *Locker) AcquireBatch(ctx context.Context, locks []caesura.Lock) ([]caesura.Held, error) {
	hs := make([]caesura.Held, 0, len(locks))
	for _, x := range locks {
		m, ok := x.(*mutex)
		if !ok || m.l != l {
			err := fmt.Errorf("memlock: AcquireBatch: %w: %T is not a lock of this Locker", caesura.ErrInvalidLock, x)
			return nil, releaseAll(hs, err)
		}
		h, err := m.Acquire(ctx)
		if err != nil {
			return nil, releaseAll(hs, err)
		}
		hs = append(hs, h)
	}
	return hs, nil
}

func releaseAll(hs []caesura.Held, err error) error {
	for i := len(hs) - 1; i >= 0; i-- {
		_ = hs[i].Release(context.Background())
	}
	return err
}

// Token returns the acquisition's fencing token.
func (t *ticket) Token() uint64 { return t.token }

// Release gives the lock to the longest waiter, or frees the key. It returns
// an error matching caesura.ErrNotHeld if t does not hold the lock.
func (t *ticket) Release(context.Context) error {
	e := t.e
	sh := e.sh
	sh.mu.Lock()
	if e.holder != t {
		sh.mu.Unlock()
		return fmt.Errorf("memlock: release %q: %w", e.key, caesura.ErrNotHeld)
	}
	if len(e.waiters) == 0 {
		e.holder = nil
		delete(sh.m, e.key)
		sh.mu.Unlock()
		return nil
	}
	next := e.waiters[0]
	e.waiters[0] = nil
	e.waiters = e.waiters[1:]
	next.granted = true
	next.token = t.l.tokens.Add(1)
	e.holder = next
	next.ch <- struct{}{} // buffered and empty: never blocks
	sh.mu.Unlock()
	return nil
}

// Len returns the number of keys held or waited for.
func (l *Locker) Len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
