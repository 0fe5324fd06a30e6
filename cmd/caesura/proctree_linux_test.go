package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() { extraHelpers["pgrp"] = pgrpMain }

// pgrpMain prints the command's process group and its parent's (caesura's).
func pgrpMain([]string) int {
	ppgid, err := syscall.Getpgid(os.Getppid())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(syscall.Getpgrp(), ppgid)
	return 0
}

// treeMarkVar names the variable that marks the processes of one test's
// command trees: every process of the tree inherits it from caesura.
const treeMarkVar = "CAESURA_TEST_TREE"

// treeMark returns a NAME=value to put in caesura's environment. When the
// test ends, every process still alive that has it is killed, so that no
// test leaves a sleep behind, whatever way it failed.
func treeMark(t *testing.T) string {
	t.Helper()
	mark := fmt.Sprintf("%s=%d-%d", treeMarkVar, os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		for _, p := range marked(mark) {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	})
	return mark
}

// marked returns the processes alive (not zombies) whose environment holds
// mark.
func marked(mark string) []proc {
	procs, err := listProcs()
	if err != nil {
		return nil
	}
	var out []proc
	for _, p := range procs {
		if p.ended() {
			continue
		}
		env, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/environ")
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(env), "\x00"), mark) {
			out = append(out, p)
		}
	}
	return out
}

// markedBut returns the marked processes other than pid, as "pid N comm".
func markedBut(mark string, pid int) []string {
	var out []string
	for _, p := range marked(mark) {
		if p.pid != pid {
			out = append(out, fmt.Sprintf("pid %d %s", p.pid, p.comm))
		}
	}
	return out
}

// statFields returns the fields of /proc/<pid>/stat after the command
// name: state, ppid, pgrp, session, ...
func statFields(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
}

// shScript writes a shell script to a file and returns its path.
func shScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// background is a process a test started and waits for; if the test ends
// first, it is killed.
type background struct {
	cmd    *exec.Cmd
	start  time.Time
	stdout lockedBuffer
	stderr lockedBuffer
	done   chan struct{}
	err    error
}

func startBackground(t *testing.T, cmd *exec.Cmd) *background {
	t.Helper()
	b := &background{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &b.stdout, &b.stderr
	b.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.err = cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			_ = cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

func (b *background) wait(t *testing.T) result {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(time.Minute):
		t.Fatalf("%q did not finish within a minute; stderr: %s", b.cmd.Args, b.stderr.String())
	}
	var ee *exec.ExitError
	if b.err != nil && !errors.As(b.err, &ee) {
		t.Fatalf("%q: %v", b.cmd.Args, b.err)
	}
	return result{code: b.cmd.ProcessState.ExitCode(), stdout: b.stdout.String(), stderr: b.stderr.String(), elapsed: time.Since(b.start)}
}

// waitStderr waits until b's standard error has want.
func (b *background) waitStderr(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(b.stderr.String(), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("stderr: no %q within 30s: %s", want, b.stderr.String())
}

// A lock lost while the command runs ends its whole tree before caesura
// exits: background jobs, a grandchild that ignores SIGTERM (SIGKILL after
// --grace), and orphans that double-forked, even into a session of their
// own, which caesura adopted as a child subreaper; and processes the
// command left running when it exited.
func TestRunLockLostStopsTree(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		script string // $1: a file to write "ready" to; $2: a file for the pids of orphans
		procs  int    // processes in the tree when it is ready, at least
		grace  time.Duration
		kill   bool // SIGTERM does not end the tree: SIGKILL after --grace
		left   bool // the command exits first, leaving processes running
	}{
		{
			name:   "background jobs",
			script: `sleep 60 & sleep 60 & echo ready > "$1"; wait`,
			procs:  3, grace: 10 * time.Second,
		},
		{
			name:   "a grandchild ignores SIGTERM",
			script: `sh -c 'trap "" TERM; sleep 60 & echo ready > "$1"; wait' sh "$1" & wait`,
			procs:  3, grace: 500 * time.Millisecond, kill: true,
		},
		{
			name: "double-forked orphans",
			script: `(sleep 60 & echo $! >> "$2")
if command -v setsid >/dev/null; then (setsid sleep 60 & echo $! >> "$2"); fi
sleep 60 &
echo ready > "$1"
wait`,
			procs: 3, grace: 10 * time.Second,
		},
		{
			name:   "processes the command left",
			script: `sleep 60 & sleep 60 & echo ready > "$1"`,
			procs:  2, grace: 10 * time.Second, left: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn, appName := requirePostgres(t)
			mark := treeMark(t)
			dir := t.TempDir()
			ready, orphans := filepath.Join(dir, "ready"), filepath.Join(dir, "orphans")
			key := fmt.Sprintf("cli-tree-%d", time.Now().UnixNano())
			c := startBackground(t, caesuraCmd([]string{mark}, "run", "--backend", dsn, "--grace", tc.grace.String(), "-k", key, "--", "sh", shScript(t, tc.script), ready, orphans))
			waitFile(t, ready, "ready")
			if tc.left {
				c.waitStderr(t, "leaving")
			}
			caesuraPid := c.cmd.Process.Pid
			if tree := markedBut(mark, caesuraPid); len(tree) < tc.procs {
				t.Fatalf("the command's tree is %v, want at least %d processes", tree, tc.procs)
			}
			if b, err := os.ReadFile(orphans); err == nil {
				for _, f := range strings.Fields(string(b)) {
					pid, _ := strconv.Atoi(f)
					if ppid := statFields(t, pid)[1]; ppid != strconv.Itoa(caesuraPid) {
						t.Errorf("orphan %d has parent %s, want caesura (%d), its subreaper", pid, ppid, caesuraPid)
					}
				}
			}

			lostAt := time.Now()
			terminateSessions(t, appName)
			r := c.wait(t)
			if left := markedBut(mark, caesuraPid); len(left) > 0 {
				t.Errorf("%v outlived caesura", left)
			}
			if r.code != exitLostDefault {
				t.Errorf("exit %d, want %d; stderr: %s", r.code, exitLostDefault, r.stderr)
			}
			if !strings.Contains(r.stderr, "lock lost") || !strings.Contains(r.stderr, "SIGTERM to the command and every process it started") {
				t.Errorf("stderr %q does not report the loss and the SIGTERM to the tree", r.stderr)
			}
			if el := time.Since(lostAt); tc.kill && el < tc.grace {
				t.Errorf("caesura exited %v after the loss, before --grace %v", el, tc.grace)
			} else if !tc.kill && el >= tc.grace {
				t.Errorf("caesura exited %v after the loss, not before --grace %v", el, tc.grace)
			}
			if tc.left && !strings.Contains(r.stderr, "lock lost while processes the command left ran (the command exited with status 0)") {
				t.Errorf("stderr %q does not say the lock was lost after the command exited", r.stderr)
			}
			if got := strings.Contains(r.stderr, "SIGKILL"); got != tc.kill {
				t.Errorf("stderr reports SIGKILL: %v, want %v: %s", got, tc.kill, r.stderr)
			}
		})
	}
}

// SIGTERM and SIGHUP sent to caesura reach every process of the command's tree:
// a grandchild that traps it, background jobs, and an orphan.
func TestRunForwardsSignalsToTree(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP} {
		name := strings.TrimPrefix(unix.SignalName(sig), "SIG")
		t.Run(name, func(t *testing.T) {
			mark := treeMark(t)
			dir := t.TempDir()
			ready, log := filepath.Join(dir, "ready"), filepath.Join(dir, "log")
			script := shScript(t, `sleep 60 &
(sleep 60 &)
sh -c 'trap "echo grandchild got $3 >> \"$2\"; exit 0" $3; echo ready > "$1"; while :; do sleep 1; done' sh "$1" "$2" "$3" &
wait`)
			c := startBackground(t, caesuraCmd([]string{mark}, "run", "--backend", fileBackend(t), "-k", "fwd", "--", "sh", script, ready, log, name))
			waitFile(t, ready, "ready")
			if tree := markedBut(mark, c.cmd.Process.Pid); len(tree) < 4 {
				t.Fatalf("the command's tree is %v, want at least 4 processes", tree)
			}
			if err := c.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			r := c.wait(t)
			if r.code != 128+int(sig) {
				t.Errorf("exit %d, want %d (the command's: the shell died of %v); stderr: %s", r.code, 128+int(sig), sig, r.stderr)
			}
			if left := markedBut(mark, c.cmd.Process.Pid); len(left) > 0 {
				t.Errorf("%v outlived caesura", left)
			}
			b, _ := os.ReadFile(log)
			if !strings.Contains(string(b), "grandchild got "+name) {
				t.Errorf("the grandchild wrote %q, want it to have got %v", b, sig)
			}
		})
	}
}

// A command that exits leaving processes running keeps the locks held
// until they end, as flock(1)'s lock stays held by a process that inherited
// it; caesura then exits with the command's status.
func TestRunWaitsForLeftProcesses(t *testing.T) {
	mark := treeMark(t)
	backend := fileBackend(t)
	dir := t.TempDir()
	ready, log := filepath.Join(dir, "ready"), filepath.Join(dir, "log")
	script := shScript(t, `(sleep 2; echo finished > "$2") </dev/null >/dev/null 2>&1 &
echo ready > "$1"
exit 3`)
	c := startBackground(t, caesuraCmd([]string{mark}, "run", "--backend", backend, "-k", "left", "--", "sh", script, ready, log))
	waitFile(t, ready, "ready")
	c.waitStderr(t, "leaving")
	if r := runCaesura(t, nil, "run", "--backend", backend, "--wait", "0", "-k", "left", "--", "true"); r.code != 1 {
		t.Errorf("while the command's processes run, another run got exit %d, want 1 (held); stderr: %s", r.code, r.stderr)
	}
	r := c.wait(t)
	if b, _ := os.ReadFile(log); !strings.Contains(string(b), "finished") {
		t.Errorf("caesura exited before the process the command left; stderr: %s", r.stderr)
	}
	if r.code != 3 {
		t.Errorf("exit %d, want 3 (the command's); stderr: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "exited with status 3, leaving ") {
		t.Errorf("stderr %q does not name the processes left running", r.stderr)
	}
	if r := runCaesura(t, nil, "run", "--backend", backend, "--wait", "0", "-k", "left", "--", "true"); r.code != 0 {
		t.Errorf("after caesura exited, another run got exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
}

// In "caesura run ... | sibling", the sibling shares caesura's process
// group but is not of the command's tree: a signal to the tree leaves it
// alone.
func TestRunSignalsSparePipelineSibling(t *testing.T) {
	mark := treeMark(t)
	dir := t.TempDir()
	ready, pidFile, log := filepath.Join(dir, "ready"), filepath.Join(dir, "pid"), filepath.Join(dir, "log")
	script := shScript(t, `echo $PPID > "$2"; sleep 60 & echo ready > "$1"; wait`)
	sibling := shScript(t, `trap 'echo sibling got a signal >> "$1"' TERM INT; cat >/dev/null; echo sibling saw EOF >> "$1"`)
	sh := exec.Command("sh", "-c", `"$0" run --backend "$1" -k pipe -- sh "$2" "$3" "$4" | sh "$5" "$6"`,
		caesuraBin, fileBackend(t), script, ready, pidFile, sibling, log)
	sh.Env = append(cleanEnv(), mark)
	sh.WaitDelay = time.Second
	c := startBackground(t, sh)
	waitFile(t, ready, "ready")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	caesuraPid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(caesuraPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := c.wait(t)
	if r.code != 0 {
		t.Errorf("the pipeline exited %d, want 0 (the sibling's); stderr: %s", r.code, r.stderr)
	}
	b, _ = os.ReadFile(log)
	if string(b) != "sibling saw EOF\n" {
		t.Errorf("the sibling wrote %q, want only that it saw EOF", b)
	}
	if left := markedBut(mark, 0); len(left) > 0 {
		t.Errorf("%v outlived the pipeline", left)
	}
}

// The command stays in caesura's process group, so that on a terminal it
// stays in the foreground and can read it (a background group reading the
// terminal gets SIGTTIN).
func TestRunKeepsProcessGroup(t *testing.T) {
	r := runCaesura(t, nil, append([]string{"run", "--backend", fileBackend(t), "-k", "pgrp", "--"}, helper("pgrp")...)...)
	if r.code != 0 {
		t.Fatalf("exit %d; stderr: %s", r.code, r.stderr)
	}
	f := strings.Fields(r.stdout)
	if len(f) != 2 || f[0] != f[1] {
		t.Errorf("the command's and caesura's process groups: %q, want the same", r.stdout)
	}
}

func TestParseStat(t *testing.T) {
	p, ok := parseStat(42, []byte("42 (a) (b c) S 7 42 42 0 -1 4194560 100 0 0 0"))
	if !ok || p != (proc{pid: 42, ppid: 7, state: 'S', comm: "a) (b c"}) {
		t.Errorf("got %+v, %v", p, ok)
	}
	for _, bad := range []string{"", "42 a S 7", "42 (a)", "42 (a) S x"} {
		if p, ok := parseStat(42, []byte(bad)); ok {
			t.Errorf("parseStat(%q): got %+v, want no process", bad, p)
		}
	}
	// 10 > 11 > 12, 13 > 14; 20 and 21 are not below 10, and the cycle
	// 12 > 15 > 12 of a list read while pids were reused ends.
	procs := []proc{{pid: 11, ppid: 10}, {pid: 12, ppid: 11}, {pid: 13, ppid: 10}, {pid: 14, ppid: 13}, {pid: 20, ppid: 1}, {pid: 21, ppid: 20}, {pid: 15, ppid: 12}, {pid: 12, ppid: 15}}
	var got []int
	for _, d := range descendants(procs, 10) {
		got = append(got, d.pid)
	}
	if want := []int{11, 13, 12, 14, 15}; !slices.Equal(got, want) {
		t.Errorf("descendants of 10: got %v, want %v", got, want)
	}
}
