// Package bench holds caesura's in-process and file-lock benchmarks against
// peer libraries (issue 8). It is a module of its own so that the peers
// (golang.org/x/sync and github.com/gofrs/flock here; redsync,
// bsm/redislock, rueidislock, pgx and etcd's concurrency.Mutex in the
// backend folders redis, pg and etcd, each a module too) never reach the
// go.mod of a caesura user.
//
//   - Uncontended, Contended, HandOff, EightKeysMem: memlock and caesura.Run
//     beside sync.Mutex, x/sync's semaphore.Weighted and a channel.
//   - FileUncontended, HandOff (mech=file/...), HandOffProcesses (8 worker
//     processes), FileScaling: filelock beside github.com/gofrs/flock and
//     bare flock(2) on a kept descriptor.
//   - Scaling, FileScaling: throughput against workers (1 to 64) on one key
//     and on 1,000 keys.
//   - MemScale: one million memlock keys held (CAESURA_BENCH_SCALE=1).
//
// Run a module's benchmarks by hand:
//
//	go test -run '^$' -bench . -benchmem -count 6 | tee new.txt; benchstat new.txt
//
// or all of them, with the report, from the repository root:
// go run ./bench/report (see its doc). The report matches results by name,
// so a new benchmark should follow the modules' conventions: sub-benchmarks
// named impl=, mech= or by library; throughput curves as
// Benchmark<...>Scaling/keys=N/workers=W/mech=M reporting an acq/s metric;
// hand-offs reporting handoff-*-p50/p99 metrics. The Test functions of the
// bench modules run in CI (with -race) and stay short; sweeps are
// benchmarks, run only by the report.
package bench
