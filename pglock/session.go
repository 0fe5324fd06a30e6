package pglock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A session is one server session: a connection taken from the pool and
// pinned while any lock is held on it.
//
// Inside a scope (a function run by caesura.Run or Serialize) every lock of
// one Locker shares the scope's session, which caesura.Attach keeps: the
// connection is taken by the scope's first acquisition and goes back to the
// pool when the last lock on it is released. Outside a scope each
// acquisition (one lock, or one batch) has a session of its own.
//
// A pgx connection runs one statement at a time: mu serializes every use of
// conn (acquisitions, releases, the liveness check).
type session struct {
	l *Locker

	// solo: the session of one acquisition (one lock, or one batch) outside
	// any scope, or of one that could not run on its scope's session. Its
	// locks are unlocked together, in one statement, when the last of its
	// Helds is released. A scope's session unlocks each lock on its Release.
	solo bool

	// acquiring is set while an acquisition uses the session. Another
	// acquisition of the scope that starts meanwhile (from another
	// goroutine, since a scope's yields run one at a time) takes a
	// connection of its own instead of queueing behind a server-side wait.
	acquiring atomic.Bool

	mu      sync.Mutex // guards everything below, and every use of conn
	conn    *pgxpool.Conn
	pid     uint32   // pg_backend_pid() of the session's first statement; 0 before
	helds   heldList // the Helds whose locks are on conn: the unreleased ones, and a solo session's released ones
	live    int      // the unreleased Helds
	lost    error    // why the session ended under its locks; nil while it lives
	dirty   bool     // an advisory lock the session does not track may remain on conn
	broken  bool     // conn must run no new acquisition: a cancel request may still arrive
	watched bool     // registered with the Locker's liveness check
}

// errReleased is the cause of a Held's Lost context after its Release.
var errReleased = errors.New("pglock: released")

// attachKey is the caesura.Attach key of a Locker's session in a scope.
type attachKey struct{ l *Locker }

// endSession is the scope's done function for its session (see
// caesura.Attach). It runs after the scope released its locks, so the last
// Release has given the connection back already; a Held acquired with the
// scope's context but outside a yield, and not yet released, keeps the
// connection pinned until its own Release. It never waits for an acquisition
// still running in a goroutine the function left behind: that one gives the
// connection back itself if it ends holding nothing.
func endSession(_ context.Context, s *session) error {
	if !s.mu.TryLock() {
		return nil
	}
	defer s.mu.Unlock()
	if s.live == 0 {
		s.unpinLocked()
	}
	return nil
}

// holdsAnyLocked reports whether a lock of ms is held on the session. s.mu is
// held.
func (s *session) holdsAnyLocked(ms []*mutex) bool {
	if s.helds.n*len(ms) > 512 { // large batches: no quadratic scan
		ids := make(map[int64]struct{}, s.helds.n)
		for h := s.helds.first; h != nil; h = h.next {
			ids[h.id] = struct{}{}
		}
		for _, m := range ms {
			if _, ok := ids[m.id]; ok {
				return true
			}
		}
		return false
	}
	for h := s.helds.first; h != nil; h = h.next {
		for _, m := range ms {
			if h.id == m.id {
				return true
			}
		}
	}
	return false
}

// usableLocked reports whether an acquisition of ms may run on the session:
// it is alive, no cancel request can still hit it, and none of ms is held on
// it. PostgreSQL's advisory locks are reentrant within a session, so a
// second acquisition of a held id must run on another session to wait for
// the first, as two acquisitions of one key always do. s.mu is held.
func (s *session) usableLocked(ms []*mutex) bool {
	return s.lost == nil && !s.broken && !s.holdsAnyLocked(ms)
}

// acquireLocked takes every lock of ms on the session's connection in one
// statement (a try-lock for a single lock when try is set), pinning a
// connection first if the session has none. On error, nothing of ms is held
// and the session's other locks are untouched (or reported lost if the
// session ended). s.mu is held.
func (s *session) acquireLocked(ctx context.Context, ms []*mutex, try bool) ([]*held, error) {
	l := s.l
	key := ms[0].key
	if s.conn == nil {
		c, err := l.pool.Acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, caesura.NotAcquired(key, ctx.Err())
			}
			return nil, fmt.Errorf("pglock: acquire %q: connection: %w", key, err)
		}
		s.conn = c
	}
	c := s.conn.Conn()
	var tok int64 // one token for all of ms: a batch draws it after its last lock
	var pid uint32
	granted := true
	out, err := run(ctx, c.PgConn(), func(qctx context.Context) error {
		f, err := l.sequence(qctx, c)
		if err != nil {
			return fmt.Errorf("fencing sequence %s: %w", l.seq, err)
		}
		args := []any{nil, f.oid, nil}
		var skipped uint32 // the backend noted as one that skipped, 0 for none
		if f.fast {
			skipped, _ = c.PgConn().CustomData()[f.skipped].(uint32)
			args[2] = int32(skipped)
		} else {
			args = args[:2]
		}
		switch {
		case try:
			var t *int64
			args[0] = ms[0].id
			if err := c.QueryRow(qctx, f.sqlTryLock, args...).Scan(&t, &pid); err != nil {
				return err
			}
			if t == nil {
				granted = false
				return nil
			}
			tok = *t
		case len(ms) == 1:
			args[0] = ms[0].id
			if err := c.QueryRow(qctx, f.sqlLock, args...).Scan(nil, &tok, &pid); err != nil {
				return err
			}
		default:
			ids := make([]int64, len(ms))
			for i, m := range ms {
				ids[i] = m.id
			}
			args[0] = ids
			var n int
			if err := c.QueryRow(qctx, f.sqlLockBatch, args...).Scan(&tok, &pid, &n); err != nil {
				return err
			}
			if n != len(ms) {
				return fmt.Errorf("batch statement locked %d keys, want %d", n, len(ms))
			}
		}
		tok = f.token(c, skipped, pid, tok)
		return nil
	})
	if err != nil {
		// The sequence may have been dropped and created anew, or the
		// role's privileges on it changed: look it up again next time.
		l.resolved.Store(nil)
	}
	if out.interrupted || err != nil {
		s.abandonLocked(ms, out)
		if out.interrupted && ctx.Err() != nil {
			return nil, caesura.NotAcquired(key, ctx.Err())
		}
		if err == nil {
			err = errors.New("statement interrupted")
		}
		return nil, fmt.Errorf("pglock: acquire %q: %w", key, err)
	}
	if s.pid == 0 {
		s.pid = pid
	} else if pid != s.pid {
		// A pooler in transaction mode ran this statement on another
		// server session: whatever it took is out of reach, and the
		// session's earlier locks live on a server connection that
		// others may be using now.
		err := fmt.Errorf("pglock: acquire %q: %w: the scope's session is backend %d, this statement ran on %d", key, ErrSessionChanged, s.pid, pid)
		if s.live > 0 {
			s.loseLocked(err, false)
		} else {
			s.closeLocked(false)
		}
		return nil, err
	}
	if !granted {
		s.unpinIfIdleLocked()
		return nil, fmt.Errorf("pglock: lock %q: %w", key, caesura.ErrNotAcquired)
	}
	hs := make([]*held, len(ms))
	for i, m := range ms {
		lost, cancel := context.WithCancelCause(context.Background())
		hs[i] = &held{s: s, key: m.key, id: m.id, token: uint64(tok), lost: lost, cancelLost: cancel}
		s.helds.push(hs[i])
	}
	s.live += len(hs)
	if !s.watched {
		s.watched = true
		l.register(s)
	}
	return hs, nil
}

// abandonLocked cleans up after an acquiring statement for ms that failed or
// was interrupted: some of its locks may have been granted (session-level
// locks survive a failed statement). s.mu is held.
//
// With nothing else held on the session, the connection is closed as a
// whole (see discard). Otherwise only the statement's own grants are freed,
// so that the scope's other locks stay held; if that fails, or a cancel
// request may still hit the session, it is marked broken: it runs no further
// acquisition and is closed once its last lock is released. If the
// connection itself is gone (pgx closed it when cancel requests did not stop
// the statement in time, or the session ended), every lock on it is lost.
func (s *session) abandonLocked(ms []*mutex, out outcome) {
	pc := s.conn.Conn().PgConn()
	switch {
	case s.live == 0:
		s.closeLocked(out.interrupted)
	case pc.IsClosed():
		s.loseLocked(errors.New("pglock: connection closed by an interrupted acquisition"), out.interrupted)
	default:
		ids := make([]int64, len(ms))
		for i, m := range ms {
			ids[i] = m.id
		}
		if err := s.unlockGrantedLocked(ids); err != nil {
			switch {
			case pc.IsClosed():
				s.loseLocked(fmt.Errorf("pglock: connection closed while freeing an interrupted acquisition's locks: %w", err), true)
			case errors.Is(err, ErrSessionChanged):
				s.loseLocked(err, false)
			default:
				s.dirty, s.broken = true, true
			}
			return
		}
		if out.unsettled {
			s.broken = true
		}
	}
}

// unlockGrantedLocked frees whichever of ids the session holds (after a
// failed acquiring statement, when it is not known which of them were
// granted), retrying when a late cancel request hits it. None of ids may be
// held on the session by a Held: the statement took them all. s.mu is held.
func (s *session) unlockGrantedLocked(ids []int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), discardTimeout)
	defer cancel()
	var err error
	for range cancelAttempts + 1 {
		var n int64
		var pid uint32
		err = s.conn.Conn().QueryRow(ctx, sqlUnlockGranted, ids).Scan(&n, &pid)
		if err == nil && s.pid != 0 && pid != s.pid {
			return fmt.Errorf("%w: backend %d, then %d", ErrSessionChanged, s.pid, pid)
		}
		if !isQueryCanceled(err) {
			return err
		}
	}
	return err
}

// unlockLocked unlocks the locks of hs, Helds already taken off the session,
// in one statement. A failure that leaves the session alive marks it dirty:
// the locks are freed when its connection is given back (see unpinLocked). A
// failure that ended the session reports the loss to the Helds still on it.
// s.mu is held.
func (s *session) unlockLocked(ctx context.Context, hs []*held) error {
	// The unlock never waits on the server, so it needs no cancel request:
	// it runs under ctx's deadline only (a real timer context, which pgx
	// watches without a goroutine, whatever ctx's type); when that expires
	// pgx closes the connection, and the session ends.
	dl, hasDeadline := ctx.Deadline()
	switch {
	case ctx.Err() != nil:
		dl = time.Now().Add(discardTimeout) // no time left: a short one of our own
	case !hasDeadline:
		dl = time.Now().Add(releaseTimeout)
	}
	qctx, cancel := context.WithDeadline(context.Background(), dl)
	defer cancel()
	c := s.conn.Conn()
	var ok bool
	var pid uint32
	var err error
	var ids []int64
	if len(hs) == 1 {
		err = c.QueryRow(qctx, sqlUnlock, hs[0].id).Scan(&ok, &pid)
	} else {
		ids = make([]int64, len(hs))
		for i, h := range hs {
			ids[i] = h.id
		}
		err = c.QueryRow(qctx, sqlUnlockAll, ids).Scan(&ok, &pid)
	}
	if isQueryCanceled(err) && !c.PgConn().IsClosed() {
		// A late cancel request of an interrupted acquisition: the unlock
		// may or may not have run. Free whatever of the ids is still held.
		if ids == nil {
			ids = []int64{hs[0].id}
		}
		err = s.unlockGrantedLocked(ids)
		ok, pid = err == nil, s.pid
	}
	switch {
	case err != nil && c.PgConn().IsClosed():
		if qctx.Err() != nil {
			// pgx closed the connection at the deadline, mid-unlock: the
			// backend may still be busy with it.
			err = fmt.Errorf("pglock: release %s: unlock timed out, connection closed instead: %w", describe(hs), err)
			s.loseLocked(err, true)
			return err
		}
		err = fmt.Errorf("pglock: release %s: %w: session ended: %w", describe(hs), caesura.ErrNotHeld, err)
		s.loseLocked(err, false)
		return err
	case errors.Is(err, ErrSessionChanged):
		err = fmt.Errorf("pglock: release %s: %w", describe(hs), err)
		s.loseLocked(err, false)
		return err
	case err != nil:
		s.dirty = true
		return fmt.Errorf("pglock: release %s: unlock failed, the lock is freed when its session's connection is closed: %w", describe(hs), err)
	case pid != s.pid:
		err = fmt.Errorf("pglock: release %s: %w: acquired on backend %d, released on %d", describe(hs), ErrSessionChanged, s.pid, pid)
		s.loseLocked(err, false)
		return err
	case !ok:
		s.dirty = true
		return fmt.Errorf("pglock: release %s: %w: the session did not hold it", describe(hs), caesura.ErrNotHeld)
	}
	return nil
}

// loseLocked marks the session lost with reason, cancels the Lost context of
// every Held on it, and makes sure its locks are free: the connection is
// closed (which ends a session that still lives), and when aborted says the
// backend may still be busy with a statement pgx gave up on, that backend is
// terminated from another connection. The connection stays pinned, closed,
// until the last Held is released. s.mu is held.
func (s *session) loseLocked(reason error, aborted bool) {
	if s.lost != nil {
		return
	}
	s.lost = reason
	for h := s.helds.first; h != nil; h = h.next {
		if !h.released {
			h.cancelLost(&caesura.LostError{Key: h.key, Err: reason})
		}
	}
	c := s.conn.Conn()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = c.Close(ctx)
	if aborted {
		s.l.terminate(s.backendPID())
	}
}

// backendPID is the session's server pid as far as it is known. s.mu is
// held and conn is pinned.
func (s *session) backendPID() uint32 {
	if s.pid != 0 {
		return s.pid
	}
	// The pid the connection was given at startup, which a pooler may
	// have made up.
	return s.conn.Conn().PgConn().PID()
}

// unpinIfIdleLocked gives the connection back when no Held is left on it.
// s.mu is held.
func (s *session) unpinIfIdleLocked() {
	if s.live == 0 {
		s.unpinLocked()
	}
}

// unpinLocked gives the connection back to the pool, clean: no advisory lock
// is left on a connection that goes back. A lost session's connection is
// closed; a broken one's (a cancel request may still arrive) is freed of
// every advisory lock and closed; a dirty one's (an unlock failed) is freed
// with pg_advisory_unlock_all() first, and closed if that fails. The session
// is left empty and may pin a new connection. s.mu is held; no Held is left
// on the session.
func (s *session) unpinLocked() {
	c := s.conn
	if c == nil {
		return
	}
	switch {
	case s.lost != nil:
		s.resetLocked()
		destroy(c)
	case s.broken:
		s.closeLocked(false)
	case s.dirty:
		ctx, cancel := context.WithTimeout(context.Background(), discardTimeout)
		_, err := c.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
		cancel()
		if err != nil {
			s.closeLocked(false)
			return
		}
		s.resetLocked()
		c.Release()
	default:
		s.resetLocked()
		c.Release()
	}
}

// closeLocked closes the connection, freeing every advisory lock of the
// session first (see discard; aborted says pgx closed the connection while a
// statement ran), and leaves the session empty. s.mu is held; no Held is
// left on the session.
func (s *session) closeLocked(aborted bool) {
	c, pid := s.conn, s.backendPID()
	s.resetLocked()
	s.l.discard(c, aborted, pid)
}

// resetLocked empties the session after its connection was taken away, and
// stops watching it. s.mu is held.
func (s *session) resetLocked() {
	s.conn, s.pid, s.lost, s.dirty, s.broken = nil, 0, nil, false, false
	s.helds = heldList{} // only released Helds can be left
	if s.watched {
		s.watched = false
		s.l.unregister(s)
	}
}

// heldList is a session's unreleased Helds, linked through the Helds
// themselves: adding and removing one allocates nothing.
type heldList struct {
	first, last *held
	n           int
}

func (l *heldList) push(h *held) {
	h.prev, h.next = l.last, nil
	if l.last == nil {
		l.first = h
	} else {
		l.last.next = h
	}
	l.last = h
	l.n++
}

func (l *heldList) remove(h *held) {
	if h.prev == nil {
		l.first = h.next
	} else {
		h.prev.next = h.next
	}
	if h.next == nil {
		l.last = h.prev
	} else {
		h.next.prev = h.prev
	}
	h.prev, h.next = nil, nil
	l.n--
}

// releaseLocked releases hs, unreleased Helds of the session: a scope's
// session unlocks them in one statement; a solo session unlocks all its
// locks in one statement once the last of its Helds is released. When no
// Held is left, the connection goes back to the pool. s.mu is held.
func (s *session) releaseLocked(ctx context.Context, hs []*held) error {
	for _, h := range hs {
		h.released = true
		h.cancelLost(errReleased)
	}
	s.live -= len(hs)
	if s.lost != nil || !s.solo {
		for _, h := range hs {
			s.helds.remove(h)
		}
	}
	var err error
	switch {
	case s.lost != nil:
		err = fmt.Errorf("pglock: release %s: %w (lost: %w)", describe(hs), caesura.ErrNotHeld, s.lost)
	case s.solo && s.live > 0:
		return nil // the locks stay held until the last Held is released
	case s.solo:
		if s.helds.n != len(hs) { // the Helds released earlier too
			hs = make([]*held, 0, s.helds.n)
			for h := s.helds.first; h != nil; h = h.next {
				hs = append(hs, h)
			}
		}
		for _, h := range hs {
			s.helds.remove(h)
		}
		err = s.unlockLocked(ctx, hs)
	default:
		err = s.unlockLocked(ctx, hs)
	}
	s.unpinIfIdleLocked()
	return err
}

// describe names the keys of hs in an error.
func describe(hs []*held) string {
	if len(hs) == 1 {
		return strconv.Quote(hs[0].key)
	}
	return fmt.Sprintf("%d locks (%q and others)", len(hs), hs[0].key)
}
