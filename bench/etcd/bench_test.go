// Package etcdbench compares caesura's etcd backend with etcd's own
// concurrency.Mutex, side by side on one embedded etcd server (default
// fsync, 127.0.0.1, data in a temporary directory):
//
//	cd bench/etcd && GOWORK=off go test -run '^$' -bench . -benchmem -count 5 | tee new.txt
//	benchstat new.txt
//
// Contended benchmarks report hand-off latency (from the start of a release
// to the return of the next holder's acquire) and the FIFO fraction (the
// share of acquisitions that went to the longest-waiting contender).
package etcdbench

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/etcdlock"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

var server struct {
	once     sync.Once
	dir      string
	e        *embed.Etcd
	endpoint string
	err      error
}

type leakCheckedM struct{ m *testing.M }

func (x leakCheckedM) Run() int {
	code := x.m.Run()
	if server.e != nil {
		server.e.Close()
	}
	if server.dir != "" {
		_ = os.RemoveAll(server.dir)
	}
	return code
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(leakCheckedM{m},
		// Peer HTTP connections of the embedded server; not ours.
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
		goleak.IgnoreAnyFunction("net/http.(*connReader).backgroundRead"),
	)
}

func startServer() error {
	server.once.Do(func() {
		server.dir, server.err = os.MkdirTemp("", "etcdbench-")
		if server.err != nil {
			return
		}
		cfg := embed.NewConfig()
		cfg.Dir = server.dir
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		var peer, client *url.URL
		if peer, server.err = freeURL(); server.err != nil {
			return
		}
		if client, server.err = freeURL(); server.err != nil {
			return
		}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
		cfg.InitialCluster = cfg.Name + "=" + peer.String()
		if server.e, server.err = embed.StartEtcd(cfg); server.err != nil {
			return
		}
		select {
		case <-server.e.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			server.err = fmt.Errorf("etcd not ready after 30s")
		}
		server.endpoint = client.String()
	})
	return server.err
}

func freeURL() (*url.URL, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	return url.Parse("http://" + ln.Addr().String())
}

func newClient(tb testing.TB) *clientv3.Client {
	tb.Helper()
	if err := startServer(); err != nil {
		tb.Fatalf("start etcd: %v", err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{server.endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

var run atomic.Int64

// prefix returns an etcd prefix unique to one benchmark run.
func prefix(b *testing.B) string {
	return fmt.Sprintf("/bench/%d/%s/", run.Add(1), b.Name())
}

// locker is one way to take and give back one lock.
type locker interface {
	lock(ctx context.Context) error
	unlock(ctx context.Context) error
}

type mutexLocker struct{ m *concurrency.Mutex }

func (x mutexLocker) lock(ctx context.Context) error   { return x.m.Lock(ctx) }
func (x mutexLocker) unlock(ctx context.Context) error { return x.m.Unlock(ctx) }

type caesuraLocker struct {
	l caesura.Lock
	h caesura.Held
}

func (x *caesuraLocker) lock(ctx context.Context) (err error) {
	x.h, err = x.l.Acquire(ctx)
	return err
}
func (x *caesuraLocker) unlock(ctx context.Context) error { return x.h.Release(ctx) }

// impl makes n contenders' lockers for one key.
type impl struct {
	name string
	make func(tb testing.TB, key string, n int) []locker
}

var impls = []impl{
	{"Mutex", func(b testing.TB, key string, n int) []locker {
		c := newClient(b)
		var ls []locker
		for range n { // one session each: a Mutex is reentrant within a session
			s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			ls = append(ls, mutexLocker{concurrency.NewMutex(s, key)})
		}
		return ls
	}},
	{"etcdlock", func(b testing.TB, key string, n int) []locker {
		c := newClient(b)
		l, err := etcdlock.New(c, etcdlock.WithPrefix("/bench/"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l.Close(context.Background()) })
		var ls []locker
		for range n { // one Locker (one session) shared, as goroutines of one process would
			ls = append(ls, &caesuraLocker{l: l.Mutex(key)})
		}
		return ls
	}},
}

// BenchmarkUncontended: one lock, acquire then release, one goroutine.
func BenchmarkUncontended(b *testing.B) {
	ctx := context.Background()
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) {
			x := im.make(b, prefix(b)+"k", 1)[0]
			if err := x.lock(ctx); err != nil { // warm up: session, streams
				b.Fatal(err)
			}
			if err := x.unlock(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := x.lock(ctx); err != nil {
					b.Fatal(err)
				}
				if err := x.unlock(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("etcdlock-Run", func(b *testing.B) {
		c := newClient(b)
		l, err := etcdlock.New(c, etcdlock.WithPrefix(prefix(b)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l.Close(context.Background()) })
		m := l.Mutex("k")
		fn := func(ctx context.Context, yield caesura.Yield) error { return yield(m) }
		if err := caesura.Run(ctx, fn); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if err := caesura.Run(ctx, fn); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEightKeys: eight free locks taken (and then released) by one
// goroutine: eight Mutexes in sequence against one caesura yield. It also
// reports the acquire part alone (acquire-ms/op).
func BenchmarkEightKeys(b *testing.B) {
	ctx := context.Background()
	b.Run("Mutex-sequential", func(b *testing.B) {
		c := newClient(b)
		s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		p := prefix(b)
		var ms []*concurrency.Mutex
		for i := range 8 {
			ms = append(ms, concurrency.NewMutex(s, fmt.Sprintf("%sk%d", p, i)))
		}
		var acquire time.Duration
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			start := time.Now()
			for _, m := range ms {
				if err := m.Lock(ctx); err != nil {
					b.Fatal(err)
				}
			}
			acquire += time.Since(start)
			for i := len(ms) - 1; i >= 0; i-- {
				if err := ms[i].Unlock(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(acquire.Microseconds())/1000/float64(b.N), "acquire-ms/op")
	})
	b.Run("etcdlock-yield", func(b *testing.B) {
		c := newClient(b)
		l, err := etcdlock.New(c, etcdlock.WithPrefix(prefix(b)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l.Close(context.Background()) })
		var ls []caesura.Lock
		for i := range 8 {
			ls = append(ls, l.Mutex(fmt.Sprintf("k%d", i)))
		}
		var acquire time.Duration
		var start time.Time
		fn := func(ctx context.Context, yield caesura.Yield) error {
			start = time.Now()
			err := yield(ls...)
			acquire += time.Since(start)
			return err
		}
		if err := caesura.Run(ctx, fn); err != nil {
			b.Fatal(err)
		}
		acquire = 0
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if err := caesura.Run(ctx, fn); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(acquire.Microseconds())/1000/float64(b.N), "acquire-ms/op")
	})
}

// BenchmarkContended: 8 contenders on one lock, zero hold, closed loop. One
// op is one acquisition. Reports acquisitions per second, hand-off p50 and
// p99, and the FIFO fraction.
func BenchmarkContended(b *testing.B) {
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) { contend(b, im, 0) })
	}
}

// BenchmarkHandOff is BenchmarkContended with the hold of the other
// backends' hand-off benchmarks (shared/research/measured-peers.md): 8
// contenders, one lock, a 100 µs busy-wait hold, closed loop. One op is one
// acquisition; run with a fixed count (-benchtime 400x).
func BenchmarkHandOff(b *testing.B) {
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) { contend(b, im, 100*time.Microsecond) })
	}
}

// contend runs 8 contenders of im on one lock in a closed loop, b.N
// acquisitions in all, each holding the lock for hold (busy-waiting), and
// reports acq/s, the hand-off p50 and p99 (the start of a release to the
// return of the next acquire) and the FIFO fraction.
func contend(b *testing.B, im impl, hold time.Duration) {
	const contenders = 8
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	xs := im.make(b, prefix(b)+"k", contenders)
	var (
		mu      sync.Mutex
		events  []event // in acquisition order
		lastRel time.Time
		left    atomic.Int64
	)
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g, x := range xs {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				called := time.Now()
				if err := x.lock(ctx); err != nil {
					b.Error(err)
					return
				}
				got := time.Now()
				spin(hold)
				mu.Lock()
				events = append(events, event{g: g, called: called, got: got, prevRel: lastRel})
				lastRel = time.Now()
				mu.Unlock()
				if err := x.unlock(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(len(events))/elapsed.Seconds(), "acq/s")
	var handoffs []time.Duration
	for _, e := range events {
		if !e.prevRel.IsZero() {
			handoffs = append(handoffs, e.got.Sub(e.prevRel))
		}
	}
	if len(handoffs) > 0 {
		slices.Sort(handoffs)
		b.ReportMetric(ms(handoffs[len(handoffs)/2]), "handoff-p50-ms")
		b.ReportMetric(ms(handoffs[len(handoffs)*99/100]), "handoff-p99-ms")
	}
	b.ReportMetric(fifo(events), "fifo-frac")
}

// spin busy-waits for d: a critical section that keeps its CPU.
func spin(d time.Duration) {
	for t := time.Now(); time.Since(t) < d; {
	}
}

type event struct {
	g       int
	called  time.Time // Lock called
	got     time.Time // Lock returned
	prevRel time.Time // the previous holder started its release
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// fifo returns the share of hand-offs that went to the contender that had
// been waiting longest (by client-side call time) among those still waiting.
func fifo(events []event) float64 {
	n, ok := 0, 0
	for i, e := range events {
		if i == 0 {
			continue
		}
		oldest := true
		for _, o := range events[i+1:] {
			if o.called.Before(e.got) && o.called.Before(e.called) {
				oldest = false
				break
			}
		}
		n++
		if oldest {
			ok++
		}
	}
	if n == 0 {
		return 1
	}
	return float64(ok) / float64(n)
}

// BenchmarkFloor measures the server's own costs on this machine, the floor
// under every figure above: a write (Put, fsync) and a linearizable read. A
// hand-off costs at least one write (the release) and one read (the new
// holder's check of the queue).
func BenchmarkFloor(b *testing.B) {
	c := newClient(b)
	ctx := context.Background()
	key := prefix(b) + "k"
	var puts, gets []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		if _, err := c.Put(ctx, key, ""); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := c.Get(ctx, key); err != nil {
			b.Fatal(err)
		}
		puts, gets = append(puts, t1.Sub(t0)), append(gets, time.Since(t1))
	}
	slices.Sort(puts)
	slices.Sort(gets)
	b.ReportMetric(ms(puts[len(puts)/2]), "put-p50-ms")
	b.ReportMetric(ms(puts[len(puts)*99/100]), "put-p99-ms")
	b.ReportMetric(ms(gets[len(gets)/2]), "get-p50-ms")
	b.ReportMetric(ms(gets[len(gets)*99/100]), "get-p99-ms")
}

// TestFIFOMetric checks the FIFO measure on hand-made sequences.
func TestFIFOMetric(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	inOrder := []event{
		{g: 0, called: at(0), got: at(1)},
		{g: 1, called: at(2), got: at(10)},
		{g: 2, called: at(3), got: at(20)},
	}
	if got := fifo(inOrder); got != 1 {
		t.Errorf("in order: got %v, want 1", got)
	}
	barged := []event{
		{g: 0, called: at(0), got: at(1)},
		{g: 2, called: at(5), got: at(10)}, // g 1 waits since 2 and is passed over
		{g: 1, called: at(2), got: at(20)},
	}
	if got := fifo(barged); got != 0.5 {
		t.Errorf("one barge in two hand-offs: got %v, want 0.5", got)
	}
}

// TestSmoke takes and gives back one lock with each implementation.
func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			x := im.make(t, "/smoke/"+im.name, 1)[0]
			if err := x.lock(ctx); err != nil {
				t.Fatalf("lock: %v", err)
			}
			if err := x.unlock(ctx); err != nil {
				t.Fatalf("unlock: %v", err)
			}
		})
	}
}
