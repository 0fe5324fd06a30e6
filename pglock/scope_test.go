package pglock_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
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

// stmtLog records every statement a pool's connections run, with the
// backend pid of the connection.
type stmtLog struct {
	mu    sync.Mutex
	stmts []loggedStmt
}

type loggedStmt struct {
	sql string
	pid int32
}

func (s *stmtLog) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	s.stmts = append(s.stmts, loggedStmt{sql: d.SQL, pid: int32(c.PgConn().PID())})
	s.mu.Unlock()
	return ctx
}

func (s *stmtLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (s *stmtLog) reset() {
	s.mu.Lock()
	s.stmts = nil
	s.mu.Unlock()
}

// matching returns the logged statements whose SQL contains substr.
func (s *stmtLog) matching(substr string) []loggedStmt {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []loggedStmt
	for _, x := range s.stmts {
		if strings.Contains(x.sql, substr) {
			out = append(out, x)
		}
	}
	return out
}

// newTracedPool is newPool with every statement logged.
func newTracedPool(t *testing.T, maxConns int) (*pgxpool.Pool, *stmtLog) {
	t.Helper()
	requireServer(t)
	cfg, err := pgxpool.ParseConfig(dsn())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = int32(maxConns)
	log := &stmtLog{}
	cfg.ConnConfig.Tracer = log
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, pool)
	return pool, log
}

// advisoryLocksOf counts the advisory lock entries (granted or waiting) of
// backend pid.
func advisoryLocksOf(t testing.TB, pool *pgxpool.Pool, pid int32) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(testCtx(t), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1`, pid).Scan(&n); err != nil {
		t.Fatalf("pg_locks: %v", err)
	}
	return n
}

func acquiredConns(pool *pgxpool.Pool) int32 { return pool.Stat().AcquiredConns() }

// checkGivenBack checks that a scope's connection went back clean: backend
// pid holds no advisory lock and the pool has as many connections out as
// before, after what (a Run, a Release).
func checkGivenBack(t *testing.T, pool *pgxpool.Pool, pid, before int32, after string) {
	t.Helper()
	if n := advisoryLocksOf(t, pool, pid); n != 0 {
		t.Errorf("backend %d has %d advisory locks after %s, want 0", pid, n, after)
	}
	if got := acquiredConns(pool); got != before {
		t.Errorf("AcquiredConns after %s: %d, want %d as before", after, got, before)
	}
}

// checkIdle fails unless the liveness check of l watches nothing and is
// disarmed.
func checkIdle(t *testing.T, l *pglock.Locker) {
	t.Helper()
	if n, armed := pglock.Watching(l); n != 0 || armed {
		t.Errorf("liveness check: watching %d sessions, armed %v; want none, disarmed", n, armed)
	}
}

// TestScopeOneConnection: three keys in separate yields and an 8-key batch
// share one backend; the statements are 4 locks and 4 unlocks (the batch is
// released with one); after Run the connection is back in the pool, alive
// and holding no advisory lock, and the liveness check is disarmed.
func TestScopeOneConnection(t *testing.T) {
	pool, log := newTracedPool(t, 6)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	var singles, batch []caesura.Lock
	var ids []int64
	for i := range 3 {
		singles = append(singles, l.Mutex(fmt.Sprintf("a%d", i)))
		ids = append(ids, l.ID(fmt.Sprintf("a%d", i)))
	}
	for i := range 8 { // sorting above the singles, so the core batches them
		batch = append(batch, l.Mutex(fmt.Sprintf("b%d", i)))
		ids = append(ids, l.ID(fmt.Sprintf("b%d", i)))
	}
	// Warm up: the fencing sequence's lookup is not part of what is counted.
	if err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error { return yield(singles[0]) }); err != nil {
		t.Fatal(err)
	}
	before := acquiredConns(pool)
	log.reset()
	var pid int32
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		for _, m := range singles {
			if err := yield(m); err != nil {
				return err
			}
		}
		if err := yield(batch...); err != nil {
			return err
		}
		for i, id := range ids {
			rs := locksOf(t, pool, id)
			if len(rs) != 1 || !rs[0].granted {
				t.Errorf("key %d: pg_locks %v, want one granted entry", i, rs)
				continue
			}
			if pid == 0 {
				pid = rs[0].pid
			} else if rs[0].pid != pid {
				t.Errorf("key %d held by backend %d, key 0 by %d: want one backend", i, rs[0].pid, pid)
			}
		}
		if n := advisoryLocksOf(t, pool, pid); n != len(ids) {
			t.Errorf("backend %d has %d advisory locks, want %d", pid, n, len(ids))
		}
		if got := acquiredConns(pool); got != before+1 {
			t.Errorf("AcquiredConns inside the scope: %d, want %d", got, before+1)
		}
		if n, armed := pglock.Watching(l); n != 1 || !armed {
			t.Errorf("liveness check inside the scope: %d sessions, armed %v; want 1, armed", n, armed)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkGivenBack(t, pool, pid, before, "Run")
	checkIdle(t, l)

	locks, unlocks := log.matching("pg_advisory_lock("), log.matching("pg_advisory_unlock(")
	// 3 single keys and one batch take 4 statements; the scope releases
	// every lock of the session in one (the core hands them to ReleaseBatch).
	if len(locks) != 4 || len(unlocks) != 1 {
		t.Errorf("%d locking and %d unlocking statements, want 4 and 1", len(locks), len(unlocks))
	}
	for _, x := range append(locks, unlocks...) {
		if x.pid != pid {
			t.Errorf("statement %.40q ran on backend %d, want %d", x.sql, x.pid, pid)
		}
	}

	// The connection went back to the pool alive, holding nothing.
	conns := pool.AcquireAllIdle(ctx)
	found := false
	for _, c := range conns {
		if int32(c.Conn().PgConn().PID()) == pid {
			found = true
			var n int
			if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()`).Scan(&n); err != nil || n != 0 {
				t.Errorf("the scope's connection back in the pool: %d advisory locks, %v; want 0", n, err)
			}
		}
		c.Release()
	}
	if !found {
		t.Errorf("the scope's connection (backend %d) is not idle in the pool", pid)
	}
}

// TestScopeLossCancelsFunction: pg_terminate_backend of the scope's session
// loses every lock on it: the function's context is cancelled with
// ErrLockLost, another worker gets each key, and the dead connection does
// not stay acquired.
func TestScopeLossCancelsFunction(t *testing.T) {
	pool := newPool(t, 6)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	before := acquiredConns(pool)
	names := []string{"a", "b", "c"}
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l.Mutex("a")); err != nil {
			return err
		}
		if err := yield(l.Mutex("b"), l.Mutex("c")); err != nil {
			return err
		}
		pid := holderPID(t, pool, l.ID("a"))
		for _, n := range names[1:] {
			if got := holderPID(t, pool, l.ID(n)); got != pid {
				return fmt.Errorf("key %s on backend %d, a on %d: want one session", n, got, pid)
			}
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
		// Another worker (outside this scope) gets every key of the lost
		// session while the function still runs.
		for _, n := range names {
			var h caesura.Held
			var err error
			for range 20 { // the server frees the locks as the backend exits
				if h, err = l.Mutex(n).(caesura.TryLocker).TryAcquire(testCtx(t)); err == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil {
				return fmt.Errorf("another worker's TryAcquire of %s after the loss: %w", n, err)
			}
			if err := h.Release(testCtx(t)); err != nil {
				return fmt.Errorf("release of %s: %w", n, err)
			}
		}
		return nil
	})
	if !errors.Is(err, caesura.ErrLockLost) {
		t.Fatalf("Run: got %v, want ErrLockLost", err)
	}
	if got := acquiredConns(pool); got != before {
		t.Errorf("AcquiredConns after Run: %d, want %d", got, before)
	}
	checkIdle(t, l)
}

// TestScopeCancelledWaitKeepsOtherLocks: an acquisition of the scope that is
// cancelled while it waits on the server (through the scope's own context,
// or a context derived from it) leaves nothing queued or held, and the
// scope's other lock stays held on the session until the scope ends.
func TestScopeCancelledWaitKeepsOtherLocks(t *testing.T) {
	pool := newPool(t, 6)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	holder, err := l.Mutex("m").Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release(ctx) // on failure; released explicitly below
	holderPid := holderPID(t, pool, l.ID("m"))

	// onlyHolder fails unless m is held by the holder alone, with no waiter.
	onlyHolder := func(t *testing.T) {
		t.Helper()
		if rs := locksOf(t, pool, l.ID("m")); len(rs) != 1 || rs[0].pid != holderPid {
			t.Errorf("m after the cancelled wait: pg_locks %v, want only the holder %d", rs, holderPid)
		}
	}

	t.Run("derived context", func(t *testing.T) {
		before := acquiredConns(pool)
		var pid int32
		err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(l.Mutex("a")); err != nil {
				return err
			}
			pid = holderPID(t, pool, l.ID("a"))
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := l.Mutex("m").Acquire(wctx)
				errc <- err
			}()
			eventually(t, "the acquisition waits on the scope's session", func() bool {
				rs := locksOf(t, pool, l.ID("m"))
				return len(rs) == 2 && !rs[1].granted && rs[1].pid == pid
			})
			cancel()
			if err := <-errc; !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.Canceled) {
				return fmt.Errorf("cancelled Acquire: got %v, want ErrNotAcquired and context.Canceled", err)
			}
			onlyHolder(t)
			if got := holderPID(t, pool, l.ID("a")); got != pid {
				return fmt.Errorf("a after the cancelled wait: held by %d, want the session %d", got, pid)
			}
			// The session still serves the scope.
			if err := yield(l.Mutex("z")); err != nil {
				return err
			}
			if got := holderPID(t, pool, l.ID("z")); got != pid {
				t.Errorf("z taken by backend %d, want the scope's session %d", got, pid)
			}
			if n := advisoryLocksOf(t, pool, pid); n != 2 {
				t.Errorf("the session has %d advisory locks, want 2 (a, z)", n)
			}
			if got := acquiredConns(pool); got != before+1 {
				t.Errorf("AcquiredConns: %d, want %d", got, before+1)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		checkGivenBack(t, pool, pid, before, "Run")
	})

	t.Run("scope context", func(t *testing.T) {
		before := acquiredConns(pool)
		rctx, rcancel := context.WithCancel(ctx)
		defer rcancel()
		var pid int32
		err := caesura.Run(rctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(l.Mutex("a")); err != nil {
				return err
			}
			pid = holderPID(t, pool, l.ID("a"))
			// Cancel the scope once the yield below waits on the server.
			go func() {
				defer rcancel()
				for ctx.Err() == nil {
					var n int
					if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1 AND NOT granted`, pid).Scan(&n); err != nil || n > 0 {
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
			err := yield(l.Mutex("m"))
			if !errors.Is(err, caesura.ErrNotAcquired) {
				return fmt.Errorf("yield of a taken key with the scope cancelled: got %v, want ErrNotAcquired", err)
			}
			// The function's context is done, but the scope holds a until
			// the function returns.
			onlyHolder(t)
			if got := holderPID(t, pool, l.ID("a")); got != pid {
				t.Errorf("a after the cancelled yield: held by %d, want the session %d", got, pid)
			}
			if n := advisoryLocksOf(t, pool, pid); n != 1 {
				t.Errorf("the session has %d advisory locks, want 1 (a)", n)
			}
			return err
		})
		if !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: got %v, want ErrNotAcquired and context.Canceled", err)
		}
		checkGivenBack(t, pool, pid, before, "Run")
	})
	if err := holder.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	checkIdle(t, l)
}

// TestScopeCancelRacingGrant cancels a scope's wait at the moment the lock is
// handed to it, many times, while the scope holds another lock on the same
// session: whichever wins, the waited-for key ends up free once released,
// and the other lock stays held.
func TestScopeCancelRacingGrant(t *testing.T) {
	pool := newPool(t, 6)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	var got, cancelled int
	for i := range 20 {
		holder, err := l.Mutex("m").Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(l.Mutex("a")); err != nil {
				return err
			}
			pid := holderPID(t, pool, l.ID("a"))
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			type result struct {
				h   caesura.Held
				err error
			}
			done := make(chan result, 1)
			go func() {
				h, err := l.Mutex("m").Acquire(wctx)
				done <- result{h, err}
			}()
			eventually(t, "the waiter queues", func() bool { return len(locksOf(t, pool, l.ID("m"))) == 2 })
			go func() {
				time.Sleep(time.Duration(i%10) * 20 * time.Microsecond)
				cancel()
			}()
			if err := holder.Release(ctx); err != nil {
				return err
			}
			r := <-done
			switch {
			case r.err == nil:
				got++
				if h := holderPID(t, pool, l.ID("m")); h != pid {
					return fmt.Errorf("m granted to backend %d, want the session %d", h, pid)
				}
				if err := r.h.Release(ctx); err != nil {
					return fmt.Errorf("release of m: %w", err)
				}
			case errors.Is(r.err, caesura.ErrNotAcquired) && errors.Is(r.err, context.Canceled):
				cancelled++
			default:
				return fmt.Errorf("waiter: got %v, want nil or ErrNotAcquired+Canceled", r.err)
			}
			if rs := locksOf(t, pool, l.ID("m")); len(rs) != 0 {
				return fmt.Errorf("m after the waiter returned: pg_locks %v, want none", rs)
			}
			if h := holderPID(t, pool, l.ID("a")); h != pid {
				return fmt.Errorf("a held by %d after the race, want the session %d", h, pid)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("race %d: %v", i, err)
		}
		if rs := locksOf(t, pool, l.ID("a")); len(rs) != 0 {
			t.Fatalf("race %d: a after Run: pg_locks %v, want none", i, rs)
		}
	}
	t.Logf("20 races: the waiter got the lock %d times, was cancelled %d times", got, cancelled)
}

// TestNestedRunOwnConnection: a nested Run pins a connection of its own,
// which goes back when the inner function ends; the outer scope's lock stays
// held on the outer session.
func TestNestedRunOwnConnection(t *testing.T) {
	pool := newPool(t, 6)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	before := acquiredConns(pool)
	var outer, inner int32
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l.Mutex("a")); err != nil {
			return err
		}
		outer = holderPID(t, pool, l.ID("a"))
		err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(l.Mutex("b")); err != nil {
				return err
			}
			if err := yield(l.Mutex("c"), l.Mutex("a")); err != nil { // a: held by the outer scope
				return err
			}
			inner = holderPID(t, pool, l.ID("b"))
			if got := holderPID(t, pool, l.ID("c")); got != inner {
				t.Errorf("inner keys on backends %d and %d, want one", inner, got)
			}
			if inner == outer {
				t.Errorf("inner scope on the outer scope's backend %d, want its own", inner)
			}
			if got := acquiredConns(pool); got != before+2 {
				t.Errorf("AcquiredConns in the inner scope: %d, want %d", got, before+2)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n := advisoryLocksOf(t, pool, inner); n != 0 {
			t.Errorf("inner backend %d has %d advisory locks after the inner Run, want 0", inner, n)
		}
		if got := holderPID(t, pool, l.ID("a")); got != outer {
			t.Errorf("a after the inner Run: held by %d, want the outer session %d", got, outer)
		}
		if got := acquiredConns(pool); got != before+1 {
			t.Errorf("AcquiredConns after the inner Run: %d, want %d", got, before+1)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkGivenBack(t, pool, outer, before, "Run")
	checkIdle(t, l)
}

// TestScopeHeldKeyNotReentrant: PostgreSQL's advisory locks are reentrant
// within a session, pglock's are not: an Acquire of a key the scope holds,
// called with the scope's context, waits (on a connection of its own) and a
// TryAcquire fails.
func TestScopeHeldKeyNotReentrant(t *testing.T) {
	pool := newPool(t, 6)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l.Mutex("a")); err != nil {
			return err
		}
		pid := holderPID(t, pool, l.ID("a"))
		if _, err := l.Mutex("a").(caesura.TryLocker).TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
			return fmt.Errorf("TryAcquire of a key the scope holds: got %v, want ErrNotAcquired", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if _, err := l.Mutex("a").Acquire(wctx); !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("Acquire of a key the scope holds: got %v, want ErrNotAcquired and DeadlineExceeded", err)
		}
		if rs := locksOf(t, pool, l.ID("a")); len(rs) != 1 || rs[0].pid != pid {
			return fmt.Errorf("a: pg_locks %v, want the session %d alone", rs, pid)
		}
		if n := advisoryLocksOf(t, pool, pid); n != 1 {
			return fmt.Errorf("the session has %d advisory locks, want 1 (a, once)", n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rs := locksOf(t, pool, l.ID("a")); len(rs) != 0 {
		t.Fatalf("a after Run: pg_locks %v, want none", rs)
	}
}

// TestScopeEscapedHeld: a lock acquired directly with the scope's context
// and not released by the function keeps its session's connection pinned
// after Run, until its own Release.
func TestScopeEscapedHeld(t *testing.T) {
	pool := newPool(t, 6)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	before := acquiredConns(pool)
	var escaped caesura.Held
	var pid int32
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l.Mutex("a")); err != nil {
			return err
		}
		pid = holderPID(t, pool, l.ID("a"))
		h, err := l.Mutex("e").Acquire(ctx)
		if err != nil {
			return err
		}
		escaped = h
		if got := holderPID(t, pool, l.ID("e")); got != pid {
			t.Errorf("e on backend %d, want the scope's session %d", got, pid)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rs := locksOf(t, pool, l.ID("a")); len(rs) != 0 {
		t.Errorf("a after Run: pg_locks %v, want none", rs)
	}
	if got := holderPID(t, pool, l.ID("e")); got != pid {
		t.Errorf("e after Run: held by %d, want still the session %d", got, pid)
	}
	if got := acquiredConns(pool); got != before+1 {
		t.Errorf("AcquiredConns after Run: %d, want %d (pinned by e)", got, before+1)
	}
	if n, armed := pglock.Watching(l); n != 1 || !armed {
		t.Errorf("liveness check after Run: %d sessions, armed %v; want 1, armed", n, armed)
	}
	if err := escaped.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	checkGivenBack(t, pool, pid, before, "the Release")
	checkIdle(t, l)
}

// TestScopeSessionConcurrentUse: goroutines of one scope acquire and release
// keys directly with the scope's context while the liveness check pings the
// session every millisecond: every statement gets the connection to itself
// (pgx would fail with "conn busy" otherwise), and all ends clean.
func TestScopeSessionConcurrentUse(t *testing.T) {
	pool := newPool(t, 10)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := newLocker(t, pool, pglock.Options{CheckInterval: time.Millisecond, PingInterval: time.Millisecond})
	ctx := testCtx(t)
	before := acquiredConns(pool)
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l.Mutex("a")); err != nil {
			return err
		}
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for g := range 4 {
			wg.Go(func() {
				for i := range 25 {
					m := l.Mutex(fmt.Sprintf("g%d-%d", g, i%3))
					var h caesura.Held
					var err error
					if i%2 == 0 {
						h, err = m.Acquire(ctx)
					} else {
						h, err = m.(caesura.TryLocker).TryAcquire(ctx)
					}
					if err != nil {
						errs <- err
						return
					}
					if err := h.Release(ctx); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := acquiredConns(pool); got != before {
		t.Errorf("AcquiredConns after Run: %d, want %d", got, before)
	}
	for g := range 4 {
		for k := range 3 {
			if rs := locksOf(t, pool, l.ID(fmt.Sprintf("g%d-%d", g, k))); len(rs) != 0 {
				t.Errorf("g%d-%d after Run: pg_locks %v, want none", g, k, rs)
			}
		}
	}
	checkIdle(t, l)
}

// TestReleaseBatch: inside a scope, the Batcher releases a run of Helds in
// one call, leaving the session's others held; a second release of the same
// Helds reports ErrNotHeld and changes nothing. Outside a scope, a batch
// stays locked until the last of its Helds is released, and is then
// unlocked with one statement.
func TestReleaseBatch(t *testing.T) {
	pool, log := newTracedPool(t, 4)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	locks := make([]caesura.Lock, 6)
	for i := range locks {
		locks[i] = l.Mutex(fmt.Sprintf("k%d", i))
	}
	b, ok := locks[0].(caesura.BatchLock).Batcher().(caesura.BatchReleaser)
	if !ok {
		t.Fatal("the Batcher is not a caesura.BatchReleaser")
	}
	// held reports which of the keys are held by backend pid; any other
	// holder fails the test.
	held := func(pid int32) []bool {
		out := make([]bool, len(locks))
		for i := range locks {
			rs := locksOf(t, pool, l.ID(fmt.Sprintf("k%d", i)))
			if len(rs) > 1 || len(rs) == 1 && rs[0].pid != pid {
				t.Fatalf("k%d: pg_locks %v, want nothing or backend %d", i, rs, pid)
			}
			out[i] = len(rs) == 1
		}
		return out
	}

	t.Run("in a scope", func(t *testing.T) {
		err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			hs, err := b.AcquireBatch(ctx, locks)
			if err != nil {
				return err
			}
			pid := holderPID(t, pool, l.ID("k0"))
			log.reset()
			if err := b.ReleaseBatch(ctx, hs[:4]); err != nil {
				return fmt.Errorf("ReleaseBatch: %w", err)
			}
			if n := len(log.matching("pg_advisory_unlock(")); n != 1 {
				t.Errorf("ReleaseBatch of 4 ran %d unlocking statements, want 1", n)
			}
			if got, want := held(pid), []bool{false, false, false, false, true, true}; !slices.Equal(got, want) {
				t.Errorf("held after releasing k0-k3: %v, want %v", got, want)
			}
			if err := b.ReleaseBatch(ctx, hs[:2]); !errors.Is(err, caesura.ErrNotHeld) {
				t.Errorf("second ReleaseBatch: got %v, want ErrNotHeld", err)
			}
			if err := b.ReleaseBatch(ctx, []caesura.Held{hs[4], hs[4]}); !errors.Is(err, caesura.ErrNotHeld) {
				t.Errorf("ReleaseBatch of one Held twice: got %v, want ErrNotHeld for the second", err)
			}
			if got, want := held(pid), []bool{false, false, false, false, false, true}; !slices.Equal(got, want) {
				t.Errorf("held after releasing k4: %v, want %v", got, want)
			}
			if err := hs[5].Release(ctx); err != nil {
				return err
			}
			if n := advisoryLocksOf(t, pool, pid); n != 0 {
				t.Errorf("backend %d has %d advisory locks, want 0", pid, n)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	})

	t.Run("outside a scope", func(t *testing.T) {
		hs, err := b.AcquireBatch(ctx, locks)
		if err != nil {
			t.Fatal(err)
		}
		pid := holderPID(t, pool, l.ID("k0"))
		log.reset()
		for i := range 5 {
			if err := hs[i].Release(ctx); err != nil {
				t.Fatalf("Release %d: %v", i, err)
			}
		}
		if got := held(pid); slices.Contains(got, false) {
			t.Errorf("held after releasing 5 of 6: %v, want all until the last Release", got)
		}
		if err := hs[5].Release(ctx); err != nil {
			t.Fatal(err)
		}
		if got := held(pid); slices.Contains(got, true) {
			t.Errorf("held after the last Release: %v, want none", got)
		}
		if n := len(log.matching("pg_advisory_unlock(")); n != 1 {
			t.Errorf("releasing the batch ran %d unlocking statements, want 1", n)
		}
		if err := hs[0].Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
			t.Errorf("second Release: got %v, want ErrNotHeld", err)
		}
	})
}

// cancelDial controls the cancel requests of a pool from newCancelDialPool:
// their connections are told apart from the pool's own by their message.
type cancelDial struct {
	refuse atomic.Bool // fail the dial of a cancel request
	slow   atomic.Bool // deliver the cancel request, but hold its acknowledgement back
}

// slowAck holds back reads on a cancel request's connection past the
// request's deadline, so the request is not known to have arrived.
type slowAck struct {
	net.Conn
	d      *cancelDial
	cancel atomic.Bool
}

func (c *slowAck) Write(b []byte) (int, error) {
	if len(b) >= 8 && binary.BigEndian.Uint32(b[4:8]) == 80877102 { // CancelRequest code
		c.cancel.Store(true)
	}
	return c.Conn.Write(b)
}

func (c *slowAck) Read(b []byte) (int, error) {
	if c.cancel.Load() && c.d.slow.Load() {
		time.Sleep(1500 * time.Millisecond)
	}
	return c.Conn.Read(b)
}

func newCancelDialPool(t *testing.T, maxConns int) (*pgxpool.Pool, *cancelDial) {
	t.Helper()
	requireServer(t)
	cfg, err := pgxpool.ParseConfig(dsn())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = int32(maxConns)
	d := &cancelDial{}
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if d.refuse.Load() {
			return nil, errors.New("test: dial refused")
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &slowAck{Conn: c, d: d}, nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, pool)
	// Open the connections the test needs while dialing works.
	var cs []*pgxpool.Conn
	for range maxConns {
		c, err := pool.Acquire(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	for _, c := range cs {
		c.Release()
	}
	return pool, d
}

// TestScopeCancelWhenCancelRequestsFail: when no cancel request reaches the
// server, the wait can only be aborted by closing the connection, which ends
// the scope's session: its other lock is lost (the function's context is
// cancelled with ErrLockLost) and freed, and nothing stays queued.
func TestScopeCancelWhenCancelRequestsFail(t *testing.T) {
	pool, d := newCancelDialPool(t, 4)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	holder, err := l.Mutex("m").Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release(ctx) // on failure; released explicitly below
	before := acquiredConns(pool)
	err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l.Mutex("a")); err != nil {
			return err
		}
		pid := holderPID(t, pool, l.ID("a"))
		d.refuse.Store(true)
		defer d.refuse.Store(false)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := l.Mutex("m").Acquire(wctx)
			errc <- err
		}()
		eventually(t, "the acquisition waits", func() bool { return len(locksOf(t, pool, l.ID("m"))) == 2 })
		cancel()
		if err := <-errc; !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.Canceled) {
			return fmt.Errorf("cancelled Acquire: got %v, want ErrNotAcquired and context.Canceled", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
			return errors.New("the function's context was not cancelled after its session was closed")
		}
		if c := context.Cause(ctx); !errors.Is(c, caesura.ErrLockLost) {
			return fmt.Errorf("cause: got %v, want ErrLockLost", c)
		}
		// Nothing of the closed session is left once Acquire returned.
		if n := advisoryLocksOf(t, pool, pid); n != 0 {
			return fmt.Errorf("the closed session %d still has %d advisory locks", pid, n)
		}
		return nil
	})
	if !errors.Is(err, caesura.ErrLockLost) {
		t.Fatalf("Run: got %v, want ErrLockLost", err)
	}
	if rs := locksOf(t, pool, l.ID("m")); len(rs) != 1 || !rs[0].granted {
		t.Fatalf("m: pg_locks %v, want only the holder", rs)
	}
	if got := acquiredConns(pool); got != before {
		t.Errorf("AcquiredConns after Run: %d, want %d", got, before)
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	checkIdle(t, l)
}

// TestScopeCancelUnacknowledged: a cancel request that worked but whose
// acknowledgement did not come in time might still be on its way: the
// scope's session frees what the cancelled statement took and keeps its
// other lock, but serves no further acquisition (the next one runs on a
// connection of its own), and its connection is closed rather than returned
// once its locks are released.
func TestScopeCancelUnacknowledged(t *testing.T) {
	pool, d := newCancelDialPool(t, 4)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	holder, err := l.Mutex("m").Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release(ctx) // on failure; released explicitly below
	var pid int32
	err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l.Mutex("a")); err != nil {
			return err
		}
		pid = holderPID(t, pool, l.ID("a"))
		d.slow.Store(true)
		defer d.slow.Store(false)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := l.Mutex("m").Acquire(wctx)
			errc <- err
		}()
		eventually(t, "the acquisition waits", func() bool { return len(locksOf(t, pool, l.ID("m"))) == 2 })
		cancel()
		if err := <-errc; !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.Canceled) {
			return fmt.Errorf("cancelled Acquire: got %v, want ErrNotAcquired and context.Canceled", err)
		}
		if rs := locksOf(t, pool, l.ID("m")); len(rs) != 1 || !rs[0].granted || rs[0].pid == pid {
			return fmt.Errorf("m after the cancelled wait: pg_locks %v, want only the holder", rs)
		}
		if got := holderPID(t, pool, l.ID("a")); got != pid {
			return fmt.Errorf("a after the cancelled wait: held by %d, want the session %d", got, pid)
		}
		if err := yield(l.Mutex("z")); err != nil {
			return err
		}
		if got := holderPID(t, pool, l.ID("z")); got == pid || got == 0 {
			return fmt.Errorf("z held by %d: want a connection other than the broken session %d", got, pid)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, n := range []string{"a", "z"} {
		if rs := locksOf(t, pool, l.ID(n)); len(rs) != 0 {
			t.Errorf("%s after Run: pg_locks %v, want none", n, rs)
		}
	}
	// The broken session's connection was closed, not returned.
	var alive bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)`, pid).Scan(&alive); err != nil {
		t.Fatal(err)
	}
	if alive {
		for _, c := range pool.AcquireAllIdle(ctx) {
			if int32(c.Conn().PgConn().PID()) == pid {
				t.Errorf("the broken session's connection (backend %d) went back to the pool", pid)
			}
			c.Release()
		}
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	checkIdle(t, l)
}
