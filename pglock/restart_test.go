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
	"sync/atomic"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/internal/testport"
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
//
// A port is reserved by listening on port 0 and closing the listener, so
// another process (a test of another package, run in parallel) may bind it
// before the server does; the server is then started again on a new port.
// The same can happen between a restart's stop and start, so the pool of
// poolConfig dials whatever port the server has now.
type ownServer struct {
	t    *testing.T
	dir  string
	port atomic.Int32
	as   []string // prefix that runs a command as the server's user
	// settings are the server's own -c options, after the harness's
	// (fsync=off unless they say otherwise).
	settings []string
}

// skipOrFail skips the test, or fails it when CI=true.
func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func startOwnServer(t *testing.T) *ownServer { return startOwnServerOn(t, 0) }

// startOwnServerOn is startOwnServer trying port first (0: any free port),
// with settings ("name=value") as the server's -c options.
func startOwnServerOn(t *testing.T, port int, settings ...string) *ownServer {
	t.Helper()
	initdb, pgctl := pgBin("initdb"), pgBin("pg_ctl")
	if initdb == "" || pgctl == "" {
		skipOrFail(t, "initdb/pg_ctl not found (install postgresql)")
	}
	s := &ownServer{t: t, settings: settings}
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
	s.run(initdb, "-D", s.data(), "-A", "trust", "-U", "postgres", "--no-sync", "--no-instructions")
	s.start(port)
	t.Cleanup(func() {
		// Stopped by its data directory, which only this test's server uses.
		s.run(pgctl, "-D", s.data(), "-m", "immediate", "-w", "stop")
	})
	return s
}

// freePort returns a port that was free a moment ago, outside the range the
// kernel gives outgoing connections: a restart binds it again.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := testport.One()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// portTaken reports whether a start's log says the port was in use.
func portTaken(log string) bool {
	return strings.Contains(log, "Address already in use") || strings.Contains(log, "could not bind")
}

// start starts the server on port, or on a free port when port is 0; when
// the port turns out to be taken, it tries again on a new one.
func (s *ownServer) start(port int) {
	s.t.Helper()
	pgctl := pgBin("pg_ctl")
	logPath := filepath.Join(s.dir, "log")
	const attempts = 5
	for i := 1; ; i++ {
		if port == 0 {
			port = freePort(s.t)
		}
		s.port.Store(int32(port))
		logged := 0
		if fi, err := os.Stat(logPath); err == nil {
			logged = int(fi.Size())
		}
		args := append(append([]string(nil), s.as...), pgctl, "-D", s.data(), "-l", logPath, "-w", "-o", s.opts(), "start")
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err == nil {
			return
		}
		b, _ := os.ReadFile(logPath)
		log := string(b[min(logged, len(b)):])
		if !portTaken(log) || i == attempts {
			s.t.Fatalf("%v: %v\n%s\nserver log:\n%s", args, err, out, log)
		}
		s.t.Logf("port %d was taken (%d of %d): starting the server on another", port, i, attempts)
		port = 0
	}
}

func (s *ownServer) data() string { return filepath.Join(s.dir, "data") }

func (s *ownServer) opts() string {
	o := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", s.port.Load(), s.dir)
	for _, kv := range s.settings {
		o += " -c " + kv
	}
	return o
}

func (s *ownServer) dsn() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port.Load())
}

// poolConfig returns a pool configuration whose connections dial the
// server's current port, which a restart may change.
func (s *ownServer) poolConfig() *pgxpool.Config {
	s.t.Helper()
	cfg, err := pgxpool.ParseConfig(s.dsn())
	if err != nil {
		s.t.Fatal(err)
	}
	var d net.Dialer
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", s.port.Load()))
	}
	return cfg
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
// starts it again, on the same port unless another process took it
// meanwhile.
func (s *ownServer) restart() {
	s.t.Helper()
	s.run(pgBin("pg_ctl"), "-D", s.data(), "-m", "immediate", "-w", "stop")
	s.start(int(s.port.Load()))
}

// TestServerRestartIsLost: a crash-restart of the server ends every pinned
// session; the Held reports the loss within about a second, its Release
// returns ErrNotHeld, and the lock can be taken again once the server is back.
func TestServerRestartIsLost(t *testing.T) {
	srv := startOwnServer(t)
	cfg := srv.poolConfig()
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

// TestOwnServerPortTaken: a server whose port another process took between
// its reservation and its start comes up on another port, as does one whose
// port was taken during a restart, and the pool follows it.
func TestOwnServerPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	srv := startOwnServerOn(t, takenPort)
	if got := int(srv.port.Load()); got == takenPort {
		t.Fatalf("the server reports the taken port %d", got)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), srv.poolConfig())
	if err != nil {
		t.Fatal(err)
	}
	closePool(t, pool)
	ctx := testCtx(t)
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("ping the server on its new port: %v", err)
	}

	// Take the server's port while it restarts: a listener cannot bind it
	// while the server listens, so stop the server first.
	old := int(srv.port.Load())
	srv.run(pgBin("pg_ctl"), "-D", srv.data(), "-m", "immediate", "-w", "stop")
	hold, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", old))
	if err != nil {
		t.Skipf("could not take the stopped server's port %d: %v", old, err)
	}
	defer hold.Close()
	srv.start(old)
	if got := int(srv.port.Load()); got == old {
		t.Fatalf("the restarted server reports the taken port %d", got)
	}
	var err2 error
	for range 10 { // the pool may first hand out a connection of the old server
		if err2 = pool.Ping(ctx); err2 == nil {
			break
		}
	}
	if err2 != nil {
		t.Fatalf("ping the restarted server on its new port: %v", err2)
	}
}
