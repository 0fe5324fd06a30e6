package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// becomeSubreaper makes caesura's process a child subreaper
// (PR_SET_CHILD_SUBREAPER): a process that the command started and then
// left behind (a background job of a shell that has exited, a double-forked
// daemon, one that called setsid) is reparented to caesura rather than to
// init, so it stays in the tree that run signals and waits for.
func becomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	return nil
}

// newProcessTree returns the tree of the command p, whose exec.Cmd.Wait
// closes done. With subreaper (caesura's process is a child subreaper), the
// tree is every descendant of caesura; without, the command alone.
func newProcessTree(subreaper bool, p *os.Process, done <-chan struct{}) processTree {
	if !subreaper {
		return commandOnly{proc: p, done: done}
	}
	return newReaperTree(p, done)
}

// reaperTree is the command's process tree when caesura is a child
// subreaper. It is every descendant of caesura's process: caesura starts no
// process but the command, and whatever the command's tree leaves orphaned
// is reparented to caesura. caesura reaps those orphans (exec.Cmd.Wait reaps
// the command), as they end while the command runs and all of them once it
// has ended.
type reaperTree struct {
	self  int
	cmd   *os.Process
	done  <-chan struct{} // closed once exec.Cmd.Wait has reaped the command
	ended chan struct{}   // closed once no child of caesura is left

	// mu is held while the tree is listed and signalled and while caesura
	// reaps its children, so that no child of caesura is reaped, and its
	// pid reused, between the listing and the signal.
	mu sync.Mutex
}

var _ processTree = (*reaperTree)(nil)

func newReaperTree(p *os.Process, done <-chan struct{}) *reaperTree {
	t := &reaperTree{self: os.Getpid(), cmd: p, done: done, ended: make(chan struct{})}
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	go func() {
		defer close(t.ended)
		for {
			select {
			case <-chld:
				t.reapOrphans()
			case <-done:
				signal.Stop(chld)
				t.reapAll()
				return
			}
		}
	}()
	return t
}

// reapOrphans reaps the children of caesura, other than the command, that
// have ended: while the command runs, its orphans must not pile up as
// zombies.
func (t *reaperTree) reapOrphans() {
	t.mu.Lock()
	defer t.mu.Unlock()
	procs, err := listProcs()
	if err != nil {
		return // reapAll reaps them when the command has ended
	}
	for _, p := range procs {
		if p.ppid == t.self && p.pid != t.cmd.Pid && p.state == 'Z' {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(p.pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// reapAll reaps every child of caesura until none is left. The command has
// been reaped: every child is an orphan of its tree.
func (t *reaperTree) reapAll() {
	for {
		// Wait, without reaping, for a child to end, so that the reaping
		// below holds mu only briefly.
		var si unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &si, unix.WEXITED|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil { // ECHILD: no child left
			return
		}
		t.mu.Lock()
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		t.mu.Unlock()
	}
}

func (t *reaperTree) what() string { return "the command and every process it started" }

func (t *reaperTree) gone() <-chan struct{} { return t.ended }

func (t *reaperTree) terminate() error { return t.signal(syscall.SIGTERM, syscall.SIGCONT) }

func (t *reaperTree) signal(sigs ...syscall.Signal) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	procs, err := listProcs()
	if err != nil {
		for _, s := range sigs {
			_ = t.cmd.Signal(s)
		}
		return fmt.Errorf("signalled the command only: %w", err)
	}
	var errs []error
	for _, p := range descendants(procs, t.self) {
		if p.ended() {
			continue
		}
		for _, s := range sigs {
			if err := t.send(p.pid, s); err != nil {
				errs = append(errs, fmt.Errorf("%v to pid %d (%s): %w", s, p.pid, p.comm, err))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// send sends sig to pid, through exec's handle (a pidfd) while the command
// has not been reaped, so that a reused pid is never signalled for it.
func (t *reaperTree) send(pid int, sig syscall.Signal) error {
	if pid == t.cmd.Pid {
		select {
		case <-t.done:
		default:
			if err := t.cmd.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
				return err
			}
			return nil
		}
	}
	if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

func (t *reaperTree) running() []string {
	procs, err := listProcs()
	if err != nil {
		return nil
	}
	var out []string
	for _, p := range descendants(procs, t.self) {
		if !p.ended() {
			out = append(out, fmt.Sprintf("pid %d %s", p.pid, p.comm))
		}
	}
	return out
}

// proc is one process, as /proc/<pid>/stat shows it.
type proc struct {
	pid, ppid int
	state     byte // R, S, D, T, t, Z, X, ...
	comm      string
}

// ended says that the process has ended: a zombie, or dead.
func (p proc) ended() bool { return p.state == 'Z' || p.state == 'X' }

// listProcs reads the /proc/<pid>/stat of every process. A process that
// ends as the list is read may be in it or not.
func listProcs() ([]proc, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	procs := make([]proc, 0, len(names))
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile("/proc/" + n + "/stat")
		if err != nil {
			continue // ended meanwhile
		}
		if p, ok := parseStat(pid, b); ok {
			procs = append(procs, p)
		}
	}
	if len(procs) == 0 {
		return nil, errors.New("listing processes: /proc shows none (not mounted?)")
	}
	return procs, nil
}

// parseStat reads the command name, state and parent of /proc/<pid>/stat:
// "pid (comm) state ppid ...", where comm may itself hold spaces and
// parentheses.
func parseStat(pid int, b []byte) (proc, bool) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return proc{}, false
	}
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return proc{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return proc{}, false
	}
	return proc{pid: pid, ppid: ppid, state: f[0][0], comm: string(b[open+1 : end])}, true
}

// descendants returns the processes below root, parents before their
// children.
func descendants(procs []proc, root int) []proc {
	children := make(map[int][]proc)
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p)
	}
	seen := map[int]bool{root: true} // a list read while pids are reused may hold a cycle
	var out []proc
	for queue := []int{root}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			if !seen[c.pid] {
				seen[c.pid] = true
				out = append(out, c)
				queue = append(queue, c.pid)
			}
		}
	}
	return out
}
