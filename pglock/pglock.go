package pglock

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults for a zero [Options].
const (
	DefaultPrefix        = "pg:"
	DefaultSequence      = "caesura_fence"
	DefaultCheckInterval = 250 * time.Millisecond
	DefaultPingInterval  = 5 * time.Second
)

// Options configures a [Locker]. A zero Options gives the defaults.
type Options struct {
	// Prefix is the key namespace. A Lock's Key is Prefix+name, and its
	// advisory lock id is hashed from that whole key (see [Locker.ID]), so
	// Lockers with different prefixes do not share locks (barring a 64-bit
	// hash collision). Empty means [DefaultPrefix].
	Prefix string

	// Sequence names the sequence that issues fencing tokens, optionally
	// schema-qualified ("locks.fence"). It is created with CREATE SEQUENCE
	// IF NOT EXISTS on first use if it does not exist; the locking role
	// needs USAGE and UPDATE on it (see "Lock loss and fencing" in the
	// package documentation). Empty means [DefaultSequence].
	Sequence string

	// CheckInterval is how often the liveness check looks at each pinned
	// connection for a closed session (a local, non-blocking socket check
	// that costs no round trip). Zero means [DefaultCheckInterval].
	CheckInterval time.Duration

	// PingInterval is how often each pinned connection is asked for its
	// backend pid (one round trip), to find sessions that died without
	// closing the TCP connection (a host that vanished) and connections
	// that a pooler moved to another server session. Zero means
	// [DefaultPingInterval].
	PingInterval time.Duration
}

// Locker names PostgreSQL advisory locks on a pool. Create it with [New]; the
// zero value is not usable. A Locker is safe for concurrent use.
type Locker struct {
	pool          *pgxpool.Pool
	prefix        string
	seq           string // sanitized identifier of the fencing sequence
	checkInterval time.Duration
	pingInterval  time.Duration
	batcher       *batcher
	openSession   func() (*session, error) // a scope's session, for caesura.Attach

	seqMu    sync.Mutex
	resolved atomic.Pointer[fence] // the fencing sequence once looked up; nil before, and after a failed statement

	mu       sync.Mutex
	sessions map[*session]struct{} // pinned sessions with locks, watched by check
	check    *checker              // the liveness check, nil while nothing is pinned
}

// New returns a Locker that takes connections from pool. The pool stays the
// caller's: close it after the last lock is released.
//
// A scope (a function run by [caesura.Run] or [caesura.Serialize]) pins one
// connection of the pool for all its locks of this Locker, from its first
// acquisition until its last lock is released; an acquisition outside any
// scope pins one of its own (a batch one for all its locks). The pool's
// MaxConns must exceed the number of scopes and acquisitions outside scopes
// that hold or wait for locks at once, or an acquire waits for a free
// connection.
func New(pool *pgxpool.Pool, opts Options) (*Locker, error) {
	if pool == nil {
		return nil, errors.New("pglock: nil pool")
	}
	if opts.CheckInterval < 0 || opts.PingInterval < 0 {
		return nil, errors.New("pglock: negative interval in Options")
	}
	l := &Locker{
		pool:          pool,
		prefix:        opts.Prefix,
		checkInterval: opts.CheckInterval,
		pingInterval:  opts.PingInterval,
		sessions:      make(map[*session]struct{}),
	}
	if l.prefix == "" {
		l.prefix = DefaultPrefix
	}
	if l.checkInterval == 0 {
		l.checkInterval = DefaultCheckInterval
	}
	if l.pingInterval == 0 {
		l.pingInterval = DefaultPingInterval
	}
	seq := opts.Sequence
	if seq == "" {
		seq = DefaultSequence
	}
	parts := strings.Split(seq, ".")
	for _, p := range parts {
		if p == "" {
			return nil, fmt.Errorf("pglock: invalid sequence name %q", seq)
		}
	}
	l.seq = pgx.Identifier(parts).Sanitize()
	l.batcher = &batcher{l: l}
	// An empty session: it pins a connection on first use.
	l.openSession = func() (*session, error) { return &session{l: l}, nil }
	return l, nil
}

// Mutex names the exclusive lock name, without acquiring it. Its Key is the
// Locker's prefix followed by name. The Lock implements [caesura.TryLocker]
// and [caesura.BatchLock] (its Batcher is a [caesura.BatchReleaser]); its
// Helds implement [caesura.Fenced] and [caesura.Lossy].
func (l *Locker) Mutex(name string) caesura.Lock {
	key := l.prefix + name
	return &mutex{l: l, name: name, key: key, id: lockID(key)}
}

// ID returns the 64-bit advisory lock id of the lock named name: the first
// eight bytes of the SHA-256 of its key (prefix+name), read as a big-endian
// int64. In pg_locks it appears with locktype 'advisory', classid the high
// and objid the low 32 bits, and objsubid 1. Two keys with equal ids share
// one lock: with 64 bits that takes about 2^32 keys held at once to become
// likely, and it costs only waiting, never safety.
func (l *Locker) ID(name string) int64 { return lockID(l.prefix + name) }

func lockID(key string) int64 {
	sum := sha256.Sum256([]byte(key))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// mutex is one named lock.
type mutex struct {
	l    *Locker
	name string
	key  string
	id   int64
}

var (
	_ caesura.TryLocker = (*mutex)(nil)
	_ caesura.BatchLock = (*mutex)(nil)
)

func (m *mutex) Key() string { return m.key }

func (m *mutex) Batcher() caesura.Batcher { return m.l.batcher }

// The acquiring statements draw the token after the grant: in the
// projection that calls pg_advisory_lock, after it, or (batch) in the
// projection above the count that consumes every lock. Each comes in two
// forms, one per fencing mode (see fence): with tokDurable and with tokFast.
const (
	sqlLock          = `SELECT pg_advisory_lock($1), ` + tokDurable + ` AS tok, pg_backend_pid()`
	sqlLockFast      = `SELECT pg_advisory_lock($1), ` + tokFast + ` AS tok, pg_backend_pid()`
	sqlTryLock       = `SELECT CASE WHEN pg_try_advisory_lock($1) THEN ` + tokDurable + ` END AS tok, pg_backend_pid()`
	sqlTryLockFast   = `SELECT CASE WHEN pg_try_advisory_lock($1) THEN ` + tokFast + ` END AS tok, pg_backend_pid()`
	sqlLockBatch     = `SELECT ` + tokDurable + ` AS tok, pg_backend_pid(), n FROM (` + lockAll + `) AS c`
	sqlLockBatchFast = `SELECT ` + tokFast + ` AS tok, pg_backend_pid(), n FROM (` + lockAll + `) AS c`

	// lockAll takes the locks of the ids $1 in their order: WITH
	// ORDINALITY ... ORDER BY i keeps the array's order, which is the
	// keys' order (not the ids'). The plan is a Function Scan that projects
	// pg_advisory_lock row by row, so the locks are taken in that order;
	// the count consumes every row before the projection above it draws
	// one token, after the last lock was granted.
	lockAll = `SELECT count(*) AS n FROM (SELECT pg_advisory_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS t(k, i) ORDER BY i) AS l`

	// tokDurable draws a value of the sequence $2 in a transaction that
	// commits as the session's synchronous_commit says.
	tokDurable = `nextval($2::oid::regclass)`

	// tokFast draws a value of the sequence $2 in a transaction that does
	// not wait for the WAL flush, when the session's backend is $3, which
	// the client noted after that backend skipped sessionSkip values (see
	// fence). On any other backend it skips them, or, if the role may no
	// longer setval, draws as tokDurable does and returns the value negated
	// (so the client does not note the backend); either way in a transaction
	// that waits for the flush (at least locally: synchronous_commit local
	// where the session has it off). set_config returns its value: "0 *
	// length(...)" only runs it. synchronous_commit is read when the
	// transaction commits, after the statement, so each branch sets its
	// own.
	tokFast = `CASE WHEN pg_backend_pid() = $3
  THEN nextval($2::oid::regclass) + 0 * length(set_config('synchronous_commit', 'off', true))
  ELSE CASE WHEN has_sequence_privilege($2::oid, 'UPDATE')
      THEN setval($2::oid::regclass, nextval($2::oid::regclass) + ` + sessionSkipSQL + `)
      ELSE -nextval($2::oid::regclass) END
    + 0 * length(set_config('synchronous_commit', CASE current_setting('synchronous_commit') WHEN 'off' THEN 'local' ELSE current_setting('synchronous_commit') END, true))
END`

	sqlUnlock    = `SELECT pg_advisory_unlock($1), pg_backend_pid()`
	sqlUnlockAll = `SELECT bool_and(pg_advisory_unlock(k)), pg_backend_pid() FROM unnest($1::bigint[]) AS k`
	// sqlUnlockGranted unlocks whichever of the ids the session holds,
	// after a statement that may have taken some of them failed; asking
	// pg_locks first spares the server's warning for each id not held.
	sqlUnlockGranted = `SELECT count(pg_advisory_unlock(u.k)), pg_backend_pid() FROM unnest($1::bigint[]) AS u(k)
WHERE EXISTS (SELECT FROM pg_locks p WHERE p.locktype = 'advisory' AND p.pid = pg_backend_pid() AND p.granted AND p.objsubid = 1
  AND ((p.classid::bigint << 32) | p.objid::bigint) = u.k)`
)

// Acquire waits on the server until the lock is granted or ctx is done. It
// returns an error matching [caesura.ErrNotAcquired] and ctx's error when
// ctx ended the wait; the server-side wait is cancelled then, and nothing of
// it stays queued or held. Inside a scope it runs on the scope's session.
func (m *mutex) Acquire(ctx context.Context) (caesura.Held, error) {
	hs, err := m.l.acquire(ctx, []*mutex{m}, false)
	if err != nil {
		return nil, err
	}
	return hs[0], nil
}

// TryAcquire takes the lock with pg_try_advisory_lock: it returns an error
// matching [caesura.ErrNotAcquired] at once when another session holds it.
func (m *mutex) TryAcquire(ctx context.Context) (caesura.Held, error) {
	hs, err := m.l.acquire(ctx, []*mutex{m}, true)
	if err != nil {
		return nil, err
	}
	return hs[0], nil
}

// batcher acquires a run of one Locker's locks in one statement, and
// releases a run of them in one statement.
type batcher struct{ l *Locker }

var _ caesura.BatchReleaser = (*batcher)(nil)

// AcquireBatch acquires locks, sorted by key, in one statement on one
// connection (the scope's session, inside a scope), in the order given. On
// error none is held.
func (b *batcher) AcquireBatch(ctx context.Context, locks []caesura.Lock) ([]caesura.Held, error) {
	ms := make([]*mutex, len(locks))
	for i, lk := range locks {
		m, ok := lk.(*mutex)
		if !ok || m.l != b.l {
			return nil, fmt.Errorf("pglock: batch: %w: lock %T is not from this Locker", caesura.ErrInvalidLock, lk)
		}
		ms[i] = m
	}
	if len(ms) == 0 {
		return nil, nil
	}
	hs, err := b.l.acquire(ctx, ms, false)
	if err != nil {
		return nil, err
	}
	out := make([]caesura.Held, len(hs))
	for i, h := range hs {
		out[i] = h
	}
	return out, nil
}

// ReleaseBatch releases helds, which AcquireBatch or a Lock of this Locker
// returned, with one statement per session they are held on (one, for the
// Helds of one scope), as Release would each. It tries them all, and joins
// the errors.
func (b *batcher) ReleaseBatch(ctx context.Context, helds []caesura.Held) error {
	var errs []error
	for i := 0; i < len(helds); {
		h, ok := helds[i].(*held)
		if !ok || h.s.l != b.l {
			var err error
			if helds[i] == nil {
				err = errors.New("pglock: release: nil Held")
			} else {
				err = helds[i].Release(ctx)
			}
			if err != nil {
				errs = append(errs, err)
			}
			i++
			continue
		}
		// The run of Helds on h's session.
		s := h.s
		j := i + 1
		for j < len(helds) {
			hj, ok := helds[j].(*held)
			if !ok || hj.s != s {
				break
			}
			j++
		}
		if err := s.releaseRun(ctx, helds[i:j]); err != nil {
			errs = append(errs, err)
		}
		i = j
	}
	return errors.Join(errs...)
}

// releaseRun releases hs, Helds of s, in one statement.
func (s *session) releaseRun(ctx context.Context, hs []caesura.Held) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	live := make([]*held, 0, len(hs))
	for _, x := range hs {
		h := x.(*held)
		if h.released || h.pending {
			errs = append(errs, fmt.Errorf("pglock: release %q: %w", h.key, caesura.ErrNotHeld))
			continue
		}
		h.pending = true // finds h given twice
		live = append(live, h)
	}
	for _, h := range live {
		h.pending = false
	}
	if len(live) > 0 {
		if err := s.releaseLocked(ctx, live); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// acquire takes every lock of ms in one statement (a try-lock for a single
// lock when try is set): on the session of ctx's scope, or outside a scope
// on a session of its own.
func (l *Locker) acquire(ctx context.Context, ms []*mutex, try bool) ([]*held, error) {
	key := ms[0].key
	for _, m := range ms {
		if m.name == "" {
			return nil, fmt.Errorf("pglock: %w: empty name", caesura.ErrInvalidLock)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, caesura.NotAcquired(key, err)
	}
	s, scoped, err := caesura.Attach(ctx, attachKey{l}, l.openSession, endSession)
	if err != nil {
		return nil, fmt.Errorf("pglock: acquire %q: %w", key, err)
	}
	if scoped {
		if hs, ok, err := s.share(ctx, ms, try); ok {
			return hs, err
		}
		// The scope's session is busy with another acquisition, or
		// cannot take these locks: one of their own.
	}
	s = &session{l: l, solo: true}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acquireLocked(ctx, ms, try)
}

// share acquires ms on the scope's session s, if s can take them now; ok
// false means it cannot, and nothing was done.
func (s *session) share(ctx context.Context, ms []*mutex, try bool) (hs []*held, ok bool, err error) {
	if !s.acquiring.CompareAndSwap(false, true) {
		return nil, false, nil
	}
	defer s.acquiring.Store(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.usableLocked(ms) {
		return nil, false, nil
	}
	hs, err = s.acquireLocked(ctx, ms, try)
	return hs, true, err
}

// fence is the fencing sequence as a Locker resolved it.
type fence struct {
	oid uint32
	// fast: the Locker draws tokens with tokFast, whose transactions do not
	// wait for a WAL flush. It needs UPDATE on the sequence (setval) and
	// room for the skips (the bigint maximum, the default); otherwise every
	// token is drawn with tokDurable.
	fast bool
	// skipped names the entry of a connection's CustomData that holds the
	// backend pid on which the connection's session skipped sessionSkip
	// values of this sequence.
	skipped string
	// The acquiring statements of the mode.
	sqlLock, sqlTryLock, sqlLockBatch string
}

// token returns the token tok that an acquiring statement of f drew on
// backend pid, where the connection had noted backend skipped, and notes
// pid as the backend that skipped (see tokFast) unless it is the one noted
// before, or the statement drew without a skip (a negative tok) or with
// tokDurable.
func (f *fence) token(c *pgx.Conn, skipped, pid uint32, tok int64) int64 {
	switch {
	case !f.fast:
	case tok < 0:
		tok = -tok
	case pid != skipped:
		c.PgConn().CustomData()[f.skipped] = pid
	}
	return tok
}

// Fencing tokens without a WAL flush per 33 acquisitions.
//
// PostgreSQL writes a sequence to its WAL once per 33 values: the nextval
// that finds the logged values used up logs the next 32 ahead, and its
// transaction waits at commit for the WAL to be flushed (an fsync,
// hundreds of microseconds on many disks), so that a crash cannot hand out
// a value again. Drawn by an acquiring statement, that flush falls between
// the grant and the return: one hand-off in 33 paid it, and on a small
// machine each flush stalls the other sessions too.
//
// So the acquiring statements draw their tokens in transactions that do not
// wait for the flush (synchronous_commit off, for that transaction only).
// A crash may then lose the sequence's latest WAL records, and the server
// would hand out values again that it handed out before the crash. What
// keeps tokens increasing is that every session skips ahead first: the
// first token drawn on a backend is setval(nextval + sessionSkip),
// committed with a flush. The client notes the backend's pid in the
// connection's CustomData (once the statement returned: a statement that
// failed only makes the next one skip again) and passes it to every
// acquiring statement, which draws without a flush only on the backend of
// that pid. A crash ends every backend, so the first token after it is
// drawn by a backend that skips, from the last value that reached the disk;
// every value handed out before the crash and lost with the WAL is above
// that by less than the values drawn between two WAL flushes, which
// PostgreSQL bounds by three times wal_writer_delay (200ms by default, at
// most 10s): far fewer than sessionSkip at any rate a server reaches. A
// failover to a standby behaves the same way, as long as the standby
// lagged by fewer values. A direct connection dies with its backend; a
// pooler in session mode closes the client's connection when the server's
// ends, and one in transaction mode (not supported, see Non-guarantees)
// changes the pid, which makes the statement skip. Only a pooler that kept
// a client's connection across a crash and then served it from a new
// backend that happened to get the noted pid would draw without the skip.
//
// sessionSkip bounds the sessions a sequence serves: 2^39 of them before
// the bigint range ends: 17 years of opening one every millisecond.
const (
	sessionSkip    = 1 << 24
	sessionSkipSQL = "16777216"
)

// sequence returns the fencing sequence, creating it if it does not exist;
// it is looked up once (passing the OID, not the name, keeps a name lookup
// out of every acquiring statement). A creation racing another session's
// is not an error. A sequence that cannot give increasing tokens is an
// error that names the problem.
func (l *Locker) sequence(ctx context.Context, c *pgx.Conn) (*fence, error) {
	if f := l.resolved.Load(); f != nil {
		return f, nil
	}
	l.seqMu.Lock()
	defer l.seqMu.Unlock()
	if f := l.resolved.Load(); f != nil {
		return f, nil
	}
	var d seqDesc
	scan := func() error {
		return c.QueryRow(ctx, sqlSequence, l.seq).Scan(&d.oid, &d.isSeq, &d.increment, &d.cache, &d.min, &d.cycle, &d.fast)
	}
	if err := scan(); err != nil {
		return nil, err
	}
	if d.oid == nil {
		if _, err := c.Exec(ctx, `CREATE SEQUENCE IF NOT EXISTS `+l.seq); err != nil {
			var pgErr *pgconn.PgError
			// 23505 unique_violation and 42P07 duplicate_table: another
			// session created it at the same moment.
			if !errors.As(err, &pgErr) || (pgErr.Code != "23505" && pgErr.Code != "42P07") {
				return nil, err
			}
		}
		if err := scan(); err != nil {
			return nil, err
		}
		if d.oid == nil {
			return nil, errors.New("not found after CREATE SEQUENCE")
		}
	}
	switch {
	case !d.isSeq:
		return nil, errors.New("not a sequence")
	case d.increment < 1:
		return nil, fmt.Errorf("INCREMENT %d: tokens must increase", d.increment)
	case d.cache > 1:
		return nil, fmt.Errorf("CACHE %d: each session would hand out values from a cache of its own, out of order (ALTER SEQUENCE ... CACHE 1)", d.cache)
	case d.cycle:
		return nil, errors.New("CYCLE: its values would start again (ALTER SEQUENCE ... NO CYCLE)")
	case d.min < 1:
		return nil, fmt.Errorf("MINVALUE %d: tokens are positive (ALTER SEQUENCE ... MINVALUE 1)", d.min)
	}
	f := &fence{oid: *d.oid, fast: d.fast, skipped: "caesura/pglock.skipped." + strconv.FormatUint(uint64(*d.oid), 10),
		sqlLock: sqlLock, sqlTryLock: sqlTryLock, sqlLockBatch: sqlLockBatch}
	if f.fast {
		f.sqlLock, f.sqlTryLock, f.sqlLockBatch = sqlLockFast, sqlTryLockFast, sqlLockBatchFast
	}
	l.resolved.Store(f)
	return f, nil
}

// seqDesc is what sqlSequence reads.
type seqDesc struct {
	oid         *uint32
	isSeq       bool
	increment   int64
	cache       int64
	min         int64
	cycle, fast bool
}

// sqlSequence looks the sequence up: its OID (NULL when there is no
// relation of that name), whether it is a sequence, and its parameters; fast
// is whether tokFast may draw from it.
const sqlSequence = `SELECT o.oid, s.seqrelid IS NOT NULL, coalesce(s.seqincrement, 0), coalesce(s.seqcache, 0), coalesce(s.seqmin, 0), coalesce(s.seqcycle, false),
  coalesce(s.seqmax = 9223372036854775807 AND has_sequence_privilege(o.oid, 'UPDATE'), false)
FROM (SELECT to_regclass($1)::oid AS oid) AS o LEFT JOIN pg_sequence AS s ON s.seqrelid = o.oid`

// destroy closes a connection whose session holds no advisory lock (or is
// gone), and removes it from the pool.
func destroy(c *pgxpool.Conn) {
	conn := c.Hijack()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// discardTimeout bounds the clean-up of a connection that may hold locks.
const discardTimeout = 3 * time.Second

// discard closes a connection whose session may still hold advisory locks,
// and returns once they are free, so that a failed acquire or release leaves
// nothing held behind it. Closing alone is not enough: the server frees a
// session's locks only when its backend sees the close, which a backend busy
// in a statement does not until the statement ends.
//
//   - A usable connection runs pg_advisory_unlock_all() first (again if a
//     late cancel request hit it), then is closed.
//   - A connection that pgx closed while a statement was running (aborted,
//     when cancel requests did not stop the statement in time) has a busy
//     backend, pid: it is terminated (see terminate).
func (l *Locker) discard(c *pgxpool.Conn, aborted bool, pid uint32) {
	conn := c.Hijack()
	pc := conn.PgConn()
	ctx, cancel := context.WithTimeout(context.Background(), discardTimeout)
	defer cancel()
	for range cancelAttempts + 1 {
		if pc.IsClosed() {
			break
		}
		_, err := conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
		if err == nil {
			_ = conn.Close(ctx)
			return
		}
		if !isQueryCanceled(err) {
			break
		}
	}
	_ = conn.Close(ctx)
	if aborted {
		l.terminate(pid)
	}
}

// terminate ends backend pid if pg_stat_activity shows it still running one
// of pglock's statements, with pg_terminate_backend(pid, timeout) from
// another connection of the pool, which waits for the backend to exit
// (PostgreSQL 14 and later; on older servers the locks are freed when the
// backend notices its connection was closed). Only a backend still running
// one of our statements is ended: pid may be one a pooler made up, or one
// the OS reused once the backend exited.
func (l *Locker) terminate(pid uint32) {
	ctx, cancel := context.WithTimeout(context.Background(), discardTimeout)
	defer cancel()
	_, _ = l.pool.Exec(ctx, sqlTerminate, pid, (discardTimeout - time.Second).Milliseconds(), ourStatements)
}

// sqlTerminate ends a backend that is still busy with one of ourStatements,
// waiting up to $2 ms for it to exit.
const sqlTerminate = `SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query = ANY($3)`

var ourStatements = []string{
	sqlLock, sqlLockFast, sqlTryLock, sqlTryLockFast, sqlLockBatch, sqlLockBatchFast,
	sqlUnlock, sqlUnlockAll, sqlUnlockGranted,
}
