package etcdlock

import (
	"context"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caesura-go/caesura"
)

// Waiter key names are reused: a lock's queue sees about as many names as
// acquisitions ever ran at once, not one per acquisition (etcd keeps every
// name in its index until compaction, and each waiter reads the queue).
func TestWaiterKeyNamesReused(t *testing.T) {
	ctx := testCtx(t)
	c := sharedClient(t)
	l := testLocker(t, c)
	for range 30 {
		h := mustAcquire(t, ctx, l.Mutex("a"))
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
					return yield(l.Mutex("a"), l.Mutex("b"))
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	// Every name ever written under the prefix, from the watch history.
	end := l.prefix + "~end"
	if _, err := c.Put(ctx, end, ""); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	names := map[string]bool{}
	puts := 0
	for resp := range c.Watch(wctx, l.prefix, clientv3.WithPrefix(), clientv3.WithRev(1), clientv3.WithFilterDelete()) {
		if err := resp.Err(); err != nil {
			t.Fatal(err)
		}
		done := false
		for _, ev := range resp.Events {
			if string(ev.Kv.Key) == end {
				done = true
				break
			}
			names[string(ev.Kv.Key)] = true
			puts++
		}
		if done {
			break
		}
	}
	// 30 + 5*4*2 = 70 keys written. Slots are shared by the Locker's
	// locks, and at most 8 are in use at once (4 Runs of 2 keys), so each
	// of the two queues sees at most 8 names, give or take a slot a batch
	// held for a moment without writing it.
	if puts < 70 {
		t.Fatalf("saw %d waiter keys written, want at least 70", puts)
	}
	if len(names) > 20 {
		t.Fatalf("%d distinct waiter key names for %d acquisitions, want at most 20 (names are reused)", len(names), puts)
	}
	t.Logf("%d acquisitions used %d names", puts, len(names))
}
