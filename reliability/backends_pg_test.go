package reliability

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/internal/testport"
	"github.com/caesura-go/caesura/pglock"
)

// pglock runs against the machine's PostgreSQL (CAESURA_PG_DSN, or
// pgDefaultDSN), which other tests share: the suite's keys have a prefix of
// their own (pgPrefix, random per run) and its fencing tokens a sequence of
// their own. That server is never restarted: the server crashes run against
// a private instance (initdb into a temporary directory, an ephemeral port).

// pgDefaultDSN is the PostgreSQL of the development and CI machines.
const pgDefaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// pgSequence issues the suite's fencing tokens (created on first use).
const pgSequence = "caesura_reliability_fence"

// pgApp is the application_name of the suite's sessions.
const pgApp = "caesura-reliability"

// pgPrefix is the key prefix of this run's locks: unique, so that the
// pglock module's own tests, or another run, never share a lock with it.
var pgPrefix = func() string {
	var b [6]byte
	rand.Read(b[:])
	return "caesura-reliability:" + hex.EncodeToString(b[:]) + ":"
}()

func pgDSN() string {
	if d := os.Getenv("CAESURA_PG_DSN"); d != "" {
		return d
	}
	return pgDefaultDSN
}

func init() {
	backends["pglock"] = &backend{
		name: "pglock",
		// A session lock is lost with its session (terminated, reset, a
		// server restart), but it has no lease: a paused holder keeps it.
		lossy: true,
		start: startPG,
		// PostgreSQL keeps its data across a crash (the WAL): a private
		// instance, since the shared one must not be restarted.
		persistent: startPrivatePG,
		open: func(cfg map[string]string) (func(string) caesura.Lock, func(), error) {
			pool, err := pgPool(cfg["dsn"], cfg["addr"], 6)
			if err != nil {
				return nil, nil, err
			}
			l, err := pglock.New(pool, pglock.Options{Prefix: cfg["prefix"], Sequence: pgSequence})
			if err != nil {
				pool.Close()
				return nil, nil, err
			}
			return l.Mutex, pool.Close, nil
		},
	}
}

func TestPglock(t *testing.T) {
	t.Parallel()
	runBackend(t, "pglock")
}

// pgPool returns a pool on dsn, through addr (host:port) if it is set.
func pgPool(dsn, addr string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse the PostgreSQL DSN: %w", err)
	}
	if addr != "" {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL address %q: %w", addr, err)
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL address %q: %w", addr, err)
		}
		cfg.ConnConfig.Host, cfg.ConnConfig.Port = host, uint16(p)
		cfg.ConnConfig.Fallbacks = nil
	}
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	cfg.ConnConfig.RuntimeParams["application_name"] = pgApp
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL pool: %w", err)
	}
	return pool, nil
}

// pgAddr is the host:port a DSN names.
func pgAddr(dsn string) (string, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "", fmt.Errorf("parse the PostgreSQL DSN: %w", err)
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), nil
}

// pgReachable connects once to dsn.
func pgReachable(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return c.Ping(ctx)
}

// requirePG skips t when the PostgreSQL of pgDSN does not answer, or fails
// it under CI=true.
func requirePG(t *testing.T) {
	t.Helper()
	if err := pgReachable(pgDSN()); err != nil {
		msg := fmt.Sprintf("no PostgreSQL at %s (set CAESURA_PG_DSN to run the pglock reliability scenarios): %v", pgDSN(), err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		skipScenario(t, msg)
	}
}

// startPG returns the settings of the shared PostgreSQL, with an admin pool
// of the parent's own for the session terminations.
func startPG(t *testing.T) *env {
	t.Helper()
	requirePG(t)
	e, err := pgEnv(t, pgDSN())
	if err != nil {
		t.Fatal(err)
	}
	e.missing = map[string]string{
		"server": "the machine's PostgreSQL on 5432 is shared with other tests and is never restarted; the server crashes run against a private instance in fenced-store/server-crash-persistent",
	}
	return e
}

// pgEnv is the env of the PostgreSQL at dsn.
func pgEnv(t *testing.T, dsn string) (*env, error) {
	addr, err := pgAddr(dsn)
	if err != nil {
		return nil, err
	}
	admin, err := pgPool(dsn, "", 2)
	if err != nil {
		return nil, err
	}
	t.Cleanup(admin.Close)
	// A Locker of the parent's own names the same advisory lock ids.
	names, err := pglock.New(admin, pglock.Options{Prefix: pgPrefix, Sequence: pgSequence})
	if err != nil {
		return nil, err
	}
	return &env{
		cfg:     map[string]string{"dsn": dsn, "addr": addr, "prefix": pgPrefix},
		addrKey: "addr",
		expire: func(lock string) error {
			return terminateHolder(admin, names.ID(lock))
		},
		// The liveness check peeks at each pinned connection every
		// CheckInterval, and pings it when it sees data pending.
		detect: 2 * pglock.DefaultCheckInterval,
		// No lease to outlast: pauses and partitions of 1s (four check
		// intervals: the holder's checks are paused with it).
		stopFor: time.Second,
		hold:    800 * time.Millisecond,
	}, nil
}

// sqlTerminateHolder ends the server session that holds the advisory lock
// with the given id (classid and objid are its high and low 32 bits) in this
// database, waiting up to 5s for the backend to exit.
const sqlTerminateHolder = `SELECT l.pid, pg_terminate_backend(l.pid, 5000) FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = $1 AND l.objid::bigint = $2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`

// terminateHolder ends the session of the lock's holder, as an operator
// would (or a server-side timeout), and returns once the backend has exited.
func terminateHolder(admin *pgxpool.Pool, id int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hi, lo := int64(uint64(id)>>32), int64(uint64(id)&0xffffffff)
	rows, err := admin.Query(ctx, sqlTerminateHolder, hi, lo)
	if err != nil {
		return fmt.Errorf("pg_terminate_backend: %w", err)
	}
	n := 0
	for rows.Next() {
		var pid int32
		var ok bool
		if err := rows.Scan(&pid, &ok); err != nil {
			rows.Close()
			return fmt.Errorf("pg_terminate_backend: %w", err)
		}
		if !ok {
			rows.Close()
			return fmt.Errorf("pg_terminate_backend(%d): the backend did not exit within 5s", pid)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pg_terminate_backend: %w", err)
	}
	if n == 0 {
		return errNoHolder
	}
	return nil
}

// pgServer is a private PostgreSQL instance: initdb into a temporary
// directory, the postgres server on an ephemeral 127.0.0.1 port, as the
// postgres user when the test runs as root (the server refuses root).
type pgServer struct {
	bin  string // the postgres program
	dir  string // socket directory, log; data in dir/data
	port int
	cred *syscall.Credential // nil: run as ourselves

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// pgBin finds a PostgreSQL server program: in Debian's
// /usr/lib/postgresql/*/bin (the newest), or on PATH.
func pgBin(name string) string {
	ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(ms) > 0 {
		return ms[len(ms)-1]
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return ""
}

// startPrivatePG starts a private instance for t, or skips t (recording
// why) when the machine lacks what it needs.
func startPrivatePG(t *testing.T) *env {
	t.Helper()
	initdb, postgres := pgBin("initdb"), pgBin("postgres")
	if initdb == "" || postgres == "" {
		skipScenario(t, "not run: initdb and postgres not found (/usr/lib/postgresql/*/bin or PATH); the PostgreSQL server crash needs a private instance, since the shared server on 5432 must not be restarted")
	}
	s := &pgServer{bin: postgres}
	parent := ""
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			skipScenario(t, fmt.Sprintf("not run: the test runs as root, which PostgreSQL refuses, and there is no postgres user to run the private instance as (%v)", err))
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			t.Fatalf("postgres user: uid %q gid %q", u.Uid, u.Gid)
		}
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		parent = "/tmp" // the postgres user must reach it, whatever TMPDIR is
	}
	dir, err := os.MkdirTemp(parent, "caesura-reliability-pg-")
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	t.Cleanup(func() { os.RemoveAll(dir) })
	if s.cred != nil {
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := s.command(initdb, "-D", s.data(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	var errs []error
	for attempt := 0; ; attempt++ {
		port, err := testport.One()
		if err != nil {
			t.Fatal(err)
		}
		s.port = port
		if err = s.start(); err == nil {
			break
		}
		errs = append(errs, err)
		if attempt == 4 {
			t.Fatalf("start a private PostgreSQL: %v", errors.Join(errs...))
		}
	}
	t.Cleanup(s.kill)
	e, err := pgEnv(t, s.dsn())
	if err != nil {
		t.Fatal(err)
	}
	e.crash = s.crash
	return e
}

func (s *pgServer) data() string { return filepath.Join(s.dir, "data") }

func (s *pgServer) dsn() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// command runs a PostgreSQL program as the server's user, in a process
// group of its own (the server's backends join it: kill -9 of the group
// ends them all).
func (s *pgServer) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	// Should the test binary die without its clean-ups (a timeout), the
	// postmaster goes with it, and its backends follow it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// start runs the server and waits until it answers, or fails if it exits
// first (the port was taken).
func (s *pgServer) start() error {
	log, err := os.OpenFile(filepath.Join(s.dir, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o666)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := s.command(s.bin, "-D", s.data(), "-p", strconv.Itoa(s.port), "-k", s.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=60", "-c", "shared_buffers=16MB")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = log, &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-done:
			return fmt.Errorf("postgres on port %d exited at start (%v): %s", s.port, cmd.ProcessState, stderr.String())
		default:
		}
		if err := pgReachable(s.dsn()); err == nil {
			break
		} else if time.Now().After(deadline) {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			return fmt.Errorf("postgres on port %d does not answer after a minute: %v: %s", s.port, err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	return nil
}

// kill ends the postmaster and every backend at once (kill -9 of their
// process group); a no-op when the server is down.
func (s *pgServer) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	// The backends are the postmaster's children, not ours: wait until
	// none of the group is alive (zombies aside, which the init process
	// may be slow to reap), so that the restart finds its shared memory
	// free.
	for range 500 {
		if !groupAlive(cmd.Process.Pid) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// groupAlive reports whether a process of group pgid is alive (not a
// zombie), from /proc.
func groupAlive(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, name := range stats {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and
		// parentheses, so read after the last ")".
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 3 {
			continue
		}
		if g, err := strconv.Atoi(string(f[2])); err == nil && g == pgid && string(f[0]) != "Z" && string(f[0]) != "X" {
			return true
		}
	}
	return false
}

// crash kills the server (every process of it, kill -9), waits down, and
// starts it again on the same data directory and port: crash recovery
// replays the WAL.
func (s *pgServer) crash(down time.Duration) error {
	s.kill()
	time.Sleep(down)
	var err error
	for range 5 {
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}
