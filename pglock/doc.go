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
//   - One connection per scope. Inside a function run by [caesura.Run] or
//     [caesura.Serialize], every lock of one [Locker] that the scope
//     acquires (in separate yields, or in one) is taken on one session: the
//     scope's first acquisition takes a connection from the pool and pins
//     it, and it goes back to the pool when the scope's last lock of the
//     Locker is released, which is when the function ends (the core keeps
//     the session with [caesura.Attach]). A nested scope has a session of
//     its own. Outside any scope (a Lock's Acquire called directly), each
//     acquisition pins a connection of its own (a batch one for all its
//     keys).
//   - Inside a scope, Release unlocks its key at once with
//     pg_advisory_unlock and checks that the session still held it; the
//     session's other locks stay held. Outside a scope, a batch is unlocked
//     in one statement when the last of its Helds is released, and its
//     locks stay held on the server until then. No
//     connection goes back to the pool holding an advisory lock: every lock
//     taken on a session is tracked, and when anything is off (an unlock
//     that failed, a lock the session did not hold) the last Release frees
//     the session with pg_advisory_unlock_all() before the connection goes
//     back, or closes the connection, which ends the session and frees
//     every lock it had.
//   - A context that ends a wait cancels the server-side wait with a cancel
//     request (pgx's default reaction, closing the socket, would leave the
//     backend queued until it got the lock, and end the session with every
//     other lock of the scope). Nothing of the cancelled acquisition stays
//     queued or held: whatever it was granted in the race with the cancel
//     is unlocked on the spot, and the scope's other locks on the session
//     stay held. The session then serves the scope's later acquisitions
//     only if the server acknowledged every cancel request (a late one
//     could cancel the next statement); otherwise later acquisitions of the
//     scope take connections of their own, and the session's connection is
//     closed, not returned, once its locks are released.
//   - TryAcquire uses pg_try_advisory_lock and never waits.
//   - A consecutive run of this backend's keys in one yield is acquired in
//     one statement on one connection,
//     SELECT pg_advisory_lock(k) ... FROM unnest($1) WITH ORDINALITY ... ORDER BY i,
//     with the keys passed in the global (key) order; the plan is a Function
//     Scan that locks row by row, so the batch never holds a key while it
//     waits for one sorting below it. The core releases a run of a scope's
//     keys in one statement too ([caesura.BatchReleaser]).
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
// by one scope would make that scope wait for itself (PostgreSQL's advisory
// locks are reentrant within a session, so the second key is taken on a
// connection of its own, which waits for the scope's session), which with
// 64-bit ids takes about 2^32 distinct keys to become likely.
//
// # Lock loss and fencing
//
// A session-level advisory lock lives exactly as long as its session. When
// the pinned session ends (pg_terminate_backend, a server restart, a
// connection that stopped answering) every Held on it (all of a scope's
// locks of the Locker) reports the loss together: its Lost context is
// cancelled with a [*caesura.LostError], and the core cancels the
// function's context. One timer per [Locker], armed only while a session is
// pinned (its check runs on a goroutine only while it runs, and the Release
// that unpins the last session stops it and waits for a running check),
// watches each session once, whatever the number of its locks: every
// [Options.CheckInterval] (250ms) it peeks at each pinned socket without
// blocking or a round trip (on Linux; elsewhere it pings), which sees a
// terminated session or a restarted server within about 250ms, and every
// [Options.PingInterval] (5s) it asks each session for its backend pid,
// which finds a server host that vanished without closing the TCP
// connection, and a pooler that moved the connection to another server
// session (see Non-guarantees). A session busy with a statement (a yield
// waiting for a lock) is not checked meanwhile; a session that ends under
// a waiting statement fails that statement at once.
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
//	GRANT USAGE, UPDATE ON SEQUENCE caesura_fence TO locking_role;
//
// It must count up one session-independent value at a time: INCREMENT
// above 0, CACHE 1 and NO CYCLE (the defaults); any other sequence fails
// every acquisition with an error that names the problem.
//
// Tokens cost no WAL flush. PostgreSQL writes a sequence to its WAL once
// per 33 values, and a transaction that wrote a WAL record normally waits
// for the flush (an fsync) when it commits; drawn in an acquiring
// statement, that flush delayed one hand-off in 33, and on a small machine
// it stalls the other sessions too. So the acquiring statements commit
// without waiting for it (synchronous_commit off for their own
// transaction), and tokens stay increasing across a crash that loses the
// latest WAL because every database session skips ahead once: its first
// token is 2^24 (16,777,216) values above the sequence's last, drawn with
// setval in a transaction that does wait for the flush. A crash ends every
// session, and the values it may lose are those drawn between two WAL
// flushes (at most three times wal_writer_delay, 200ms by default), far
// fewer than a skip. So tokens are not consecutive: expect a jump at each
// new session of the pool. The skip needs UPDATE on the sequence and its
// default maximum (bigint); with USAGE alone every token waits for its WAL
// record as it would in a plain nextval, and one acquisition in 33 pays a
// flush.
//
// # Non-guarantees
//
//   - A loss is seen after it happened: between the session's end and the
//     check that finds it (about CheckInterval, or up to PingInterval for a
//     silent network failure) the function runs without the lock. Only the
//     fencing token, checked by the storage that is written, makes a stale
//     holder harmless.
//   - The pool must have more connections (MaxConns) than scopes holding or
//     waiting for locks of the Locker at once, plus acquisitions outside
//     scopes (pgxpool's default is max(4, GOMAXPROCS)). A scope's first
//     acquisition that finds the pool exhausted waits for a connection,
//     and the scope may hold locks of other backends or enclosing scopes
//     meanwhile: that wait is outside caesura's ordering, and scopes can
//     deadlock on the pool. Size the pool, or give the locks a pool of
//     their own.
//   - The statements of one session run one at a time. Through the core a
//     scope's yields are sequential anyway; a goroutine that calls a Lock's
//     Acquire directly with the scope's context while another acquisition
//     of the scope waits on the server gets a connection of its own, but a
//     Release waits for that other acquisition's statement to end.
//   - A cancelled wait with no other lock on its session, a failed
//     statement, an unacknowledged cancel request or a lost session costs
//     the pool that connection (it is closed, not returned); the pool opens
//     another when needed.
//   - Session locks do not work through a pooler in transaction or statement
//     mode (PgBouncer's pool_mode=transaction): between two statements the
//     pooler may hand the server session, and the locks on it, to another
//     client, which then holds them too (advisory locks are reentrant within
//     a session): mutual exclusion is gone, and the locks stay held by a
//     server connection nobody controls. pglock notices when a statement of
//     a session runs on another server session than its first
//     (pg_backend_pid() differs): the acquire or Release returns an error
//     matching [ErrSessionChanged], and the session's Helds are lost with
//     that cause; the liveness check's ping, every PingInterval, notices it
//     between statements. It cannot notice a pooler that happened to keep
//     the client on one server session while another client used it in
//     between. A pooler in session mode works.
//   - Locks are exclusive. Two acquisitions of one key exclude each other
//     even within one process and one scope: an acquisition of a key that
//     is already held on the scope's session (possible only when a Lock's
//     Acquire is called directly with the scope's context: the core never
//     yields a held key again) runs on a connection of its own and waits.
package pglock
