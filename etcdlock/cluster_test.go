package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// cluster is a three-member etcd cluster of embedded servers.
type cluster struct {
	t       *testing.T
	cfgs    []memberConfig
	members []*member // nil when stopped
}

func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	// Ports are reserved by opening and closing a listener, so another
	// process can take one before the member binds it: then start the
	// whole cluster again on new ports (the peer list names them all).
	var lastErr error
	for attempt := range 3 {
		cl, err := tryStartCluster(t, n)
		if err == nil {
			t.Cleanup(func() {
				for _, m := range cl.members {
					if m != nil {
						m.stop()
					}
				}
			})
			cl.ready()
			return cl
		}
		lastErr = err
		t.Logf("start cluster, attempt %d: %v", attempt+1, err)
	}
	t.Fatalf("start cluster: %v", lastErr)
	return nil
}

func tryStartCluster(t *testing.T, n int) (*cluster, error) {
	cl := &cluster{t: t}
	var peers []string
	for i := range n {
		peer, err := freePort()
		if err != nil {
			return nil, err
		}
		client, err := freePort()
		if err != nil {
			return nil, err
		}
		mc := memberConfig{
			name: fmt.Sprintf("m%d", i), dir: t.TempDir(),
			peer: peer, client: client, state: embed.ClusterStateFlagNew,
		}
		peers = append(peers, mc.name+"="+mc.peer)
		cl.cfgs = append(cl.cfgs, mc)
	}
	for i := range cl.cfgs {
		cl.cfgs[i].cluster = strings.Join(peers, ",")
	}
	cl.members = make([]*member, n)
	for i := range cl.cfgs {
		m, err := startMember(cl.cfgs[i])
		if err != nil {
			for _, started := range cl.members {
				if started != nil {
					started.stop()
				}
			}
			return nil, fmt.Errorf("start member %d: %w", i, err)
		}
		cl.members[i] = m
	}
	return cl, nil
}

// restart starts member i again from its data directory.
func (cl *cluster) restart(i int) {
	cl.t.Helper()
	m, err := startMember(cl.cfgs[i])
	if err != nil {
		cl.t.Fatalf("start member %d: %v", i, err)
	}
	cl.members[i] = m
}

func (cl *cluster) stop(i int) {
	cl.members[i].stop()
	cl.members[i] = nil
}

func (cl *cluster) ready() {
	cl.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range cl.members {
		if m != nil {
			if err := m.ready(ctx); err != nil {
				cl.t.Fatal(err)
			}
		}
	}
}

func (cl *cluster) endpoints() []string {
	var eps []string
	for _, mc := range cl.cfgs {
		eps = append(eps, mc.client)
	}
	return eps
}

func (cl *cluster) leader() int {
	for i, m := range cl.members {
		if m != nil && m.e.Server.Leader() == m.e.Server.MemberID() {
			return i
		}
	}
	return -1
}

// retry runs f until it succeeds or 10s pass: right after a member stops,
// the client may still send one request to it.
func retry(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMemberLoss: with one of three members stopped (the leader), locks keep
// working; with two stopped, an acquisition fails within its context's
// deadline with an error that says the cluster is unavailable, the held
// lock is reported lost, and once the members are back nothing of it is
// left in etcd.
func TestMemberLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member cluster")
	}
	ctx := testCtx(t)
	cl := startCluster(t, 3)
	c := newClient(t, cl.endpoints()...)
	admin := newClient(t, cl.endpoints()...)
	l := testLocker(t, c, WithTTL(4*time.Second))
	held := mustAcquire(t, ctx, l.Mutex("held"))

	// One member down: the leader.
	ld := cl.leader()
	if ld < 0 {
		t.Fatal("no leader")
	}
	cl.stop(ld)
	m := l.Mutex("a")
	retry(t, "acquire with one member stopped", func() error {
		h, err := m.Acquire(ctx)
		if err != nil {
			return err
		}
		return h.Release(ctx)
	})
	// Contention and hand-off still work.
	h := mustAcquire(t, ctx, m)
	var wg sync.WaitGroup
	wg.Go(func() {
		h2, err := m.Acquire(ctx)
		if err != nil {
			t.Errorf("waiter with one member stopped: %v", err)
			return
		}
		if err := h2.Release(ctx); err != nil {
			t.Errorf("release: %v", err)
		}
	})
	waitQueue(t, admin, m, 2)
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := held.Lost().Err(); err != nil {
		t.Fatalf("the lock held across the loss of one member was lost: %v", context.Cause(held.Lost()))
	}

	// Two members down: no quorum.
	second := (ld + 1) % 3
	cl.stop(second)
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := l.Mutex("b").Acquire(actx)
	took := time.Since(start)
	// Either the context's deadline ends the attempt (ErrNotAcquired and
	// DeadlineExceeded too) or, on a loaded machine, etcd's own request
	// timeout answers first; ErrUnavailable is there either way.
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Acquire without quorum: got %v, want ErrUnavailable", err)
	}
	if actx.Err() != nil && (!errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded)) {
		t.Fatalf("Acquire without quorum past its deadline: got %v, want ErrNotAcquired and DeadlineExceeded too", err)
	}
	if took > 2500*time.Millisecond {
		t.Fatalf("Acquire without quorum returned after %v, want within its 2s deadline", took)
	}
	t.Logf("acquire without quorum failed after %v: %v", took, err)
	waitDone(t, held.Lost(), 10*time.Second) // the keep-alive deadline passes
	if c := context.Cause(held.Lost()); !errors.Is(c, ErrSessionEnded) {
		t.Fatalf("held lock's loss cause: got %v, want ErrSessionEnded", c)
	}

	// Back to three: nothing left behind, locks work again.
	cl.restart(ld)
	cl.restart(second)
	cl.ready()
	retry(t, "no keys left", func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		resp, err := admin.Get(cctx, l.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return err
		}
		if len(resp.Kvs) > 1 { // the held lock's key goes with its lease
			return fmt.Errorf("%d keys left under %q", len(resp.Kvs), l.prefix)
		}
		for _, kv := range resp.Kvs {
			if string(kv.Key) != held.ekey {
				return fmt.Errorf("key %q left behind", kv.Key)
			}
		}
		return nil
	})
	if err := held.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release of the lost lock: got %v, want ErrNotHeld", err)
	}
	retry(t, "acquire after the cluster is back", func() error {
		h, err := l.Mutex("b").Acquire(ctx)
		if err != nil {
			return err
		}
		return h.Release(ctx)
	})
}
