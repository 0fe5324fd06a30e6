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
// release scripts for a single key (see scripts.go): the fast paths
// (acquire: a GET and a SET, replying the stored token; release: one SET
// with GET) and the general ones, whose one-key replies are the fence
// alone, 1, or a list. TestOneKeyPathsValkey takes the same steps where the
// release is a conditional SET.
func TestOneKeyPaths(t *testing.T) { oneKeyPaths(t, startServer(t)) }

func oneKeyPaths(t *testing.T, s *server) {
	l := s.locker(t, nil) // no renewal within the test
	other := s.locker(t, nil)
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	m := l.Mutex("one")
	state := func(owned bool, fence uint64) {
		t.Helper()
		st := readState(ctx, c, m.Key())
		if (st.owner != "") != owned || st.fence != strconv.FormatUint(fence, 10) || st.queued != 0 {
			t.Fatalf("state %+v, want owned %v, fence %d, no queue", st, owned, fence)
		}
		// Every write keeps a lease on the key: none stays for good.
		if ttl := c.PTTL(ctx, m.Key()).Val(); ttl <= 0 || ttl > redislock.DefaultTTL {
			t.Fatalf("key's expiry %v, want within the lease (%v)", ttl, redislock.DefaultTTL)
		}
	}
	token := func(h *redislock.Held, want uint64) {
		t.Helper()
		if got := h.Token(); got != want {
			t.Fatalf("fencing token %d, want %d", got, want)
		}
	}
	serverMicros := func() uint64 {
		t.Helper()
		tm, err := c.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return uint64(tm.UnixMicro())
	}

	// Fast paths: a missing key starts from the server clock (µs), then a
	// free key keeps the next token.
	before := serverMicros()
	h := mustAcquire(t, ctx, m)
	b := h.Token()
	if after := serverMicros(); b < before || b > after {
		t.Fatalf("first token %d, want the server time in µs, within [%d, %d]", b, before, after)
	}
	state(true, b)
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	state(false, b+1)
	h = mustAcquire(t, ctx, m)
	token(h, b+1)

	// A try on a held key fails without queueing.
	if _, err := other.Mutex("one").TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("TryAcquire of a held key: got %v, want ErrNotAcquired", err)
	}
	state(true, b+1)

	// A stale token's release finds another holder: the fast path puts the
	// value back, expiry included (a conditional SET changes nothing), and
	// frees nothing.
	if err := dropOwner(ctx, c, m.Key()); err != nil {
		t.Fatal(err)
	}
	h3 := mustAcquire(t, ctx, other.Mutex("one"))
	token(h3, b+2)
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release of a stale token: got %v, want ErrNotHeld", err)
	}
	state(true, b+2)

	// A lapsed lease: Redis dropped the key, and the next token starts
	// from the clock again, above every earlier one.
	if err := lapse(ctx, c, m.Key()); err != nil {
		t.Fatal(err)
	}
	h4 := mustAcquire(t, ctx, m)
	if h4.Token() <= b+2 {
		t.Fatalf("token after the key expired %d, want above %d", h4.Token(), b+2)
	}
	if err := h3.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release of a lapsed lease taken by another: got %v, want ErrNotHeld", err)
	}
	state(true, h4.Token())

	// Releasing a lease that ran out frees nothing and leaves no key.
	if err := lapse(ctx, c, m.Key()); err != nil {
		t.Fatal(err)
	}
	if err := h4.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release past the lease: got %v, want ErrNotHeld", err)
	}
	if n := c.Exists(ctx, m.Key()).Val(); n != 0 {
		t.Fatalf("a release past the lease left the key (%q)", c.Get(ctx, m.Key()).Val())
	}
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
	b := hs[0].(caesura.Fenced).Token()
	for _, m := range ms {
		if st := readState(ctx, c, m.Key()); st.owner != "" || st.fence != strconv.FormatUint(b+1, 10) {
			t.Fatalf("key %q after the release: %+v, want free with next token %d", m.Key(), st, b+1)
		}
	}
	// Every key is free again: the fast paths take and free them.
	hs, err = l.AcquireBatch(ctx, locks)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if f := h.(caesura.Fenced).Token(); f != b+1 {
			t.Fatalf("key %d: fencing token %d, want %d", i, f, b+1)
		}
	}
	if err := l.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
}

// TestHashReplaced: a hash left at a lock's key by an earlier version of
// this package (one hash per lock) reads as a missing key: an acquisition
// replaces it and starts the tokens from the server clock, and a release
// finds the lock not held.
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
			f := h.(caesura.Fenced).Token()
			if f < 1e15 {
				t.Fatalf("%d keys: key %d: fencing token %d, want the server clock in µs", n, i, f)
			}
			if st := readState(ctx, c, h.(*redislock.Held).Key()); st.owner == "" || st.fence != strconv.FormatUint(f, 10) {
				t.Fatalf("%d keys: key %d: state %+v, want held with fence %d", n, i, st, f)
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

// TestLegacyValues: keys left by the version that judged leases by the
// server clock (a counter from 1 when free; owner, lease end and counter,
// with no expiry, when held; a free value with a queue) read as missing:
// acquiring replaces them, with a token from the server clock, and a stale
// release leaves them as they were.
func TestLegacyValues(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, nil)
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	owner := strings.Repeat("ab", 16)
	entry := strings.Repeat("cd", 16) + "1795000000000" + "0000010000"
	for name, v := range map[string]string{
		"free":   "41",
		"held":   owner + "1795000000000" + "41",
		"queued": strings.Repeat("-", 32) + "0000000000000" + entry + "41",
		"junk":   owner + "not a number",
	} {
		m := l.Mutex("legacy-" + name)
		if err := c.Set(ctx, m.Key(), v, 0).Err(); err != nil {
			t.Fatal(err)
		}
		h, err := m.TryAcquire(ctx)
		if err != nil {
			t.Fatalf("%s: TryAcquire over a legacy value: %v", name, err)
		}
		if f := h.(caesura.Fenced).Token(); f < 1e15 {
			t.Fatalf("%s: token %d, want the server clock in µs", name, f)
		}
		if ttl := c.PTTL(ctx, m.Key()).Val(); ttl <= 0 {
			t.Fatalf("%s: the key has no lease after the acquisition (%v)", name, ttl)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// A stale release of a key that is not its own puts it back as it was.
	m := l.Mutex("legacy-stale")
	h := mustAcquire(t, ctx, m)
	v := owner + "1795000000000" + "41"
	if err := c.Set(ctx, m.Key(), v, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("release of a replaced key: got %v, want ErrNotHeld", err)
	}
	if got := c.Get(ctx, m.Key()).Val(); got != v {
		t.Fatalf("the stale release left %q, want %q", got, v)
	}
}
