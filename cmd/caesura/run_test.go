package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Two (here three) caesura run processes on one key of the file backend never
// run their commands at the same time: each command appends start and end
// lines with timestamps to one file, and the intervals must not overlap.
func TestRunNoOverlap(t *testing.T) {
	backend := fileBackend(t)
	log := filepath.Join(t.TempDir(), "log")
	const procs, rounds = 3, 3
	var wg sync.WaitGroup
	results := make([]result, procs*rounds)
	for p := range procs {
		wg.Go(func() {
			for r := range rounds {
				id := fmt.Sprintf("p%dr%d", p, r)
				results[p*rounds+r] = runCaesura(t, nil, append([]string{"run", "--backend", backend, "-k", "shared", "--"}, helper("append", log, id, "30ms")...)...)
			}
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
	type span struct {
		id         string
		start, end int64
	}
	spans := map[string]*span{}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i, line := range lines {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("line %d: %q", i, line)
		}
		ns, _ := strconv.ParseInt(f[2], 10, 64)
		s := spans[f[1]]
		if s == nil {
			s = &span{id: f[1]}
			spans[f[1]] = s
		}
		if f[0] == "start" {
			s.start = ns
		} else {
			s.end = ns
		}
		// In the file too, a start must follow the previous command's end.
		if i%2 == 0 && f[0] != "start" || i%2 == 1 && f[0] != "end" {
			t.Fatalf("line %d: got %q, want alternating start/end lines:\n%s", i, line, b)
		}
	}
	if len(spans) != procs*rounds {
		t.Fatalf("got %d commands in the log, want %d", len(spans), procs*rounds)
	}
	sorted := make([]*span, 0, len(spans))
	for _, s := range spans {
		sorted = append(sorted, s)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].start < sorted[j].start })
	for i := 1; i < len(sorted); i++ {
		if sorted[i].start < sorted[i-1].end {
			t.Errorf("%s started %v before %s ended", sorted[i].id, time.Duration(sorted[i-1].end-sorted[i].start), sorted[i-1].id)
		}
	}
}

func TestRunWaitZeroWhenHeld(t *testing.T) {
	backend := fileBackend(t)
	release := hold(t, backend, "busy")

	r := runCaesura(t, nil, "run", "--backend", backend, "--wait", "0", "-k", "busy", "-k", "other", "--", "true")
	if r.code != 1 {
		t.Errorf("--wait 0 on a held key: exit %d, want 1; stderr: %s", r.code, r.stderr)
	}
	oneLine(t, r)
	if !strings.Contains(r.stderr, `"busy"`) {
		t.Errorf("stderr %q does not name the key", r.stderr)
	}

	r = runCaesura(t, nil, "run", "--backend", backend, "--wait", "0", "--conflict-exit-code", "9", "-k", "busy", "--", "true")
	if r.code != 9 {
		t.Errorf("--conflict-exit-code 9: exit %d, want 9; stderr: %s", r.code, r.stderr)
	}

	r = runCaesura(t, nil, "run", "--backend", backend, "--wait", "300ms", "-k", "busy", "--", "true")
	if r.code != 1 || r.elapsed < 300*time.Millisecond {
		t.Errorf("--wait 300ms: exit %d after %v, want 1 after at least 300ms; stderr: %s", r.code, r.elapsed, r.stderr)
	}

	// The other key was not left held by the failed try.
	r = runCaesura(t, nil, "run", "--backend", backend, "--wait", "0", "-k", "other", "--", "true")
	if r.code != 0 {
		t.Errorf("--wait 0 on a free key: exit %d, want 0; stderr: %s", r.code, r.stderr)
	}

	if r := release(); r.code != 0 {
		t.Errorf("holder: exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
	r = runCaesura(t, nil, "run", "--backend", backend, "--wait", "0", "-k", "busy", "--", "true")
	if r.code != 0 {
		t.Errorf("--wait 0 after release: exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
}

// A caesura run waiting without --wait gets the lock once it is released.
func TestRunWaitsForRelease(t *testing.T) {
	backend := fileBackend(t)
	release := hold(t, backend, "k")
	cmd := caesuraCmd(nil, "run", "--backend", backend, "-k", "k", "--", "true")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	release()
	if r := finish(t, cmd, start, &out, &errb); r.code != 0 {
		t.Errorf("exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
}

func TestRunExitStatus(t *testing.T) {
	backend := fileBackend(t)
	for _, tc := range []struct {
		name string
		argv []string
		want int
	}{
		{"exit 0", helper("exit", "0"), 0},
		{"exit 3", helper("exit", "3"), 3},
		{"exit 255", helper("exit", "255"), 255},
		{"killed by SIGKILL is 128+9", helper("kill-self"), 137},
		{"command not found is 127", []string{"caesura-no-such-command"}, 127},
		{"not executable is 126", []string{t.TempDir()}, 126},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCaesura(t, nil, append([]string{"run", "--backend", backend, "-k", "k", "--"}, tc.argv...)...)
			if r.code != tc.want {
				t.Errorf("exit %d, want %d; stderr: %s", r.code, tc.want, r.stderr)
			}
			if tc.want >= 126 && tc.want <= 127 {
				oneLine(t, r)
			}
		})
	}
}

// SIGTERM and SIGINT sent to caesura reach the command, and the command's
// status comes back.
func TestRunForwardsSignals(t *testing.T) {
	backend := fileBackend(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "trap")
			cmd := caesuraCmd(nil, append([]string{"run", "--backend", backend, "-k", "sig", "--"}, helper("trap", file)...)...)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			start := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitFile(t, file, "ready")
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			r := finish(t, cmd, start, &out, &errb)
			if r.code != 42 {
				t.Errorf("exit %d, want 42 (the command's); stderr: %s", r.code, r.stderr)
			}
			b, _ := os.ReadFile(file)
			if want := "got " + sig.String(); !strings.Contains(string(b), want) {
				t.Errorf("the command wrote %q, want %q", b, want)
			}
		})
	}
}

// A signal while caesura waits for the locks ends the wait: 128+N.
func TestRunInterruptedWhileWaiting(t *testing.T) {
	backend := fileBackend(t)
	hold(t, backend, "k")
	cmd := caesuraCmd(nil, "run", "--backend", backend, "-k", "k", "--", "true")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := finish(t, cmd, start, &out, &errb)
	if r.code != 128+int(syscall.SIGTERM) {
		t.Errorf("exit %d, want %d; stderr: %s", r.code, 128+int(syscall.SIGTERM), r.stderr)
	}
	oneLine(t, r)
}

func TestRunTokensInEnv(t *testing.T) {
	backend := fileBackend(t)
	var last uint64
	for i := range 2 {
		r := runCaesura(t, nil, append([]string{"run", "--backend", backend, "-k", "report", "--"}, helper("env")...)...)
		if r.code != 0 {
			t.Fatalf("exit %d; stderr: %s", r.code, r.stderr)
		}
		env := parseEnv(r.stdout)
		tok, err := strconv.ParseUint(env["CAESURA_TOKEN"], 10, 64)
		if err != nil {
			t.Fatalf("CAESURA_TOKEN: got %q, want a number; env: %v", env["CAESURA_TOKEN"], env)
		}
		if env["CAESURA_TOKEN_REPORT"] != env["CAESURA_TOKEN"] {
			t.Errorf("CAESURA_TOKEN_REPORT: got %q, want %q", env["CAESURA_TOKEN_REPORT"], env["CAESURA_TOKEN"])
		}
		if env["CAESURA_KEYS"] != "report" {
			t.Errorf("CAESURA_KEYS: got %q, want %q", env["CAESURA_KEYS"], "report")
		}
		if i > 0 && tok <= last {
			t.Errorf("token %d after %d: want it to grow", tok, last)
		}
		last = tok
	}

	// Several keys: one variable each, sanitized; no CAESURA_TOKEN, not even
	// one inherited from an enclosing run.
	r := runCaesura(t, []string{"CAESURA_TOKEN=999", "CAESURA_TOKEN_STALE=1"},
		append([]string{"run", "--backend", backend, "-k", "db:migrate", "-k", "report-2024.q1", "-k", "db:migrate", "--"}, helper("env")...)...)
	if r.code != 0 {
		t.Fatalf("exit %d; stderr: %s", r.code, r.stderr)
	}
	env := parseEnv(r.stdout)
	if env["CAESURA_KEYS"] != "db:migrate,report-2024.q1" {
		t.Errorf("CAESURA_KEYS: got %q, want %q", env["CAESURA_KEYS"], "db:migrate,report-2024.q1")
	}
	for _, name := range []string{"CAESURA_TOKEN_DB_MIGRATE", "CAESURA_TOKEN_REPORT_2024_Q1"} {
		if _, err := strconv.ParseUint(env[name], 10, 64); err != nil {
			t.Errorf("%s: got %q, want a number; env: %v", name, env[name], env)
		}
	}
	for _, name := range []string{"CAESURA_TOKEN", "CAESURA_TOKEN_STALE"} {
		if v, ok := env[name]; ok {
			t.Errorf("%s=%s reached the command; want it unset", name, v)
		}
	}
}

func TestEnvName(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"report", "CAESURA_TOKEN_REPORT"},
		{"db:migrate", "CAESURA_TOKEN_DB_MIGRATE"},
		{"Report-2024.q1", "CAESURA_TOKEN_REPORT_2024_Q1"},
		{"a b/c", "CAESURA_TOKEN_A_B_C"},
		{"é", "CAESURA_TOKEN___"}, // two bytes in UTF-8
		{"9lives", "CAESURA_TOKEN_9LIVES"},
	} {
		if got := envName(tc.key); got != tc.want {
			t.Errorf("envName(%q): got %q, want %q", tc.key, got, tc.want)
		}
	}
	if _, err := tokenEnvNames([]string{"a-b", "a.b"}); err == nil || !strings.Contains(err.Error(), "CAESURA_TOKEN_A_B") {
		t.Errorf("tokenEnvNames(a-b, a.b): got %v, want an error naming CAESURA_TOKEN_A_B", err)
	}
}

// If caesura is killed (SIGKILL: nothing forwarded, its locks freed by the
// kernel), the command gets SIGTERM rather than running on unlocked.
func TestRunParentDeathStopsCommand(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("parent-death signal is Linux only")
	}
	backend := fileBackend(t)
	file := filepath.Join(t.TempDir(), "trap")
	cmd := caesuraCmd(nil, append([]string{"run", "--backend", backend, "-k", "k", "--"}, helper("trap", file)...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, file, "ready")
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitFile(t, file, "got terminated")
}
