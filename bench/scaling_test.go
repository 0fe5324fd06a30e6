package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sync/semaphore"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

// keyedMech is an in-process mechanism over a set of keys: do runs one
// acquire+release of key k with an empty critical section.
type keyedMech struct {
	name string
	// make returns the operation on nkeys keys, shared by every worker.
	make func(nkeys int) func(ctx context.Context, k int)
}

func keyedMechs() []keyedMech {
	return []keyedMech{
		{"caesura.Run", func(n int) func(context.Context, int) {
			ls := memlock.New(memlock.Options{})
			fns := make([]func(context.Context, caesura.Yield) error, n)
			for i := range fns {
				l := ls.Mutex(fmt.Sprint("k", i))
				fns[i] = func(ctx context.Context, yield caesura.Yield) error { return yield(l) }
			}
			return func(ctx context.Context, k int) {
				if err := caesura.Run(ctx, fns[k]); err != nil {
					panic(err)
				}
			}
		}},
		{"memlock", func(n int) func(context.Context, int) {
			ls := memlock.New(memlock.Options{})
			locks := make([]caesura.Lock, n)
			for i := range locks {
				locks[i] = ls.Mutex(fmt.Sprint("k", i))
			}
			return func(ctx context.Context, k int) {
				h, err := locks[k].Acquire(ctx)
				if err != nil {
					panic(err)
				}
				_ = h.Release(ctx)
			}
		}},
		{"semaphore.Weighted", func(n int) func(context.Context, int) {
			ss := make([]*semaphore.Weighted, n)
			for i := range ss {
				ss[i] = semaphore.NewWeighted(1)
			}
			return func(ctx context.Context, k int) {
				if err := ss[k].Acquire(ctx, 1); err != nil {
					panic(err)
				}
				ss[k].Release(1)
			}
		}},
		{"chan", func(n int) func(context.Context, int) {
			cs := make([]chan struct{}, n)
			for i := range cs {
				cs[i] = make(chan struct{}, 1)
			}
			return func(ctx context.Context, k int) {
				select {
				case cs[k] <- struct{}{}:
				case <-ctx.Done():
					panic(ctx.Err())
				}
				<-cs[k]
			}
		}},
		{"sync.Mutex", func(n int) func(context.Context, int) {
			ms := make([]sync.Mutex, n)
			return func(_ context.Context, k int) {
				ms[k].Lock()
				ms[k].Unlock() //nolint:staticcheck // an empty critical section is the point
			}
		}},
	}
}

// scalingWorkers are the worker counts of the throughput curves.
var scalingWorkers = []int{1, 2, 4, 8, 16, 32, 64}

// BenchmarkScaling is throughput against the number of workers, on one key
// and on 1,000 keys (each acquisition picks a key at random), with an empty
// critical section. Exactly `workers` goroutines share b.N acquisitions;
// acq/s is b.N over the wall time.
func BenchmarkScaling(b *testing.B) {
	for _, nkeys := range []int{1, 1000} {
		for _, w := range scalingWorkers {
			for _, m := range keyedMechs() {
				b.Run(fmt.Sprintf("keys=%d/workers=%d/mech=%s", nkeys, w, m.name), func(b *testing.B) {
					op := m.make(nkeys)
					throughput(b, w, nkeys, func(ctx context.Context, _, k int) { op(ctx, k) })
				})
			}
		}
	}
}

// throughput runs b.N acquisitions shared by exactly workers goroutines;
// worker w's acquisition of key k is op(ctx, w, k), and the key is drawn at
// random from nkeys. It reports acq/s, b.N over the wall time.
func throughput(b *testing.B, workers, nkeys int, op func(ctx context.Context, w, k int)) {
	ctx := context.Background()
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	b.ReportAllocs()
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
				op(ctx, g, k)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acq/s")
}

// BenchmarkEightKeysMem: eight free keys taken and released by one
// goroutine: one caesura yield of eight memlock locks against eight memlock
// acquires in sequence and eight sync.Mutexes.
func BenchmarkEightKeysMem(b *testing.B) {
	ctx := context.Background()
	ls := memlock.New(memlock.Options{})
	locks := make([]caesura.Lock, 8)
	for i := range locks {
		locks[i] = ls.Mutex(fmt.Sprint("e", i))
	}
	b.Run("impl=caesura-1-yield", func(b *testing.B) {
		fn := func(ctx context.Context, yield caesura.Yield) error { return yield(locks...) }
		b.ReportAllocs()
		for b.Loop() {
			if err := caesura.Run(ctx, fn); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=memlock-8-acquires", func(b *testing.B) {
		hs := make([]caesura.Held, len(locks))
		b.ReportAllocs()
		for b.Loop() {
			for i, l := range locks {
				h, err := l.Acquire(ctx)
				if err != nil {
					b.Fatal(err)
				}
				hs[i] = h
			}
			for i := len(hs) - 1; i >= 0; i-- {
				_ = hs[i].Release(ctx)
			}
		}
	})
	b.Run("impl=sync.Mutex-8", func(b *testing.B) {
		var ms [8]sync.Mutex
		b.ReportAllocs()
		for b.Loop() {
			for i := range ms {
				ms[i].Lock()
			}
			for i := len(ms) - 1; i >= 0; i-- {
				ms[i].Unlock()
			}
		}
	})
}
