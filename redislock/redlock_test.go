package redislock_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
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

// TestRedlockPlainCycle: a Redlock lock whose key is missing on a master
// is taken there by one plain SET … NX (value: the token and a fence of 0,
// as Redlock counts no fencing tokens), and its release deletes the key, so
// the next acquisition is a plain SET again; so does a batch release of
// such locks.
func TestRedlockPlainCycle(t *testing.T) {
	var servers []*server
	var clients []redislock.Client
	var recs []*sent
	for range 3 {
		s := startServer(t)
		c := s.client(t)
		rec := &sent{}
		c.AddHook(rec)
		servers, clients, recs = append(servers, s), append(clients, c), append(recs, rec)
	}
	l, err := redislock.NewRedlock(clients, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ctx := ctxT(t, 10*time.Second)
	expect := func(what string, want ...string) {
		t.Helper()
		for i, rec := range recs {
			if got := rec.take(); !slices.Equal(got, want) {
				t.Errorf("server %d: %s sent %q, want %q", i, what, got, want)
			}
		}
	}
	cycle := func(name string) {
		t.Helper()
		h, err := l.Mutex(name).Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cycle("warm") // loads the library on every master
	recs[0].take()
	recs[1].take()
	recs[2].take()

	m := l.Mutex("plain")
	for round := range 2 {
		h, err := m.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		expect("an acquisition of a missing key", "set-nx")
		for i, s := range servers {
			c := s.client(t)
			if st := readState(ctx, c, m.Key()); st.owner == "" || st.fence != "0" {
				t.Errorf("round %d, server %d: state %+v while held, want an owner and fence 0", round, i, st)
			}
			if ttl := c.PTTL(ctx, m.Key()).Val(); ttl <= 0 {
				t.Errorf("round %d, server %d: the held key has no expiry (%v)", round, i, ttl)
			}
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		expect("the release", "fcall")
		for i, s := range servers {
			if n := s.client(t).Exists(ctx, m.Key()).Val(); n != 0 {
				t.Errorf("round %d, server %d: the key is still there after the release", round, i)
			}
		}
	}

	// Locks taken one by one and given back in one batch, as caesura.Run
	// gives back a scope's locks, are deleted too: one release per lock,
	// since a batch releases each acquisition's token apart.
	var hs []caesura.Held
	for _, name := range []string{"one", "two"} {
		h, err := l.Mutex(name).Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	if err := l.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
	expect("two acquisitions and a batch release", "set-nx", "set-nx", "fcall", "fcall")
	for i, s := range servers {
		if n := s.client(t).Exists(ctx, l.Mutex("one").Key(), l.Mutex("two").Key()).Val(); n != 0 {
			t.Errorf("server %d: %d of the batch's keys are still there after the release", i, n)
		}
	}
}

// TestRedlockWithdrawDeletes: an attempt that falls short of a quorum gives
// back what it got, and a key it took with a plain SET is deleted, not left
// with a counter that would send the next acquisition there through the
// script.
func TestRedlockWithdrawDeletes(t *testing.T) {
	l, servers := redlock(t, 3, nil)
	ctx := ctxT(t, 10*time.Second)
	m := l.Mutex("short")
	other := strings.Repeat("f", 32) + "5" // another holder, on servers 1 and 2
	for _, s := range servers[1:] {
		if err := s.client(t).Set(ctx, m.Key(), other, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("TryAcquire with a majority taken: got %v, want ErrNotAcquired", err)
	}
	if n := servers[0].client(t).Exists(ctx, m.Key()).Val(); n != 0 {
		t.Errorf("server 0 keeps the key after the withdrawal: %q", servers[0].client(t).Get(ctx, m.Key()).Val())
	}
	for i, s := range servers[1:] {
		if v := s.client(t).Get(ctx, m.Key()).Val(); v != other {
			t.Errorf("server %d: the other holder's value became %q", i+1, v)
		}
	}
}

// TestRedlockReleaseKeepsTokens: where a master keeps a fencing counter at
// the key (a Locker of New used the lock there), a Redlock acquisition
// falls back to the script after its SET … NX, and the release, which
// cannot send the next fencing token (each master counts on its own),
// frees the key keeping that master's next token and the key's expiry.
func TestRedlockReleaseKeepsTokens(t *testing.T) {
	l, servers := redlock(t, 3, nil)
	ctx := ctxT(t, 10*time.Second)
	m := l.Mutex("tokens")
	for _, s := range servers {
		h, err := newLocker(t, s.client(t), nil).Mutex("tokens").Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	h, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fences := make([]uint64, len(servers))
	for i, s := range servers {
		st := readState(ctx, s.client(t), m.Key())
		f, err := strconv.ParseUint(st.fence, 10, 64)
		if st.owner == "" || err != nil || f < 1e15 {
			t.Fatalf("server %d: state %+v after the acquisition, want the master's counter", i, st)
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

// TestRedlockHandOffFence: a Locker of New that queues behind a Redlock
// holder on the same server (the holder's value has a fence of 0) gets, at
// the hand-off, a fencing token above every earlier one of the key, as
// after a missing key: not 1.
func TestRedlockHandOffFence(t *testing.T) {
	s := startServer(t)
	single := newLocker(t, s.client(t), &redislock.Options{Recheck: 10 * time.Second})
	red, err := redislock.NewRedlock([]redislock.Client{s.client(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { red.Close() })
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)

	h, err := single.Mutex("mixed").Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := h.(caesura.Fenced).Token()
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lapse(ctx, c, single.Mutex("mixed").Key()); err != nil {
		t.Fatal(err)
	}
	rh, err := red.Mutex("mixed").Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := readState(ctx, c, red.Mutex("mixed").Key()); st.fence != "0" {
		t.Fatalf("Redlock holder's state %+v, want fence 0", st)
	}
	got := queued(t, ctx, c, red.Mutex("mixed").Key(), func() (caesura.Held, error) { return single.Mutex("mixed").Acquire(ctx) })
	if err := rh.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wh := <-got
	if wh == nil {
		t.FailNow()
	}
	if after := wh.(caesura.Fenced).Token(); after <= before {
		t.Errorf("handed-on fencing token %d, not above the key's earlier %d", after, before)
	}
	if err := wh.Release(ctx); err != nil {
		t.Error(err)
	}
}
