package pglock

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
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

	// PingInterval is how often each pinned connection is pinged (one
	// round trip), to find sessions that died without closing the TCP
	// connection (a host that vanished). Zero means [DefaultPingInterval].
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

	seqMu  sync.Mutex
	seqOID atomic.Uint32 // the sequence's OID once resolved; 0 before

	mu    sync.Mutex
	pins  map[*pinned]struct{}
	check *checker // the liveness check, nil while nothing is pinned
}

// New returns a Locker that takes connections from pool. The pool stays the
// caller's: close it after the last lock is released.
//
// Every held lock pins one connection of the pool (a batch of locks acquired
// together pins one for all), so the pool's MaxConns must exceed the number of
// acquisitions held at once, or an acquire waits for a free connection.
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
		pins:          make(map[*pinned]struct{}),
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
	return l, nil
}

// Mutex names the exclusive lock name, without acquiring it. Its Key is the
// Locker's prefix followed by name. The Lock implements [caesura.TryLocker]
// and [caesura.BatchLock]; its Helds implement [caesura.Fenced] and
// [caesura.Lossy].
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

const (
	sqlLock    = `SELECT pg_advisory_lock($1), nextval($2::oid::regclass), pg_backend_pid()`
	sqlTryLock = `SELECT CASE WHEN pg_try_advisory_lock($1) THEN nextval($2::oid::regclass) END, pg_backend_pid()`
	// WITH ORDINALITY ... ORDER BY i keeps the array's order, which is the
	// keys' order (not the ids'). The plan is a Function Scan that projects
	// pg_advisory_lock row by row, so the locks are taken in that order;
	// the count above it consumes every row before the outer projection
	// draws one token, after the last lock was granted.
	sqlLockBatch = `SELECT nextval($2::oid::regclass), pg_backend_pid(), n FROM (SELECT count(*) AS n FROM (SELECT pg_advisory_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS t(k, i) ORDER BY i) AS l) AS c`
	sqlUnlock    = `SELECT pg_advisory_unlock($1), pg_backend_pid()`
	sqlUnlockAll = `SELECT bool_and(pg_advisory_unlock(k)), pg_backend_pid() FROM unnest($1::bigint[]) AS k`
)

// Acquire waits on the server until the lock is granted or ctx is done. It
// returns an error matching [caesura.ErrNotAcquired] and ctx's error when
// ctx ended the wait; the server-side wait is cancelled then, and nothing of
// it stays queued or held.
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

// batcher acquires a run of one Locker's locks in one statement.
type batcher struct{ l *Locker }

// AcquireBatch acquires locks, sorted by key, in one statement on one
// connection, in the order given. On error none is held.
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

// acquire pins a connection and takes every lock of ms on it in one
// statement (a try-lock for a single lock when try is set).
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
	c, err := l.pool.Acquire(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, caesura.NotAcquired(key, ctx.Err())
		}
		return nil, fmt.Errorf("pglock: acquire %q: connection: %w", key, err)
	}
	seqOID, err := l.sequence(ctx, c.Conn())
	if err != nil {
		destroy(c)
		if ctx.Err() != nil {
			return nil, caesura.NotAcquired(key, ctx.Err())
		}
		return nil, fmt.Errorf("pglock: acquire %q: fencing sequence %s: %w", key, l.seq, err)
	}

	tokens := make([]int64, len(ms))
	var pid uint32
	granted := true
	var interrupted bool
	switch {
	case try:
		interrupted, err = run(ctx, c.Conn().PgConn(), func(qctx context.Context) error {
			var tok *int64
			if err := c.Conn().QueryRow(qctx, sqlTryLock, ms[0].id, seqOID).Scan(&tok, &pid); err != nil {
				return err
			}
			if tok == nil {
				granted = false
			} else {
				tokens[0] = *tok
			}
			return nil
		})
	case len(ms) == 1:
		interrupted, err = run(ctx, c.Conn().PgConn(), func(qctx context.Context) error {
			return c.Conn().QueryRow(qctx, sqlLock, ms[0].id, seqOID).Scan(nil, &tokens[0], &pid)
		})
	default:
		ids := make([]int64, len(ms))
		for i, m := range ms {
			ids[i] = m.id
		}
		interrupted, err = run(ctx, c.Conn().PgConn(), func(qctx context.Context) error {
			var n int
			if err := c.Conn().QueryRow(qctx, sqlLockBatch, ids, seqOID).Scan(&tokens[0], &pid, &n); err != nil {
				return err
			}
			if n != len(ms) {
				return fmt.Errorf("batch statement locked %d keys, want %d", n, len(ms))
			}
			for i := range tokens {
				tokens[i] = tokens[0] // one token, drawn after the last lock
			}
			return nil
		})
	}
	if interrupted || err != nil {
		// A statement that failed or was interrupted may have left some of
		// its session-level locks granted (they survive a failed
		// statement), and a late cancel request could hit the next
		// statement: the locks are freed and the connection is closed.
		l.discard(c, interrupted)
		// The sequence may have been dropped and created anew: look its
		// OID up again next time.
		l.seqOID.Store(0)
		if interrupted && ctx.Err() != nil {
			return nil, caesura.NotAcquired(key, ctx.Err())
		}
		if err == nil {
			err = errors.New("statement interrupted")
		}
		return nil, fmt.Errorf("pglock: acquire %q: %w", key, err)
	}
	if !granted {
		c.Release()
		return nil, fmt.Errorf("pglock: lock %q: %w", key, caesura.ErrNotAcquired)
	}

	p := &pinned{l: l, conn: c, pid: pid, refs: len(ms), ids: make([]int64, len(ms)), helds: make([]*held, len(ms))}
	for i, m := range ms {
		p.ids[i] = m.id
		lost, cancel := context.WithCancelCause(context.Background())
		p.helds[i] = &held{p: p, key: m.key, token: uint64(tokens[i]), lost: lost, cancelLost: cancel}
	}
	l.register(p)
	return p.helds, nil
}

// sequence returns the OID of the fencing sequence, creating the sequence
// if it does not exist; it is looked up once (passing the OID, not the name,
// keeps a name lookup out of every acquiring statement). A creation racing
// another session's is not an error.
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
	if err := c.QueryRow(ctx, `SELECT to_regclass($1)::oid`, l.seq).Scan(&oid); err != nil {
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
		if err := c.QueryRow(ctx, `SELECT $1::regclass::oid`, l.seq).Scan(&oid); err != nil {
			return 0, err
		}
	}
	l.seqOID.Store(*oid)
	return *oid, nil
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
//     backend: if pg_stat_activity shows it still running that statement,
//     it is ended with pg_terminate_backend(pid, timeout) from another
//     connection of the pool, which waits for the backend to exit
//     (PostgreSQL 14 and later; on older servers the locks are freed when
//     the backend notices the close).
func (l *Locker) discard(c *pgxpool.Conn, aborted bool) {
	conn := c.Hijack()
	pc := conn.PgConn()
	pid := pc.PID()
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
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57014" { // query_canceled
			break
		}
	}
	_ = conn.Close(ctx)
	if aborted {
		// Only a backend still running one of our statements: pid is the
		// one the connection was given at startup, which a pooler may have
		// made up, and which the OS may have reused once the backend exited.
		_, _ = l.pool.Exec(ctx, sqlTerminate, pid, (discardTimeout - time.Second).Milliseconds(), ourStatements)
	}
}

// sqlTerminate ends a backend that is still busy with one of ourStatements,
// waiting up to $2 ms for it to exit.
const sqlTerminate = `SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query = ANY($3)`

var ourStatements = []string{sqlLock, sqlTryLock, sqlLockBatch, sqlUnlock, sqlUnlockAll}
