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
// lease, then SIGCONT; through a TCP proxy per worker, a partition of the
// holder from the server (nothing forwarded for twice the lease), a delay
// (every chunk held for half the lease, for twice the lease) or a reset (TCP
// RST of its connections); kill -9 of the server, restarted empty; every
// client connection killed (Redis CLIENT KILL).
//
// Checkers:
//   - lost updates: two writes that read the same register value (one of them
//     overwrote the other); the final value against the writes recorded,
//     where a worker killed inside its critical section makes the outcome
//     indeterminate, never a violation; the balance total for transfers;
//   - mutual exclusion: two critical sections that both completed (Run
//     returned nil) and overlap in time, or whose tokens are out of order;
//     and porcupine's linearizability check of each lock's acquire/release
//     history against a mutex model, indeterminate releases left open;
//   - stale writes attempted and accepted, as counted by the store;
//   - liveness: every worker slot acquired the lock, and a lock held by a
//     killed worker was taken over within its TTL plus the renewal interval
//     plus a grace of one second for a loaded machine under -race;
//   - time to detect a lost lock: from SIGCONT to the paused holder's
//     context cancellation, and from the start of a partition; whether a
//     partitioned holder was told before another process acquired.
//
// On a lease backend without fencing, lost updates after a pause are the
// expected, documented outcome: they are reported as "violation without
// fencing", not failed. Everything else above fails the test.
//
// # Running
//
//	cd reliability && GOWORK=off go test -race -count=1 ./...
//
// Quick mode (the default) runs each scenario for four seconds, the
// backends in parallel: about 40s on a busy 2-CPU machine. CAESURA_SOAK=30m
// shares that duration among each backend's scenarios instead (raise
// -timeout to match: go test's default is 10m). CAESURA_RELIABILITY_REPORT=../RELIABILITY.md writes the results
// table there when the run ends. The Redis scenarios start their own
// redis-server on an ephemeral 127.0.0.1 port; without one on the PATH they
// skip (under CI=true they fail).
//
// # Adding a backend
//
// A backend is an entry of the backends table in backends_test.go: a name,
// whether its locks can be lost (leases), a start function that the parent
// calls to bring up what the backend needs (a server of the test's own, or a
// skip with a clear message, a failure under CI=true) and that returns the
// settings every worker gets, the lease and renewal interval, and optionally
// crash, sever and addrKey for the server faults; and an open function that a
// worker calls with those settings to name locks. pglock and etcdlock join
// with one file each that adds its entry in an init function and one Test
// function calling runBackend, plus a require and replace line in go.mod.
package reliability
