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
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/pglock"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgBin finds a PostgreSQL server program (initdb, pg_ctl): on PATH, or in
// Debian's /usr/lib/postgresql/*/bin.
func pgBin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(ms) == 0 {
		return ""
	}
	return ms[len(ms)-1]
}

// ownServer is a throwaway PostgreSQL cluster on an ephemeral 127.0.0.1 port,
// stopped and removed at the end of the test. As root, its programs run as
// the postgres user (the server refuses root).
type ownServer struct {
	t    *testing.T
	dir  string
	port int
	as   []string // prefix that runs a command as the server's user
}

// skipOrFail skips the test, or fails it when CI=true.
func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func startOwnServer(t *testing.T) *ownServer {
	t.Helper()
	initdb, pgctl := pgBin("initdb"), pgBin("pg_ctl")
	if initdb == "" || pgctl == "" {
		skipOrFail(t, "initdb/pg_ctl not found (install postgresql)")
	}
	s := &ownServer{t: t}
	parent := ""
	if os.Geteuid() == 0 {
		parent = "/tmp" // the postgres user must reach it, whatever TMPDIR is
	}
	dir, err := os.MkdirTemp(parent, "pglock-server-")
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			skipOrFail(t, fmt.Sprintf("running as root and no postgres user to run the server as: %v", err))
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		if _, err := exec.LookPath("runuser"); err != nil {
			skipOrFail(t, fmt.Sprintf("running as root without runuser to start the server as postgres: %v", err))
		}
		s.as = []string{"runuser", "-u", "postgres", "--"}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.port = ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	s.run(initdb, "-D", s.data(), "-A", "trust", "-U", "postgres", "--no-sync", "--no-instructions")
	s.run(pgctl, "-D", s.data(), "-l", filepath.Join(dir, "log"), "-w", "-o", s.opts(), "start")
	t.Cleanup(func() {
		// Stopped by its data directory, which only this test's server uses.
		s.run(pgctl, "-D", s.data(), "-m", "immediate", "-w", "stop")
	})
	return s
}

func (s *ownServer) data() string { return filepath.Join(s.dir, "data") }

func (s *ownServer) opts() string {
	return fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", s.port, s.dir)
}

func (s *ownServer) dsn() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

func (s *ownServer) run(args ...string) {
	s.t.Helper()
	args = append(append([]string(nil), s.as...), args...)
	cmd := exec.Command(args[0], args[1:]...)
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("%v: %v\n%s", args, err, out)
	}
}

// restart crashes the server (immediate stop: every backend killed) and
// starts it again.
func (s *ownServer) restart() {
	s.t.Helper()
	pgctl := pgBin("pg_ctl")
	s.run(pgctl, "-D", s.data(), "-m", "immediate", "-w", "stop")
	s.run(pgctl, "-D", s.data(), "-l", filepath.Join(s.dir, "log"), "-w", "-o", s.opts(), "start")
}

// TestServerRestartIsLost: a crash-restart of the server ends every pinned
// session; the Held reports the loss within about a second, its Release
// returns ErrNotHeld, and the lock can be taken again once the server is back.
func TestServerRestartIsLost(t *testing.T) {
	srv := startOwnServer(t)
	cfg, err := pgxpool.ParseConfig(srv.dsn())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, pool)
	l := newLocker(t, pool, pglock.Options{})
	ctx := testCtx(t)
	h, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	start := time.Now()
	srv.restart()
	lost := h.(caesura.Lossy).Lost()
	select {
	case <-lost.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("Lost() not cancelled within 2s of the restart")
	}
	t.Logf("loss reported %v after the stop began", time.Since(start))
	if c := context.Cause(lost); !errors.Is(c, caesura.ErrLockLost) {
		t.Fatalf("cause: got %v, want ErrLockLost", c)
	}
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release after the restart: got %v, want ErrNotHeld", err)
	}
	// Once the server is back, the lock is free (the pool may first hand
	// out a connection that died in the restart: retry a few times).
	var h2 caesura.Held
	for range 5 {
		if h2, err = l.Mutex("a").(caesura.TryLocker).TryAcquire(ctx); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("TryAcquire after the restart: %v", err)
	}
	if err := h2.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
}
