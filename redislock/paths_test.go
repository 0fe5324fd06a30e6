package redislock_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caesura-go/caesura"

	"github.com/caesura-go/caesura/redislock"
)

// TestOneKeyPaths takes one key through each path of the acquire and
// release scripts for a single key (see scripts.go): the fast paths (GET and
// SET, an integer reply) and the general ones, whose one-key replies are
// the fence alone, 1, or a list.
func TestOneKeyPaths(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, nil) // no renewal within the test
	other := s.locker(t, nil)
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	m := l.Mutex("one")
	state := func(owned bool, fence string) {
		t.Helper()
		st := readState(ctx, c, m.Key())
		if (st.owner != "") != owned || st.fence != fence || st.queued != 0 {
			t.Fatalf("state %+v, want owned %v, fence %s, no queue", st, owned, fence)
		}
	}
	token := func(h *redislock.Held, want uint64) {
		t.Helper()
		if got := h.Token(); got != want {
			t.Fatalf("fencing token %d, want %d", got, want)
		}
	}

	// Fast paths: a missing key, then a free counter.
	h := mustAcquire(t, ctx, m)
	token(h, 1)
	state(true, "1")
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	state(false, "1")
	h = mustAcquire(t, ctx, m)
	token(h, 2)

	// A try on a held key fails without queueing.
	if _, err := other.Mutex("one").TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("TryAcquire of a held key: got %v, want ErrNotAcquired", err)
	}
	state(true, "2")

	// The general acquire path: a free key in the long layout.
	if err := dropOwner(ctx, c, m.Key()); err != nil {
		t.Fatal(err)
	}
	h3 := mustAcquire(t, ctx, other.Mutex("one"))
	token(h3, 3)
	// A stale token's release takes the general path and frees nothing.
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release of a stale token: got %v, want ErrNotHeld", err)
	}
	state(true, "3")

	// The general acquire path: a lapsed lease.
	if err := lapse(ctx, c, m.Key()); err != nil {
		t.Fatal(err)
	}
	h4 := mustAcquire(t, ctx, m)
	token(h4, 4)
	if err := h3.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release of a lapsed lease taken by another: got %v, want ErrNotHeld", err)
	}
	state(true, "4")

	// The release fast path frees a lapsed lease nobody took.
	if err := lapse(ctx, c, m.Key()); err != nil {
		t.Fatal(err)
	}
	if err := h4.Release(ctx); err != nil {
		t.Fatalf("Release past the lease, nobody took it: %v", err)
	}
	state(false, "4")
	if err := h4.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("second Release: got %v, want ErrNotHeld", err)
	}
}

// TestReleaseBatchPartly: a batch release of which one key is no longer
// held takes the general path: it frees the others and reports that key
// alone.
func TestReleaseBatchPartly(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, nil)
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	ms := []*redislock.Mutex{l.Mutex("pa"), l.Mutex("pb"), l.Mutex("pc")}
	locks := []caesura.Lock{ms[0], ms[1], ms[2]}
	hs, err := l.AcquireBatch(ctx, locks)
	if err != nil {
		t.Fatal(err)
	}
	if err := dropOwner(ctx, c, ms[1].Key()); err != nil {
		t.Fatal(err)
	}
	err = l.ReleaseBatch(ctx, hs)
	if !errors.Is(err, caesura.ErrNotHeld) || !strings.Contains(err.Error(), ms[1].Key()) ||
		strings.Contains(err.Error(), ms[0].Key()) || strings.Contains(err.Error(), ms[2].Key()) {
		t.Fatalf("ReleaseBatch with key %q not held: got %v, want ErrNotHeld for that key only", ms[1].Key(), err)
	}
	for _, m := range ms {
		if st := readState(ctx, c, m.Key()); st.owner != "" || st.fence != "1" {
			t.Fatalf("key %q after the release: %+v, want free with fence 1", m.Key(), st)
		}
	}
	// Every key is free again: the fast paths take and free them.
	hs, err = l.AcquireBatch(ctx, locks)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if f := h.(caesura.Fenced).Token(); f != 2 {
			t.Fatalf("key %d: fencing token %d, want 2", i, f)
		}
	}
	if err := l.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
}

// TestHashReplaced: a hash left at a lock's key by an earlier version of
// this package (one hash per lock) reads as a missing key: an acquisition
// replaces it and starts the counter from 1, and a release finds the lock
// not held.
func TestHashReplaced(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, nil)
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	for _, n := range []int{1, 3} {
		var locks []caesura.Lock
		for i := range n {
			m := l.Mutex("hash" + strconv.Itoa(n) + "-" + strconv.Itoa(i))
			if err := c.HSet(ctx, m.Key(), "owner", "x", "fence", "41").Err(); err != nil {
				t.Fatal(err)
			}
			locks = append(locks, m)
		}
		hs, err := l.AcquireBatch(ctx, locks)
		if err != nil {
			t.Fatalf("%d keys: acquire over hashes: %v", n, err)
		}
		for i, h := range hs {
			if f := h.(caesura.Fenced).Token(); f != 1 {
				t.Fatalf("%d keys: key %d: fencing token %d, want 1", n, i, f)
			}
			if st := readState(ctx, c, h.(*redislock.Held).Key()); st.owner == "" || st.fence != "1" {
				t.Fatalf("%d keys: key %d: state %+v, want held with fence 1", n, i, st)
			}
		}
		// Hashes again behind the holder's back: the release holds nothing.
		for _, lk := range locks {
			key := lk.(*redislock.Mutex).Key()
			if err := c.Del(ctx, key).Err(); err != nil {
				t.Fatal(err)
			}
			if err := c.HSet(ctx, key, "owner", "x").Err(); err != nil {
				t.Fatal(err)
			}
		}
		err = l.ReleaseBatch(ctx, hs)
		if !errors.Is(err, caesura.ErrNotHeld) || errors.Is(err, redislock.ErrUnavailable) {
			t.Fatalf("%d keys: release of hashes: got %v, want ErrNotHeld only", n, err)
		}
	}
}
