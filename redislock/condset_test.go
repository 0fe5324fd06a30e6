package redislock_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caesura-go/caesura/internal/testredis"
	"github.com/caesura-go/caesura/redislock"
)

// startValkey starts a valkey-server (8.1 or later: it has the conditional
// SET that the one-command release uses) of the test's own.
func startValkey(t *testing.T) *server {
	t.Helper()
	o := testredis.Options{Bin: "valkey-server", Why: "the Redis backend tests of the conditional release"}
	return &server{Server: testredis.Start(t, o), t: t}
}

// condSet reports whether c's server has SET … IFEQ.
func condSet(t *testing.T, c *redis.Client) bool {
	t.Helper()
	err := c.Do(context.Background(), "SET", "condset-probe", "v", "IFEQ", "w").Err()
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		return true
	case strings.Contains(err.Error(), "syntax error"):
		return false
	}
	t.Fatal(err)
	return false
}

// sent records the commands a client sends, each as its words in lower
// case joined by spaces (keys and values included).
type sent struct {
	mu   sync.Mutex
	cmds []string
}

func (s *sent) DialHook(next redis.DialHook) redis.DialHook { return next }
func (s *sent) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		var words []string
		for _, a := range cmd.Args() {
			w, ok := a.(string)
			if !ok {
				w = "?"
			}
			words = append(words, strings.ToLower(w))
		}
		s.mu.Lock()
		s.cmds = append(s.cmds, strings.Join(words, " "))
		s.mu.Unlock()
		return next(ctx, cmd)
	}
}
func (s *sent) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// take returns the commands sent since the last take, as "fcall" for a
// function call, "set-ifeq" for a conditional SET and "set-nx" for a SET
// … NX.
func (s *sent) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, c := range s.cmds {
		switch {
		case strings.HasPrefix(c, "fcall "):
			out = append(out, "fcall")
		case strings.HasPrefix(c, "set ") && strings.Contains(c, " ifeq "):
			out = append(out, "set-ifeq")
		case strings.HasPrefix(c, "set ") && strings.HasSuffix(c, " nx"):
			out = append(out, "set-nx")
		default:
			out = append(out, c)
		}
	}
	s.cmds = nil
	return out
}

// recording returns a Locker on s whose client records what it sends.
func recording(t *testing.T, s *server) (*redislock.Locker, *sent) {
	t.Helper()
	c := s.client(t)
	rec := &sent{}
	c.AddHook(rec)
	return newLocker(t, c, nil), rec
}

func TestConformanceValkey(t *testing.T) {
	s := startValkey(t)
	conformance(t, s.locker(t, &redislock.Options{TTL: time.Second}), s.client(t))
}

func TestOneKeyPathsValkey(t *testing.T) { oneKeyPaths(t, startValkey(t)) }

// TestCondRelease: on a server with SET … IFEQ, a lock taken without
// waiting is released by that one command, and the script runs only to
// hand a queued lock on, or for a holder that waited.
func TestCondRelease(t *testing.T) {
	s := startValkey(t)
	c := s.client(t)
	if !condSet(t, c) {
		t.Fatalf("%s has no SET … IFEQ", s.Addr())
	}
	l, rec := recording(t, s)
	ctx := ctxT(t, 10*time.Second)
	m := l.Mutex("cond")
	expect := func(what string, want ...string) {
		t.Helper()
		if got := rec.take(); !slices.Equal(got, want) {
			t.Fatalf("%s sent %q, want %q", what, got, want)
		}
	}

	var last uint64
	for i := range 5 {
		h := mustAcquire(t, ctx, m)
		if i > 0 && h.Token() != last+1 {
			t.Fatalf("token %d, want %d", h.Token(), last+1)
		}
		last = h.Token()
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			rec.take() // the first call loads the library
			continue
		}
		expect("an uncontended cycle", "fcall", "set-ifeq")
		if st := readState(ctx, c, m.Key()); st.owner != "" || st.fence != strconv.FormatUint(last+1, 10) {
			t.Fatalf("after the release: %+v, want free with the next token %d", st, last+1)
		}
	}

	// A holder that did not wait finds a queue: the script hands it on.
	h := mustAcquire(t, ctx, m)
	waiter, wrec := recording(t, s)
	got := make(chan *redislock.Held, 1)
	go func() {
		h2, err := waiter.Mutex("cond").Acquire(ctx)
		if err != nil {
			t.Error(err)
			got <- nil
			return
		}
		got <- h2.(*redislock.Held)
	}()
	for readState(ctx, c, m.Key()).queued == 0 {
		time.Sleep(time.Millisecond)
	}
	rec.take()
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	expect("a release with a waiter", "set-ifeq", "fcall")
	h2 := <-got
	if h2 == nil {
		t.FailNow()
	}
	if h2.Token() != h.Token()+1 {
		t.Fatalf("handed-on token %d, want %d", h2.Token(), h.Token()+1)
	}
	// The waiter's Held was waited for: its release is the script alone.
	wrec.take()
	if err := h2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if got := wrec.take(); !slices.Equal(got, []string{"fcall"}) {
		t.Fatalf("the release of a lock waited for sent %q, want one fcall", got)
	}
}

// TestCondSetUnsupported: on a server without SET … IFEQ (Redis before
// 8.4), a Locker tries it once, then releases by the script alone.
func TestCondSetUnsupported(t *testing.T) {
	s := startServer(t)
	c := s.client(t)
	if condSet(t, c) {
		t.Skipf("%s has SET … IFEQ", s.Addr())
	}
	l, rec := recording(t, s)
	ctx := ctxT(t, 10*time.Second)
	failed := cmdstat(t, c, "set", "failed_calls") // the probe's
	for range 10 {
		if err := mustAcquire(t, ctx, l.Mutex("nocond")).Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for _, cmd := range rec.take() {
		if cmd == "set-ifeq" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d conditional SETs in 10 cycles, want 1 (then none)", n)
	}
	if n := cmdstat(t, c, "set", "failed_calls") - failed; n != 1 {
		t.Fatalf("the server failed %d SETs, want the one conditional SET", n)
	}
}
