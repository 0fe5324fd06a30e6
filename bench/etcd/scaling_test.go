package etcdbench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/etcdlock"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// scalingWorkers are the worker counts of the throughput curves, as in the
// in-process ones (bench/scaling_test.go).
var scalingWorkers = []int{1, 2, 4, 8, 16, 32, 64}

// scalingMech is one way to take key k of nkeys: op(ctx, w, k) is worker
// w's lock and unlock of key k, with an empty critical section. prefix is
// unique to the point.
type scalingMech struct {
	name string
	make func(tb testing.TB, env *scalingEnv, prefix string, workers, nkeys int) func(ctx context.Context, w, k int) error
}

// scalingEnv is what the points of one sweep share: one client, one
// concurrency.Session per worker (a Mutex is reentrant within a session, so
// every worker needs its own), and one etcdlock Locker (one session, shared
// by the goroutines of one program). Making 64 sessions per point would
// cost more than the point.
type scalingEnv struct {
	c        *clientv3.Client
	sessions []*concurrency.Session
	locker   *etcdlock.Locker
}

func newScalingEnv(tb testing.TB, workers int) *scalingEnv {
	env := &scalingEnv{c: newClient(tb)}
	for range workers {
		s, err := concurrency.NewSession(env.c, concurrency.WithTTL(10))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = s.Close() })
		env.sessions = append(env.sessions, s)
	}
	l, err := etcdlock.New(env.c, etcdlock.WithPrefix("/bench/scaling/"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = l.Close(context.Background()) })
	env.locker = l
	return env
}

// etcdlockLocks returns the point's nkeys locks of the shared Locker.
func etcdlockLocks(env *scalingEnv, prefix string, nkeys int) []caesura.Lock {
	locks := make([]caesura.Lock, nkeys)
	for k := range locks {
		locks[k] = env.locker.Mutex(fmt.Sprintf("%sk%d", prefix, k))
	}
	return locks
}

var scalingMechs = []scalingMech{
	{"Mutex", func(_ testing.TB, env *scalingEnv, prefix string, workers, nkeys int) func(context.Context, int, int) error {
		// Worker w's Mutex on key k, made on first use: 64 workers on
		// 1,000 keys only make the ones they touch. Only worker w reads
		// or writes ms[w], so it needs no lock.
		ms := make([][]*concurrency.Mutex, workers)
		for w := range ms {
			ms[w] = make([]*concurrency.Mutex, nkeys)
		}
		return func(ctx context.Context, w, k int) error {
			m := ms[w][k]
			if m == nil {
				m = concurrency.NewMutex(env.sessions[w], fmt.Sprintf("%smutex/k%d", prefix, k))
				ms[w][k] = m
			}
			if err := m.Lock(ctx); err != nil {
				return err
			}
			return m.Unlock(ctx)
		}
	}},
	{"etcdlock", func(_ testing.TB, env *scalingEnv, prefix string, _, nkeys int) func(context.Context, int, int) error {
		locks := etcdlockLocks(env, prefix, nkeys)
		return func(ctx context.Context, _, k int) error {
			h, err := locks[k].Acquire(ctx)
			if err != nil {
				return err
			}
			return h.Release(ctx)
		}
	}},
	{"etcdlock-Run", func(_ testing.TB, env *scalingEnv, prefix string, _, nkeys int) func(context.Context, int, int) error {
		locks := etcdlockLocks(env, prefix, nkeys)
		fns := make([]func(context.Context, caesura.Yield) error, nkeys)
		for k, l := range locks {
			fns[k] = func(ctx context.Context, yield caesura.Yield) error { return yield(l) }
		}
		return func(ctx context.Context, _, k int) error { return caesura.Run(ctx, fns[k]) }
	}},
}

// BenchmarkScaling is throughput against the number of workers (goroutines
// of one program) on one key and on 1,000 keys, each acquisition picking a
// key at random, with an empty critical section: etcdlock and caesura.Run
// against concurrency.Mutex with a session per worker. Exactly `workers`
// goroutines share b.N acquisitions; acq/s is b.N over the wall time. Run
// with a fixed count (-benchtime 200x) so that a whole sweep stays bounded:
// concurrency.Mutex on one key hands over about 10 times a second per
// worker.
func BenchmarkScaling(b *testing.B) {
	env := newScalingEnv(b, scalingWorkers[len(scalingWorkers)-1])
	for _, nkeys := range []int{1, 1000} {
		for _, w := range scalingWorkers {
			for _, m := range scalingMechs {
				b.Run(fmt.Sprintf("keys=%d/workers=%d/mech=%s", nkeys, w, m.name), func(b *testing.B) {
					throughput(b, w, nkeys, m.make(b, env, prefix(b), w, nkeys))
				})
			}
		}
	}
}

// throughput runs b.N acquisitions shared by exactly workers goroutines, the
// key of each drawn at random from nkeys, and reports acq/s.
func throughput(b *testing.B, workers, nkeys int, op func(ctx context.Context, w, k int) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		left    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)
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
					errOnce.Do(func() { runErr = err })
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

// TestScalingMechs runs every mechanism of BenchmarkScaling briefly with 3
// workers on 2 keys.
func TestScalingMechs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env := newScalingEnv(t, 3)
	for _, m := range scalingMechs {
		t.Run(m.name, func(t *testing.T) {
			op := m.make(t, env, "/test/"+m.name+"/", 3, 2)
			var wg sync.WaitGroup
			errs := make([]error, 3)
			for w := range 3 {
				wg.Go(func() {
					for i := range 4 {
						if err := op(ctx, w, (w+i)%2); err != nil {
							errs[w] = err
							return
						}
					}
				})
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
		})
	}
}
