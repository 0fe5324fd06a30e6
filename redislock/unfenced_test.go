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
	"github.com/caesura-go/caesura/redislock"
	"github.com/redis/go-redis/v9"
)

func TestConformanceUnfenced(t *testing.T) {
	s := startServer(t)
	conformance(t, s.locker(t, &redislock.Options{TTL: time.Second, Unfenced: true}), s.client(t))
}

// unfenced returns an unfenced Locker on s whose client records what it
// sends, with the library loaded and the record empty.
func unfenced(t *testing.T, s *server, o redislock.Options) (*redislock.Locker, *sent) {
	t.Helper()
	c := s.client(t)
	rec := &sent{}
	c.AddHook(rec)
	o.Unfenced = true
	l := newLocker(t, c, &o)
	h := mustTake(t, ctxT(t, 5*time.Second), l.Mutex("warm"))
	if err := h.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec.take()
	return l, rec
}

// mustTake acquires m, of any Locker.
func mustTake(t *testing.T, ctx context.Context, m *redislock.Mutex) caesura.Held {
	t.Helper()
	h, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// cmdCalls returns how many times the server ran cmd, from scripts too.
func cmdCalls(t *testing.T, c *redis.Client, cmd string) int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(info) {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			n, err := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	return 0
}

// TestUnfencedCycle: an unfenced Locker takes a missing key with one plain
// SET … NX, writing its token and a fence of 0, reads no clock, and its
// release deletes the key. Its Helds carry no fencing token, and a lock
// that is taken costs it the SET and then the script.
func TestUnfencedCycle(t *testing.T) {
	s := startServer(t)
	l, rec := unfenced(t, s, redislock.Options{})
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	m := l.Mutex("plain")
	times := cmdCalls(t, c, "time")

	for round := range 2 {
		h, err := m.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := rec.take(); !slices.Equal(got, []string{"set-nx"}) {
			t.Errorf("round %d: the acquisition sent %q, want one SET … NX", round, got)
		}
		if _, ok := h.(*redislock.UnfencedHeld); !ok {
			t.Errorf("Acquire returned a %T, want an *UnfencedHeld", h)
		}
		if _, ok := h.(caesura.Fenced); ok {
			t.Error("an unfenced Held implements caesura.Fenced")
		}
		st := readState(ctx, c, m.Key())
		if !strings.HasPrefix(st.owner, "u") || st.fence != "0" || st.queued != 0 {
			t.Errorf("round %d: state %+v while held, want an unfenced owner (\"u…\") and fence 0", round, st)
		}
		if ttl := c.PTTL(ctx, m.Key()).Val(); ttl <= 0 || ttl > redislock.DefaultTTL {
			t.Errorf("round %d: the held key's expiry is %v, want within the lease", round, ttl)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if got := rec.take(); !slices.Equal(got, []string{"fcall"}) {
			t.Errorf("round %d: the release sent %q, want one function call", round, got)
		}
		if n := c.Exists(ctx, m.Key()).Val(); n != 0 {
			t.Errorf("round %d: the key is still there after the release: %q", round, c.Get(ctx, m.Key()).Val())
		}
		if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
			t.Errorf("round %d: a second Release returned %v, want ErrNotHeld", round, err)
		}
		rec.take()
	}
	if n := cmdCalls(t, c, "time") - times; n != 0 {
		t.Errorf("the server read its clock %d times, want none", n)
	}

	// Inside caesura.Run the function gets no fencing token.
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(m); err != nil {
			return err
		}
		if tok, ok := caesura.Token(ctx, m); ok {
			t.Errorf("caesura.Token = %d, true under an unfenced lock", tok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rec.take()

	// A taken lock: the SET fails, the script says taken.
	h := mustTake(t, ctx, m)
	rec.take()
	if _, err := m.TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("TryAcquire of a held lock: %v, want ErrNotAcquired", err)
	}
	if got := rec.take(); !slices.Equal(got, []string{"set-nx", "fcall"}) {
		t.Errorf("TryAcquire of a held lock sent %q, want the SET, then the script", got)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	rec.take()

	// For a second after that, the Locker goes to the script at once, which
	// takes the missing key with fence 0 too.
	h = mustTake(t, ctx, m)
	if got := rec.take(); !slices.Equal(got, []string{"fcall"}) {
		t.Errorf("an acquisition just after the lock was found taken sent %q, want the script alone", got)
	}
	if st := readState(ctx, c, m.Key()); !strings.HasPrefix(st.owner, "u") || st.fence != "0" {
		t.Errorf("state %+v when the script took the missing key, want an unfenced owner and fence 0", st)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, m.Key()).Val(); n != 0 {
		t.Errorf("the key is still there after the release: %q", c.Get(ctx, m.Key()).Val())
	}
	rec.take()
	// Other keys still take the plain SET.
	another := "another"
	for i := 0; redislock.SameTakenSlot(l, m.Key(), l.Mutex(another).Key()); i++ {
		another = "another" + strconv.Itoa(i)
	}
	h = mustTake(t, ctx, l.Mutex(another))
	if got := rec.take(); !slices.Equal(got, []string{"set-nx"}) {
		t.Errorf("an acquisition of another key sent %q, want one SET … NX", got)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestUnfencedHandOff: a release hands the lock to the head waiter as for a
// fenced Locker. An unfenced waiter gets fence 0 again, so that its release
// deletes the key and the next acquisition is one SET again; a fenced
// waiter behind an unfenced holder gets a token from the server clock.
func TestUnfencedHandOff(t *testing.T) {
	s := startServer(t)
	a, rec := unfenced(t, s, redislock.Options{Recheck: 10 * time.Second})
	b := newLocker(t, s.client(t), &redislock.Options{Recheck: 10 * time.Second, Unfenced: true})
	fenced := newLocker(t, s.client(t), &redislock.Options{Recheck: 10 * time.Second})
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	key := a.Mutex("hand").Key()

	// waitFor acquires m in a goroutine, once the key has a queue.
	waitFor := func(m *redislock.Mutex) <-chan caesura.Held {
		return queued(t, ctx, c, key, func() (caesura.Held, error) { return m.Acquire(ctx) })
	}

	h := mustTake(t, ctx, a.Mutex("hand"))
	got := waitFor(b.Mutex("hand"))
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	bh := <-got
	if bh == nil {
		t.FailNow()
	}
	if st := readState(ctx, c, key); st.owner == "" || st.fence != "0" {
		t.Errorf("state %+v after the hand-off to an unfenced waiter, want it held with fence 0", st)
	}
	if err := bh.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, key).Val(); n != 0 {
		t.Errorf("the key is still there after the unfenced waiter's release: %q", c.Get(ctx, key).Val())
	}
	rec.take()
	h = mustTake(t, ctx, a.Mutex("hand"))
	if got := rec.take(); !slices.Equal(got, []string{"set-nx"}) {
		t.Errorf("the acquisition after the hand-off sent %q, want one SET … NX", got)
	}

	tm, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	got = waitFor(fenced.Mutex("hand"))
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	fh := <-got
	if fh == nil {
		t.FailNow()
	}
	if tok := fh.(caesura.Fenced).Token(); tok < uint64(tm.UnixMicro()) {
		t.Errorf("a fenced waiter handed the lock by an unfenced holder got token %d, below the server clock %d before the hand-off", tok, tm.UnixMicro())
	}
	if err := fh.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestUnfencedSharesFenced: where a fenced Locker keeps a fencing counter
// at the key, an unfenced acquisition goes through the script after its
// SET and its release keeps the counter, so the fenced Locker's tokens go
// on growing by one; after an unfenced Locker deleted the key, the next
// fenced token starts from the server clock, still above every earlier one.
func TestUnfencedSharesFenced(t *testing.T) {
	s := startServer(t)
	u, rec := unfenced(t, s, redislock.Options{})
	fenced := newLocker(t, s.client(t), nil)
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	key := fenced.Mutex("shared").Key()

	token := func() uint64 {
		t.Helper()
		h := mustAcquire(t, ctx, fenced.Mutex("shared"))
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		return h.Token()
	}
	first := token()
	uh := mustTake(t, ctx, u.Mutex("shared"))
	if got := rec.take(); !slices.Equal(got, []string{"set-nx", "fcall"}) {
		t.Errorf("an unfenced acquisition of a key with a counter sent %q, want the SET, then the script", got)
	}
	if err := uh.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if st := readState(ctx, c, key); st.owner != "" || st.fence != strconv.FormatUint(first+2, 10) {
		t.Errorf("state %+v after the unfenced release, want free with next token %d", st, first+2)
	}
	if next := token(); next != first+2 {
		t.Errorf("fenced token %d after an unfenced holder, want %d", next, first+2)
	}

	if err := c.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	uh = mustTake(t, ctx, u.Mutex("shared"))
	if err := uh.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, key).Val(); n != 0 {
		t.Fatalf("the key is still there after the unfenced release: %q", c.Get(ctx, key).Val())
	}
	if next := token(); next <= first+2 {
		t.Errorf("fenced token %d after an unfenced Locker deleted the key, not above %d", next, first+2)
	}
}

// TestUnfencedBatch: a batch of an unfenced Locker takes missing keys in one
// script call with fence 0, reading no clock, and its release deletes them.
func TestUnfencedBatch(t *testing.T) {
	s := startServer(t)
	l, rec := unfenced(t, s, redislock.Options{})
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	times := cmdCalls(t, c, "time")
	locks := []caesura.Lock{l.Mutex("b1"), l.Mutex("b2"), l.Mutex("b3")}
	hs, err := l.AcquireBatch(ctx, locks)
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); !slices.Equal(got, []string{"fcall"}) {
		t.Errorf("the batch sent %q, want one function call", got)
	}
	for _, lk := range locks {
		if st := readState(ctx, c, lk.Key()); st.owner == "" || st.fence != "0" {
			t.Errorf("%s: state %+v while held, want an owner and fence 0", lk.Key(), st)
		}
	}
	for _, h := range hs {
		if _, ok := h.(caesura.Fenced); ok {
			t.Errorf("a batch Held (%T) implements caesura.Fenced", h)
		}
	}
	if err := l.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); !slices.Equal(got, []string{"fcall"}) {
		t.Errorf("the batch release sent %q, want one function call", got)
	}
	for _, lk := range locks {
		if n := c.Exists(ctx, lk.Key()).Val(); n != 0 {
			t.Errorf("%s is still there after the release: %q", lk.Key(), c.Get(ctx, lk.Key()).Val())
		}
	}
	if n := cmdCalls(t, c, "time") - times; n != 0 {
		t.Errorf("the server read its clock %d times, want none", n)
	}

	// A batch that waits for its first key, held by another unfenced
	// Locker, is handed it and takes the missing second key in the script's
	// general path, still with fence 0 (the queue reads the clock for its
	// deadlines).
	other := newLocker(t, s.client(t), &redislock.Options{Unfenced: true})
	oh := mustTake(t, ctx, other.Mutex("b1"))
	done := queued(t, ctx, c, locks[0].Key(), func() ([]caesura.Held, error) { return l.AcquireBatch(ctx, locks[:2]) })
	if err := oh.Release(ctx); err != nil {
		t.Fatal(err)
	}
	hs = <-done
	if hs == nil {
		t.FailNow()
	}
	for _, lk := range locks[:2] {
		if st := readState(ctx, c, lk.Key()); st.owner == "" || st.fence != "0" {
			t.Errorf("%s: state %+v after the wait, want an owner and fence 0", lk.Key(), st)
		}
	}
	if err := l.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, locks[0].Key(), locks[1].Key()).Val(); n != 0 {
		t.Errorf("%d keys are still there after the release", n)
	}
}
