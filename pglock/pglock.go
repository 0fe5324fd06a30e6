package pglock

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
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
	// IF NOT EXISTS on first use if it does not exist. Empty means
	// [DefaultSequence].
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

	seqMu  sync.Mutex
	seqOID atomic.Uint32 // the sequence's OID once resolved; 0 before

	// Keeping the sequence's WAL flushes out of hand-offs (see advanceAt).
	predict    atomic.Bool  // the horizon is tracked: set when the sequence is resolved
	horizon    atomic.Int64 // the sequence's last value before its next WAL record, as last seen; 0 unknown
	left       atomic.Int64 // values left before that record after the latest token seen
	advancing  atomic.Bool  // an advance runs: the Locker's other acquisitions run none
	waiting    atomic.Int32 // blocking acquiring statements running, which may wait for a lock
	sqlAdvance string       // see advanceAt
	statements []string     // the statements terminate may end: ourStatements and sqlAdvance

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
	l.sqlAdvance = `SELECT (SELECT ARRAY[s.last_value + s.log_cnt, s.log_cnt] FROM ` + l.seq + ` AS s WHERE d.n >= 0) FROM (SELECT count(nextval($1::oid::regclass)) AS n FROM ` + l.seq + ` AS s, generate_series(0, s.log_cnt) WHERE s.log_cnt < $2) AS d`
	l.statements = append(slices.Clip(ourStatements), l.sqlAdvance)
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

// The acquiring statements draw the token after the grant. Each has a
// variant (sqlLockHorizon, ...) that also reads the sequence's horizon (see
// sqlHorizon and advanceAt), which a Locker runs only while it knows none.
const (
	sqlLock    = `SELECT pg_advisory_lock($1), nextval($2::oid::regclass) AS tok, pg_backend_pid()`
	sqlTryLock = `SELECT CASE WHEN pg_try_advisory_lock($1) THEN nextval($2::oid::regclass) END AS tok, pg_backend_pid()`
	// WITH ORDINALITY ... ORDER BY i keeps the array's order, which is the
	// keys' order (not the ids'). The plan is a Function Scan that projects
	// pg_advisory_lock row by row, so the locks are taken in that order;
	// the count above it consumes every row before the outer projection
	// draws one token, after the last lock was granted.
	sqlLockBatch = `SELECT nextval($2::oid::regclass) AS tok, pg_backend_pid(), n FROM (SELECT count(*) AS n FROM (SELECT pg_advisory_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS t(k, i) ORDER BY i) AS l) AS c`

	sqlLockHorizon      = `SELECT a.*, ` + sqlHorizon + ` FROM (` + sqlLock + ` OFFSET 0) AS a`
	sqlTryLockHorizon   = `SELECT a.*, ` + sqlHorizon + ` FROM (` + sqlTryLock + ` OFFSET 0) AS a`
	sqlLockBatchHorizon = `SELECT a.*, ` + sqlHorizon + ` FROM (` + sqlLockBatch + ` OFFSET 0) AS a`

	// sqlHorizon is the column that the Horizon variants add to an
	// acquiring statement: the sequence's horizon, read after the
	// statement drew its token. The read is in the outer query's
	// projection, which needs the token of the subquery (OFFSET 0 keeps it
	// a subquery): it runs after nextval, never before. It goes through
	// query_to_xml, a query planned when it runs, and only with SELECT on
	// the sequence: naming the sequence in the statement itself would fail
	// the whole statement for a role with USAGE alone, which gets NULL.
	// (In every acquiring statement, even as a branch never taken, the
	// expression would cost each one about 10µs of executor start-up: the
	// Locker runs these variants only while it knows no horizon.)
	sqlHorizon = `CASE WHEN a.tok IS NOT NULL AND has_sequence_privilege($2::oid, 'SELECT')
  THEN nullif(split_part(split_part(query_to_xml('SELECT last_value + log_cnt AS h FROM ' || $2::oid::regclass::text, false, true, '')::text, '<h>', 2), '</h>', 1), '')::bigint END`

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

// sequence returns the OID of the fencing sequence, creating the sequence
// if it does not exist; it is looked up once (passing the OID, not the name,
// keeps a name lookup out of every acquiring statement), and whether its
// horizon can be tracked (see advanceAt) with it. A creation racing another
// session's is not an error.
func (l *Locker) sequence(ctx context.Context, c *pgx.Conn) (uint32, error) {
	if oid := l.seqOID.Load(); oid != 0 {
		return oid, nil
	}
	l.seqMu.Lock()
	defer l.seqMu.Unlock()
	if oid := l.seqOID.Load(); oid != 0 {
		return oid, nil
	}
	var oid *uint32
	var predict bool
	if err := c.QueryRow(ctx, sqlSequence, l.seq).Scan(&oid, &predict); err != nil {
		return 0, err
	}
	if oid == nil {
		if _, err := c.Exec(ctx, `CREATE SEQUENCE IF NOT EXISTS `+l.seq); err != nil {
			var pgErr *pgconn.PgError
			// 23505 unique_violation and 42P07 duplicate_table: another
			// session created it at the same moment.
			if !errors.As(err, &pgErr) || (pgErr.Code != "23505" && pgErr.Code != "42P07") {
				return 0, err
			}
		}
		if err := c.QueryRow(ctx, sqlSequence, l.seq).Scan(&oid, &predict); err != nil {
			return 0, err
		}
		if oid == nil {
			return 0, errors.New("not found after CREATE SEQUENCE")
		}
	}
	l.horizon.Store(0)
	l.predict.Store(predict)
	l.seqOID.Store(*oid)
	return *oid, nil
}

// sqlSequence looks the sequence up: its OID, and whether advances can keep
// its WAL flushes out of hand-offs: the role may read it, and it hands out
// consecutive values (INCREMENT 1, CACHE 1), which the horizon arithmetic
// assumes.
const sqlSequence = `SELECT o.oid, CASE WHEN s.seqincrement = 1 AND s.seqcache = 1 THEN has_sequence_privilege(o.oid, 'SELECT') ELSE false END
FROM (SELECT to_regclass($1)::oid AS oid) AS o LEFT JOIN pg_sequence AS s ON s.seqrelid = o.oid`

// The fencing sequence's WAL flushes are kept out of the hand-off.
//
// PostgreSQL writes a sequence to the WAL once per 33 values: the nextval
// that finds the logged values used up logs the next 32 ahead, and its
// transaction then waits at commit for the WAL to be flushed (an fsync,
// hundreds of microseconds on many disks), so that a crash cannot issue a
// value again. Drawn by an acquiring statement, that flush falls between the
// grant and the return: one hand-off in 33 paid it, which made the
// contended hand-off's p99 several times the bare advisory lock's.
//
// So the Locker follows the sequence's horizon, the last value it hands out
// before its next WAL record (last_value + log_cnt), and how many values are
// left before it after the latest token it saw. A blocking acquisition that
// finds advanceAt or fewer left (or fewer than none: the horizon is stale)
// while other blocking acquisitions of the Locker run, which are probably
// waiting for a lock and will draw their tokens at hand-offs, first runs
// advance, a statement of its own on the same connection, before it queues
// for the lock (an acquisition with none running beside it runs none: it
// would only add a round trip). When the sequence has fewer than advanceDraw
// values left, it draws them and the next, which writes the WAL record, so
// that the flush is paid there, while no holder waits for this acquisition;
// the acquiring statements that follow draw values already logged. Either
// way it returns the horizon. Tokens skip the values advance drew, and still
// increase in grant order: an acquisition's own token is drawn after its
// grant, as before. The acquiring statements read the horizon only when the
// Locker knows none (see sqlHorizon); advance keeps it up to date.
//
// It is pacing only, and costs one round trip more per 33 values, under
// contention only. Advances racing (of other Lockers: one Locker runs one
// at a time) draw a few values more, and may log once more. A checkpoint
// (the first nextval after one logs too), other processes drawing values,
// or an advance that reaches the server too late may still leave a flush
// to an acquiring statement, which then waits as before. A role without
// SELECT on the sequence reads nothing, and runs no advance.
//
// advanceAt leaves the advance the time of a few hand-offs to reach the
// server before the waiters' tokens use the values up; advanceDraw, a
// little more, covers the values drawn meanwhile.
const (
	advanceAt   = 6
	advanceDraw = advanceAt + 2
)

// readHorizon reports whether an acquiring statement should read the
// horizon: the Locker tracks it and knows none.
func (l *Locker) readHorizon() bool {
	return l.predict.Load() && l.horizon.Load() == 0
}

// observe notes an acquiring statement's token, and the horizon it read;
// read is nil when the statement read none, or could not (no SELECT on the
// sequence: the Locker stops tracking it) if asked to.
func (l *Locker) observe(tok int64, asked bool, read *int64) {
	if asked && read == nil {
		l.predict.Store(false)
		return
	}
	h := l.horizon.Load()
	if read != nil {
		h = *read
		l.horizon.Store(h)
	}
	switch {
	case h == 0:
	case tok < h-2*(seqLogVals+1):
		// Far below the horizon: the sequence was set back. (An
		// acquisition that drew its token just before an advance logged
		// sees a horizon up to 33 values above it.)
		l.horizon.CompareAndSwap(h, 0)
	default:
		l.left.Store(h - tok)
	}
}

// seqLogVals is PostgreSQL's SEQ_LOG_VALS: a sequence's WAL record logs that
// many values beyond the one that writes it.
const seqLogVals = 32

// advanceDue reports whether a blocking acquisition starting now runs
// advance first; if so, that advance must run.
func (l *Locker) advanceDue() bool {
	return l.waiting.Load() > 0 && l.predict.Load() && l.horizon.Load() != 0 &&
		l.left.Load() <= advanceAt && l.advancing.CompareAndSwap(false, true)
}

// advance draws the values the sequence has left before its next WAL
// record, and the one that writes it, if they are fewer than advanceDraw,
// and notes the horizon after (see advanceAt; the subquery that reads it
// depends on the count of values drawn, so it runs after them). An error
// that ended the statement's use of the connection (a cancellation, a closed
// connection) is returned, and fails the acquisition as its own statement's
// would; a server error is not (the acquiring statement runs as it would
// without advance), and insufficient_privilege (SELECT revoked since the
// sequence was resolved) stops the Locker's advances.
func (l *Locker) advance(ctx context.Context, c *pgx.Conn, seqOID uint32) error {
	defer l.advancing.Store(false)
	var hl []int64 // horizon, log_cnt
	err := c.QueryRow(ctx, l.sqlAdvance, seqOID, advanceDraw).Scan(&hl)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		if len(hl) == 2 {
			l.horizon.Store(hl[0])
			l.left.Store(hl[1])
		}
		return nil
	case isQueryCanceled(err) || !errors.As(err, &pgErr):
		return err
	case pgErr.Code == "42501": // insufficient_privilege
		l.predict.Store(false)
	}
	return nil
}

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
	_, _ = l.pool.Exec(ctx, sqlTerminate, pid, (discardTimeout - time.Second).Milliseconds(), l.statements)
}

// sqlTerminate ends a backend that is still busy with one of l.statements,
// waiting up to $2 ms for it to exit.
const sqlTerminate = `SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query = ANY($3)`

var ourStatements = []string{
	sqlLock, sqlTryLock, sqlLockBatch, sqlLockHorizon, sqlTryLockHorizon, sqlLockBatchHorizon,
	sqlUnlock, sqlUnlockAll, sqlUnlockGranted,
}
