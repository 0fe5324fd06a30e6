package redisbench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bsm "github.com/bsm/redislock"
	"github.com/caesura-go/caesura"
	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"github.com/redis/rueidis/rueidislock"
	"go.uber.org/goleak"

	"github.com/caesura-go/caesura/redislock"
)

const workerEnv = "REDISBENCH_WORKER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(workerEnv); spec != "" {
		os.Exit(worker(spec))
	}
	goleak.VerifyTestMain(m)
}

// impl is one lock library behind a blocking lock call.
type impl struct {
	name string
	// make returns the lock function on the server of client c. The
	// go-redis libraries use c, whose hooks count their commands; the
	// others open a client of their own to c's address and count into cnt
	// (which may be nil).
	make func(tb testing.TB, c *redis.Client, cnt *counter) lockFunc
}

type lockFunc func(ctx context.Context, key string) (unlock func(context.Context) error, err error)

const ttl = 8 * time.Second

// The libraries compared, by name (see implNamed): caesura, fenced (the
// default) and unfenced (Options.Unfenced, no fencing tokens, as the peers
// have none); redsync v4 with
// its default retry (32 tries 50-250ms apart) and tuned to retry every 1ms
// (up to 100000 tries, so that no contended wait gives up); bsm/redislock
// with a linear backoff of 100ms and of 1ms; rueidislock on one key per lock
// (KeyMajority 1, the setting its README gives for one Redis), waiting for
// client-side caching invalidations (see rueidisImpl).
var impls = []impl{
	{"caesura", caesuraImpl(redislock.Options{TTL: ttl})},
	// A prefix of its own: the fenced Locker's free keys keep their fencing
	// counter for a lease, and the unfenced one would take those through
	// the script (as it should) where a benchmark reuses key names.
	{"caesura-unfenced", caesuraImpl(redislock.Options{TTL: ttl, Unfenced: true, Prefix: "caesura:unfenced:"})},
	{"redsync-default", redsyncImpl()},
	{"redsync-1ms", redsyncImpl(redsync.WithRetryDelay(time.Millisecond), redsync.WithTries(100000))},
	{"bsm-linear100ms", bsmImpl(100 * time.Millisecond)},
	{"bsm-linear1ms", bsmImpl(time.Millisecond)},
	{"rueidislock", rueidisImpl},
}

// implNamed returns the impl called name.
func implNamed(name string) impl {
	for _, im := range impls {
		if im.name == name {
			return im
		}
	}
	panic("redisbench: no impl " + name)
}

// implsNamed returns the impls called names, in that order.
func implsNamed(names ...string) []impl {
	out := make([]impl, len(names))
	for i, n := range names {
		out[i] = implNamed(n)
	}
	return out
}

// caesuraImpl is redislock with opts: Acquire and Release of a Mutex.
func caesuraImpl(opts redislock.Options) func(tb testing.TB, c *redis.Client, _ *counter) lockFunc {
	return func(tb testing.TB, c *redis.Client, _ *counter) lockFunc {
		rl, err := redislock.New(c, &opts)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { rl.Close() })
		return mutexLock(rl)
	}
}

// mutexLock acquires and releases rl's Mutexes.
func mutexLock(rl *redislock.Locker) lockFunc {
	return func(ctx context.Context, key string) (func(context.Context) error, error) {
		h, err := rl.Mutex(key).Acquire(ctx)
		if err != nil {
			return nil, err
		}
		return h.Release, nil
	}
}

func redsyncImpl(opts ...redsync.Option) func(tb testing.TB, c *redis.Client, _ *counter) lockFunc {
	return func(tb testing.TB, c *redis.Client, _ *counter) lockFunc {
		rs := redsync.New(goredis.NewPool(c))
		opts := append([]redsync.Option{redsync.WithExpiry(ttl)}, opts...)
		return func(ctx context.Context, key string) (func(context.Context) error, error) {
			m := rs.NewMutex(key, opts...)
			if err := m.LockContext(ctx); err != nil {
				return nil, err
			}
			return func(ctx context.Context) error { _, err := m.UnlockContext(ctx); return err }, nil
		}
	}
}

// rueidisImpl is rueidislock on a rueidis client of its own. Its release
// (the cancel function) returns once the key is deleted.
//
// NoLoopTracking stays off (rueidislock's default), although its README
// advises it for Redis 7.0.5 and later: with it, a waiter is woken only by
// other clients' writes, and on a loaded machine a WithContext call whose
// own acquire timed out (TryNextAfter, 20ms) after the server had set the
// key waited forever for an uncontended key (seen in BenchmarkUncontended:
// the key is deleted by the same client, which NOLOOP does not notify).
func rueidisImpl(tb testing.TB, c *redis.Client, cnt *counter) lockFunc {
	lk, err := rueidislock.NewLocker(rueidislock.LockerOption{
		ClientOption: rueidis.ClientOption{InitAddress: []string{c.Options().Addr}},
		KeyMajority:  1,
		KeyValidity:  ttl,
		ClientBuilder: func(o rueidis.ClientOption) (rueidis.Client, error) {
			rc, err := rueidis.NewClient(o)
			if err != nil || cnt == nil {
				return rc, err
			}
			return countingRueidis{rc, cnt}, nil
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(lk.Close)
	return func(ctx context.Context, key string) (func(context.Context) error, error) {
		_, cancel, err := lk.WithContext(ctx, key)
		if err != nil {
			return nil, err
		}
		return func(context.Context) error { cancel(); return nil }, nil
	}
}

// countingRueidis counts the commands sent through a rueidis client as the
// go-redis hook does.
type countingRueidis struct {
	rueidis.Client
	cnt *counter
}

func (c countingRueidis) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.cnt.add(cmd.Commands()[0], 1)
	return c.Client.Do(ctx, cmd)
}

func (c countingRueidis) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	for _, cmd := range cmds {
		c.cnt.add(cmd.Commands()[0], 1)
	}
	return c.Client.DoMulti(ctx, cmds...)
}

func bsmImpl(backoff time.Duration) func(tb testing.TB, c *redis.Client, _ *counter) lockFunc {
	return func(tb testing.TB, c *redis.Client, _ *counter) lockFunc {
		bl := bsm.New(c)
		return func(ctx context.Context, key string) (func(context.Context) error, error) {
			l, err := bl.Obtain(ctx, key, ttl, &bsm.Options{RetryStrategy: bsm.LinearBackoff(backoff)})
			if err != nil {
				return nil, err
			}
			return l.Release, nil
		}
	}
}

// BenchmarkUncontended: one goroutine, lock + release, distinct keys.
// server-µs/op is the time Redis spent in the commands sent (INFO
// commandstats).
func BenchmarkUncontended(b *testing.B) {
	s := startServer(b)
	ctx := context.Background()
	stats := s.client(b, nil)
	for _, im := range implsNamed("caesura", "caesura-unfenced", "redsync-default", "bsm-linear100ms", "rueidislock") {
		b.Run(im.name, func(b *testing.B) {
			cnt := &counter{}
			lock := im.make(b, s.client(b, cnt), cnt)
			unlock, _ := lock(ctx, "warm") // load scripts
			unlock(ctx)
			cnt.n.Store(0)
			before := commandUsec(b, stats)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				unlock, err := lock(ctx, "u"+strconv.Itoa(i%1024))
				if err != nil {
					b.Fatal(err)
				}
				if err := unlock(ctx); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(cnt.n.Load())/float64(i), "cmds/op")
			b.ReportMetric(serverMicros(before, commandUsec(b, stats), cnt, i), "server-µs/op")
		})
	}
	b.Run("caesura-Run", func(b *testing.B) {
		cnt := &counter{}
		rl, _ := redislock.New(s.client(b, cnt), &redislock.Options{TTL: ttl})
		defer rl.Close()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			m := rl.Mutex("r" + strconv.Itoa(i%1024))
			err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error { return yield(m) })
			if err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(cnt.n.Load())/float64(i), "cmds/op")
	})
}

// BenchmarkEightKeys: acquire 8 keys, then release them. acquire-µs is the
// mean time to hold all 8.
func BenchmarkEightKeys(b *testing.B) {
	s := startServer(b)
	ctx := context.Background()
	keys := make([]string, 8)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	run := func(b *testing.B, cnt *counter, acquire func() (release func())) {
		acquire()() // warm up
		cnt.n.Store(0)
		b.ReportAllocs()
		var acq time.Duration
		n := 0
		for b.Loop() {
			t0 := time.Now()
			release := acquire()
			acq += time.Since(t0)
			release()
			n++
		}
		b.ReportMetric(float64(acq.Microseconds())/float64(n), "acquire-µs")
		b.ReportMetric(float64(cnt.n.Load())/float64(n), "cmds/op")
	}
	b.Run("caesura-batch", func(b *testing.B) {
		cnt := &counter{}
		rl, _ := redislock.New(s.client(b, cnt), &redislock.Options{TTL: ttl})
		defer rl.Close()
		locks := make([]caesura.Lock, len(keys))
		for i, k := range keys {
			locks[i] = rl.Mutex(k)
		}
		run(b, cnt, func() func() {
			hs, err := rl.AcquireBatch(ctx, locks)
			if err != nil {
				b.Fatal(err)
			}
			return func() {
				if err := rl.ReleaseBatch(ctx, hs); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("caesura-Run", func(b *testing.B) {
		cnt := &counter{}
		rl, _ := redislock.New(s.client(b, cnt), &redislock.Options{TTL: ttl})
		defer rl.Close()
		locks := make([]caesura.Lock, len(keys))
		for i, k := range keys {
			locks[i] = rl.Mutex(k)
		}
		// Through the core: one yield of 8 locks; the core releases them
		// one by one.
		run(b, cnt, func() func() {
			ready, done := make(chan error), make(chan error)
			go func() {
				done <- caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
					err := yield(locks...)
					ready <- err
					return err
				})
			}()
			if err := <-ready; err != nil {
				b.Fatal(err)
			}
			return func() {
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	for _, im := range implsNamed("redsync-default", "bsm-linear100ms", "rueidislock") {
		b.Run(im.name+"-sequential", func(b *testing.B) {
			cnt := &counter{}
			lock := im.make(b, s.client(b, cnt), cnt)
			run(b, cnt, func() func() {
				unlocks := make([]func(context.Context) error, len(keys))
				for i, k := range keys {
					u, err := lock(ctx, k)
					if err != nil {
						b.Fatal(err)
					}
					unlocks[i] = u
				}
				return func() {
					for i := len(unlocks) - 1; i >= 0; i-- {
						if err := unlocks[i](ctx); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		})
	}
}

const (
	contenders = 8
	target     = 2000
	hold       = 100 * time.Microsecond
)

func spin(d time.Duration) {
	for t := time.Now(); time.Since(t) < d; {
	}
}

// contend runs one worker's closed loop until the shared counter reaches
// target, calling emit for each acquisition.
func contend(ctx context.Context, lock lockFunc, ctr *redis.Client, key string, w int, emit func(record)) error {
	for {
		r := record{w: w, lock: mono()}
		unlock, err := lock(ctx, key)
		if err != nil {
			return err
		}
		r.got = mono()
		spin(hold)
		r.unlock = mono()
		if err := unlock(ctx); err != nil {
			return err
		}
		r.unlocked = mono()
		emit(r)
		n, err := ctr.Incr(ctx, key+":count").Result()
		if err != nil {
			return err
		}
		if n >= target {
			return nil
		}
	}
}

// BenchmarkContended: 8 goroutines, one key, 100µs hold, closed loop, 2000
// acquisitions per run. Run with -benchtime 1x.
func BenchmarkContended(b *testing.B) {
	s := startServer(b)
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for i := 0; b.Loop(); i++ {
				key := fmt.Sprintf("c:%s:%d:%d", im.name, i, time.Now().UnixNano())
				cnt := &counter{}
				ctr := s.client(b, nil)
				var mu sync.Mutex
				var rs []record
				var wg sync.WaitGroup
				errc := make(chan error, contenders)
				lock := im.make(b, s.client(b, cnt), cnt) // one client and Locker, as in one program
				for w := range contenders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errc <- contend(ctx, lock, ctr, key, w, func(r record) { mu.Lock(); rs = append(rs, r); mu.Unlock() })
					}()
				}
				wg.Wait()
				close(errc)
				for err := range errc {
					if err != nil {
						b.Fatal(err)
					}
				}
				analyze(rs, contenders).report(b, float64(cnt.n.Load())/float64(len(rs)))
			}
		})
	}
	b.Run("caesura-processes", func(b *testing.B) { contendProcesses(b, s, "caesura") })
}

func contendProcesses(b *testing.B, s *server, name string) {
	for i := 0; b.Loop(); i++ {
		key := fmt.Sprintf("p:%s:%d:%d", name, i, time.Now().UnixNano())
		var procs []*exec.Cmd
		var outs []*bufio.Scanner
		var starts []func()
		for w := range contenders {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %d", workerEnv, s.addr, name, key, w))
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			if !sc.Scan() || sc.Text() != "ready" {
				b.Fatalf("worker %d did not start: %q", w, sc.Text())
			}
			procs, outs = append(procs, cmd), append(outs, sc)
			starts = append(starts, func() { fmt.Fprintln(stdin, "go"); stdin.Close() })
		}
		for _, st := range starts {
			st()
		}
		var rs []record
		var cmds int64
		for w, sc := range outs {
			readRecords(sc, &rs, &cmds)
			if err := procs[w].Wait(); err != nil {
				b.Fatalf("worker %d: %v", w, err)
			}
		}
		analyze(rs, contenders).report(b, float64(cmds)/float64(len(rs)))
	}
}

// worker is one contending process: "addr impl key w".
func worker(spec string) int {
	f := strings.Fields(spec)
	w, _ := strconv.Atoi(f[3])
	var im *impl
	for i := range impls {
		if impls[i].name == f[1] {
			im = &impls[i]
		}
	}
	tb := &procTB{}
	defer tb.cleanup()
	cnt := &counter{}
	c := redis.NewClient(&redis.Options{Addr: f[0]})
	c.AddHook(cnt)
	ctr := redis.NewClient(&redis.Options{Addr: f[0]})
	defer c.Close()
	defer ctr.Close()
	lock := im.make(tb, c, cnt)
	ctx := context.Background()
	unlock, err := lock(ctx, f[2]+":warm"+f[3]) // connect, load scripts, subscribe lazily
	if err == nil {
		unlock(ctx)
	}
	cnt.n.Store(0)
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	out := bufio.NewWriter(os.Stdout)
	var rs []record
	if err := contend(ctx, lock, ctr, f[2], w, func(r record) { rs = append(rs, r) }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, r := range rs {
		fmt.Fprintln(out, r)
	}
	fmt.Fprintf(out, "cmds %d\n", cnt.n.Load())
	out.Flush()
	return 0
}

// procTB is the part of testing.TB that impl.make uses, for worker processes.
type procTB struct {
	testing.TB
	fns []func()
}

func (p *procTB) Cleanup(f func())  { p.fns = append(p.fns, f) }
func (p *procTB) Fatal(args ...any) { fmt.Fprintln(os.Stderr, args...); os.Exit(1) }
func (p *procTB) Helper()           {}
func (p *procTB) cleanup() {
	for i := len(p.fns) - 1; i >= 0; i-- {
		p.fns[i]()
	}
}

// TestSmoke runs every library once so that the benchmark bodies stay
// correct under a plain go test.
func TestSmoke(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	for _, im := range impls {
		lock := im.make(t, s.client(t, nil), nil)
		unlock, err := lock(ctx, "smoke:"+im.name)
		if err != nil {
			t.Fatalf("%s: lock: %v", im.name, err)
		}
		unlock2, err := lock(ctx, "smoke:other:"+im.name)
		if err != nil {
			t.Fatalf("%s: second key: %v", im.name, err)
		}
		if err := unlock2(ctx); err != nil {
			t.Fatalf("%s: unlock: %v", im.name, err)
		}
		if err := unlock(ctx); err != nil {
			t.Fatalf("%s: unlock: %v", im.name, err)
		}
	}
}
