package etcdlock

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// gatedClient is a real client whose requests, once the gate is armed, wait
// until it is opened (or their context ends); with watches set, so do the
// responses of its watches. got receives (without blocking) after every Get
// that completed: the only Get a Locker sends is the monitor's check that
// follows its watch's confirmation.
type gatedClient struct {
	*clientv3.Client
	watches bool
	armed   atomic.Bool
	open    chan struct{}
	once    sync.Once
	got     chan struct{}
}

func newGatedClient(t *testing.T, watches bool) *gatedClient {
	g := &gatedClient{Client: sharedClient(t), watches: watches, open: make(chan struct{}), got: make(chan struct{}, 1)}
	t.Cleanup(g.release)
	return g
}

// release opens the gate for good.
func (g *gatedClient) release() { g.once.Do(func() { close(g.open) }) }

func (g *gatedClient) wait(ctx context.Context) {
	if g.armed.Load() {
		select {
		case <-g.open:
		case <-ctx.Done():
		}
	}
}

func (g *gatedClient) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	g.wait(ctx)
	resp, err := g.Client.Get(ctx, key, opts...)
	select {
	case g.got <- struct{}{}:
	default:
	}
	return resp, err
}

func (g *gatedClient) Txn(ctx context.Context) clientv3.Txn {
	return &gatedTxn{Txn: g.Client.Txn(ctx), ctx: ctx, g: g}
}

func (g *gatedClient) TimeToLive(ctx context.Context, id clientv3.LeaseID, opts ...clientv3.LeaseOption) (*clientv3.LeaseTimeToLiveResponse, error) {
	g.wait(ctx)
	return g.Client.TimeToLive(ctx, id, opts...)
}

func (g *gatedClient) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	g.wait(ctx)
	return g.Client.KeepAliveOnce(ctx, id)
}

func (g *gatedClient) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	in := g.Client.Watch(ctx, key, opts...)
	if !g.watches {
		return in
	}
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		for resp := range in { // the client closes in when ctx ends
			g.wait(ctx)
			select {
			case out <- resp:
			case <-ctx.Done():
			}
		}
	}()
	return out
}

type gatedTxn struct {
	clientv3.Txn
	ctx context.Context
	g   *gatedClient
}

func (t *gatedTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *gatedTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *gatedTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *gatedTxn) Commit() (*clientv3.TxnResponse, error) {
	t.g.wait(t.ctx)
	resp, err := t.Txn.Commit()
	t.g.wait(t.ctx) // an answer that arrives after the gate was armed waits too
	return resp, err
}

// eventLog records events in the order they happen.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (e *eventLog) add(what string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, what)
}

func (e *eventLog) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.events)
}

// TestRevokedHolderToldBeforeWaiter: when the holder's lease is revoked, the
// holder's function context is cancelled on the delete event alone, before
// the waiter (in another Locker, on another client) holds the lock.
//
// The test makes the order causal rather than a race between two watches of
// one event: once the lease is revoked, every request of the holder's client
// waits until the waiter holds the lock, and everything the waiter's client
// receives waits until the holder was told. A holder that needed a round
// trip to report the loss (the TimeToLive that the loss report used to wait
// for) would thus be told only after the waiter, released by a 5s fallback,
// took the lock.
func TestRevokedHolderToldBeforeWaiter(t *testing.T) {
	ctx := testCtx(t)
	admin := sharedClient(t)
	hc, wc := newGatedClient(t, false), newGatedClient(t, true)
	lh := testLocker(t, hc, WithTTL(30*time.Second))
	lw := testLocker(t, wc, WithTTL(30*time.Second))
	m := lh.Mutex("a")
	var log eventLog

	acquired := make(chan struct{})
	runErr := make(chan error, 1)
	var cause error
	go func() {
		runErr <- caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(m); err != nil {
				return err
			}
			close(acquired)
			<-ctx.Done()
			log.add("holder told")
			cause = context.Cause(ctx)
			wc.release()
			return nil
		})
	}()
	select {
	case <-acquired:
	case err := <-runErr:
		t.Fatalf("Run: %v", err)
	}
	select { // the holder's monitor has its watch in place and has checked the key
	case <-hc.got:
	case <-time.After(10 * time.Second):
		t.Fatal("the holder's monitor never checked its key")
	}

	waiterErr := make(chan error, 1)
	go func() {
		h, err := lw.Mutex("a").Acquire(ctx)
		if err == nil {
			log.add("waiter acquired")
			hc.release()
			err = h.Release(ctx)
		}
		waiterErr <- err
	}()
	waitQueue(t, admin, m, 2)

	s := mustSession(t, lh)
	hc.armed.Store(true)
	wc.armed.Store(true)
	fallback := time.AfterFunc(5*time.Second, wc.release)
	defer fallback.Stop()
	if _, err := admin.Revoke(ctx, s.id); err != nil {
		t.Fatal(err)
	}

	if err := <-runErr; !errors.Is(err, caesura.ErrLockLost) {
		t.Fatalf("Run: got %v, want ErrLockLost", err)
	}
	if err := <-waiterErr; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if got, want := log.get(), []string{"holder told", "waiter acquired"}; !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q: the holder was told after the next waiter held the lock", got, want)
	}
	if !errors.Is(cause, caesura.ErrLockLost) || !errors.Is(cause, ErrKeyDeleted) {
		t.Fatalf("holder's cause: got %v, want ErrLockLost and ErrKeyDeleted", cause)
	}
	// Afterwards the Locker finds the lease gone and ends the session.
	waitDone(t, s.ctx, 10*time.Second)
	if c := context.Cause(s.ctx); !errors.Is(c, ErrSessionEnded) {
		t.Fatalf("session's cause: got %v, want ErrSessionEnded", c)
	}
}

// proxy is a TCP proxy that can stop passing bytes on (a partition) and
// start again, without closing connections or losing bytes.
type proxy struct {
	ln     net.Listener
	target string
	done   chan struct{}
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
	gate  chan struct{} // closed while traffic flows
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, done: make(chan struct{}), gate: make(chan struct{})}
	close(p.gate)
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *proxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(s, c) })
		p.wg.Go(func() { p.pipe(c, s) })
	}
}

// pipe copies src to dst, holding what it read while the proxy is paused.
func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.gate
			p.mu.Unlock()
			select {
			case <-gate:
			case <-p.done:
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_ = src.Close()
			}
			return
		}
	}
}

func (p *proxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gate = make(chan struct{})
}

func (p *proxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

func (p *proxy) close() {
	close(p.done)
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestPartitionedHolderToldBeforeExpiry: a holder cut off from etcd (its
// client talks through a proxy that stops passing bytes) is told of the
// loss before its lease's TTL has passed since the last renewal that got
// through was sent, so before the server can expire the lease, and thus
// before another client, not cut off, takes the lock.
func TestPartitionedHolderToldBeforeExpiry(t *testing.T) {
	ctx := testCtx(t)
	if err := startShared(); err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, strings.TrimPrefix(shared.member.client, "http://"))
	defer px.resume() // so that the Locker's Close can revoke its lease
	hc := newClient(t, px.url())
	admin := sharedClient(t)
	// A drift well above the default: the test checks the mechanism, not
	// how late a timer fires on a loaded machine.
	lh := testLocker(t, hc, WithTTL(2*time.Second), WithDrift(500*time.Millisecond))
	lo := testLocker(t, admin)
	m := lh.Mutex("a")

	h := mustAcquire(t, ctx, m)
	s := h.s
	// The session renews on its own: wait for two renewals to be confirmed.
	first := s.lastConfirmed()
	eventually(t, 5*time.Second, "two renewals", func() bool {
		return s.lastConfirmed().Sub(first) >= 2*lh.renewEvery-lh.renewEvery/2
	})

	var log eventLog
	var lostAt time.Time
	told := make(chan struct{})
	context.AfterFunc(h.Lost(), func() {
		lostAt = time.Now()
		log.add("holder told")
		close(told)
	})
	waiterErr := make(chan error, 1)
	go func() {
		h, err := lo.Mutex("a").Acquire(ctx)
		if err == nil {
			log.add("other acquired")
			err = h.Release(ctx)
		}
		waiterErr <- err
	}()
	waitQueue(t, admin, m, 2)

	px.pause()
	select {
	case <-told:
	case <-time.After(10 * time.Second):
		t.Fatal("the partitioned holder was not told within 10s")
	}
	last := s.lastConfirmed()
	if err := <-waiterErr; err != nil {
		t.Fatalf("other client: %v", err)
	}
	if got, want := log.get(), []string{"holder told", "other acquired"}; !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	if c := context.Cause(h.Lost()); !errors.Is(c, ErrSessionEnded) {
		t.Fatalf("Lost cause: got %v, want ErrSessionEnded", c)
	}
	if expiry := last.Add(s.ttl); !lostAt.Before(expiry) {
		t.Fatalf("holder told %v after the last confirmed renewal was sent, want before the %v TTL", lostAt.Sub(last), s.ttl)
	}
	t.Logf("holder told %v after the last confirmed renewal was sent (TTL %v)", lostAt.Sub(last), s.ttl)
	px.resume()
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release of the lost lock: got %v, want ErrNotHeld", err)
	}
}

// TestKeepAliveOptions: the drift and renew interval must leave room for a
// renewal within the TTL.
func TestKeepAliveOptions(t *testing.T) {
	c := sharedClient(t)
	tests := []struct {
		name string
		opts []Option
		ok   bool
	}{
		{"defaults", nil, true},
		{"short TTL with defaults", []Option{WithTTL(time.Second)}, true},
		{"drift", []Option{WithTTL(2 * time.Second), WithDrift(time.Second)}, true},
		{"zero drift", []Option{WithDrift(0)}, true},
		{"negative drift", []Option{WithDrift(-time.Millisecond)}, false},
		{"drift as long as the TTL", []Option{WithTTL(2 * time.Second), WithDrift(2 * time.Second)}, false},
		{"renew interval", []Option{WithTTL(2 * time.Second), WithRenewInterval(time.Second)}, true},
		{"zero renew interval", []Option{WithRenewInterval(0)}, false},
		{"renew interval as long as the TTL", []Option{WithTTL(3 * time.Second), WithRenewInterval(3 * time.Second)}, false},
		{"drift and interval fill the TTL", []Option{WithTTL(2 * time.Second), WithDrift(time.Second), WithRenewInterval(time.Second)}, false},
		{"order does not matter", []Option{WithDrift(5 * time.Second), WithTTL(20 * time.Second)}, true},
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
	l, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	if l.drift != DefaultDrift(DefaultTTL) || l.renewEvery != DefaultTTL/3 {
		t.Errorf("defaults: drift %v, renew every %v; want %v and %v", l.drift, l.renewEvery, DefaultDrift(DefaultTTL), DefaultTTL/3)
	}
	for ttl, want := range map[time.Duration]time.Duration{
		10 * time.Second:       300 * time.Millisecond,
		time.Second:            120 * time.Millisecond,
		100 * time.Millisecond: 110 * time.Millisecond,
	} {
		if got := DefaultDrift(ttl); got != want {
			t.Errorf("DefaultDrift(%v) = %v, want %v", ttl, got, want)
		}
	}
}

// TestHugeKeyClipped: messages show a key's first 64 bytes and its length,
// not all of it.
func TestHugeKeyClipped(t *testing.T) {
	huge := strings.Repeat("k", 1<<20)
	_, err := New(sharedClient(t), WithPrefix(huge))
	if err == nil {
		t.Fatal("New with a huge prefix without a trailing slash: got nil error")
	}
	if msg := err.Error(); len(msg) > 300 || !strings.Contains(msg, "1048576 bytes") {
		t.Fatalf("New with a huge bad prefix: got a %d-byte error, want a short one naming its length", len(msg))
	}
	l := testLocker(t, sharedClient(t))
	h := mustAcquire(t, testCtx(t), l.Mutex(strings.Repeat("n", 64<<10)))
	if err := h.Release(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	err = h.Release(testCtx(t))
	if !errors.Is(err, caesura.ErrNotHeld) || len(err.Error()) > 300 {
		t.Fatalf("second Release of a huge-named lock: got a %d-byte error (%v), want a short ErrNotHeld", len(err.Error()), errors.Is(err, caesura.ErrNotHeld))
	}
}
