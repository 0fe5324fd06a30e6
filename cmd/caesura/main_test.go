package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// caesuraBin is the caesura binary that TestMain builds; the tests run it
// as a user would.
var caesuraBin string

// helperEnv makes the test binary act as the command caesura runs (see
// helperMain), so that the tests need no shell tools.
const helperEnv = "CAESURA_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[1:]))
	}
	dir, err := os.MkdirTemp("", "caesura-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	caesuraBin = filepath.Join(dir, "caesura")
	build := exec.Command(goTool(), "build", "-o", caesuraBin, ".")
	build.Env = append(os.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building caesura: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// helperMain is the test binary acting as caesura's command.
//
//	append FILE ID HOLD   append "start ID NS", sleep HOLD, append "end ID NS"
//	env                   print the CAESURA_ variables
//	exit N                exit with status N
//	kill-self             die of SIGKILL
//	trap FILE             write "ready" to FILE, wait for SIGTERM or SIGINT,
//	                      append the signal's name to FILE, exit 42
//	ignore-term FILE      ignore SIGTERM, write "ready" to FILE, sleep 30s
//	hold READY RELEASE    write READY, wait until RELEASE exists (at most 30s)
func helperMain(mode string, args []string) int {
	switch mode {
	case "append":
		hold, _ := time.ParseDuration(args[2])
		f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		fmt.Fprintf(f, "start %s %d\n", args[1], time.Now().UnixNano())
		time.Sleep(hold)
		fmt.Fprintf(f, "end %s %d\n", args[1], time.Now().UnixNano())
		return 0
	case "env":
		for _, kv := range os.Environ() {
			if strings.HasPrefix(kv, "CAESURA_") && !strings.HasPrefix(kv, helperEnv) {
				fmt.Println(kv)
			}
		}
		return 0
	case "exit":
		n, _ := strconv.Atoi(args[0])
		return n
	case "kill-self":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(10 * time.Second)
		return 1
	case "trap":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, os.Interrupt)
		if err := os.WriteFile(args[0], []byte("ready\n"), 0o600); err != nil {
			return 1
		}
		select {
		case s := <-c:
			f, _ := os.OpenFile(args[0], os.O_WRONLY|os.O_APPEND, 0)
			fmt.Fprintf(f, "got %v\n", s)
			f.Close()
			return 42
		case <-time.After(30 * time.Second):
			return 1
		}
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		if err := os.WriteFile(args[0], []byte("ready\n"), 0o600); err != nil {
			return 1
		}
		time.Sleep(30 * time.Second)
		return 1
	case "hold":
		if err := os.WriteFile(args[0], []byte("ready\n"), 0o600); err != nil {
			return 1
		}
		for range 3000 {
			if _, err := os.Stat(args[1]); err == nil {
				return 0
			}
			time.Sleep(10 * time.Millisecond)
		}
		return 1
	}
	if h, ok := extraHelpers[mode]; ok {
		return h(args)
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// extraHelpers are helper modes defined beside the tests that use them.
var extraHelpers = map[string]func(args []string) int{}

// result is one finished caesura process.
type result struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

// runCaesura runs the binary with args and extra environment (NAME=value), and
// waits for it (at most a minute).
func runCaesura(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := caesuraCmd(env, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return finish(t, cmd, start, &out, &errb)
}

func caesuraCmd(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(caesuraBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.WaitDelay = time.Second
	return cmd
}

// cleanEnv is the test's environment without CAESURA_ variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAESURA_") {
			env = append(env, kv)
		}
	}
	return env
}

func finish(t *testing.T, cmd *exec.Cmd, start time.Time, out, errb *bytes.Buffer) result {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("caesura %q did not finish within a minute; stderr: %s", cmd.Args[1:], errb)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("caesura %q: %v", cmd.Args[1:], err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
}

// helper returns the command line that makes the test binary run helperMain.
// GORACE keeps a -race test binary from sleeping a second at exit.
func helper(mode string, args ...string) []string {
	return append([]string{"env", helperEnv + "=" + mode, "GORACE=atexit_sleep_ms=0", os.Args[0]}, args...)
}

// fileBackend returns a file backend URL in a fresh directory.
func fileBackend(t *testing.T) string {
	return "file://" + filepath.Join(t.TempDir(), "locks")
}

// waitFile waits until path has a line want.
func waitFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: no %q within 30s", path, want)
}

// oneLine checks that stderr is one line starting "caesura: " with no trace
// of a panic.
func oneLine(t *testing.T, r result) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "caesura: ") {
		t.Errorf("stderr: got %q, want one line starting \"caesura: \"", r.stderr)
	}
	for _, bad := range []string{"panic", "goroutine ", ".go:"} {
		if strings.Contains(r.stderr, bad) {
			t.Errorf("stderr has %q: %s", bad, r.stderr)
		}
	}
}

// parseEnv reads NAME=value lines.
func parseEnv(s string) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m
}

// hold starts a caesura run that holds keys until release is called.
func hold(t *testing.T, backend string, keys ...string) (release func() result) {
	t.Helper()
	dir := t.TempDir()
	ready, rel := filepath.Join(dir, "ready"), filepath.Join(dir, "release")
	args := []string{"run", "--backend", backend}
	for _, k := range keys {
		args = append(args, "-k", k)
	}
	args = append(append(args, "--"), helper("hold", ready, rel)...)
	cmd := caesuraCmd(nil, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	released := false
	releaseFn := func() result {
		if released {
			return result{}
		}
		released = true
		if err := os.WriteFile(rel, nil, 0o600); err != nil {
			t.Error(err)
		}
		return finish(t, cmd, start, &out, &errb)
	}
	t.Cleanup(func() { releaseFn() })
	waitFile(t, ready, "ready")
	return releaseFn
}

// runCtx is a context for in-process tests.
func runCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// --log-level and --log-format write the library's lock events as slog
// records on standard error; bad values are one-line usage errors.
func TestLogFlags(t *testing.T) {
	dir := t.TempDir()
	res := runCaesura(t, nil, "run", "--backend", "file://"+dir, "--log-level", "debug", "--log-format", "json", "-k", "logged", "--", "true")
	if res.code != 0 {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	for _, msg := range []string{`"msg":"caesura: wait-start"`, `"msg":"caesura: acquired"`, `"msg":"caesura: released"`, `"key":"file:logged"`} {
		if !strings.Contains(res.stderr, msg) {
			t.Errorf("stderr lacks %s:\n%s", msg, res.stderr)
		}
	}
	res = runCaesura(t, nil, "run", "--backend", "file://"+dir, "--log-level", "warn", "-k", "quiet", "--", "true")
	if res.code != 0 || res.stderr != "" {
		t.Fatalf("warn level for a clean run: exit %d, stderr %q", res.code, res.stderr)
	}
	for _, args := range [][]string{{"--log-level", "loud"}, {"--log-level", "info", "--log-format", "xml"}} {
		res = runCaesura(t, nil, append(append([]string{"run"}, args...), "-k", "x", "--", "true")...)
		if res.code == 0 || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 || !strings.Contains(res.stderr, "--log-") {
			t.Errorf("%v: exit %d, stderr %q: want a one-line usage error naming the flag", args, res.code, res.stderr)
		}
	}
}

// Every command's --help has examples, and shell completion is generated.
func TestHelpAndCompletion(t *testing.T) {
	for _, cmd := range []string{"run", "demo", "status"} {
		res := runCaesura(t, nil, cmd, "--help")
		if res.code != 0 || !strings.Contains(res.stdout, "Examples:") || !strings.Contains(res.stdout, "caesura "+cmd) {
			t.Errorf("%s --help: exit %d, no examples:\n%s", cmd, res.code, res.stdout)
		}
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		res := runCaesura(t, nil, "completion", shell)
		if res.code != 0 || !strings.Contains(res.stdout, "caesura") || len(res.stdout) < 500 {
			t.Errorf("completion %s: exit %d, %d bytes", shell, res.code, len(res.stdout))
		}
	}
}
