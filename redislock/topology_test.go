package redislock_test

// Live Sentinel and Cluster tests: real redis-server processes (a master, a
// replica and three sentinels; a cluster of three masters) started by
// internal/testredis on ephemeral ports.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/internal/testredis"
	"github.com/caesura-go/caesura/redislock"
	"github.com/redis/go-redis/v9"
)

const topologyWhy = "the Redis Sentinel and Cluster tests"

// failoverClient returns a go-redis Sentinel failover client of g, closed at
// cleanup.
func failoverClient(t *testing.T, g *testredis.Sentinel) *redis.Client {
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    testredis.MasterName,
		SentinelAddrs: g.SentinelAddrs(),
		DialTimeout:   200 * time.Millisecond,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

func newLocker(t *testing.T, c redislock.Client, o *redislock.Options) *redislock.Locker {
	t.Helper()
	l, err := redislock.New(c, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestSentinel runs the conformance suite through a Sentinel failover
// client, then kills the master and checks what the backend promises across
// the failover: a holder whose lock reached the replica keeps it (renewal
// finds it on the promoted replica, nobody else gets it, its fencing counter
// goes on); a holder whose lease runs out before the failover ends is told
// it lost the lock before anyone else can take it.
func TestSentinel(t *testing.T) {
	g := testredis.StartSentinel(t, testredis.SentinelOptions{DownAfter: 500 * time.Millisecond, Why: topologyWhy})

	t.Run("Conformance", func(t *testing.T) {
		c := failoverClient(t, g)
		l := newLocker(t, c, &redislock.Options{TTL: time.Second})
		conformance(t, l, c)
	})

	t.Run("Failover", func(t *testing.T) {
		ctx := ctxT(t, 40*time.Second)
		const longTTL, shortTTL = 6 * time.Second, 400 * time.Millisecond
		long := newLocker(t, failoverClient(t, g), &redislock.Options{TTL: longTTL})
		short := newLocker(t, failoverClient(t, g), &redislock.Options{TTL: shortTTL})
		// other contends from a client of its own; its subscription is
		// opened before the failover and must follow it.
		other := newLocker(t, failoverClient(t, g), &redislock.Options{TTL: longTTL})

		// Open other's subscription with one hand-off on the old master.
		warm := mustAcquire(t, ctx, long.Mutex("failover-warm"))
		served := make(chan error, 1)
		go func() {
			h, err := other.Mutex("failover-warm").Acquire(ctx)
			if err == nil {
				err = h.Release(ctx)
			}
			served <- err
		}()
		waitQueued(t, ctx, g.Master, long.Mutex("failover-warm").Key())
		warm.Release(ctx)
		if err := <-served; err != nil {
			t.Fatalf("hand-off before the failover: %v", err)
		}

		mLong, mShort := long.Mutex("failover-long"), short.Mutex("failover-short")
		hLong := mustAcquire(t, ctx, mLong)
		hShort := mustAcquire(t, ctx, mShort)
		// Both locks are on the replica before the master dies.
		for _, key := range []string{mLong.Key(), mShort.Key()} {
			if err := waitReplicated(g, key); err != nil {
				t.Fatal(err)
			}
		}

		killed := time.Now()
		g.Master.Kill()

		// A contender tries the short lock all along: when it gets it,
		// the short holder must have been told already.
		type taken struct {
			h          *redislock.Held
			holderLost bool
		}
		shortTaken := make(chan taken, 1)
		go func() {
			for ctx.Err() == nil {
				h, err := other.Mutex("failover-short").Acquire(ctx)
				if err == nil {
					shortTaken <- taken{h.(*redislock.Held), hShort.Lost().Err() != nil}
					return
				}
				time.Sleep(20 * time.Millisecond) // Redis unavailable: try again
			}
			close(shortTaken)
		}()

		// The short lease cannot outlive the failover (which takes at
		// least DownAfter): its holder is told within its TTL.
		select {
		case <-hShort.Lost().Done():
		case <-time.After(5 * shortTTL):
			t.Fatal("short-lease holder not told it lost the lock while the master was down")
		}
		shortLost := time.Now()
		if d := shortLost.Sub(killed); d > shortTTL {
			t.Errorf("short-lease loss reported %v after the master died, want within the TTL %v", d, shortTTL)
		}
		if c := context.Cause(hShort.Lost()); !errors.Is(c, caesura.ErrLockLost) || !errors.Is(c, redislock.ErrLeaseExpired) {
			t.Errorf("short-lease loss cause: got %v, want ErrLockLost and ErrLeaseExpired", c)
		}

		if err := g.WaitMaster(g.Replica.Addr(), 20*time.Second); err != nil {
			t.Fatalf("failover: %v", err)
		}
		t.Logf("failover done %v after the master died", time.Since(killed))

		// Nobody could take the short lock before its holder knew.
		tk, ok := <-shortTaken
		if !ok {
			t.Fatal("the expired short lock was not taken after the failover")
		}
		if !tk.holderLost {
			t.Error("the short lock was taken before its holder was told it lost it")
		}
		if f := tk.h.Token(); f <= hShort.Token() {
			t.Errorf("fencing token after the failover %d, want above %d", f, hShort.Token())
		}
		tk.h.Release(ctx)
		if err := hShort.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
			t.Errorf("Release of the lost short lock: got %v, want ErrNotHeld", err)
		}

		// The long lease outlives the failover: renewal reaches the
		// promoted replica and the holder keeps the lock.
		before, err := g.Replica.Do("PTTL", mLong.Key())
		if err != nil {
			t.Fatal(err)
		}
		if err := testredis.WaitFor(longTTL, func() error {
			v, err := g.Replica.Do("PTTL", mLong.Key())
			if err != nil {
				return err
			}
			if pttl(v) <= pttl(before) {
				return errors.New("the long lease was not renewed on the new master")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := hLong.Lost().Err(); err != nil {
			t.Fatalf("the long-lease holder lost its lock across the failover: %v", context.Cause(hLong.Lost()))
		}
		if _, err := other.Mutex("failover-long").TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
			t.Fatalf("TryAcquire of the held long lock after the failover: got %v, want ErrNotAcquired", err)
		}

		// Hand-off on the new master, to a waiter whose subscription
		// began on the old one.
		got := make(chan *redislock.Held, 1)
		go func() {
			h, err := other.Mutex("failover-long").Acquire(ctx)
			if err != nil {
				t.Errorf("waiter after the failover: %v", err)
				close(got)
				return
			}
			got <- h.(*redislock.Held)
		}()
		waitQueued(t, ctx, g.Replica, mLong.Key())
		released := time.Now()
		if err := hLong.Release(ctx); err != nil {
			t.Fatalf("Release of the long lock after the failover: %v", err)
		}
		select {
		case h := <-got:
			if h == nil {
				t.FailNow()
			}
			t.Logf("hand-off on the new master took %v", time.Since(released))
			if h.Token() <= hLong.Token() {
				t.Errorf("fencing token after the failover %d, want above %d", h.Token(), hLong.Token())
			}
			if err := h.Release(ctx); err != nil {
				t.Error(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("waiter not served within 5s of the release on the new master")
		}
	})
}

// waitQueued waits until someone queues for key on s.
func waitQueued(t *testing.T, ctx context.Context, s *testredis.Server, key string) {
	t.Helper()
	for {
		if v, err := s.Do("GET", key); err == nil && stateOf(v).queued > 0 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("nobody queued for %q", key)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitReplicated waits until the replica of g has key's owner and fence as
// the master has them.
func waitReplicated(g *testredis.Sentinel, key string) error {
	v, err := g.Master.Do("GET", key)
	if err != nil {
		return err
	}
	want, _ := v.(string)
	if want == "" {
		return fmt.Errorf("master has no %q", key)
	}
	return testredis.WaitFor(5*time.Second, func() error {
		v, err := g.Replica.Do("GET", key)
		if err != nil {
			return err
		}
		got, _ := v.(string)
		if a, b := parseState(got), parseState(want); a.owner != b.owner || a.fence != b.fence {
			return fmt.Errorf("replica has %q as %v, master as %v", key, got, want)
		}
		return nil
	})
}

// clusterScriptCalls returns the number of script calls (FCALL, EVALSHA and EVAL)
// every node of c served.
func clusterScriptCalls(t *testing.T, c *testredis.Cluster) int {
	t.Helper()
	n := 0
	for _, s := range c.Nodes {
		info, err := s.Do("INFO", "commandstats")
		if err != nil {
			t.Fatal(err)
		}
		str, _ := info.(string)
		n += scriptCallsIn(str)
	}
	return n
}

// TestCluster runs the conformance suite through a Cluster client, and
// checks that keys sharing a hash tag are taken in one script call while
// keys of several slots are taken one slot after another, in key order.
func TestCluster(t *testing.T) {
	cl := testredis.StartCluster(t, testredis.ClusterOptions{Why: topologyWhy})
	client := func(t *testing.T) *redis.ClusterClient {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), DialTimeout: 200 * time.Millisecond})
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("Conformance", func(t *testing.T) {
		c := client(t)
		l := newLocker(t, c, &redislock.Options{TTL: time.Second})
		conformance(t, l, c)
	})

	t.Run("LibraryOnEveryMaster", func(t *testing.T) {
		ctx := ctxT(t, 10*time.Second)
		l := newLocker(t, client(t), nil)
		if err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			return yield(l.Mutex("lib"))
		}); err != nil {
			t.Fatal(err)
		}
		// The first FCALL that found no library loaded it on every master,
		// so no other master needs a load of its own.
		for i, n := range cl.Nodes {
			libs, err := n.Do("FUNCTION", "LIST")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(fmt.Sprint(libs), redislock.LibraryName) {
				t.Errorf("master %d has libraries %v, want %s", i, libs, redislock.LibraryName)
			}
		}
	})

	t.Run("HashTagOneCall", func(t *testing.T) {
		ctx := ctxT(t, 20*time.Second)
		c := client(t)
		l := newLocker(t, c, nil)
		locks := []caesura.Lock{l.Mutex("{user}:a"), l.Mutex("{user}:b"), l.Mutex("{user}:c")}
		run := func() (calls, released int) {
			t.Helper()
			before := clusterScriptCalls(t, cl)
			err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
				if err := yield(locks...); err != nil {
					return err
				}
				calls = clusterScriptCalls(t, cl) - before
				for i, lk := range locks {
					if _, err := lk.(caesura.TryLocker).TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
						t.Errorf("key %d not held inside the scope: %v", i, err)
					}
				}
				before = clusterScriptCalls(t, cl)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return calls, clusterScriptCalls(t, cl) - before
		}
		run() // loads the scripts on the node
		if acq, rel := run(); acq != 1 || rel != 1 {
			t.Errorf("Run with a yield of 3 keys sharing a hash tag: %d script calls to acquire, %d to release; want 1 and 1", acq, rel)
		}
		// The keys share a node: the one serving the tag's slot.
		slot, err := c.ClusterKeySlot(ctx, "{user}").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, lk := range locks {
			if s, _ := c.ClusterKeySlot(ctx, lk.Key()).Result(); s != slot {
				t.Errorf("key %q in slot %d, want %d", lk.Key(), s, slot)
			}
		}
		// Batch release through the Batcher: one call too.
		hs, err := l.AcquireBatch(ctx, locks)
		if err != nil {
			t.Fatal(err)
		}
		before := clusterScriptCalls(t, cl)
		if err := l.ReleaseBatch(ctx, hs); err != nil {
			t.Fatal(err)
		}
		if got := clusterScriptCalls(t, cl) - before; got != 1 {
			t.Errorf("release of 3 keys sharing a hash tag: %d script calls, want 1", got)
		}
	})

	t.Run("CrossSlot", func(t *testing.T) {
		ctx := ctxT(t, 20*time.Second)
		c := client(t)
		l := newLocker(t, c, nil)
		// Three slots on three nodes ({a} 15495, {b} 3300, {c} 7365);
		// sorted by key they make the runs [{a}:w {a}:x] [{b}:y] [{c}:z].
		locks := []caesura.Lock{l.Mutex("{a}:w"), l.Mutex("{a}:x"), l.Mutex("{b}:y"), l.Mutex("{c}:z")}
		nodes := map[string]bool{}
		for _, tag := range []string{"{a}", "{b}", "{c}"} {
			v, err := cl.Nodes[0].Do("CLUSTER", "KEYSLOT", tag)
			if err != nil {
				t.Fatal(err)
			}
			// The node serving the slot answers GET; the others say MOVED.
			for _, s := range cl.Nodes {
				if _, err := s.Do("GET", tag); err == nil {
					nodes[s.Addr()] = true
				}
			}
			t.Logf("%s: slot %v", tag, v)
		}
		if len(nodes) != 3 {
			t.Fatalf("the tags fall on %d nodes, want 3", len(nodes))
		}
		hs, got := warmBatch(t, ctx, l, locks, func() int { return clusterScriptCalls(t, cl) })
		if got != 3 {
			t.Errorf("batch over 3 slots: %d script calls, want 3 (one per run of a slot)", got)
		}
		for i, h := range hs {
			if _, err := locks[i].(caesura.TryLocker).TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
				t.Errorf("key %d not held after the batch: %v", i, err)
			}
			if k := h.(*redislock.Held).Key(); k != locks[i].Key() {
				t.Errorf("held %d is %q, want %q", i, k, locks[i].Key())
			}
		}
		if err := l.ReleaseBatch(ctx, hs); err != nil {
			t.Fatal(err)
		}

		// All or nothing across slots: with the last slot's key taken,
		// the runs taken before it are given back.
		blocker := mustAcquire(t, ctx, locks[3].(*redislock.Mutex))
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if _, err := l.AcquireBatch(short, locks); !errors.Is(err, caesura.ErrNotAcquired) {
			t.Fatalf("batch with the last slot taken: got %v, want ErrNotAcquired", err)
		}
		for i, lk := range locks[:3] {
			h, err := lk.(caesura.TryLocker).TryAcquire(ctx)
			if err != nil {
				t.Fatalf("key %d held after a failed cross-slot batch: %v", i, err)
			}
			h.Release(ctx)
		}
		// A waiting batch holds the earlier runs and gets the rest on
		// release.
		done := make(chan error, 1)
		go func() {
			hs, err := l.AcquireBatch(ctx, locks)
			if err == nil {
				err = l.ReleaseBatch(ctx, hs)
			}
			done <- err
		}()
		if err := testredis.WaitFor(5*time.Second, func() error {
			h, err := locks[0].(caesura.TryLocker).TryAcquire(ctx)
			if err == nil {
				h.Release(ctx)
				return errors.New("the first run is not held yet")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		blocker.Release(ctx)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("cross-slot batch not served within 5s of the release")
		}
	})

	// Random cross-slot batches from two Lockers (as two processes):
	// mutual exclusion per key, and no deadlock between batches that take
	// their slots one after another.
	t.Run("CrossSlotStress", func(t *testing.T) {
		ctx := ctxT(t, 30*time.Second)
		ls := []*redislock.Locker{newLocker(t, client(t), nil), newLocker(t, client(t), nil)}
		const keys, workers, rounds = 8, 6, 15
		names := make([]string, keys)
		for i := range names {
			names[i] = fmt.Sprintf("{s%d}:k", i%4) + strconv.Itoa(i) // 4 slots, 2 keys each
		}
		var inUse [keys]atomic.Int32
		var wg sync.WaitGroup
		var batches atomic.Int32
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l := ls[w%2]
				r := rand.New(rand.NewPCG(uint64(w), 11))
				for range rounds {
					idx := r.Perm(keys)[:1+r.IntN(4)]
					slices.Sort(idx)
					var locks []caesura.Lock
					for _, i := range idx {
						locks = append(locks, l.Mutex(names[i]))
					}
					err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
						if err := yield(locks...); err != nil {
							return err
						}
						for _, i := range idx {
							if inUse[i].Add(1) != 1 {
								t.Errorf("key %q held twice", names[i])
							}
						}
						time.Sleep(200 * time.Microsecond)
						for _, i := range idx {
							inUse[i].Add(-1)
						}
						return nil
					})
					if err != nil {
						t.Error(err)
						return
					}
					batches.Add(1)
				}
			}()
		}
		wg.Wait()
		if got := batches.Load(); got != workers*rounds {
			t.Fatalf("%d batches done, want %d", got, workers*rounds)
		}
	})
}

// pttl reads a reply of testredis's Do("PTTL", key).
func pttl(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
