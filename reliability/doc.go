// Package reliability is caesura's reliability suite (unreleased, a module of
// its own): real worker processes run critical sections through caesura.Run
// against a backend while the suite injects faults, and checkers judge the
// histories the workers wrote. Its tests produce RELIABILITY.md at the
// repository root.
//
// There is no API here: everything is in the test files.
//
// # How a run works
//
// The test binary re-executes itself as N worker processes (the environment
// variable CAESURA_RELIABILITY_WORKER carries a worker's settings as JSON).
// Each worker runs a bounded loop (in count and in time) of caesura.Run
// critical sections on one lock, and appends one JSON line per event to a
// history file of its own: invoke, acquired (with the fencing token), write
// (the value read and the value written), release, lost (the function's
// context was cancelled because the lock was lost), rejected (the fenced
// store refused a stale token), then ok or fail. Timestamps are
// time.Now().UnixNano() on one host. A worker that is killed leaves its
// history as far as it got; the parent restarts it as a new incarnation.
//
// Workloads:
//   - register in a file: read, pause, write back plus one, under the lock,
//     with no fencing.
//   - register in a fenced store: the same register kept by a small server
//     that the test runs over 127.0.0.1. Reads and writes carry the fencing
//     token; the store remembers the highest token it has seen (reads
//     included, so a holder that read under a newer token cannot be
//     overwritten by an older one) and, when fencing is on, refuses lower
//     ones. With fencing off it accepts them, and counts them.
//   - transfers between accounts kept in the fenced store: half take both
//     locks in one yield, half in two yields in random key order (with
//     caesura.WithRestart); each transfer writes both balances in one
//     all-or-nothing request, so the total is invariant.
//
// Faults (nemeses), on a schedule within the run: kill -9 of the worker that
// holds the lock (restarted at once); SIGSTOP of the holder for twice the
// lease, then SIGCONT (1s on PostgreSQL, which has no lease); through a TCP
// proxy per worker, a partition of the holder from the server (nothing
// forwarded for twice the lease), a delay (every chunk held for half the
// lease, for twice the lease) or a reset (TCP RST of its connections); kill
// -9 of the server, restarted empty, or on its data (Redis with an fsynced
// append-only file; a private PostgreSQL instance, never the shared one; the
// etcd member on its data directory and ports); every client connection
// killed (Redis CLIENT KILL); the holder's session ended from outside
// (PostgreSQL: pg_terminate_backend of the backend holding the advisory
// lock; etcd: its lease revoked), while the holder works in a long critical
// section that watches its context.
//
// Checkers:
//   - lost updates: two writes that read the same register value (one of them
//     overwrote the other); the final value against the writes recorded,
//     where a worker killed inside its critical section makes the outcome
//     indeterminate, never a violation; the balance total for transfers;
//   - mutual exclusion: two critical sections that both completed (Run
//     returned nil) and overlap in time, or whose tokens are out of order,
//     per lock (each account's lock for transfers, with its own token);
//     and porcupine's linearizability check of each lock's acquire/release
//     history against a mutex model (the register's lock, and every
//     account's lock of the transfers, a transfer being in the histories of
//     both its accounts), indeterminate releases left open;
//   - stale writes attempted and accepted, as counted by the store;
//   - liveness: every worker slot acquired the lock, and a lock held by a
//     killed worker was taken over within its TTL plus the renewal interval
//     plus a grace of one second for a loaded machine under -race;
//   - time to detect a lost lock: from SIGCONT to the paused holder's
//     context cancellation, and from the start of a partition; whether a
//     partitioned holder was told before another process acquired;
//   - a session ended from outside: the holder must be told (its context
//     cancelled with ErrLockLost) within the backend's detection bound plus
//     the grace, and no Run whose session was gone before its release may
//     return nil (on PostgreSQL, where the lock is its connection's
//     session, after a connection reset or a server crash too);
//   - bad input (TestBadInput, every backend, in the test process): an
//     empty key, a 1 MiB key, NUL bytes and invalid UTF-8 in a key, the same
//     key three times in one yield, zero and negative TTLs, a context
//     already cancelled, a server address with nothing behind it: a clear
//     error or a success, every lock named free afterwards and nothing left
//     on the server, and no goroutine left (goleak) once the clients are
//     closed.
//
// On a lease backend without fencing, lost updates after a pause are the
// expected, documented outcome: they are reported as "violation without
// fencing", not failed. A PostgreSQL session lock has no lease, so a paused
// holder keeps it: pglock must lose nothing there. Everything else above
// fails the test.
//
// # Running
//
//	cd reliability && GOWORK=off go test -race -count=1 ./...
//
// Quick mode (the default) runs each scenario for four seconds (six on
// etcd, whose lease is a second; half as long again for the long and
// watchful scenarios), the backends in parallel (four tests at once unless
// -parallel says otherwise): about 80s on a busy 2-CPU machine.
// CAESURA_SOAK=30m shares that duration among each backend's scenarios
// instead (raise -timeout to match: go test's default is 10m).
// CAESURA_RELIABILITY_REPORT=../RELIABILITY.md writes the results table
// there when the run ends.
//
// Servers: the Redis scenarios start their own redis-server on an ephemeral
// 127.0.0.1 port; without one on the PATH they skip (under CI=true they
// fail). pglock uses the PostgreSQL at CAESURA_PG_DSN (default
// postgres://postgres@127.0.0.1:5432/test, trust auth), with a key prefix
// and a fencing sequence of the suite's own; without it the pglock tests
// skip (under CI=true they fail). That server is shared and never
// restarted: the server crashes run against a private instance (initdb into
// a temporary directory, postgres on an ephemeral port, as the postgres user
// when the test runs as root), skipped with the reason in the report when
// the machine has no initdb or no postgres user. etcd runs embedded in the
// test binary, re-executed as a server process of its own (the parent
// kills and restarts it), with a 500ms election timeout so that its lease
// can be 1s.
//
// # Adding a backend
//
// A backend is an entry of the backends table in backends_test.go: a name,
// whether its locks can be lost (leases), a start function that the parent
// calls to bring up what the backend needs (a server of the test's own, or a
// skip with a clear message, a failure under CI=true) and that returns the
// settings every worker gets, the lease and renewal interval, and optionally
// crash, sever, expire and addrKey for the server faults; and an open
// function that a worker calls with those settings to name locks. pglock and
// etcdlock are added this way (backends_pg_test.go, backends_etcd_test.go):
// one file each that adds its entry in an init function and one Test
// function calling runBackend, plus a require and replace line in go.mod. A
// scenario a backend cannot run is listed in the report with the reason.
package reliability
