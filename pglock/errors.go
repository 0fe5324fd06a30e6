package pglock

import "errors"

// ErrSessionChanged means the statements of one session ran on different
// server sessions: pg_backend_pid() differed between a session's first
// statement and a later one (an acquisition, a release, or the liveness
// check's ping). Session-level advisory locks then cannot work: the usual
// cause is a pooler such as PgBouncer in transaction or statement mode
// between the pool and PostgreSQL. The locks of the session are reported
// lost with this cause. Connect directly, or through a pooler in session
// mode.
var ErrSessionChanged = errors.New("pglock: server session changed under a pinned connection (a pooler in transaction mode?)")
