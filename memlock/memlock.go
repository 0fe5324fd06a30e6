// Package memlock is caesura's in-process backend: named mutexes for the
// goroutines of one process, and the embedded default.
//
// Waiting is FIFO per key and honours the context with no polling. Each held
// key has a channel with room for one token: acquiring sends, releasing
// receives. Go's runtime queues blocked senders in arrival order and, when the
// holder receives, moves the oldest waiter's token in and wakes it, so the
// lock goes straight to the longest waiter and a releaser that asks again
// queues behind it. A waiter selects on its context, so giving up is atomic:
// it either got the lock or left the queue.
//
// An acquire costs one allocation, its handle; a key's entry and channel are
// reused from a small free list. A key's entry exists only while the key is
// held or waited for, so the Locker does not grow with the number of keys
// ever used.
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

const (
	shards   = 64
	keepFree = 64 // free entries kept per shard for reuse
)

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
	shards [shards]shard
}

type shard struct {
	mu   sync.Mutex
	m    map[string]*entry
	free []*entry
	_    [64]byte // keep shards on separate cache lines
}

// entry is the state of one key that is held or waited for. It is internal
// and reused; callers only ever see tickets.
type entry struct {
	ch   chan struct{} // capacity 1: full while the key is held
	refs int           // holder and waiters, under the shard's mutex
	sh   *shard        // the shard whose map and free list it lives in
}

// ticket is one acquisition: the Held handed to the caller.
type ticket struct {
	m        *mutex
	e        *entry
	token    uint64
	released atomic.Bool
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

// ref returns key's entry, counting the caller in.
func (sh *shard) ref(key string) *entry {
	sh.mu.Lock()
	e := sh.m[key]
	if e == nil {
		if n := len(sh.free); n > 0 {
			e = sh.free[n-1]
			sh.free = sh.free[:n-1]
		} else {
			e = &entry{ch: make(chan struct{}, 1), sh: sh}
		}
		sh.m[key] = e
	}
	e.refs++
	sh.mu.Unlock()
	return e
}

// unref counts the caller out of key's entry and drops the entry when nobody
// holds or waits for the key.
func (sh *shard) unref(key string, e *entry) {
	sh.mu.Lock()
	e.refs--
	if e.refs == 0 {
		delete(sh.m, key)
		if len(sh.free) < keepFree {
			sh.free = append(sh.free, e)
		}
	}
	sh.mu.Unlock()
}

// Acquire waits until the lock is held or ctx is done. Waiters are served in
// arrival order.
func (m *mutex) Acquire(ctx context.Context) (caesura.Held, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	sh := m.l.shard(m.key)
	e := sh.ref(m.key)
	select {
	case e.ch <- struct{}{}:
		return m.held(e), nil
	default:
	}
	if err := ctx.Err(); err != nil {
		sh.unref(m.key, e)
		return nil, caesura.NotAcquired(m.key, err)
	}
	select {
	case e.ch <- struct{}{}:
		return m.held(e), nil
	case <-ctx.Done():
		sh.unref(m.key, e)
		return nil, caesura.NotAcquired(m.key, ctx.Err())
	}
}

func (m *mutex) held(e *entry) *ticket {
	return &ticket{m: m, e: e, token: m.l.tokens.Add(1)}
}

// TryAcquire acquires the lock if it is free, and fails at once with an error
// matching caesura.ErrNotAcquired otherwise.
func (m *mutex) TryAcquire(context.Context) (caesura.Held, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	sh := m.l.shard(m.key)
	e := sh.ref(m.key)
	select {
	case e.ch <- struct{}{}:
		return m.held(e), nil
	default:
		sh.unref(m.key, e)
		return nil, fmt.Errorf("memlock: %q: %w", m.key, caesura.ErrNotAcquired)
	}
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
// an error matching caesura.ErrNotHeld if t released already.
func (t *ticket) Release(context.Context) error {
	if !t.released.CompareAndSwap(false, true) {
		return fmt.Errorf("memlock: release %q: %w", t.m.key, caesura.ErrNotHeld)
	}
	<-t.e.ch
	t.e.sh.unref(t.m.key, t.e)
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
