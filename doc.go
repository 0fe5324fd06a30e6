// Package caesura is mid-execution locking: a function does its lock-free
// work first and acquires locks exactly where it needs them, by calling the
// [Yield] it was given; every lock it acquired is released when it ends.
//
//	var transfer = caesura.Serialize(func(ctx context.Context, yield caesura.Yield, t Transfer) (bool, error) {
//		if err := t.Validate(); err != nil { // lock-free work
//			return false, err
//		}
//		if err := yield(locks.Mutex(t.From), locks.Mutex(t.To)); err != nil { // sorted, then held
//			return false, err
//		}
//		return true, db.Move(ctx, t) // runs locked
//	}) // every lock is released here: on return, on error, on panic
//
// [Run] does the same for a function called once. A [Lock] is anything with a
// key and a context-aware acquire that returns a [Held] to release: the
// backends memlock (in-process) and filelock (one host), redislock, pglock
// and etcdlock (their own modules), or anything adapted with [FromLocker] and
// [FromFuncs]. Backends add abilities through small optional interfaces found
// by type assertion: [TryLocker], [BatchLock], [Fenced], [Lossy] and
// [LossNotifier]. A backend that wants one resource per scope rather than
// per lock (pglock's one database session for all of a scope's locks) keeps
// it with [Attach].
// The conformance suite in package locktest is what every backend passes.
//
// The API differs from the Python original where Go is better served: a
// function receives its Yield as a parameter (Go has no generators), the
// function's context carries cancellation on lock loss, and errors come back
// as values matched with [errors.Is].
//
// # Guarantees
//
//   - A yield returns only when every lock it was given is held, or with an
//     error. On error no lock of that yield is held; locks from earlier
//     yields stay held until the function ends.
//   - Every lock is released when the function ends, however it ends:
//     return, error, panic (released, then re-panicked with the same value)
//     or runtime.Goexit. Locks are released newest first, with a context
//     that keeps the caller's values but not its cancellation, bounded by
//     [WithReleaseTimeout]. Release errors are joined to the function's
//     error, never dropped.
//   - A failed yield cancels the function's context with the yield's error
//     as its cause ([context.Cause]); later yields fail at once with
//     [ErrYieldFailed]; and Run returns the error even if the function
//     ignored it and returned nil. Code cannot silently run unlocked.
//   - Yielding a lock the scope already holds is a no-op. A Run (or
//     serialized call) inside another, through the context, shares the
//     outer scope's held locks for that rule and for the ordering rule, and
//     releases only what it acquired.
//   - Bad input (a nil Lock, an empty key, a yield after the function
//     returned or racing itself, a context already done) gets an error that
//     names the problem, and leaves nothing held.
//   - No goroutine outlives Run. The function's context is done once Run
//     returns.
//
// # Ordering
//
// Keys are ordered byte-wise ([strings.Compare]). The locks of one yield are
// de-duplicated by key and acquired in ascending order; a backend may take a
// consecutive run of its own keys in one call ([Batcher]), but never out of
// that order. Keys must be unique across backends, so every backend puts its
// own prefix (such as "mem:" or "redis:") before the names it is given: the
// order is then total.
//
// Sorting one yield is not enough: a function that yields A and later B can
// deadlock against one that yields B and later A. caesura closes that hole:
// a lock whose key sorts below a key the scope (or an enclosing scope)
// already holds is never waited for. It is tried without waiting
// ([TryLocker]): if free, the function goes on; if taken, or if the lock
// cannot be tried, the yield fails with an [*OrderError] matching
// [ErrOutOfOrder] that names both keys. With [WithRestart] the function is
// instead run again from the top with every lock seen so far taken up front,
// in order, up to a bound.
//
// Why this rules out deadlock: a deadlock is a cycle of waits, each waiter
// holding a lock the next one waits for. Under the rules above, every
// blocking wait is for a key above every key the waiter holds. Follow the
// cycle: waiter 1 holds k1 and waits for k2 > k1, held by waiter 2, which
// waits for k3 > k2, and so on back to waiter 1, which would need
// k1 < k2 < ... < k1: impossible. Batched acquisition keeps the property as
// long as a backend never holds a lock while waiting for a lower one, which
// is the [Batcher] contract. Tries never wait, so they add no edge to the
// cycle.
//
// Not covered: waits caesura cannot see, such as a function that holds a lock
// and waits on a channel for a goroutine that yields a lower key.
//
// # Lock loss and fencing
//
// A lease-based lock (Redis, etcd) or a session lock (PostgreSQL) can end
// without Release: the lease could not be renewed in time, the session
// dropped. A backend reports that through [Lossy]; caesura then cancels the
// function's context with a [*LostError] cause, and Run returns an error
// matching [ErrLockLost]. Check the context before each write, and pass it to
// every call that should stop when the lock is gone.
//
// That is not enough on its own, and no lock library can make it so: a
// process can pause (a GC pause, a stopped VM, a slow disk) after it checked
// its context and before its write lands, while its lease expires and
// another process takes the lock. The only defence is a fencing token: a
// number that grows with every acquisition of a key, read inside the function
// with [Token] and sent with each write to storage that remembers the highest
// token it has seen and rejects lower ones. memlock, filelock, redislock,
// pglock and etcdlock all issue tokens ([Fenced]).
//
// caesura does not promise mutual exclusion beyond what the backend gives:
// memlock and filelock cannot lose a lock; a Redis lock on a single server is
// lost with that server's data (restart without persistence, failover to a
// replica that had not seen the key); see each backend's documentation.
//
// # Cost
//
// An uncontended Run with one yield makes two allocations: the scope, which
// is also the function's context and its Yield, and the slice of the yield's
// arguments. Handing the scope out as the Yield relies on how the gc
// compiler lays out the closure of a method value, checked once at start-up
// (yield_unsafe.go); built with the purego tag, the package uses no unsafe
// and Run makes one allocation more.
package caesura
