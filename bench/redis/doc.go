// Package redisbench compares caesura's Redis backend (fenced, the default,
// and unfenced: redislock.Options.Unfenced) with redsync v4,
// bsm/redislock and rueidislock on local redis-server processes that the
// benchmarks start themselves: uncontended lock+release (with the server
// time per cycle from INFO commandstats), 8 keys at once, 8 workers
// contending for one key (as goroutines and as separate processes, with the
// hand-off, fairness and Redis-command measures of
// shared/research/measured-peers.md), Redlock over three servers (caesura's
// NewRedlock against redsync with three pools), 100,000 locks held at once
// (server memory per lock, time to take and give back them all), and
// throughput against the number of workers (1 to 64) on one key and on
// 1,000 keys (BenchmarkScaling, a fixed count per point: -benchtime 1000x),
// and the CPU time of the server and of the client per uncontended cycle
// (BenchmarkCPU, -benchtime 20000x; Linux).
//
// Peers and their settings: redsync with its default retry (32 tries
// 50-250ms apart) and "redsync-1ms" (retry delay 1ms, 100000 tries); bsm
// with a linear backoff of 100ms and of 1ms; rueidislock with KeyMajority 1
// (one key per lock, as its README advises for one Redis) and its default
// tracking (NOLOOP off: see rueidisImpl).
//
//	cd bench/redis && GOWORK=off go test -run '^$' -bench . -benchtime 1x -count 1   # contended runs, Held100k
//	GOWORK=off go test -run '^$' -bench 'Uncontended|EightKeys|Redlock' -benchmem
//	GOWORK=off go test -run '^$' -bench Scaling -benchtime 1000x   # throughput curves, a few minutes
//
// On a shared machine, compare runs interleaved (run the whole set several
// times with -count 1, then benchstat), or use BenchmarkInterleaved, whose
// libraries take turns in rounds of 200 cycles, or BenchmarkPaired, whose
// libraries take turns cycle by cycle (one key: caesura fenced and
// unfenced, bsm, redsync) and which reports the ratios of each caesura's
// p50 to each peer's.
//
// The benchmarks run on redis-server, or on the binary named by
// REDISBENCH_SERVER: REDISBENCH_SERVER=valkey-server measures on Valkey 8.1,
// where redislock releases a lock by a conditional SET (scripts/install-valkey
// builds it).
//
// It lives in a module of its own so that no user of caesura pulls the peer
// libraries.
package redisbench
