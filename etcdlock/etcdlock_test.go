package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustAcquire(t *testing.T, ctx context.Context, l caesura.Lock) *held {
	t.Helper()
	h, err := l.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", l.Key(), err)
	}
	return h.(*held)
}

// queueKeys returns the waiter keys of a lock, oldest first.
func queueKeys(t *testing.T, c *clientv3.Client, l caesura.Lock) []string {
	t.Helper()
	resp, err := c.Get(testCtx(t), l.(*lock).queue, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatalf("get queue: %v", err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// waitQueue waits until the lock's queue has n keys.
func waitQueue(t *testing.T, c *clientv3.Client, l caesura.Lock, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		keys := queueKeys(t, c, l)
		if len(keys) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue of %q has %d keys, want %d", l.Key(), len(keys), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitDone(t *testing.T, ctx context.Context, within time.Duration) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(within):
		t.Fatalf("context not cancelled within %v", within)
	}
}

func TestOptions(t *testing.T) {
	c := sharedClient(t)
	tests := []struct {
		name string
		opts []Option
		ok   bool
	}{
		{"defaults", nil, true},
		{"prefix", []Option{WithPrefix("/app/locks/")}, true},
		{"prefix without trailing slash is refused: it could overlap another", []Option{WithPrefix("/app")}, false},
		{"empty prefix", []Option{WithPrefix("")}, false},
		{"TTL rounded up", []Option{WithTTL(1500 * time.Millisecond)}, true},
		{"zero TTL", []Option{WithTTL(0)}, false},
		{"negative TTL", []Option{WithTTL(-time.Second)}, false},
		{"watch ahead", []Option{WithWatchAhead(64)}, true},
		{"watch ahead zero", []Option{WithWatchAhead(0)}, false},
		{"watch ahead too many", []Option{WithWatchAhead(maxWatchAhead + 1)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := New(c, tt.opts...)
			if (err == nil) != tt.ok {
				t.Fatalf("New: got error %v, want ok=%v", err, tt.ok)
			}
			if l != nil {
				_ = l.Close(context.Background())
			}
		})
	}
	l, _ := New(c, WithTTL(1500*time.Millisecond))
	if l.ttl != 2 {
		t.Errorf("TTL 1.5s: got %d s, want 2 s", l.ttl)
	}
	if _, err := New(nil); err == nil {
		t.Error("New(nil): got nil error, want one")
	}
	if got, want := l.Mutex("x").Key(), "etcd:/caesura/x"; got != want {
		t.Errorf("Key: got %q, want %q", got, want)
	}
}

// TestNamesDoNotOverlap: "a" and "a/b" are different locks, though etcd
// ranges are prefixes.
func TestNamesDoNotOverlap(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c)
	names := []string{"a", "a/b", "a%2Fb", "a/", "%", ""}
	var helds []caesura.Held
	for _, n := range names[:5] {
		h, err := l.Mutex(n).(caesura.TryLocker).TryAcquire(ctx)
		if err != nil {
			t.Fatalf("TryAcquire(%q) while the others are held: %v", n, err)
		}
		helds = append(helds, h)
	}
	for _, h := range helds {
		if err := h.Release(ctx); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}
	if _, err := l.Mutex("").Acquire(ctx); !errors.Is(err, caesura.ErrInvalidLock) {
		t.Fatalf("Acquire of an empty name: got %v, want ErrInvalidLock", err)
	}
}

func TestAcquireReleaseFencing(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c)
	m := l.Mutex("a")
	var last uint64
	for i := range 3 {
		h := mustAcquire(t, ctx, m)
		keys := queueKeys(t, c, m)
		if len(keys) != 1 || keys[0] != h.ekey {
			t.Fatalf("queue: got %q, want [%q]", keys, h.ekey)
		}
		resp, err := c.Get(ctx, h.ekey)
		if err != nil {
			t.Fatal(err)
		}
		if got := uint64(resp.Kvs[0].CreateRevision); h.Token() != got || h.Token() <= last {
			t.Fatalf("acquisition %d: token %d, want the key's create revision %d, above %d", i, h.Token(), got, last)
		}
		last = h.Token()
		if err := h.Release(ctx); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
			t.Fatalf("second Release: got %v, want ErrNotHeld", err)
		}
		if keys := queueKeys(t, c, m); len(keys) != 0 {
			t.Fatalf("keys left after Release: %q", keys)
		}
	}
}

func TestTry(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c)
	m := l.Mutex("a").(caesura.TryLocker)
	h := mustAcquire(t, ctx, m)
	rev := revision(t, c)
	_, err := m.TryAcquire(ctx)
	if !errors.Is(err, caesura.ErrNotAcquired) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("TryAcquire of a held lock: got %v, want ErrNotAcquired only", err)
	}
	if got := revision(t, c); got != rev {
		t.Errorf("a failed TryAcquire wrote to etcd: revision %d -> %d", rev, got)
	}
	if keys := queueKeys(t, c, m); len(keys) != 1 {
		t.Errorf("a failed TryAcquire left a key: %q", keys)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	h2, err := m.TryAcquire(ctx)
	if err != nil {
		t.Fatalf("TryAcquire of a free lock: %v", err)
	}
	if err := h2.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func revision(t *testing.T, c *clientv3.Client) int64 {
	t.Helper()
	resp, err := c.Get(testCtx(t), "/no-such-key")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// TestFIFO: waiters get the lock in the order they queued, across two
// Lockers (two sessions) and within one.
func TestFIFO(t *testing.T) {
	ctx := testCtx(t)
	c1, c2 := sharedClient(t), sharedClient(t)
	l1, l2 := testLocker(t, c1), testLocker(t, c2)
	holder := mustAcquire(t, ctx, l1.Mutex("q"))
	const waiters = 6
	order := make(chan int, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		l := l1
		if i%2 == 1 {
			l = l2
		}
		wg.Go(func() {
			h, err := l.Mutex("q").Acquire(ctx)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			order <- i
			time.Sleep(2 * time.Millisecond)
			if err := h.Release(ctx); err != nil {
				t.Errorf("waiter %d release: %v", i, err)
			}
		})
		waitQueue(t, c1, l1.Mutex("q"), i+2) // queued before the next starts
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(order)
	var got []int
	for i := range order {
		got = append(got, i)
	}
	if want := []int{0, 1, 2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Fatalf("acquisition order %v, want %v", got, want)
	}
}

// TestWaitCancelled: a waiter whose context ends returns ErrNotAcquired with
// the context's error and leaves no key behind.
func TestWaitCancelled(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c)
	m := l.Mutex("a")
	h := mustAcquire(t, ctx, m)
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := m.Acquire(wctx)
	if !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire: got %v, want ErrNotAcquired and DeadlineExceeded", err)
	}
	if errors.Is(err, ErrUnavailable) {
		t.Errorf("Acquire: got %v, want no ErrUnavailable: the cluster answered", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Acquire returned %v after its 200ms deadline", d)
	}
	if keys := queueKeys(t, c, m); len(keys) != 1 || keys[0] != h.ekey {
		t.Fatalf("queue after the waiter gave up: %q, want only the holder's", keys)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLeaseRevokedWhileHeld: the function's context is cancelled with the
// lock-lost cause as soon as the key's deletion is seen (ErrKeyDeleted: the
// event does not say that the lease went), then the session ends
// (ErrSessionEnded) and the next acquisition starts a new one.
func TestLeaseRevokedWhileHeld(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	admin := sharedClient(t)
	l := testLocker(t, c, WithTTL(30*time.Second)) // keep-alive alone would take 10s to notice
	m := l.Mutex("a")
	var s *session
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(m); err != nil {
			return err
		}
		s, _ = l.current()
		if _, err := admin.Revoke(ctx, s.id); err != nil {
			return fmt.Errorf("revoke: %w", err)
		}
		start := time.Now()
		waitDone(t, ctx, 3*time.Second)
		t.Logf("loss noticed %v after the revocation: %v", time.Since(start), context.Cause(ctx))
		if c := context.Cause(ctx); !errors.Is(c, caesura.ErrLockLost) || !errors.Is(c, ErrKeyDeleted) {
			t.Errorf("cause: got %v, want ErrLockLost and ErrKeyDeleted", c)
		}
		return nil
	})
	if !errors.Is(err, caesura.ErrLockLost) {
		t.Fatalf("Run: got %v, want ErrLockLost", err)
	}
	waitDone(t, s.ctx, 3*time.Second)
	if c := context.Cause(s.ctx); !errors.Is(c, ErrSessionEnded) {
		t.Fatalf("session's cause: got %v, want ErrSessionEnded", c)
	}
	h := mustAcquire(t, ctx, m) // a new session
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestKeyDeletedWhileHeld: an operator deletes the key; the holder learns it
// with ErrKeyDeleted, and its Release reports ErrNotHeld.
func TestKeyDeletedWhileHeld(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	admin := sharedClient(t)
	l := testLocker(t, c)
	h := mustAcquire(t, ctx, l.Mutex("a"))
	if _, err := admin.Delete(ctx, h.ekey); err != nil {
		t.Fatal(err)
	}
	waitDone(t, h.Lost(), 3*time.Second)
	if c := context.Cause(h.Lost()); !errors.Is(c, ErrKeyDeleted) {
		t.Fatalf("Lost cause: got %v, want ErrKeyDeleted", c)
	}
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release after loss: got %v, want ErrNotHeld", err)
	}
	// Other locks of the session are unaffected.
	h2 := mustAcquire(t, ctx, l.Mutex("b"))
	if h2.s != h.s {
		t.Error("a deleted key ended the whole session")
	}
	if err := h2.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestStaleReleaseAfterLoss is etcd #22082: after A lost the lock and B took
// it (same session), A's release must not delete B's key.
func TestStaleReleaseAfterLoss(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	admin := sharedClient(t)
	l := testLocker(t, c)
	m := l.Mutex("a")
	a := mustAcquire(t, ctx, m)
	if _, err := admin.Delete(ctx, a.ekey); err != nil {
		t.Fatal(err)
	}
	waitDone(t, a.Lost(), 3*time.Second)
	b := mustAcquire(t, ctx, m)
	if err := a.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("stale Release: got %v, want ErrNotHeld", err)
	}
	if keys := queueKeys(t, c, m); len(keys) != 1 || keys[0] != b.ekey {
		t.Fatalf("after the stale release the queue is %q, want the new holder's [%q]", keys, b.ekey)
	}
	// Even a raw retry of A's conditioned delete cannot touch B's key.
	if err := l.deleteKey(ctx, a.ekey, a.rev, time.Second); err != nil {
		t.Fatal(err)
	}
	if keys := queueKeys(t, c, m); len(keys) != 1 {
		t.Fatalf("queue %q, want B's key", keys)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestWaiterSessionRevoked is etcd #19597: a waiter whose session is revoked
// stops waiting with ErrSessionEnded, well before a keep-alive would notice.
func TestWaiterSessionRevoked(t *testing.T) {
	ctx := testCtx(t)
	c1, c2 := sharedClient(t), sharedClient(t)
	l1 := testLocker(t, c1)
	l2 := testLocker(t, c2, WithTTL(30*time.Second))
	holder := mustAcquire(t, ctx, l1.Mutex("a"))
	errc := make(chan error, 1)
	go func() {
		_, err := l2.Mutex("a").Acquire(ctx)
		errc <- err
	}()
	waitQueue(t, c1, l1.Mutex("a"), 2)
	s, _ := l2.current()
	start := time.Now()
	if _, err := c1.Revoke(ctx, s.id); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrSessionEnded) || errors.Is(err, caesura.ErrNotAcquired) {
			t.Fatalf("waiter: got %v, want ErrSessionEnded", err)
		}
		t.Logf("waiter stopped %v after the revocation", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("waiter still waiting 5s after its session was revoked")
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestClose: Close revokes the lease, holders learn it, and the Locker
// refuses new work.
func TestClose(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c)
	h := mustAcquire(t, ctx, l.Mutex("a"))
	if err := l.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitDone(t, h.Lost(), time.Second)
	if c := context.Cause(h.Lost()); !errors.Is(c, ErrClosed) {
		t.Fatalf("Lost cause: got %v, want ErrClosed", c)
	}
	if keys := queueKeys(t, c, l.Mutex("a")); len(keys) != 0 {
		t.Fatalf("keys left after Close: %q", keys)
	}
	if _, err := l.Mutex("a").Acquire(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire after Close: got %v, want ErrClosed", err)
	}
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release after Close: got %v, want ErrNotHeld", err)
	}
}

// TestBatchOneTransaction: free locks are taken in one write, with one
// revision as every lock's token.
func TestBatchOneTransaction(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c)
	var ls []caesura.Lock
	for i := range 8 {
		ls = append(ls, l.Mutex(fmt.Sprintf("k%d", i)))
	}
	if _, err := l.Mutex("warm").Acquire(ctx); err != nil { // start the session
		t.Fatal(err)
	}
	rev := revision(t, c)
	hs, err := ls[0].(caesura.BatchLock).Batcher().AcquireBatch(ctx, ls)
	if err != nil {
		t.Fatal(err)
	}
	if got := revision(t, c); got != rev+1 {
		t.Errorf("batch of 8 free locks took %d revisions, want 1", got-rev)
	}
	for _, h := range hs {
		if tok := h.(caesura.Fenced).Token(); tok != uint64(rev+1) {
			t.Errorf("token %d, want %d", tok, rev+1)
		}
	}
	for i := len(hs) - 1; i >= 0; i-- {
		if err := hs[i].Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBatchNeverQueuesAboveUnheld: with lock 3 of 0..5 taken, a batch holds
// 0..2, queues on 3, and has no key at all on 4 and 5 while it waits.
func TestBatchNeverQueuesAboveUnheld(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l, other := testLocker(t, c), testLocker(t, sharedClient(t))
	var ls []caesura.Lock
	for i := range 6 {
		ls = append(ls, l.Mutex(fmt.Sprintf("k%d", i)))
	}
	blocker := mustAcquire(t, ctx, other.Mutex("k3"))
	type result struct {
		hs  []caesura.Held
		err error
	}
	done := make(chan result, 1)
	go func() {
		hs, err := l.batch.AcquireBatch(ctx, ls)
		done <- result{hs, err}
	}()
	waitQueue(t, c, ls[3], 2)
	for i, m := range ls {
		want := map[bool]int{true: 1, false: 0}[i <= 2]
		if i == 3 {
			want = 2
		}
		if got := len(queueKeys(t, c, m)); got != want {
			t.Errorf("lock k%d has %d keys while the batch waits for k3, want %d", i, got, want)
		}
	}
	if err := blocker.Release(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("AcquireBatch: %v", r.err)
	}
	for i, h := range r.hs {
		if err := h.Release(ctx); err != nil {
			t.Fatalf("Release %d: %v", i, err)
		}
	}
}

// TestBatchStress: workers on three Lockers take random sets of keys with
// AcquireBatch and with one-at-a-time ascending Acquires, and do a
// read-pause-write on a counter per key. Every worker finishes (no
// deadlock: a batch never queues above a key it does not hold) and no
// update is lost.
func TestBatchStress(t *testing.T) {
	ctx, cancel := context.WithTimeout(testCtx(t), 60*time.Second)
	defer cancel()
	c := sharedClient(t)
	lockers := []*Locker{testLocker(t, c), testLocker(t, sharedClient(t)), testLocker(t, sharedClient(t))}
	const keys, workers, rounds = 6, 6, 12
	counters := make([]atomic.Int64, keys) // read-pause-write under the lock
	expected := make([]atomic.Int64, keys) // plain atomic adds
	var wg sync.WaitGroup
	for w := range workers {
		l := lockers[w%len(lockers)]
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 99))
			for range rounds {
				perm := r.Perm(keys)[:1+r.IntN(keys)]
				sort.Ints(perm)
				ls := make([]caesura.Lock, len(perm))
				for i, k := range perm {
					ls[i] = l.Mutex(fmt.Sprintf("s%d", k))
				}
				slices.SortFunc(ls, func(a, b caesura.Lock) int { return strings.Compare(a.Key(), b.Key()) })
				var hs []caesura.Held
				if r.IntN(2) == 0 {
					var err error
					if hs, err = l.batch.AcquireBatch(ctx, ls); err != nil {
						t.Errorf("worker %d: AcquireBatch: %v", w, err)
						return
					}
				} else {
					for _, m := range ls {
						h, err := m.Acquire(ctx)
						if err != nil {
							t.Errorf("worker %d: Acquire: %v", w, err)
							return
						}
						hs = append(hs, h)
					}
				}
				for _, k := range perm {
					v := counters[k].Load()
					time.Sleep(100 * time.Microsecond)
					counters[k].Store(v + 1)
				}
				for i := len(hs) - 1; i >= 0; i-- {
					if err := hs[i].Release(ctx); err != nil {
						t.Errorf("worker %d: Release: %v", w, err)
					}
				}
				for _, k := range perm {
					expected[k].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for k := range counters {
		if got, want := counters[k].Load(), expected[k].Load(); got != want || want == 0 {
			t.Errorf("key %d: counter %d, want %d (an update was lost)", k, got, want)
		}
	}
}

// TestRevokedIdleSession: a lease revoked while no lock is held (so no
// watch noticed) costs the next acquisition one retry, not an error.
func TestRevokedIdleSession(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c, WithTTL(30*time.Second))
	h := mustAcquire(t, ctx, l.Mutex("a"))
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Revoke(ctx, h.s.id); err != nil {
		t.Fatal(err)
	}
	for _, try := range []bool{false, true} {
		var h2 caesura.Held
		var err error
		if try {
			if _, err := c.Revoke(ctx, mustSession(t, l).id); err != nil {
				t.Fatal(err)
			}
			h2, err = l.Mutex("a").(caesura.TryLocker).TryAcquire(ctx)
		} else {
			h2, err = l.Mutex("a").Acquire(ctx)
		}
		if err != nil {
			t.Fatalf("acquire (try=%v) after the idle session's lease was revoked: %v", try, err)
		}
		if h2.(*held).s == h.s {
			t.Fatal("acquired through the revoked session")
		}
		if err := h2.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func mustSession(t *testing.T, l *Locker) *session {
	t.Helper()
	s, err := l.current()
	if err != nil || s == nil {
		t.Fatalf("no live session: %v", err)
	}
	return s
}

// TestBatchRefusesDuplicates: two places in one queue at one revision would
// both be the head, so AcquireBatch refuses unsorted or repeated locks.
func TestBatchRefusesDuplicates(t *testing.T) {
	ctx := testCtx(t)
	l := testLocker(t, sharedClient(t))
	a, b := l.Mutex("a"), l.Mutex("b")
	for _, ls := range [][]caesura.Lock{{a, a}, {b, a}} {
		if _, err := l.batch.AcquireBatch(ctx, ls); !errors.Is(err, caesura.ErrInvalidLock) {
			t.Fatalf("AcquireBatch(%q, %q): got %v, want ErrInvalidLock", ls[0].Key(), ls[1].Key(), err)
		}
	}
	other := testLocker(t, sharedClient(t))
	if _, err := l.batch.AcquireBatch(ctx, []caesura.Lock{a, other.Mutex("b")}); !errors.Is(err, caesura.ErrInvalidLock) {
		t.Fatalf("AcquireBatch with another Locker's lock: got %v, want ErrInvalidLock", err)
	}
}

// TestRunBatchTwoRevisions: through caesura.Run an 8-key yield is one
// transaction to acquire and, through caesura.BatchReleaser, one to release;
// a stale Held in a batch release is reported and deletes nothing.
func TestRunBatchTwoRevisions(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c)
	var ls []caesura.Lock
	for i := range 8 {
		ls = append(ls, l.Mutex(fmt.Sprintf("rb%d", i)))
	}
	warm, err := l.Mutex("warm").Acquire(ctx) // start the session
	if err != nil {
		t.Fatal(err)
	}
	defer warm.Release(ctx)
	rev := revision(t, c)
	err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error { return yield(ls...) })
	if err != nil {
		t.Fatal(err)
	}
	if got := revision(t, c); got != rev+2 {
		t.Fatalf("Run with an 8-key yield took %d revisions, want 2", got-rev)
	}
	hs, err := ls[0].(caesura.BatchLock).Batcher().AcquireBatch(ctx, ls[:2])
	if err != nil {
		t.Fatal(err)
	}
	br := ls[0].(caesura.BatchLock).Batcher().(caesura.BatchReleaser)
	if err := br.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
	h2, err := ls[0].Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := br.ReleaseBatch(ctx, hs[:1]); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("stale ReleaseBatch: got %v, want ErrNotHeld", err)
	}
	if tl, ok := ls[0].(caesura.TryLocker); ok {
		if _, err := tl.TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
			t.Fatalf("a stale batch release freed the new holder's lock: %v", err)
		}
	}
	if err := h2.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
