package pglock_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/pglock"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgBouncer is a PgBouncer process of the test's own, on an ephemeral
// 127.0.0.1 port, in front of the test server.
type pgBouncer struct {
	t    *testing.T
	port int
	cmd  *exec.Cmd
	exit chan error // receives the process's exit
}

// startPgBouncer starts PgBouncer with pool_mode mode. It skips the test
// when PgBouncer is not installed, unless CI=true.
func startPgBouncer(t *testing.T, mode string) *pgBouncer {
	t.Helper()
	requireServer(t)
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/pgbouncer"); serr != nil {
			skipOrFail(t, "pgbouncer not found (apt-get install pgbouncer): "+err.Error())
		}
		bin = "/usr/sbin/pgbouncer"
	}
	server, err := pgconn.ParseConfig(dsn())
	if err != nil {
		t.Fatal(err)
	}
	parent := ""
	var asUser []string
	var uid, gid = -1, -1
	if os.Geteuid() == 0 {
		// PgBouncer refuses to run as root: -u switches to postgres, who
		// must reach the directory whatever TMPDIR is.
		u, err := user.Lookup("postgres")
		if err != nil {
			skipOrFail(t, fmt.Sprintf("running as root and no postgres user to run pgbouncer as: %v", err))
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		parent, asUser = "/tmp", []string{"-u", "postgres"}
	}
	dir, err := os.MkdirTemp(parent, "pglock-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if uid >= 0 {
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(dir, "pgbouncer.log")
	const attempts = 5
	for i := 1; ; i++ {
		b := &pgBouncer{t: t, port: freePort(t), exit: make(chan error, 1)}
		cfg := fmt.Sprintf(`[databases]
%s = host=%s port=%d dbname=%s user=%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = %s
default_pool_size = 10
max_client_conn = 50
ignore_startup_parameters = extra_float_digits
logfile = %s
`, server.Database, server.Host, server.Port, server.Database, server.User, b.port, mode, logPath)
		cfgPath := filepath.Join(dir, "pgbouncer.ini")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		logged := 0
		if fi, err := os.Stat(logPath); err == nil {
			logged = int(fi.Size())
		}
		b.cmd = exec.Command(bin, append(asUser, cfgPath)...)
		out := &strings.Builder{}
		b.cmd.Stdout, b.cmd.Stderr = out, out
		if err := b.cmd.Start(); err != nil {
			t.Fatalf("start pgbouncer: %v", err)
		}
		go func() { b.exit <- b.cmd.Wait() }()
		up, exited := b.waitListening()
		if up {
			t.Cleanup(b.stop)
			return b
		}
		if !exited {
			b.stop()
		}
		raw, _ := os.ReadFile(logPath)
		log := string(raw[min(logged, len(raw)):])
		if !portTaken(log) || i == attempts {
			t.Fatalf("pgbouncer did not come up on port %d:\n%s\nlog:\n%s", b.port, out, log)
		}
		t.Logf("port %d was taken (%d of %d): starting pgbouncer on another", b.port, i, attempts)
	}
}

// waitListening waits up to 10s for PgBouncer to accept connections, or to
// exit.
func (b *pgBouncer) waitListening() (up, exited bool) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-b.exit:
			b.exit <- err // for stop
			return false, true
		default:
		}
		c, err := net.DialTimeout("tcp", b.addr(), 100*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return true, false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false, false
}

func (b *pgBouncer) addr() string { return fmt.Sprintf("127.0.0.1:%d", b.port) }

// stop ends PgBouncer (SIGTERM: immediate shutdown, closing its server
// connections), and waits for it.
func (b *pgBouncer) stop() {
	if b.cmd.ProcessState != nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exit:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exit
	}
}

// connConfig returns a connection configuration through PgBouncer. PgBouncer
// 1.18 in transaction mode keeps no prepared statements across
// transactions: pgx must not cache them.
func (b *pgBouncer) connConfig() *pgx.ConnConfig {
	server, err := pgconn.ParseConfig(dsn())
	if err != nil {
		b.t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable", server.User, b.addr(), server.Database))
	if err != nil {
		b.t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	return cfg
}

// intrude opens up to n further client connections through PgBouncer, each
// in an open transaction, until one is on server backend pid; it returns
// that one (nil if none was) and closes the others at the end of the test.
func (b *pgBouncer) intrude(ctx context.Context, n int, pid int32) *pgx.Conn {
	b.t.Helper()
	for range n {
		c, err := pgx.ConnectConfig(ctx, b.connConfig())
		if err != nil {
			b.t.Fatalf("connect through pgbouncer: %v", err)
		}
		b.t.Cleanup(func() { _ = c.Close(context.Background()) })
		if _, err := c.Exec(ctx, `BEGIN`); err != nil {
			b.t.Fatalf("BEGIN: %v", err)
		}
		var got int32
		if err := c.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&got); err != nil {
			b.t.Fatalf("pg_backend_pid: %v", err)
		}
		if got == pid {
			return c
		}
	}
	return nil
}

// TestPgBouncer shows what session-level advisory locks do behind PgBouncer.
//
// In transaction mode the server session that holds a scope's lock goes back
// to PgBouncer's pool after each statement. Another client that gets it can
// take the same lock (advisory locks are reentrant within a session): mutual
// exclusion is gone. The scope's next statement then runs on another server
// session, which pglock detects: the yield fails with ErrSessionChanged, and
// the locks stay held by server sessions nobody controls until PgBouncer
// closes them. In session mode none of this happens.
func TestPgBouncer(t *testing.T) {
	direct := newPool(t, 4)

	t.Run("transaction mode", func(t *testing.T) {
		pgb := startPgBouncer(t, "transaction")
		cfg, err := pgxpool.ParseConfig("")
		if err != nil {
			t.Fatal(err)
		}
		cfg.ConnConfig = pgb.connConfig()
		cfg.MaxConns = 4
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		closePool(t, pool)
		l := newLocker(t, pool, pglock.Options{})
		ctx := testCtx(t)
		var pidA int32
		err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(l.Mutex("a")); err != nil {
				return err
			}
			pidA = holderPID(t, direct, l.ID("a"))
			intruder := pgb.intrude(ctx, 4, pidA)
			if intruder == nil {
				t.Fatalf("no client of pgbouncer got the server session %d that holds a", pidA)
			}
			// The symptom: another client takes the lock the scope holds.
			var took bool
			if err := intruder.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, l.ID("a")).Scan(&took); err != nil {
				t.Fatal(err)
			}
			if !took {
				t.Error("another client on the scope's server session could not take a: want it to (reentrant)")
			}
			// The detection: the scope's next statement runs on another
			// server session.
			err := yield(l.Mutex("b"))
			if !errors.Is(err, pglock.ErrSessionChanged) {
				t.Errorf("yield on a moved session: got %v, want ErrSessionChanged", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
				t.Error("the function's context was not cancelled")
			}
			return err
		})
		if !errors.Is(err, pglock.ErrSessionChanged) {
			t.Fatalf("Run: got %v, want ErrSessionChanged", err)
		}
		t.Logf("Run: %v", err)
		// The locks stay held by PgBouncer's server sessions after Run.
		if got := holderPID(t, direct, l.ID("a")); got != pidA {
			t.Errorf("a after Run: held by %d, want still the server session %d nobody controls", got, pidA)
		}
		if got := holderPID(t, direct, l.ID("b")); got == 0 || got == pidA {
			t.Errorf("b after Run: held by %d, want by another server session of pgbouncer", got)
		}
		// Until PgBouncer closes its server connections.
		pgb.stop()
		eventually(t, "the locks are freed once pgbouncer closed its server connections", func() bool {
			return len(locksOf(t, direct, l.ID("a"))) == 0 && len(locksOf(t, direct, l.ID("b"))) == 0
		})
	})

	t.Run("session mode", func(t *testing.T) {
		pgb := startPgBouncer(t, "session")
		cfg, err := pgxpool.ParseConfig("")
		if err != nil {
			t.Fatal(err)
		}
		cfg.ConnConfig = pgb.connConfig()
		cfg.MaxConns = 4
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		closePool(t, pool)
		l := newLocker(t, pool, pglock.Options{})
		ctx := testCtx(t)
		err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(l.Mutex("a")); err != nil {
				return err
			}
			pidA := holderPID(t, direct, l.ID("a"))
			if c := pgb.intrude(ctx, 3, pidA); c != nil {
				t.Errorf("another client got the server session %d of the scope", pidA)
			}
			if err := yield(l.Mutex("b")); err != nil {
				return err
			}
			if got := holderPID(t, direct, l.ID("b")); got != pidA {
				t.Errorf("b on server session %d, a on %d: want one", got, pidA)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		for _, n := range []string{"a", "b"} {
			if rs := locksOf(t, direct, l.ID(n)); len(rs) != 0 {
				t.Errorf("%s after Run: pg_locks %v, want none", n, rs)
			}
		}

		// Fencing tokens: the client notes the pid of the server session
		// (pgx's PID is PgBouncer's own), so only a connection's first
		// token skips.
		cfg.MaxConns = 1
		one, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		closePool(t, one)
		seq := newSequence(t, direct)
		lt := newLocker(t, one, pglock.Options{Sequence: seq})
		want := uint64(1 + pglock.SessionSkip)
		for range 3 {
			if got := cycle(t, lt); got != want {
				t.Fatalf("token through PgBouncer: got %d, want %d", got, want)
			}
			want++
		}
	})
}
