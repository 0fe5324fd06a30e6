package pglock

import "errors"

// ErrSessionChanged means the statements of one acquisition ran on
// different server sessions (pg_backend_pid() changed between the lock and
// the unlock). Session-level advisory locks then cannot work: the usual
// cause is a pooler such as PgBouncer in transaction or statement mode
// between the pool and PostgreSQL. Connect directly, or through a pooler in
// session mode.
var ErrSessionChanged = errors.New("pglock: server session changed under a pinned connection (a pooler in transaction mode?)")
