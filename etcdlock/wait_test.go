package etcdlock

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The waiting paths: a waiter with at most maxWatched keys ahead follows
// them all through one watch of its queue (awaitQueue, "watch-all"); one
// with more watches a single key ahead (awaitKey, "watch-one": maxWatched 1
// puts every waiter with two or more keys ahead there).
var waitModes = []struct {
	name       string
	maxWatched int
}{
	{"watch-all", 64},
	{"watch-one", 1},
}

// acquireResult is the outcome of an Acquire run in the background.
type acquireResult struct {
	h   *held
	err error
	at  time.Time // when Acquire returned
}

func acquireAsync(ctx context.Context, m caesura.Lock) <-chan acquireResult {
	ch := make(chan acquireResult, 1)
	go func() {
		h, err := m.Acquire(ctx)
		r := acquireResult{err: err, at: time.Now()}
		if err == nil {
			r.h = h.(*held)
		}
		ch <- r
	}()
	return ch
}

// stillWaiting fails t if the acquisition in ch ends within d.
func stillWaiting(t *testing.T, ch <-chan acquireResult, d time.Duration, why string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s: Acquire returned (held=%v, err=%v), want it still waiting", why, r.h != nil, r.err)
	case <-time.After(d):
	}
}

// result waits for the acquisition in ch.
func result(t *testing.T, ch <-chan acquireResult, within time.Duration) acquireResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("Acquire still waiting after %v", within)
		return acquireResult{}
	}
}

// TestWaitBehindCancelledWaiter: holder H, waiters W1 and W2. W1 gives up;
// W2 must go on waiting while H holds (its count of keys ahead must not
// reach zero with W1's deletion) and take the lock only once H releases.
func TestWaitBehindCancelledWaiter(t *testing.T) {
	for _, mode := range waitModes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testCtx(t)
			c := sharedClient(t)
			l := testLocker(t, c)
			l.maxWatched = mode.maxWatched
			m := l.Mutex("a")
			h := mustAcquire(t, ctx, m)
			w1ctx, cancelW1 := context.WithCancel(ctx)
			defer cancelW1()
			w1 := acquireAsync(w1ctx, m)
			waitQueue(t, c, m, 2)
			w2 := acquireAsync(ctx, m)
			waitQueue(t, c, m, 3)
			time.Sleep(50 * time.Millisecond) // let W2's watch be in place
			cancelW1()
			if r := result(t, w1, 5*time.Second); !errors.Is(r.err, caesura.ErrNotAcquired) || !errors.Is(r.err, context.Canceled) {
				t.Fatalf("W1: got %v, want ErrNotAcquired and Canceled", r.err)
			}
			if keys := queueKeys(t, c, m); len(keys) != 2 || keys[0] != h.ekey {
				t.Fatalf("queue after W1 gave up: %q, want H's key and W2's", keys)
			}
			stillWaiting(t, w2, 300*time.Millisecond, "W2 after W1 gave up while H holds")
			released := time.Now()
			if err := h.Release(ctx); err != nil {
				t.Fatal(err)
			}
			r := result(t, w2, 5*time.Second)
			if r.err != nil {
				t.Fatalf("W2: %v", r.err)
			}
			if r.at.Before(released) {
				t.Fatalf("W2 acquired %v before H started its release", released.Sub(r.at))
			}
			if r.h.Token() <= h.Token() {
				t.Errorf("W2's token %d, want above H's %d", r.h.Token(), h.Token())
			}
			if err := r.h.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestWaiterKeyDeleted: an operator deletes a waiter's key; the waiter
// stops with ErrKeyDeleted (not a session end), and the holder is unharmed.
func TestWaiterKeyDeleted(t *testing.T) {
	for _, mode := range waitModes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testCtx(t)
			c, admin := sharedClient(t), sharedClient(t)
			l := testLocker(t, c)
			l.maxWatched = mode.maxWatched
			m := l.Mutex("a")
			h := mustAcquire(t, ctx, m)
			w := acquireAsync(ctx, m)
			waitQueue(t, c, m, 2)
			time.Sleep(20 * time.Millisecond) // usually before the waiter's own monitor starts
			keys := queueKeys(t, c, m)
			start := time.Now()
			if _, err := admin.Delete(ctx, keys[1]); err != nil {
				t.Fatal(err)
			}
			r := result(t, w, 5*time.Second)
			if !errors.Is(r.err, ErrKeyDeleted) || errors.Is(r.err, ErrSessionEnded) || errors.Is(r.err, caesura.ErrNotAcquired) {
				t.Fatalf("waiter whose key was deleted: got held=%v err=%v, want ErrKeyDeleted only", r.h != nil, r.err)
			}
			t.Logf("waiter stopped %v after its key was deleted", time.Since(start))
			if err := h.Lost().Err(); err != nil {
				t.Fatalf("holder lost: %v", context.Cause(h.Lost()))
			}
			if keys := queueKeys(t, c, m); len(keys) != 1 || keys[0] != h.ekey {
				t.Fatalf("queue %q, want only the holder's key", keys)
			}
			if err := h.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFIFOEight: eight waiters queued one after another get the lock in
// that order, in each waiting mode and when they switch from one to the
// other (maxWatched 2: the first two follow every key ahead, the others
// watch one key until two are left ahead of them).
func TestFIFOEight(t *testing.T) {
	modes := append(slices.Clone(waitModes), struct {
		name       string
		maxWatched int
	}{"switch", 2})
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testCtx(t)
			c1, c2 := sharedClient(t), sharedClient(t)
			l1, l2 := testLocker(t, c1), testLocker(t, c2)
			l1.maxWatched, l2.maxWatched = mode.maxWatched, mode.maxWatched
			holder := mustAcquire(t, ctx, l1.Mutex("q"))
			const waiters = 8
			var (
				mu     sync.Mutex
				order  []int
				tokens []uint64
				inside atomic.Int32
				wg     sync.WaitGroup
			)
			for i := range waiters {
				l := []*Locker{l1, l2}[i%2]
				wg.Go(func() {
					h, err := l.Mutex("q").Acquire(ctx)
					if err != nil {
						t.Errorf("waiter %d: %v", i, err)
						return
					}
					if n := inside.Add(1); n != 1 {
						t.Errorf("waiter %d: %d holders at once", i, n)
					}
					mu.Lock()
					order = append(order, i)
					tokens = append(tokens, h.(caesura.Fenced).Token())
					mu.Unlock()
					time.Sleep(time.Millisecond)
					inside.Add(-1)
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
			if want := []int{0, 1, 2, 3, 4, 5, 6, 7}; !slices.Equal(order, want) {
				t.Fatalf("acquisition order %v, want %v", order, want)
			}
			for i := 1; i < len(tokens); i++ {
				if tokens[i] <= tokens[i-1] {
					t.Fatalf("tokens %v, want strictly increasing", tokens)
				}
			}
		})
	}
}

// TestContendedFIFO: goroutines in a closed loop on one lock, zero hold.
// Tokens are create revisions, so they increase in acquisition order only
// if every acquisition went to the oldest waiter; and no two hold at once.
func TestContendedFIFO(t *testing.T) {
	for _, mode := range append(slices.Clone(waitModes), struct {
		name       string
		maxWatched int
	}{"switch", 2}) {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testCtx(t)
			c := sharedClient(t)
			ls := []*Locker{testLocker(t, c), testLocker(t, sharedClient(t))}
			for _, l := range ls {
				l.maxWatched = mode.maxWatched
			}
			const workers, rounds = 8, 15
			var (
				mu     sync.Mutex
				tokens []uint64
				inside atomic.Int32
				wg     sync.WaitGroup
			)
			for w := range workers {
				m := ls[w%2].Mutex("c")
				wg.Go(func() {
					for range rounds {
						h, err := m.Acquire(ctx)
						if err != nil {
							t.Errorf("worker %d: %v", w, err)
							return
						}
						if n := inside.Add(1); n != 1 {
							t.Errorf("worker %d: %d holders at once", w, n)
						}
						mu.Lock()
						tokens = append(tokens, h.(caesura.Fenced).Token())
						mu.Unlock()
						inside.Add(-1)
						if err := h.Release(ctx); err != nil {
							t.Errorf("worker %d: release: %v", w, err)
							return
						}
					}
				})
			}
			wg.Wait()
			if len(tokens) != workers*rounds {
				t.Fatalf("%d acquisitions, want %d", len(tokens), workers*rounds)
			}
			for i := 1; i < len(tokens); i++ {
				if tokens[i] <= tokens[i-1] {
					t.Fatalf("acquisition %d has token %d after %d: not the oldest waiter", i, tokens[i], tokens[i-1])
				}
			}
		})
	}
}

func TestKeysAheadApply(t *testing.T) {
	del := func(key string, rev int64) *clientv3.Event {
		return &clientv3.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(key), ModRevision: rev}}
	}
	put := &clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("a"), ModRevision: 20, CreateRevision: 20}}
	k := newKeysAhead(ahead{kvs: []*mvccpb.KeyValue{{Key: []byte("b")}, {Key: []byte("a")}}, rev: 10})
	if k.apply("own", []*clientv3.Event{del("a", 10), del("b", 3), put}) || len(k.keys) != 2 {
		t.Fatalf("events at or before the read's revision, or puts, changed the set: %q", k.keys)
	}
	if k.apply("own", []*clientv3.Event{del("a", 11), del("x", 12)}) || !slices.Equal(k.keys, []string{"b"}) {
		t.Fatalf("after a's deletion: %q, want [b]", k.keys)
	}
	if !k.apply("own", []*clientv3.Event{del("own", 13), del("b", 14)}) {
		t.Fatal("the deletion of the waiter's own key was not reported")
	}
	if k.apply("own", []*clientv3.Event{del("own", 9)}) {
		t.Fatal("a deletion of the waiter's key name before the read was reported")
	}
	if k.apply("own", []*clientv3.Event{del("b", 15)}) || len(k.keys) != 0 {
		t.Fatalf("after b's deletion: %q, want none", k.keys)
	}
}

// tapClient is a real client whose watches of one key (a queue prefix) pass
// through the test, which can break them or slip responses into them.
type tapClient struct {
	*clientv3.Client
	key  string
	taps chan *tap // each tapped watch, as it is opened

	mu       sync.Mutex
	breakNew bool // break new watches before the server confirms them
}

// tap is one tapped watch.
type tap struct {
	created chan struct{}  // closed once the confirmation reached the watcher
	inject  chan injection // responses to hand to the watcher
	brk     chan struct{}  // closed to break the watch
}

type injection struct {
	resp      clientv3.WatchResponse
	delivered chan struct{} // closed once the watcher took resp
}

func newTapClient(c *clientv3.Client, key string) *tapClient {
	return &tapClient{Client: c, key: key, taps: make(chan *tap, 64)}
}

func (c *tapClient) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	in := c.Client.Watch(ctx, key, opts...)
	if key != c.key {
		return in
	}
	c.mu.Lock()
	breakNew := c.breakNew
	c.mu.Unlock()
	tp := &tap{created: make(chan struct{}), inject: make(chan injection), brk: make(chan struct{})}
	select {
	case c.taps <- tp:
	default:
	}
	out := make(chan clientv3.WatchResponse) // unbuffered: a send ends when the watcher took it
	broken := clientv3.WatchResponse{Canceled: true, CompactRevision: 1}
	send := func(r clientv3.WatchResponse) bool {
		select {
		case out <- r:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go func() {
		defer func() {
			close(out)
			for range in { // until the watcher cancels the watch
			}
		}()
		if breakNew {
			send(broken)
			return
		}
		for {
			select {
			case r, ok := <-in:
				if !ok || !send(r) {
					return
				}
				if r.Created {
					close(tp.created)
				}
			case inj := <-tp.inject:
				if !send(inj.resp) {
					return
				}
				close(inj.delivered)
			case <-tp.brk:
				send(broken)
				return
			}
		}
	}()
	return out
}

// nextTap returns the next tapped watch, once the server has confirmed it.
func (c *tapClient) nextTap(t *testing.T) *tap {
	t.Helper()
	select {
	case tp := <-c.taps:
		select {
		case <-tp.created:
			return tp
		case <-time.After(5 * time.Second):
			t.Fatal("tapped watch not confirmed within 5s")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no watch of the queue within 5s")
	}
	return nil
}

// TestWaitIgnoresStaleDelete: a delete event of a key's name from before the
// waiter's read (an earlier incarnation of that name) must not count as the
// deletion of the key the read found, or the waiter would take the lock
// while the holder holds it.
func TestWaitIgnoresStaleDelete(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c)
	m := l.Mutex("a")
	tc := newTapClient(c, m.(*lock).queue)
	l.client = tc
	h := mustAcquire(t, ctx, m)
	w := acquireAsync(ctx, m)
	tp := tc.nextTap(t)
	inj := injection{delivered: make(chan struct{}), resp: clientv3.WatchResponse{Events: []*clientv3.Event{{
		Type: mvccpb.DELETE,
		Kv:   &mvccpb.KeyValue{Key: []byte(h.ekey), ModRevision: h.rev - 1},
	}}}}
	select {
	case tp.inject <- inj:
	case <-time.After(5 * time.Second):
		t.Fatal("could not inject")
	}
	select {
	case <-inj.delivered: // after the waiter's read: it takes it in its loop
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter did not take the injected event")
	}
	stillWaiting(t, w, 300*time.Millisecond, "a stale delete event of the holder's key name")
	released := time.Now()
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	r := result(t, w, 5*time.Second)
	if r.err != nil || r.at.Before(released) {
		t.Fatalf("waiter: err %v, acquired before the release: %v", r.err, r.at.Before(released))
	}
	if err := r.h.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestWaitWatchBreaks: a waiter whose watch of the queue breaks watches
// again and reads the queue again: it neither takes the lock while the
// holder holds it nor misses a release made while it had no watch.
func TestWaitWatchBreaks(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c)
	m := l.Mutex("a")
	tc := newTapClient(c, m.(*lock).queue)
	l.client = tc
	h := mustAcquire(t, ctx, m)
	w := acquireAsync(ctx, m)

	close(tc.nextTap(t).brk) // break while the holder holds
	tp := tc.nextTap(t)      // the waiter watches again
	stillWaiting(t, w, 300*time.Millisecond, "after a watch break while the holder holds")

	// Break again and release at once, while the waiter pauses without a
	// watch: the read after its next watch must find nothing ahead.
	close(tp.brk)
	released := time.Now()
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	r := result(t, w, 5*time.Second)
	if r.err != nil {
		t.Fatalf("waiter: %v", r.err)
	}
	if r.at.Before(released) {
		t.Fatal("the waiter acquired before the holder's release")
	}
	tc.nextTap(t) // the third watch, which found the lock free
	if err := r.h.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestWaitWatchNeverConfirmed: when every watch breaks before the server
// confirms it, the waiter gives up after a few with ErrUnavailable and
// leaves no key behind.
func TestWaitWatchNeverConfirmed(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c)
	m := l.Mutex("a")
	tc := newTapClient(c, m.(*lock).queue)
	tc.breakNew = true
	l.client = tc
	h := mustAcquire(t, ctx, m)
	start := time.Now()
	_, err := m.Acquire(ctx)
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("Acquire with every watch broken: got %v, want ErrUnavailable only", err)
	}
	if n := len(tc.taps); n != maxWatchBreaks {
		t.Errorf("%d watches opened, want %d", n, maxWatchBreaks)
	}
	t.Logf("gave up after %v: %v", time.Since(start), err)
	if keys := queueKeys(t, c, m); len(keys) != 1 || keys[0] != h.ekey {
		t.Fatalf("queue %q, want only the holder's key", keys)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestWaitServerRestart: the server restarts while a waiter waits (its
// client's watch stream breaks and is resumed by the client); the waiter
// keeps waiting and takes the lock when the holder releases it.
func TestWaitServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and restarts a server")
	}
	ctx := testCtx(t)
	cl := startCluster(t, 1)
	c := newClient(t, cl.endpoints()...)
	l := testLocker(t, c, WithTTL(30*time.Second)) // outlives the restart
	m := l.Mutex("a")
	h := mustAcquire(t, ctx, m)
	w := acquireAsync(ctx, m)
	waitQueue(t, c, m, 2)
	time.Sleep(50 * time.Millisecond) // let the waiter's watch be in place
	cl.stop(0)
	stillWaiting(t, w, 200*time.Millisecond, "server stopped")
	cl.restart(0)
	cl.ready()
	stillWaiting(t, w, 300*time.Millisecond, "server restarted, holder holding")
	retry(t, "the client reconnects", func() error {
		_, err := c.Get(ctx, "/no-such-key")
		return err
	})
	released := time.Now()
	if err := h.Release(ctx); err != nil {
		t.Fatalf("release after the restart: %v", err)
	}
	r := result(t, w, 10*time.Second)
	if r.err != nil {
		t.Fatalf("waiter across a server restart: %v", r.err)
	}
	if r.at.Before(released) || r.h.Token() <= h.Token() {
		t.Fatalf("waiter acquired before the release (%v) or with token %d after %d", r.at.Before(released), r.h.Token(), h.Token())
	}
	if err := r.h.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
