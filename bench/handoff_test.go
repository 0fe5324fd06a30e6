package bench

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gofrs/flock"
	"golang.org/x/sync/semaphore"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/filelock"
	"github.com/caesura-go/caesura/memlock"
)

// The hand-off benchmarks use the measures of
// shared/research/measured-peers.md: 8 workers, one key, a 100µs busy-wait
// hold, closed loop, 2000 acquisitions per run (run with -benchtime 1x).
//
//   - hand-off: the next holder's lock-call return minus the previous
//     holder's unlock-call start, over hand-offs to another worker;
//   - self-reacquire: the share of hand-offs back to the releaser;
//   - FIFO share: the share of acquisitions that did not overtake a lock
//     call another worker had started earlier;
//   - caller wait: the lock-call duration (its maximum is reported).
const (
	handoffWorkers = 8
	handoffTarget  = 2000
	handoffHold    = 100 * time.Microsecond
)

// acq is one acquisition: worker, lock-call start and return, unlock-call
// start and return.
type acq struct {
	w                           int
	lock, got, unlock, unlocked time.Duration
}

// cycler runs one worker's lock, critical section and unlock, filling the
// timestamps of r from now.
type cycler func(ctx context.Context, r *acq, critical func())

type handoffMech struct {
	name string
	// make returns one cycler per worker, all on one key.
	make func(tb testing.TB, workers int) []cycler
}

func same(c cycler, n int) []cycler {
	cs := make([]cycler, n)
	for i := range cs {
		cs[i] = c
	}
	return cs
}

func lockCycler(l caesura.Lock, now func() time.Duration) cycler {
	return func(ctx context.Context, r *acq, critical func()) {
		r.lock = now()
		h, err := l.Acquire(ctx)
		if err != nil {
			panic(err)
		}
		r.got = now()
		critical()
		r.unlock = now()
		_ = h.Release(ctx)
		r.unlocked = now()
	}
}

func runCycler(l caesura.Lock, now func() time.Duration) cycler {
	return func(ctx context.Context, r *acq, critical func()) {
		r.lock = now()
		err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(l); err != nil {
				return err
			}
			r.got = now()
			critical()
			r.unlock = now() // the release runs inside Run, right after fn returns
			return nil
		})
		r.unlocked = now()
		if err != nil {
			panic(err)
		}
	}
}

func funcCycler(lock, unlock func(), now func() time.Duration) cycler {
	return func(_ context.Context, r *acq, critical func()) {
		r.lock = now()
		lock()
		r.got = now()
		critical()
		r.unlock = now()
		unlock()
		r.unlocked = now()
	}
}

func newFileLocker(tb testing.TB, dir string) *filelock.Locker {
	l, err := filelock.New(filelock.Options{Dir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// flockFD is bare flock(2) on a descriptor of its own, kept open.
func flockFD(tb testing.TB, path string) (lock, unlock func()) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	lock, unlock = flockOn(f)
	return lock, unlock
}

// flockOn is bare flock(2) on f's descriptor.
func flockOn(f *os.File) (lock, unlock func()) {
	fd := int(f.Fd())
	return func() {
			for syscall.Flock(fd, syscall.LOCK_EX) == syscall.EINTR {
			}
		}, func() {
			_ = syscall.Flock(fd, syscall.LOCK_UN)
		}
}

// gofrsFlock is github.com/gofrs/flock's blocking Lock and Unlock on a Flock
// of the worker's own. Lock opens the file and calls flock(2); Unlock
// unlocks and closes it, so every cycle opens the file again: the library
// offers no way to keep the descriptor.
func gofrsFlock(path string) (lock, unlock func()) {
	f := flock.New(path)
	return func() {
			if err := f.Lock(); err != nil {
				panic(err)
			}
		}, func() {
			if err := f.Unlock(); err != nil {
				panic(err)
			}
		}
}

func handoffMechs(now func() time.Duration) []handoffMech {
	return []handoffMech{
		{"caesura.Run", func(_ testing.TB, n int) []cycler {
			return same(runCycler(memlock.New(memlock.Options{}).Mutex("k"), now), n)
		}},
		{"memlock", func(_ testing.TB, n int) []cycler {
			return same(lockCycler(memlock.New(memlock.Options{}).Mutex("k"), now), n)
		}},
		{"semaphore.Weighted", func(_ testing.TB, n int) []cycler {
			s := semaphore.NewWeighted(1)
			ctx := context.Background()
			return same(funcCycler(func() { _ = s.Acquire(ctx, 1) }, func() { s.Release(1) }, now), n)
		}},
		{"chan", func(_ testing.TB, n int) []cycler {
			c := make(chan struct{}, 1)
			return same(funcCycler(func() { c <- struct{}{} }, func() { <-c }, now), n)
		}},
		{"sync.Mutex", func(_ testing.TB, n int) []cycler {
			var mu sync.Mutex
			return same(funcCycler(mu.Lock, mu.Unlock, now), n)
		}},
		// The file class: every worker has its own descriptor, as separate
		// processes would, so the kernel arbitrates.
		{"file/caesura.Run", func(tb testing.TB, n int) []cycler {
			dir := tb.TempDir()
			cs := make([]cycler, n)
			for i := range cs {
				cs[i] = runCycler(newFileLocker(tb, dir).Mutex("k"), now)
			}
			return cs
		}},
		{"file/filelock", func(tb testing.TB, n int) []cycler {
			dir := tb.TempDir()
			cs := make([]cycler, n)
			for i := range cs {
				cs[i] = lockCycler(newFileLocker(tb, dir).Mutex("k"), now)
			}
			return cs
		}},
		{"file/filelock-shared", func(tb testing.TB, n int) []cycler {
			// One Locker for all workers: they queue in memory first.
			return same(lockCycler(newFileLocker(tb, tb.TempDir()).Mutex("k"), now), n)
		}},
		{"file/flock-fd", func(tb testing.TB, n int) []cycler {
			path := filepath.Join(tb.TempDir(), "k")
			cs := make([]cycler, n)
			for i := range cs {
				lock, unlock := flockFD(tb, path)
				cs[i] = funcCycler(lock, unlock, now)
			}
			return cs
		}},
		{"file/gofrs-flock", func(tb testing.TB, n int) []cycler {
			// A Flock per worker: one Flock is not a mutex between
			// goroutines (a second Lock on a locked Flock returns at once).
			path := filepath.Join(tb.TempDir(), "k")
			cs := make([]cycler, n)
			for i := range cs {
				lock, unlock := gofrsFlock(path)
				cs[i] = funcCycler(lock, unlock, now)
			}
			return cs
		}},
	}
}

func spinFor(d time.Duration) {
	for t := time.Now(); time.Since(t) < d; {
	}
}

// handoffStats are the measures of one run.
type handoffStats struct {
	acqPerSec          float64
	p50, p99           time.Duration // hand-offs to another worker
	selfFrac, fifoFrac float64
	waitMax            time.Duration
	minShare, maxShare int
}

// report reports st's measures as b's metrics.
func (st handoffStats) report(b *testing.B) {
	b.ReportMetric(st.acqPerSec, "acq/s")
	b.ReportMetric(float64(st.p50.Nanoseconds())/1e3, "handoff-other-p50-µs")
	b.ReportMetric(float64(st.p99.Nanoseconds())/1e3, "handoff-other-p99-µs")
	b.ReportMetric(st.selfFrac, "self-reacquire")
	b.ReportMetric(st.fifoFrac, "fifo-frac")
	b.ReportMetric(float64(st.waitMax.Microseconds())/1e3, "max-wait-ms")
}

func analyzeHandoff(rs []acq, workers int) handoffStats {
	slices.SortFunc(rs, func(a, b acq) int { return int(a.got - b.got) })
	var other []time.Duration
	self, fifo := 0, 0
	per := make([]int, workers)
	var st handoffStats
	// later[i] is the earliest lock-call start among acquisitions after i.
	later := make([]time.Duration, len(rs)+1)
	later[len(rs)] = 1<<63 - 1
	for i := len(rs) - 1; i >= 0; i-- {
		later[i] = min(later[i+1], rs[i].lock)
	}
	for i, r := range rs {
		per[r.w]++
		st.waitMax = max(st.waitMax, r.got-r.lock)
		if later[i+1] >= r.lock {
			fifo++
		}
		if i == 0 {
			continue
		}
		if r.w == rs[i-1].w {
			self++
		} else {
			other = append(other, r.got-rs[i-1].unlock)
		}
	}
	slices.Sort(other)
	if len(other) > 0 {
		st.p50, st.p99 = other[len(other)/2], other[min(len(other)-1, len(other)*99/100)]
	}
	st.selfFrac = float64(self) / float64(max(1, len(rs)-1))
	st.fifoFrac = float64(fifo) / float64(max(1, len(rs)))
	st.minShare, st.maxShare = slices.Min(per), slices.Max(per)
	if len(rs) > 1 {
		st.acqPerSec = float64(len(rs)-1) / (rs[len(rs)-1].got - rs[0].got).Seconds()
	}
	return st
}

// runHandoff runs workers closed loops until target acquisitions in all.
func runHandoff(ctx context.Context, cs []cycler, target int, hold time.Duration) []acq {
	var left atomic.Int64
	left.Store(int64(target))
	out := make([][]acq, len(cs))
	var wg sync.WaitGroup
	for w, c := range cs {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				r := acq{w: w}
				c(ctx, &r, func() { spinFor(hold) })
				out[w] = append(out[w], r)
			}
		})
	}
	wg.Wait()
	return slices.Concat(out...)
}

// BenchmarkHandOff: 8 workers, one key, 100µs hold, 2000 acquisitions per
// iteration; run with -benchtime 1x. ns/op is one whole run.
func BenchmarkHandOff(b *testing.B) {
	start := time.Now()
	now := func() time.Duration { return time.Since(start) } // monotonic
	ctx := context.Background()
	for _, m := range handoffMechs(now) {
		b.Run("mech="+m.name, func(b *testing.B) {
			cs := m.make(b, handoffWorkers)
			runHandoff(ctx, cs, 2*handoffWorkers, 0) // warm up: files, goroutines
			for b.Loop() {
				st := analyzeHandoff(runHandoff(ctx, cs, handoffTarget, handoffHold), handoffWorkers)
				st.report(b)
				b.Logf("per worker %d-%d", st.minShare, st.maxShare)
			}
		})
	}
}

// BenchmarkFileUncontended: one goroutine locks and unlocks one file key:
// caesura's filelock (alone and through caesura.Run), gofrs/flock's Lock and
// Unlock, and bare flock(2) on a descriptor kept open (the floor).
func BenchmarkFileUncontended(b *testing.B) {
	ctx := context.Background()
	b.Run("impl=caesura.Run", func(b *testing.B) {
		l := newFileLocker(b, b.TempDir()).Mutex("k")
		fn := func(ctx context.Context, yield caesura.Yield) error { return yield(l) }
		b.ReportAllocs()
		for b.Loop() {
			if err := caesura.Run(ctx, fn); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=filelock", func(b *testing.B) {
		l := newFileLocker(b, b.TempDir()).Mutex("k")
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
	b.Run("impl=flock-fd", func(b *testing.B) {
		lock, unlock := flockFD(b, filepath.Join(b.TempDir(), "k"))
		b.ReportAllocs()
		for b.Loop() {
			lock()
			unlock()
		}
	})
	b.Run("impl=gofrs-flock", func(b *testing.B) {
		lock, unlock := gofrsFlock(filepath.Join(b.TempDir(), "k"))
		b.ReportAllocs()
		for b.Loop() {
			lock()
			unlock()
		}
	})
}

// TestHandOffHarness runs each hand-off mechanism briefly: every
// acquisition recorded, no overlap of critical sections.
func TestHandOffHarness(t *testing.T) {
	start := time.Now()
	now := func() time.Duration { return time.Since(start) }
	for _, m := range handoffMechs(now) {
		rs := runHandoff(context.Background(), m.make(t, 4), 200, 0)
		if len(rs) != 200 {
			t.Fatalf("%s: got %d acquisitions, want 200", m.name, len(rs))
		}
		slices.SortFunc(rs, func(a, b acq) int { return int(a.got - b.got) })
		for i := 1; i < len(rs); i++ {
			if rs[i].got < rs[i-1].unlock {
				t.Fatalf("%s: acquisition %d at %v before the previous unlock at %v", m.name, i, rs[i].got, rs[i-1].unlock)
			}
		}
		if st := analyzeHandoff(rs, 4); st.fifoFrac <= 0 || st.fifoFrac > 1 {
			t.Fatalf("%s: fifo share %v, want in (0,1]", m.name, st.fifoFrac)
		}
	}
}
