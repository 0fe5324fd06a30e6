package etcdlock

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// faultyClient is a real client whose next transactions or deletes fail on
// demand, the way a connection that drops mid-request does: "after" commits
// the transaction and then reports an error (the caller cannot know the
// outcome), "drop" reports an error without sending it.
type faultyClient struct {
	*clientv3.Client
	mu                          sync.Mutex
	txnAfter, txnDrop, delDrops int
	injected                    int
}

var errInjected = errors.New("injected fault")

func (f *faultyClient) take(n *int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if *n > 0 {
		*n--
		f.injected++
		return true
	}
	return false
}

func (f *faultyClient) set(txnAfter, txnDrop, delDrops int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.txnAfter, f.txnDrop, f.delDrops = txnAfter, txnDrop, delDrops
}

func (f *faultyClient) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injected
}

func (f *faultyClient) Txn(ctx context.Context) clientv3.Txn {
	return &faultyTxn{Txn: f.Client.Txn(ctx), f: f}
}

func (f *faultyClient) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	if f.take(&f.delDrops) {
		return nil, errInjected
	}
	return f.Client.Delete(ctx, key, opts...)
}

type faultyTxn struct {
	clientv3.Txn
	f *faultyClient
}

func (t *faultyTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *faultyTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *faultyTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *faultyTxn) Commit() (*clientv3.TxnResponse, error) {
	switch {
	case t.f.take(&t.f.txnDrop):
		return nil, errInjected
	case t.f.take(&t.f.txnAfter):
		_, _ = t.Txn.Commit()
		return nil, errInjected
	}
	return t.Txn.Commit()
}

// eventually fails t unless cond holds within d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFaultUnknownOutcome: an acquisition whose transaction committed but
// whose answer was lost fails with ErrUnavailable (not ErrNotAcquired: the
// lock may be free), and its key is deleted in the background.
func TestFaultUnknownOutcome(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	f := &faultyClient{Client: c}
	l := testLocker(t, f)
	m := l.Mutex("a")
	h := mustAcquire(t, ctx, m) // start the session
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	s := mustSession(t, l)
	acquires := map[string]func() error{
		"Acquire": func() error { _, err := m.Acquire(ctx); return err },
		"TryAcquire": func() error {
			_, err := m.(caesura.TryLocker).TryAcquire(ctx)
			return err
		},
		"AcquireBatch": func() error {
			_, err := l.batch.AcquireBatch(ctx, []caesura.Lock{m, l.Mutex("b")})
			return err
		},
	}
	for name, acquire := range acquires {
		f.set(1, 0, 0)
		err := acquire()
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errInjected) || errors.Is(err, caesura.ErrNotAcquired) {
			t.Fatalf("%s with a lost answer: got %v, want ErrUnavailable only", name, err)
		}
		eventually(t, 5*time.Second, name+": the committed key is deleted", func() bool {
			return len(queueKeys(t, c, m)) == 0
		})
	}
	if got := mustSession(t, l); got != s {
		t.Error("a clean-up that succeeded abandoned the session")
	}
	t.Logf("%d faults injected", f.count())
}

// TestFaultCleanupFails: when the clean-up cannot delete the key either, the
// session is abandoned: its keep-alive stops, the locks held through it are
// reported lost, and the lease takes every key away.
func TestFaultCleanupFails(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	f := &faultyClient{Client: c}
	l := testLocker(t, f, WithTTL(2*time.Second))
	other := mustAcquire(t, ctx, l.Mutex("other"))
	m := l.Mutex("a")
	f.set(1, 0, 1)
	if _, err := m.Acquire(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Acquire: got %v, want ErrUnavailable", err)
	}
	waitDone(t, other.Lost(), 5*time.Second)
	if c := context.Cause(other.Lost()); !errors.Is(c, ErrSessionEnded) {
		t.Fatalf("Lost cause: got %v, want ErrSessionEnded", c)
	}
	eventually(t, 10*time.Second, "the lease takes the keys away", func() bool {
		return len(queueKeys(t, c, m)) == 0 && len(queueKeys(t, c, l.Mutex("other"))) == 0
	})
	if err := other.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("Release of the lost lock: got %v, want ErrNotHeld", err)
	}
	h := mustAcquire(t, ctx, m) // a new session
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d faults injected", f.count())
}

// TestFaultReleaseFails: a release whose request fails reports
// ErrUnavailable, and the key is deleted in the background.
func TestFaultReleaseFails(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	f := &faultyClient{Client: c}
	l := testLocker(t, f)
	m := l.Mutex("a")
	h := mustAcquire(t, ctx, m)
	f.set(0, 1, 0)
	if err := h.Release(ctx); !errors.Is(err, ErrUnavailable) || !errors.Is(err, errInjected) {
		t.Fatalf("Release: got %v, want ErrUnavailable", err)
	}
	eventually(t, 5*time.Second, "the key is deleted", func() bool { return len(queueKeys(t, c, m)) == 0 })
	if err := h.Release(ctx); !errors.Is(err, caesura.ErrNotHeld) {
		t.Fatalf("second Release: got %v, want ErrNotHeld", err)
	}
	t.Logf("%d faults injected", f.count())
}
