package pglock_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/pglock"
	"github.com/jackc/pgx/v5/pgxpool"
)

// newSequence returns the name of a fencing sequence of the test's own,
// dropped at its end (registered before any pool the test opens later, so
// after that pool is closed).
func newSequence(t *testing.T, admin *pgxpool.Pool) string {
	t.Helper()
	seq := "caesura_fence_test_" + randHex()
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), `DROP SEQUENCE IF EXISTS `+seq)
	})
	return seq
}

// cycle acquires l's lock "a" and releases it, and returns its token.
func cycle(t *testing.T, l *pglock.Locker) uint64 {
	t.Helper()
	ctx := testCtx(t)
	h, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	return h.(caesura.Fenced).Token()
}

// TestSessionSkip: a session's first token skips SessionSkip values of the
// sequence, whatever statement draws it (blocking, try, batch); its later
// tokens are the sequence's next values. A new session skips again.
func TestSessionSkip(t *testing.T) {
	admin := newPool(t, 2)
	ctx := testCtx(t)
	for _, tc := range []struct {
		name    string
		acquire func(l *pglock.Locker) ([]caesura.Held, error)
	}{
		{"Acquire", func(l *pglock.Locker) ([]caesura.Held, error) {
			h, err := l.Mutex("a").Acquire(ctx)
			return []caesura.Held{h}, err
		}},
		{"TryAcquire", func(l *pglock.Locker) ([]caesura.Held, error) {
			h, err := l.Mutex("a").(caesura.TryLocker).TryAcquire(ctx)
			return []caesura.Held{h}, err
		}},
		{"AcquireBatch", func(l *pglock.Locker) ([]caesura.Held, error) {
			ls := []caesura.Lock{l.Mutex("a"), l.Mutex("b")}
			return ls[0].(caesura.BatchLock).Batcher().AcquireBatch(ctx, ls)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq := newSequence(t, admin)
			pool := newPool(t, 1) // one connection: one session
			l := newLocker(t, pool, pglock.Options{Sequence: seq})
			draw := func() uint64 {
				t.Helper()
				hs, err := tc.acquire(l)
				if err != nil {
					t.Fatalf("acquire: %v", err)
				}
				for _, h := range hs {
					if err := h.Release(ctx); err != nil {
						t.Fatalf("Release: %v", err)
					}
				}
				return hs[0].(caesura.Fenced).Token()
			}
			want := uint64(1 + pglock.SessionSkip)
			if got := draw(); got != want {
				t.Fatalf("first token of a new sequence: got %d, want %d (1 + SessionSkip)", got, want)
			}
			if !pglock.FastTokens(l) {
				t.Fatalf("FastTokens: false for the sequence's owner, want true")
			}
			for range 3 {
				want++
				if got := draw(); got != want {
					t.Fatalf("token on the same session: got %d, want %d (no skip)", got, want)
				}
			}
			pool.Reset() // closes the connection: the next one is a new session
			want += 1 + pglock.SessionSkip
			if got := draw(); got != want {
				t.Fatalf("token on a new session: got %d, want %d (a skip)", got, want)
			}
		})
	}
}

// TestTokensSurviveCrash: tokens drawn without waiting for a WAL flush stay
// increasing across a crash of the server that loses them. The server keeps
// its WAL in memory for 10s (wal_writer_delay), so an immediate stop loses
// the sequence's latest WAL records, and the sequence comes back below the
// tokens it handed out; the next token is still above them all.
func TestTokensSurviveCrash(t *testing.T) {
	srv := startOwnServerOn(t, 0, "wal_writer_delay=10s")
	cfg := srv.poolConfig()
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, pool)
	ctx := testCtx(t)
	l := newLocker(t, pool, pglock.Options{})
	var last uint64
	for range 200 {
		last = cycle(t, l)
	}
	if !pglock.FastTokens(l) {
		t.Fatalf("FastTokens: false, want true")
	}
	srv.restart()
	var back int64
	for range 10 { // the pool may first hand out a connection that died
		if err = pool.QueryRow(ctx, `SELECT last_value FROM `+pglock.DefaultSequence).Scan(&back); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("read the sequence after the restart: %v", err)
	}
	t.Logf("last token before the crash %d; the sequence's last value after it %d", last, back)
	if uint64(back) >= last {
		t.Fatalf("the sequence came back at %d, not below the last token %d: the crash lost no WAL, and the test shows nothing", back, last)
	}
	var tok uint64
	for range 10 {
		h, err := l.Mutex("a").Acquire(ctx)
		if err != nil {
			continue
		}
		tok = h.(caesura.Fenced).Token()
		if err := h.Release(ctx); err != nil {
			t.Fatalf("Release: %v", err)
		}
		break
	}
	if tok <= last {
		t.Fatalf("first token after the crash: got %d, want more than the last one before it, %d", tok, last)
	}
}

// TestTokensWithoutFlush: on a server that flushes its WAL with fsync, 660
// contended acquisitions by 4 sessions cost 20 flushes when each token waits
// for its WAL record (a role without UPDATE on the sequence), and at most
// five with the session skip (one per session's skip, and one spare for the
// server's background work).
func TestTokensWithoutFlush(t *testing.T) {
	srv := startOwnServerOn(t, 0, "fsync=on", "wal_writer_delay=10s")
	admin, err := pgxpool.NewWithConfig(context.Background(), srv.poolConfig())
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, admin)
	seq := newSequence(t, admin)
	for _, tc := range []struct {
		privileges string
		fast       bool
	}{
		{"USAGE, UPDATE", true},
		{"USAGE", false},
	} {
		t.Run(strings.ReplaceAll(tc.privileges, ", ", "+"), func(t *testing.T) {
			const workers = 4
			pool, role := roleWith(t, admin, seq, tc.privileges)
			l := newLocker(t, pool, pglock.Options{Sequence: seq})
			before := walSyncs(t, admin)
			handOff(t, l, workers, 660, func(int, uint64) {})
			if got := pglock.FastTokens(l); got != tc.fast {
				t.Fatalf("FastTokens: got %v, want %v", got, tc.fast)
			}
			pool.Close() // a session reports its WAL statistics when it ends
			eventually(t, "the role's sessions ended", func() bool {
				var n int
				_ = admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE usename = $1`, role).Scan(&n)
				return n == 0
			})
			syncs := walSyncs(t, admin) - before
			t.Logf("WAL flushes: %d", syncs)
			if tc.fast && syncs > workers+1 {
				t.Errorf("WAL flushes with the session skip: got %d, want at most %d", syncs, workers+1)
			}
			if !tc.fast && syncs < 18 {
				t.Errorf("WAL flushes with durable tokens: got %d, want about 20 (the test's measure is broken)", syncs)
			}
		})
	}
}

// walSyncs reads the server's count of WAL flushes.
func walSyncs(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(testCtx(t), `SELECT wal_sync FROM pg_stat_wal`).Scan(&n); err != nil {
		t.Fatalf("pg_stat_wal: %v", err)
	}
	return n
}

// handOff runs total acquisitions of one key by workers goroutines, each
// holding it for 100µs, and calls held with the acquisition's number in
// grant order and its token while the lock is held, checking that tokens
// increase in grant order.
func handOff(t *testing.T, l *pglock.Locker, workers, total int, held func(i int, tok uint64)) {
	t.Helper()
	ctx := testCtx(t)
	var (
		mu      sync.Mutex
		n       int // acquisitions started
		granted int
		prev    uint64
		wg      sync.WaitGroup
	)
	for range workers {
		m := l.Mutex("handoff")
		wg.Go(func() {
			for {
				mu.Lock()
				if n == total {
					mu.Unlock()
					return
				}
				n++
				mu.Unlock()
				h, err := m.Acquire(ctx)
				if err != nil {
					t.Errorf("Acquire: %v", err)
					return
				}
				tok := h.(caesura.Fenced).Token()
				mu.Lock() // the lock orders these; mu tells the race detector
				if tok <= prev {
					t.Errorf("token %d after %d: want strictly increasing in grant order", tok, prev)
				}
				held(granted, tok)
				granted++
				prev = tok
				mu.Unlock()
				start := time.Now()
				for time.Since(start) < 100*time.Microsecond {
				}
				if err := h.Release(ctx); err != nil {
					t.Errorf("Release: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestUsageOnly: a role granted only USAGE on the sequence (what nextval
// needs) may not setval it. Its tokens wait for their WAL records, skip
// nothing, and every acquiring statement (blocking, try, batch; sequential
// and contended) works, with increasing tokens.
func TestUsageOnly(t *testing.T) {
	admin := newPool(t, 2)
	seq := newSequence(t, admin)
	pool, _ := roleWith(t, admin, seq, "USAGE")
	l := newLocker(t, pool, pglock.Options{Sequence: seq})
	acquireMany(t, l, 10)
	handOff(t, l, 3, 100, func(int, uint64) {})
	if pglock.FastTokens(l) {
		t.Errorf("FastTokens: true for a role with USAGE alone, want false")
	}
	if tok := cycle(t, l); tok >= pglock.SessionSkip {
		t.Errorf("token %d: a role with USAGE alone skipped values", tok)
	}
}

// TestUpdateRevoked: a role whose UPDATE on the sequence is revoked after
// its Locker looked the sequence up keeps acquiring with increasing tokens,
// on its old sessions and on new ones (which cannot skip: their tokens wait
// for the WAL instead).
func TestUpdateRevoked(t *testing.T) {
	admin := newPool(t, 2)
	seq := newSequence(t, admin)
	pool, role := roleWith(t, admin, seq, "USAGE, UPDATE")
	ctx := testCtx(t)
	l := newLocker(t, pool, pglock.Options{Sequence: seq})
	acquireMany(t, l, 5)
	if !pglock.FastTokens(l) {
		t.Fatalf("FastTokens: false for a role with UPDATE, want true")
	}
	before := cycle(t, l)
	if _, err := admin.Exec(ctx, `REVOKE UPDATE ON SEQUENCE `+seq+` FROM `+role); err != nil {
		t.Fatalf("REVOKE: %v", err)
	}
	if tok := cycle(t, l); tok <= before {
		t.Fatalf("token on an old session after the REVOKE: %d after %d", tok, before)
	}
	pool.Reset() // new sessions
	acquireMany(t, l, 5)
	handOff(t, l, 3, 100, func(int, uint64) {})
	if tok := cycle(t, l); tok <= before || tok > before+pglock.SessionSkip {
		t.Errorf("token on a new session after the REVOKE: %d, want above %d without a skip", tok, before)
	}
}

// TestBadSequence: a sequence that cannot give increasing tokens, or a
// relation that is not a sequence, makes every acquisition fail with an
// error that names the problem, and leaves no lock held.
func TestBadSequence(t *testing.T) {
	pool := newPool(t, 2)
	ctx := testCtx(t)
	for _, tc := range []struct{ create, want string }{
		{`CREATE SEQUENCE %s CACHE 10`, "CACHE 10"},
		{`CREATE SEQUENCE %s INCREMENT -1`, "INCREMENT -1"},
		{`CREATE SEQUENCE %s CYCLE`, "CYCLE"},
		{`CREATE SEQUENCE %s MINVALUE 0`, "MINVALUE 0"},
		{`CREATE TABLE %s (x int)`, "not a sequence"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			name := "caesura_bad_" + randHex()
			if _, err := pool.Exec(ctx, strings.Replace(tc.create, "%s", name, 1)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_, _ = pool.Exec(context.Background(), `DROP SEQUENCE IF EXISTS `+name)
				_, _ = pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+name)
			})
			l := newLocker(t, pool, pglock.Options{Sequence: name})
			for _, acquire := range []func() error{
				func() error { _, err := l.Mutex("a").Acquire(ctx); return err },
				func() error { _, err := l.Mutex("a").(caesura.TryLocker).TryAcquire(ctx); return err },
			} {
				err := acquire()
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), name) {
					t.Errorf("acquire: got %v, want an error naming %s and %q", err, name, tc.want)
				}
				if errors.Is(err, caesura.ErrNotAcquired) {
					t.Errorf("acquire: %v matches ErrNotAcquired, want a plain failure", err)
				}
			}
			if rs := locksOf(t, pool, l.ID("a")); len(rs) != 0 {
				t.Errorf("pg_locks: got %v, want none", rs)
			}
		})
	}
}

// roleWith returns a pool of a new role (on admin's server) that is granted
// privileges on seq, which it creates if needed, and nothing else; the
// role is dropped at the end of the test.
func roleWith(t *testing.T, admin *pgxpool.Pool, seq, privileges string) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := testCtx(t)
	role := "pglock_role_" + randHex()
	t.Cleanup(func() {
		bg := context.Background()
		_, _ = admin.Exec(bg, `REVOKE ALL ON SEQUENCE `+seq+` FROM `+role)
		_, _ = admin.Exec(bg, `DROP ROLE IF EXISTS `+role)
	})
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`CREATE SEQUENCE IF NOT EXISTS ` + seq,
		`GRANT ` + privileges + ` ON SEQUENCE ` + seq + ` TO ` + role,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	cfg := admin.Config()
	cfg.ConnConfig.User = role
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, pool)
	return pool, role
}

// acquireMany runs n rounds of a blocking acquire, a try-acquire and a
// batch of two keys, each released at once, and checks that every token
// exceeds the previous one.
func acquireMany(t *testing.T, l *pglock.Locker, n int) {
	t.Helper()
	ctx := testCtx(t)
	a, b := l.Mutex("a"), l.Mutex("b")
	var prev uint64
	next := func(what string, hs []caesura.Held, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, h := range hs {
			if tok := h.(caesura.Fenced).Token(); tok <= prev {
				t.Fatalf("%s: token %d after %d, want more", what, tok, prev)
			}
		}
		prev = hs[0].(caesura.Fenced).Token()
		for _, h := range hs {
			if err := h.Release(ctx); err != nil {
				t.Fatalf("%s: Release: %v", what, err)
			}
		}
	}
	for range n {
		h, err := a.Acquire(ctx)
		next("Acquire", []caesura.Held{h}, err)
		h, err = a.(caesura.TryLocker).TryAcquire(ctx)
		next("TryAcquire", []caesura.Held{h}, err)
		hs, err := a.(caesura.BatchLock).Batcher().AcquireBatch(ctx, []caesura.Lock{a, b})
		next("AcquireBatch", hs, err)
	}
}
