package bench

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

// scaleEnv turns on BenchmarkMemScale, which holds a million locks at once
// (about a second and a few hundred MB), so that a plain -bench . in CI
// stays fast.
const scaleEnv = "CAESURA_BENCH_SCALE"

const scaleKeys = 1_000_000

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemScale holds one million memlock keys at once and reports the
// heap bytes per held lock (the Lock value, its Held handle and the
// Locker's entry; the key strings and the slices that hold the handles
// are allocated before the baseline), and the time to acquire them all and
// to release them all. Run with CAESURA_BENCH_SCALE=1 and -benchtime 1x.
func BenchmarkMemScale(b *testing.B) {
	if os.Getenv(scaleEnv) == "" {
		b.Skip("set " + scaleEnv + "=1 to hold a million locks")
	}
	ctx := context.Background()
	names := make([]string, scaleKeys)
	for i := range names {
		names[i] = "key:" + strconv.Itoa(i)
	}
	b.Run("impl=memlock", func(b *testing.B) {
		for b.Loop() {
			locks := make([]caesura.Lock, scaleKeys)
			hs := make([]caesura.Held, scaleKeys)
			ls := memlock.New(memlock.Options{})
			base := heapInUse()
			t0 := time.Now()
			for i, n := range names {
				locks[i] = ls.Mutex(n)
				h, err := locks[i].Acquire(ctx)
				if err != nil {
					b.Fatal(err)
				}
				hs[i] = h
			}
			acquire := time.Since(t0)
			held := heapInUse()
			if got := ls.Len(); got != scaleKeys {
				b.Fatalf("got %d held keys, want %d", got, scaleKeys)
			}
			t1 := time.Now()
			for _, h := range hs {
				if err := h.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
			release := time.Since(t1)
			b.ReportMetric(float64(held-base)/scaleKeys, "B/held-lock")
			b.ReportMetric(float64(acquire.Milliseconds()), "acquire-all-ms")
			b.ReportMetric(float64(release.Milliseconds()), "release-all-ms")
			runtime.KeepAlive(locks)
		}
	})
	b.Run("impl=caesura-1-yield", func(b *testing.B) {
		for b.Loop() {
			locks := make([]caesura.Lock, scaleKeys)
			ls := memlock.New(memlock.Options{})
			for i, n := range names {
				locks[i] = ls.Mutex(n)
			}
			base := heapInUse()
			var acquire time.Duration
			var held uint64
			var t1 time.Time
			t0 := time.Now()
			err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
				if err := yield(locks...); err != nil {
					return err
				}
				acquire = time.Since(t0)
				held = heapInUse()
				t1 = time.Now()
				return nil
			})
			release := time.Since(t1)
			if err != nil {
				b.Fatal(err)
			}
			// The Lock values exist before the baseline here: this is the
			// cost of holding them through one yield.
			b.ReportMetric(float64(held-base)/scaleKeys, "B/held-lock")
			b.ReportMetric(float64(acquire.Milliseconds()), "acquire-all-ms")
			b.ReportMetric(float64(release.Milliseconds()), "release-all-ms")
			runtime.KeepAlive(locks)
		}
	})
}
