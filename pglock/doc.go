// Package pglock is caesura's PostgreSQL backend: session-level advisory
// locks on connections of a [github.com/jackc/pgx/v5/pgxpool.Pool] that the
// caller hands in.
//
//	pool, _ := pgxpool.New(ctx, "postgres://...")
//	locks, _ := pglock.New(pool, pglock.Options{})
//	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
//		if err := yield(locks.Mutex("account:" + from), locks.Mutex("account:" + to)); err != nil {
//			return err
//		}
//		return transfer(ctx, from, to) // runs locked
//	})
//
// # Guarantees
//
//   - Mutual exclusion between every process that locks the same key on the
//     same PostgreSQL database, for as long as the holder's session lives.
//     Waiters queue on the server (pg_advisory_lock): a release hands the
//     lock to the next waiter in one round trip, without polling, in the
//     server's queue order.
//   - Each acquisition takes a connection from the pool and pins it until it
//     is released (a batch pins one connection for all its keys). Release
//     unlocks with pg_advisory_unlock and checks that the session still held
//     the lock before the connection goes back to the pool; when anything is
//     off (a failed or interrupted statement, a lock the session did not
//     hold) the connection is closed instead, which ends the session and
//     frees every lock it had. No connection goes back to the pool holding
//     an advisory lock.
//   - A context that ends a wait cancels the server-side wait with a cancel
//     request (pgx's default reaction, closing the socket, would leave the
//     backend queued until it got the lock). Nothing of the cancelled
//     acquisition stays queued or held: a lock granted in the race with the
//     cancel is freed by closing the connection.
//   - TryAcquire uses pg_try_advisory_lock and never waits.
//   - A consecutive run of this backend's keys in one yield is acquired in
//     one statement on one connection,
//     SELECT pg_advisory_lock(k) ... FROM unnest($1) WITH ORDINALITY ... ORDER BY i,
//     with the keys passed in the global (key) order; the plan is a Function
//     Scan that locks row by row, so the batch never holds a key while it
//     waits for one sorting below it. The batch is unlocked in one statement
//     when the last of its Helds is released.
//   - PostgreSQL's own deadlock detector is an independent check of
//     caesura's ordering: under caesura it never fires (tested).
//
// # Keys
//
// A Lock's Key is the Locker's prefix ([Options.Prefix], "pg:" by default)
// followed by the user's name. The advisory lock id is the first eight bytes
// of SHA-256(key) as a big-endian int64 ([Locker.ID]): stable across
// processes, versions and platforms. Distinct keys with equal ids share one
// lock. That costs waiting, never safety; a collision between two keys held
// by one scope on two connections would make that scope wait for itself,
// which with 64-bit ids takes about 2^32 distinct keys to become likely.
//
// # Lock loss and fencing
//
// A session-level advisory lock lives exactly as long as its session. When
// the pinned session ends (pg_terminate_backend, a server restart, a
// connection that stopped answering) every Held on it reports the loss: its
// Lost context is cancelled with a [*caesura.LostError], and the core
// cancels the function's context. One timer per [Locker], armed only while a
// connection is pinned (its check runs on a goroutine only while it runs, and
// the last Release stops it), finds the loss: every [Options.CheckInterval]
// (250ms) it peeks at each pinned socket without blocking or a round trip
// (on Linux; elsewhere it pings), which sees a terminated session or a
// restarted server within about 250ms, and every [Options.PingInterval] (5s)
// it pings each pinned connection, which finds a server host that vanished
// without closing the TCP connection.
//
// Every Held carries a fencing token ([caesura.Fenced]): a value of a
// sequence drawn by the acquiring statement after the lock was granted, so
// a token always exceeds the tokens of every earlier holder of the key (the
// keys of one batch share one token, drawn after the batch's last lock).
// The sequence ([Options.Sequence], "caesura_fence" by default) is created
// on first use when it does not exist; where the locking role may not
// create objects, create it once beforehand:
//
//	CREATE SEQUENCE IF NOT EXISTS caesura_fence;
//	GRANT USAGE ON SEQUENCE caesura_fence TO locking_role;
//
// # Non-guarantees
//
//   - A loss is seen after it happened: between the session's end and the
//     check that finds it (about CheckInterval, or up to PingInterval for a
//     silent network failure) the function runs without the lock. Only the
//     fencing token, checked by the storage that is written, makes a stale
//     holder harmless.
//   - The pool must have more connections (MaxConns) than acquisitions held
//     or waiting at once (pgxpool's default is max(4, GOMAXPROCS)). An
//     acquire that finds the pool exhausted waits for a connection while its
//     scope may hold other locks, and that wait is outside caesura's
//     ordering: scopes can deadlock on the pool. Size the pool, or give the
//     locks a pool of their own.
//   - A cancelled wait, a failed statement or a lost session costs the pool
//     that connection (it is closed, not returned); the pool opens another
//     when needed.
//   - Session locks do not work through a pooler in transaction or statement
//     mode (PgBouncer's pool_mode=transaction): the lock and the unlock run
//     on different server sessions, and the lock stays held by a server
//     connection nobody controls. Release detects this (pg_backend_pid()
//     differs between the two statements) and returns an error matching
//     [ErrSessionChanged]. A pooler in session mode works.
//   - Locks are exclusive. Two acquisitions of one key exclude each other
//     even within one process, since each has its own session (PostgreSQL's
//     own advisory locks are reentrant within a session; pglock never
//     shares a session between acquisitions).
package pglock
