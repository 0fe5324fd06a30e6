package pglock

import (
	"context"
	"fmt"

	"github.com/caesura-go/caesura"
)

// held is one acquisition of one lock, on a session shared with the other
// locks of its scope (or of its batch, outside a scope).
type held struct {
	s          *session
	key        string
	id         int64
	token      uint64
	lost       context.Context
	cancelLost context.CancelCauseFunc
	released   bool  // guarded by s.mu
	pending    bool  // in a ReleaseBatch's run being collected; guarded by s.mu
	prev, next *held // in s.helds while unreleased; guarded by s.mu
}

var (
	_ caesura.Fenced = (*held)(nil)
	_ caesura.Lossy  = (*held)(nil)
)

// Token returns the fencing token: a value of the Locker's sequence drawn in
// the acquiring statement after the lock was granted, so it exceeds the
// token of every earlier holder of the key. The Helds of one batch share one
// token, drawn after the batch's last lock was granted.
func (h *held) Token() uint64 { return h.token }

// Lost returns a context cancelled with a [*caesura.LostError] cause when the
// session ends under the lock (pg_terminate_backend, a server restart, a
// connection that stopped answering, a pooler that moved the connection to
// another server session), and with another cause on Release. Every Held on
// one session learns of its loss at once.
func (h *held) Lost() context.Context { return h.lost }

// Release unlocks the lock with pg_advisory_unlock. Inside a scope it does
// so at once, and the session's other locks stay held. Outside a scope, the
// Helds of one batch share a connection: the batch is unlocked in one
// statement when the last of them is released, and the locks stay held on
// the server until then. When no Held is left on the session, the connection
// goes back to the pool (closed instead when anything was off). A second
// Release, or one after the lock was lost, returns an error matching
// [caesura.ErrNotHeld]. A Release whose ctx is already done still unlocks,
// under a short deadline of its own.
func (h *held) Release(ctx context.Context) error {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.released {
		return fmt.Errorf("pglock: release %q: %w", h.key, caesura.ErrNotHeld)
	}
	one := [1]*held{h}
	return s.releaseLocked(ctx, one[:])
}
