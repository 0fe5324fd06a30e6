package caesura

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinel errors. Match them with [errors.Is]: the errors caesura and its
// backends return wrap them together with details (keys, causes).
var (
	// ErrNotAcquired means a lock was not acquired: it was taken (a
	// TryAcquire), or the wait ended because the context was done (then
	// the error also matches the context's error).
	ErrNotAcquired = errors.New("caesura: lock not acquired")

	// ErrOutOfOrder means a yield asked for a lock whose key sorts below a
	// key the scope already holds, and that lock was taken (or cannot be
	// tried without waiting). Waiting for it could deadlock, so caesura
	// refused. The error is an [*OrderError] naming both keys.
	ErrOutOfOrder = errors.New("caesura: lock out of order, waiting would risk deadlock")

	// ErrLockLost means a held lock was lost before the function ended (a
	// lease that could not be renewed, a dropped session). The function's
	// context was cancelled with a [*LostError] as its cause.
	ErrLockLost = errors.New("caesura: lock lost")

	// ErrNotHeld is returned by Release when the handle no longer holds the
	// lock (released already, or lost).
	ErrNotHeld = errors.New("caesura: lock not held")

	// ErrInvalidLock means a yield was given something that is not a
	// usable lock: a nil Lock, an empty key, or a backend's refusal of a
	// key. The error names the problem.
	ErrInvalidLock = errors.New("caesura: invalid lock")

	// ErrScopeEnded means a Yield was called after its function returned.
	ErrScopeEnded = errors.New("caesura: yield called after the function returned")

	// ErrConcurrentYield means a Yield was called while another call of the
	// same Yield was still running (from another goroutine). A scope's
	// yields are sequential; nest a Run for concurrent work.
	ErrConcurrentYield = errors.New("caesura: yield called concurrently with itself")

	// ErrYieldFailed is the cause of the function's context after a yield
	// failed: that yield's error matches it too, and every later yield
	// returns it at once.
	ErrYieldFailed = errors.New("caesura: an earlier yield failed")
)

// OrderError reports a refused out-of-order acquisition. It matches
// [ErrOutOfOrder].
type OrderError struct {
	Key  string // the key that was asked for
	Held string // the highest key already held, which sorts above Key
	Err  error  // why it could not be taken without waiting (taken, no TryAcquire)
}

var _ error = (*OrderError)(nil)

// Error names both keys.
func (e *OrderError) Error() string {
	return fmt.Sprintf("caesura: lock %s sorts below held lock %s and could not be taken without waiting (%v): waiting would risk deadlock", QuoteKey(e.Key), QuoteKey(e.Held), e.Err)
}

// Unwrap returns ErrOutOfOrder and the reason.
func (e *OrderError) Unwrap() []error { return []error{ErrOutOfOrder, e.Err} }

// LostError reports a lock that was lost while held. It matches
// [ErrLockLost] and the backend's reason.
type LostError struct {
	Key string
	Err error // the backend's reason, if it gave one
}

var _ error = (*LostError)(nil)

// Error names the key and the reason.
func (e *LostError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("caesura: lock %s lost", QuoteKey(e.Key))
	}
	return fmt.Sprintf("caesura: lock %s lost: %v", QuoteKey(e.Key), e.Err)
}

// Unwrap returns ErrLockLost and the reason.
func (e *LostError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrLockLost}
	}
	return []error{ErrLockLost, e.Err}
}

// notAcquired is the error for a wait that the context ended.
func notAcquired(key string, cause error) error {
	return fmt.Errorf("caesura: lock %s: %w", QuoteKey(key), errors.Join(ErrNotAcquired, cause))
}

// NotAcquired returns the error a backend's Acquire should return when a
// context ended its wait for key: it matches [ErrNotAcquired] and err. Pass
// ctx.Err(), or errors.Join(ctx.Err(), context.Cause(ctx)) to keep a cause.
func NotAcquired(key string, err error) error { return notAcquired(key, err) }

// maxQuoted is how many bytes of a key QuoteKey shows.
const maxQuoted = 64

// QuoteKey quotes key for an error message, as %q would, but shows at most
// its first 64 bytes and then its length, so that a huge key (a caller's bug,
// or an attack) cannot make every message that names it huge too. Backends
// use it in their messages.
func QuoteKey(key string) string {
	if len(key) <= maxQuoted {
		return strconv.Quote(key)
	}
	return fmt.Sprintf("%s…(%d bytes)", strconv.Quote(key[:maxQuoted]), len(key))
}
