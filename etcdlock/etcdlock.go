package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caesura-go/caesura"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// KeyPrefix is the prefix of every [caesura.Lock.Key] this package hands
// out: a Lock's key is KeyPrefix, then the Locker's etcd prefix, then the
// lock's name. It keeps etcd keys apart from other backends' keys in the
// global lock order.
const KeyPrefix = "etcd:"

// DefaultPrefix is the etcd key prefix a Locker uses unless [WithPrefix] says
// otherwise.
const DefaultPrefix = "/caesura/"

// DefaultTTL is the session lease's time to live unless [WithTTL] says
// otherwise: how long the locks of a crashed or partitioned process stay
// held at most.
const DefaultTTL = 10 * time.Second

// cleanupTimeout bounds the requests that clean up after a failed or
// abandoned acquisition, which run with a context of their own.
const cleanupTimeout = 5 * time.Second

// defaultMaxWatched is how many keys ahead a waiter follows with one watch
// of its whole queue (see Locker.maxWatched).
const defaultMaxWatched = 64

// Option configures a [Locker]. Options are made by [WithPrefix] and
// [WithTTL].
type Option interface {
	apply(*Locker) error
}

type optionFunc func(*Locker) error

func (f optionFunc) apply(l *Locker) error { return f(l) }

// WithPrefix sets the etcd key prefix under which the Locker keeps its lock
// queues (default [DefaultPrefix]). It must be non-empty and end with "/".
// Lockers that share a prefix share their locks; give unrelated applications
// distinct prefixes, and never nest one prefix inside another's namespace
// ("/a/" and "/a/x/"), since a lock named "x" under "/a/" would then
// overlap every lock under "/a/x/".
func WithPrefix(prefix string) Option {
	return optionFunc(func(l *Locker) error {
		if prefix == "" || !strings.HasSuffix(prefix, "/") {
			return fmt.Errorf("etcdlock: prefix %q must be non-empty and end with \"/\"", prefix)
		}
		l.prefix = prefix
		return nil
	})
}

// WithTTL sets the time to live of the session lease (default [DefaultTTL]).
// etcd leases count whole seconds, so ttl is rounded up to a whole second;
// the server raises it further to its minimum lease TTL (1.5 election
// timeouts, 2 s with etcd's defaults). The client renews the lease every
// third of the TTL. A shorter TTL frees a crashed process's locks sooner and
// makes a pause or partition longer than the TTL lose the locks.
func WithTTL(ttl time.Duration) Option {
	return optionFunc(func(l *Locker) error {
		if ttl <= 0 {
			return fmt.Errorf("etcdlock: TTL %v must be positive", ttl)
		}
		l.ttl = int64((ttl + time.Second - 1) / time.Second)
		return nil
	})
}

// Locker names etcd locks and owns the session (one lease, kept alive) that
// all its locks are held through. Make one with [New] and share it; it is
// safe for concurrent use. Close it when done: Close revokes the lease,
// which releases every lock still held through it.
//
// The session is started by the first acquisition. When it ends (the lease
// expired or was revoked), every lock held through it is lost, every waiter
// stops with [ErrSessionEnded], and the next acquisition starts a new one.
type Locker struct {
	client Client
	prefix string
	ttl    int64 // seconds
	batch  *batcher
	seq    atomic.Uint64
	starts chan struct{} // one token: serializes session starts, honouring contexts

	// maxWatched (at least 1) bounds the keys ahead of a waiter that it
	// follows through one watch of the whole queue, which sends it every
	// deletion in the queue. A waiter with more keys ahead watches only
	// the maxWatched-th of them, until it is gone. Tests lower it.
	maxWatched int

	mu     sync.Mutex
	sess   *session
	closed bool
	wg     sync.WaitGroup // session keep-alive drains and background cleanups
}

// session is one lease and its keep-alive.
type session struct {
	id clientv3.LeaseID
	// ctx is cancelled when the session ends, with the reason as cause.
	// The Lost contexts of the locks held through it derive from it.
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// Client is the part of an etcd client that a Locker uses: a
// *clientv3.Client is one. Tests and middleware can wrap it.
type Client interface {
	clientv3.KV
	clientv3.Watcher
	clientv3.Lease
}

// New returns a Locker that keeps its locks in etcd through client, usually
// a *clientv3.Client. The client stays the caller's: the Locker never closes
// it, and it must outlive the Locker. New does not contact etcd; the first
// acquisition starts the session.
func New(client Client, opts ...Option) (*Locker, error) {
	if client == nil || client == Client((*clientv3.Client)(nil)) {
		return nil, errors.New("etcdlock: nil client")
	}
	l := &Locker{
		client: client,
		prefix: DefaultPrefix,
		ttl:    int64(DefaultTTL / time.Second),
		starts: make(chan struct{}, 1),

		maxWatched: defaultMaxWatched,
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.apply(l); err != nil {
			return nil, err
		}
	}
	l.batch = &batcher{l: l}
	return l, nil
}

// Mutex names the lock called name without acquiring it. Its key is
// [KeyPrefix] + the Locker's prefix + name; any bytes are allowed in name,
// but it must be non-empty (Acquire of an empty name fails with
// [caesura.ErrInvalidLock]).
//
// The Lock also implements [caesura.TryLocker] and [caesura.BatchLock], and
// its Helds implement [caesura.Fenced] and [caesura.Lossy].
func (l *Locker) Mutex(name string) caesura.Lock {
	return &lock{
		l:     l,
		name:  name,
		key:   KeyPrefix + l.prefix + name,
		queue: l.prefix + escapeName(name) + "/",
	}
}

// Close ends the session: it stops the keep-alive and revokes the lease, so
// every lock still held through this Locker is released in etcd and reported
// lost (its Lost context is cancelled with [ErrClosed] and
// [ErrSessionEnded]). Later acquisitions fail with [ErrClosed]. Close waits
// for the Locker's background work to end; a second Close returns nil.
func (l *Locker) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	s := l.sess
	l.sess = nil
	l.mu.Unlock()
	var err error
	if s != nil {
		s.cancel(fmt.Errorf("etcdlock: lease %x: %w: %w", int64(s.id), ErrSessionEnded, ErrClosed))
		if _, rerr := l.client.Revoke(ctx, s.id); rerr != nil && !errors.Is(rerr, rpctypes.ErrLeaseNotFound) {
			err = fmt.Errorf("etcdlock: close: revoke lease %x: %w: %w", int64(s.id), ErrUnavailable, rerr)
		}
	}
	l.wg.Wait()
	return err
}

// session returns the live session, starting one if there is none.
func (l *Locker) session(ctx context.Context) (*session, error) {
	if s, err := l.current(); s != nil || err != nil {
		return s, err
	}
	select {
	case l.starts <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-l.starts }()
	if s, err := l.current(); s != nil || err != nil {
		return s, err
	}
	grant, err := l.client.Grant(ctx, l.ttl)
	if err != nil {
		return nil, fmt.Errorf("start session: grant lease: %w", err)
	}
	sctx, cancel := context.WithCancelCause(context.Background())
	ka, err := l.client.KeepAlive(sctx, grant.ID)
	if err != nil {
		cancel(err)
		l.revokeLater(grant.ID)
		return nil, fmt.Errorf("start session: keep lease alive: %w", err)
	}
	s := &session{id: grant.ID, ctx: sctx, cancel: cancel}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		cancel(ErrClosed)
		l.revokeLater(grant.ID)
		return nil, ErrClosed
	}
	l.sess = s
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		for range ka { // the client closes ka when the lease is gone or sctx ends
		}
		cancel(fmt.Errorf("etcdlock: lease %x: %w", int64(s.id), ErrSessionEnded))
	}()
	return s, nil
}

// current returns the live session, or nil, or ErrClosed.
func (l *Locker) current() (*session, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if l.sess != nil && l.sess.ctx.Err() == nil {
		return l.sess, nil
	}
	return nil, nil
}

// abandon ends s because a key of it may be left in etcd that nobody can
// delete (a request's outcome is unknown and the clean-up failed): it stops
// the keep-alive, so the lease expires within the TTL and takes its keys
// with it. The locks held through s are reported lost.
func (l *Locker) abandon(s *session, why error) {
	s.cancel(fmt.Errorf("etcdlock: lease %x abandoned after a failed clean-up (%v): %w", int64(s.id), why, ErrSessionEnded))
}

// revokeLater revokes a lease in the background, best effort.
func (l *Locker) revokeLater(id clientv3.LeaseID) {
	l.background(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		_, _ = l.client.Revoke(ctx, id) // best effort: the lease expires anyway
	})
}

// cleanupLater deletes ekey in the background, after a request whose outcome
// is unknown (rev == 0: by name, which is unique to one acquisition) or a
// release that failed (rev != 0: only that incarnation). If the delete fails
// too, it abandons s so that the lease takes the key away.
func (l *Locker) cleanupLater(s *session, ekey string, rev int64) {
	l.background(func() {
		if err := l.deleteKey(context.Background(), ekey, rev, cleanupTimeout); err != nil {
			l.abandon(s, err)
		}
	})
}

// background runs f in a goroutine that Close waits for; once Close has
// begun, it runs f at once instead.
func (l *Locker) background(f func()) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		f()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		f()
	}()
}

// deleteKey deletes ekey if its create revision is rev (any, if rev == 0),
// within timeout.
func (l *Locker) deleteKey(ctx context.Context, ekey string, rev int64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var err error
	if rev == 0 {
		_, err = l.client.Delete(ctx, ekey)
	} else {
		_, err = l.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(ekey), "=", rev)).
			Then(clientv3.OpDelete(ekey)).
			Commit()
	}
	return err
}

// newKey returns a fresh waiter key in queue for session s: unique to one
// acquisition, so deleting it by name can never touch another acquisition.
func (l *Locker) newKey(queue string, s *session) string {
	return fmt.Sprintf("%s%016x-%x", queue, int64(s.id), l.seq.Add(1))
}

// escapeName maps a lock name to a path segment without "/", one-to-one, so
// that one lock's queue prefix is never a prefix of another's.
func escapeName(name string) string {
	return nameEscaper.Replace(name)
}

var nameEscaper = strings.NewReplacer("%", "%25", "/", "%2F")
