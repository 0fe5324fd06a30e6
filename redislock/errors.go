package redislock

import "errors"

// Sentinel errors of this backend. Match them with [errors.Is]; the errors
// returned also wrap the client's error and, where it applies, one of
// caesura's sentinels ([caesura.ErrNotAcquired], [caesura.ErrNotHeld],
// [caesura.ErrLockLost]).
var (
	// ErrUnavailable means Redis could not be reached or failed a command:
	// the error also wraps the client's error. It never matches
	// [caesura.ErrNotAcquired], so "Redis is down" is not mistaken for
	// "the lock is taken".
	ErrUnavailable = errors.New("redislock: redis unavailable")

	// ErrLeaseExpired is the reason (in a [caesura.LostError]) when a lease
	// could not be renewed before its validity ended: Redis was too slow
	// or unreachable.
	ErrLeaseExpired = errors.New("redislock: lease expired before it could be renewed")

	// ErrStolen is the reason (in a [caesura.LostError]) when renewal found
	// the lock gone or owned by another token: the key was deleted, the
	// server restarted without the data, or the lease ran out and another
	// holder took it.
	ErrStolen = errors.New("redislock: lock no longer owned by this holder")
)
