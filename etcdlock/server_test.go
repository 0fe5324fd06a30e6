package etcdlock

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caesura-go/caesura/internal/testport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

// The tests run against real etcd servers embedded in the test binary
// (go.etcd.io/etcd/server/v3/embed) on ephemeral 127.0.0.1 ports with data
// in temporary directories: nothing needs to be installed or started.

// shared is one single-member server for the tests that need no faults; its
// data directory lives until TestMain ends.
var shared struct {
	once   sync.Once
	dir    string
	member *member
	err    error
}

// startShared starts the shared server once.
func startShared() error {
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "etcdlock-test-")
		if shared.err != nil {
			return
		}
		// A reserved port can be taken by another process before the
		// server binds it: try again on new ports.
		for attempt := range 3 {
			var peer, client string
			if peer, shared.err = freePort(); shared.err != nil {
				return
			}
			if client, shared.err = freePort(); shared.err != nil {
				return
			}
			dir := filepath.Join(shared.dir, strconv.Itoa(attempt))
			shared.member, shared.err = startMember(memberConfig{
				name: "m0", dir: dir, peer: peer, client: client,
				cluster: "m0=" + peer, state: embed.ClusterStateFlagNew, noFsync: true,
			})
			if shared.err == nil {
				return
			}
		}
	})
	return shared.err
}

// sharedClient returns a new client of the shared server, closed when t
// ends.
func sharedClient(t testing.TB) *clientv3.Client {
	t.Helper()
	if err := startShared(); err != nil {
		t.Fatalf("start shared etcd: %v", err)
	}
	return newClient(t, shared.member.client)
}

// stopShared stops the shared server (after all tests).
func stopShared() {
	if shared.member != nil {
		shared.member.stop()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
}

type leakCheckedM struct{ m *testing.M }

func (x leakCheckedM) Run() int {
	code := x.m.Run()
	stopShared()
	return code
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(leakCheckedM{m},
		// The embedded servers' peer HTTP connections (rafthttp over
		// net/http and cmux) can outlive Etcd.Close after a member was
		// stopped and restarted. They belong to the test servers, not to
		// this package, which does not use net/http.
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
		goleak.IgnoreAnyFunction("net/http.(*connReader).backgroundRead"),
	)
}

func newClient(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// freePort returns a URL on a 127.0.0.1 port that was free a moment ago,
// outside the range the kernel gives outgoing connections: a restarted
// member binds it again. Peer URLs must be known before the members start,
// so ":0" cannot be used.
func freePort() (string, error) {
	port, err := testport.One()
	if err != nil {
		return "", err
	}
	return "http://127.0.0.1:" + strconv.Itoa(port), nil
}

type memberConfig struct {
	name, dir, peer, client, cluster, state string
	noFsync                                 bool
}

// member is one running embedded etcd server.
type member struct {
	cfg    memberConfig
	e      *embed.Etcd
	client string
}

func startMember(mc memberConfig) (*member, error) {
	cfg := embed.NewConfig()
	cfg.Name = mc.name
	cfg.Dir = mc.dir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = mc.noFsync
	pu, err := url.Parse(mc.peer)
	if err != nil {
		return nil, err
	}
	cu, err := url.Parse(mc.client)
	if err != nil {
		return nil, err
	}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.InitialCluster = mc.cluster
	cfg.InitialClusterToken = "etcdlock-test"
	cfg.ClusterState = mc.state
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", mc.name, err)
	}
	m := &member{cfg: mc, e: e, client: mc.client}
	if mc.state == embed.ClusterStateFlagNew && !strings.Contains(mc.cluster, ",") {
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			e.Close()
			return nil, fmt.Errorf("%s: not ready after 30s", mc.name)
		}
	}
	return m, nil
}

// stop closes the member. An embedded etcd that never reached its peers can
// block in Close; after 20s stop gives up on it rather than hang the test
// binary (the goroutine left behind then fails the leak check, loudly).
func (m *member) stop() {
	done := make(chan struct{})
	go func() { m.e.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
	}
}

// ready waits until the member has joined a cluster with a leader.
func (m *member) ready(ctx context.Context) error {
	select {
	case <-m.e.Server.ReadyNotify():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s not ready: %w", m.cfg.name, ctx.Err())
	}
}

// testLocker returns a Locker with a prefix unique to t, closed when t ends.
func testLocker(t testing.TB, c Client, opts ...Option) *Locker {
	t.Helper()
	prefix := "/test/" + strings.ReplaceAll(t.Name(), "/", "_") + "/"
	l, err := New(c, append([]Option{WithPrefix(prefix)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}
