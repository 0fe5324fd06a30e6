package etcdlock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
)

const crashEnv = "ETCDLOCK_CRASH_CHILD_ENDPOINT"

// TestCrashedHolder: a process that dies holding a lock (a subprocess of the
// test binary, killed by os.Exit without releasing) keeps it until its lease
// expires; then the lock passes to the next holder, with a higher token.
func TestCrashedHolder(t *testing.T) {
	if ep := os.Getenv(crashEnv); ep != "" {
		crashChild(t, ep)
		return
	}
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c)
	m := l.Mutex("a")

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashedHolder$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+shared.member.client, "ETCDLOCK_CRASH_PREFIX="+l.prefix)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var childToken uint64
	sc := bufio.NewScanner(out)
	for sc.Scan() { // to EOF: the pipe must be drained before Wait
		if tok, ok := strings.CutPrefix(sc.Text(), "held "); ok {
			childToken, _ = strconv.ParseUint(tok, 10, 64)
		}
	}
	werr := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(werr, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("child: got %v, want exit status 3 while holding (token %d)", werr, childToken)
	}
	if childToken == 0 {
		t.Fatal("child never reported holding the lock")
	}
	crashed := time.Now()
	if _, err := m.(caesura.TryLocker).TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("TryAcquire right after the holder crashed: got %v, want ErrNotAcquired (its lease lives on)", err)
	}
	h := mustAcquire(t, ctx, m)
	waited := time.Since(crashed)
	t.Logf("lock passed %v after the holder crashed (TTL 2s)", waited)
	if waited > 8*time.Second {
		t.Errorf("lock passed %v after the crash, want about the 2s TTL", waited)
	}
	if h.Token() <= childToken {
		t.Errorf("token %d after the crashed holder's %d, want higher", h.Token(), childToken)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// crashChild holds the lock and dies without releasing it.
func crashChild(t *testing.T, endpoint string) {
	c := newClient(t, endpoint)
	l, err := New(c, WithPrefix(os.Getenv("ETCDLOCK_CRASH_PREFIX")), WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := l.Mutex("a").Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("held %d\n", h.(caesura.Fenced).Token())
	os.Exit(3) // crash: no release, no revoke
}
