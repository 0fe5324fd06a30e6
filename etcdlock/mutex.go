package etcdlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/caesura-go/caesura"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// lock is one named etcd lock: a FIFO queue of waiter keys under queue.
type lock struct {
	l     *Locker
	name  string
	key   string // the caesura key
	queue string // the etcd prefix of the queue, ending in "/"
}

var (
	_ caesura.TryLocker = (*lock)(nil)
	_ caesura.BatchLock = (*lock)(nil)
	_ caesura.Fenced    = (*held)(nil)
	_ caesura.Lossy     = (*held)(nil)
)

// Key returns the lock's key: [KeyPrefix], the Locker's prefix, the name.
func (m *lock) Key() string { return m.key }

// Batcher returns the Locker's Batcher, the same for all its locks.
func (m *lock) Batcher() caesura.Batcher { return m.l.batch }

func (m *lock) check() error {
	if m.name == "" {
		return fmt.Errorf("etcdlock: %w: empty lock name", caesura.ErrInvalidLock)
	}
	return nil
}

// Acquire queues for the lock and waits, in FIFO order, until it is at the
// head of the queue or ctx is done. It writes once (a transaction that puts
// the waiter key and reads the keys ahead of it). A waiter with a few keys
// ahead watches the queue's deletions and knows it is at the head when the
// last of them is deleted, without a read; one further back watches a
// single key ahead (see held.wait).
//
// Errors: [caesura.ErrNotAcquired] with ctx's error when ctx ended the wait;
// [ErrUnavailable] when etcd did not answer; [ErrSessionEnded] or
// [ErrKeyDeleted] when the session or the waiter key ended while waiting;
// [ErrClosed]; [caesura.ErrInvalidLock] for an empty name. On error no key
// of this acquisition is left in etcd (when etcd cannot be reached to delete
// it, the session is abandoned so that its lease takes the key away).
func (m *lock) Acquire(ctx context.Context) (caesura.Held, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, caesura.NotAcquired(m.key, err)
	}
	s, ekey, resp, err := m.put(ctx, "enqueue", func(s *session, ekey string) clientv3.Txn {
		return m.l.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(ekey), "=", 0)).
			Then(m.opAhead(0), clientv3.OpPut(ekey, "", clientv3.WithLease(s.id)))
	})
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("etcdlock: lock %s: waiter key %s exists already", quote(m.key), quote(ekey))
	}
	h := newHeld(m, s, ekey, resp.Header.Revision)
	if err := h.wait(ctx, aheadOf(resp.Responses[0], resp.Header.Revision)); err != nil {
		h.abort()
		return nil, err
	}
	return h, nil
}

// TryAcquire takes the lock if its queue is empty, in one transaction that
// writes nothing otherwise, and fails with [caesura.ErrNotAcquired] if the
// lock is held or waited for. ctx bounds the request; other errors are as
// for Acquire.
func (m *lock) TryAcquire(ctx context.Context) (caesura.Held, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, caesura.NotAcquired(m.key, err)
	}
	s, ekey, resp, err := m.put(ctx, "try", func(s *session, ekey string) clientv3.Txn {
		return m.l.client.Txn(ctx).If(m.cmpFree()).Then(clientv3.OpPut(ekey, "", clientv3.WithLease(s.id)))
	})
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("etcdlock: lock %s: %w: taken", quote(m.key), caesura.ErrNotAcquired)
	}
	return newHeld(m, s, ekey, resp.Header.Revision), nil
}

// put runs the transaction that txn builds to create a waiter key with the
// session's lease. If the lease turns out to be gone (revoked before the
// keep-alive noticed), nothing was written: it ends that session and tries
// once more with a new one. After any other failure the outcome is unknown,
// so it deletes the key in the background.
func (m *lock) put(ctx context.Context, op string, txn func(s *session, ekey string) clientv3.Txn) (*session, string, *clientv3.TxnResponse, error) {
	for attempt := 0; ; attempt++ {
		s, err := m.l.session(ctx)
		if err != nil {
			return nil, "", nil, m.requestErr(ctx, err)
		}
		ekey := m.l.newKey(m.queue, s)
		resp, err := txn(s, ekey).Commit()
		if err == nil {
			return s, ekey, resp, nil
		}
		if attempt == 0 && errors.Is(err, rpctypes.ErrLeaseNotFound) {
			s.cancel(fmt.Errorf("etcdlock: lease %x: %w: %w", int64(s.id), ErrSessionEnded, err))
			continue
		}
		m.l.cleanupLater(s, ekey, 0)
		return nil, "", nil, m.requestErr(ctx, fmt.Errorf("%s: %w", op, err))
	}
}

// cmpFree is true when the queue is empty: no key under it has a create
// revision other than 0 (etcd compares an empty range as one absent key).
func (m *lock) cmpFree() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(m.queue), "=", 0).WithPrefix()
}

// opAhead reads the keys of the queue created before revision below (all,
// if below == 0): the keys ahead of a waiter, newest first, at most the
// Locker's maxWatched of them (the response's More flag tells whether there
// are more).
func (m *lock) opAhead(below int64) clientv3.Op {
	opts := []clientv3.OpOption{
		clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend),
		clientv3.WithLimit(int64(max(m.l.maxWatched, 1))),
		clientv3.WithKeysOnly(),
	}
	if below > 0 {
		opts = append(opts, clientv3.WithMaxCreateRev(below-1))
	}
	return clientv3.OpGet(m.queue, opts...)
}

// requestErr wraps a failed request's error: with ErrNotAcquired and ctx's
// error when ctx is done, with ErrUnavailable unless it is ErrClosed.
func (m *lock) requestErr(ctx context.Context, err error) error {
	if errors.Is(err, ErrClosed) {
		return fmt.Errorf("etcdlock: lock %s: %w", quote(m.key), err)
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%w: %v)", caesura.NotAcquired(m.key, cerr), ErrUnavailable, err)
	}
	return fmt.Errorf("etcdlock: lock %s: %w: %w", quote(m.key), ErrUnavailable, err)
}

// ahead is one read of the keys queued before a waiter's key (opAhead).
type ahead struct {
	kvs  []*mvccpb.KeyValue // newest first, at most maxWatched
	more bool               // more keys than kvs are ahead
	rev  int64              // the revision the read saw
}

// aheadOf returns the ahead of opAhead's response r, part of a response at
// revision rev.
func aheadOf(r *etcdserverpb.ResponseOp, rev int64) ahead {
	rr := r.GetResponseRange()
	if rr == nil {
		return ahead{rev: rev}
	}
	return ahead{kvs: rr.Kvs, more: rr.More, rev: rev}
}

// held is one acquisition: the waiter key ekey created at revision rev. It
// exists from the moment the key is created, so that a waiter notices its
// key's deletion the same way a holder does.
type held struct {
	m    *lock
	s    *session
	ekey string
	rev  int64

	lost       context.Context // cancelled when the key or session is gone
	cancelLost context.CancelCauseFunc
	timer      *time.Timer        // starts the monitor
	stop       context.Context    // the monitor's: done when stopped or lost
	stopFn     context.CancelFunc // stops the monitor
	done       chan struct{}      // closed when the monitor has returned
	released   atomic.Bool
}

// errReleased is the cause of a Lost context cancelled by Release.
var errReleased = errors.New("etcdlock: lock released")

func newHeld(m *lock, s *session, ekey string, rev int64) *held {
	lost, cancel := context.WithCancelCause(s.ctx)
	stop, stopFn := context.WithCancel(lost)
	h := &held{m: m, s: s, ekey: ekey, rev: rev, lost: lost, cancelLost: cancel,
		stop: stop, stopFn: stopFn, done: make(chan struct{})}
	h.timer = time.AfterFunc(monitorDelay, h.monitor)
	return h
}

// monitorDelay is how long a Held waits before it watches its key. A watch
// costs hundreds of allocations in the client and a read; a lock released
// sooner never pays for them. Nothing is missed: once the watch is in
// place, a read checks the key.
const monitorDelay = 50 * time.Millisecond

// Token returns the fencing token: the waiter key's create revision, which
// is higher for every later acquisition of the lock (etcd revisions only
// grow, and a later waiter key is always created later). Storage that keeps
// the highest token it has seen and refuses lower ones makes a stale holder
// harmless.
func (h *held) Token() uint64 { return uint64(h.rev) }

// Lost returns a context cancelled when the lock is lost: its session ended
// (cause matching [ErrSessionEnded]) or its key was deleted by someone else
// (cause matching [ErrKeyDeleted]). Release cancels it too.
func (h *held) Lost() context.Context { return h.lost }

// Release deletes the lock's key, but only the key of this acquisition (a
// transaction conditioned on its create revision), so a stale or repeated
// release never deletes a newer holder's key. It returns an error matching
// [caesura.ErrNotHeld] when the lock was released already or lost, and one
// matching [ErrUnavailable] when etcd did not answer (the key is then
// deleted in the background, or its session abandoned so that the lease
// takes it away).
func (h *held) Release(ctx context.Context) error {
	if !h.released.CompareAndSwap(false, true) {
		return fmt.Errorf("etcdlock: release %s: %w", quote(h.m.key), caesura.ErrNotHeld)
	}
	h.stopMonitor()
	var lostCause error
	if h.lost.Err() != nil {
		lostCause = context.Cause(h.lost)
	}
	resp, err := h.m.l.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(h.ekey), "=", h.rev)).
		Then(clientv3.OpDelete(h.ekey)).
		Commit()
	h.cancelLost(errReleased)
	if err != nil {
		h.m.l.cleanupLater(h.s, h.ekey, h.rev)
		err = fmt.Errorf("etcdlock: release %s: %w: %w", quote(h.m.key), ErrUnavailable, err)
	} else {
		h.m.l.freeKey(h.ekey) // deleted now, or gone before
	}
	switch {
	case lostCause != nil:
		return errors.Join(fmt.Errorf("etcdlock: release %s: %w: %w", quote(h.m.key), caesura.ErrNotHeld, lostCause), err)
	case err != nil:
		return err
	case !resp.Succeeded:
		return fmt.Errorf("etcdlock: release %s: %w: key %s no longer exists", quote(h.m.key), caesura.ErrNotHeld, quote(h.ekey))
	}
	return nil
}

// abort gives up a waiter key after a failed wait.
func (h *held) abort() {
	h.released.Store(true)
	h.stopMonitor()
	h.cancelLost(errReleased)
	// Delete the key now, so the lock is free when Acquire returns; if
	// etcd is slow to answer, go on trying in the background.
	if err := h.m.l.deleteKey(context.Background(), h.ekey, h.rev, time.Second); err != nil {
		h.m.l.cleanupLater(h.s, h.ekey, h.rev)
	} else {
		h.m.l.freeKey(h.ekey)
	}
}

func (h *held) stopMonitor() {
	h.stopFn()
	if h.timer.Stop() {
		return // never started
	}
	<-h.done
}

// monitor watches the key for deletion until stopped or lost. The watch
// starts at the current revision, so the server counts it as synced (a watch
// from an older revision is served by a 100 ms catch-up loop that also
// delays other watchers); once the server has confirmed it, a read checks
// that the key was not deleted before.
func (h *held) monitor() {
	defer close(h.done)
	for h.stop.Err() == nil {
		// Watch blocks until the server accepts the watch, so with etcd
		// unreachable only its context ends it: h.stop, done when the
		// monitor is stopped (Release waits for it) or the lock is lost.
		wctx, wcancel := context.WithCancel(h.stop)
		wch := h.m.l.client.Watch(wctx, h.ekey, clientv3.WithCreatedNotify(), clientv3.WithFilterPut())
		gone, stopped := h.watchKey(wch)
		wcancel()
		if gone {
			h.keyGone()
			return
		}
		if stopped {
			return
		}
		// The watch broke (client reconnecting): pause, then watch again.
		select {
		case <-h.stop.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// watchKey follows one watch of the key until the key is gone, the monitor
// is stopped or the lock lost, or the watch breaks (neither).
func (h *held) watchKey(wch clientv3.WatchChan) (gone, stopped bool) {
	for {
		select {
		case <-h.stop.Done():
			return false, true
		case resp, ok := <-wch:
			switch {
			case !ok || resp.Canceled || resp.Err() != nil:
				return false, false
			case resp.Created:
				exists, err := h.exists()
				if err != nil {
					return false, false
				}
				if !exists {
					return true, false
				}
			default:
				for _, ev := range resp.Events {
					if ev.Type == clientv3.EventTypeDelete {
						return true, false
					}
				}
			}
		}
	}
}

// exists reads whether the key of this acquisition still exists.
func (h *held) exists() (bool, error) {
	ctx, cancel := context.WithTimeout(h.stop, cleanupTimeout) // ends early when stopped
	defer cancel()
	resp, err := h.m.l.client.Get(ctx, h.ekey, clientv3.WithKeysOnly())
	if err != nil {
		return false, err
	}
	return len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision == h.rev, nil
}

// keyGone reports the deletion of the key at once, without a request
// first: the Lost context is cancelled with a cause matching
// [ErrKeyDeleted]. A delete event does not say whether someone deleted the
// key or the lease was revoked or expired, and a holder must learn of the
// loss before the next waiter, which sees the same event, can take the
// lock: so only then does it ask the keep-alive loop to renew the lease,
// which ends the session (and so loses the session's other locks) if the
// lease is gone. A waiter learns which it was from waitLost.
func (h *held) keyGone() {
	h.cancelLost(fmt.Errorf("etcdlock: lock %s: key %s deleted by someone else or with lease %x: %w",
		quote(h.m.key), quote(h.ekey), int64(h.s.id), ErrKeyDeleted))
	h.s.check()
}

// wait blocks until the key is at the head of its queue: no key created
// before it is left. a is what the enqueue transaction read of the keys
// ahead.
//
// With at most the Locker's maxWatched keys ahead, the waiter follows them
// all (awaitQueue): it watches the queue's deletions, reads the keys ahead
// once the watch is in place, and then counts them down from the events
// alone, so the release of the key before it hands the lock over without a
// further request. With more keys ahead it watches only the maxWatched-th
// of them (awaitKey) and reads the queue again when that key is gone. A
// release thus sends events to at most maxWatched waiters that follow the
// whole queue (each has at most that many keys ahead, and no two have the
// same number), plus the waiters that watch the released key itself. In
// FIFO order the key a waiter watches goes when maxWatched-1 keys are left
// ahead of it, so with maxWatched above 1 the waiter follows them all, a
// watch and a read later, before the last of them is released.
//
// Every watch starts at the current revision, so the server counts it as
// synced and sends events at once (a watch from an older revision is
// served by a 100 ms catch-up loop); the read that follows its
// confirmation covers what happened before. No event makes a waiter send
// a request, except a deletion of the one key it watches in awaitKey or of
// its own key. A watch that breaks is opened again and followed by a new
// read.
func (h *held) wait(ctx context.Context, a ahead) error {
	breaks := 0 // watches in a row that broke before the server confirmed them
	for len(a.kvs) > 0 {
		var (
			next ahead
			err  error
		)
		if a.more {
			next, err = h.awaitKey(ctx, a.kvs[len(a.kvs)-1])
		} else {
			next, err = h.awaitQueue(ctx)
		}
		var wb *watchBreak
		if !errors.As(err, &wb) {
			if err != nil {
				return err
			}
			a = next
			continue
		}
		if wb.created {
			breaks = 0
		}
		if breaks++; breaks >= maxWatchBreaks {
			return fmt.Errorf("etcdlock: lock %s: watch queue: %w: %w", quote(h.m.key), ErrUnavailable, wb.err)
		}
		t := time.NewTimer(watchRetryDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return caesura.NotAcquired(h.m.key, ctx.Err())
		case <-h.lost.Done():
			t.Stop()
			return h.waitLost()
		case <-t.C:
		}
		// Watch again with the same a: the read after the new watch's
		// confirmation brings it up to date.
	}
	return nil
}

const (
	// maxWatchBreaks is how many watches in a row may break before the
	// server confirms them until a waiter gives up with ErrUnavailable.
	maxWatchBreaks = 3
	// watchRetryDelay is the pause before a broken watch is opened again.
	watchRetryDelay = 100 * time.Millisecond
)

// watchBreak is the error of a watch that ended while its waiter still
// waits: the client was closed, or the server cancelled the watch (its
// revision was compacted during a reconnection, say). wait opens a new one.
type watchBreak struct {
	created bool // the server had confirmed the watch
	err     error
}

func (e *watchBreak) Error() string { return "watch broke: " + e.err.Error() }
func (e *watchBreak) Unwrap() error { return e.err }

// watchBroke returns the error of a watch response that ended the watch:
// ErrNotAcquired if ctx is done (which ends the watch), else a watchBreak.
func (h *held) watchBroke(ctx context.Context, created bool, resp clientv3.WatchResponse) error {
	if err := ctx.Err(); err != nil {
		return caesura.NotAcquired(h.m.key, err)
	}
	err := resp.Err()
	if err == nil {
		err = errors.New("watch closed")
	}
	return &watchBreak{created: created, err: err}
}

// awaitQueue follows every key ahead through one watch of the queue's
// deletions until none is left (it returns an empty ahead) or a read finds
// more than maxWatched keys ahead (it returns that read).
func (h *held) awaitQueue(ctx context.Context) (ahead, error) {
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := h.m.l.client.Watch(wctx, h.m.queue, clientv3.WithPrefix(), clientv3.WithCreatedNotify(), clientv3.WithFilterPut())
	var (
		created bool
		left    keysAhead
	)
	for {
		select {
		case <-ctx.Done():
			return ahead{}, caesura.NotAcquired(h.m.key, ctx.Err())
		case <-h.lost.Done():
			return ahead{}, h.waitLost()
		case resp, ok := <-wch:
			switch {
			case !ok || resp.Canceled || resp.Err() != nil:
				return ahead{}, h.watchBroke(ctx, created, resp)
			case resp.Created:
				created = true
				a, err := h.readAhead(ctx)
				if err != nil || a.more || len(a.kvs) == 0 {
					return a, err
				}
				left = newKeysAhead(a)
			case created:
				if left.apply(h.ekey, resp.Events) {
					h.keyGone()
					return ahead{}, h.waitLost()
				}
				if len(left.keys) == 0 {
					return ahead{}, nil
				}
			}
		}
	}
}

// awaitKey waits on a watch of kv, a key ahead, until it is gone, and
// returns a new read of the keys ahead. It returns that read at once if the
// read after the watch's confirmation finds kv no longer the key to watch.
func (h *held) awaitKey(ctx context.Context, kv *mvccpb.KeyValue) (ahead, error) {
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := h.m.l.client.Watch(wctx, string(kv.Key), clientv3.WithCreatedNotify(), clientv3.WithFilterPut())
	created := false
	for {
		select {
		case <-ctx.Done():
			return ahead{}, caesura.NotAcquired(h.m.key, ctx.Err())
		case <-h.lost.Done():
			return ahead{}, h.waitLost()
		case resp, ok := <-wch:
			switch {
			case !ok || resp.Canceled || resp.Err() != nil:
				return ahead{}, h.watchBroke(ctx, created, resp)
			case resp.Created:
				created = true
				a, err := h.readAhead(ctx)
				if err != nil || !a.more {
					return a, err
				}
				if w := a.kvs[len(a.kvs)-1]; w.CreateRevision != kv.CreateRevision || !bytes.Equal(w.Key, kv.Key) {
					return a, nil
				}
			default:
				for _, ev := range resp.Events {
					if ev.Type == clientv3.EventTypeDelete {
						return h.readAhead(ctx)
					}
				}
			}
		}
	}
}

// readAhead reads the keys ahead of ours, checking in the same transaction
// that ours still exists.
func (h *held) readAhead(ctx context.Context) (ahead, error) {
	resp, err := h.m.l.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(h.ekey), "=", h.rev)).
		Then(h.m.opAhead(h.rev)).
		Commit()
	if err != nil {
		return ahead{}, h.m.requestErr(ctx, fmt.Errorf("read queue: %w", err))
	}
	if !resp.Succeeded {
		h.keyGone()
		return ahead{}, h.waitLost()
	}
	return aheadOf(resp.Responses[0], resp.Header.Revision), nil
}

// keysAhead is the set of keys ahead of a waiter's key: those a read at
// revision rev found, less those deleted since. It only shrinks: a key
// created later is behind the waiter's.
type keysAhead struct {
	keys []string
	rev  int64
}

func newKeysAhead(a ahead) keysAhead {
	keys := make([]string, len(a.kvs))
	for i, kv := range a.kvs {
		keys[i] = string(kv.Key)
	}
	return keysAhead{keys: keys, rev: a.rev}
}

// apply removes the keys that events delete, and reports whether one of
// them deletes own, the waiter's key. Only events after the read count: an
// earlier one is in the read already, and its key, if the read found one
// of that name, is a newer incarnation (a delete event carries the key and
// the deletion's revision, not the create revision of what it deleted).
func (k *keysAhead) apply(own string, events []*clientv3.Event) (ownDeleted bool) {
	for _, ev := range events {
		if ev.Type != clientv3.EventTypeDelete || ev.Kv.ModRevision <= k.rev {
			continue
		}
		if string(ev.Kv.Key) == own {
			return true
		}
		for i, key := range k.keys {
			if key == string(ev.Kv.Key) {
				k.keys[i] = k.keys[len(k.keys)-1]
				k.keys = k.keys[:len(k.keys)-1]
				break
			}
		}
	}
	return false
}

// waitLost is the error of a waiter whose key or session ended. A waiter
// has nothing to lose by a round trip, so when its key was deleted it asks
// whether the lease is gone too, and if so ends the session and reports
// that instead (matching [ErrSessionEnded], not [ErrKeyDeleted]).
func (h *held) waitLost() error {
	cause := context.Cause(h.lost)
	if errors.Is(cause, ErrKeyDeleted) && h.m.l.leaseGone(h.s) {
		cause = context.Cause(h.s.ctx)
	}
	return fmt.Errorf("etcdlock: lock %s: waiting stopped: %w", quote(h.m.key), cause)
}

// batcher acquires runs of one Locker's locks.
type batcher struct{ l *Locker }

// AcquireBatch acquires locks (sorted by key, all from this Locker) in as few
// transactions as the ordering rule allows: one transaction takes every lock
// when all are free. Otherwise it takes the free locks below the first
// taken one, together with a place in that one's queue, in one transaction,
// waits for it, and goes on with the rest. It never queues for a lock
// before every lower lock of the batch is held. On error no lock of the
// batch is held.
func (b *batcher) AcquireBatch(ctx context.Context, locks []caesura.Lock) ([]caesura.Held, error) {
	ms := make([]*lock, len(locks))
	for i, x := range locks {
		m, ok := x.(*lock)
		if !ok || m.l != b.l {
			return nil, fmt.Errorf("etcdlock: batch: %w: lock %d is not from this Locker", caesura.ErrInvalidLock, i)
		}
		if err := m.check(); err != nil {
			return nil, err
		}
		if i > 0 && m.key <= ms[i-1].key {
			// Two keys of one caller in one queue at one revision would
			// both see no key ahead: refuse rather than hold twice.
			return nil, fmt.Errorf("etcdlock: batch: %w: locks not sorted or duplicated at %s", caesura.ErrInvalidLock, quote(m.key))
		}
		ms[i] = m
	}
	helds := make([]caesura.Held, 0, len(ms))
	fail := func(err error) ([]caesura.Held, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		for i := len(helds) - 1; i >= 0; i-- {
			if rerr := helds[i].Release(ctx); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		return nil, err
	}
	for i := 0; i < len(ms); {
		if err := ctx.Err(); err != nil {
			return fail(caesura.NotAcquired(ms[i].key, err))
		}
		s, err := b.l.session(ctx)
		if err != nil {
			return fail(ms[i].requestErr(ctx, err))
		}
		rest := ms[i:]
		ekeys := make([]string, len(rest))
		cmps := make([]clientv3.Cmp, len(rest))
		puts := make([]clientv3.Op, len(rest))
		counts := make([]clientv3.Op, len(rest))
		for j, m := range rest {
			ekeys[j] = b.l.newKey(m.queue, s)
			cmps[j] = m.cmpFree()
			puts[j] = clientv3.OpPut(ekeys[j], "", clientv3.WithLease(s.id))
			counts[j] = clientv3.OpGet(m.queue, clientv3.WithPrefix(), clientv3.WithCountOnly())
		}
		resp, err := b.l.client.Txn(ctx).If(cmps...).Then(puts...).Else(counts...).Commit()
		if err != nil {
			for _, k := range ekeys {
				b.l.cleanupLater(s, k, 0)
			}
			return fail(rest[0].requestErr(ctx, fmt.Errorf("batch: %w", err)))
		}
		if resp.Succeeded {
			for j, m := range rest {
				helds = append(helds, newHeld(m, s, ekeys[j], resp.Header.Revision))
			}
			return helds, nil
		}
		k := -1 // the first taken lock of rest
		for j, r := range resp.Responses {
			if rr := r.GetResponseRange(); rr != nil && rr.Count > 0 {
				k = j
				break
			}
		}
		// The transaction took its else branch: no key was written, and
		// the next one writes only ekeys[:k+1].
		unused := ekeys
		if k >= 0 {
			unused = ekeys[k+1:]
		}
		for _, key := range unused {
			b.l.freeKey(key)
		}
		if k < 0 {
			continue // freed meanwhile: try the whole rest again
		}
		// Take rest[:k] (free) and queue for rest[k] in one transaction.
		ops := make([]clientv3.Op, 0, k+2)
		ops = append(ops, puts[:k]...)
		ops = append(ops, rest[k].opAhead(0), puts[k])
		resp, err = b.l.client.Txn(ctx).If(cmps[:k]...).Then(ops...).Commit()
		if err != nil {
			for _, key := range ekeys[:k+1] {
				b.l.cleanupLater(s, key, 0)
			}
			return fail(rest[0].requestErr(ctx, fmt.Errorf("batch: %w", err)))
		}
		if !resp.Succeeded {
			for _, key := range ekeys[:k+1] {
				b.l.freeKey(key) // not written
			}
			continue // one of rest[:k] was taken meanwhile: start over at i
		}
		for j := range k {
			helds = append(helds, newHeld(rest[j], s, ekeys[j], resp.Header.Revision))
		}
		h := newHeld(rest[k], s, ekeys[k], resp.Header.Revision)
		if err := h.wait(ctx, aheadOf(resp.Responses[k], resp.Header.Revision)); err != nil {
			h.abort()
			return fail(err)
		}
		helds = append(helds, h)
		i += k + 1
	}
	return helds, nil
}

// ReleaseBatch releases Helds of this Locker in one transaction: each key is
// deleted only if it still has the create revision of its acquisition, so it
// is as safe as Release one by one. The core calls it for a run of locks a
// batch acquired ([caesura.BatchReleaser]). Errors name each lock that was
// no longer held; if etcd does not answer, every key is deleted in the
// background, as Release does.
func (b *batcher) ReleaseBatch(ctx context.Context, helds []caesura.Held) error {
	var errs []error
	hs := make([]*held, 0, len(helds))
	for _, x := range helds {
		h, ok := x.(*held)
		if !ok || h.m.l != b.l {
			errs = append(errs, fmt.Errorf("etcdlock: ReleaseBatch: %w: %T is not a Held of this Locker", caesura.ErrInvalidLock, x))
			continue
		}
		if !h.released.CompareAndSwap(false, true) {
			errs = append(errs, fmt.Errorf("etcdlock: release %s: %w", quote(h.m.key), caesura.ErrNotHeld))
			continue
		}
		h.stopMonitor()
		hs = append(hs, h)
	}
	if len(hs) == 0 {
		return errors.Join(errs...)
	}
	ops := make([]clientv3.Op, len(hs))
	for i, h := range hs {
		ops[i] = clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(h.ekey), "=", h.rev)},
			[]clientv3.Op{clientv3.OpDelete(h.ekey)}, nil)
	}
	resp, err := b.l.client.Txn(ctx).Then(ops...).Commit()
	for i, h := range hs {
		var lostCause error
		if h.lost.Err() != nil {
			lostCause = context.Cause(h.lost)
		}
		h.cancelLost(errReleased)
		switch {
		case err != nil:
			h.m.l.cleanupLater(h.s, h.ekey, h.rev)
			errs = append(errs, fmt.Errorf("etcdlock: release %s: %w: %w", quote(h.m.key), ErrUnavailable, err))
		case lostCause != nil:
			errs = append(errs, fmt.Errorf("etcdlock: release %s: %w: %w", quote(h.m.key), caesura.ErrNotHeld, lostCause))
		case !resp.Responses[i].GetResponseTxn().Succeeded:
			errs = append(errs, fmt.Errorf("etcdlock: release %s: %w: key %s no longer exists", quote(h.m.key), caesura.ErrNotHeld, quote(h.ekey)))
		}
		if err == nil {
			h.m.l.freeKey(h.ekey) // deleted now, or gone before
		}
	}
	return errors.Join(errs...)
}
