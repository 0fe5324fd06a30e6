package redislock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/redis/go-redis/v9"

	"github.com/caesura-go/caesura/internal/testredis"
	"github.com/caesura-go/caesura/redislock"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustAcquire(t *testing.T, ctx context.Context, m *redislock.Mutex) *redislock.Held {
	t.Helper()
	h, err := m.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire %q: %v", m.Key(), err)
	}
	return h.(*redislock.Held)
}

func TestNewOptions(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for _, tc := range []struct {
		name string
		o    *redislock.Options
		ok   bool
	}{
		{"nil options give the defaults", nil, true},
		{"a TTL below 30ms leaves no room for renewal", &redislock.Options{TTL: 10 * time.Millisecond}, false},
		{"a drift of TTL/3 or more would report loss before the first renewal", &redislock.Options{TTL: time.Second, Drift: 400 * time.Millisecond}, false},
		{"a TTL above MaxTTL does not fit a queue entry", &redislock.Options{TTL: redislock.MaxTTL + time.Millisecond}, false},
		{"MaxTTL itself", &redislock.Options{TTL: redislock.MaxTTL}, true},
		{"a negative recheck makes no sense", &redislock.Options{Recheck: -time.Second}, false},
		{"explicit values within bounds", &redislock.Options{TTL: time.Second, Drift: 10 * time.Millisecond, Recheck: 50 * time.Millisecond, Prefix: "x:"}, true},
	} {
		_, err := redislock.New(c, tc.o)
		if (err == nil) != tc.ok {
			t.Errorf("%s: New error %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	if _, err := redislock.New(nil, nil); err == nil {
		t.Error("New(nil client): got nil error, want one")
	}
}

func TestKeyPrefix(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	l, _ := redislock.New(c, nil)
	if got, want := l.Mutex("a").Key(), redislock.DefaultPrefix+"a"; got != want {
		t.Errorf("Key: got %q, want %q", got, want)
	}
	l2, _ := redislock.New(c, &redislock.Options{Prefix: "app:"})
	if got, want := l2.Mutex("a").Key(), "app:a"; got != want {
		t.Errorf("Key with prefix: got %q, want %q", got, want)
	}
}

func TestTryAndStaleToken(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, &redislock.Options{TTL: time.Second})
	ctx := ctxT(t, 10*time.Second)
	m := l.Mutex("try")
	h1 := mustAcquire(t, ctx, m)
	if _, err := m.TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) || errors.Is(err, redislock.ErrUnavailable) {
		t.Fatalf("TryAcquire of a taken lock: got %v, want ErrNotAcquired only", err)
	}
	// Make h1 stale: its key is deleted and another holder takes the lock.
	if err := s.client(t).Del(ctx, m.Key()).Err(); err != nil {
		t.Fatal(err)
	}
	h2x, err := m.TryAcquire(ctx)
	if err != nil {
		t.Fatalf("TryAcquire of a free lock: %v", err)
	}
	h2 := h2x.(*redislock.Held)
	if err := h1.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release of a stale holder: got %v, want ErrNotHeld", err)
	}
	// The stale holder's renewal must not have extended the new lease,
	// nor may its release have freed it.
	if _, err := m.TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("after a stale release the new holder must keep the lock: got %v", err)
	}
	select {
	case <-h1.Lost().Done():
		if c := context.Cause(h1.Lost()); !errors.Is(c, caesura.ErrLockLost) && !errors.Is(c, context.Canceled) {
			t.Fatalf("stale holder's Lost cause: %v", c)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the stale holder's Lost context was not cancelled")
	}
	if err := h2.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := h2.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("second Release: got %v, want ErrNotHeld", err)
	}
}

func TestStaleRenewalCannotExtend(t *testing.T) {
	s := startServer(t)
	// A short TTL so that the stale holder renews (and fails) quickly.
	l := s.locker(t, &redislock.Options{TTL: 90 * time.Millisecond})
	ctx := ctxT(t, 10*time.Second)
	m := l.Mutex("stale")
	h1 := mustAcquire(t, ctx, m)
	c := s.client(t)
	c.Del(ctx, m.Key())
	h2 := mustAcquire(t, ctx, m)
	<-h1.Lost().Done()
	if cause := context.Cause(h1.Lost()); !errors.Is(cause, redislock.ErrStolen) {
		t.Fatalf("stale holder's loss reason: got %v, want ErrStolen", cause)
	}
	owner := readState(ctx, c, m.Key()).owner
	time.Sleep(200 * time.Millisecond) // several renewal periods of both holders
	if got := readState(ctx, c, m.Key()).owner; got != owner || got == "" {
		t.Fatalf("owner changed from %q to %q", owner, got)
	}
	if h2.Lost().Err() != nil {
		t.Fatalf("the new holder lost its lock: %v", context.Cause(h2.Lost()))
	}
	h1.Release(ctx)
	if err := h2.Release(ctx); err != nil {
		t.Fatalf("Release of the new holder: %v", err)
	}
}

func TestRenewedPastTTL(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, &redislock.Options{TTL: 150 * time.Millisecond})
	other := s.locker(t, &redislock.Options{TTL: 150 * time.Millisecond})
	ctx := ctxT(t, 10*time.Second)
	h := mustAcquire(t, ctx, l.Mutex("renew"))
	for range 8 { // 1.2 s: eight TTLs
		time.Sleep(150 * time.Millisecond)
		if _, err := other.Mutex("renew").TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
			t.Fatalf("TryAcquire while the lease is renewed: got %v, want ErrNotAcquired", err)
		}
	}
	if err := h.Lost().Err(); err != nil {
		t.Fatalf("lock lost while renewed: %v", context.Cause(h.Lost()))
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

func TestCrashedHolderFreesAfterTTL(t *testing.T) {
	s := startServer(t)
	const ttl = 400 * time.Millisecond
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+s.Addr()+" crash "+ttl.String())
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != "held" {
		t.Fatalf("child: %v, output %q", err, out)
	}
	exited := time.Now()
	l := s.locker(t, &redislock.Options{TTL: ttl, Recheck: 10 * time.Second})
	ctx := ctxT(t, 10*time.Second)
	h := mustAcquire(t, ctx, l.Mutex("crash"))
	waited := time.Since(exited)
	if waited > ttl+300*time.Millisecond {
		t.Errorf("got the crashed holder's lock after %v, want within TTL %v (+300ms)", waited, ttl)
	}
	if waited < ttl/4 {
		t.Errorf("got the crashed holder's lock after %v: its lease was not respected", waited)
	}
	h.Release(ctx)
}

func TestRedisKilledWhileHeld(t *testing.T) {
	s := startServer(t)
	const ttl = time.Second
	l := s.locker(t, &redislock.Options{TTL: ttl})
	ctx := ctxT(t, 10*time.Second)
	before := time.Now()
	h := mustAcquire(t, ctx, l.Mutex("killed"))
	s.Kill()
	select {
	case <-h.Lost().Done():
	case <-time.After(2 * ttl):
		t.Fatal("Lost was not cancelled after Redis was killed")
	}
	at := time.Since(before)
	if at >= ttl {
		t.Errorf("loss signalled %v after the acquire started, want before the TTL %v ends", at, ttl)
	}
	cause := context.Cause(h.Lost())
	if !errors.Is(cause, caesura.ErrLockLost) || !errors.Is(cause, redislock.ErrLeaseExpired) {
		t.Errorf("Lost cause: got %v, want ErrLockLost and ErrLeaseExpired", cause)
	}
	// Through the core: the function's context is cancelled with the cause.
	s.Restart()
	l2 := s.locker(t, &redislock.Options{TTL: ttl})
	var fnCause error
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l2.Mutex("killed2")); err != nil {
			return err
		}
		s.Kill()
		<-ctx.Done()
		fnCause = context.Cause(ctx)
		return nil
	})
	if !errors.Is(err, caesura.ErrLockLost) || !errors.Is(fnCause, caesura.ErrLockLost) {
		t.Errorf("Run with Redis killed: got %v (cause %v), want ErrLockLost", err, fnCause)
	}
	// Redis is down: a new acquire says so, and not "taken".
	_, err = l2.Mutex("down").Acquire(ctx)
	if !errors.Is(err, redislock.ErrUnavailable) || errors.Is(err, caesura.ErrNotAcquired) {
		t.Errorf("Acquire with Redis down: got %v, want ErrUnavailable only", err)
	}
}

func TestContextEndsWait(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, nil)
	ctx := ctxT(t, 10*time.Second)
	m := l.Mutex("ctx")
	h := mustAcquire(t, ctx, m)
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err := m.Acquire(wctx)
	if !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redislock.ErrUnavailable) {
		t.Fatalf("Acquire ended by the context: got %v, want ErrNotAcquired and DeadlineExceeded", err)
	}
	// The abandoned waiter left the queue: after release the lock is free.
	h.Release(ctx)
	if readState(ctx, s.client(t), m.Key()).queued > 0 {
		t.Fatal("the abandoned waiter is still queued")
	}
	h2, err := m.TryAcquire(ctx)
	if err != nil {
		t.Fatalf("TryAcquire after the waiter gave up: %v", err)
	}
	h2.Release(ctx)
}

// TestWakeUpIsPushed checks that a waiter gets the lock within milliseconds
// of its release while its fallback re-check is 10 s away.
func TestWakeUpIsPushed(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, &redislock.Options{TTL: time.Minute, Recheck: 10 * time.Second})
	ctx := ctxT(t, 20*time.Second)
	m := l.Mutex("push")
	c := s.client(t)
	var lat []time.Duration
	for range 20 {
		h := mustAcquire(t, ctx, m)
		got := make(chan time.Time, 1)
		go func() {
			h2, err := m.Acquire(ctx)
			got <- time.Now()
			if err == nil {
				h2.Release(ctx)
			}
		}()
		for readState(ctx, c, m.Key()).queued == 0 { // wait until it queues
			time.Sleep(time.Millisecond)
		}
		start := time.Now()
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, (<-got).Sub(start))
	}
	slices.Sort(lat)
	t.Logf("release to waiter's return: p50 %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
	if lat[len(lat)/2] > 20*time.Millisecond || lat[len(lat)-1] > 500*time.Millisecond {
		t.Fatalf("wake-up latency p50 %v max %v, want milliseconds (push, not polling)", lat[len(lat)/2], lat[len(lat)-1])
	}
}

// TestNoLostWakeUp races releases against waiters that open the shared
// subscription for the first time (a fresh Locker each round).
func TestNoLostWakeUp(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 60*time.Second)
	holder := s.locker(t, nil)
	for i := range 30 {
		w := s.locker(t, &redislock.Options{TTL: time.Minute, Recheck: 20 * time.Second})
		name := "race" + strconv.Itoa(i)
		h := mustAcquire(t, ctx, holder.Mutex(name))
		done := make(chan error, 1)
		go func() {
			h2, err := w.Mutex(name).Acquire(ctx)
			if err == nil {
				err = h2.Release(ctx)
			}
			done <- err
		}()
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		h.Release(ctx)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("round %d: waiter not woken within 3s of the release (lost wake-up)", i)
		}
		w.Close()
	}
}

// TestSubscriptionReconnect kills the pub/sub connection while a waiter waits:
// it must still get the lock promptly.
func TestSubscriptionReconnect(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, &redislock.Options{TTL: time.Minute, Recheck: 20 * time.Second})
	ctx := ctxT(t, 20*time.Second)
	c := s.client(t)
	m := l.Mutex("reconnect")
	h := mustAcquire(t, ctx, m)
	done := make(chan error, 1)
	go func() {
		h2, err := m.Acquire(ctx)
		if err == nil {
			err = h2.Release(ctx)
		}
		done <- err
	}()
	for readState(ctx, c, m.Key()).queued == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := c.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	h.Release(ctx) // its grant message may be lost with the connection
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("waiter not served within 3s after the subscription was killed")
	}
}

// TestFencingSurvivesExpiry: tokens grow across releases, across locks
// lost to another token, and across the key's expiry, which takes the
// counter with it: the next token comes from the server clock.
func TestFencingSurvivesExpiry(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, &redislock.Options{TTL: 60 * time.Millisecond})
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	m := l.Mutex("fence")
	var last uint64
	for i := range 9 {
		h := mustAcquire(t, ctx, m)
		if h.Token() <= last {
			t.Fatalf("acquisition %d: token %d, want above %d", i, h.Token(), last)
		}
		last = h.Token()
		switch i % 3 {
		case 0:
			h.Release(ctx)
		case 1:
			// Lost from outside: the key is freed, keeping the next token.
			if err := dropOwner(ctx, c, m.Key()); err != nil {
				t.Fatal(err)
			}
			<-h.Lost().Done()
			h.Release(ctx)
		case 2:
			// The key expires, and its counter with it.
			if err := lapse(ctx, c, m.Key()); err != nil {
				t.Fatal(err)
			}
			<-h.Lost().Done()
			h.Release(ctx)
			if n := c.Exists(ctx, m.Key()).Val(); n != 0 {
				t.Fatalf("acquisition %d: the release of a lost lock wrote the key back", i)
			}
		}
	}
	// A free key nobody takes again vanishes when its last lease would
	// have ended.
	h := mustAcquire(t, ctx, m)
	h.Release(ctx)
	if err := testredis.WaitFor(time.Second, func() error {
		if c.Exists(ctx, m.Key()).Val() != 0 {
			return errors.New("the free key is still there")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// commands returns the number of top-level script calls Redis served.
// warmBatch acquires locks with one AcquireBatch, after a first batch that
// loads the scripts (the first use of a script costs a failed FCALL, a
// FUNCTION LOAD and another FCALL once per server), and returns the Helds and the script calls the second batch
// made, as calls counts them.
func warmBatch(t *testing.T, ctx context.Context, l *redislock.Locker, locks []caesura.Lock, calls func() int) ([]caesura.Held, int) {
	t.Helper()
	hs, err := l.AcquireBatch(ctx, locks)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
	before := calls()
	hs, err = l.AcquireBatch(ctx, locks)
	if err != nil {
		t.Fatal(err)
	}
	return hs, calls() - before
}

func scriptCalls(t *testing.T, c *redis.Client) int {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	return scriptCallsIn(info)
}

// scriptCallsIn returns the script calls (FCALL, EVALSHA and EVAL) that an
// INFO commandstats reply counts.
func scriptCallsIn(info string) int {
	return cmdstatIn(info, "fcall", "calls") + cmdstatIn(info, "evalsha", "calls") + cmdstatIn(info, "eval", "calls")
}

func TestBatchOneRoundTrip(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, nil)
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	var locks []caesura.Lock
	for i := range 8 {
		locks = append(locks, l.Mutex("batch"+strconv.Itoa(i)))
	}
	hs, got := warmBatch(t, ctx, l, locks, func() int { return scriptCalls(t, c) })
	if got != 1 {
		t.Errorf("8-key acquire: %d script calls, want 1", got)
	}
	for i, h := range hs {
		if _, err := locks[i].(caesura.TryLocker).TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
			t.Errorf("key %d not held after the batch: %v", i, err)
		}
		if h.(caesura.Fenced).Token() == 0 {
			t.Errorf("key %d: zero fencing token", i)
		}
	}
	before := scriptCalls(t, c)
	if err := l.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
	if got := scriptCalls(t, c) - before; got != 1 {
		t.Errorf("8-key release: %d script calls, want 1", got)
	}
	if err := l.ReleaseBatch(ctx, hs[:1]); !errors.Is(err, caesura.ErrNotHeld) {
		t.Errorf("second ReleaseBatch: got %v, want ErrNotHeld", err)
	}
	// All-or-nothing: with key 5 taken, the batch takes nothing.
	h5 := mustAcquire(t, ctx, locks[5].(*redislock.Mutex))
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := l.AcquireBatch(short, locks); !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("batch with a taken key: got %v, want ErrNotAcquired", err)
	}
	for i, lk := range locks {
		if i == 5 {
			continue
		}
		h, err := lk.(caesura.TryLocker).TryAcquire(ctx)
		if err != nil {
			t.Fatalf("key %d held after a failed batch: %v", i, err)
		}
		h.Release(ctx)
	}
	h5.Release(ctx)
	// A foreign lock is refused.
	if _, err := l.AcquireBatch(ctx, []caesura.Lock{caesura.FromFuncs("x", nil, nil)}); !errors.Is(err, caesura.ErrInvalidLock) {
		t.Errorf("batch with a foreign lock: got %v, want ErrInvalidLock", err)
	}
}

// TestBatchStress runs random multi-key batches from two Lockers (two
// subscriptions, as two processes) against each other, checking mutual
// exclusion per key and that everything finishes (no deadlock).
func TestBatchStress(t *testing.T) {
	s := startServer(t)
	ls := []*redislock.Locker{s.locker(t, &redislock.Options{Recheck: 5 * time.Second}), s.locker(t, &redislock.Options{Recheck: 5 * time.Second})}
	ctx := ctxT(t, 60*time.Second)
	const keys, workers, rounds = 10, 8, 40
	var inUse [keys]atomic.Int32
	var counter [keys]int
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := ls[w%2]
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for range rounds {
				idx := r.Perm(keys)[:1+r.IntN(4)]
				slices.Sort(idx)
				var locks []caesura.Lock
				for _, i := range idx {
					locks = append(locks, l.Mutex("s"+strconv.Itoa(i)))
				}
				hs, err := l.AcquireBatch(ctx, locks)
				if err != nil {
					errc <- err
					return
				}
				for _, i := range idx {
					if inUse[i].Add(1) != 1 {
						errc <- fmt.Errorf("key %d held twice", i)
					}
				}
				for _, i := range idx {
					v := counter[i]
					time.Sleep(50 * time.Microsecond)
					counter[i] = v + 1
				}
				for _, i := range idx {
					inUse[i].Add(-1)
				}
				if err := l.ReleaseBatch(ctx, hs); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	total := 0
	for _, c := range counter {
		total += c
	}
	if total == 0 {
		t.Fatal("no batch ran")
	}
}

// TestFairHandOff checks FIFO hand-off under contention: 8 goroutines on one
// key, each gets its share, and the releaser does not barge back in.
func TestFairHandOff(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, nil)
	ctx := ctxT(t, 60*time.Second)
	m := l.Mutex("fair")
	const workers, per = 8, 25
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				h, err := m.Acquire(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				order = append(order, w)
				mu.Unlock()
				time.Sleep(100 * time.Microsecond)
				if err := h.Release(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	self := 0
	for i := 1; i < len(order); i++ {
		if order[i] == order[i-1] {
			self++
		}
	}
	// With FIFO hand-off a worker re-takes the lock only when nobody else
	// waits (at the start and the end of the run).
	if frac := float64(self) / float64(len(order)); frac > 0.2 {
		t.Errorf("self re-acquisitions %d of %d, want few (FIFO hand-off)", self, len(order))
	}
}

// TestFallbackRecheck makes sure a waiter whose grant message never comes
// (a holder deleted from outside, so no release is published) is served by
// the bounded re-check.
func TestFallbackRecheck(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, &redislock.Options{Recheck: 100 * time.Millisecond})
	ctx := ctxT(t, 10*time.Second)
	m := l.Mutex("recheck")
	h := mustAcquire(t, ctx, m)
	done := make(chan error, 1)
	go func() {
		h2, err := m.Acquire(ctx)
		if err == nil {
			err = h2.Release(ctx)
		}
		done <- err
	}()
	c := s.client(t)
	for readState(ctx, c, m.Key()).queued == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := dropOwner(ctx, c, m.Key()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("waiter not served by the fallback re-check")
	}
	h.Release(ctx)
}

// Through caesura.Run an 8-key yield costs one script call to acquire and,
// through caesura.BatchReleaser, one to release.
func TestRunBatchTwoRoundTrips(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, nil)
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	var locks []caesura.Lock
	for i := range 8 {
		locks = append(locks, l.Mutex("runbatch"+strconv.Itoa(i)))
	}
	run := func() {
		t.Helper()
		if err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error { return yield(locks...) }); err != nil {
			t.Fatal(err)
		}
	}
	run() // loads the scripts
	before := scriptCalls(t, c)
	run()
	if got := scriptCalls(t, c) - before; got != 2 {
		t.Fatalf("Run with an 8-key yield: %d script calls, want 2 (one acquire, one release)", got)
	}
}

// TestManyHeldRenewed holds many locks of one Locker (its one scheduler
// renews them all) past several TTLs, releases every other one, and then
// kills Redis: the rest must be reported lost within the TTL.
func TestManyHeldRenewed(t *testing.T) {
	s := startServer(t)
	const ttl, n = 150 * time.Millisecond, 100
	l := s.locker(t, &redislock.Options{TTL: ttl})
	other := s.locker(t, &redislock.Options{TTL: ttl})
	ctx := ctxT(t, 20*time.Second)
	hs := make([]*redislock.Held, n)
	for i := range hs {
		hs[i] = mustAcquire(t, ctx, l.Mutex("many"+strconv.Itoa(i)))
	}
	held := func(i int) {
		t.Helper()
		if err := hs[i].Lost().Err(); err != nil {
			t.Fatalf("lock %d lost while renewed: %v", i, context.Cause(hs[i].Lost()))
		}
		if _, err := other.Mutex("many" + strconv.Itoa(i)).TryAcquire(ctx); !errors.Is(err, caesura.ErrNotAcquired) {
			t.Fatalf("TryAcquire of renewed lock %d: got %v, want ErrNotAcquired", i, err)
		}
	}
	time.Sleep(4 * ttl)
	for i := range hs {
		held(i)
	}
	for i := 1; i < n; i += 2 {
		if err := hs[i].Release(ctx); err != nil {
			t.Fatalf("Release %d: %v", i, err)
		}
	}
	time.Sleep(3 * ttl)
	for i := 0; i < n; i += 2 {
		held(i)
	}
	killed := time.Now()
	s.Kill()
	for i := 0; i < n; i += 2 {
		select {
		case <-hs[i].Lost().Done():
		case <-time.After(2 * ttl):
			t.Fatalf("lock %d not reported lost after Redis died", i)
		}
		if c := context.Cause(hs[i].Lost()); !errors.Is(c, redislock.ErrLeaseExpired) {
			t.Fatalf("lock %d: loss cause %v, want ErrLeaseExpired", i, c)
		}
	}
	if d := time.Since(killed); d > ttl+50*time.Millisecond {
		t.Errorf("all losses reported %v after Redis died, want within the TTL %v", d, ttl)
	}
}

// TestBatchLarge takes more keys in one batch than a script reads or writes
// in one command (1000), on the fast path and on the general one: every key
// is taken and given back, and fencing counters go on from where they were.
func TestBatchLarge(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, nil)
	other := s.locker(t, nil)
	ctx := ctxT(t, 20*time.Second)
	c := s.client(t)
	const n = 2500
	locks := make([]caesura.Lock, n)
	for i := range locks {
		locks[i] = l.Mutex(fmt.Sprintf("large%05d", i))
	}
	check := func(hs []caesura.Held, fence uint64) {
		t.Helper()
		if len(hs) != n {
			t.Fatalf("batch of %d gave %d handles", n, len(hs))
		}
		for i, h := range hs {
			if got := h.(caesura.Fenced).Token(); got != fence {
				t.Fatalf("key %d: fencing token %d, want %d", i, got, fence)
			}
		}
		for _, i := range []int{0, 999, 1000, 1999, 2000, n - 1} {
			key := locks[i].(*redislock.Mutex).Key()
			if st := readState(ctx, c, key); st.owner == "" {
				t.Fatalf("key %d not owned after the batch", i)
			}
		}
	}
	// Fast path: every key missing; their tokens start from the server
	// clock, read once for the batch.
	hs, err := l.AcquireBatch(ctx, locks)
	if err != nil {
		t.Fatal(err)
	}
	b := hs[0].(caesura.Fenced).Token() - 1 // so that the first token is b+1
	check(hs, b+1)
	if err := l.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
	// General path: a waiter queues on key 1500, so the release of the
	// batch that holds it hands it on.
	hs, err = l.AcquireBatch(ctx, locks)
	if err != nil {
		t.Fatal(err)
	}
	check(hs, b+2)
	mid := other.Mutex("large01500")
	got := make(chan uint64, 1)
	go func() {
		h, err := mid.Acquire(ctx)
		if err != nil {
			t.Error(err)
			got <- 0
			return
		}
		got <- h.(caesura.Fenced).Token()
		h.Release(ctx)
	}()
	for readState(ctx, c, mid.Key()).queued == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := l.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
	if tok := <-got; tok != b+3 {
		t.Fatalf("waiter on key 1500: fencing token %d, want %d", tok, b+3)
	}
	for i, lk := range locks {
		if st := readState(ctx, c, lk.(*redislock.Mutex).Key()); st.owner != "" || st.queued != 0 {
			t.Fatalf("key %d left with %+v", i, st)
		}
	}
	// Counters go on per key: key 1500 had one holder more.
	hs, err = l.AcquireBatch(ctx, locks)
	if err != nil {
		t.Fatal(err)
	}
	if f := hs[1500].(caesura.Fenced).Token(); f != b+4 {
		t.Errorf("key 1500 after its hand-off: fencing token %d, want %d", f, b+4)
	}
	if f := hs[0].(caesura.Fenced).Token(); f != b+3 {
		t.Errorf("key 0: fencing token %d, want %d", f, b+3)
	}
	if err := l.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
	// The general acquire path: key 2200 is held, the batch queues for it
	// and takes everything once it is handed over.
	h2200, err := other.Mutex("large02200").Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batch := make(chan []caesura.Held, 1)
	go func() {
		hs, err := l.AcquireBatch(ctx, locks)
		if err != nil {
			t.Error(err)
		}
		batch <- hs
	}()
	for readState(ctx, c, h2200.(*redislock.Held).Key()).queued == 0 {
		time.Sleep(time.Millisecond)
	}
	if st := readState(ctx, c, locks[0].(*redislock.Mutex).Key()); st.owner != "" {
		t.Fatal("a waiting batch holds key 0, below the key it waits for")
	}
	if err := h2200.Release(ctx); err != nil {
		t.Fatal(err)
	}
	hs = <-batch
	if hs == nil {
		t.FailNow()
	}
	for i, want := range map[int]uint64{0: b + 4, 1500: b + 5, 2200: b + 5, n - 1: b + 4} {
		if f := hs[i].(caesura.Fenced).Token(); f != want {
			t.Errorf("key %d: fencing token %d, want %d", i, f, want)
		}
	}
	if err := l.ReleaseBatch(ctx, hs); err != nil {
		t.Fatal(err)
	}
}

// TestFencingExactDecimal: tokens have 16 digits, past the 14 of Lua's
// number-to-string conversion (which would write an exponent); they stay
// exact through the fast paths and through a hand-off (the general path).
func TestFencingExactDecimal(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, nil)
	other := s.locker(t, nil)
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	m := l.Mutex("big")
	h0 := mustAcquire(t, ctx, m)
	start := h0.Token()
	if start < 1e15 {
		t.Fatalf("first token %d, want the server clock in µs", start)
	}
	if err := h0.Release(ctx); err != nil {
		t.Fatal(err)
	}
	want := start
	for i := range 4 {
		want++
		var h caesura.Held
		if i%2 == 0 {
			h = mustAcquire(t, ctx, m) // the fast path
		} else {
			// The general path: the lock is handed over from a holder.
			h0 := mustAcquire(t, ctx, other.Mutex("big"))
			want++
			got := queued(t, ctx, c, m.Key(), func() (caesura.Held, error) { return m.Acquire(ctx) })
			h0.Release(ctx)
			if h = <-got; h == nil {
				t.FailNow()
			}
		}
		if f := h.(caesura.Fenced).Token(); f != want {
			t.Fatalf("acquisition %d: fencing token %d, want %d", i, f, want)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if st := readState(ctx, c, m.Key()); st.fence != strconv.FormatUint(want+1, 10) {
			t.Fatalf("acquisition %d: next token stored as %q, want %d", i, st.fence, want+1)
		}
	}
}

// TestGrantWakesOneLocker: a hand-off is published on the channel of the
// waiter's Locker only, so other processes waiting for other locks of the
// same prefix are not woken by it.
func TestGrantWakesOneLocker(t *testing.T) {
	s := startServer(t)
	a := s.locker(t, nil)
	b := s.locker(t, nil)
	ctx := ctxT(t, 10*time.Second)
	if redislock.ID(a) == redislock.ID(b) {
		t.Fatal("two Lockers with one id")
	}
	watch := s.client(t).PSubscribe(ctx, redislock.DefaultPrefix+"grants:*")
	defer watch.Close()
	if _, err := watch.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	h := mustAcquire(t, ctx, a.Mutex("one"))
	// a also waits, for another lock: its subscription is up.
	hOther := mustAcquire(t, ctx, b.Mutex("other"))
	otherDone := make(chan error, 1)
	go func() {
		h, err := a.Mutex("other").Acquire(ctx)
		if err == nil {
			err = h.Release(ctx)
		}
		otherDone <- err
	}()
	got := make(chan caesura.Held, 1)
	go func() {
		h, err := b.Mutex("one").Acquire(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- h
	}()
	c := s.client(t)
	for readState(ctx, c, a.Mutex("one").Key()).queued == 0 || readState(ctx, c, b.Mutex("other").Key()).queued == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	hb := <-got
	if hb == nil {
		t.FailNow()
	}
	msg, err := watch.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := redislock.DefaultPrefix + "grants:" + redislock.ID(b); msg.Channel != want {
		t.Fatalf("grant to b's waiter published on %q, want %q", msg.Channel, want)
	}
	hb.Release(ctx)
	hOther.Release(ctx)
	if err := <-otherDone; err != nil {
		t.Fatal(err)
	}
	if msg, err := watch.ReceiveMessage(ctx); err != nil || msg.Channel != redislock.DefaultPrefix+"grants:"+redislock.ID(a) {
		t.Fatalf("grant to a's waiter: %v on %v, want the channel of a", err, msg)
	}
}

// A Held whose Lost nobody asked for makes no context, and a Lost asked for
// after the loss, or after Release, is already cancelled with its cause.
func TestLostAskedAfterTheEnd(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, &redislock.Options{TTL: 90 * time.Millisecond})
	ctx := ctxT(t, 10*time.Second)
	m := l.Mutex("late")
	h := mustAcquire(t, ctx, m)
	s.client(t).Del(ctx, m.Key())
	for !redislock.Ended(h) {
		if ctx.Err() != nil {
			t.Fatal("the loss of a deleted key was never noticed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	lost := h.Lost()
	if lost.Err() == nil {
		t.Fatal("Lost asked for after the loss is not cancelled")
	}
	var le *caesura.LostError
	if cause := context.Cause(lost); !errors.As(cause, &le) || !errors.Is(cause, redislock.ErrStolen) || le.Key != m.Key() {
		t.Fatalf("cause %v, want a LostError of %q matching ErrStolen", cause, m.Key())
	}
	if h.Lost() != lost {
		t.Fatal("Lost returns a new context on the second call")
	}
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release after the loss: got %v, want ErrNotHeld", err)
	}

	h2 := mustAcquire(t, ctx, l.Mutex("late2"))
	if err := h2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if !redislock.Ended(h2) {
		t.Fatal("a released Held is not ended")
	}
	if c := context.Cause(h2.Lost()); !errors.Is(c, context.Canceled) {
		t.Fatalf("Lost after Release: cause %v, want context.Canceled", c)
	}
}

// TestOnLost: the function registered with OnLost (what the core uses
// instead of watching Lost) is called for a loss, with the cause Lost's
// context gets, at once when the loss came first, and never for a release.
func TestOnLost(t *testing.T) {
	s := startServer(t)
	l := s.locker(t, &redislock.Options{TTL: 300 * time.Millisecond})
	ctx := ctxT(t, 10*time.Second)
	c := s.client(t)
	notified := func() (chan error, func(error)) {
		ch := make(chan error, 2)
		return ch, func(cause error) { ch <- cause }
	}

	h := mustAcquire(t, ctx, l.Mutex("released"))
	ch, f := notified()
	h.OnLost(f)
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case cause := <-ch:
		t.Fatalf("OnLost's function called for a release, with %v", cause)
	case <-time.After(400 * time.Millisecond): // past a renewal and the lease
	}

	h = mustAcquire(t, ctx, l.Mutex("stolen"))
	ch, f = notified()
	h.OnLost(f)
	if err := c.Del(ctx, l.Mutex("stolen").Key()).Err(); err != nil {
		t.Fatal(err)
	}
	var cause error
	select {
	case cause = <-ch:
	case <-ctx.Done():
		t.Fatal("OnLost's function never called after the key was deleted")
	}
	if !errors.Is(cause, redislock.ErrStolen) || !errors.Is(cause, caesura.ErrLockLost) {
		t.Errorf("cause %v, want a LostError matching ErrStolen", cause)
	}
	if got := context.Cause(h.Lost()); got != cause {
		t.Errorf("Lost's cause %v, not OnLost's %v", got, cause)
	}
	ch2, g := notified()
	h.OnLost(g) // registered after the loss: called at once
	select {
	case late := <-ch2:
		if late != cause {
			t.Errorf("late registration got %v, want %v", late, cause)
		}
	case <-ctx.Done():
		t.Fatal("OnLost after the loss never called its function")
	}
	if len(ch) != 0 {
		t.Error("OnLost's first function called twice")
	}
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Errorf("Release of a lost lock: %v, want ErrNotHeld", err)
	}
}
