package redisbench

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"

	"github.com/caesura-go/caesura/redislock"
)

// BenchmarkRedlock compares the Redlock algorithm over three independent
// redis-server processes: caesura's NewRedlock against redsync with three
// pools, for one key (lock + release, distinct keys) and for 8 keys
// (caesura's batch against redsync's one mutex per key). cmds/op counts the
// commands sent to all three servers.
func BenchmarkRedlock(b *testing.B) {
	servers := []*server{startServer(b), startServer(b), startServer(b)}
	ctx := context.Background()
	keys := make([]string, 8)
	for i := range keys {
		keys[i] = "rk" + strconv.Itoa(i)
	}
	caesuraLocker := func(b *testing.B, cnt *counter) *redislock.Locker {
		var clients []redislock.Client
		for _, s := range servers {
			clients = append(clients, s.client(b, cnt))
		}
		rl, err := redislock.NewRedlock(clients, &redislock.Options{TTL: ttl})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { rl.Close() })
		return rl
	}
	redsyncOf := func(b *testing.B, cnt *counter) *redsync.Redsync {
		var pools []redis.Pool
		for _, s := range servers {
			pools = append(pools, goredis.NewPool(s.client(b, cnt)))
		}
		return redsync.New(pools...)
	}
	report := func(b *testing.B, cnt *counter, n int) {
		b.ReportMetric(float64(cnt.n.Load())/float64(n), "cmds/op")
	}

	b.Run("1key/caesura-redlock3", func(b *testing.B) {
		cnt := &counter{}
		rl := caesuraLocker(b, cnt)
		cycle := func(key string) {
			h, err := rl.Mutex(key).Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := h.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
		cycle("warm") // connect, load the scripts
		cnt.n.Store(0)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			cycle("r" + strconv.Itoa(i%1024))
			i++
		}
		report(b, cnt, i)
	})
	b.Run("1key/redsync-3pools", func(b *testing.B) {
		cnt := &counter{}
		rs := redsyncOf(b, cnt)
		cycle := func(key string) {
			m := rs.NewMutex(key, redsync.WithExpiry(ttl))
			if err := m.LockContext(ctx); err != nil {
				b.Fatal(err)
			}
			if ok, err := m.UnlockContext(ctx); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
		cycle("warm")
		cnt.n.Store(0)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			cycle("r" + strconv.Itoa(i%1024))
			i++
		}
		report(b, cnt, i)
	})
	// The two one-key cycles turn about, cycle by cycle (see paired): the
	// ratio of their p50s holds still where the rows above move with the
	// machine. Run with -benchtime 1x.
	b.Run("1key/paired", func(b *testing.B) {
		rl := caesuraLocker(b, &counter{})
		rs := redsyncOf(b, &counter{})
		paired(b, []string{"caesura-redlock3", "redsync-3pools"}, []lockFunc{
			mutexLock(rl),
			func(ctx context.Context, key string) (func(context.Context) error, error) {
				m := rs.NewMutex(key, redsync.WithExpiry(ttl))
				if err := m.LockContext(ctx); err != nil {
					return nil, err
				}
				return func(ctx context.Context) error {
					if ok, err := m.UnlockContext(ctx); !ok || err != nil {
						return fmt.Errorf("redsync unlock: %v, %w", ok, err)
					}
					return nil
				}, nil
			},
		})
	})
	b.Run("8keys/caesura-redlock3-batch", func(b *testing.B) {
		cnt := &counter{}
		rl := caesuraLocker(b, cnt)
		locks := make([]caesura.Lock, len(keys))
		for i, k := range keys {
			locks[i] = rl.Mutex(k)
		}
		cycle := func() time.Duration {
			t0 := time.Now()
			hs, err := rl.AcquireBatch(ctx, locks)
			d := time.Since(t0)
			if err != nil {
				b.Fatal(err)
			}
			if err := rl.ReleaseBatch(ctx, hs); err != nil {
				b.Fatal(err)
			}
			return d
		}
		cycle()
		cnt.n.Store(0)
		b.ReportAllocs()
		var acq time.Duration
		n := 0
		for b.Loop() {
			acq += cycle()
			n++
		}
		b.ReportMetric(float64(acq.Microseconds())/float64(n), "acquire-µs")
		report(b, cnt, n)
	})
	b.Run("8keys/redsync-3pools-sequential", func(b *testing.B) {
		cnt := &counter{}
		rs := redsyncOf(b, cnt)
		cycle := func() time.Duration {
			t0 := time.Now()
			ms := make([]*redsync.Mutex, len(keys))
			for i, k := range keys {
				ms[i] = rs.NewMutex(k, redsync.WithExpiry(ttl))
				if err := ms[i].LockContext(ctx); err != nil {
					b.Fatal(err)
				}
			}
			d := time.Since(t0)
			for i := len(ms) - 1; i >= 0; i-- {
				if ok, err := ms[i].UnlockContext(ctx); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
			return d
		}
		cycle()
		cnt.n.Store(0)
		b.ReportAllocs()
		var acq time.Duration
		n := 0
		for b.Loop() {
			acq += cycle()
			n++
		}
		b.ReportMetric(float64(acq.Microseconds())/float64(n), "acquire-µs")
		report(b, cnt, n)
	})
}
