// Package redislock is the Redis backend of caesura: leased locks with
// background renewal and a loss signal, FIFO waiting woken by server push,
// all-or-nothing multi-key acquisition in one round trip, and fencing tokens.
// It works with any go-redis v9 client (standalone, Sentinel failover,
// Cluster) through the narrow [Client] interface.
//
//	rl, err := redislock.New(client, nil) // nil: the defaults
//	defer rl.Close()
//	err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
//		return yield(rl.Mutex("account:"+from), rl.Mutex("account:"+to))
//	})
//
// # Guarantees
//
//   - Ownership: every acquisition has its own random 128-bit token. Release
//     and renewal compare the token first and act in the same server step
//     (a Lua script, or a conditional SET: see below), so a stale holder can
//     never release or extend a newer holder's lock; its Release returns an
//     error matching [caesura.ErrNotHeld].
//   - Leases: a lock lives for [Options.TTL] (10s by default) unless renewed.
//     A held lock is renewed every TTL/3. Its validity is measured with the
//     monotonic clock from before the request was sent and ends Drift
//     before the lease could expire on the server. If renewal finds the lock
//     gone or owned by another token ([ErrStolen]), or cannot get an answer
//     before the validity ends ([ErrLeaseExpired]), the Held's Lost context
//     is cancelled with a [*caesura.LostError], and the core cancels the
//     function's context: before Redis could give the key to anyone else,
//     provided clocks do not drift by more than Drift over a TTL.
//   - Waiting is fair and pushed: a waiter that finds the lock taken joins
//     the lock's FIFO queue (kept in Redis, so waiters of every process share
//     it). Release hands the lock straight to the head waiter and publishes
//     one message on the channel of the waiter's Locker; the waiter is done
//     when it reads it, without another round trip, no other Locker is
//     woken, and a releaser that asks again queues behind the others. All
//     waiters of a Locker share one subscription.
//     Every waiter also re-checks after [Options.Recheck] (1s) or when the
//     holder's lease ends, whichever is sooner, so a lost message costs at
//     most Recheck and a crashed holder at most its remaining lease. A waiter
//     that stops re-checking (a crashed process) drops out of the queue after
//     3×Recheck+1s. The subscription is confirmed before a waiter queues, so
//     a release cannot slip between the check and the subscription; after a
//     reconnection every waiter re-checks.
//   - Batches: [Locker.AcquireBatch] takes a sorted run of this Locker's keys
//     all-or-nothing in one script call; [Locker.ReleaseBatch] frees them in
//     one. While it waits a batch holds no key above the one it waits for
//     (keys handed to it above that are handed on at once) and queues for
//     that one key only, so batches keep the global order and cannot
//     deadlock one another. In Redis Cluster, keys in one call must share a
//     hash slot: consecutive keys that share a slot (give them a common hash
//     tag, as in "{order:42}:lines" and "{order:42}:total") go in one call,
//     and the runs are taken one after another in key order.
//   - Fencing: [Held.Token] comes from the same script as the acquisition:
//     each acquisition of a key gets the token after the one before, and a
//     key Redis no longer has (expired, or lost with a server restarted
//     without persistence) starts from the server clock in microseconds,
//     above every earlier token. So tokens never go back, across lease
//     expiries and restarts, as long as the server's clock does not step
//     back by more than a lease across an expiry, and the tokens before a
//     failover reached the replica (see below). Tokens are large numbers
//     (about 1.8e15 in 2026); compare them, do not count on their values.
//     An unfenced Locker (see below) issues none.
//   - Errors: a taken lock (TryAcquire) matches [caesura.ErrNotAcquired]; a
//     wait ended by the context matches it and the context's error; Redis
//     unreachable or failing matches [ErrUnavailable] (and not
//     ErrNotAcquired). A waiter that gives up leaves the queue and hands on
//     any key it was handed meanwhile.
//
// # Unfenced Lockers
//
// With [Options.Unfenced] a Locker gives up fencing tokens for the cheapest
// cycle: a one-key lock whose key is missing is taken by one plain SET key
// token PX ttl NX, as bsm/redislock and redsync take theirs, and its release
// deletes the key (a GET and a DEL in the release script) instead of
// keeping the next fencing token there. On Redis 7.0 that takes a one-key
// lock + release from 60.4k server instructions to 34.2k (bsm/redislock,
// two scripts: 55.9k; callgrind, 1000 cycles), and from 1.01 to 0.95-0.98
// times bsm/redislock's p50 per cycle (BenchmarkPaired). Its Helds are
// [*UnfencedHeld]s; everything but the token stays as above. A lock found
// taken costs that Acquire one round trip more (the SET, then the acquire
// script that queues it), and for a second after it the Locker's
// acquisitions of the key go to the script at once, so that contended
// locks cost 2 commands per acquisition as for a fenced Locker.
// Unfenced and fenced Lockers may share locks. A key that keeps a fencing
// counter (a fenced Locker used it) goes through the scripts, which keep
// the counter, until it goes unused for a lease and expires; a fenced
// waiter handed a lock from an unfenced holder gets a token from the server
// clock, as after an expiry, and so does a fenced Locker that finds a key
// an unfenced Locker deleted. So a fenced Locker's tokens still never go
// back, as long as the server clock does not step back by more than the
// time between the two acquisitions.
//
// # Redlock
//
// [NewRedlock] gives the same API on N independent Redis masters: an
// acquisition needs a quorum of N/2+1 within its validity (TTL minus the
// attempt's time minus Drift), and gives back whatever it got when it falls
// short; renewal needs the quorum too. Its waiters re-try with a randomized
// backoff (1ms doubling to 50ms, bounded by the holder's remaining lease)
// rather than the FIFO hand-off, and it is unfenced: its Helds
// ([*UnfencedHeld]) carry no fencing token, and on each master it takes
// and frees a one-key lock as an unfenced Locker does (see above). A key
// that keeps a fencing counter there (a fenced Locker of [New] used it)
// goes through the acquire script after the SET, a round trip more, until
// it goes unused for a lease and expires.
// The usual caveats of Redlock apply (Kleppmann): it assumes bounded clock
// drift and pauses.
//
// # Layout in Redis
//
// A lock is one string at Prefix+name: the holder's token and fencing token,
// then the FIFO queue while waiters queue; a free lock is the next fencing
// token alone (scripts.go has the format). The lease is the key's expiry
// (PX), so Redis itself ends a lease nobody renews. A release keeps the next
// fencing token and the key's expiry, so a lock nobody takes again leaves
// nothing in Redis once its last lease would have ended (an unfenced
// Locker's release deletes the key at once). Acquiring or
// releasing a free lock costs the server two commands inside one script (a
// GET and a SET) or one (a SET with GET); several keys cost one MGET and a
// SET per key. Requires Redis 6.2 or later (SET with GET). A hash left at a
// lock's key by an earlier version of this package is replaced. So is a key
// left by the version that judged leases by the server clock (one with no
// expiry, or a counter that started from 1): it reads as missing, and its
// lock's tokens go on from the server clock. Lockers of the two versions
// must not share a Prefix while both run.
//
// # Scripts and Redis Functions
//
// Where the server has Redis Functions (Redis 7.0 and later), the scripts
// run as functions of one library (FCALL), which costs the server less than
// a cached script (EVALSHA): on Redis 7.0, 13.4k instructions instead of 16k
// around an empty script, and 60k instead of 66k for a one-key lock +
// release. The library is named
// "caesura_" and 12 hex digits of a hash of the scripts, so versions of this
// package that share a server load libraries of their own and never replace
// each other's; FUNCTION DELETE removes the library of a version no longer
// in use. The first call that finds the library missing (a new or restarted
// server, FUNCTION FLUSH, a Cluster master added since) loads it with
// FUNCTION LOAD, on every master of a Cluster, and calls again; Redis
// replicates and persists functions as it does keys. Where the server will
// not run functions for the client (before Redis 7.0, a proxy without them,
// an ACL that denies FCALL or FUNCTION LOAD), or the [Client] has no FCall
// and FunctionLoad methods, the scripts run as cached scripts (EVALSHA, and
// EVAL when the server lacks one), after one refused try per Locker and
// server; a refusal that may pass (a replica, a server loading its data)
// sends only that call to the cached script. So an ACL user of a Locker
// needs fcall and function|load (or evalsha and eval), and set, get, mget,
// del, pttl, pexpire, time, publish and subscribe, since Redis checks the
// commands a script calls too, on the keys and channels under Prefix:
//
//	ACL SETUSER locker on >password resetkeys resetchannels ~caesura:redis:* &caesura:redis:* -@all +fcall +function|load +set +get +mget +del +pttl +pexpire +time +publish +subscribe
//
// (TestLeastACL runs the conformance suite as such a user, and fails
// without any one of these commands.)
//
// # Conditional release
//
// Where the server has the conditional SET (Redis 8.4 and later, Valkey 8.1
// and later), a one-key lock taken without waiting is released by one plain
// command instead of the release script: SET key next KEEPTTL IFEQ value
// GET, where value is what the holder wrote (its token and fencing token)
// and next the key's next fencing token. The server writes next only if
// the key still holds value, and replies what the key held, so the release
// is as exact as the script's: a stale holder's conditional SET changes
// nothing. It costs the server about a third of the script (on Valkey 8.1,
// callgrind: a one-key lock + release takes 50k instructions instead of
// 61k; bsm/redislock's takes 60k). The script still runs when the key has waiters to hand the lock to
// (a second round trip, for the first holder of a burst of contention), and
// at once for a holder that waited itself, which is likely to have waiters
// again. On a server without IFEQ (it replies a syntax error) a Locker tries
// once, then releases by the script alone. This package is tested on
// Valkey 8.1 and on Redis 7.0; Redis 8.4 added IFEQ too, and however it
// answers, the release stays correct.
//
// # Non-guarantees
//
//   - A lease can end while its holder is paused (GC, a stopped VM, a slow
//     network) longer than the drift margin: the Lost signal then comes too
//     late to stop work already under way. Only storage that checks the
//     fencing token makes such a stale holder harmless.
//   - Redis replication is asynchronous: after a failover (Sentinel,
//     Cluster) a lock acquired just before it may be missing on the new
//     primary, and fencing tokens may go back with the lost writes. A
//     restart without persistence forgets every lock (tokens go on from the
//     server clock); holders then see [ErrStolen] at their next renewal.
//   - The queue is fair among waiters that keep re-checking; TryAcquire
//     never jumps it (a lock with waiters is never free: its release hands
//     it to the head waiter). The queue lives in the lock's key, so when a
//     lease runs out (a crashed holder, or a key handed to a waiter that
//     died) the queue goes with it: the first waiter to re-check, or any
//     caller, takes the lock, and the others queue again behind it.
package redislock
