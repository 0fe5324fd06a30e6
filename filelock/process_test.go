//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package filelock

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
	"syscall"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
)

// The tests in this file re-execute the test binary as child processes;
// TestMain sends a child to childMain. A child gets its arguments from the
// environment and reports on stdout.
const (
	childEnv     = "CAESURA_FILELOCK_CHILD" // the child's mode
	childDirEnv  = "CAESURA_FILELOCK_DIR"
	childNameEnv = "CAESURA_FILELOCK_NAME"
	childArgEnv  = "CAESURA_FILELOCK_ARG" // mode-specific
)

func childMain(mode string) int {
	l, err := New(Options{Dir: os.Getenv(childDirEnv)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lk := l.Mutex(os.Getenv(childNameEnv))
	arg := os.Getenv(childArgEnv)
	ctx := context.Background()
	switch mode {
	case "hold": // take the lock, say so, wait to be killed
		h, err := lk.Acquire(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("held %d\n", h.(caesura.Fenced).Token())
		time.Sleep(time.Hour)
		return 1

	case "count": // arg "n path": n read-pause-write increments of the counter in path
		var n int
		var path string
		fmt.Sscan(arg, &n, &path)
		fmt.Println("ready")
		for range n {
			h, err := lk.Acquire(ctx)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			if err := increment(path); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			if err := h.Release(ctx); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		return 0

	case "handoff": // arg "last hold": take turns until the token passes last
		var last uint64
		var hold time.Duration
		fmt.Sscan(arg, &last, &hold)
		fmt.Println("ready")
		w := bufio.NewWriter(os.Stdout)
		defer w.Flush()
		for {
			t0 := time.Now().UnixNano()
			h, err := lk.Acquire(ctx)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			t1 := time.Now().UnixNano()
			tok := h.(caesura.Fenced).Token()
			if tok > last {
				h.Release(ctx)
				return 0
			}
			for time.Now().UnixNano()-t1 < int64(hold) {
			}
			t2 := time.Now().UnixNano()
			if err := h.Release(ctx); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			fmt.Fprintf(w, "%d %d %d %d\n", tok, t0, t1, t2)
		}
	}
	fmt.Fprintln(os.Stderr, "unknown mode", mode)
	return 2
}

// increment reads the decimal counter in path, pauses, and writes it back
// plus one: a lost update unless the caller holds a lock.
func increment(path string) error {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	n, _ := strconv.Atoi(string(b))
	time.Sleep(50 * time.Microsecond)
	return os.WriteFile(path, []byte(strconv.Itoa(n+1)), 0o644)
}

type child struct {
	cmd *exec.Cmd
	out *bufio.Reader
}

// startChild starts the test binary in mode and waits for its first line.
func startChild(t *testing.T, mode, dir, name, arg string) (*child, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childDirEnv+"="+dir, childNameEnv+"="+name, childArgEnv+"="+arg)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	c := &child{cmd: cmd, out: bufio.NewReader(stdout)}
	line, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("child %s: %v", mode, err)
	}
	return c, strings.TrimSpace(line)
}

// TestCrash checks that the kernel frees the lock of a process killed with
// SIGKILL, that the fencing counter goes on from the dead holder's token, and
// that waits abandoned while another process holds the lock recover.
func TestCrash(t *testing.T) {
	dir := t.TempDir()
	holder, line := startChild(t, "hold", dir, "crash", "")
	var childToken uint64
	if _, err := fmt.Sscanf(line, "held %d", &childToken); err != nil {
		t.Fatalf("child said %q, want \"held <token>\"", line)
	}
	l := newLocker(t, dir)
	lk := l.Mutex("crash")
	tryTaken(t, lk)

	// A wait abandoned while the child holds the lock leaves a helper in
	// flock(2) that owns this Locker's gate for the key.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, err := lk.Acquire(ctx)
	cancel()
	if !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire while the child holds the lock = %v, want ErrNotAcquired and DeadlineExceeded", err)
	}

	got := make(chan caesura.Held, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		h, err := lk.Acquire(ctx)
		if err != nil {
			t.Errorf("Acquire after the holder was killed: %v", err)
		}
		got <- h
	}()
	time.Sleep(20 * time.Millisecond)
	select {
	case <-got:
		t.Fatal("Acquire returned while the child held the lock")
	default:
	}
	killed := time.Now()
	if err := holder.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h := <-got
	if h == nil {
		return
	}
	t.Logf("acquired %v after SIGKILL to the holder", time.Since(killed))
	if tok := h.(caesura.Fenced).Token(); tok <= childToken {
		t.Errorf("token after the crash = %d, want more than the dead holder's %d", tok, childToken)
	}
	release(t, h)
}

// TestLostUpdateProcesses has several processes increment a counter kept in
// a file, with a pause between read and write, under the lock. Any lapse in
// mutual exclusion loses an update.
func TestLostUpdateProcesses(t *testing.T) {
	dir := t.TempDir()
	counter := filepath.Join(t.TempDir(), "counter")
	const procs, n = 4, 100
	l := newLocker(t, dir)
	lk := l.Mutex("counter")
	h := acquire(t, lk) // start everyone together
	var cs []*child
	for range procs {
		c, _ := startChild(t, "count", dir, "counter", fmt.Sprintf("%d %s", n, counter))
		cs = append(cs, c)
	}
	// Contend with goroutines of this process too.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for range n {
				h := acquireInGoroutine(t, lk)
				if h == nil {
					return
				}
				if err := increment(counter); err != nil {
					t.Error(err)
				}
				releaseInGoroutine(t, h)
			}
		})
	}
	release(t, h)
	wg.Wait()
	for i, c := range cs {
		if err := c.cmd.Wait(); err != nil {
			t.Errorf("child %d: %v", i, err)
		}
	}
	b, err := os.ReadFile(counter)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), strconv.Itoa((procs+2)*n); got != want {
		t.Errorf("counter = %s, want %s", got, want)
	}
}

// TestHandoff measures the hand-off between processes contending for one
// key (closed loop, 100µs hold) and between goroutines of one process. It
// only reports: hand-off order is the kernel's across processes. Set
// CAESURA_BENCH=1 for a longer run.
func TestHandoff(t *testing.T) {
	total, procs := 400, 4
	if os.Getenv("CAESURA_BENCH") == "1" {
		total = 4000
	}
	const hold = 100 * time.Microsecond
	t.Run("processes", func(t *testing.T) {
		dir := t.TempDir()
		l := newLocker(t, dir)
		h := acquire(t, l.Mutex("handoff"))
		base := h.(caesura.Fenced).Token()
		var cs []*child
		for range procs {
			c, _ := startChild(t, "handoff", dir, "handoff", fmt.Sprintf("%d %d", base+uint64(total), hold))
			cs = append(cs, c)
		}
		time.Sleep(100 * time.Millisecond) // let them block in flock
		release(t, h)
		var recs []handoffRecord
		for i, c := range cs {
			out, _ := io.ReadAll(c.out)
			if err := c.cmd.Wait(); err != nil {
				t.Fatalf("child %d: %v", i, err)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				var r handoffRecord
				if _, err := fmt.Sscan(line, &r.seq, &r.t0, &r.t1, &r.t2); err != nil {
					t.Fatalf("child %d line %q: %v", i, line, err)
				}
				r.who = i
				recs = append(recs, r)
			}
		}
		reportHandoff(t, recs, procs, total)
	})
	t.Run("goroutines", func(t *testing.T) {
		l := newLocker(t, t.TempDir())
		lk := l.Mutex("handoff")
		h := acquire(t, lk)
		base := h.(caesura.Fenced).Token()
		var mu sync.Mutex
		var recs []handoffRecord
		var wg sync.WaitGroup
		for i := range procs {
			wg.Go(func() {
				for {
					t0 := time.Now().UnixNano()
					h := acquireInGoroutine(t, lk)
					if h == nil {
						return
					}
					t1 := time.Now().UnixNano()
					tok := h.(caesura.Fenced).Token()
					if tok > base+uint64(total) {
						releaseInGoroutine(t, h)
						return
					}
					for time.Now().UnixNano()-t1 < int64(hold) {
					}
					t2 := time.Now().UnixNano()
					releaseInGoroutine(t, h)
					mu.Lock()
					recs = append(recs, handoffRecord{seq: tok, who: i, t0: t0, t1: t1, t2: t2})
					mu.Unlock()
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		release(t, h)
		wg.Wait()
		reportHandoff(t, recs, procs, total)
	})
}

type handoffRecord struct {
	seq        uint64
	who        int
	t0, t1, t2 int64 // lock call, lock return, unlock call (ns, wall clock)
}

func reportHandoff(t *testing.T, recs []handoffRecord, contenders, total int) {
	t.Helper()
	slices.SortFunc(recs, func(a, b handoffRecord) int { return int(a.seq) - int(b.seq) })
	if len(recs) != total {
		t.Fatalf("%d acquisitions recorded, want %d", len(recs), total)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].seq != recs[i-1].seq+1 {
			t.Fatalf("tokens %d then %d: an acquisition is missing or repeated", recs[i-1].seq, recs[i].seq)
		}
		if recs[i].t1 < recs[i-1].t2 {
			t.Fatalf("acquisition %d began before %d ended: overlap", recs[i].seq, recs[i-1].seq)
		}
	}
	var handoff, other, wait []int64
	self := 0
	per := make([]int, contenders)
	for i, r := range recs {
		if per[r.who] > 0 { // the first wait includes the start
			wait = append(wait, r.t1-r.t0)
		}
		per[r.who]++
		if i == 0 {
			continue
		}
		d := r.t1 - recs[i-1].t2
		handoff = append(handoff, d)
		if r.who == recs[i-1].who {
			self++
		} else {
			other = append(other, d)
		}
	}
	slices.Sort(per)
	elapsed := time.Duration(recs[len(recs)-1].t2 - recs[0].t1)
	t.Logf("%d contenders, %d acquisitions in %v (%.0f/s): hand-off p50 %v p99 %v; to another contender p50 %v p99 %v (n=%d); self-reacquire %.2f; caller wait p50 %v p99 %v max %v; acquisitions per contender %d-%d",
		contenders, len(recs), elapsed.Round(time.Millisecond), float64(len(recs))/elapsed.Seconds(),
		pct(handoff, 50), pct(handoff, 99), pct(other, 50), pct(other, 99), len(other),
		float64(self)/float64(len(handoff)), pct(wait, 50), pct(wait, 99), pct(wait, 100), per[0], per[len(per)-1])
}

func pct(xs []int64, p int) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := (len(s) - 1) * p / 100
	return time.Duration(s[i]).Round(100 * time.Nanosecond)
}
