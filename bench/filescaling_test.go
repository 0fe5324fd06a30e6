package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/gofrs/flock"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/filelock"
)

// fileMech is a file-lock mechanism over nkeys keys in dir, for a number of
// workers: op(ctx, w, k) is worker w's acquire and release of key k, with an
// empty critical section.
type fileMech struct {
	name string
	make func(tb testing.TB, dir string, workers, nkeys int) (op func(ctx context.Context, w, k int))
}

// perWorker returns worker w's value for key k, made by mk on first use:
// workers that act as separate processes each have their own Lock (or
// Flock) for every key, made lazily so that 64 workers on 1,000 keys only
// make the ones they touch.
type perWorker[T any] struct {
	vals [][]T
	made [][]bool
	mk   func(w, k int) T
}

func newPerWorker[T any](workers, nkeys int, mk func(w, k int) T) *perWorker[T] {
	p := &perWorker[T]{vals: make([][]T, workers), made: make([][]bool, workers), mk: mk}
	for w := range workers {
		p.vals[w], p.made[w] = make([]T, nkeys), make([]bool, nkeys)
	}
	return p
}

// get is called by worker w only, so it needs no lock.
func (p *perWorker[T]) get(w, k int) T {
	if !p.made[w][k] {
		p.vals[w][k], p.made[w][k] = p.mk(w, k), true
	}
	return p.vals[w][k]
}

func fileMechs() []fileMech {
	key := func(k int) string { return fmt.Sprint("k", k) }
	lockers := func(tb testing.TB, dir string, workers int) []*filelock.Locker {
		ls := make([]*filelock.Locker, workers)
		for i := range ls {
			ls[i] = newFileLocker(tb, dir)
		}
		return ls
	}
	acquireRelease := func(ctx context.Context, l caesura.Lock) {
		h, err := l.Acquire(ctx)
		if err != nil {
			panic(err)
		}
		if err := h.Release(ctx); err != nil {
			panic(err)
		}
	}
	return []fileMech{
		{"caesura.Run", func(tb testing.TB, dir string, workers, nkeys int) func(context.Context, int, int) {
			ls := lockers(tb, dir, workers)
			fns := newPerWorker(workers, nkeys, func(w, k int) func(context.Context, caesura.Yield) error {
				l := ls[w].Mutex(key(k))
				return func(ctx context.Context, yield caesura.Yield) error { return yield(l) }
			})
			return func(ctx context.Context, w, k int) {
				if err := caesura.Run(ctx, fns.get(w, k)); err != nil {
					panic(err)
				}
			}
		}},
		{"filelock", func(tb testing.TB, dir string, workers, nkeys int) func(context.Context, int, int) {
			ls := lockers(tb, dir, workers)
			locks := newPerWorker(workers, nkeys, func(w, k int) caesura.Lock { return ls[w].Mutex(key(k)) })
			return func(ctx context.Context, w, k int) { acquireRelease(ctx, locks.get(w, k)) }
		}},
		{"filelock-shared", func(tb testing.TB, dir string, _, nkeys int) func(context.Context, int, int) {
			l := newFileLocker(tb, dir)
			locks := make([]caesura.Lock, nkeys)
			for k := range locks {
				locks[k] = l.Mutex(key(k))
			}
			return func(ctx context.Context, _, k int) { acquireRelease(ctx, locks[k]) }
		}},
		{"gofrs-flock", func(tb testing.TB, dir string, workers, nkeys int) func(context.Context, int, int) {
			fs := newPerWorker(workers, nkeys, func(_, k int) *flock.Flock { return flock.New(filepath.Join(dir, key(k))) })
			return func(_ context.Context, w, k int) {
				f := fs.get(w, k)
				if err := f.Lock(); err != nil {
					panic(err)
				}
				if err := f.Unlock(); err != nil {
					panic(err)
				}
			}
		}},
	}
}

// BenchmarkFileScaling is BenchmarkScaling for the file class: throughput
// against the number of workers on one key and on 1,000 keys, empty
// critical section. Workers are goroutines; except in filelock-shared each
// has its own Locker (or gofrs/flock Flock) and so its own descriptors, as
// separate processes would, and the kernel arbitrates between them. The
// files exist before the clock starts.
func BenchmarkFileScaling(b *testing.B) {
	for _, nkeys := range []int{1, 1000} {
		for _, w := range scalingWorkers {
			for _, m := range fileMechs() {
				b.Run(fmt.Sprintf("keys=%d/workers=%d/mech=%s", nkeys, w, m.name), func(b *testing.B) {
					op := m.make(b, b.TempDir(), w, nkeys)
					for k := range nkeys { // create the files: the runs time locking, not creat(2)
						op(context.Background(), 0, k)
					}
					throughput(b, w, nkeys, op)
				})
			}
		}
	}
}

// TestFileMechs runs every file mechanism of BenchmarkFileScaling briefly
// with 4 workers on 3 keys.
func TestFileMechs(t *testing.T) {
	ctx := context.Background()
	for _, m := range fileMechs() {
		op := m.make(t, t.TempDir(), 4, 3)
		done := make(chan struct{})
		for w := range 4 {
			go func() {
				defer func() { done <- struct{}{} }()
				for i := range 50 {
					op(ctx, w, (w+i)%3)
				}
			}()
		}
		for range 4 {
			<-done
		}
	}
}
