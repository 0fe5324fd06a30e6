// Package etcdlock is the etcd backend of caesura: locks kept in an etcd
// cluster through a *clientv3.Client that the caller hands in, with FIFO
// waiting, fencing tokens and loss reported as context cancellation.
//
// It is a module of its own, so that etcd's client, gRPC and protobuf reach
// only the programs that use etcd.
//
//	locks, err := etcdlock.New(client, etcdlock.WithTTL(10*time.Second))
//	...
//	defer locks.Close(ctx)
//	err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
//		return yield(locks.Mutex("user:42"))
//	})
//
// # How a lock is kept
//
// A [Locker] owns one session: one lease, renewed by the Locker every third
// of its TTL ([WithRenewInterval]), shared by all its locks. A lock named n is a queue of waiter
// keys under prefix + n + "/" (with "/" and "%" in n escaped, so that no
// queue is a prefix of another); every acquisition creates a key of its own,
// attached to the lease, in a transaction that also reads the keys already
// queued (the newest of them, or the newest n with [WithWatchAhead]). The
// holder is the key with the lowest create revision. Key names are reused
// once their key is known to be gone, so a queue sees about as many names as
// acquisitions ever ran at once: etcd keeps every name in its index until
// compaction, and a waiter's read visits them all.
//
// # Guarantees
//
//   - Mutual exclusion while the session lives: at most one acquisition's key
//     is at the head of a queue, and an acquisition is reported only once its
//     key is there: a linearizable read found its key with no key created
//     before it, or found its key and every key created before it, after
//     which the watch events (delivered in revision order) showed each of
//     those deleted and its own key not.
//   - FIFO order: waiters get the lock in the order their keys were created
//     (their create revisions). By default a waiter watches only its
//     predecessor (no herd), and reads the queue again when that key is
//     gone; the one waiter right behind the holder instead watches its
//     queue's deletions and, once the server confirms the watch, reads
//     which keys are ahead (at a revision R); from then on it strikes a key
//     off only on a delete event later than R, and holds the lock when none
//     is left, so a release hands the lock over with one event and no
//     request. The set only shrinks: a later key is behind. [WithWatchAhead]
//     lets waiters with up to n keys ahead follow the queue that way (every
//     deletion then reaches up to n waiters). Watches are opened at the
//     current revision (the server counts them as synced and sends a
//     deletion at once; a watch from an older revision is served by a
//     100 ms catch-up loop, which is what pins etcd's own concurrency.Mutex
//     at about ten hand-offs a second per waiter), and the read after the
//     server's confirmation covers what happened before; a watch that
//     breaks is opened again and followed by a new read.
//   - Release is conditioned on the key's create revision, and no two keys
//     that exist at once share a name (a name is reused only once its key is
//     known to be gone, never after a request whose outcome is unknown): a
//     stale or repeated Release can never delete a newer holder's key (etcd
//     issue 22082). It reports [caesura.ErrNotHeld] instead.
//   - TryAcquire takes the lock in one transaction only if its queue is
//     empty, and writes nothing otherwise.
//   - A run of this backend's locks in one yield is taken in one transaction
//     when all are free, all their tokens then being that transaction's
//     revision. Otherwise the free locks below the first taken one are taken
//     together with a place in that one's queue (one transaction), and so on
//     upwards. A batch never queues for a lock before every lower lock of the
//     batch is held: a place at the head of a queue is the lock, so queueing
//     for several at once would hold a higher lock while waiting for a lower
//     one, which is how deadlocks start.
//   - Errors tell apart: a taken lock or an ended context
//     ([caesura.ErrNotAcquired], with the context's error), an etcd that did
//     not answer ([ErrUnavailable], together with the former if the context
//     ended during a request), a session or key that ended while waiting
//     ([ErrSessionEnded], [ErrKeyDeleted]), and a closed Locker ([ErrClosed]).
//   - A failed acquisition leaves no key behind: its key is deleted, or, when
//     etcd cannot be reached to delete it, the session is abandoned (its
//     keep-alive stopped) so that the lease takes the key away within the TTL.
//     Abandoning a session loses the other locks held through it.
//
// # Lock loss and fencing
//
// A held lock is lost when its session ends (the lease expired because
// keep-alives did not get through within the TTL, or it was revoked) or when
// someone deletes its key. The Held's Lost context ([caesura.Lossy]) is then
// cancelled with a cause matching [ErrSessionEnded] or [ErrKeyDeleted], and
// the core cancels the function's context with [caesura.ErrLockLost]. The
// point is to tell the holder before another process can take the lock:
//
//   - Key deleted or lease revoked: an acquisition that lasts longer than
//     50 ms (waiting included) watches its own key, with a watch the server
//     counts as synced followed by a read that checks the key was not
//     deleted before it (a shorter hold skips the watch, which costs
//     hundreds of client allocations). The delete event cancels the Lost
//     context at once, with no request first, so the holder learns of the
//     loss from the same event, at the same time, as the next waiter learns
//     it may go on. A delete event does not say whether the lease went with
//     the key, so the cause matches [ErrKeyDeleted] (its message says the
//     lease may be gone); the Locker then renews the lease, and if it is
//     gone ends the session, and the session's other locks are lost with
//     [ErrSessionEnded]. A waiter is told precisely which it was.
//   - Partition, or a cluster that does not answer: the Locker renews the
//     lease itself (a single keep-alive request every renew interval, with
//     a timeout) and notes the time, on the monotonic clock, just before
//     sending each request the server confirmed. The server renews the
//     lease after that request arrives, so it cannot expire the lease
//     before that time plus the TTL on its own clock. The Locker ends the
//     session, for all its locks, with a cause matching [ErrSessionEnded],
//     as soon as TTL - drift has passed since that time, by a timer of its
//     own ([WithDrift]; by default 2% of the TTL, at least 10 ms, plus
//     100 ms). So if the client's and the server's clocks run at rates that
//     differ by less than the drift's share of the TTL, and the process
//     reacts to its timer within the rest of the drift, a partitioned
//     holder's context is cancelled before the server can expire the lease,
//     and so before any other process can take the lock. It then revokes
//     the lease, best effort, so that the locks are free at once if the
//     cluster can be reached after all.
//
// A waiter whose session ends stops waiting with an error matching
// [ErrSessionEnded] (etcd issue 19597).
//
// The fencing token ([caesura.Fenced], read with [caesura.Token]) is the
// waiter key's create revision: a later acquisition of the same lock always
// has a higher one. It is a revision of the cluster, so tokens of different
// locks in one cluster are comparable too (a batch taken in one transaction
// shares one token).
//
// # Cost
//
// Measured side by side with etcd's concurrency.Mutex on one embedded etcd
// server with fsync, on a shared 2-vCPU VM (bench/etcd in this repository;
// figures vary up to 2x with the machine's load):
//
//   - Uncontended acquire and release: two writes, like the Mutex (2.2 ms
//     against 2.4 ms).
//   - Contended, 8 goroutines on one lock: a hand-off costs the release's
//     write and one watch event (the next waiter sends no request of its
//     own): a median of 577 acquisitions/s over six runs on a heavily
//     loaded VM (336-726) with hand-off p50 1.1 ms and p99 9 ms, against
//     the Mutex's 78/s with p99 96 ms. The lock goes strictly in queue
//     order; the benchmark's FIFO fraction, which ranks contenders by when
//     they called, was 0.98-0.998, its misses being calls that overlapped
//     and were queued in the order their writes committed.
//   - Eight free locks in one yield: one write (2.1 ms against 8.8 ms for
//     eight Mutexes in sequence). Releasing them is still eight writes.
//
// # Non-guarantees
//
//   - A lease is a timeout, and a cancelled context only asks the function
//     to stop. A holder paused (GC, a stopped VM) for longer than the drift
//     allows, or one whose function does not stop when told, can go on
//     running after its lock passed to someone else. Only storage that
//     rejects writes with a token lower than one it has seen makes such a
//     stale holder harmless.
//   - The TTL is whole seconds: [WithTTL] rounds up, and the server raises it
//     to its minimum (2 s with the default election timeout).
//   - Locks are not reentrant: acquiring a lock the same scope holds is the
//     core's business (a no-op there); two acquisitions through one Locker
//     exclude each other like any others.
//   - Lockers whose prefixes nest ("/a/" and "/a/x/") can see each other's
//     keys; give each application its own prefix.
//   - Releasing several locks costs one write each: the core releases them
//     one at a time.
package etcdlock
