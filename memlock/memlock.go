// Package memlock is caesura's in-process backend: named mutexes for the
// goroutines of one process, and the embedded default.
//
// Waiting is FIFO per key and honours the context with no polling. Each held
// key has a channel with room for one token: acquiring sends, releasing
// receives. Go's runtime queues blocked senders in arrival order and, when the
// holder receives, moves the oldest waiter's token in and wakes it, so the
// lock goes straight to the longest waiter and a releaser that asks again
// queues behind it. A waiter selects on its context, so giving up is atomic:
// it either got the lock or left the queue. A waiter inside a scope (the
// context a yield passes) lets the scope do that select, on its parent's
// Done channel and on a reused wake-up the scope signals when it is
// cancelled, so that waiting does not make the scope build a cancellable
// context and its Done channel.
//
// An acquire costs one allocation, its handle, and none inside a scope's
// first yield (the scope lends the room); a waiter that got the lock takes
// its handle from a slab its key's entry allocates for 32 waiters at a time,
// so a contended key costs one allocation per 32 hand-offs. A key's entry
// and channel are reused from a small free list. While a key is contended,
// a Lock value shared by its waiters finds the key's entry without hashing
// the key or taking a mutex. A key's entry exists only while the key is
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
	"github.com/caesura-go/caesura/internal/lend"
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
	wakes  lend.Wakes // for waits inside a scope; see Acquire
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
//
// refs counts the holder and the waiters. It is changed with atomics so that
// a waiter that finds the entry through its Lock's cache counts itself in
// without the shard's mutex (the contended path); it becomes -1, dead, only
// under the shard's mutex, when the entry leaves the map. An entry is only
// counted into while its count is above zero (an entry in the map always
// is: its last user takes it out under the mutex as it counts out).
type entry struct {
	ch   chan struct{} // capacity 1: full while the key is held
	refs atomic.Int32
	key  string // written under the shard's mutex before refs turns positive
	sh   *shard // the shard whose map and free list it lives in
	// tickets is room for the handles of waiters that got the lock, carved
	// one at a time by the holder (so the lock itself guards it) and
	// dropped when the entry is freed: a contended key allocates one slab
	// per slabSize hand-offs instead of a handle per hand-off.
	tickets []ticket
}

// slabSize is the number of handles a contended entry allocates at once. A
// kept handle keeps its slab (slabSize*48 bytes) alive.
const slabSize = 32

// ticket is one acquisition: the Held handed to the caller. It has the
// layout of the slot a scope may lend (see internal/lend), so the common
// single-lock run allocates none; State is the *entry.
type ticket lend.Slot

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
	// last is the entry this Lock value found last time. While the key is
	// contended the entry stays alive, and a Lock value used by many
	// goroutines counts itself in there without hashing the key or taking
	// the shard's mutex.
	last atomic.Pointer[entry]
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

// tryRef counts the caller in if the entry is alive and in use.
func (e *entry) tryRef() bool {
	for {
		n := e.refs.Load()
		if n <= 0 {
			return false
		}
		if e.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// ref returns the entry of m's key, counting the caller in.
func (m *mutex) ref() *entry {
	if e := m.last.Load(); e != nil && e.tryRef() {
		// key is stable while the count is positive; the entry may have
		// been reused for another key since this Lock saw it.
		if e.key == m.key {
			return e
		}
		e.unref()
	}
	e := m.l.shard(m.key).ref(m.key)
	if m.last.Load() != e { // an uncontended key gets its entry back from the free list
		m.last.Store(e)
	}
	return e
}

// ref returns key's entry, counting the caller in.
func (sh *shard) ref(key string) *entry {
	sh.mu.Lock()
	e := sh.m[key]
	if e != nil {
		e.refs.Add(1) // alive: it can only die under this mutex
	} else {
		if n := len(sh.free); n > 0 {
			e = sh.free[n-1]
			sh.free = sh.free[:n-1]
		} else {
			e = &entry{ch: make(chan struct{}, 1), sh: sh}
		}
		e.key = key
		e.refs.Store(1)
		sh.m[key] = e
	}
	sh.mu.Unlock()
	return e
}

// unref counts the caller out and drops the entry when nobody holds or waits
// for its key. The last user turns the count from 1 to dead under the shard's
// mutex, so a live entry in the map never counts zero.
func (e *entry) unref() {
	for {
		n := e.refs.Load()
		if n > 1 {
			if e.refs.CompareAndSwap(n, n-1) {
				return
			}
			continue
		}
		sh := e.sh
		sh.mu.Lock()
		if e.refs.CompareAndSwap(1, -1) {
			delete(sh.m, e.key)
			e.tickets = nil
			if len(sh.free) < keepFree {
				sh.free = append(sh.free, e)
			}
			sh.mu.Unlock()
			return
		}
		sh.mu.Unlock() // somebody counted in meanwhile
	}
}

// Acquire waits until the lock is held or ctx is done. Waiters are served in
// arrival order.
func (m *mutex) Acquire(ctx context.Context) (caesura.Held, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	e := m.ref()
	select {
	case e.ch <- struct{}{}:
		return m.held(ctx, e, false), nil
	default:
	}
	if err := m.l.wait(ctx, e); err != nil {
		e.unref()
		return nil, caesura.NotAcquired(m.key, err)
	}
	return m.held(ctx, e, true), nil
}

// wait queues for e's lock until it is granted (nil) or ctx is done (ctx's
// error): either it got the lock or it left the queue.
func (l *Locker) wait(ctx context.Context, e *entry) error {
	if w, ok := ctx.(lend.Waiter); ok {
		// A scope waits on its cancellation without making its context
		// (see internal/lend).
		if handled, err := w.Send(e.ch, &l.wakes); handled {
			return err
		}
	}
	done := ctx.Done()
	if done == nil { // ctx can never end the wait: a plain send is cheaper
		e.ch <- struct{}{}
		return nil
	}
	select {
	case e.ch <- struct{}{}:
		return nil
	case <-done:
		return ctx.Err()
	}
}

// held returns the handle of an acquisition of e: in the slot the scope
// lends when ctx is one that has a slot left, else from e's slab if the
// acquisition waited (the key is contended: the slab is used up soon), else
// a handle of its own.
func (m *mutex) held(ctx context.Context, e *entry, waited bool) *ticket {
	var t *ticket
	if ln, ok := ctx.(lend.Lender); ok {
		t = (*ticket)(ln.LendSlot())
	}
	if t == nil {
		if waited {
			// The holder alone carves: the lock guards the slab.
			if len(e.tickets) == 0 {
				e.tickets = make([]ticket, slabSize)
			}
			t = &e.tickets[0]
			e.tickets = e.tickets[1:]
		} else {
			t = new(ticket)
		}
	}
	t.Key, t.State, t.Fence = m.key, e, m.l.tokens.Add(1)
	return t
}

// TryAcquire acquires the lock if it is free, and fails at once with an error
// matching caesura.ErrNotAcquired otherwise.
func (m *mutex) TryAcquire(ctx context.Context) (caesura.Held, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	e := m.ref()
	select {
	case e.ch <- struct{}{}:
		return m.held(ctx, e, false), nil
	default:
		e.unref()
		return nil, fmt.Errorf("memlock: %s: %w", caesura.QuoteKey(m.key), caesura.ErrNotAcquired)
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
func (t *ticket) Token() uint64 { return t.Fence }

// Release gives the lock to the longest waiter, or frees the key. It returns
// an error matching caesura.ErrNotHeld if t released already.
func (t *ticket) Release(context.Context) error {
	if !t.Done.CompareAndSwap(false, true) {
		return fmt.Errorf("memlock: release %s: %w", caesura.QuoteKey(t.Key), caesura.ErrNotHeld)
	}
	e := t.State.(*entry)
	<-e.ch
	e.unref()
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
