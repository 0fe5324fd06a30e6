package bench

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sync/semaphore"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// locker is one in-process mechanism under test.
type locker struct {
	name    string
	acquire func(ctx context.Context) func() // returns the release
}

func mechanisms() []locker {
	ml := memlock.New(memlock.Options{})
	l := ml.Mutex("k")
	sem := semaphore.NewWeighted(1)
	ch := make(chan struct{}, 1)
	var mu sync.Mutex
	return []locker{
		{"memlock", func(ctx context.Context) func() {
			h, err := l.Acquire(ctx)
			if err != nil {
				panic(err)
			}
			return func() { _ = h.Release(ctx) }
		}},
		{"semaphore.Weighted", func(ctx context.Context) func() {
			if err := sem.Acquire(ctx, 1); err != nil {
				panic(err)
			}
			return func() { sem.Release(1) }
		}},
		{"chan", func(ctx context.Context) func() {
			select {
			case ch <- struct{}{}:
			case <-ctx.Done():
				panic(ctx.Err())
			}
			return func() { <-ch }
		}},
		{"sync.Mutex", func(context.Context) func() { mu.Lock(); return mu.Unlock }},
	}
}

// BenchmarkUncontended: acquire and release of one key by one goroutine.
// "caesura.Run" is Run + one yield + release on memlock.
func BenchmarkUncontended(b *testing.B) {
	ctx := context.Background()
	ml := memlock.New(memlock.Options{})
	l := ml.Mutex("k")
	fn := func(ctx context.Context, yield caesura.Yield) error { return yield(l) }
	b.Run("caesura.Run", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := caesura.Run(ctx, fn); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, m := range mechanisms() {
		b.Run(m.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.acquire(ctx)()
			}
		})
	}
}

const contenders = 8

// BenchmarkContended: 8 goroutines, one key, zero hold; ns/op is wall time per
// acquisition. Also reports the share of acquisitions that went back to the
// goroutine that released last (self-reacquire) and that did not overtake a
// call started earlier (fifo).
func BenchmarkContended(b *testing.B) {
	ctx := context.Background()
	ml := memlock.New(memlock.Options{})
	l := ml.Mutex("k")
	fn := func(ctx context.Context, yield caesura.Yield) error { return yield(l) }
	run := locker{"caesura.Run", func(ctx context.Context) func() {
		if err := caesura.Run(ctx, fn); err != nil {
			panic(err)
		}
		return func() {}
	}}
	for _, m := range append(mechanisms(), run) {
		b.Run(m.name, func(b *testing.B) {
			var calls, order atomic.Int64
			var last, self, inOrder, prevStart atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(max(1, contenders/runtime.GOMAXPROCS(0)))
			var ids atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				id := ids.Add(1)
				for pb.Next() {
					start := calls.Add(1)
					release := m.acquire(ctx)
					if m.name != "caesura.Run" { // Run has released already
						order.Add(1)
						if last.Swap(id) == id {
							self.Add(1)
						}
						if prevStart.Swap(start) < start {
							inOrder.Add(1)
						}
					}
					release()
				}
			})
			if n := order.Load(); n > 0 {
				b.ReportMetric(float64(self.Load())/float64(n), "self-frac")
				b.ReportMetric(float64(inOrder.Load())/float64(n), "fifo-frac")
			}
		})
	}
}
