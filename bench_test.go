package caesura_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

// BenchmarkUncontended compares one Run with one yield on the memory backend
// with the bare backend's acquire and release of the same Lock value.
func BenchmarkUncontended(b *testing.B) {
	ctx := context.Background()
	l := memlock.New(memlock.Options{}).Mutex("k")
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h, err := l.Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := h.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	fn := func(ctx context.Context, yield caesura.Yield) error { return yield(l) }
	b.Run("run", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := caesura.Run(ctx, fn); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same two with the lock named inside the loop, as the README's
	// example does (locks.Mutex("user:" + id) on every call).
	ml := memlock.New(memlock.Options{})
	b.Run("bare-named", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h, err := ml.Mutex("k").Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := h.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	named := func(ctx context.Context, yield caesura.Yield) error { return yield(ml.Mutex("k")) }
	b.Run("run-named", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := caesura.Run(ctx, named); err != nil {
				b.Fatal(err)
			}
		}
	})
	ser := caesura.Serialize(func(ctx context.Context, yield caesura.Yield, l caesura.Lock) (int, error) {
		return 1, yield(l)
	})
	b.Run("serialize", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ser(ctx, l); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// contenders is the number of goroutines of the contended benchmarks.
const contenders = 8

func parallelism() int { return max(1, contenders/runtime.GOMAXPROCS(0)) }

// BenchmarkContended: 8 goroutines, one key, zero hold. ns/op is wall time
// per acquisition. The channel lock is the FIFO reference from x/sync's own
// benchmarks; semaphore.Weighted runs beside it in the bench module.
func BenchmarkContended(b *testing.B) {
	ctx := context.Background()
	b.Run("memlock", func(b *testing.B) {
		l := memlock.New(memlock.Options{}).Mutex("k")
		b.ReportAllocs()
		b.SetParallelism(parallelism())
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h, err := l.Acquire(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				_ = h.Release(ctx)
			}
		})
	})
	b.Run("run", func(b *testing.B) {
		l := memlock.New(memlock.Options{}).Mutex("k")
		fn := func(ctx context.Context, yield caesura.Yield) error { return yield(l) }
		b.ReportAllocs()
		b.SetParallelism(parallelism())
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := caesura.Run(ctx, fn); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("chan", func(b *testing.B) {
		ch := make(chan struct{}, 1)
		b.ReportAllocs()
		b.SetParallelism(parallelism())
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				select {
				case ch <- struct{}{}:
				case <-ctx.Done():
				}
				<-ch
			}
		})
	})
}
