package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgDSN is the test PostgreSQL: CAESURA_PG_DSN, or the local server of the
// development and CI machines.
func pgDSN() string {
	if d := os.Getenv("CAESURA_PG_DSN"); d != "" {
		return d
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// requirePostgres skips the test when no PostgreSQL answers (fails with
// CI=true), and returns a DSN whose sessions carry a name unique to the
// test.
func requirePostgres(t *testing.T) (dsn, appName string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgDSN())
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no PostgreSQL at %s: %v", redactRaw(pgDSN()), err)
		}
		t.Skipf("no PostgreSQL at %s (set CAESURA_PG_DSN): %v", redactRaw(pgDSN()), err)
	}
	conn.Close(ctx)
	u, err := url.Parse(pgDSN())
	if err != nil {
		t.Fatal(err)
	}
	appName = fmt.Sprintf("caesura-cli-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	q := u.Query()
	q.Set("application_name", appName)
	u.RawQuery = q.Encode()
	return u.String(), appName
}

// The no-overlap test of the file backend, on PostgreSQL.
func TestPostgresNoOverlap(t *testing.T) {
	t.Parallel()
	dsn, _ := requirePostgres(t)
	log := filepath.Join(t.TempDir(), "log")
	key := fmt.Sprintf("cli-test-%d", time.Now().UnixNano())
	var wg sync.WaitGroup
	results := make([]result, 4)
	for i := range results {
		wg.Go(func() {
			results[i] = runCaesura(t, nil, append([]string{"run", "--backend", dsn, "-k", key, "--"}, helper("append", log, fmt.Sprint(i), "50ms")...)...)
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("run %d: exit %d, want 0; stderr: %s", i, r.code, r.stderr)
		}
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2*len(results) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), 2*len(results), b)
	}
	for i, line := range lines {
		f := strings.Fields(line)
		want := "start"
		if i%2 == 1 {
			want = "end"
		}
		if len(f) != 3 || f[0] != want || (i%2 == 1 && f[1] != strings.Fields(lines[i-1])[1]) {
			t.Fatalf("line %d: got %q, want the %s of the command that started last:\n%s", i, line, want, b)
		}
	}
}

// Terminating the PostgreSQL session that holds the lock makes the command
// get SIGTERM and caesura exit with the lost-lock code.
func TestPostgresLockLost(t *testing.T) {
	t.Parallel()
	dsn, appName := requirePostgres(t)
	file := filepath.Join(t.TempDir(), "trap")
	key := fmt.Sprintf("cli-lost-%d", time.Now().UnixNano())
	cmd := caesuraCmd(nil, append([]string{"run", "--backend", dsn, "-k", key, "--"}, helper("trap", file)...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, file, "ready")
	terminateSessions(t, appName)

	r := finish(t, cmd, start, &out, &errb)
	if r.code != exitLostDefault {
		t.Errorf("exit %d, want %d; stderr: %s", r.code, exitLostDefault, r.stderr)
	}
	b, _ := os.ReadFile(file)
	if !strings.Contains(string(b), "got terminated") {
		t.Errorf("the command wrote %q, want it to have got SIGTERM", b)
	}
	if !strings.Contains(r.stderr, "lock lost") {
		t.Errorf("stderr %q does not say the lock was lost", r.stderr)
	}
}

// terminateSessions ends the PostgreSQL sessions named appName: their
// caesura loses its locks.
func terminateSessions(t *testing.T, appName string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", appName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("no session named %s to terminate", appName)
	}
}

func TestPostgresDemoAndStatus(t *testing.T) {
	t.Parallel()
	dsn, _ := requirePostgres(t)
	r := runCaesura(t, nil, "demo", "--backend", dsn, "--workers", "8", "--accounts", "16", "--transfers", "300")
	if r.code != 0 || !strings.Contains(r.stdout, "OK: balance unchanged") {
		t.Fatalf("demo: exit %d, want 0 and the OK verdict; stdout: %s; stderr: %s", r.code, r.stdout, r.stderr)
	}
	key := fmt.Sprintf("cli-status-%d", time.Now().UnixNano())
	release := hold(t, dsn, key)
	if r := runCaesura(t, nil, "status", "--backend", dsn, key); r.code != 1 || !strings.Contains(r.stdout, "held") {
		t.Errorf("status of a held key: exit %d, want 1; stdout: %s; stderr: %s", r.code, r.stdout, r.stderr)
	}
	release()
	if r := runCaesura(t, nil, "status", "--backend", dsn, key); r.code != 0 {
		t.Errorf("status of a free key: exit %d, want 0; stdout: %s; stderr: %s", r.code, r.stdout, r.stderr)
	}
}

// A password in the URL of a reachable server (trust authentication ignores
// it) shows nowhere, in verbose logs included.
func TestPostgresNoPasswordInOutput(t *testing.T) {
	t.Parallel()
	dsn, _ := requirePostgres(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, set := u.User.Password(); set {
		t.Skip("CAESURA_PG_DSN has a password of its own")
	}
	u.User = url.UserPassword(u.User.Username(), "hunter2-Secret")
	for _, args := range [][]string{
		append([]string{"-v", "run", "--backend", u.String(), "-k", "pw", "--"}, helper("exit", "0")...),
		{"status", "--backend", u.String(), "pw"},
		{"demo", "--backend", u.String(), "--transfers", "50"},
	} {
		r := runCaesura(t, nil, args...)
		if strings.Contains(r.stdout+r.stderr, "hunter2") {
			t.Errorf("caesura %s shows the password:\n%s%s", args[:2], r.stdout, r.stderr)
		}
		if r.code != 0 && !strings.Contains(r.stderr, "password authentication failed") {
			t.Errorf("caesura %s: exit %d; stderr: %s", args[:2], r.code, r.stderr)
		}
	}
}
