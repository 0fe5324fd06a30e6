package caesura

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Lock names one lock without acquiring it. It is what a [Yield] takes.
//
// A backend hands out Locks from a method that names them (memlock's
// Locker.Mutex, for example); a user can wrap anything lock-like with
// [FromLocker] or [FromFuncs]. A Lock value may be yielded many times, by many
// goroutines at once: all per-acquisition state lives in the [Held] that
// Acquire returns.
type Lock interface {
	// Key identifies the lock and fixes its place in the global order.
	// Keys must be non-empty and unique across every backend a program
	// uses: a backend prefixes its own namespace (such as "mem:"), so
	// two Locks with equal keys are the same lock. Key must return the
	// same value every time. Since a prefixed key is never empty, a
	// backend refuses an empty name itself: its Acquire returns an error
	// matching [ErrInvalidLock] (the conformance suite checks it).
	Key() string

	// Acquire blocks until the lock is held or ctx is done. On success it
	// returns a Held that releases this acquisition. On failure no lock is
	// held and the error says why: it wraps ctx's error when ctx ended the
	// wait.
	Acquire(ctx context.Context) (Held, error)
}

// Held is one acquisition of a [Lock].
type Held interface {
	// Release gives the lock up. The core calls it exactly once per Held,
	// with a context that is not the function's (so a cancelled function
	// still releases) and a bounded deadline. A second Release, or a
	// Release after the lock was lost, returns an error matching
	// [ErrNotHeld] and changes nothing: a stale holder can never release a
	// newer holder's lock. Backends with nothing remote to do may ignore
	// ctx.
	Release(ctx context.Context) error
}

// TryLocker is implemented by a [Lock] that can be acquired without waiting.
// The core uses it for locks that sort below a lock already held (see the
// package doc, # Ordering): such a lock is never waited for.
type TryLocker interface {
	Lock
	// TryAcquire acquires the lock if it is free and returns at once
	// otherwise, with an error matching [ErrNotAcquired]. ctx bounds the
	// round trip to a remote backend, never a wait for the lock.
	TryAcquire(ctx context.Context) (Held, error)
}

// BatchLock is implemented by a [Lock] whose backend can acquire a run of its
// own locks in one call (one script, one statement, one transaction).
type BatchLock interface {
	Lock
	// Batcher returns the value that acquires this lock together with
	// others. The core passes a consecutive run of the global order to one
	// Batcher when every lock in the run returns the same (==) Batcher.
	Batcher() Batcher
}

// Batcher acquires several locks of one backend in one call.
type Batcher interface {
	// AcquireBatch acquires every lock in locks, which the core passes
	// sorted by key with duplicates removed, and returns their Helds in the
	// same order. It may wait, but only in the order given: it must never
	// hold a lock while waiting for one that sorts below it. On error no
	// lock of the batch is held.
	AcquireBatch(ctx context.Context, locks []Lock) ([]Held, error)
}

// BatchReleaser is implemented by a [Batcher] that can also release several
// Helds of its locks in one call. The core releases a run of consecutive
// Helds whose Locks share one BatchReleaser with one ReleaseBatch call:
// Helds from AcquireBatch and from the Locks' own Acquire and TryAcquire
// alike (a scope that yields one lock of a backend at a time still releases
// them together).
type BatchReleaser interface {
	Batcher
	// ReleaseBatch releases every Held in helds, as Release would each. It
	// tries all of them even when some fail, and reports the failures.
	ReleaseBatch(ctx context.Context, helds []Held) error
}

// Fenced is implemented by a [Held] that carries a fencing token: a number
// that is higher for every later acquisition of the same key. Storage that
// remembers the highest token it has seen, and rejects writes with a lower
// one, makes a stale holder (one whose lease expired while it was paused)
// harmless. Read it inside the function with [Token].
type Fenced interface {
	Held
	Token() uint64
}

// Lossy is implemented by a [Held] whose hold can end without Release: a lease
// that could not be renewed, a dropped database session.
type Lossy interface {
	Held
	// Lost returns a context that is cancelled when the lock is lost, with
	// the reason as its cause ([context.Cause]). Release may cancel it too;
	// the core stops watching it before it calls Release. The core watches
	// it with [context.AfterFunc], so a context from [context.WithCancelCause]
	// costs no goroutine.
	Lost() context.Context
}

// LossNotifier is implemented by a [Lossy] Held that can call a function
// when the lock is lost, without the context Lost returns: the core then
// registers with OnLost instead of watching Lost, which saves that context
// and its watch (several allocations per acquisition). Lost keeps working,
// and reports the same losses.
type LossNotifier interface {
	Lossy
	// OnLost arranges for f to be called once, in a goroutine of its own,
	// if the lock is lost before Release is called, with the reason Lost's
	// cause would have; at once if it was lost already. f is never called
	// for a Release, nor once Release has been called. The core calls
	// OnLost at most once per Held, before anything else.
	OnLost(f func(cause error))
}

// FromLocker adapts a [sync.Locker] to a [Lock] with the given key.
//
// A sync.Locker cannot be interrupted: Acquire checks ctx before it blocks in
// Lock, but not while it waits. If l also has a TryLock() bool method (as
// sync.Mutex and sync.RWMutex do), the Lock implements [TryLocker] and can be
// taken out of order.
func FromLocker(key string, l sync.Locker) Lock {
	if t, ok := l.(interface{ TryLock() bool }); ok {
		return &tryLockerLock{lockerLock{key: key, l: l}, t}
	}
	return &lockerLock{key: key, l: l}
}

type lockerLock struct {
	key string
	l   sync.Locker
}

func (x *lockerLock) Key() string { return x.key }

func (x *lockerLock) Acquire(ctx context.Context) (Held, error) {
	if x.l == nil {
		return nil, fmt.Errorf("caesura: lock %s: %w: nil sync.Locker", QuoteKey(x.key), ErrInvalidLock)
	}
	if err := ctx.Err(); err != nil {
		return nil, notAcquired(x.key, context.Cause(ctx))
	}
	x.l.Lock()
	return &lockerHeld{l: x.l, key: x.key}, nil
}

type tryLockerLock struct {
	lockerLock
	t interface{ TryLock() bool }
}

func (x *tryLockerLock) TryAcquire(ctx context.Context) (Held, error) {
	if !x.t.TryLock() {
		return nil, fmt.Errorf("caesura: lock %s: %w", QuoteKey(x.key), ErrNotAcquired)
	}
	return &lockerHeld{l: x.l, key: x.key}, nil
}

type lockerHeld struct {
	l        sync.Locker
	key      string
	released atomic.Bool
}

func (h *lockerHeld) Release(context.Context) error {
	if !h.released.CompareAndSwap(false, true) {
		return fmt.Errorf("caesura: release %s: %w", QuoteKey(h.key), ErrNotHeld)
	}
	h.l.Unlock()
	return nil
}

// FromFuncs adapts a pair of functions to a [Lock] with the given key:
// acquire blocks until the lock is held or ctx is done, release gives it up.
// The returned Lock calls release at most once per successful acquire.
func FromFuncs(key string, acquire func(ctx context.Context) error, release func(ctx context.Context) error) Lock {
	return &funcLock{key: key, acquire: acquire, release: release}
}

type funcLock struct {
	key     string
	acquire func(context.Context) error
	release func(context.Context) error
}

func (x *funcLock) Key() string { return x.key }

func (x *funcLock) Acquire(ctx context.Context) (Held, error) {
	if x.acquire == nil || x.release == nil {
		return nil, fmt.Errorf("caesura: lock %s: %w: nil acquire or release func", QuoteKey(x.key), ErrInvalidLock)
	}
	if err := x.acquire(ctx); err != nil {
		return nil, err
	}
	return &funcHeld{key: x.key, release: x.release}, nil
}

type funcHeld struct {
	key      string
	release  func(context.Context) error
	released atomic.Bool
}

func (h *funcHeld) Release(ctx context.Context) error {
	if !h.released.CompareAndSwap(false, true) {
		return fmt.Errorf("caesura: release %s: %w", QuoteKey(h.key), ErrNotHeld)
	}
	return h.release(ctx)
}

// Inspector is implemented by a [Lock] whose backend can report the lock's
// state without acquiring it. The caesura command's status uses it.
type Inspector interface {
	Lock
	Inspect(ctx context.Context) (LockState, error)
}

// LockState is what an [Inspector] knows of a lock. Fields a backend does not
// know are left zero.
type LockState struct {
	Held   bool      // someone holds the lock now
	Since  time.Time // when the current holder acquired it
	Token  uint64    // the current holder's fencing token (or the last issued)
	Holder string    // who holds it, as the backend records it (for example "host pid 4711")
}
