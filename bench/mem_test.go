package bench

import (
	"context"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sync/semaphore"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(procEnv); spec != "" { // a worker of BenchmarkHandOffProcesses
		os.Exit(procWorker(spec))
	}
	goleak.VerifyTestMain(m)
}

// worker is one goroutine's use of a mechanism: lock, then unlock.
type worker interface {
	lock(ctx context.Context)
	unlock(ctx context.Context)
}

// mechanism makes a worker per goroutine; all workers share one lock.
type mechanism struct {
	name      string
	newWorker func() worker
}

type memWorker struct {
	l caesura.Lock
	h caesura.Held
}

func (w *memWorker) lock(ctx context.Context) {
	h, err := w.l.Acquire(ctx)
	if err != nil {
		panic(err)
	}
	w.h = h
}
func (w *memWorker) unlock(ctx context.Context) { _ = w.h.Release(ctx) }

type runWorker struct {
	fn func(context.Context, caesura.Yield) error
}

func (w *runWorker) lock(ctx context.Context) {
	if err := caesura.Run(ctx, w.fn); err != nil {
		panic(err)
	}
}
func (w *runWorker) unlock(context.Context) {}

type semWorker struct{ s *semaphore.Weighted }

func (w semWorker) lock(ctx context.Context) {
	if err := w.s.Acquire(ctx, 1); err != nil {
		panic(err)
	}
}
func (w semWorker) unlock(context.Context) { w.s.Release(1) }

type chanWorker chan struct{}

func (w chanWorker) lock(ctx context.Context) {
	select {
	case w <- struct{}{}:
	case <-ctx.Done():
		panic(ctx.Err())
	}
}
func (w chanWorker) unlock(context.Context) { <-w }

type mutexWorker struct{ mu *sync.Mutex }

func (w mutexWorker) lock(context.Context)   { w.mu.Lock() }
func (w mutexWorker) unlock(context.Context) { w.mu.Unlock() }

func mechanisms() []mechanism {
	l := memlock.New(memlock.Options{}).Mutex("k")
	fn := func(ctx context.Context, yield caesura.Yield) error { return yield(l) }
	sem := semaphore.NewWeighted(1)
	ch := make(chanWorker, 1)
	var mu sync.Mutex
	return []mechanism{
		{"caesura.Run", func() worker { return &runWorker{fn: fn} }},
		{"memlock", func() worker { return &memWorker{l: l} }},
		{"semaphore.Weighted", func() worker { return semWorker{sem} }},
		{"chan", func() worker { return ch }},
		{"sync.Mutex", func() worker { return mutexWorker{&mu} }},
	}
}

// BenchmarkUncontended: one goroutine acquires and releases one key.
// caesura.Run is Run + one yield + release on memlock.
func BenchmarkUncontended(b *testing.B) {
	ctx := context.Background()
	for _, m := range mechanisms() {
		b.Run(m.name, func(b *testing.B) {
			w := m.newWorker()
			b.ReportAllocs()
			for b.Loop() {
				w.lock(ctx)
				w.unlock(ctx)
			}
		})
	}
}

const contenders = 8

// BenchmarkContended: 8 goroutines, one key, zero hold; ns/op is wall time per
// acquisition. self-frac is the share of acquisitions that went back to the
// goroutine that held the lock last (for caesura.Run, whose release happens
// inside Run, it is not measured).
func BenchmarkContended(b *testing.B) {
	ctx := context.Background()
	for _, m := range mechanisms() {
		b.Run(m.name, func(b *testing.B) {
			var ids, last, self, n atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(max(1, contenders/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				id := ids.Add(1)
				w := m.newWorker()
				for pb.Next() {
					w.lock(ctx)
					if m.name != "caesura.Run" {
						n.Add(1)
						if last.Swap(id) == id {
							self.Add(1)
						}
					}
					w.unlock(ctx)
				}
			})
			if n.Load() > 0 {
				b.ReportMetric(float64(self.Load())/float64(n.Load()), "self-frac")
			}
		})
	}
}
