package pglock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/pglock"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Worker processes: the test binary re-executed with these variables set.
const (
	workerEnv    = "CAESURA_PGLOCK_WORKER" // "lock" or "nolock"
	workerTable  = "CAESURA_PGLOCK_TABLE"
	workerPrefix = "CAESURA_PGLOCK_PREFIX"
	workerRounds = "CAESURA_PGLOCK_ROUNDS"
)

// workerMain runs in a worker process: rounds times, it reads the shared
// counter, pauses, and writes it back plus one, under the lock unless the
// mode is "nolock". It returns the process's exit code.
func workerMain() int {
	if err := worker(os.Getenv(workerEnv) == "lock"); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	return 0
}

func worker(locked bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rounds, err := strconv.Atoi(os.Getenv(workerRounds))
	if err != nil {
		return err
	}
	table := pgx.Identifier{os.Getenv(workerTable)}.Sanitize()
	pool, err := pgxpool.New(ctx, dsn())
	if err != nil {
		return err
	}
	defer pool.Close()
	l, err := pglock.New(pool, pglock.Options{Prefix: os.Getenv(workerPrefix)})
	if err != nil {
		return err
	}
	incr := func(ctx context.Context) error {
		var n int
		if err := pool.QueryRow(ctx, `SELECT n FROM `+table).Scan(&n); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
		_, err := pool.Exec(ctx, `UPDATE `+table+` SET n = $1`, n+1)
		return err
	}
	for range rounds {
		if !locked {
			if err := incr(ctx); err != nil {
				return err
			}
			continue
		}
		err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(l.Mutex("counter")); err != nil {
				return err
			}
			return incr(ctx)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// runWorkers starts procs worker processes and waits for them; it returns
// the counter's final value.
func runWorkers(t *testing.T, pool *pgxpool.Pool, mode string, procs, rounds int) int {
	t.Helper()
	ctx := testCtx(t)
	table := "caesura_lostupdate_" + randHex()
	if _, err := pool.Exec(ctx, `CREATE TABLE `+table+` (n int NOT NULL); INSERT INTO `+table+` VALUES (0)`); err != nil {
		t.Fatalf("create table: %v", err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+table) })
	prefix := "pgtest:" + randHex() + ":"
	var wg sync.WaitGroup
	errs := make(chan error, procs)
	for range procs {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(),
			workerEnv+"="+mode, workerTable+"="+table, workerPrefix+"="+prefix,
			workerRounds+"="+strconv.Itoa(rounds), "CAESURA_PG_DSN="+dsn())
		wg.Go(func() {
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("worker: %v: %s", err, out)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT n FROM `+table).Scan(&n); err != nil {
		t.Fatalf("read counter: %v", err)
	}
	return n
}

// TestLostUpdateProcesses: several OS processes read, pause and write one
// counter under the lock; the total is exact. The same workload without the
// lock is run first to show that it does lose updates here.
func TestLostUpdateProcesses(t *testing.T) {
	pool := newPool(t, 4)
	const procs, rounds = 4, 25
	if n := runWorkers(t, pool, "nolock", procs, rounds); n < procs*rounds {
		t.Logf("control without the lock: counter %d of %d (updates lost, as expected)", n, procs*rounds)
	} else {
		t.Logf("control without the lock: counter %d of %d (no update happened to be lost)", n, procs*rounds)
	}
	if n := runWorkers(t, pool, "lock", procs, rounds); n != procs*rounds {
		t.Fatalf("counter with the lock: got %d, want %d", n, procs*rounds)
	}
}

// isDeadlock reports whether err is PostgreSQL's deadlock_detected.
func isDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40P01"
}

// lowDeadlockTimeout returns a pool whose sessions run the deadlock detector
// after 10ms of waiting (a superuser setting; skipped when refused).
func lowDeadlockTimeout(t *testing.T, maxConns int) *pgxpool.Pool {
	t.Helper()
	requireServer(t)
	cfg, err := pgxpool.ParseConfig(dsn())
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	cfg.MaxConns = int32(maxConns)
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, `SET deadlock_timeout = '10ms'`)
		return err
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgxpool: %v", err)
	}
	closePool(t, pool)
	if err := pool.Ping(testCtx(t)); err != nil {
		t.Skipf("cannot lower deadlock_timeout (needs a superuser): %v", err)
	}
	return pool
}

// TestDeadlockDetectorControl shows that the oracle works: two sessions that
// take two locks in opposite orders are stopped by the server's detector.
func TestDeadlockDetectorControl(t *testing.T) {
	pool := lowDeadlockTimeout(t, 4)
	ctx := testCtx(t)
	a, b := rand.Int64(), rand.Int64()
	var wg, firstTaken sync.WaitGroup
	errs := make([]error, 2)
	firstTaken.Add(2)
	for i, order := range [][2]int64{{a, b}, {b, a}} {
		wg.Go(func() {
			c, err := pool.Acquire(ctx)
			if err == nil {
				defer c.Release()
				defer c.Exec(context.Background(), `SELECT pg_advisory_unlock_all()`)
				_, err = c.Exec(ctx, `SELECT pg_advisory_lock($1)`, order[0])
			}
			firstTaken.Done()
			if err != nil {
				errs[i] = err
				return
			}
			firstTaken.Wait() // both hold their first lock
			_, errs[i] = c.Exec(ctx, `SELECT pg_advisory_lock($1)`, order[1])
		})
	}
	wg.Wait()
	if !isDeadlock(errs[0]) && !isDeadlock(errs[1]) {
		t.Fatalf("opposite orders: errors %v, %v; want one deadlock_detected (40P01)", errs[0], errs[1])
	}
}

// TestDeadlockDetectorNeverFires: a random multi-key workload through
// caesura (tuples and sequential yields in random key orders, several
// workers) never makes PostgreSQL's deadlock detector fire, and finishes.
func TestDeadlockDetectorNeverFires(t *testing.T) {
	const workers, rounds, keys, perScope = 4, 40, 6, 3
	pool := lowDeadlockTimeout(t, workers*perScope+2)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	ls := make([]caesura.Lock, keys)
	for i := range ls {
		ls[i] = l.Mutex(fmt.Sprintf("k%d", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var mu sync.Mutex
	var inside [keys]int
	violations := 0
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for range rounds {
				pick := r.Perm(keys)[:1+r.IntN(perScope)]
				tuple := r.IntN(2) == 0
				err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
					if tuple {
						ys := make([]caesura.Lock, len(pick))
						for i, k := range pick {
							ys[i] = ls[k]
						}
						if err := yield(ys...); err != nil {
							return err
						}
					} else {
						for _, k := range pick {
							if err := yield(ls[k]); err != nil {
								return err
							}
							time.Sleep(time.Duration(r.IntN(300)) * time.Microsecond)
						}
					}
					mu.Lock()
					for _, k := range pick {
						inside[k]++
						if inside[k] != 1 {
							violations++
						}
					}
					mu.Unlock()
					time.Sleep(time.Duration(r.IntN(500)) * time.Microsecond)
					mu.Lock()
					for _, k := range pick {
						inside[k]--
					}
					mu.Unlock()
					return nil
				}, caesura.WithRestart(50))
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if isDeadlock(err) {
			t.Fatalf("PostgreSQL detected a deadlock: %v", err)
		}
		t.Fatalf("Run: %v", err)
	}
	if violations != 0 {
		t.Fatalf("%d overlapping critical sections", violations)
	}
}
