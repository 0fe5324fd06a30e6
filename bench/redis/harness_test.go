package redisbench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"

	"github.com/caesura-go/caesura/internal/testredis"
)

// server is a redis-server of the benchmark's own on an ephemeral port
// (internal/testredis); with REDISBENCH_SERVER=valkey-server, a Valkey.
type server struct {
	addr string
}

func startServer(tb testing.TB) *server {
	tb.Helper()
	o := testredis.Options{Why: "the Redis benchmarks", Bin: os.Getenv("REDISBENCH_SERVER")}
	return &server{addr: testredis.Start(tb, o).Addr()}
}

// counter counts the commands a client sends (a pipeline counts each), and
// remembers their names.
type counter struct {
	n     atomic.Int64
	mu    sync.Mutex
	names map[string]bool // lower case
}

func (c *counter) add(name string, n int) {
	c.n.Add(int64(n))
	name = strings.ToLower(name)
	c.mu.Lock()
	if !c.names[name] {
		if c.names == nil {
			c.names = map[string]bool{}
		}
		c.names[name] = true
	}
	c.mu.Unlock()
}

// commands returns the names of the commands counted.
func (c *counter) commands() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for name := range c.names {
		out = append(out, name)
	}
	return out
}

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch cmd.Name() {
		case "hello", "client", "ping":
		default:
			c.add(cmd.Name(), 1)
		}
		return next(ctx, cmd)
	}
}
func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			c.add(cmd.Name(), 1)
		}
		return next(ctx, cmds)
	}
}

func (s *server) client(tb testing.TB, cnt *counter) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.addr, PoolSize: 32})
	if cnt != nil {
		c.AddHook(cnt)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// commandUsec returns the server's total time (µs) in each command, from
// INFO commandstats. Commands called from a script count in their own
// entry too, so add up only the commands a client sent itself.
func commandUsec(tb testing.TB, c *redis.Client) map[string]int64 {
	tb.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_")
		if !ok {
			continue
		}
		name, stats, _ := strings.Cut(rest, ":")
		for _, f := range strings.Split(stats, ",") {
			if v, ok := strings.CutPrefix(f, "usec="); ok {
				out[name], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return out
}

// serverMicros reports the server time per op (µs) that the commands in
// cnt took between the two commandUsec readings.
func serverMicros(before, after map[string]int64, cnt *counter, ops int) float64 {
	var us int64
	for _, name := range cnt.commands() {
		us += after[name] - before[name]
	}
	return float64(us) / float64(ops)
}

// mono is CLOCK_MONOTONIC in ns: comparable across processes.
func mono() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// record is one acquisition: worker, lock call start and return, unlock
// call start and return (mono ns).
type record struct {
	w                           int
	lock, got, unlock, unlocked int64
}

func (r record) String() string {
	return fmt.Sprintf("%d %d %d %d %d", r.w, r.lock, r.got, r.unlock, r.unlocked)
}

func parseRecord(s string) (record, bool) {
	f := strings.Fields(s)
	if len(f) != 5 {
		return record{}, false
	}
	var v [5]int64
	for i := range f {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return record{}, false
		}
		v[i] = n
	}
	return record{int(v[0]), v[1], v[2], v[3], v[4]}, true
}

// stats are the contention measures of measured-peers.md.
type stats struct {
	acqPerSec              float64
	handoffP50, handoffP99 time.Duration // to a different worker
	allP50                 time.Duration
	selfFrac               float64
	waitMax                time.Duration
	minShare, maxShare     int
	maxShareRatio          float64
	n                      int
}

func analyze(rs []record, workers int) stats {
	slices.SortFunc(rs, func(a, b record) int { return int(a.got - b.got) })
	var other, all []time.Duration
	self := 0
	per := make([]int, workers)
	var waitMax time.Duration
	for i, r := range rs {
		per[r.w]++
		waitMax = max(waitMax, time.Duration(r.got-r.lock))
		if i == 0 {
			continue
		}
		d := time.Duration(r.got - rs[i-1].unlock)
		all = append(all, d)
		if r.w == rs[i-1].w {
			self++
		} else {
			other = append(other, d)
		}
	}
	pct := func(ds []time.Duration, p float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		slices.Sort(ds)
		return ds[min(len(ds)-1, int(p*float64(len(ds))))]
	}
	st := stats{n: len(rs), handoffP50: pct(other, 0.5), handoffP99: pct(other, 0.99), allP50: pct(all, 0.5),
		selfFrac: float64(self) / float64(max(1, len(rs)-1)), waitMax: waitMax,
		minShare: slices.Min(per), maxShare: slices.Max(per)}
	st.maxShareRatio = float64(st.maxShare) / (float64(len(rs)) / float64(workers))
	if len(rs) > 1 {
		st.acqPerSec = float64(len(rs)-1) / time.Duration(rs[len(rs)-1].got-rs[0].got).Seconds()
	}
	return st
}

func (st stats) report(b *testing.B, cmdsPerAcq float64) {
	b.ReportMetric(st.acqPerSec, "acq/s")
	b.ReportMetric(float64(st.handoffP50.Microseconds()), "handoff-other-p50-µs")
	b.ReportMetric(float64(st.handoffP99.Microseconds()), "handoff-other-p99-µs")
	b.ReportMetric(st.selfFrac, "self-reacquire")
	b.ReportMetric(float64(st.waitMax.Microseconds())/1000, "max-wait-ms")
	b.ReportMetric(st.maxShareRatio, "max-share/fair")
	b.ReportMetric(cmdsPerAcq, "cmds/acq")
	b.Logf("%d acquisitions, per worker %d-%d, all hand-offs p50 %v", st.n, st.minShare, st.maxShare, st.allP50)
}

// readRecords reads worker output lines until EOF.
func readRecords(sc *bufio.Scanner, out *[]record, cmds *int64) {
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "cmds "); ok {
			n, _ := strconv.ParseInt(rest, 10, 64)
			*cmds += n
			continue
		}
		if r, ok := parseRecord(line); ok {
			*out = append(*out, r)
		}
	}
}
