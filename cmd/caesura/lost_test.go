package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
)

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// lossyLock is a lock that is lost when its test says so: the memory and
// file backends cannot lose a lock, so the loss path is tested in process.
type lossyLock struct {
	key  string
	lost context.Context
}

func (l *lossyLock) Key() string { return "lossy:" + l.key }

func (l *lossyLock) Acquire(context.Context) (caesura.Held, error) { return &lossyHeld{l: l}, nil }

type lossyHeld struct{ l *lossyLock }

func (h *lossyHeld) Release(context.Context) error { return nil }
func (h *lossyHeld) Lost() context.Context         { return h.l.lost }
func (h *lossyHeld) Token() uint64                 { return 7 }

// A lock lost while the command runs: the command gets SIGTERM, and caesura
// exits with --lost-exit-code; a command that ignores SIGTERM gets SIGKILL
// after --grace. In the test's process caesura is no child subreaper, so
// this is the command-only path of systems other than Linux; the whole
// tree's is tested end to end, on PostgreSQL, in proctree_linux_test.go.
func TestRunLockLost(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     string
		grace    time.Duration
		wantFile string
		wantErr  string
	}{
		{"command stops on SIGTERM", "trap", 10 * time.Second, "got terminated", "the command exited with status 42"},
		{"command ignores SIGTERM", "ignore-term", 200 * time.Millisecond, "ready", "died of signal 9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lost, lose := context.WithCancelCause(context.Background())
			defer lose(nil)
			be := &backend{name: "lossy", shown: "lossy:", lock: func(name string) caesura.Lock { return &lossyLock{key: name, lost: lost} }}
			file := filepath.Join(t.TempDir(), "signals")
			var stdout, stderr lockedBuffer // the command's output is copied by exec's goroutines
			a := &app{stdout: &stdout, stderr: &stderr, getenv: os.Getenv}
			o := runOptions{keys: []string{"job"}, grace: tc.grace, conflictCode: 1, lostCode: 75}
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				done <- a.runLocked(runCtx(t), o, be, []string{"job"}, []string{envName("job")}, helper(tc.mode, file))
			}()
			waitFile(t, file, "ready")
			lose(errors.New("lease expired"))
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("runLocked did not return within 30s of the loss")
			}
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 75 {
				t.Fatalf("got %v, want an exit error with code 75", err)
			}
			msg := ee.err.Error()
			if !strings.Contains(msg, "lock lost") || !strings.Contains(msg, "lease expired") {
				t.Errorf("message %q does not say the lock was lost and why", msg)
			}
			if !strings.Contains(msg, tc.wantErr) {
				t.Errorf("message %q, want it to contain %q", msg, tc.wantErr)
			}
			if !strings.Contains(stderr.String(), "SIGTERM") {
				t.Errorf("stderr %q does not report the SIGTERM", stderr.String())
			}
			if tc.mode == "ignore-term" {
				if !strings.Contains(stderr.String(), "SIGKILL") {
					t.Errorf("stderr %q does not report the SIGKILL", stderr.String())
				}
				if el := time.Since(start); el < tc.grace {
					t.Errorf("returned after %v, before the grace period %v", el, tc.grace)
				}
			}
			b, _ := os.ReadFile(file)
			if !strings.Contains(string(b), tc.wantFile) {
				t.Errorf("the command wrote %q, want %q", b, tc.wantFile)
			}
		})
	}
}
