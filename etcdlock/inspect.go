package etcdlock

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/caesura-go/caesura"
)

var _ caesura.Inspector = (*lock)(nil)

// Inspect reports whether the lock is held, the holder's fencing token (the
// create revision of the head of the queue) and the holder's lease, in one
// read, taking nothing. etcd keeps no time of creation, so Since stays zero.
func (m *lock) Inspect(ctx context.Context) (caesura.LockState, error) {
	if err := m.check(); err != nil {
		return caesura.LockState{}, err
	}
	resp, err := m.l.client.Get(ctx, m.queue, append(clientv3.WithFirstCreate(), clientv3.WithKeysOnly())...)
	if err != nil {
		return caesura.LockState{}, m.requestErr(ctx, fmt.Errorf("inspect: %w", err))
	}
	if len(resp.Kvs) == 0 {
		return caesura.LockState{}, nil
	}
	kv := resp.Kvs[0]
	holder := strings.TrimPrefix(string(kv.Key), m.queue)
	if lease, _, ok := strings.Cut(holder, "-"); ok {
		holder = "lease " + strings.TrimLeft(lease, "0")
	}
	return caesura.LockState{Held: true, Token: uint64(kv.CreateRevision), Holder: holder}, nil
}
