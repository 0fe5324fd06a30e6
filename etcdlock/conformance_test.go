package etcdlock

import (
	"context"
	"testing"
	"time"

	"github.com/caesura-go/caesura/locktest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestConformance(t *testing.T) {
	c := sharedClient(t)
	l := testLocker(t, c)
	admin := sharedClient(t)
	locktest.Run(t, locktest.Harness{
		Lock: l.Mutex,
		// An operator deletes the lock's keys.
		Lose: func(t *testing.T, name string) {
			m := l.Mutex(name).(*lock)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := admin.Delete(ctx, m.queue, clientv3.WithPrefix())
			if err != nil {
				t.Fatalf("delete %q: %v", m.queue, err)
			}
			if resp.Deleted == 0 {
				t.Fatalf("delete %q: no key to delete", m.queue)
			}
		},
		HandOff: 5 * time.Second,
	})
}
