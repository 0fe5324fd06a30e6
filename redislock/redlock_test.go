package redislock_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/locktest"
	"github.com/caesura-go/caesura/redislock"
)

func redlock(t *testing.T, n int, o *redislock.Options) (*redislock.Locker, []*server) {
	t.Helper()
	var servers []*server
	var clients []redislock.Client
	for range n {
		s := startServer(t)
		servers = append(servers, s)
		clients = append(clients, s.client(t))
	}
	l, err := redislock.NewRedlock(clients, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, servers
}

func TestRedlockConformance(t *testing.T) {
	l, servers := redlock(t, 3, &redislock.Options{TTL: time.Second})
	locktest.Run(t, locktest.Harness{
		Lock: func(name string) caesura.Lock { return l.Mutex(name) },
		Lose: func(t *testing.T, name string) {
			for _, s := range servers {
				s.client(t).Del(context.Background(), l.Mutex(name).Key())
			}
		},
		HandOff: 5 * time.Second,
	})
}

func TestRedlockFiveServers(t *testing.T) {
	l, servers := redlock(t, 5, &redislock.Options{TTL: time.Second})
	ctx := ctxT(t, 20*time.Second)
	m := l.Mutex("quorum")

	h, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := h.(caesura.Fenced); ok {
		t.Error("a Redlock Held must not claim a fencing token")
	}
	if _, err := m.TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("TryAcquire of a taken Redlock lock: got %v, want ErrNotAcquired", err)
	}

	// Two of five masters die: the quorum of three still holds and renews
	// the lock, and releases it.
	servers[0].Kill()
	servers[1].Kill()
	time.Sleep(700 * time.Millisecond) // two renewals
	if err := h.(caesura.Lossy).Lost().Err(); err != nil {
		t.Fatalf("lock lost with 3 of 5 masters up: %v", context.Cause(h.(caesura.Lossy).Lost()))
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release with 3 of 5 masters up: %v", err)
	}
	h, err = m.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire with 3 of 5 masters up: %v", err)
	}

	// A third one dies: the held lock is lost before its TTL ends, and a
	// new acquisition fails cleanly.
	lost := h.(caesura.Lossy).Lost()
	killed := time.Now()
	servers[2].Kill()
	select {
	case <-lost.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("lock not reported lost with 2 of 5 masters up")
	}
	if d := time.Since(killed); d >= time.Second {
		t.Errorf("loss reported %v after the third master died, want within the TTL", d)
	}
	if c := context.Cause(lost); !errors.Is(c, caesura.ErrLockLost) {
		t.Errorf("loss cause: got %v, want ErrLockLost", c)
	}
	h.Release(ctx)

	other := l.Mutex("quorum-2")
	if _, err := other.Acquire(ctx); !errors.Is(err, redislock.ErrUnavailable) || errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("Acquire with 2 of 5 masters up: got %v, want ErrUnavailable", err)
	}
	// Nothing is left held on the two survivors.
	for _, s := range servers[3:] {
		for _, key := range []string{m.Key(), other.Key()} {
			owner := readState(ctx, s.client(t), key).owner
			if owner != "" {
				t.Errorf("server %s still has %q owned by %q", s.Addr(), key, owner)
			}
		}
	}
}

func TestRedlockBatch(t *testing.T) {
	l, _ := redlock(t, 3, nil)
	ctx := ctxT(t, 10*time.Second)
	locks := []caesura.Lock{l.Mutex("a"), l.Mutex("b"), l.Mutex("c")}
	hs, err := l.AcquireBatch(ctx, locks)
	if err != nil {
		t.Fatal(err)
	}
	for i, lk := range locks {
		if _, err := lk.(caesura.TryLocker).TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
			t.Errorf("key %d not held after a Redlock batch: %v", i, err)
		}
	}
	if err := l.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
	for i, lk := range locks {
		h, err := lk.(caesura.TryLocker).TryAcquire(ctx)
		if err != nil {
			t.Fatalf("key %d still held after ReleaseBatch: %v", i, err)
		}
		h.Release(ctx)
	}
}

// TestRedlockReleaseKeepsTokens: a Redlock release, which cannot send the
// next fencing token (each master counts on its own), frees the key on
// every master keeping that master's next token and the key's expiry.
func TestRedlockReleaseKeepsTokens(t *testing.T) {
	l, servers := redlock(t, 3, nil)
	ctx := ctxT(t, 10*time.Second)
	m := l.Mutex("tokens")
	h, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fences := make([]uint64, len(servers))
	for i, s := range servers {
		st := readState(ctx, s.client(t), m.Key())
		f, err := strconv.ParseUint(st.fence, 10, 64)
		if st.owner == "" || err != nil {
			t.Fatalf("server %d: state %+v after the acquisition", i, st)
		}
		fences[i] = f
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for i, s := range servers {
		c := s.client(t)
		st := readState(ctx, c, m.Key())
		if st.owner != "" || st.fence != strconv.FormatUint(fences[i]+1, 10) {
			t.Errorf("server %d: state %+v after the release, want free with next token %d", i, st, fences[i]+1)
		}
		if ttl := c.PTTL(ctx, m.Key()).Val(); ttl <= 0 {
			t.Errorf("server %d: the free key has no expiry (%v)", i, ttl)
		}
	}
}
