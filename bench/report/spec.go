package main

import "fmt"

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

// A Row is one mechanism of a table.
type Row struct {
	Label   string
	Bench   string // result key, "set:Name/sub"
	Caesura bool
	Units   map[string]string // column head -> unit, overriding Col.Unit
	Why     string            // one sentence: why the number is what it is
}

// A Table is one measure of one class, caesura beside its peers.
type Table struct {
	Class string
	Title string
	Note  string
	Cols  []Col
	Rows  []Row
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

// scalingWorkers are the worker counts of BenchmarkScaling.
var scalingWorkers = []int{1, 2, 4, 8, 16, 32, 64}

// Classes in report order.
var classes = []string{"In-process", "File (processes of one host)", "Redis", "PostgreSQL", "etcd"}

// classPrefix maps a result-key prefix to its class, for results no table
// names.
var classPrefix = map[string]string{"mem": "In-process", "redis": "Redis", "pg": "PostgreSQL", "etcd": "etcd"}

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

func scalingRow(label, mech string, caesura bool, why string) Row {
	return Row{Label: label, Bench: "mem:Scaling/keys=%s/mech=" + mech, Caesura: caesura, Why: why}
}

// tables is the content of the report.
var tables = []Table{
	// In-process.
	{Class: "In-process", Title: "Uncontended acquire + release, one goroutine",
		Cols: []Col{lower(nsCol), bytesCol, allocsCol},
		Rows: []Row{
			{"caesura.Run (memlock)", "mem:Uncontended/caesura.Run", true, nil,
				"Run's scope around one memlock acquire: a cancellable context (for lock loss), the held list and the deferred release; those allocations and the context set-up are the gap to memlock alone."},
			{"memlock Acquire/Release", "mem:Uncontended/memlock", true, nil,
				"A hash of the key, a map lookup under one of 64 shard mutexes, and one send/receive on a pooled one-slot channel; the allocation is the Held handle."},
			{"x/sync semaphore.Weighted", "mem:Uncontended/semaphore.Weighted", false, nil,
				"A mutex-guarded counter with no waiters: no channel, no allocation."},
			{"chan struct{} (cap 1)", "mem:Uncontended/chan", false, nil,
				"One buffered send and one receive: the channel's lock twice."},
			{"sync.Mutex", "mem:Uncontended/sync.Mutex", false, nil,
				"One compare-and-swap to lock and one to unlock: the floor."},
		}},
	{Class: "In-process", Title: "Contended: 8 goroutines, one key, empty critical section (ns per acquisition)",
		Cols: []Col{lower(nsCol), allocsCol, {Head: "self-reacquire", Unit: "self-frac"}},
		Rows: []Row{
			{"caesura.Run (memlock)", "mem:Contended/caesura.Run", true, nil,
				"Each acquisition is a FIFO hand-off to a parked goroutine, so it costs a wake-up; self-reacquire is not measured because the release runs inside Run."},
			{"memlock Acquire/Release", "mem:Contended/memlock", true, nil,
				"No barging: a release hands the lock to the oldest parked waiter, and the releaser re-takes it only when nobody is parked yet (the self-reacquire shown); one park and wake-up per hand-off."},
			{"x/sync semaphore.Weighted", "mem:Contended/semaphore.Weighted", false, nil,
				"FIFO through a waiter list; every contended acquire allocates its waiter (a channel and a list element)."},
			{"chan struct{} (cap 1)", "mem:Contended/chan", false, nil,
				"FIFO through the runtime's send queue with no allocation, one wake-up per acquisition."},
			{"sync.Mutex", "mem:Contended/sync.Mutex", false, nil,
				"The releaser barges and re-takes the lock before a woken waiter runs (high self-reacquire): fastest, least fair."},
		}},
	{Class: "In-process", Title: "Hand-off: 8 workers, one key, 100 µs hold, 2000 acquisitions per run",
		Cols: handoffCols,
		Rows: []Row{
			{"caesura.Run (memlock)", "mem:HandOff/mech=caesura.Run", true, nil,
				"memlock's FIFO hand-off behind Run; the clock starts when fn returns, so part of Run's unwinding overlaps the next waiter's wake-up."},
			{"memlock Acquire/Release", "mem:HandOff/mech=memlock", true, nil,
				"The hand-off is one goroutine wake-up on a loaded 2-vCPU VM; strictly FIFO, the releaser queues behind the others."},
			{"x/sync semaphore.Weighted", "mem:HandOff/mech=semaphore.Weighted", false, nil,
				"FIFO like memlock: the release wakes the head waiter, the same wake-up cost."},
			{"chan struct{} (cap 1)", "mem:HandOff/mech=chan", false, nil,
				"FIFO through the runtime's send queue: the same wake-up cost."},
			{"sync.Mutex", "mem:HandOff/mech=sync.Mutex", false, nil,
				"Barges until a waiter has starved 1 ms, then hands off FIFO: hence its self-reacquire share and long worst wait."},
		}},
	{Class: "In-process", Title: "Eight keys taken and released by one goroutine",
		Cols: []Col{lower(nsCol), bytesCol, allocsCol},
		Rows: []Row{
			{"caesura.Run, one yield of 8 (memlock)", "mem:EightKeysMem/impl=caesura-1-yield", true, nil,
				"The yield sorts the 8 keys and takes them in that global order through memlock's batch acquire; the sort and the scope are its cost over 8 plain acquires, and what makes it deadlock-free."},
			{"memlock, 8 acquires", "mem:EightKeysMem/impl=memlock-8-acquires", true, nil,
				"Eight independent acquires and releases, one Held allocation each, in the caller's order."},
			{"sync.Mutex ×8", "mem:EightKeysMem/impl=sync.Mutex-8", false, nil,
				"Eight compare-and-swap pairs: the floor, with no ordering to prevent deadlock."},
		}},
	scalingTable(1), scalingTable(1000),
	{Class: "In-process", Title: "Scale: one million memlock keys held at once",
		Note: "Bytes per held lock are runtime.MemStats.HeapAlloc after two GCs, held minus before, over 10⁶.",
		Cols: []Col{
			{Head: "bytes per held lock", Unit: "B/held-lock", Better: -1},
			{Head: "acquire all, ms", Unit: "acquire-all-ms", Better: -1},
			{Head: "release all, ms", Unit: "release-all-ms", Better: -1},
		},
		Rows: []Row{
			{"memlock, 10⁶ Acquire calls", "mem:MemScale/impl=memlock", true, nil,
				"Per key: the Lock value from Mutex(name), the Held handle and the shard map's entry with its one-slot channel; the time is 10⁶ map inserts plus the GC work that much new heap costs."},
			{"caesura.Run, one yield of 10⁶ locks", "mem:MemScale/impl=caesura-1-yield", true, nil,
				"The yield sorts a million keys before it takes them, and the scope keeps the held list, which adds to the bytes and the time."},
		}},

	// File.
	{Class: "File (processes of one host)", Title: "Uncontended acquire + release, one goroutine",
		Cols: []Col{lower(nsCol), bytesCol, allocsCol},
		Rows: []Row{
			{"caesura.Run (filelock)", "mem:FileUncontended/impl=caesura.Run", true, nil,
				"filelock plus Run's scope."},
			{"filelock Acquire/Release", "mem:FileUncontended/impl=filelock", true, nil,
				"flock(2) on a cached descriptor plus the fencing counter kept in the lock file (a read and a pwrite per acquisition)."},
			{"flock(2) on a kept descriptor", "mem:FileUncontended/impl=flock-fd", false, nil,
				"Two system calls and nothing else: the floor, what gofrs/flock costs when one Flock value is reused."},
			{"flock(2), open per lock (gofrs/flock pattern)", "mem:FileUncontended/impl=flock-open-each", false, nil,
				"open, flock, unlock and close each time: what a gofrs/flock Flock made per use costs."},
		}},
	{Class: "File (processes of one host)", Title: "Hand-off: 8 workers with a descriptor each, one key, 100 µs hold",
		Note: "Workers are goroutines, each with its own open file description, so the kernel arbitrates as it would between processes.",
		Cols: handoffCols,
		Rows: []Row{
			{"caesura.Run (filelock, a Locker per worker)", "mem:HandOff/mech=file/caesura.Run", true, nil,
				"Waiters block in flock(2); the kernel wakes them but the releaser, still running, usually re-takes the file first: flock is not fair, and caesura cannot make it so across descriptors."},
			{"filelock (a Locker per worker)", "mem:HandOff/mech=file/filelock", true, nil,
				"The same kernel arbitration as bare flock, plus the counter read and write."},
			{"filelock (one Locker shared)", "mem:HandOff/mech=file/filelock-shared", true, nil,
				"Workers of one Locker queue FIFO in memory and only the head touches the file, so they are served in order."},
			{"flock(2) on a kept descriptor", "mem:HandOff/mech=file/flock-fd", false, nil,
				"Bare flock(2): a release wakes the waiters, the releaser barges."},
			{"flock(2), open per lock (gofrs/flock pattern)", "mem:HandOff/mech=file/flock-open-each", false, nil,
				"Bare flock plus an open and a close per cycle; the releaser barges less because its open gives waiters time to run."},
		}},

	// Redis.
	{Class: "Redis", Title: "Round trip (the unit of the rows below)",
		Cols: []Col{{Head: "µs", Unit: "ns/op", Scale: 1e-3}},
		Rows: []Row{
			{"go-redis PING", "redis:RoundTrip", false, nil, "One request and reply over loopback to the local redis-server."},
		}},
	{Class: "Redis", Title: "Uncontended acquire + release, one goroutine, distinct keys",
		Cols: []Col{{Head: "µs", Unit: "ns/op", Scale: 1e-3, Better: -1}, allocsCol, {Head: "commands", Unit: "cmds/op"}},
		Rows: []Row{
			{"caesura.Run (redislock)", "redis:Uncontended/caesura-Run", true, nil,
				"The same script calls as redislock, plus the scope's in-process work."},
			{"redislock Acquire/Release", "redis:Uncontended/caesura", true, nil,
				"One acquire script (key, fencing counter, TTL in one call) and one release script: 2 round trips."},
			{"redsync v4 (default)", "redis:Uncontended/redsync-default", false, nil,
				"SET NX with an expiry, then its release script: 2 round trips."},
			{"bsm/redislock (LinearBackoff 100 ms)", "redis:Uncontended/bsm-linear100ms", false, nil,
				"Its obtain script and its release script: 2 round trips; the retry strategy plays no part uncontended."},
		}},
	{Class: "Redis", Title: "One key, lock + release, p50 in shuffled rounds (load falls on all alike)",
		Cols: []Col{{Head: "p50 µs", Better: -1}},
		Rows: []Row{
			{"caesura.Run (redislock)", "redis:Interleaved", true, map[string]string{"p50 µs": "1key/caesura-Run-p50-µs"},
				"redislock's 2 round trips plus the scope's in-process work."},
			{"redislock Acquire/Release", "redis:Interleaved", true, map[string]string{"p50 µs": "1key/caesura-p50-µs"},
				"An acquire script and a release script: 2 round trips."},
			{"redsync v4 (default)", "redis:Interleaved", false, map[string]string{"p50 µs": "1key/redsync-p50-µs"},
				"SET NX with an expiry and a release script: 2 round trips."},
			{"bsm/redislock", "redis:Interleaved", false, map[string]string{"p50 µs": "1key/bsm-p50-µs"},
				"An obtain script and a release script: 2 round trips."},
		}},
	{Class: "Redis", Title: "Eight keys, acquire only, p50 in shuffled rounds",
		Cols: []Col{{Head: "p50 µs", Better: -1}},
		Rows: []Row{
			{"redislock AcquireBatch", "redis:Interleaved", true, map[string]string{"p50 µs": "8keys-acquire/caesura-batch-p50-µs"},
				"One script takes all 8 keys or none: 1 round trip."},
			{"redsync, 8 sequential", "redis:Interleaved", false, map[string]string{"p50 µs": "8keys-acquire/redsync-sequential-p50-µs"},
				"No multi-key primitive: 8 round trips."},
			{"bsm/redislock, 8 sequential", "redis:Interleaved", false, map[string]string{"p50 µs": "8keys-acquire/bsm-sequential-p50-µs"},
				"No multi-key primitive: 8 round trips."},
		}},
	{Class: "Redis", Title: "Eight keys acquired and released by one goroutine",
		Cols: []Col{{Head: "acquire µs", Unit: "acquire-µs", Better: -1}, {Head: "acquire + release µs", Unit: "ns/op", Scale: 1e-3, Better: -1}, {Head: "commands", Unit: "cmds/op"}},
		Rows: []Row{
			{"redislock AcquireBatch/ReleaseBatch", "redis:EightKeys/caesura-batch", true, nil,
				"One script each way: 2 round trips for 8 keys."},
			{"caesura.Run, one yield of 8 (redislock)", "redis:EightKeys/caesura-Run", true, nil,
				"The yield takes the 8 keys in one batch script and Run frees them in one (2 commands, as the batch row); the harness runs Run in a goroutine and waits on channels, which adds to the acquire time."},
			{"redsync, 8 sequential", "redis:EightKeys/redsync-default-sequential", false, nil,
				"8 acquires and 8 releases: 16 round trips."},
			{"bsm/redislock, 8 sequential", "redis:EightKeys/bsm-linear100ms-sequential", false, nil,
				"8 acquires and 8 releases: 16 round trips."},
		}},
	{Class: "Redis", Title: "Hand-off: 8 workers, one key, 100 µs hold, 2000 acquisitions per run",
		Cols: append(handoffCols[:2:2], Col{Head: "self-reacquire", Unit: "self-reacquire"}, Col{Head: "acq/s", Unit: "acq/s"},
			Col{Head: "max wait ms", Unit: "max-wait-ms"}, Col{Head: "max share / fair", Unit: "max-share/fair"}, Col{Head: "commands per acq", Unit: "cmds/acq"}),
		Rows: []Row{
			{"redislock, 8 goroutines", "redis:Contended/caesura", true, nil,
				"Waiters queue FIFO in Redis and the release hands the key to the head and publishes once, so a hand-off is about one round trip plus a push, with no polling."},
			{"redislock, 8 processes", "redis:Contended/caesura-processes", true, nil,
				"The same queue and push across 8 processes, each with its own connection and subscription."},
			{"redsync v4 (default: 32 tries, 50–250 ms random delay)", "redis:Contended/redsync-default", false, nil,
				"Polling: the releaser re-takes the key at once (self-reacquire ≈ 1), so another worker gets it only after a poll delay — the p99."},
			{"bsm/redislock LinearBackoff(100 ms) (package example)", "redis:Contended/bsm-linear100ms", false, nil,
				"Polling every 100 ms: the same barging, cross-worker hand-offs wait for the poll."},
			{"bsm/redislock LinearBackoff(1 ms) (best tuning)", "redis:Contended/bsm-linear1ms", false, nil,
				"Polling every 1 ms: fairer and faster hand-offs, paid in commands per acquisition."},
		}},

	// PostgreSQL.
	{Class: "PostgreSQL", Title: "Round trip (the unit of the rows below)",
		Cols: []Col{{Head: "µs", Unit: "ns/op", Scale: 1e-3}},
		Rows: []Row{
			{"pgx Ping (empty query)", "pg:RoundTrip", false, nil, "One request and reply over loopback to the local server."},
		}},
	{Class: "PostgreSQL", Title: "Uncontended acquire + release, one goroutine",
		Cols: []Col{{Head: "µs", Unit: "ns/op", Scale: 1e-3, Better: -1}, allocsCol},
		Rows: []Row{
			{"caesura.Run (pglock)", "pg:Uncontended/impl=caesura.Run", true, nil,
				"pglock's two statements plus the scope."},
			{"pglock Acquire/Release", "pg:Uncontended/impl=pglock", true, nil,
				"pg_advisory_lock with nextval for the fencing token in one statement, pg_advisory_unlock in another: 2 round trips, plus taking a pooled connection."},
			{"bare pg_advisory_lock/unlock, pinned connection", "pg:Uncontended/impl=bare", false, nil,
				"Two statements on a connection held for the whole run: 2 round trips, the floor."},
		}},
	{Class: "PostgreSQL", Title: "One key, lock + release, latency in alternating rounds (load falls on all alike)",
		Cols: []Col{{Head: "p50 µs", Better: -1}, {Head: "p99 µs"}},
		Rows: []Row{
			{"caesura.Run (pglock)", "pg:CompareUncontended", true, map[string]string{"p50 µs": "caesura-p50-µs", "p99 µs": "caesura-p99-µs"},
				"pglock's 2 statements plus the scope."},
			{"pglock Acquire/Release", "pg:CompareUncontended", true, map[string]string{"p50 µs": "pglock-p50-µs", "p99 µs": "pglock-p99-µs"},
				"2 statements (lock with nextval, unlock) on a pooled connection."},
			{"bare, pglock's statements on a pinned connection", "pg:CompareUncontended", false, map[string]string{"p50 µs": "bareseq-p50-µs", "p99 µs": "bareseq-p99-µs"},
				"The same 2 statements with no pool and no library: what pglock's work costs by itself."},
			{"bare pg_advisory_lock/unlock, pinned connection", "pg:CompareUncontended", false, map[string]string{"p50 µs": "bare-p50-µs", "p99 µs": "bare-p99-µs"},
				"2 round trips: the floor."},
		}},
	{Class: "PostgreSQL", Title: "Eight keys acquired and released, latency in alternating rounds",
		Cols: []Col{{Head: "p50 µs", Better: -1}, {Head: "p99 µs"}},
		Rows: []Row{
			{"caesura.Run, one yield of 8 (pglock)", "pg:CompareEightKeys", true, map[string]string{"p50 µs": "caesura1-p50-µs", "p99 µs": "caesura1-p99-µs"},
				"One statement locks the 8 keys in order, one unlocks them: 2 round trips."},
			{"pglock AcquireBatch of 8", "pg:CompareEightKeys", true, map[string]string{"p50 µs": "pglock1-p50-µs", "p99 µs": "pglock1-p99-µs"},
				"The same single statement each way, without the scope."},
			{"caesura.Run, 8 yields (pglock)", "pg:CompareEightKeys", true, map[string]string{"p50 µs": "caesura8-p50-µs", "p99 µs": "caesura8-p99-µs"},
				"A statement per yield and per release: 16 round trips."},
			{"pglock, 8 acquires", "pg:CompareEightKeys", true, map[string]string{"p50 µs": "pglock8-p50-µs", "p99 µs": "pglock8-p99-µs"},
				"16 round trips."},
			{"bare, one statement each way", "pg:CompareEightKeys", false, map[string]string{"p50 µs": "bare1-p50-µs", "p99 µs": "bare1-p99-µs"},
				"2 round trips: the floor for 8 keys."},
			{"bare, 8 statements each way", "pg:CompareEightKeys", false, map[string]string{"p50 µs": "bare8-p50-µs", "p99 µs": "bare8-p99-µs"},
				"16 round trips on one connection."},
			{"bare, 8 statements, a connection per key", "pg:CompareEightKeys", false, map[string]string{"p50 µs": "bare8conns-p50-µs", "p99 µs": "bare8conns-p99-µs"},
				"16 round trips plus taking 8 pooled connections."},
		}},
	{Class: "PostgreSQL", Title: "Eight keys acquired and released by one goroutine",
		Cols: []Col{{Head: "µs", Unit: "ns/op", Scale: 1e-3, Better: -1}, allocsCol},
		Rows: []Row{
			{"caesura.Run, one yield of 8 (pglock)", "pg:EightKeys/impl=caesura-1-yield", true, nil,
				"One statement locks the 8 keys in order and one unlocks them: 2 round trips."},
			{"caesura.Run, 8 yields (pglock)", "pg:EightKeys/impl=caesura-8-yields", true, nil,
				"A statement per yield and per release: 16 round trips."},
			{"pglock, 8 acquires", "pg:EightKeys/impl=pglock-8-acquires", true, nil,
				"A statement per acquire and per release: 16 round trips."},
			{"bare, one statement (unnest … ORDER BY)", "pg:EightKeys/impl=bare-1-statement", false, nil,
				"One statement each way: 2 round trips."},
			{"bare, 8 statements", "pg:EightKeys/impl=bare-8-statements", false, nil,
				"16 round trips."},
		}},
	{Class: "PostgreSQL", Title: "Hand-off: 8 workers, one key, 100 µs hold",
		Cols: []Col{
			{Head: "hand-off p50 µs", Unit: "handoff-p50-µs", Better: -1},
			{Head: "hand-off p99 µs", Unit: "handoff-p99-µs", Better: -1},
			{Head: "self-reacquire %", Unit: "self-reacquire-%"},
			{Head: "max share deviation %", Unit: "max-share-dev-%"},
		},
		Rows: []Row{
			{"caesura.Run (pglock)", "pg:HandOff/impl=caesura.Run", true, nil,
				"The server's lock queue wakes the next backend when the holder's unlock statement runs: about one round trip plus a backend wake-up."},
			{"pglock Acquire/Release", "pg:HandOff/impl=pglock", true, nil,
				"The same server queue, FIFO among the waiting backends; a releaser re-takes the key only when nobody is queued yet."},
			{"bare pg_advisory_lock, pinned connections", "pg:HandOff/impl=bare", false, nil,
				"The same server queue with nothing around it: the floor."},
		}},

	// etcd.
	{Class: "etcd", Title: "Server floor (embedded etcd, default fsync)",
		Cols: []Col{
			{Head: "Put p50 ms", Unit: "put-p50-ms"}, {Head: "Put p99 ms", Unit: "put-p99-ms"},
			{Head: "linearizable Get p50 ms", Unit: "get-p50-ms"}, {Head: "Get p99 ms", Unit: "get-p99-ms"},
		},
		Rows: []Row{
			{"clientv3 Put / Get", "etcd:Floor", false, nil,
				"A Put is a raft write with an fsync; a linearizable Get a ReadIndex round trip: the unit of the rows below."},
		}},
	{Class: "etcd", Title: "Uncontended acquire + release, one goroutine",
		Cols: []Col{{Head: "ms", Unit: "ns/op", Scale: 1e-6, Better: -1}, allocsCol},
		Rows: []Row{
			{"caesura.Run (etcdlock)", "etcd:Uncontended/etcdlock-Run", true, nil,
				"etcdlock's two writes plus the scope."},
			{"etcdlock Acquire/Release", "etcd:Uncontended/etcdlock", true, nil,
				"A transaction that creates the waiter key and finds it first in line, then a delete transaction: two raft writes, each with an fsync."},
			{"concurrency.Mutex Lock/Unlock", "etcd:Uncontended/Mutex", false, nil,
				"A transaction that creates its key and reads the owner, then a delete: two raft writes."},
		}},
	{Class: "etcd", Title: "Eight keys acquired and released by one goroutine",
		Cols: []Col{{Head: "acquire ms", Unit: "acquire-ms/op", Better: -1}, {Head: "acquire + release ms", Unit: "ns/op", Scale: 1e-6, Better: -1}},
		Rows: []Row{
			{"caesura.Run, one yield of 8 (etcdlock)", "etcd:EightKeys/etcdlock-yield", true, nil,
				"One transaction creates all 8 keys; the release deletes them (the second column minus the first is its cost)."},
			{"concurrency.Mutex, 8 sequential", "etcd:EightKeys/Mutex-sequential", false, nil,
				"8 Lock calls, a transaction each, then 8 deletes: 16 raft writes."},
		}},
	{Class: "etcd", Title: "Contended: 8 goroutines, one key, no hold",
		Note: "This harness (bench/etcd) has no 100 µs hold and measures the hand-off from the end of the previous critical section.",
		Cols: []Col{
			{Head: "acq/s", Unit: "acq/s", Better: 1},
			{Head: "hand-off p50 ms", Unit: "handoff-p50-ms", Better: -1},
			{Head: "hand-off p99 ms", Unit: "handoff-p99-ms", Better: -1},
			{Head: "FIFO share", Unit: "fifo-frac"},
		},
		Rows: []Row{
			{"etcdlock", "etcd:Contended/etcdlock", true, nil,
				"Each waiter watches its predecessor from a current revision, so the delete reaches it at once: a hand-off is the release write plus a watch event."},
			{"concurrency.Mutex (default)", "etcd:Contended/Mutex", false, nil,
				"Its watch starts at an old revision, which etcd serves from a 100 ms resync loop: the p99 hand-off is that loop."},
		}},
}

// scalingTable is throughput against workers on nkeys keys: the numbers of
// the charts.
func scalingTable(nkeys int) Table {
	var cols []Col
	for _, w := range scalingWorkers {
		head := fmt.Sprintf("%d workers", w)
		if w == 1 {
			head = "1 worker"
		}
		c := Col{Head: head, Unit: "acq/s", Arg: fmt.Sprintf("%d/workers=%d", nkeys, w)}
		if w == 1 || w == 8 || w == 64 { // the targets rank these three
			c.Better = 1
		}
		cols = append(cols, c)
	}
	keys := "one key"
	if nkeys > 1 {
		keys = fmt.Sprintf("%d keys, each acquisition picks one at random", nkeys)
	}
	return Table{Class: "In-process",
		Title: fmt.Sprintf("Throughput (acquisitions/s) against workers, %s, empty critical section", keys),
		Note:  "The charts below draw the same numbers; the targets rank 1, 8 and 64 workers.",
		Cols:  cols,
		Rows: []Row{
			scalingRow("caesura.Run (memlock)", "caesura.Run", true,
				"memlock plus the scope per acquisition; on one key every contended acquisition is a FIFO wake-up, on many keys most are uncontended."),
			scalingRow("memlock Acquire/Release", "memlock", true,
				"A key lookup hashes the name into one of 64 mutex-guarded shards and takes a pooled entry; on one key each contended acquisition is a FIFO wake-up, on many keys the shards spread the workers."),
			scalingRow("x/sync semaphore.Weighted", "semaphore.Weighted", false,
				"No shared map (one semaphore per key), FIFO waiters: wake-ups on one key, near-uncontended on many."),
			scalingRow("chan struct{} (cap 1)", "chan", false,
				"One channel per key, FIFO wake-ups, no allocation."),
			scalingRow("sync.Mutex", "sync.Mutex", false,
				"Spinning and barging keep the lock on a running goroutine: highest throughput, unfair."),
		}}
}
