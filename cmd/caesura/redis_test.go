package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caesura-go/caesura/internal/testport"
)

// startRedis starts a redis-server of the test's own on a free port, and
// returns its URL and a function that kills it. Without redis-server the
// test is skipped (failed with CI=true).
func startRedis(t *testing.T) (url string, kill func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not on the PATH")
		}
		t.Skip("redis-server is not on the PATH (apt-get install redis-server)")
	}
	port, err := testport.One()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(kill)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for range 500 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "redis://" + addr + "/0", kill
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("redis-server on %s did not start", addr)
	return "", nil
}

// The no-overlap test of the file backend, on Redis.
func TestRedisNoOverlap(t *testing.T) {
	backend, _ := startRedis(t)
	log := filepath.Join(t.TempDir(), "log")
	var wg sync.WaitGroup
	results := make([]result, 4)
	for i := range results {
		wg.Go(func() {
			results[i] = runCaesura(t, nil, append([]string{"run", "--backend", backend, "-k", "shared", "--"}, helper("append", log, fmt.Sprint(i), "50ms")...)...)
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

// Killing the Redis server while the command runs: the lease cannot be
// renewed, the command gets SIGTERM, caesura exits with the lost-lock code.
func TestRedisLockLost(t *testing.T) {
	backend, kill := startRedis(t)
	file := filepath.Join(t.TempDir(), "trap")
	cmd := caesuraCmd(nil, append([]string{"run", "--backend", backend, "--ttl", "600ms", "-k", "lease", "--"}, helper("trap", file)...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, file, "ready")
	kill()
	r := finish(t, cmd, start, &out, &errb)
	if r.code != exitLostDefault {
		t.Errorf("exit %d, want %d; stderr: %s", r.code, exitLostDefault, r.stderr)
	}
	b, _ := os.ReadFile(file)
	if !strings.Contains(string(b), "got terminated") {
		t.Errorf("the command wrote %q, want it to have got SIGTERM", b)
	}
}

func TestRedisWaitZeroStatusDemo(t *testing.T) {
	backend, _ := startRedis(t)
	release := hold(t, backend, "busy")
	if r := runCaesura(t, nil, "run", "--backend", backend, "--wait", "0", "-k", "busy", "--", "true"); r.code != 1 {
		t.Errorf("--wait 0 on a held key: exit %d, want 1; stderr: %s", r.code, r.stderr)
	}
	if r := runCaesura(t, nil, "status", "--backend", backend, "busy", "free"); r.code != 1 || !strings.Contains(r.stdout, `"busy"  held`) {
		t.Errorf("status: exit %d, want 1 and busy held; stdout: %s; stderr: %s", r.code, r.stdout, r.stderr)
	}
	release()
	r := runCaesura(t, nil, "demo", "--backend", backend, "--workers", "8", "--accounts", "16", "--transfers", "500")
	if r.code != 0 || !strings.Contains(r.stdout, "OK: balance unchanged") {
		t.Errorf("demo: exit %d, want 0 and the OK verdict; stdout: %s; stderr: %s", r.code, r.stdout, r.stderr)
	}
}
