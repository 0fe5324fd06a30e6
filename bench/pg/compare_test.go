package pg

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The Compare benchmarks run their variants alternately, one operation (or
// one round) of each in turn in a random order, so that the drift of a shared machine hits
// every variant alike; each reports per-variant p50/p99 latencies and their
// ratio to the first variant. The plain benchmarks above give ns/op and
// allocations, but on a loaded machine their sub-benchmarks, run one after
// another, can drift 2x apart.

type variant struct {
	name string
	op   func(b *testing.B)
}

func compare(b *testing.B, vs []variant) {
	ds := make([][]time.Duration, len(vs))
	for _, v := range vs { // warm up: connections, statement caches, sequence
		v.op(b)
	}
	for b.Loop() {
		for _, i := range rand.Perm(len(vs)) { // no variant always goes first
			start := time.Now()
			vs[i].op(b)
			ds[i] = append(ds[i], time.Since(start))
		}
	}
	var base time.Duration
	for i, v := range vs {
		slices.Sort(ds[i])
		p50, p99 := ds[i][len(ds[i])/2], ds[i][len(ds[i])*99/100]
		if i == 0 {
			base = p50
		}
		b.ReportMetric(float64(p50.Nanoseconds())/1e3, v.name+"-p50-µs")
		b.ReportMetric(float64(p99.Nanoseconds())/1e3, v.name+"-p99-µs")
		if i > 0 {
			b.ReportMetric(float64(p50)/float64(base), v.name+"/"+vs[0].name+"-p50-x")
		}
	}
}

// BenchmarkCompareUncontended: lock + unlock of a free key.
func BenchmarkCompareUncontended(b *testing.B) {
	ctx := context.Background()
	pool := newPool(b, 8)
	c := pinned(b, pool)
	m := newLocker(b, pool).Mutex("u")
	id := int64(0x5eed_4000)
	seq := seqOID(b, pool)
	compare(b, []variant{
		{"bare", func(b *testing.B) {
			var ok bool
			check(b, c.QueryRow(ctx, `SELECT pg_advisory_lock($1)`, id).Scan(nil))
			check(b, c.QueryRow(ctx, `SELECT pg_advisory_unlock($1)`, id).Scan(&ok))
		}},
		{"bareseq", func(b *testing.B) { // pglock's statements on a pinned connection
			var tok int64
			var pid uint32
			var ok bool
			check(b, c.QueryRow(ctx, `SELECT pg_advisory_lock($1), nextval($2::oid::regclass), pg_backend_pid()`, id, seq).Scan(nil, &tok, &pid))
			check(b, c.QueryRow(ctx, `SELECT pg_advisory_unlock($1), pg_backend_pid()`, id).Scan(&ok, &pid))
		}},
		{"pglock", func(b *testing.B) {
			h, err := m.Acquire(ctx)
			check(b, err)
			check(b, h.Release(ctx))
		}},
		{"caesura", func(b *testing.B) {
			check(b, caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error { return yield(m) }))
		}},
	})
}

// BenchmarkCompareEightKeys: acquire 8 free keys, then release them.
func BenchmarkCompareEightKeys(b *testing.B) {
	ctx := context.Background()
	pool := newPool(b, 22)
	c := pinned(b, pool)
	l := newLocker(b, pool)
	ids := make([]int64, 8)
	ls := make([]caesura.Lock, 8)
	for i := range ids {
		ids[i] = int64(0x5eed_5000 + i)
		ls[i] = l.Mutex(fmt.Sprintf("k%d", i))
	}
	hs := make([]caesura.Held, 8)
	sorted := slices.SortedFunc(slices.Values(ls), func(a, b caesura.Lock) int { return strings.Compare(a.Key(), b.Key()) })
	conns := make([]interface {
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	}, 8)
	for i := range conns {
		conns[i] = pinned(b, pool)
	}
	compare(b, []variant{
		{"bare8", func(b *testing.B) { // 8 statements each way
			for _, id := range ids {
				_, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, id)
				check(b, err)
			}
			for _, id := range slices.Backward(ids) {
				_, err := c.Exec(ctx, `SELECT pg_advisory_unlock($1)`, id)
				check(b, err)
			}
		}},
		{"bare8conns", func(b *testing.B) { // 8 statements each way, one connection per key
			for i, id := range ids {
				_, err := conns[i].Exec(ctx, `SELECT pg_advisory_lock($1)`, id)
				check(b, err)
			}
			for i, id := range slices.Backward(ids) {
				_, err := conns[i].Exec(ctx, `SELECT pg_advisory_unlock($1)`, id)
				check(b, err)
			}
		}},
		{"bare1", func(b *testing.B) { // one statement each way
			_, err := c.Exec(ctx, `SELECT pg_advisory_lock(k) FROM unnest($1::bigint[]) AS k ORDER BY k`, ids)
			check(b, err)
			_, err = c.Exec(ctx, `SELECT bool_and(pg_advisory_unlock(k)) FROM unnest($1::bigint[]) AS k`, ids)
			check(b, err)
		}},
		{"pglock8", func(b *testing.B) { // 8 separate acquisitions
			for i, l := range ls {
				h, err := l.Acquire(ctx)
				check(b, err)
				hs[i] = h
			}
			for _, h := range slices.Backward(hs) {
				check(b, h.Release(ctx))
			}
		}},
		{"caesura8", func(b *testing.B) { // 8 sequential yields
			check(b, caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
				for _, l := range ls {
					if err := yield(l); err != nil {
						return err
					}
				}
				return nil
			}))
		}},
		{"pglock1", func(b *testing.B) { // one AcquireBatch of 8 keys: one statement
			hs, err := ls[0].(caesura.BatchLock).Batcher().AcquireBatch(ctx, sorted)
			check(b, err)
			for _, h := range slices.Backward(hs) {
				check(b, h.Release(ctx))
			}
		}},
		{"caesura1", func(b *testing.B) { // one yield of 8 keys: one statement
			check(b, caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error { return yield(ls...) }))
		}},
	})
}

// BenchmarkCompareHandOff: 8 contenders, one key, 100µs hold; each b.N round
// runs 250 acquisitions of each variant in turn, and the statistics pool
// the rounds.
func BenchmarkCompareHandOff(b *testing.B) {
	ctx := context.Background()
	const perRound = 250
	type v struct {
		name string
		cs   []contender
		all  handOffStats
		hand []time.Duration
	}
	vs := []*v{
		{name: "bare", cs: bareContenders(b, newPool(b, contenders+1), 0x5eed_6000)},
		{name: "bareseq", cs: bareSeqContenders(b, newPool(b, contenders+1), 0x5eed_6001)},
		{name: "pglock", cs: pglockContenders(newLocker(b, newPool(b, contenders+2)))},
		{name: "caesura", cs: runContenders(newLocker(b, newPool(b, contenders+2)))},
	}
	shares := make(map[string][]int)
	for b.Loop() {
		for _, i := range rand.Perm(len(vs)) {
			x := vs[i]
			st, hand, perWorker, err := runHandOffDetailed(ctx, x.cs, perRound, 100*time.Microsecond)
			if err != nil {
				b.Fatal(err)
			}
			if st.violations != 0 {
				b.Fatalf("%s: %d overlapping critical sections", x.name, st.violations)
			}
			x.hand = append(x.hand, hand...)
			if shares[x.name] == nil {
				shares[x.name] = make([]int, len(perWorker))
			}
			for i, n := range perWorker {
				shares[x.name][i] += n
			}
		}
	}
	var base time.Duration
	for i, x := range vs {
		slices.Sort(x.hand)
		p50, p99 := x.hand[len(x.hand)/2], x.hand[len(x.hand)*99/100]
		if i == 0 {
			base = p50
		}
		sh := shares[x.name]
		total := 0
		for _, n := range sh {
			total += n
		}
		mean := float64(total) / float64(len(sh))
		dev := 0.0
		for _, n := range sh {
			dev = max(dev, abs(float64(n)-mean)/mean)
		}
		b.ReportMetric(float64(p50.Nanoseconds())/1e3, x.name+"-p50-µs")
		b.ReportMetric(float64(p99.Nanoseconds())/1e3, x.name+"-p99-µs")
		b.ReportMetric(dev*100, x.name+"-share-dev-%")
		if i > 0 {
			b.ReportMetric(float64(p50)/float64(base), x.name+"/bare-p50-x")
		}
		b.Logf("%s: %d acquisitions, shares %v", x.name, total, sh)
	}
}

func bareSeqContenders(tb testing.TB, pool *pgxpool.Pool, id int64) []contender {
	seq := seqOID(tb, pool)
	cs := make([]contender, contenders)
	for i := range cs {
		c := pinned(tb, pool)
		cs[i] = contender{
			lock: func(ctx context.Context) error {
				var tok int64
				var pid uint32
				return c.QueryRow(ctx, `SELECT pg_advisory_lock($1), nextval($2::oid::regclass), pg_backend_pid()`, id, seq).Scan(nil, &tok, &pid)
			},
			unlock: func(ctx context.Context) error {
				var ok bool
				var pid uint32
				return c.QueryRow(ctx, `SELECT pg_advisory_unlock($1), pg_backend_pid()`, id).Scan(&ok, &pid)
			},
		}
	}
	return cs
}

// seqOID returns the OID of pglock's default fencing sequence, creating it.
func seqOID(tb testing.TB, pool *pgxpool.Pool) uint32 {
	tb.Helper()
	ctx := context.Background()
	_, _ = pool.Exec(ctx, `CREATE SEQUENCE IF NOT EXISTS caesura_fence`)
	var oid uint32
	if err := pool.QueryRow(ctx, `SELECT 'caesura_fence'::regclass::oid`).Scan(&oid); err != nil {
		tb.Fatal(err)
	}
	return oid
}
