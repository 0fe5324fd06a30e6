package redisbench

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/redis/go-redis/v9"

	"github.com/caesura-go/caesura/redislock"
)

// BenchmarkInterleaved measures every library in shuffled rounds of 200
// cycles each, so that the load of a shared machine falls on all of them
// alike, and reports the median per cycle: lock+release of one key, and the
// acquisition of 8 keys. Run with -benchtime 1x.
func BenchmarkInterleaved(b *testing.B) {
	s := startServer(b)
	ctx := context.Background()
	keys := make([]string, 8)
	for i := range keys {
		keys[i] = "i" + strconv.Itoa(i)
	}
	type job struct {
		name string
		one  func(i int) time.Duration // one cycle; returns the measured part
	}
	single := func(lock lockFunc) func(int) time.Duration {
		return func(i int) time.Duration { return timeCycle(ctx, b, lock, "one"+strconv.Itoa(i%512)) }
	}
	sequential := func(lock lockFunc) func(int) time.Duration {
		return func(int) time.Duration {
			t0 := time.Now()
			var unlocks []func(context.Context) error
			for _, k := range keys {
				u, err := lock(ctx, k)
				if err != nil {
					b.Fatal(err)
				}
				unlocks = append(unlocks, u)
			}
			d := time.Since(t0)
			for i := len(unlocks) - 1; i >= 0; i-- {
				unlocks[i](ctx)
			}
			return d
		}
	}
	client := func() *redis.Client { return s.client(b, nil) }
	rl, _ := redislock.New(client(), &redislock.Options{TTL: ttl})
	defer rl.Close()
	var locks []caesura.Lock
	for _, k := range keys {
		locks = append(locks, rl.Mutex(k))
	}
	mk := func(name string) lockFunc { return implNamed(name).make(b, client(), nil) }
	jobs := []job{
		{"1key/caesura", single(mk("caesura"))},
		{"1key/redsync", single(mk("redsync-default"))},
		{"1key/bsm", single(mk("bsm-linear100ms"))},
		{"1key/rueidislock", single(mk("rueidislock"))},
		{"1key/caesura-Run", func(i int) time.Duration {
			m := rl.Mutex("run" + strconv.Itoa(i%512))
			t0 := time.Now()
			if err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error { return yield(m) }); err != nil {
				b.Fatal(err)
			}
			return time.Since(t0)
		}},
		{"8keys-acquire/caesura-batch", func(int) time.Duration {
			t0 := time.Now()
			hs, err := rl.AcquireBatch(ctx, locks)
			d := time.Since(t0)
			if err != nil {
				b.Fatal(err)
			}
			rl.ReleaseBatch(ctx, hs)
			return d
		}},
		{"8keys-acquire/redsync-sequential", sequential(mk("redsync-default"))},
		{"8keys-acquire/bsm-sequential", sequential(mk("bsm-linear100ms"))},
		{"8keys-acquire/rueidislock-sequential", sequential(mk("rueidislock"))},
	}
	for _, j := range jobs { // warm up: connections, scripts
		for i := range 20 {
			j.one(i)
		}
	}
	for b.Loop() {
		samples := make([][]time.Duration, len(jobs))
		for range 10 {
			for _, ji := range rand.Perm(len(jobs)) {
				for i := range 200 {
					samples[ji] = append(samples[ji], jobs[ji].one(i))
				}
			}
		}
		for ji, j := range jobs {
			slices.Sort(samples[ji])
			p50 := samples[ji][len(samples[ji])/2]
			p99 := samples[ji][len(samples[ji])*99/100]
			b.ReportMetric(float64(p50.Nanoseconds())/1000, j.name+"-p50-µs")
			b.Logf("%-34s p50 %7.1f µs  p99 %7.1f µs", j.name, float64(p50.Nanoseconds())/1000, float64(p99.Nanoseconds())/1000)
		}
	}
}

// timeCycle locks and releases key once and returns how long that took.
func timeCycle(ctx context.Context, b *testing.B, lock lockFunc, key string) time.Duration {
	t0 := time.Now()
	unlock, err := lock(ctx, key)
	if err != nil {
		b.Fatal(err)
	}
	if err := unlock(ctx); err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}
