package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/caesura-go/caesura/filelock"
)

// procEnv makes the test binary a worker process of
// BenchmarkHandOffProcesses: "mech w lockdir shmfile hold-ns".
const procEnv = "CAESURA_BENCH_HANDOFF_PROC"

// procMech is a file-lock mechanism of a worker process: make returns the
// cycler on key "k" in dir, with timestamps from mono.
type procMech struct {
	name string
	make func(dir string) (cycler, error)
}

var procMechs = []procMech{
	{"caesura.Run", func(dir string) (cycler, error) {
		l, err := filelock.New(filelock.Options{Dir: dir})
		if err != nil {
			return nil, err
		}
		return runCycler(l.Mutex("k"), mono), nil
	}},
	{"filelock", func(dir string) (cycler, error) {
		l, err := filelock.New(filelock.Options{Dir: dir})
		if err != nil {
			return nil, err
		}
		return lockCycler(l.Mutex("k"), mono), nil
	}},
	{"gofrs-flock", func(dir string) (cycler, error) {
		lock, unlock := gofrsFlock(filepath.Join(dir, "k"))
		return funcCycler(lock, unlock, mono), nil
	}},
	{"flock-fd", func(dir string) (cycler, error) {
		// The descriptor stays open until the process exits.
		f, err := os.OpenFile(filepath.Join(dir, "k"), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		lock, unlock := flockOn(f)
		return funcCycler(lock, unlock, mono), nil
	}},
}

// mono is CLOCK_MONOTONIC: one clock for every process of the host, so
// that the timestamps of different workers compare.
func mono() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// shared is what the worker processes share through a MAP_SHARED mapping
// of one file: the acquisitions left to make, the number of holders in the
// critical section, and the overlaps seen (a holder that found another one
// inside).
type shared struct {
	mem                       []byte
	left, inSection, overlaps *atomic.Int64
}

func mapShared(path string) (*shared, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the mapping outlives the descriptor
	const size = 4096
	if err := f.Truncate(size); err != nil {
		return nil, err
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	at := func(off int) *atomic.Int64 { return (*atomic.Int64)(unsafe.Pointer(&mem[off])) } // page-aligned
	return &shared{mem: mem, left: at(0), inSection: at(8), overlaps: at(16)}, nil
}

func (s *shared) unmap() error { return syscall.Munmap(s.mem) }

// critical is the hold: a busy-wait of d with the in-section count
// checked.
func (s *shared) critical(d time.Duration) {
	if s.inSection.Add(1) != 1 {
		s.overlaps.Add(1)
	}
	spinFor(d)
	s.inSection.Add(-1)
}

// procWorker is the body of a worker process. It makes its cycler, takes
// the lock once (open files, warm code), says "ready", waits for "go" on
// stdin, then runs the closed loop while shared acquisitions are left and
// prints one line per acquisition: "w lock got unlock unlocked" (ns).
func procWorker(spec string) int {
	f := strings.Fields(spec)
	if len(f) != 5 {
		fmt.Fprintf(os.Stderr, "%s=%q: want 5 fields\n", procEnv, spec)
		return 2
	}
	w, _ := strconv.Atoi(f[1])
	holdNs, _ := strconv.ParseInt(f[4], 10, 64)
	// An orphan (its parent killed) must not linger.
	time.AfterFunc(2*time.Minute, func() { fmt.Fprintln(os.Stderr, "worker: timed out"); os.Exit(3) })
	i := slices.IndexFunc(procMechs, func(m procMech) bool { return m.name == f[0] })
	if i < 0 {
		fmt.Fprintf(os.Stderr, "worker: no mechanism %q\n", f[0])
		return 2
	}
	c, err := procMechs[i].make(f[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	s, err := mapShared(f[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	defer s.unmap()
	ctx := context.Background()
	c(ctx, &acq{}, func() {})
	fmt.Println("ready")
	if line, _ := bufio.NewReader(os.Stdin).ReadString('\n'); line != "go\n" {
		return 2 // the parent gave up
	}
	var rs []acq
	for s.left.Add(-1) >= 0 {
		r := acq{w: w}
		c(ctx, &r, func() { s.critical(time.Duration(holdNs)) })
		rs = append(rs, r)
	}
	out := bufio.NewWriter(os.Stdout)
	for _, r := range rs {
		fmt.Fprintf(out, "%d %d %d %d %d\n", r.w, r.lock, r.got, r.unlock, r.unlocked)
	}
	if err := out.Flush(); err != nil {
		return 1
	}
	return 0
}

// runProcesses starts workers worker processes of mech on one key in a
// fresh directory, lets them make target acquisitions in all with the
// given hold, and returns the acquisitions. It fails tb if a worker fails,
// an acquisition is missing, or two holders were ever inside at once.
// Every process has ended when it returns.
func runProcesses(tb testing.TB, mech string, workers, target int, hold time.Duration) []acq {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "locks"), 0o700); err != nil {
		tb.Fatal(err)
	}
	s, err := mapShared(filepath.Join(dir, "shared"))
	if err != nil {
		tb.Fatal(err)
	}
	defer s.unmap()
	type proc struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Scanner
	}
	var procs []proc
	defer func() { // on failure: no process outlives the run
		for _, p := range procs {
			p.stdin.Close()
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	}()
	for w := range workers {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %s %s %d", procEnv, mech, w,
			filepath.Join(dir, "locks"), filepath.Join(dir, "shared"), hold.Nanoseconds()))
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			tb.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			tb.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		p := proc{cmd, stdin, bufio.NewScanner(stdout)}
		procs = append(procs, p)
		if !p.out.Scan() || p.out.Text() != "ready" {
			tb.Fatalf("worker %d did not start: %q %v", w, p.out.Text(), p.out.Err())
		}
	}
	s.left.Store(int64(target))
	for _, p := range procs {
		io.WriteString(p.stdin, "go\n")
		p.stdin.Close()
	}
	// Read every worker at once: one that made many acquisitions could
	// fill its pipe while another is read.
	out := make([][]acq, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w, p := range procs {
		wg.Go(func() {
			for p.out.Scan() {
				var r acq
				if _, err := fmt.Sscan(p.out.Text(), &r.w, &r.lock, &r.got, &r.unlock, &r.unlocked); err != nil {
					errs[w] = fmt.Errorf("worker %d: bad line %q: %v", w, p.out.Text(), err)
					return
				}
				out[w] = append(out[w], r)
			}
			if err := p.cmd.Wait(); err != nil {
				errs[w] = fmt.Errorf("worker %d: %v", w, err)
			}
		})
	}
	wg.Wait()
	procs = nil // all waited for
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	if n := s.overlaps.Load(); n > 0 {
		tb.Fatalf("%s: %d acquisitions found another holder inside the critical section", mech, n)
	}
	rs := slices.Concat(out...)
	if len(rs) != target {
		tb.Fatalf("%s: got %d acquisitions, want %d", mech, len(rs), target)
	}
	return rs
}

// BenchmarkHandOffProcesses is BenchmarkHandOff's file class with real
// processes: 8 worker processes (the test binary run again), each with its
// own Locker (or Flock, or descriptor), one key, a 100µs busy-wait hold,
// closed loop, 2000 acquisitions in all per run; timestamps are
// CLOCK_MONOTONIC, which all processes share. It reports the measures of
// BenchmarkHandOff plus each process's share of the acquisitions against a
// fair 1/8 (min-share/fair, max-share/fair). Run with -benchtime 1x; ns/op
// is one whole run, the start of the processes included.
func BenchmarkHandOffProcesses(b *testing.B) {
	for _, m := range procMechs {
		b.Run("mech="+m.name, func(b *testing.B) {
			for b.Loop() {
				rs := runProcesses(b, m.name, handoffWorkers, handoffTarget, handoffHold)
				st := analyzeHandoff(rs, handoffWorkers)
				fair := float64(len(rs)) / handoffWorkers
				st.report(b)
				b.ReportMetric(float64(st.minShare)/fair, "min-share/fair")
				b.ReportMetric(float64(st.maxShare)/fair, "max-share/fair")
				b.Logf("per process %d-%d", st.minShare, st.maxShare)
			}
		})
	}
}

// TestHandOffProcesses runs each mechanism of BenchmarkHandOffProcesses
// briefly with 3 processes and no hold: every acquisition recorded, none
// before the previous holder's unlock.
func TestHandOffProcesses(t *testing.T) {
	for _, m := range procMechs {
		t.Run(m.name, func(t *testing.T) {
			rs := runProcesses(t, m.name, 3, 150, 0)
			slices.SortFunc(rs, func(a, b acq) int { return int(a.got - b.got) })
			for i := 1; i < len(rs); i++ {
				if rs[i].got < rs[i-1].unlock {
					t.Fatalf("acquisition %d at %v before the previous unlock at %v", i, rs[i].got, rs[i-1].unlock)
				}
			}
		})
	}
}
