package etcdlock

import "errors"

// Sentinel errors. Match them with [errors.Is]: the errors this package
// returns wrap them together with the key and the underlying cause. Errors
// that mean "the lock was not acquired because it is taken or the context
// ended" match [caesura.ErrNotAcquired] instead.
var (
	// ErrSessionEnded means the backend's session ended: its lease expired
	// (keep-alives did not reach the cluster in time), was revoked, or was
	// abandoned after a request whose outcome is unknown. A waiter whose
	// session ends stops with an error matching it; a held lock is lost
	// with it as the cause. The next acquisition starts a new session.
	ErrSessionEnded = errors.New("etcdlock: session ended (lease expired or revoked)")

	// ErrKeyDeleted means the lock's key was deleted by someone other than
	// its holder (an operator, a tool) while the lock was held or waited
	// for. A held lock is lost with it as the cause.
	ErrKeyDeleted = errors.New("etcdlock: lock key deleted by someone else")

	// ErrUnavailable means a request to etcd failed or did not complete:
	// the cluster is unreachable, has no leader, or the client is closed.
	// When the context ended while a request was in flight, the error also
	// matches [caesura.ErrNotAcquired] and the context's error.
	ErrUnavailable = errors.New("etcdlock: etcd request failed")

	// ErrClosed means the Locker was closed.
	ErrClosed = errors.New("etcdlock: locker closed")
)
