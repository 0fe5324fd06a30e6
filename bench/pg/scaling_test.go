package pg

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caesura-go/caesura"
	"github.com/jackc/pgx/v5/pgxpool"
)

// scalingWorkers are the worker counts of the throughput curves, as in the
// in-process ones (bench/scaling_test.go). 64 workers hold 64 server
// connections at once: the server needs max_connections above 70.
var scalingWorkers = []int{1, 2, 4, 8, 16, 32, 64}

// scalingMech is one way to take key k of nkeys: op(ctx, w, k) is worker
// w's lock and unlock of key k, with an empty critical section.
type scalingMech struct {
	name string
	make func(tb testing.TB, pool *pgxpool.Pool, workers, nkeys int) (op func(ctx context.Context, w, k int) error, done func())
}

var scalingMechs = []scalingMech{
	{"bare", func(tb testing.TB, pool *pgxpool.Pool, workers, _ int) (func(context.Context, int, int) error, func()) {
		// Each worker pins a connection for the whole run: the best case
		// of bare advisory locks, with no pool in the way.
		conns := make([]*pgxpool.Conn, workers)
		for w := range conns {
			c, err := pool.Acquire(context.Background())
			if err != nil {
				tb.Fatal(err)
			}
			conns[w] = c
		}
		return func(ctx context.Context, w, k int) error {
				id := int64(0x5eed_6000 + k)
				if _, err := conns[w].Exec(ctx, `SELECT pg_advisory_lock($1)`, id); err != nil {
					return err
				}
				_, err := conns[w].Exec(ctx, `SELECT pg_advisory_unlock($1)`, id)
				return err
			}, func() {
				for _, c := range conns {
					c.Release()
				}
			}
	}},
	{"pglock", func(tb testing.TB, pool *pgxpool.Pool, _, nkeys int) (func(context.Context, int, int) error, func()) {
		locks := scalingLocks(tb, pool, nkeys)
		return func(ctx context.Context, _, k int) error {
			h, err := locks[k].Acquire(ctx)
			if err != nil {
				return err
			}
			return h.Release(ctx)
		}, func() {}
	}},
	{"caesura.Run", func(tb testing.TB, pool *pgxpool.Pool, _, nkeys int) (func(context.Context, int, int) error, func()) {
		locks := scalingLocks(tb, pool, nkeys)
		fns := make([]func(context.Context, caesura.Yield) error, nkeys)
		for k, l := range locks {
			fns[k] = func(ctx context.Context, yield caesura.Yield) error { return yield(l) }
		}
		return func(ctx context.Context, _, k int) error { return caesura.Run(ctx, fns[k]) }, func() {}
	}},
}

// scalingLocks returns nkeys pglock locks of one Locker: one program's
// goroutines sharing it.
func scalingLocks(tb testing.TB, pool *pgxpool.Pool, nkeys int) []caesura.Lock {
	l := newLocker(tb, pool)
	locks := make([]caesura.Lock, nkeys)
	for k := range locks {
		locks[k] = l.Mutex(fmt.Sprint("s", k))
	}
	return locks
}

// BenchmarkScaling is throughput against the number of workers (goroutines
// of one program) on one key and on 1,000 keys, each acquisition picking a
// key at random, with an empty critical section: pglock and caesura.Run
// against bare advisory locks, each worker of which pins a connection.
// Exactly `workers` goroutines share b.N acquisitions; acq/s is b.N over
// the wall time. Run with a fixed count (-benchtime 200x) so that a whole
// sweep stays bounded.
func BenchmarkScaling(b *testing.B) {
	// One pool for the whole sweep: opening 64 connections per point would
	// cost more than the point. pglock pins a connection per waiting or
	// held acquisition, so 64 workers need 64 of them.
	pool := newPool(b, scalingWorkers[len(scalingWorkers)-1]+2)
	for _, nkeys := range []int{1, 1000} {
		for _, w := range scalingWorkers {
			for _, m := range scalingMechs {
				b.Run(fmt.Sprintf("keys=%d/workers=%d/mech=%s", nkeys, w, m.name), func(b *testing.B) {
					op, done := m.make(b, pool, w, nkeys)
					defer done()
					throughput(b, w, nkeys, op)
				})
			}
		}
	}
}

// throughput runs b.N acquisitions shared by exactly workers goroutines, the
// key of each drawn at random from nkeys, and reports acq/s. Every worker
// makes one acquisition before the clock starts (connections, statement
// caches).
func throughput(b *testing.B, workers, nkeys int, op func(ctx context.Context, w, k int) error) {
	ctx := context.Background()
	var (
		left    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)
	fail := func(err error) { errOnce.Do(func() { runErr = err }) }
	for w := range workers {
		wg.Go(func() {
			if err := op(ctx, w, w%nkeys); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	if runErr != nil {
		b.Fatal(runErr)
	}
	left.Store(int64(b.N))
	b.ResetTimer()
	for g := range workers {
		wg.Go(func() {
			x := uint64(g)*0x9e3779b97f4a7c15 + 1
			for left.Add(-1) >= 0 {
				k := 0
				if nkeys > 1 {
					x ^= x << 13 // xorshift: cheap and per goroutine
					x ^= x >> 7
					x ^= x << 17
					k = int(x % uint64(nkeys))
				}
				if err := op(ctx, g, k); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if runErr != nil {
		b.Fatal(runErr)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acq/s")
}

// TestScalingMechs runs every mechanism of BenchmarkScaling briefly with 4
// workers on 3 keys.
func TestScalingMechs(t *testing.T) {
	pool := newPool(t, 6)
	ctx := context.Background()
	for _, m := range scalingMechs {
		t.Run(m.name, func(t *testing.T) {
			op, done := m.make(t, pool, 4, 3)
			defer done()
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for w := range 4 {
				wg.Go(func() {
					for i := range 20 {
						if err := op(ctx, w, (w+i)%3); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		})
	}
}
