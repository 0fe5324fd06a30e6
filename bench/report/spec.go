package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// A Col is one measure of a table.
type Col struct {
	Head string
	Unit string // the benchmark's unit; a row may override it
	// Arg, if set, is put into the row's Bench with fmt.Sprintf.
	Arg string
	// Scale multiplies the value (0 means 1): ns/op to µs is 1e-3.
	Scale float64
	// Better is +1 if higher is better, -1 if lower is better, 0 if the
	// column is not a ranking measure. The targets use ranking columns.
	Better int
}

// A Row is one mechanism of a table. Make rows with ours, peer and ref.
type Row struct {
	Label   string
	Bench   string // result key, "set:Name/sub"
	Caesura bool
	Units   map[string]string // column head -> unit, overriding Col.Unit
	Why     string            // one sentence: why the number is what it is
	// Reference rows (a bare system call, a channel) show the floor under
	// a class but are no peer library: the targets do not rank caesura
	// against them.
	Reference bool
	// Optional rows are left out of a report that has no result for them:
	// a benchmark that a bench module may not have (yet).
	Optional bool
}

// ours is a caesura row.
func ours(label, bench, why string) Row {
	return Row{Label: label, Bench: bench, Caesura: true, Why: why}
}

// peer is a row of a peer library, ranked against caesura by the targets.
func peer(label, bench, why string) Row { return Row{Label: label, Bench: bench, Why: why} }

// ref is a reference row: shown, not ranked.
func ref(label, bench, why string) Row {
	return Row{Label: label, Bench: bench, Why: why, Reference: true}
}

// units returns r reading the given columns from other units: pairs of
// column head and unit.
func (r Row) units(headUnit ...string) Row {
	r.Units = map[string]string{}
	for i := 0; i+1 < len(headUnit); i += 2 {
		r.Units[headUnit[i]] = headUnit[i+1]
	}
	return r
}

// optional returns r marked optional.
func (r Row) optional() Row { r.Optional = true; return r }

// A Curve marks a table as one throughput-against-workers benchmark: its
// columns are the worker counts, and the report also draws it as a chart,
// one line per row.
type Curve struct {
	Set   string // result-key prefix: "mem", "pg"
	Bench string // benchmark name without "Benchmark": "Scaling"
	NKeys int
	Chart string // chart file name
	Title string // chart title
}

// A Table is one measure of one class, caesura beside its peers.
type Table struct {
	Class string
	Title string
	Note  string
	Cols  []Col
	Rows  []Row
	Curve *Curve // non-nil for a throughput curve
	// NoChart keeps the table's hand-off rows out of the hand-off chart
	// (the etcd harness without a hold, which the chart would show twice).
	NoChart bool
}

// key returns the result key and unit of row r in column c.
func (r Row) key(c Col) (bench, unit string) {
	bench, unit = r.Bench, c.Unit
	if c.Arg != "" {
		bench = fmt.Sprintf(r.Bench, c.Arg)
	}
	if u, ok := r.Units[c.Head]; ok {
		unit = u
	}
	return bench, unit
}

// Cell returns the statistics of row r in column c, scaled.
func (r Row) Cell(rs *Results, c Col) (Stat, bool) {
	bench, unit := r.key(c)
	s, ok := rs.Get(bench, unit)
	if !ok {
		return s, false
	}
	k := c.Scale
	if k == 0 {
		k = 1
	}
	s.Median, s.Min, s.Max = s.Median*k, s.Min*k, s.Max*k
	return s, true
}

// measured reports whether any column of r has a result.
func (r Row) measured(rs *Results, cols []Col) bool {
	for _, c := range cols {
		if _, ok := r.Cell(rs, c); ok {
			return true
		}
	}
	return false
}

// scalingWorkers are the worker counts of every Scaling benchmark.
var scalingWorkers = []int{1, 2, 4, 8, 16, 32, 64}

// Classes in report order.
var classes = []string{"In-process", "File (processes of one host)", "Redis", "PostgreSQL", "etcd"}

// classPrefix maps a result-key prefix to its class, for results no table
// names.
var classPrefix = map[string]string{"mem": "In-process", "redis": "Redis", "valkey": "Redis", "pg": "PostgreSQL", "etcd": "etcd"}

var (
	nsCol     = Col{Head: "ns/op", Unit: "ns/op"}
	bytesCol  = Col{Head: "B/op", Unit: "B/op"}
	allocsCol = Col{Head: "allocs/op", Unit: "allocs/op"}
)

func lower(c Col) Col { c.Better = -1; return c }

// handoffCols are the measures of measured-peers.md, as the in-process and
// Redis harnesses report them.
var handoffCols = []Col{
	{Head: "hand-off p50 µs", Unit: "handoff-other-p50-µs", Better: -1},
	{Head: "hand-off p99 µs", Unit: "handoff-other-p99-µs", Better: -1},
	{Head: "self-reacquire", Unit: "self-reacquire"},
	{Head: "FIFO share", Unit: "fifo-frac"},
	{Head: "acq/s", Unit: "acq/s"},
	{Head: "max wait ms", Unit: "max-wait-ms"},
}

// etcdHandoffCols are bench/etcd's contended measures.
var etcdHandoffCols = []Col{
	{Head: "acq/s", Unit: "acq/s", Better: 1},
	{Head: "hand-off p50 ms", Unit: "handoff-p50-ms", Better: -1},
	{Head: "hand-off p99 ms", Unit: "handoff-p99-ms", Better: -1},
	{Head: "FIFO share", Unit: "fifo-frac"},
}

// Labels of the peers, saying which tuning each row runs with (the Method
// section has the same in a table).
const (
	redsyncDefault = "redsync v4 (default: 32 tries, 50–250 ms random delay)"
	redsyncTuned   = "redsync v4 (best tuning: 1 ms retry delay, 100,000 tries)"
	bsm100ms       = "bsm/redislock LinearBackoff(100 ms) (package example)"
	bsm1ms         = "bsm/redislock LinearBackoff(1 ms) (best tuning)"
	rueidisLabel   = "rueidislock (KeyMajority 1, NoLoopTracking: its one-server setting)"
	etcdMutex      = "concurrency.Mutex (defaults: nothing to tune)"
	pgBare         = "bare pg_advisory_lock/unlock, pinned connection (best case)"
	gofrsLabel     = "gofrs/flock Lock/Unlock (no setting changes its speed)"
)

// tables is the content of the report; reportTables adds the rows found in
// the results.
var tables = []Table{
	// In-process.
	{Class: "In-process", Title: "Uncontended acquire + release, one goroutine",
		Cols: []Col{lower(nsCol), bytesCol, allocsCol},
		Rows: []Row{
			ours("caesura.Run (memlock)", "mem:Uncontended/caesura.Run",
				"Run's scope around one memlock acquire: two allocations (the scope, which is also the function's lazily cancellable context, its own Yield, and lends memlock the room for its handle; the variadic slice of yield(l)) and the deferred release are the gap to memlock alone."),
			ours("memlock Acquire/Release", "mem:Uncontended/memlock",
				"A hash of the key, a map insert and delete under one of 64 shard mutexes (the key's entry exists only while it is held), and one send/receive on a pooled one-slot channel; the allocation is the Held handle."),
			peer("x/sync semaphore.Weighted", "mem:Uncontended/semaphore.Weighted",
				"A mutex-guarded counter with no waiters: no channel, no allocation."),
			ref("chan struct{} (cap 1)", "mem:Uncontended/chan",
				"One buffered send and one receive: the channel's lock twice."),
			peer("sync.Mutex", "mem:Uncontended/sync.Mutex",
				"One compare-and-swap to lock and one to unlock: the floor."),
		}},
	{Class: "In-process", Title: "Contended: 8 goroutines, one key, empty critical section (ns per acquisition)",
		Cols: []Col{lower(nsCol), allocsCol, {Head: "self-reacquire", Unit: "self-frac"}},
		Rows: []Row{
			ours("caesura.Run (memlock)", "mem:Contended/caesura.Run",
				"Each acquisition is a FIFO hand-off to a parked goroutine, so it costs a wake-up; self-reacquire is not measured because the release runs inside Run."),
			ours("memlock Acquire/Release", "mem:Contended/memlock",
				"No barging: a release hands the lock to the oldest parked waiter, and the releaser re-takes it only when nobody is parked yet (the self-reacquire shown); one park and wake-up per hand-off. While the key is contended its entry stays alive and the shared Lock value finds it with one atomic count, no hash and no mutex; a context that cannot be cancelled waits with a plain send rather than a select."),
			peer("x/sync semaphore.Weighted", "mem:Contended/semaphore.Weighted",
				"FIFO through a waiter list; every contended acquire allocates its waiter (a channel and a list element)."),
			ref("chan struct{} (cap 1)", "mem:Contended/chan",
				"FIFO through the runtime's send queue with no allocation, one wake-up per acquisition."),
			peer("sync.Mutex", "mem:Contended/sync.Mutex",
				"The releaser barges and re-takes the lock before a woken waiter runs (high self-reacquire): fastest, least fair."),
		}},
	{Class: "In-process", Title: "Hand-off: 8 workers, one key, 100 µs hold, 2000 acquisitions per run",
		Cols: handoffCols,
		Rows: []Row{
			ours("caesura.Run (memlock)", "mem:HandOff/mech=caesura.Run",
				"memlock's FIFO hand-off behind Run; the clock starts when fn returns, so part of Run's unwinding overlaps the next waiter's wake-up."),
			ours("memlock Acquire/Release", "mem:HandOff/mech=memlock",
				"The hand-off is one goroutine wake-up; strictly FIFO, the releaser queues behind the others."),
			peer("x/sync semaphore.Weighted", "mem:HandOff/mech=semaphore.Weighted",
				"FIFO like memlock: the release wakes the head waiter, the same wake-up cost."),
			ref("chan struct{} (cap 1)", "mem:HandOff/mech=chan",
				"FIFO through the runtime's send queue: the same wake-up cost."),
			peer("sync.Mutex", "mem:HandOff/mech=sync.Mutex",
				"Barges until a waiter has starved 1 ms, then hands off FIFO: hence its self-reacquire share and long worst wait."),
		}},
	{Class: "In-process", Title: "Eight keys taken and released by one goroutine",
		Cols: []Col{lower(nsCol), bytesCol, allocsCol},
		Rows: []Row{
			ours("caesura.Run, one yield of 8 (memlock)", "mem:EightKeysMem/impl=caesura-1-yield",
				"The yield sorts the 8 keys and takes them in that global order through memlock's batch acquire; the sort and the scope are its cost over 8 plain acquires, and what makes it deadlock-free."),
			ours("memlock, 8 acquires", "mem:EightKeysMem/impl=memlock-8-acquires",
				"Eight independent acquires and releases, one Held allocation each, in the caller's order."),
			peer("sync.Mutex ×8", "mem:EightKeysMem/impl=sync.Mutex-8",
				"Eight compare-and-swap pairs: the floor, with no ordering to prevent deadlock."),
		}},
	memScaling(1), memScaling(1000),
	{Class: "In-process", Title: "Scale: one million memlock keys held at once",
		Note: "Bytes per held lock are runtime.MemStats.HeapAlloc after two GCs, held minus before, over 10⁶.",
		Cols: []Col{
			{Head: "bytes per held lock", Unit: "B/held-lock", Better: -1},
			{Head: "acquire all, ms", Unit: "acquire-all-ms", Better: -1},
			{Head: "release all, ms", Unit: "release-all-ms", Better: -1},
		},
		Rows: []Row{
			ours("memlock, 10⁶ Acquire calls", "mem:MemScale/impl=memlock",
				"Per key: the Lock value from Mutex(name), the Held handle and the shard map's entry with its one-slot channel; the time is 10⁶ map inserts plus the GC work that much new heap costs."),
			ours("caesura.Run, one yield of 10⁶ locks", "mem:MemScale/impl=caesura-1-yield",
				"The yield sorts a million keys before it takes them, and the scope keeps the held list, which adds to the bytes and the time."),
		}},

	// File.
	{Class: "File (processes of one host)", Title: "Uncontended acquire + release, one goroutine",
		Cols: []Col{lower(nsCol), bytesCol, allocsCol},
		Rows: []Row{
			ours("caesura.Run (filelock)", "mem:FileUncontended/impl=caesura.Run",
				"filelock plus Run's scope."),
			ours("filelock Acquire/Release", "mem:FileUncontended/impl=filelock",
				"flock(2) on a cached descriptor plus the fencing counter kept in the lock file (a read and a pwrite per acquisition)."),
			peer(gofrsLabel, "mem:FileUncontended/impl=gofrs-flock",
				"Lock opens the file and calls flock(2), Unlock unlocks and closes it: an open and a close per cycle, which the library gives no way to avoid."),
			ref("flock(2) on a kept descriptor (no library)", "mem:FileUncontended/impl=flock-fd",
				"Two system calls and nothing else: the floor."),
		}},
	{Class: "File (processes of one host)", Title: "Hand-off: 8 workers with a descriptor each, one key, 100 µs hold",
		Note: "Workers are goroutines, each with its own open file description, so the kernel arbitrates as it would between processes.",
		Cols: handoffCols,
		Rows: []Row{
			ours("caesura.Run (filelock, a Locker per worker)", "mem:HandOff/mech=file/caesura.Run",
				"Waiters block in flock(2); the kernel wakes them but the releaser, still running, usually re-takes the file first: flock is not fair, and caesura cannot make it so across descriptors."),
			ours("filelock (a Locker per worker)", "mem:HandOff/mech=file/filelock",
				"The same kernel arbitration as bare flock, plus the counter read and write."),
			ours("filelock (one Locker shared)", "mem:HandOff/mech=file/filelock-shared",
				"Workers of one Locker queue FIFO in memory and only the head touches the file, so they are served in order."),
			peer("gofrs/flock (a Flock per worker)", "mem:HandOff/mech=file/gofrs-flock",
				"Blocking flock(2) with an open before and a close after each cycle; the releaser barges less than on a kept descriptor because its open gives waiters time to run."),
			ref("flock(2) on a kept descriptor (no library)", "mem:HandOff/mech=file/flock-fd",
				"Bare flock(2): a release wakes the waiters, the releaser barges."),
		}},
	{Class: "File (processes of one host)", Title: "Hand-off: 8 processes, one key, 100 µs hold",
		Note: "The same measures with real processes: the test binary runs 8 copies of itself, each with its own Locker (or Flock, or descriptor), timestamped with CLOCK_MONOTONIC, which they share; a MAP_SHARED page counts the acquisitions and checks that no two holders are ever inside at once. Share / fair is the fewest and the most acquisitions of one process against an eighth of all.",
		Cols: append(slices.Clip(handoffCols), Col{Head: "min share / fair", Unit: "min-share/fair"}, Col{Head: "max share / fair", Unit: "max-share/fair"}),
		Rows: []Row{
			ours("caesura.Run (filelock, a Locker per process)", "mem:HandOffProcesses/mech=caesura.Run",
				"Each process waits in flock(2); the kernel wakes a waiter on release, but the releaser, still on its CPU, usually re-takes the file first: flock is not fair between processes, and caesura cannot make it so."),
			ours("filelock (a Locker per process)", "mem:HandOffProcesses/mech=filelock",
				"The same kernel arbitration as bare flock, plus the fencing counter's read and write under the lock."),
			peer("gofrs/flock (a Flock per process)", "mem:HandOffProcesses/mech=gofrs-flock",
				"Blocking flock(2) with an open before and a close after each cycle: the same kernel arbitration."),
			ref("flock(2) on a kept descriptor (no library)", "mem:HandOffProcesses/mech=flock-fd",
				"Bare flock(2) in each process: the floor, and the same barging releaser."),
		}},
	fileScaling(1), fileScaling(1000),

	// Redis.
	{Class: "Redis", Title: "Round trip (the unit of the rows below)",
		Cols: []Col{{Head: "µs", Unit: "ns/op", Scale: 1e-3}},
		Rows: []Row{
			ref("go-redis PING", "redis:RoundTrip", "One request and reply over loopback to the local redis-server."),
		}},
	{Class: "Redis", Title: "Uncontended acquire + release, one goroutine, distinct keys",
		Cols: []Col{{Head: "µs", Unit: "ns/op", Scale: 1e-3, Better: -1}, allocsCol, {Head: "commands", Unit: "cmds/op"}, {Head: "server µs", Unit: "server-µs/op"}},
		Rows: []Row{
			ours("caesura.Run (redislock)", "redis:Uncontended/caesura-Run",
				"The same script calls as redislock, plus the scope's in-process work."),
			ours("redislock Acquire/Release", "redis:Uncontended/caesura",
				"One acquire script (key, lease as its expiry, fencing token in one call) and one release script: 2 round trips."),
			ours(unfencedLabel, "redis:Uncontended/caesura-unfenced", unfencedWhy).optional(),
			peer("redsync v4 (default)", "redis:Uncontended/redsync-default",
				"SET NX with an expiry, then its release script: 2 round trips."),
			peer("bsm/redislock (LinearBackoff 100 ms)", "redis:Uncontended/bsm-linear100ms",
				"Its obtain script and its release script: 2 round trips; the retry strategy plays no part uncontended."),
			peer(rueidisLabel, "redis:Uncontended/rueidislock",
				"A script that sets the key and reads it back (so the server tracks it for invalidations) and a delete script: 2 round trips on rueidis's pipelined client.").optional(),
		}},
	{Class: "Redis", Title: "One key, lock + release, p50 in shuffled rounds (load falls on all alike)",
		Cols: []Col{{Head: "p50 µs", Better: -1}},
		Rows: []Row{
			ours("caesura.Run (redislock)", "redis:Interleaved",
				"redislock's 2 round trips plus the scope's in-process work.").units("p50 µs", "1key/caesura-Run-p50-µs"),
			ours("redislock Acquire/Release", "redis:Interleaved",
				"An acquire script and a release script: 2 round trips.").units("p50 µs", "1key/caesura-p50-µs"),
			peer("redsync v4 (default)", "redis:Interleaved",
				"SET NX with an expiry and a release script: 2 round trips.").units("p50 µs", "1key/redsync-p50-µs"),
			peer("bsm/redislock (LinearBackoff 100 ms)", "redis:Interleaved",
				"An obtain script and a release script: 2 round trips.").units("p50 µs", "1key/bsm-p50-µs"),
			peer("rueidislock (KeyMajority 1)", "redis:Interleaved",
				"A set-and-read script and a delete script: 2 round trips.").units("p50 µs", "1key/rueidislock-p50-µs").optional(),
		}},
	paired("redis", "One key, lock + release, libraries taking turns cycle by cycle (BenchmarkPaired)",
		"An acquire script and a release script: 2 round trips.", false),
	paired("valkey", "Valkey 8.1 (SET … IFEQ): one key, lock + release, libraries taking turns cycle by cycle (BenchmarkPaired)",
		"The acquire script and a conditional SET: 2 round trips.", true),
	{Class: "Redis", Title: "Valkey 8.1 (SET … IFEQ): uncontended acquire + release, one goroutine, distinct keys",
		Cols: []Col{{Head: "µs", Unit: "ns/op", Scale: 1e-3, Better: -1}, allocsCol, {Head: "commands", Unit: "cmds/op"}, {Head: "server µs", Unit: "server-µs/op"}},
		Rows: []Row{
			ours("redislock Acquire/Release", "valkey:Uncontended/caesura",
				"The acquire script, then one plain conditional SET (SET … KEEPTTL IFEQ … GET) instead of the release script: 2 round trips.").optional(),
			peer("redsync v4 (default)", "valkey:Uncontended/redsync-default",
				"SET NX with an expiry, then its release script: 2 round trips.").optional(),
			peer("bsm/redislock (LinearBackoff 100 ms)", "valkey:Uncontended/bsm-linear100ms",
				"Its obtain script and its release script: 2 round trips.").optional(),
		}},
	{Class: "Redis", Title: "Valkey 8.1 (SET … IFEQ): one key, lock + release, p50 in shuffled rounds",
		Cols: []Col{{Head: "p50 µs", Better: -1}},
		Rows: []Row{
			ours("redislock Acquire/Release", "valkey:Interleaved",
				"The acquire script and a conditional SET: 2 round trips.").units("p50 µs", "1key/caesura-p50-µs").optional(),
			peer("redsync v4 (default)", "valkey:Interleaved",
				"SET NX with an expiry and a release script: 2 round trips.").units("p50 µs", "1key/redsync-p50-µs").optional(),
			peer("bsm/redislock (LinearBackoff 100 ms)", "valkey:Interleaved",
				"An obtain script and a release script: 2 round trips.").units("p50 µs", "1key/bsm-p50-µs").optional(),
		}},
	{Class: "Redis", Title: "Eight keys, acquire only, p50 in shuffled rounds",
		Cols: []Col{{Head: "p50 µs", Better: -1}},
		Rows: []Row{
			ours("redislock AcquireBatch", "redis:Interleaved",
				"One script takes all 8 keys or none: 1 round trip.").units("p50 µs", "8keys-acquire/caesura-batch-p50-µs"),
			peer("redsync v4 (default), 8 sequential", "redis:Interleaved",
				"No multi-key primitive: 8 round trips.").units("p50 µs", "8keys-acquire/redsync-sequential-p50-µs"),
			peer("bsm/redislock (LinearBackoff 100 ms), 8 sequential", "redis:Interleaved",
				"No multi-key primitive: 8 round trips.").units("p50 µs", "8keys-acquire/bsm-sequential-p50-µs"),
			peer("rueidislock (KeyMajority 1), 8 sequential", "redis:Interleaved",
				"No multi-key primitive: 8 round trips.").units("p50 µs", "8keys-acquire/rueidislock-sequential-p50-µs").optional(),
		}},
	{Class: "Redis", Title: "Eight keys acquired and released by one goroutine",
		Cols: []Col{{Head: "acquire µs", Unit: "acquire-µs", Better: -1}, {Head: "acquire + release µs", Unit: "ns/op", Scale: 1e-3, Better: -1}, {Head: "commands", Unit: "cmds/op"}},
		Rows: []Row{
			ours("redislock AcquireBatch/ReleaseBatch", "redis:EightKeys/caesura-batch",
				"One script each way: 2 round trips for 8 keys."),
			ours("caesura.Run, one yield of 8 (redislock)", "redis:EightKeys/caesura-Run",
				"The yield takes the 8 keys in one batch script and Run frees them in one (2 commands, as the batch row); the harness runs Run in a goroutine and waits on channels, which adds to the acquire time."),
			peer("redsync v4 (default), 8 sequential", "redis:EightKeys/redsync-default-sequential",
				"8 acquires and 8 releases: 16 round trips."),
			peer("bsm/redislock (LinearBackoff 100 ms), 8 sequential", "redis:EightKeys/bsm-linear100ms-sequential",
				"8 acquires and 8 releases: 16 round trips."),
			peer("rueidislock (KeyMajority 1), 8 sequential", "redis:EightKeys/rueidislock-sequential",
				"8 acquires and 8 releases: 16 round trips.").optional(),
		}},
	{Class: "Redis", Title: "Hand-off: 8 workers, one key, 100 µs hold, 2000 acquisitions per run",
		Cols: append(handoffCols[:2:2], Col{Head: "self-reacquire", Unit: "self-reacquire"}, Col{Head: "acq/s", Unit: "acq/s"},
			Col{Head: "max wait ms", Unit: "max-wait-ms"}, Col{Head: "max share / fair", Unit: "max-share/fair"}, Col{Head: "commands per acq", Unit: "cmds/acq"}),
		Rows: []Row{
			ours("redislock, 8 goroutines", "redis:Contended/caesura",
				"Waiters queue FIFO in Redis and the release hands the key to the head and publishes once, so a hand-off is about one round trip plus a push, with no polling."),
			ours("redislock, 8 processes", "redis:Contended/caesura-processes",
				"The same queue and push across 8 processes, each with its own connection and subscription."),
			ours("redislock Unfenced, 8 goroutines", "redis:Contended/caesura-unfenced",
				"The same queue and push; a Locker that found the key taken goes to the acquire script at once for a second, rather than trying a plain SET first.").optional(),
			peer(redsyncDefault, "redis:Contended/redsync-default",
				"Polling: the releaser re-takes the key at once (self-reacquire ≈ 1), so another worker gets it only after a poll delay — the p99."),
			peer(redsyncTuned, "redis:Contended/redsync-1ms",
				"Polling every millisecond: cross-worker hand-offs wait at most about one poll, paid in commands per acquisition.").optional(),
			peer(bsm100ms, "redis:Contended/bsm-linear100ms",
				"Polling every 100 ms: the same barging, cross-worker hand-offs wait for the poll."),
			peer(bsm1ms, "redis:Contended/bsm-linear1ms",
				"Polling every 1 ms: fairer and faster hand-offs, paid in commands per acquisition."),
			peer(rueidisLabel, "redis:Contended/rueidislock",
				"Goroutines of one Locker queue on an in-process gate, and a waiter elsewhere is woken by the server's invalidation push when the key is deleted: no polling.").optional(),
		}},
	{Class: "Redis", Title: "Redlock over 3 servers: one key, acquire + release, one goroutine, distinct keys",
		Cols: []Col{{Head: "µs", Unit: "ns/op", Scale: 1e-3, Better: -1}, allocsCol, {Head: "commands (all servers)", Unit: "cmds/op"}},
		Rows: []Row{
			ours("redislock NewRedlock, 3 servers", "redis:Redlock/1key/caesura-redlock3",
				"A plain SET NX where the key is missing (the script where a Locker of New keeps a counter) and the release script go to the 3 servers in parallel and need a majority: 2 round trips of wall time.").optional(),
			peer("redsync v4, 3 pools (default)", "redis:Redlock/1key/redsync-3pools",
				"SET NX and the release script on the 3 pools in parallel, a majority needed: 2 round trips of wall time.").optional(),
		}},
	{Class: "Redis", Title: "Redlock over 3 servers: one key, acquire + release, libraries taking turns cycle by cycle",
		Cols: pairedCols,
		Rows: []Row{
			ours("redislock NewRedlock, 3 servers", "redis:Redlock/1key/paired",
				"A plain SET NX where the key is missing, and the release script (GET and DEL), on the 3 servers in parallel.").
				pairedRow("caesura-redlock3").optional(),
			peer("redsync v4, 3 pools (default)", "redis:Redlock/1key/paired",
				"SET NX and the release script on the 3 pools in parallel.").
				pairedRow("redsync-3pools").optional(),
		}},
	{Class: "Redis", Title: "Redlock over 3 servers: eight keys acquired and released by one goroutine",
		Cols: []Col{{Head: "acquire µs", Unit: "acquire-µs", Better: -1}, {Head: "acquire + release µs", Unit: "ns/op", Scale: 1e-3, Better: -1}, {Head: "commands (all servers)", Unit: "cmds/op"}},
		Rows: []Row{
			ours("redislock NewRedlock AcquireBatch/ReleaseBatch", "redis:Redlock/8keys/caesura-redlock3-batch",
				"One script per server, in parallel, takes the 8 keys or none: 2 round trips of wall time for 8 keys.").optional(),
			peer("redsync v4, 3 pools, 8 sequential", "redis:Redlock/8keys/redsync-3pools-sequential",
				"A mutex per key, each on the 3 pools in parallel: 16 round trips of wall time.").optional(),
		}},
	{Class: "Redis", Title: "Scale: 100,000 locks held at once on a fresh redis-server",
		Note: "Server memory is INFO memory used_memory, held minus before (and after release minus before), over 10⁵; libraries that take one lock per call use 32 goroutines.",
		Cols: []Col{
			{Head: "server bytes per held lock", Unit: "B/held-lock", Better: -1},
			{Head: "bytes per lock after release", Unit: "B/released-lock"},
			{Head: "acquire all, ms", Unit: "acquire-all-ms", Better: -1},
			{Head: "release all, ms", Unit: "release-all-ms", Better: -1},
		},
		Rows: []Row{
			ours("redislock, AcquireBatch of 1,000 keys", "redis:Held100k/caesura-batch1000",
				"100 batch scripts take 1,000 keys each; each lock is its key with an expiry (the lease); after release the key keeps the next fencing token until its last lease would have ended.").optional(),
			ours("redislock, 32 goroutines", "redis:Held100k/caesura-parallel",
				"One acquire script per lock from 32 goroutines: the same keys, 100,000 round trips spread over the connections.").optional(),
			peer("redsync v4 (default), 32 goroutines", "redis:Held100k/redsync-default-parallel",
				"One SET NX per lock with its value; nothing stays after release.").optional(),
			peer("bsm/redislock (LinearBackoff 100 ms), 32 goroutines", "redis:Held100k/bsm-linear100ms-parallel",
				"One obtain script per lock; nothing stays after release.").optional(),
			peer("rueidislock (KeyMajority 1), 32 goroutines", "redis:Held100k/rueidislock-parallel",
				"One set-and-read script per lock, and the server tracks every key read for invalidations, which costs memory per held lock.").optional(),
		}},
	redisScaling(1), redisScaling(1000),

	// PostgreSQL.
	{Class: "PostgreSQL", Title: "Round trip (the unit of the rows below)",
		Cols: []Col{{Head: "µs", Unit: "ns/op", Scale: 1e-3}},
		Rows: []Row{
			ref("pgx Ping (empty query)", "pg:RoundTrip", "One request and reply over loopback to the local server."),
		}},
	{Class: "PostgreSQL", Title: "Uncontended acquire + release, one goroutine",
		Cols: []Col{{Head: "µs", Unit: "ns/op", Scale: 1e-3, Better: -1}, allocsCol},
		Rows: []Row{
			ours("caesura.Run (pglock)", "pg:Uncontended/impl=caesura.Run",
				"pglock's two statements plus the scope."),
			ours("pglock Acquire/Release", "pg:Uncontended/impl=pglock",
				"pg_advisory_lock with nextval for the fencing token in one statement, pg_advisory_unlock in another: 2 round trips, plus taking a pooled connection."),
			peer(pgBare, "pg:Uncontended/impl=bare",
				"Two statements on a connection held for the whole run: 2 round trips, the floor."),
		}},
	{Class: "PostgreSQL", Title: "One key, lock + release, latency in alternating rounds (load falls on all alike)",
		Cols: []Col{{Head: "p50 µs", Better: -1}, {Head: "p99 µs"}},
		Rows: []Row{
			ours("caesura.Run (pglock)", "pg:CompareUncontended",
				"pglock's 2 statements plus the scope.").units("p50 µs", "caesura-p50-µs", "p99 µs", "caesura-p99-µs"),
			ours("pglock Acquire/Release", "pg:CompareUncontended",
				"2 statements (lock with nextval, unlock) on a pooled connection.").units("p50 µs", "pglock-p50-µs", "p99 µs", "pglock-p99-µs"),
			ref("bare, pglock's statements on a pinned connection", "pg:CompareUncontended",
				"The same 2 statements with no pool and no library: what pglock's work costs by itself.").units("p50 µs", "bareseq-p50-µs", "p99 µs", "bareseq-p99-µs"),
			peer(pgBare, "pg:CompareUncontended",
				"2 round trips: the floor.").units("p50 µs", "bare-p50-µs", "p99 µs", "bare-p99-µs"),
		}},
	{Class: "PostgreSQL", Title: "Eight keys acquired and released, latency in alternating rounds",
		Cols: []Col{{Head: "p50 µs", Better: -1}, {Head: "p99 µs"}},
		Rows: []Row{
			ours("caesura.Run, one yield of 8 (pglock)", "pg:CompareEightKeys",
				"One statement locks the 8 keys in order, one unlocks them: 2 round trips.").units("p50 µs", "caesura1-p50-µs", "p99 µs", "caesura1-p99-µs"),
			ours("pglock AcquireBatch of 8", "pg:CompareEightKeys",
				"The same single statement each way, without the scope.").units("p50 µs", "pglock1-p50-µs", "p99 µs", "pglock1-p99-µs"),
			ours("caesura.Run, 8 yields (pglock)", "pg:CompareEightKeys",
				"A statement per yield and per release: 16 round trips.").units("p50 µs", "caesura8-p50-µs", "p99 µs", "caesura8-p99-µs"),
			ours("pglock, 8 acquires", "pg:CompareEightKeys",
				"16 round trips.").units("p50 µs", "pglock8-p50-µs", "p99 µs", "pglock8-p99-µs"),
			peer("bare, one statement each way", "pg:CompareEightKeys",
				"2 round trips: the floor for 8 keys.").units("p50 µs", "bare1-p50-µs", "p99 µs", "bare1-p99-µs"),
			peer("bare, 8 statements each way", "pg:CompareEightKeys",
				"16 round trips on one connection.").units("p50 µs", "bare8-p50-µs", "p99 µs", "bare8-p99-µs"),
			peer("bare, 8 statements, a connection per key", "pg:CompareEightKeys",
				"16 round trips plus taking 8 pooled connections.").units("p50 µs", "bare8conns-p50-µs", "p99 µs", "bare8conns-p99-µs"),
		}},
	{Class: "PostgreSQL", Title: "Eight keys acquired and released by one goroutine",
		Cols: []Col{{Head: "µs", Unit: "ns/op", Scale: 1e-3, Better: -1}, allocsCol},
		Rows: []Row{
			ours("caesura.Run, one yield of 8 (pglock)", "pg:EightKeys/impl=caesura-1-yield",
				"One statement locks the 8 keys in order and one unlocks them: 2 round trips."),
			ours("caesura.Run, 8 yields (pglock)", "pg:EightKeys/impl=caesura-8-yields",
				"A statement per yield and per release: 16 round trips."),
			ours("pglock, 8 acquires", "pg:EightKeys/impl=pglock-8-acquires",
				"A statement per acquire and per release: 16 round trips."),
			peer("bare, one statement (unnest … ORDER BY)", "pg:EightKeys/impl=bare-1-statement",
				"One statement each way: 2 round trips."),
			peer("bare, 8 statements", "pg:EightKeys/impl=bare-8-statements",
				"16 round trips."),
		}},
	{Class: "PostgreSQL", Title: "Hand-off: 8 workers, one key, 100 µs hold",
		Cols: []Col{
			{Head: "hand-off p50 µs", Unit: "handoff-p50-µs", Better: -1},
			{Head: "hand-off p99 µs", Unit: "handoff-p99-µs", Better: -1},
			{Head: "self-reacquire %", Unit: "self-reacquire-%"},
			{Head: "max share deviation %", Unit: "max-share-dev-%"},
		},
		Rows: []Row{
			ours("caesura.Run (pglock)", "pg:HandOff/impl=caesura.Run",
				"The server's lock queue wakes the next backend when the holder's unlock statement runs: about one round trip plus a backend wake-up."),
			ours("pglock Acquire/Release", "pg:HandOff/impl=pglock",
				"The same server queue, FIFO among the waiting backends; a releaser re-takes the key only when nobody is queued yet."),
			peer("bare pg_advisory_lock, pinned connections (best case)", "pg:HandOff/impl=bare",
				"The same server queue with nothing around it: the floor."),
		}},
	pgScaling(1), pgScaling(1000),

	// etcd.
	{Class: "etcd", Title: "Server floor (embedded etcd, default fsync)",
		Cols: []Col{
			{Head: "Put p50 ms", Unit: "put-p50-ms"}, {Head: "Put p99 ms", Unit: "put-p99-ms"},
			{Head: "linearizable Get p50 ms", Unit: "get-p50-ms"}, {Head: "Get p99 ms", Unit: "get-p99-ms"},
		},
		Rows: []Row{
			ref("clientv3 Put / Get", "etcd:Floor",
				"A Put is a raft write with an fsync; a linearizable Get a ReadIndex round trip: the unit of the rows below."),
		}},
	{Class: "etcd", Title: "Uncontended acquire + release, one goroutine",
		Cols: []Col{{Head: "ms", Unit: "ns/op", Scale: 1e-6, Better: -1}, allocsCol},
		Rows: []Row{
			ours("caesura.Run (etcdlock)", "etcd:Uncontended/etcdlock-Run",
				"etcdlock's two writes plus the scope."),
			ours("etcdlock Acquire/Release", "etcd:Uncontended/etcdlock",
				"A transaction that creates the waiter key and finds it first in line, then a delete transaction: two raft writes, each with an fsync."),
			peer(etcdMutex, "etcd:Uncontended/Mutex",
				"A transaction that creates its key and reads the owner, then a delete: two raft writes."),
		}},
	{Class: "etcd", Title: "Eight keys acquired and released by one goroutine",
		Cols: []Col{{Head: "acquire ms", Unit: "acquire-ms/op", Better: -1}, {Head: "acquire + release ms", Unit: "ns/op", Scale: 1e-6, Better: -1}},
		Rows: []Row{
			ours("caesura.Run, one yield of 8 (etcdlock)", "etcd:EightKeys/etcdlock-yield",
				"One transaction creates all 8 keys; the release deletes them (the second column minus the first is its cost)."),
			peer("concurrency.Mutex (defaults), 8 sequential", "etcd:EightKeys/Mutex-sequential",
				"8 Lock calls, a transaction each, then 8 deletes: 16 raft writes."),
		}},
	{Class: "etcd", Title: "Hand-off: 8 workers, one key, 100 µs hold",
		Note: "bench/etcd measures the hand-off from the start of the previous holder's release to the return of the next acquire.",
		Cols: etcdHandoffCols,
		Rows: []Row{
			ours("etcdlock", "etcd:HandOff/etcdlock",
				"Each waiter watches its predecessor from a current revision, so the delete reaches it at once: a hand-off is the release write plus a watch event."),
			peer(etcdMutex, "etcd:HandOff/Mutex",
				"Its watch starts at an old revision, which etcd serves from a 100 ms resync loop: the p99 hand-off is that loop, and no client option changes it."),
		}},
	{Class: "etcd", Title: "Contended: 8 workers, one key, no hold",
		Note:    "The same harness with an empty critical section: the most hand-offs a second.",
		Cols:    etcdHandoffCols,
		NoChart: true,
		Rows: []Row{
			ours("etcdlock", "etcd:Contended/etcdlock",
				"The same watch of the predecessor from a current revision: one release write plus a watch event per hand-off."),
			peer(etcdMutex, "etcd:Contended/Mutex",
				"The 100 ms resync of old-revision watches bounds it to about 10 hand-offs a second per waiter."),
		}},
	etcdScaling(1), etcdScaling(1000),
}

// A curveRow is one mechanism of a throughput curve: the mech= part of its
// benchmark name and its row.
type curveRow struct {
	mech string
	row  Row
}

// scalingTable is throughput against workers on nkeys keys: the numbers of
// a chart. The rows' Bench is set from c.
func scalingTable(class, what string, c Curve, note string, rows []curveRow) Table {
	var cols []Col
	for _, w := range scalingWorkers {
		head := fmt.Sprintf("%d workers", w)
		if w == 1 {
			head = "1 worker"
		}
		col := Col{Head: head, Unit: "acq/s", Arg: fmt.Sprintf("%d/workers=%d", c.NKeys, w)}
		if w == 1 || w == 8 || w == 64 { // the targets rank these three
			col.Better = 1
		}
		cols = append(cols, col)
	}
	keys := "one key"
	if c.NKeys > 1 {
		keys = fmt.Sprintf("%d keys, each acquisition picks one at random", c.NKeys)
	}
	var rs []Row
	for _, cr := range rows {
		r := cr.row
		r.Bench = curveBench(c, cr.mech)
		rs = append(rs, r)
	}
	if note != "" {
		note += " "
	}
	c.Title = fmt.Sprintf("%s throughput, %s, empty critical section", what, plural(c.NKeys))
	return Table{Class: class,
		Title: fmt.Sprintf("Throughput (acquisitions/s) against workers, %s, empty critical section", keys),
		Note:  note + "The chart " + c.Chart + " draws the same numbers; the targets rank 1, 8 and 64 workers.",
		Cols:  cols, Rows: rs, Curve: &c}
}

// curveBench is the result key of mech in curve c, with %s for the
// "N/workers=W" part.
func curveBench(c Curve, mech string) string {
	return c.Set + ":" + c.Bench + "/keys=%s/mech=" + mech
}

// chartName is the chart file of a curve: stem-1key.svg, stem-1000keys.svg.
func chartName(stem string, nkeys int) string {
	if nkeys == 1 {
		return stem + "-1key.svg"
	}
	return fmt.Sprintf("%s-%dkeys.svg", stem, nkeys)
}

func memScaling(nkeys int) Table {
	return scalingTable("In-process", "In-process",
		Curve{Set: "mem", Bench: "Scaling", NKeys: nkeys, Chart: chartName("scaling", nkeys)}, "",
		[]curveRow{
			{"caesura.Run", ours("caesura.Run (memlock)", "",
				"memlock plus the scope per acquisition; on one key every contended acquisition is a FIFO wake-up, on many keys most are uncontended.")},
			{"memlock", ours("memlock Acquire/Release", "",
				"A key lookup hashes the name into one of 64 mutex-guarded shards and takes a pooled entry; on one key each contended acquisition is a FIFO wake-up, on many keys the shards spread the workers.")},
			{"semaphore.Weighted", peer("x/sync semaphore.Weighted", "",
				"No shared map (one semaphore per key), FIFO waiters: wake-ups on one key, near-uncontended on many.")},
			{"chan", ref("chan struct{} (cap 1)", "",
				"One channel per key, FIFO wake-ups, no allocation.")},
			{"sync.Mutex", peer("sync.Mutex", "",
				"Spinning and barging keep the lock on a running goroutine: highest throughput, unfair.")},
		})
}

func fileScaling(nkeys int) Table {
	return scalingTable("File (processes of one host)", "File-lock",
		Curve{Set: "mem", Bench: "FileScaling", NKeys: nkeys, Chart: chartName("file-scaling", nkeys)},
		"Workers are goroutines with their own Locker (or Flock), hence their own descriptors, as processes would have, except in the shared row; the files exist before the clock starts.",
		[]curveRow{
			{"caesura.Run", ours("caesura.Run (filelock, a Locker per worker)", "",
				"filelock per worker plus the scope per acquisition.")},
			{"filelock", ours("filelock (a Locker per worker)", "",
				"flock(2) on a cached descriptor plus the fencing counter's read and write; on one key the kernel arbitrates between descriptors and the releaser usually barges.")},
			{"filelock-shared", ours("filelock (one Locker shared)", "",
				"Workers of one Locker queue in memory and only the head calls flock(2): a goroutine wake-up per contended hand-off instead of a kernel one.")},
			{"gofrs-flock", peer("gofrs/flock (a Flock per worker and key)", "",
				"An open, a flock(2) and a close per acquisition and no fencing counter; on one key the kernel arbitrates between descriptors and the releaser often barges, as with bare flock.")},
		})
}

func redisScaling(nkeys int) Table {
	opt := func(r Row) Row { return r.optional() }
	return scalingTable("Redis", "Redis",
		Curve{Set: "redis", Bench: "Scaling", NKeys: nkeys, Chart: chartName("redis-scaling", nkeys)},
		"Workers are goroutines of one program sharing one go-redis client (a pool of workers + 2 connections) and one Locker (one redsync, bsm/redislock or rueidislock instance). A point stops after 5 s: a capped cell (done-frac below 1 in the raw output) is the acquisitions made by then over the time taken; a peer's lock call that gives up is called again.",
		[]curveRow{
			{"caesura-Run", opt(ours("caesura.Run (redislock)", "",
				"redislock plus the scope per acquisition."))},
			{"caesura", opt(ours("redislock Acquire/Release", "",
				"Waiters queue in Redis and are pushed the key on release: one round trip per hand-off on one key, pipelined scripts on many."))},
			{"caesura-unfenced", opt(ours("redislock Acquire/Release, Unfenced", "",
				"The same queue and push; a missing key is taken by a plain SET NX and released by deleting it (no fencing token)."))},
			{"redsync-default", opt(peer(redsyncDefault, "",
				"Polling with 50–250 ms delays: on one key the releaser re-takes the key at once while the others sleep (the hand-off table shows the unfairness), on many keys it is 2 round trips per acquisition."))},
			{"redsync-1ms", opt(peer(redsyncTuned, "",
				"Polling every millisecond: more commands per acquisition on one key."))},
			{"bsm-linear100ms", opt(peer(bsm100ms, "",
				"Polling every 100 ms: waiters on one key mostly sleep."))},
			{"bsm-linear1ms", opt(peer(bsm1ms, "",
				"Polling every millisecond: more commands per acquisition on one key."))},
			{"rueidislock", opt(peer(rueidisLabel, "",
				"In-process gates and invalidation pushes instead of polling."))},
		})
}

func pgScaling(nkeys int) Table {
	return scalingTable("PostgreSQL", "PostgreSQL",
		Curve{Set: "pg", Bench: "Scaling", NKeys: nkeys, Chart: chartName("pg-scaling", nkeys)},
		"Workers are goroutines of one program: pglock's share one Locker and its pool, the bare ones pin a connection each.",
		[]curveRow{
			{"caesura.Run", ours("caesura.Run (pglock)", "",
				"pglock plus the scope per acquisition.")},
			{"pglock", ours("pglock Acquire/Release", "",
				"Two statements per acquisition on a pooled connection; on one key waiters queue in the server and each hand-off is a backend wake-up, on many keys the server runs the statements in parallel.")},
			{"bare", peer(pgBare, "",
				"The same two advisory-lock statements on a connection per worker, no pool and no fencing counter: the floor.")},
		})
}

func etcdScaling(nkeys int) Table {
	return scalingTable("etcd", "etcd",
		Curve{Set: "etcd", Bench: "Scaling", NKeys: nkeys, Chart: chartName("etcd-scaling", nkeys)},
		"Workers are goroutines of one program: etcdlock's share one Locker (one session), the Mutexes have a session per worker.",
		[]curveRow{
			{"etcdlock-Run", ours("caesura.Run (etcdlock)", "",
				"etcdlock plus the scope per acquisition.")},
			{"etcdlock", ours("etcdlock Acquire/Release", "",
				"Two raft writes per acquisition; on one key each hand-off is a watch event from a current revision, on many keys the server batches concurrent writes into one fsync.")},
			{"Mutex", peer(etcdMutex, "",
				"Two raft writes per acquisition; on one key each waiter's watch starts at an old revision and waits for the 100 ms resync, so throughput grows with the number of waiters, about 10 a second each.")},
		})
}

// reportTables returns the tables of the report for rs: optional rows
// without a result are left out, and a throughput curve gains a row for
// every mechanism of its benchmark in rs that the spec does not name (so
// that a bench module's new peer shows up at once, if without an
// explanation).
func reportTables(rs *Results) []Table {
	var out []Table
	for _, t := range tables {
		if t.Curve != nil {
			t.Rows = append(slices.Clip(t.Rows), discovered(rs, t)...)
		}
		var rows []Row
		for _, r := range t.Rows {
			if !r.Optional || r.measured(rs, t.Cols) {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		t.Rows = rows
		out = append(out, t)
	}
	return out
}

// discovered returns rows for the mechanisms of curve table t that are in rs
// but not in t.
func discovered(rs *Results, t Table) []Row {
	c := t.Curve
	known := map[string]bool{}
	for _, r := range t.Rows {
		known[r.Bench] = true
	}
	prefix := fmt.Sprintf("%s:%s/keys=%d/workers=", c.Set, c.Bench, c.NKeys)
	var out []Row
	for _, k := range rs.Keys() {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		w, mech, ok := strings.Cut(rest, "/mech=")
		if _, err := strconv.Atoi(w); !ok || err != nil {
			continue
		}
		b := curveBench(*c, mech)
		if known[b] {
			continue
		}
		known[b] = true
		out = append(out, Row{Label: mech, Bench: b, Caesura: strings.HasPrefix(mech, "caesura"),
			Why: fmt.Sprintf("Measured by bench/%s; no explanation written yet.", c.Set)})
	}
	return out
}

// A peerSetting says how one peer runs in the benchmarks.
type peerSetting struct {
	class, peer, setting, which string
}

// peerSettings are the peers with their tuning: documented defaults and,
// where a setting changes the result, the best one too.
var peerSettings = []peerSetting{
	{"In-process", "sync.Mutex, x/sync semaphore.Weighted", "as they are", "no setting exists"},
	{"File", "gofrs/flock", "a Flock per worker (per worker and key in the curves), blocking Lock and Unlock", "its best: Lock blocks in flock(2), while the TryLockContext its README shows polls; no option keeps the descriptor open between cycles"},
	{"Redis", "redsync v4", "expiry 8 s; the default retry (32 tries, 50–250 ms random delay) and a tuned one (1 ms delay, 100,000 tries)", "default and best tuning, in separate rows"},
	{"Redis", "bsm/redislock", "TTL 8 s; LinearBackoff(100 ms) and LinearBackoff(1 ms)", "its default NoRetry fails under contention instead of waiting; 100 ms is its package example, 1 ms the best measured"},
	{"Redis", "rueidislock", "KeyMajority 1, NoLoopTracking, KeyValidity 8 s", "its README's setting for one Redis server; waiting is push-based, so there is no delay to tune"},
	{"PostgreSQL", "pg_advisory_lock/unlock", "a connection pinned per worker for the whole run", "the best case: no pool, no library"},
	{"etcd", "concurrency.Mutex", "a session per worker (TTL 10 s)", "defaults: it has no option that changes its speed (the session TTL only bounds a crashed holder), so default and best are the same"},
}

// unfencedLabel and unfencedWhy describe redislock's unfenced Locker in the
// one-key tables.
const (
	unfencedLabel = "redislock Acquire/Release, Unfenced (no fencing token)"
	unfencedWhy   = "A plain SET NX with an expiry where the key is missing, and a release script that deletes the key (GET, DEL): 2 round trips, as redsync's."
)

// pairedCols are the columns of a table of libraries taking turns cycle by
// cycle (bench/redis's paired helper).
var pairedCols = []Col{{Head: "p50 µs", Better: -1}, {Head: "mean µs"}}

// pairedRow returns r reading pairedCols from lib's metrics of such a
// benchmark.
func (r Row) pairedRow(lib string) Row {
	return r.units("p50 µs", lib+"-p50-µs", "mean µs", lib+"-mean-µs")
}

// paired is the table of BenchmarkPaired in set, with why for caesura's
// row; optional marks every row optional.
func paired(set, title, why string, optional bool) Table {
	row := func(r Row, lib string) Row {
		r = r.pairedRow(lib)
		if optional {
			r = r.optional()
		}
		return r
	}
	bench := set + ":Paired"
	return Table{Class: "Redis", Title: title,
		Cols: pairedCols,
		Rows: []Row{
			row(ours("redislock Acquire/Release", bench, why), "caesura"),
			row(ours(unfencedLabel, bench, unfencedWhy), "caesura-unfenced").optional(),
			row(peer("redsync v4 (default)", bench, "SET NX with an expiry and a release script: 2 round trips."), "redsync-default"),
			row(peer("bsm/redislock (LinearBackoff 100 ms)", bench, "An obtain script and a release script: 2 round trips."), "bsm-linear100ms"),
		}}
}
