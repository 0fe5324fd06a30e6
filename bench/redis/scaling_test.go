package redisbench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bsm "github.com/bsm/redislock"
	"github.com/caesura-go/caesura"
	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"

	"github.com/caesura-go/caesura/redislock"
)

// scalingWorkers are the worker counts of the throughput curves, as in
// bench/scaling_test.go and bench/pg.
var scalingWorkers = []int{1, 2, 4, 8, 16, 32, 64}

// scalingCap bounds one point of BenchmarkScaling. The polling peers with
// their default tuning (redsync's 50-250 ms retry delays, bsm's 100 ms
// backoff) hand one key to another worker only when a poll happens to find
// it free, so a point of them could take minutes: at the cap the run stops,
// lock calls still waiting are cancelled and not counted, and the point
// reports the acquisitions made so far over the time taken (done-frac < 1).
const scalingCap = 5 * time.Second

// scalingOp is one acquisition of key k, held while section(k) runs, then
// released. The release is not cancelled with ctx.
type scalingOp func(ctx context.Context, k int) error

// A scalingMech makes the scalingOp of one library on the key names keys,
// for goroutines of one program: every worker shares the one client c (and
// the one Locker, redsync or rueidislock instance made on it), whose
// commands cnt counts.
type scalingMech struct {
	name string
	make func(tb testing.TB, c *redis.Client, cnt *counter, keys []string, section func(k int)) scalingOp
}

// scalingMechs are the mechanisms of BenchmarkScaling: caesura.Run and
// every impl of bench_test.go, under the impls' names.
func scalingMechs() []scalingMech {
	ms := []scalingMech{{"caesura-Run", func(tb testing.TB, c *redis.Client, _ *counter, keys []string, section func(int)) scalingOp {
		rl, err := redislock.New(c, &redislock.Options{TTL: ttl})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { rl.Close() })
		fns := make([]func(context.Context, caesura.Yield) error, len(keys))
		for k, key := range keys {
			l := rl.Mutex(key)
			fns[k] = func(ctx context.Context, yield caesura.Yield) error {
				if err := yield(l); err != nil {
					return err
				}
				section(k)
				return nil
			}
		}
		return func(ctx context.Context, k int) error { return caesura.Run(ctx, fns[k]) }
	}}}
	for _, im := range impls {
		ms = append(ms, scalingMech{im.name, func(tb testing.TB, c *redis.Client, cnt *counter, keys []string, section func(int)) scalingOp {
			lock := im.make(tb, c, cnt)
			return func(ctx context.Context, k int) error {
				unlock, err := lock(ctx, keys[k])
				if err != nil {
					return err
				}
				section(k)
				return unlock(context.WithoutCancel(ctx))
			}
		}})
	}
	return ms
}

// gaveUp reports whether err is a peer's lock call giving up on a key that
// stays taken (redsync after its tries, bsm/redislock at its deadline): a
// program would call it again, and so does the benchmark.
func gaveUp(err error) bool {
	var taken *redsync.ErrTaken
	var nodeTaken *redsync.ErrNodeTaken
	return errors.Is(err, redsync.ErrFailed) || errors.Is(err, bsm.ErrNotObtained) ||
		errors.As(err, &taken) || errors.As(err, &nodeTaken)
}

// scalingResult is what one run of scalingRun did.
type scalingResult struct {
	done, gaveUp, violations int64
	elapsed                  time.Duration
	capped                   bool
}

// scalingRun makes n acquisitions shared by exactly workers goroutines, the
// key of each drawn at random from the first nkeys of op's keys, and stops
// early when limit passes. Every worker first takes key nkeys+w once,
// untimed (connections, scripts, subscriptions). Each acquisition checks
// that nobody else holds its key. reset runs after the warm-up, before the
// clock starts.
func scalingRun(workers, nkeys, n int, limit time.Duration, newOp func(section func(k int)) scalingOp, reset func()) (scalingResult, error) {
	inSection := make([]atomic.Int32, nkeys+workers)
	var violations atomic.Int64
	op := newOp(func(k int) {
		if inSection[k].Add(1) != 1 {
			violations.Add(1)
		}
		inSection[k].Add(-1)
	})
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)
	fail := func(err error) { errOnce.Do(func() { runErr = err }) }
	for w := range workers {
		wg.Go(func() {
			if err := op(context.Background(), nkeys+w); err != nil {
				fail(fmt.Errorf("warm-up: %w", err))
			}
		})
	}
	wg.Wait()
	if runErr != nil {
		return scalingResult{}, runErr
	}
	reset()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var left, done, gave atomic.Int64
	left.Store(int64(n))
	t0 := time.Now()
	for g := range workers {
		wg.Go(func() {
			x := uint64(g)*0x9e3779b97f4a7c15 + 1
			for ctx.Err() == nil && left.Add(-1) >= 0 {
				k := 0
				if nkeys > 1 {
					x ^= x << 13 // xorshift: cheap and per goroutine
					x ^= x >> 7
					x ^= x << 17
					k = int(x % uint64(nkeys))
				}
				for {
					err := op(ctx, k)
					if err == nil {
						done.Add(1)
						break
					}
					if ctx.Err() != nil { // the cap: a call cut short is not counted
						return
					}
					if !gaveUp(err) {
						fail(err)
						cancel()
						return
					}
					gave.Add(1)
				}
			}
		})
	}
	wg.Wait()
	r := scalingResult{done: done.Load(), gaveUp: gave.Load(), violations: violations.Load(),
		elapsed: time.Since(t0), capped: done.Load() < int64(n)}
	if runErr != nil {
		return r, runErr
	}
	if r.violations > 0 {
		return r, fmt.Errorf("%d acquisitions found their key held by another worker", r.violations)
	}
	return r, nil
}

// BenchmarkScaling is throughput against the number of workers (goroutines
// of one program sharing one client and one Locker) on one key and on 1,000
// keys, each acquisition picking a key at random, with an empty critical
// section: redislock and caesura.Run against every peer. Exactly `workers`
// goroutines share b.N acquisitions; acq/s is the acquisitions made over the
// wall time, cmds/acq the commands the client sent per acquisition (for
// redsync, a failed try sends 2). A point stops at scalingCap (see there):
// done-frac is the share of b.N made by then, 1 when the run finished. A
// peer's lock call that gives up is called again, counted in gave-up/acq.
// Run with a fixed count (-benchtime 200x) so that a sweep stays bounded.
func BenchmarkScaling(b *testing.B) {
	s := startServer(b)
	for _, nkeys := range []int{1, 1000} {
		for _, w := range scalingWorkers {
			for _, m := range scalingMechs() {
				b.Run(fmt.Sprintf("keys=%d/workers=%d/mech=%s", nkeys, w, m.name), func(b *testing.B) {
					cnt := &counter{}
					// A pool at least as large as the workers: it is not what
					// is measured. Fresh key names per run: a cancelled peer
					// call may leave its key until the TTL.
					c := redis.NewClient(&redis.Options{Addr: s.addr, PoolSize: w + 2})
					c.AddHook(cnt)
					b.Cleanup(func() { c.Close() })
					keys := make([]string, nkeys+w)
					run := strconv.FormatInt(time.Now().UnixNano(), 36)
					for k := range keys {
						keys[k] = "s:" + run + ":" + strconv.Itoa(k)
					}
					mk := func(section func(int)) scalingOp { return m.make(b, c, cnt, keys, section) }
					r, err := scalingRun(w, nkeys, b.N, scalingCap, mk, func() { cnt.n.Store(0); b.ResetTimer() })
					b.StopTimer()
					if err != nil {
						b.Fatal(err)
					}
					if r.done == 0 {
						b.Fatalf("no acquisition within %v", scalingCap)
					}
					b.ReportMetric(float64(r.done)/r.elapsed.Seconds(), "acq/s")
					b.ReportMetric(float64(r.elapsed.Nanoseconds())/float64(r.done), "ns/op")
					b.ReportMetric(float64(cnt.n.Load())/float64(r.done), "cmds/acq")
					b.ReportMetric(float64(r.done)/float64(b.N), "done-frac")
					if r.gaveUp > 0 {
						b.ReportMetric(float64(r.gaveUp)/float64(r.done), "gave-up/acq")
					}
				})
			}
		}
	}
}

// TestScalingMechs runs every mechanism of BenchmarkScaling briefly: 4
// workers on 3 keys, every acquisition made, none overlapping another on
// its key.
func TestScalingMechs(t *testing.T) {
	s := startServer(t)
	for _, m := range scalingMechs() {
		t.Run(m.name, func(t *testing.T) {
			keys := []string{"t:" + m.name + ":0", "t:" + m.name + ":1", "t:" + m.name + ":2"}
			for w := range 4 {
				keys = append(keys, fmt.Sprintf("t:%s:warm%d", m.name, w))
			}
			c := s.client(t, nil)
			mk := func(section func(int)) scalingOp { return m.make(t, c, &counter{}, keys, section) }
			r, err := scalingRun(4, 3, 40, time.Minute, mk, func() {})
			if err != nil {
				t.Fatal(err)
			}
			if r.done != 40 {
				t.Fatalf("got %d acquisitions, want 40", r.done)
			}
		})
	}
}
