package pglock_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
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
	if os.Getenv(workerEnv) != "" {
		os.Exit(workerMain())
	}
	// The examples cannot skip: without a server, skip the whole package
	// (outside CI) with a clear message.
	if err := serverCheck(); err != nil && os.Getenv("CI") != "true" {
		fmt.Printf("SKIP: no PostgreSQL at %s (set CAESURA_PG_DSN): %v\n", dsn(), err)
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// defaultDSN is the PostgreSQL of the development and CI machines.
const defaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// dsn returns the test server's DSN: CAESURA_PG_DSN, or the local default.
func dsn() string {
	if d := os.Getenv("CAESURA_PG_DSN"); d != "" {
		return d
	}
	return defaultDSN
}

var (
	serverOnce sync.Once
	serverErr  error
)

// requireServer skips the test when no PostgreSQL answers (fails under
// CI=true).
func requireServer(t testing.TB) {
	t.Helper()
	if err := serverCheck(); err != nil {
		msg := fmt.Sprintf("no PostgreSQL at %s (set CAESURA_PG_DSN): %v", dsn(), err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// serverCheck connects once and reports whether the server answers.
func serverCheck() error {
	serverOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn())
		if err != nil {
			serverErr = err
			return
		}
		serverErr = c.Ping(ctx)
		_ = c.Close(ctx)
	})
	return serverErr
}

// newPool returns a pool closed at the end of the test.
func newPool(t testing.TB, maxConns int) *pgxpool.Pool {
	t.Helper()
	requireServer(t)
	cfg, err := pgxpool.ParseConfig(dsn())
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	cfg.MaxConns = int32(maxConns)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgxpool: %v", err)
	}
	closePool(t, pool)
	return pool
}

// closePool closes pool at the end of the test. pool.Close waits for every
// acquired connection: a test that failed while holding a lock would hang
// there, so the wait is bounded and reported.
func closePool(t testing.TB, pool *pgxpool.Pool) {
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() {
			pool.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("pool.Close blocked for 10s: a pinned connection was never released")
		}
	})
}

// newLocker returns a Locker whose keys are unique to this test run.
func newLocker(t testing.TB, pool *pgxpool.Pool, opts pglock.Options) *pglock.Locker {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = "pgtest:" + randHex() + ":"
	}
	l, err := pglock.New(pool, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l
}

func randHex() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// lockRow is one advisory lock entry of pg_locks.
type lockRow struct {
	pid     int32
	granted bool
}

const sqlLocksOf = `SELECT pid, granted FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((classid::bigint << 32) | objid::bigint) = $1 ORDER BY granted DESC, pid`

// locksOf returns the pg_locks entries (granted and waiting) of a lock id.
func locksOf(t testing.TB, pool *pgxpool.Pool, id int64) []lockRow {
	t.Helper()
	rows, err := pool.Query(testCtx(t), sqlLocksOf, id)
	if err != nil {
		t.Fatalf("pg_locks: %v", err)
	}
	rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (lockRow, error) {
		var x lockRow
		err := r.Scan(&x.pid, &x.granted)
		return x, err
	})
	if err != nil {
		t.Fatalf("pg_locks: %v", err)
	}
	return rs
}

// eventually polls cond for up to 5s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// holderPID returns the backend pid holding id, or 0.
func holderPID(t testing.TB, pool *pgxpool.Pool, id int64) int32 {
	t.Helper()
	for _, r := range locksOf(t, pool, id) {
		if r.granted {
			return r.pid
		}
	}
	return 0
}

// terminate ends the session holding id with pg_terminate_backend.
func terminate(t testing.TB, pool *pgxpool.Pool, id int64) {
	t.Helper()
	pid := holderPID(t, pool, id)
	if pid == 0 {
		t.Fatalf("no session holds lock id %d", id)
	}
	var ok bool
	if err := pool.QueryRow(testCtx(t), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v, %v", pid, ok, err)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	pool := newPool(t, 2)
	for _, tc := range []struct {
		name string
		pool *pgxpool.Pool
		opts pglock.Options
	}{
		{"nil pool", nil, pglock.Options{}},
		{"negative check interval", pool, pglock.Options{CheckInterval: -1}},
		{"negative ping interval", pool, pglock.Options{PingInterval: -1}},
		{"empty sequence part", pool, pglock.Options{Sequence: "a..b"}},
	} {
		if _, err := pglock.New(tc.pool, tc.opts); err == nil {
			t.Errorf("%s: New: got nil error, want one", tc.name)
		}
	}
}

func TestKeyAndID(t *testing.T) {
	pool := newPool(t, 2)
	l := newLocker(t, pool, pglock.Options{Prefix: "ns1:"})
	if got, want := l.Mutex("a").Key(), "ns1:a"; got != want {
		t.Errorf("Key: got %q, want %q", got, want)
	}
	// The documented hash: first 8 bytes of SHA-256("ns1:a"), big-endian.
	sum := sha256.Sum256([]byte("ns1:a"))
	if got, want := l.ID("a"), int64(binary.BigEndian.Uint64(sum[:8])); got != want {
		t.Errorf("ID: got %#x, want %#x", got, want)
	}
	l2 := newLocker(t, pool, pglock.Options{Prefix: "ns2:"})
	if l.ID("a") == l2.ID("a") {
		t.Error("two namespaces map a name to the same id")
	}
	if l.ID("a") != l.ID("a") || l.ID("a") == l.ID("b") {
		t.Error("ID is not a stable function of the key")
	}
}

// TestAcquireReleaseClean: a held lock shows in pg_locks on one session; after
// Release nothing is left on that session, and the connection went back to
// the pool clean.
func TestAcquireReleaseClean(t *testing.T) {
	pool := newPool(t, 4)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	h, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	rs := locksOf(t, pool, l.ID("a"))
	if len(rs) != 1 || !rs[0].granted {
		t.Fatalf("pg_locks while held: got %v, want one granted entry", rs)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if rs := locksOf(t, pool, l.ID("a")); len(rs) != 0 {
		t.Fatalf("pg_locks after Release: got %v, want none", rs)
	}
	// Every idle connection of the pool holds no advisory lock.
	conns := pool.AcquireAllIdle(ctx)
	for _, c := range conns {
		var n int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()`).Scan(&n); err != nil {
			t.Fatalf("pg_locks: %v", err)
		}
		if n != 0 {
			t.Errorf("a pooled connection holds %d advisory locks, want 0", n)
		}
		c.Release()
	}
	if len(conns) == 0 {
		t.Error("the pinned connection did not go back to the pool")
	}
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("second Release: got %v, want ErrNotHeld", err)
	}
}

func TestTryAcquire(t *testing.T) {
	pool := newPool(t, 4)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	m := l.Mutex("a").(caesura.TryLocker)
	h, err := m.TryAcquire(ctx)
	if err != nil {
		t.Fatalf("TryAcquire of a free lock: %v", err)
	}
	if _, err := m.TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("TryAcquire of a held lock: got %v, want ErrNotAcquired", err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	h, err = m.TryAcquire(ctx)
	if err != nil {
		t.Fatalf("TryAcquire after Release: %v", err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if rs := locksOf(t, pool, l.ID("a")); len(rs) != 0 {
		t.Fatalf("pg_locks after the failed try and releases: got %v, want none", rs)
	}
}

// TestCancelWaitingAcquire: a waiting Acquire whose context ends returns
// ErrNotAcquired and the context's error, and leaves nothing queued or held
// in pg_locks.
func TestCancelWaitingAcquire(t *testing.T) {
	pool := newPool(t, 4)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	id := l.ID("a")
	holder, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	holderPid := holderPID(t, pool, id)

	wctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := l.Mutex("a").Acquire(wctx)
		errc <- err
	}()
	eventually(t, "the waiter queues on the server", func() bool { return len(locksOf(t, pool, id)) == 2 })
	start := time.Now()
	cancel()
	err = <-errc
	t.Logf("cancelled wait returned after %v", time.Since(start))
	if !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Acquire: got %v, want ErrNotAcquired and context.Canceled", err)
	}
	// Nothing but the holder's granted entry, right away: the server-side
	// wait was cancelled, not left to time out.
	if rs := locksOf(t, pool, id); len(rs) != 1 || rs[0].pid != holderPid || !rs[0].granted {
		t.Fatalf("pg_locks after the cancelled wait: got %v, want only the holder %d", rs, holderPid)
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if rs := locksOf(t, pool, id); len(rs) != 0 {
		t.Fatalf("pg_locks after Release: got %v, want none", rs)
	}
}

// TestCancelRacingGrant cancels waits at the moment the lock is handed to
// them, many times: whichever wins, nothing stays held or queued.
func TestCancelRacingGrant(t *testing.T) {
	pool := newPool(t, 6)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	id := l.ID("a")
	var got, cancelled int
	for i := range 30 {
		holder, err := l.Mutex("a").Acquire(ctx)
		if err != nil {
			t.Fatalf("Acquire: %v", err)
		}
		wctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		var h caesura.Held
		go func() {
			var err error
			h, err = l.Mutex("a").Acquire(wctx)
			errc <- err
		}()
		eventually(t, "the waiter queues", func() bool { return len(locksOf(t, pool, id)) == 2 })
		// Release and cancel together, with a jitter between them.
		go func() {
			time.Sleep(time.Duration(i%10) * 20 * time.Microsecond)
			cancel()
		}()
		if err := holder.Release(ctx); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if err := <-errc; err == nil {
			got++
			if err := h.Release(ctx); err != nil {
				t.Fatalf("Release by the waiter: %v", err)
			}
		} else if errors.Is(err, caesura.ErrNotAcquired) && errors.Is(err, context.Canceled) {
			cancelled++
		} else {
			t.Fatalf("waiter: got %v, want nil or ErrNotAcquired+Canceled", err)
		}
		cancel()
		// A grant that lost the race was freed before Acquire returned.
		if rs := locksOf(t, pool, id); len(rs) != 0 {
			t.Fatalf("race %d: pg_locks after the waiter returned: got %v, want none", i, rs)
		}
	}
	t.Logf("30 races: waiter got the lock %d times, was cancelled %d times", got, cancelled)
}

// TestBatchOneStatementInKeyOrder: 8 keys in one statement on one session,
// taken in key order: with the 4th key taken elsewhere, the batch holds the
// first three and waits, holding none of the keys above.
func TestBatchOneStatementInKeyOrder(t *testing.T) {
	pool := newPool(t, 4)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	var names []string
	for i := range 8 {
		names = append(names, fmt.Sprintf("k%d", i))
	}
	locks := make([]caesura.Lock, len(names))
	for i, n := range names {
		locks[i] = l.Mutex(n)
	}
	// The ids' order differs from the keys' order (checked, so the test
	// can tell key order from id order).
	ids := make([]int64, len(names))
	for i, n := range names {
		ids[i] = l.ID(n)
	}
	if slices.IsSorted(ids) {
		t.Fatal("test setup: ids happen to be sorted like the keys; pick other names")
	}
	b := locks[0].(caesura.BatchLock).Batcher()
	if locks[5].(caesura.BatchLock).Batcher() != b {
		t.Fatal("two locks of one Locker return different Batchers")
	}

	blocker, err := locks[3].Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	blockerPid := holderPID(t, pool, ids[3])
	type result struct {
		hs  []caesura.Held
		err error
	}
	done := make(chan result, 1)
	go func() {
		hs, err := b.AcquireBatch(ctx, locks)
		done <- result{hs, err}
	}()
	eventually(t, "the batch waits for the 4th key", func() bool { return len(locksOf(t, pool, ids[3])) == 2 })
	var batchPid int32
	for _, r := range locksOf(t, pool, ids[3]) {
		if !r.granted {
			batchPid = r.pid
		}
	}
	for i, id := range ids {
		rs := locksOf(t, pool, id)
		switch {
		case i < 3:
			if len(rs) != 1 || !rs[0].granted || rs[0].pid != batchPid {
				t.Errorf("key %d (below the blocked one): got %v, want held by the batch's session %d", i, rs, batchPid)
			}
		case i > 3:
			if len(rs) != 0 {
				t.Errorf("key %d (above the blocked one): got %v, want untouched", i, rs)
			}
		}
	}
	if err := blocker.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("AcquireBatch: %v", r.err)
	}
	if len(r.hs) != len(locks) {
		t.Fatalf("AcquireBatch returned %d Helds, want %d", len(r.hs), len(locks))
	}
	for i, id := range ids {
		rs := locksOf(t, pool, id)
		if len(rs) != 1 || rs[0].pid != batchPid || rs[0].pid == blockerPid {
			t.Errorf("key %d after the batch: got %v, want held by session %d", i, rs, batchPid)
		}
	}
	// One token for the batch, drawn after its last lock was granted: above
	// the token of the blocker, which held a key of the batch before it.
	tok := r.hs[0].(caesura.Fenced).Token()
	for i, h := range r.hs {
		if got := h.(caesura.Fenced).Token(); got != tok {
			t.Errorf("token of key %d: got %d, want the batch's %d", i, got, tok)
		}
	}
	if bt := blocker.(caesura.Fenced).Token(); tok <= bt {
		t.Errorf("batch token %d, want above the previous holder's %d", tok, bt)
	}
	// The locks stay held until the last Held of the batch is released.
	for i := len(r.hs) - 1; i >= 0; i-- {
		if err := r.hs[i].Release(ctx); err != nil {
			t.Fatalf("Release %d: %v", i, err)
		}
	}
	for i, id := range ids {
		if rs := locksOf(t, pool, id); len(rs) != 0 {
			t.Errorf("key %d after releasing the batch: got %v, want none", i, rs)
		}
	}
	if err := r.hs[0].Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("second Release of a batch Held: got %v, want ErrNotHeld", err)
	}
}

// TestBatchCancelLeavesNothing: a batch cancelled while it waits holds
// nothing afterwards, not even the keys it had already been granted.
func TestBatchCancelLeavesNothing(t *testing.T) {
	pool := newPool(t, 4)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	locks := []caesura.Lock{l.Mutex("a"), l.Mutex("b"), l.Mutex("c")}
	blocker, err := locks[1].Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = locks[0].(caesura.BatchLock).Batcher().AcquireBatch(wctx, locks)
	if !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AcquireBatch: got %v, want ErrNotAcquired and DeadlineExceeded", err)
	}
	// Freed before AcquireBatch returned, though the batch held it.
	if rs := locksOf(t, pool, l.ID("a")); len(rs) != 0 {
		t.Fatalf("key a: got %v, want none", rs)
	}
	if rs := locksOf(t, pool, l.ID("b")); len(rs) != 1 {
		t.Fatalf("key b: got %v, want only the blocker", rs)
	}
	if rs := locksOf(t, pool, l.ID("c")); len(rs) != 0 {
		t.Fatalf("key c: got %v, want none", rs)
	}
	if err := blocker.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

// TestFencingTokenDrawnAfterGrant: a waiter's token is drawn when its lock is
// granted, not when it starts waiting, so it exceeds every token issued while
// it waited, including the previous holder's.
func TestFencingTokenDrawnAfterGrant(t *testing.T) {
	pool := newPool(t, 4)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	h1, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	type result struct {
		h   caesura.Held
		err error
	}
	done := make(chan result, 1)
	go func() {
		h, err := l.Mutex("a").Acquire(ctx)
		done <- result{h, err}
	}()
	eventually(t, "the waiter queues", func() bool { return len(locksOf(t, pool, l.ID("a"))) == 2 })
	h2, err := l.Mutex("b").Acquire(ctx) // a token issued while the waiter waits
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	t1, t2 := h1.(caesura.Fenced).Token(), h2.(caesura.Fenced).Token()
	if err := h1.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("waiter: %v", r.err)
	}
	t3 := r.h.(caesura.Fenced).Token()
	if !(t1 < t2 && t2 < t3) {
		t.Fatalf("tokens: holder %d, issued during the wait %d, waiter %d: want strictly increasing", t1, t2, t3)
	}
	for _, h := range []caesura.Held{h2, r.h} {
		if err := h.Release(ctx); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}
}

// TestSequenceCreatedOnFirstUse: the fencing sequence is created by the first
// acquire when it does not exist.
func TestSequenceCreatedOnFirstUse(t *testing.T) {
	pool := newPool(t, 4)
	ctx := testCtx(t)
	seq := "caesura_fence_test_" + randHex()
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP SEQUENCE IF EXISTS `+seq)
	})
	l := newLocker(t, pool, pglock.Options{Sequence: seq})
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, seq).Scan(&exists); err != nil || exists {
		t.Fatalf("before: sequence exists=%v err=%v, want absent", exists, err)
	}
	h, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if got := h.(caesura.Fenced).Token(); got != 1+pglock.SessionSkip {
		t.Errorf("first token of a new sequence: got %d, want %d (1 + SessionSkip)", got, 1+pglock.SessionSkip)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, seq).Scan(&exists); err != nil || !exists {
		t.Fatalf("after: sequence exists=%v err=%v, want created", exists, err)
	}
}

// TestTerminatedHolderIsLost: pg_terminate_backend of the holder's session
// cancels its Lost context with a LostError within about a second, another
// worker gets the lock, and the stale Release changes nothing.
func TestTerminatedHolderIsLost(t *testing.T) {
	pool := newPool(t, 4)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	h, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	lost := h.(caesura.Lossy).Lost()
	start := time.Now()
	terminate(t, pool, l.ID("a"))
	select {
	case <-lost.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("Lost() not cancelled within 2s of pg_terminate_backend")
	}
	t.Logf("loss reported after %v", time.Since(start))
	var le *caesura.LostError
	if c := context.Cause(lost); !errors.As(c, &le) || !errors.Is(c, caesura.ErrLockLost) || le.Key != l.Mutex("a").Key() {
		t.Fatalf("Lost() cause: got %v, want a *caesura.LostError for %q", c, l.Mutex("a").Key())
	}
	h2, err := l.Mutex("a").(caesura.TryLocker).TryAcquire(ctx)
	if err != nil {
		t.Fatalf("another worker's TryAcquire after the loss: %v", err)
	}
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release of the lost Held: got %v, want ErrNotHeld", err)
	}
	if rs := locksOf(t, pool, l.ID("a")); len(rs) != 1 || !rs[0].granted {
		t.Fatalf("the stale Release changed the new holder's lock: pg_locks %v", rs)
	}
	if err := h2.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

// TestTerminatedBatchIsLost: every Held of a batch reports the loss of their
// shared session.
func TestTerminatedBatchIsLost(t *testing.T) {
	pool := newPool(t, 4)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	locks := []caesura.Lock{l.Mutex("a"), l.Mutex("b"), l.Mutex("c")}
	hs, err := locks[0].(caesura.BatchLock).Batcher().AcquireBatch(ctx, locks)
	if err != nil {
		t.Fatalf("AcquireBatch: %v", err)
	}
	terminate(t, pool, l.ID("b"))
	for i, h := range hs {
		select {
		case <-h.(caesura.Lossy).Lost().Done():
		case <-time.After(2 * time.Second):
			t.Fatalf("Held %d: Lost() not cancelled within 2s", i)
		}
		if c := context.Cause(h.(caesura.Lossy).Lost()); !errors.Is(c, caesura.ErrLockLost) {
			t.Errorf("Held %d: cause %v, want ErrLockLost", i, c)
		}
	}
	for i, h := range hs {
		if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
			t.Errorf("Release %d of a lost batch: got %v, want ErrNotHeld", i, err)
		}
	}
}

// TestRunLostCancelsFunction: through the core, a terminated session cancels
// the function's context with the lock-lost cause, and Run reports it.
func TestRunLostCancelsFunction(t *testing.T) {
	pool := newPool(t, 4)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l.Mutex("a")); err != nil {
			return err
		}
		terminate(t, pool, l.ID("a"))
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
			return errors.New("context not cancelled within 2s of the loss")
		}
		if c := context.Cause(ctx); !errors.Is(c, caesura.ErrLockLost) {
			return fmt.Errorf("cause: got %v, want ErrLockLost", c)
		}
		return nil
	})
	if !errors.Is(err, caesura.ErrLockLost) {
		t.Fatalf("Run: got %v, want ErrLockLost", err)
	}
}

// TestErrorsMentionKey: errors name the key and the package.
func TestErrorsMentionKey(t *testing.T) {
	pool := newPool(t, 4)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	h, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	defer h.Release(ctx)
	_, err = l.Mutex("a").(caesura.TryLocker).TryAcquire(ctx)
	if err == nil || !strings.Contains(err.Error(), l.Mutex("a").Key()) || !strings.HasPrefix(err.Error(), "pglock: ") {
		t.Fatalf("error %q: want it to start with \"pglock: \" and name the key", err)
	}
	if _, err := l.Mutex("").Acquire(ctx); !errors.Is(err, caesura.ErrInvalidLock) {
		t.Fatalf("Acquire of an empty name: got %v, want ErrInvalidLock", err)
	}
}

// TestReleaseWithDoneContext: a Release whose context is already done still
// frees the lock (by ending the session).
func TestReleaseWithDoneContext(t *testing.T) {
	pool := newPool(t, 4)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	h, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := h.Release(done); err != nil {
		t.Fatalf("Release with a done context: %v", err)
	}
	if rs := locksOf(t, pool, l.ID("a")); len(rs) != 0 {
		t.Fatalf("pg_locks after Release: got %v, want none", rs)
	}
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("second Release: got %v, want ErrNotHeld", err)
	}
}

// TestReleaseAfterUnnoticedLoss: a session that ends before the liveness
// check notices makes Release return ErrNotHeld.
func TestReleaseAfterUnnoticedLoss(t *testing.T) {
	pool := newPool(t, 4)
	l := newLocker(t, pool, pglock.Options{CheckInterval: time.Hour, PingInterval: time.Hour})
	ctx := testCtx(t)
	h, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	terminate(t, pool, l.ID("a"))
	eventually(t, "the session ends", func() bool { return len(locksOf(t, pool, l.ID("a"))) == 0 })
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release: got %v, want ErrNotHeld", err)
	}
}

// TestSequenceRecreated: after the fencing sequence is dropped, one acquire
// fails, and the next creates it anew and succeeds.
func TestSequenceRecreated(t *testing.T) {
	pool := newPool(t, 4)
	ctx := testCtx(t)
	seq := "caesura_fence_test_" + randHex()
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), `DROP SEQUENCE IF EXISTS `+seq)
	})
	l := newLocker(t, pool, pglock.Options{Sequence: seq})
	h, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, err := pool.Exec(ctx, `DROP SEQUENCE `+seq); err != nil {
		t.Fatalf("drop: %v", err)
	}
	if h, err := l.Mutex("a").Acquire(ctx); err == nil {
		_ = h.Release(ctx)
		t.Log("the acquire right after the drop succeeded (a cached plan saw the new sequence)")
	}
	h, err = l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire after the sequence was dropped: %v", err)
	}
	if got := h.(caesura.Fenced).Token(); got != 1+pglock.SessionSkip {
		t.Errorf("token from the new sequence: got %d, want %d (1 + SessionSkip)", got, 1+pglock.SessionSkip)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if rs := locksOf(t, pool, l.ID("a")); len(rs) != 0 {
		t.Fatalf("pg_locks: got %v, want none", rs)
	}
}

// TestCancelWhenCancelRequestsFail: when the server cannot be reached for a
// cancel request, the wait is aborted by closing the connection, and the
// still-queued backend is terminated (and waited for) from another
// connection: nothing stays queued once Acquire returns.
func TestCancelWhenCancelRequestsFail(t *testing.T) {
	requireServer(t)
	cfg, err := pgxpool.ParseConfig(dsn())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 4
	var refuse atomic.Bool
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if refuse.Load() {
			return nil, errors.New("test: dial refused")
		}
		return dial(ctx, network, addr)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, pool)
	ctx := testCtx(t)
	// Open three connections while dialing works.
	var cs []*pgxpool.Conn
	for range 3 {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	for _, c := range cs {
		c.Release()
	}
	l := newLocker(t, pool, pglock.Options{})
	id := l.ID("a")
	holder, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	refuse.Store(true)
	defer refuse.Store(false)
	wctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := l.Mutex("a").Acquire(wctx)
		errc <- err
	}()
	eventually(t, "the waiter queues", func() bool { return len(locksOf(t, pool, id)) == 2 })
	cancel()
	if err := <-errc; !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Acquire: got %v, want ErrNotAcquired and context.Canceled", err)
	}
	if rs := locksOf(t, pool, id); len(rs) != 1 || !rs[0].granted {
		t.Fatalf("pg_locks after the aborted wait: got %v, want only the holder", rs)
	}
	refuse.Store(false)
	if err := holder.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if rs := locksOf(t, pool, id); len(rs) != 0 {
		t.Fatalf("pg_locks after Release: got %v, want none", rs)
	}
}
