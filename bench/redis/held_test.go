package redisbench

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/redis/go-redis/v9"

	"github.com/caesura-go/caesura/redislock"
)

// heldKeys is how many locks BenchmarkHeld100k holds at once.
const heldKeys = 100_000

// heldTTL is long enough that no lease is renewed while the locks are taken
// and given back, so that renewals neither cost time nor touch memory.
const heldTTL = 10 * time.Minute

// usedMemory returns the server's INFO memory used_memory.
func usedMemory(tb testing.TB, c *redis.Client) int64 {
	tb.Helper()
	info, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal("no used_memory in INFO memory")
	return 0
}

// heldDeadline bounds each library's variant of BenchmarkHeld100k: on a
// slow VM rueidislock once never finished taking the locks (its own renewals
// of the locks it held swamped the server).
const heldDeadline = 3 * time.Minute

// heldWorkers is how many goroutines take (and give back) the locks of the
// libraries that take one lock per call.
const heldWorkers = 32

// inParallel runs f(i) for every i below heldKeys on heldWorkers goroutines.
func inParallel(tb testing.TB, f func(i int) error) {
	var wg sync.WaitGroup
	errs := make(chan error, heldWorkers)
	for w := range heldWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < heldKeys; i += heldWorkers {
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

// BenchmarkHeld100k holds 100,000 locks at once on a fresh redis-server and
// reports the server memory per held lock (the used_memory delta over the
// locks), what stays per lock after all are released (caesura keeps each
// lock's next fencing token until its last lease would have ended), and the
// time to take and to give back them all.
// caesura takes them in batches of 1000 keys per script call, and one by
// one from 32 goroutines as the peers do. Run with -benchtime 1x.
//
// Key lengths differ by the libraries' prefixes: caesura's keys are
// "caesura:redis:h<i>", rueidislock's "rueidislock:0:h<i>", redsync's and
// bsm's "h<i>".
func BenchmarkHeld100k(b *testing.B) {
	// ctx is the running variant's: a library that cannot take them all
	// within heldDeadline fails its variant, not the whole benchmark.
	var ctx context.Context
	name := func(i int) string { return "h" + strconv.Itoa(i) }
	type variant struct {
		name string
		// run takes every lock and returns the function that gives them
		// back.
		run func(b *testing.B, c *redis.Client) (release func())
	}
	caesuraLocker := func(b *testing.B, c *redis.Client) *redislock.Locker {
		rl, err := redislock.New(c, &redislock.Options{TTL: heldTTL})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { rl.Close() })
		return rl
	}
	perLock := func(im impl) func(b *testing.B, c *redis.Client) func() {
		return func(b *testing.B, c *redis.Client) func() {
			lock := im.make(b, c, nil)
			unlocks := make([]func(context.Context) error, heldKeys)
			inParallel(b, func(i int) error {
				u, err := lock(ctx, name(i))
				unlocks[i] = u
				return err
			})
			return func() {
				inParallel(b, func(i int) error { return unlocks[i](ctx) })
			}
		}
	}
	variants := []variant{
		{"caesura-batch1000", func(b *testing.B, c *redis.Client) func() {
			rl := caesuraLocker(b, c)
			var hs [][]caesura.Held
			for lo := 0; lo < heldKeys; lo += 1000 {
				locks := make([]caesura.Lock, 0, 1000)
				for i := lo; i < min(lo+1000, heldKeys); i++ {
					locks = append(locks, rl.Mutex(name(i)))
				}
				// The core sorts a yield's locks; AcquireBatch wants them
				// sorted too.
				sortLocks(locks)
				h, err := rl.AcquireBatch(ctx, locks)
				if err != nil {
					b.Fatal(err)
				}
				hs = append(hs, h)
			}
			return func() {
				for _, h := range hs {
					if err := rl.ReleaseBatch(ctx, h); err != nil {
						b.Fatal(err)
					}
				}
			}
		}},
		{"caesura-parallel", func(b *testing.B, c *redis.Client) func() {
			rl := caesuraLocker(b, c)
			hs := make([]caesura.Held, heldKeys)
			inParallel(b, func(i int) error {
				h, err := rl.Mutex(name(i)).Acquire(ctx)
				hs[i] = h
				return err
			})
			return func() {
				inParallel(b, func(i int) error { return hs[i].Release(ctx) })
			}
		}},
	}
	for _, n := range []string{"redsync-default", "bsm-linear100ms", "rueidislock"} {
		variants = append(variants, variant{n + "-parallel", perLock(implNamed(n))})
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.Background(), heldDeadline)
			defer cancel()
			for b.Loop() {
				s := startServer(b)
				c := redis.NewClient(&redis.Options{Addr: s.addr, PoolSize: heldWorkers})
				before := usedMemory(b, c)
				t0 := time.Now()
				release := v.run(b, c)
				acquired := time.Since(t0)
				held := usedMemory(b, c)
				t1 := time.Now()
				release()
				released := time.Since(t1)
				after := usedMemory(b, c)
				c.Close()
				b.ReportMetric(float64(held-before)/heldKeys, "B/held-lock")
				b.ReportMetric(float64(after-before)/heldKeys, "B/released-lock")
				b.ReportMetric(acquired.Seconds()*1000, "acquire-all-ms")
				b.ReportMetric(released.Seconds()*1000, "release-all-ms")
			}
		})
	}
}

// sortLocks sorts locks by key.
func sortLocks(locks []caesura.Lock) {
	slices.SortFunc(locks, func(a, b caesura.Lock) int { return strings.Compare(a.Key(), b.Key()) })
}
