package pglock_test

import (
	"context"
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

// seqState reads the sequence's last value and the values it has logged
// beyond it (log_cnt). It may run on any goroutine.
func seqState(t *testing.T, pool *pgxpool.Pool, seq string) (last, logCnt int64) {
	t.Helper()
	if err := pool.QueryRow(context.Background(), `SELECT last_value, log_cnt FROM `+seq).Scan(&last, &logCnt); err != nil {
		t.Errorf("read %s: %v", seq, err)
	}
	return last, logCnt
}

// TestHorizonReadAfterToken: each acquiring statement (blocking, try,
// batch) reads the sequence's horizon after its own nextval. A new
// sequence's horizon is 1 before its first value and 33 after it (its first
// nextval logs 32 values ahead): a read before the nextval would give 1.
func TestHorizonReadAfterToken(t *testing.T) {
	pool := newPool(t, 4)
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
			seq := newSequence(t, pool)
			l := newLocker(t, pool, pglock.Options{Sequence: seq})
			hs, err := tc.acquire(l)
			if err != nil {
				t.Fatalf("acquire: %v", err)
			}
			for _, h := range hs {
				if err := h.Release(ctx); err != nil {
					t.Fatalf("Release: %v", err)
				}
			}
			last, logCnt := seqState(t, pool, seq)
			got, tracked := pglock.Horizon(l)
			if !tracked {
				t.Fatalf("Horizon: not tracked, want tracked for a role that may read the sequence")
			}
			if want := last + logCnt; got != want || want != 33 {
				t.Errorf("horizon: got %d, want %d (last_value %d + log_cnt %d, 33 for a new sequence)", got, want, last, logCnt)
			}
		})
	}
}

// TestAdvanceTakesTheSequenceFlush: in a contended run, the acquiring
// statements leave the sequence's WAL records (whose commits wait for a WAL
// flush) to the advances before waits. An acquiring statement wrote one when
// the sequence, read while its lock is held, still has its token as
// last_value and all 32 logged values left. Without advances one
// acquisition in 33 does (9 of the 300 counted). The count starts after a
// warm-up (an advance on a connection that has not prepared its statement
// yet may come late), and allows two: a checkpoint during the test, or an
// advance delayed on a loaded machine, may leave one to an acquisition.
func TestAdvanceTakesTheSequenceFlush(t *testing.T) {
	const warmup, total = 100, 400
	reader := newPool(t, 2)
	seq := newSequence(t, reader)
	l := newLocker(t, newPool(t, 4), pglock.Options{Sequence: seq})
	var logged, skipped int
	var prev uint64
	handOff(t, l, 4, total, func(i int, tok uint64) {
		last, logCnt := seqState(t, reader, seq)
		if i >= warmup {
			skipped += int(tok - prev - 1)
			if uint64(last) == tok && logCnt == 32 {
				logged++
			}
		}
		prev = tok
	})
	t.Logf("values drawn by advances: %d; acquiring statements that logged: %d", skipped, logged)
	if logged > 2 {
		t.Errorf("acquiring statements that wrote the sequence's WAL record: got %d, want at most 2 (values drawn by advances: %d)", logged, skipped)
	}
	if skipped == 0 {
		t.Errorf("values drawn by advances: got 0, want some")
	}
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
// needs) may not read it. Its Locker tracks no horizon and runs no advance,
// and every acquiring statement (blocking, try, batch; sequential and
// contended) works as without them, with increasing tokens.
func TestUsageOnly(t *testing.T) {
	admin := newPool(t, 2)
	seq := newSequence(t, admin)
	pool := roleWith(t, admin, seq, "USAGE")
	l := newLocker(t, pool, pglock.Options{Sequence: seq})
	acquireMany(t, l, 10)
	handOff(t, l, 3, 100, func(int, uint64) {})
	if h, tracked := pglock.Horizon(l); tracked || h != 0 {
		t.Errorf("Horizon: got %d, tracked %v; want 0, not tracked for a role with USAGE alone", h, tracked)
	}
}

// TestSelectRevoked: a role whose SELECT on the sequence is revoked after
// its Locker looked the sequence up keeps acquiring, sequentially and
// contended. The sequence is then set back, so that the Locker reads the
// horizon again: the acquiring statement finds no privilege and reads none,
// which stops the Locker's tracking.
func TestSelectRevoked(t *testing.T) {
	admin := newPool(t, 2)
	seq := newSequence(t, admin)
	pool := roleWith(t, admin, seq, "USAGE, SELECT")
	ctx := testCtx(t)
	l := newLocker(t, pool, pglock.Options{Sequence: seq})
	acquireMany(t, l, 20)
	if _, tracked := pglock.Horizon(l); !tracked {
		t.Fatalf("Horizon: not tracked, want tracked for a role with USAGE and SELECT")
	}
	for _, q := range []string{
		`REVOKE SELECT ON SEQUENCE ` + seq + ` FROM ` + pool.Config().ConnConfig.User,
		`SELECT setval('` + seq + `', 1)`,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	acquireMany(t, l, 10)
	handOff(t, l, 3, 100, func(int, uint64) {})
	if _, tracked := pglock.Horizon(l); tracked {
		t.Errorf("Horizon: tracked after SELECT was revoked, want not tracked")
	}
}

// roleWith returns a pool of a new role that is granted privileges on seq
// and nothing else; the role is dropped at the end of the test.
func roleWith(t *testing.T, admin *pgxpool.Pool, seq, privileges string) *pgxpool.Pool {
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
		`CREATE SEQUENCE ` + seq,
		`GRANT ` + privileges + ` ON SEQUENCE ` + seq + ` TO ` + role,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	cfg, err := pgxpool.ParseConfig(dsn())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.User = role
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, pool)
	return pool
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
