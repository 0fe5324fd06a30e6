package etcdlock

import "errors"

// Sentinel errors. Match them with [errors.Is]: the errors this package
// returns wrap them together with the key and the underlying cause. Errors
// that mean "the lock was not acquired because it is taken or the context
// ended" match [caesura.ErrNotAcquired] instead.
var (
	// ErrSessionEnded means the backend's session ended: no renewal of its
	// lease was confirmed within the TTL less the drift (so the server may
	// expire it soon), the server found the lease gone (expired or
	// revoked), the Locker was closed, or the session was abandoned after a
	// request whose outcome is unknown. A waiter whose session ends stops
	// with an error matching it; a held lock is lost with it as the cause,
	// unless the deletion of its key was seen first (see [ErrKeyDeleted]).
	// The next acquisition starts a new session.
	ErrSessionEnded = errors.New("etcdlock: session ended (lease expired or revoked)")

	// ErrKeyDeleted means the lock's key was deleted while the lock was
	// held or waited for, by someone other than its holder (an operator, a
	// tool) or by etcd when the session's lease was revoked or expired: a
	// delete event does not tell these apart. A held lock whose key is seen
	// deleted is lost at once with it as the cause, with no request first,
	// so that the holder learns of the loss as early as the next waiter
	// does; the Locker then renews the lease, and if the lease is gone
	// ends the session, whose other locks are lost with [ErrSessionEnded].
	// A waiter is told precisely: its error matches ErrSessionEnded if the
	// lease is gone, ErrKeyDeleted (alone) otherwise.
	ErrKeyDeleted = errors.New("etcdlock: lock key deleted")

	// ErrUnavailable means a request to etcd failed or did not complete:
	// the cluster is unreachable, has no leader, or the client is closed.
	// When the context ended while a request was in flight, the error also
	// matches [caesura.ErrNotAcquired] and the context's error.
	ErrUnavailable = errors.New("etcdlock: etcd request failed")

	// ErrClosed means the Locker was closed.
	ErrClosed = errors.New("etcdlock: locker closed")
)
