// Package pg compares caesura's PostgreSQL backend with bare advisory locks
// on a pinned pgx connection, side by side in one run:
//
//	CAESURA_PG_DSN=... go test -run '^$' -bench . -benchmem
//
// The hand-off benchmarks report the latency from a holder's release call to
// the next holder's acquire return (p50, p99), and how evenly the
// contenders shared the lock; BenchmarkScaling reports throughput against
// the number of workers (-benchtime 1000x keeps its sweep short).
package pg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/pglock"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if err := serverCheck(); err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Printf("FAIL: no PostgreSQL at %s: %v\n", dsn(), err)
			os.Exit(1)
		}
		fmt.Printf("SKIP: no PostgreSQL at %s (set CAESURA_PG_DSN): %v\n", dsn(), err)
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func dsn() string {
	if d := os.Getenv("CAESURA_PG_DSN"); d != "" {
		return d
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

func serverCheck() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn())
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return c.Ping(ctx)
}

func newPool(tb testing.TB, maxConns int) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(dsn())
	if err != nil {
		tb.Fatal(err)
	}
	cfg.MaxConns = int32(maxConns)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func newLocker(tb testing.TB, pool *pgxpool.Pool) *pglock.Locker {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	l, err := pglock.New(pool, pglock.Options{Prefix: "bench:" + hex.EncodeToString(b[:]) + ":"})
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// pinned returns a connection of pool held for the whole benchmark.
func pinned(tb testing.TB, pool *pgxpool.Pool) *pgxpool.Conn {
	tb.Helper()
	c, err := pool.Acquire(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Release)
	return c
}

// loop runs op once to warm up (the pool opens its connections lazily, and
// a first iteration that opens eight of them would be all the benchmark
// measures), then b.N times.
func loop(b *testing.B, op func()) {
	op()
	for b.Loop() {
		op()
	}
}

func check(b *testing.B, err error) {
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRoundTrip is the floor: one empty query.
func BenchmarkRoundTrip(b *testing.B) {
	pool := newPool(b, 4)
	c := pinned(b, pool)
	ctx := context.Background()
	for b.Loop() {
		check(b, c.Ping(ctx))
	}
}

// BenchmarkUncontended: one lock + unlock on a free key.
func BenchmarkUncontended(b *testing.B) {
	ctx := context.Background()
	b.Run("impl=bare", func(b *testing.B) {
		c := pinned(b, newPool(b, 4))
		id := int64(0x5eed_0001)
		var ok bool
		loop(b, func() {
			check(b, c.QueryRow(ctx, `SELECT pg_advisory_lock($1)`, id).Scan(nil))
			check(b, c.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, id).Scan(&ok))
		})
	})
	b.Run("impl=pglock", func(b *testing.B) {
		m := newLocker(b, newPool(b, 4)).Mutex("u")
		loop(b, func() {
			h, err := m.Acquire(ctx)
			check(b, err)
			check(b, h.Release(ctx))
		})
	})
	b.Run("impl=caesura.Run", func(b *testing.B) {
		m := newLocker(b, newPool(b, 4)).Mutex("u")
		loop(b, func() {
			check(b, caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error { return yield(m) }))
		})
	})
}

// BenchmarkEightKeys: acquire 8 free keys, then release them.
func BenchmarkEightKeys(b *testing.B) {
	ctx := context.Background()
	ids := make([]int64, 8)
	for i := range ids {
		ids[i] = int64(0x5eed_1000 + i)
	}
	b.Run("impl=bare-8-statements", func(b *testing.B) {
		c := pinned(b, newPool(b, 4))
		loop(b, func() {
			for _, id := range ids {
				_, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, id)
				check(b, err)
			}
			for _, id := range slices.Backward(ids) {
				_, err := c.Exec(ctx, `SELECT pg_advisory_unlock($1)`, id)
				check(b, err)
			}
		})
	})
	b.Run("impl=bare-1-statement", func(b *testing.B) {
		c := pinned(b, newPool(b, 4))
		loop(b, func() {
			_, err := c.Exec(ctx, `SELECT pg_advisory_lock(k) FROM unnest($1::bigint[]) AS k ORDER BY k`, ids)
			check(b, err)
			_, err = c.Exec(ctx, `SELECT bool_and(pg_advisory_unlock(k)) FROM unnest($1::bigint[]) AS k`, ids)
			check(b, err)
		})
	})
	locks := func(b *testing.B) []caesura.Lock {
		l := newLocker(b, newPool(b, 12))
		ls := make([]caesura.Lock, 8)
		for i := range ls {
			ls[i] = l.Mutex(fmt.Sprintf("k%d", i))
		}
		return ls
	}
	b.Run("impl=pglock-8-acquires", func(b *testing.B) {
		ls := locks(b)
		hs := make([]caesura.Held, len(ls))
		loop(b, func() {
			for i, l := range ls {
				h, err := l.Acquire(ctx)
				check(b, err)
				hs[i] = h
			}
			for _, h := range slices.Backward(hs) {
				check(b, h.Release(ctx))
			}
		})
	})
	b.Run("impl=caesura-8-yields", func(b *testing.B) {
		ls := locks(b)
		loop(b, func() {
			check(b, caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
				for _, l := range ls {
					if err := yield(l); err != nil {
						return err
					}
				}
				return nil
			}))
		})
	})
	b.Run("impl=caesura-1-yield", func(b *testing.B) {
		ls := locks(b)
		loop(b, func() {
			check(b, caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error { return yield(ls...) }))
		})
	})
}

// contender is one worker of a hand-off run: lock blocks until it holds the
// lock, unlock gives it up.
type contender struct {
	lock, unlock func(context.Context) error
}

// handOffStats summarizes a hand-off run.
type handOffStats struct {
	acquisitions  int
	p50, p99      time.Duration // release call start -> next holder's acquire return
	self          float64       // fraction of hand-offs back to the releaser
	minShare      int           // fewest acquisitions of one contender
	maxShare      int           // most
	maxDeviation  float64       // largest |share-mean|/mean
	violations    int64         // overlapping critical sections
	wallPerAcquis time.Duration
}

// runHandOff runs contenders on one lock in a closed loop, each holding it for
// hold (busy-waiting), until total acquisitions were recorded after a warm-up
// of 10 per contender.
func runHandOff(ctx context.Context, cs []contender, total int, hold time.Duration) (handOffStats, error) {
	st, _, _, err := runHandOffDetailed(ctx, cs, total, hold)
	return st, err
}

// runHandOffDetailed is runHandOff that also returns every hand-off latency
// and each contender's number of acquisitions.
func runHandOffDetailed(ctx context.Context, cs []contender, total int, hold time.Duration) (handOffStats, []time.Duration, []int, error) {
	type rec struct {
		who                 int
		acquired, releasing time.Time
	}
	var (
		mu      sync.Mutex // orders the records for the race detector; the lock orders them in fact
		recs    = make([]rec, 0, total+len(cs))
		n       atomic.Int64
		inside  atomic.Int32
		viol    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)
	// The first warm acquisitions are not recorded: they open the pool's
	// connections and prepare the statements (pglock's first token on a
	// session also skips ahead, with a WAL flush), once per session, which
	// no steady-state hand-off pays.
	warm := int64(10 * len(cs))
	for w, c := range cs {
		wg.Go(func() {
			for n.Load() < warm+int64(total) {
				if err := c.lock(ctx); err != nil {
					errOnce.Do(func() { runErr = err })
					return
				}
				at := time.Now()
				if inside.Add(1) != 1 {
					viol.Add(1)
				}
				counted := n.Add(1) > warm
				for time.Since(at) < hold {
				}
				inside.Add(-1)
				if counted {
					mu.Lock()
					recs = append(recs, rec{who: w, acquired: at, releasing: time.Now()})
					mu.Unlock()
				}
				if err := c.unlock(ctx); err != nil {
					errOnce.Do(func() { runErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if runErr != nil {
		return handOffStats{}, nil, nil, runErr
	}
	slices.SortFunc(recs, func(a, b rec) int { return a.acquired.Compare(b.acquired) })
	wall := recs[len(recs)-1].releasing.Sub(recs[0].acquired)
	var hand []time.Duration
	self := 0
	// Shares count the steady state only: from the first acquisition after
	// every contender has had one (the first to start gets a head start).
	shares := make([]int, len(cs))
	seen, steady := make([]bool, len(cs)), false
	left := len(cs)
	for i, r := range recs {
		if steady {
			shares[r.who]++
		} else if !seen[r.who] {
			seen[r.who] = true
			if left--; left == 0 {
				steady = true
			}
		}
		if i == 0 {
			continue
		}
		hand = append(hand, r.acquired.Sub(recs[i-1].releasing))
		if r.who == recs[i-1].who {
			self++
		}
	}
	slices.Sort(hand)
	counted := 0
	for _, n := range shares {
		counted += n
	}
	st := handOffStats{
		acquisitions:  len(recs),
		p50:           hand[len(hand)/2],
		p99:           hand[len(hand)*99/100],
		self:          float64(self) / float64(len(hand)),
		minShare:      slices.Min(shares),
		maxShare:      slices.Max(shares),
		violations:    viol.Load(),
		wallPerAcquis: wall / time.Duration(len(recs)),
	}
	mean := float64(counted) / float64(len(cs))
	for _, s := range shares {
		st.maxDeviation = max(st.maxDeviation, abs(float64(s)-mean)/mean)
	}
	return st, hand, shares, nil
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

const contenders = 8

// bareContenders: each contender pins its own connection and calls
// pg_advisory_lock / pg_advisory_unlock.
func bareContenders(tb testing.TB, pool *pgxpool.Pool, id int64) []contender {
	cs := make([]contender, contenders)
	for i := range cs {
		c := pinned(tb, pool)
		cs[i] = contender{
			lock: func(ctx context.Context) error {
				_, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, id)
				return err
			},
			unlock: func(ctx context.Context) error {
				_, err := c.Exec(ctx, `SELECT pg_advisory_unlock($1)`, id)
				return err
			},
		}
	}
	return cs
}

// pglockContenders: each contender acquires and releases through pglock.
func pglockContenders(l *pglock.Locker) []contender {
	cs := make([]contender, contenders)
	for i := range cs {
		m := l.Mutex("handoff")
		var h caesura.Held
		cs[i] = contender{
			lock: func(ctx context.Context) error {
				var err error
				h, err = m.Acquire(ctx)
				return err
			},
			unlock: func(ctx context.Context) error { return h.Release(ctx) },
		}
	}
	return cs
}

// runContenders: each contender runs caesura.Run with one yield; the lock is
// released when the function returns. lock runs the function in a goroutine
// that holds the lock until unlock is called.
func runContenders(l *pglock.Locker) []contender {
	cs := make([]contender, contenders)
	for i := range cs {
		m := l.Mutex("handoff")
		var release chan struct{}
		var done chan error
		cs[i] = contender{
			lock: func(ctx context.Context) error {
				acquired := make(chan struct{})
				release, done = make(chan struct{}), make(chan error, 1)
				go func() {
					done <- caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
						if err := yield(m); err != nil {
							return err
						}
						close(acquired)
						<-release
						return nil
					})
				}()
				select {
				case <-acquired:
					return nil
				case err := <-done:
					return err
				}
			},
			unlock: func(ctx context.Context) error {
				close(release)
				return <-done
			},
		}
	}
	return cs
}

// BenchmarkHandOff: 8 contenders, one key, 100µs hold, closed loop; b.N
// acquisitions in all. ns/op is wall time per acquisition.
func BenchmarkHandOff(b *testing.B) {
	ctx := context.Background()
	report := func(b *testing.B, cs []contender) {
		b.ResetTimer()
		st, err := runHandOff(ctx, cs, max(b.N, 2*contenders), 100*time.Microsecond)
		if err != nil {
			b.Fatal(err)
		}
		if st.violations != 0 {
			b.Fatalf("%d overlapping critical sections", st.violations)
		}
		b.ReportMetric(float64(st.p50.Microseconds()), "handoff-p50-µs")
		b.ReportMetric(float64(st.p99.Microseconds()), "handoff-p99-µs")
		b.ReportMetric(st.self*100, "self-reacquire-%")
		b.ReportMetric(st.maxDeviation*100, "max-share-dev-%")
		b.Logf("%d acquisitions, shares %d..%d", st.acquisitions, st.minShare, st.maxShare)
	}
	b.Run("impl=bare", func(b *testing.B) {
		report(b, bareContenders(b, newPool(b, contenders+1), 0x5eed_2000))
	})
	b.Run("impl=pglock", func(b *testing.B) {
		report(b, pglockContenders(newLocker(b, newPool(b, contenders+2))))
	})
	b.Run("impl=caesura.Run", func(b *testing.B) {
		report(b, runContenders(newLocker(b, newPool(b, contenders+2))))
	})
}

// TestHandOffHarness runs the hand-off workload briefly on both mechanisms:
// no overlapping critical sections, every acquisition recorded, every
// contender served (the server queue is fair).
func TestHandOffHarness(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		cs   func() []contender
	}{
		{"bare", func() []contender { return bareContenders(t, newPool(t, contenders+1), 0x5eed_3000) }},
		{"pglock", func() []contender { return pglockContenders(newLocker(t, newPool(t, contenders+2))) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const total = 160
			st, err := runHandOff(ctx, tc.cs(), total, 100*time.Microsecond)
			if err != nil {
				t.Fatal(err)
			}
			if st.violations != 0 {
				t.Fatalf("%d overlapping critical sections", st.violations)
			}
			if st.acquisitions < total {
				t.Fatalf("acquisitions: got %d, want at least %d", st.acquisitions, total)
			}
			if st.minShare == 0 {
				t.Fatalf("a contender never got the lock (shares %d..%d)", st.minShare, st.maxShare)
			}
			t.Logf("handoff p50 %v p99 %v, self %.2f, shares %d..%d", st.p50, st.p99, st.self, st.minShare, st.maxShare)
		})
	}
}
