package pglock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/jackc/pgx/v5/pgxpool"
)

// errReleased is the cause of a Held's Lost context after its Release.
var errReleased = errors.New("pglock: released")

// pinned is one connection taken from the pool for one acquisition (one lock,
// or one batch). It goes back to the pool when its last Held is released.
type pinned struct {
	l    *Locker
	conn *pgxpool.Conn
	pid  uint32 // pg_backend_pid() seen by the acquiring statement
	ids  []int64

	mu    sync.Mutex // guards everything below, and every use of conn
	refs  int        // Helds not yet released
	lost  error      // why the session was lost, set by the liveness check
	done  bool       // conn went back to the pool or was closed
	helds []*held
}

// held is one acquisition of one lock.
type held struct {
	p          *pinned
	key        string
	token      uint64
	lost       context.Context
	cancelLost context.CancelCauseFunc
	released   bool // guarded by p.mu
}

var (
	_ caesura.Fenced = (*held)(nil)
	_ caesura.Lossy  = (*held)(nil)
)

// Token returns the fencing token: a value of the Locker's sequence drawn in
// the acquiring statement after the lock was granted, so it exceeds the
// token of every earlier holder of the key. The Helds of one batch share one
// token, drawn after the batch's last lock was granted.
func (h *held) Token() uint64 { return h.token }

// Lost returns a context cancelled with a [*caesura.LostError] cause when the
// pinned session ends (pg_terminate_backend, a server restart, a connection
// that stopped answering), and with another cause on Release.
func (h *held) Lost() context.Context { return h.lost }

// Release unlocks the lock. The Helds of one batch share a connection: the
// batch is unlocked in one statement when the last of them is released, and
// the locks stay held on the server until then. A second Release, or one
// after the lock was lost, returns an error matching [caesura.ErrNotHeld].
// A Release whose statement fails, or whose ctx is already done, closes the
// connection instead, which ends the session and so frees its locks.
func (h *held) Release(ctx context.Context) error {
	p := h.p
	p.mu.Lock()
	if h.released {
		p.mu.Unlock()
		return fmt.Errorf("pglock: release %q: %w", h.key, caesura.ErrNotHeld)
	}
	h.released = true
	h.cancelLost(errReleased)
	p.refs--
	if p.refs > 0 {
		lost := p.lost
		p.mu.Unlock()
		if lost != nil {
			return fmt.Errorf("pglock: release %q: %w (lost: %w)", h.key, caesura.ErrNotHeld, lost)
		}
		return nil
	}
	err := p.unlockLocked(ctx, h.key)
	p.mu.Unlock()
	p.l.unregister(p)
	return err
}

// unlockLocked unlocks every lock of p and gives the connection back, or
// closes it when anything is off. p.mu is held.
func (p *pinned) unlockLocked(ctx context.Context, key string) error {
	p.done = true
	if p.lost != nil {
		destroy(p.conn)
		return fmt.Errorf("pglock: release %q: %w (lost: %w)", key, caesura.ErrNotHeld, p.lost)
	}
	if ctx.Err() != nil {
		// No time left: unlock with discard's own short deadline.
		p.l.discard(p.conn, false)
		return nil
	}
	// The unlock never waits on the server, so it needs no cancel request:
	// it runs under ctx's deadline only (a real timer context, which pgx
	// watches without a goroutine, whatever ctx's type); when that expires
	// pgx closes the connection, and discard ends the session.
	dl, hasDeadline := ctx.Deadline()
	if !hasDeadline {
		dl = time.Now().Add(releaseTimeout)
	}
	qctx, cancel := context.WithDeadline(context.Background(), dl)
	defer cancel()
	c := p.conn.Conn()
	var ok bool
	var pid uint32
	var err error
	if len(p.ids) == 1 {
		err = c.QueryRow(qctx, sqlUnlock, p.ids[0]).Scan(&ok, &pid)
	} else {
		err = c.QueryRow(qctx, sqlUnlockAll, p.ids).Scan(&ok, &pid)
	}
	switch {
	case err != nil && qctx.Err() != nil:
		// pgx closed the connection during the unlock.
		p.l.discard(p.conn, true)
		return fmt.Errorf("pglock: release %q: unlock timed out, connection closed instead: %w", key, err)
	case err != nil && c.PgConn().IsClosed():
		// The session ended before the unlock: the lock was lost.
		destroy(p.conn)
		return fmt.Errorf("pglock: release %q: %w: session ended: %w", key, caesura.ErrNotHeld, err)
	case err != nil:
		p.l.discard(p.conn, false)
		return fmt.Errorf("pglock: release %q: unlock failed, connection closed instead: %w", key, err)
	case pid != p.pid:
		destroy(p.conn)
		return fmt.Errorf("pglock: release %q: %w: acquired on backend %d, released on %d", key, ErrSessionChanged, p.pid, pid)
	case !ok:
		p.l.discard(p.conn, false)
		return fmt.Errorf("pglock: release %q: %w: the session did not hold it", key, caesura.ErrNotHeld)
	}
	p.conn.Release()
	return nil
}

// loseLocked marks p lost with reason, cancels every Held's Lost context,
// and closes the connection so the server ends the session if it has not.
// p.mu is held.
func (p *pinned) loseLocked(reason error) {
	p.lost = reason
	for _, h := range p.helds {
		if !h.released {
			h.cancelLost(&caesura.LostError{Key: h.key, Err: reason})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = p.conn.Conn().Close(ctx)
}

// checker is one run of the liveness check: a timer that fires every
// CheckInterval while any connection is pinned. It costs no goroutine
// between checks, and none at all for locks held shorter than the interval.
type checker struct {
	t        *time.Timer
	stopped  bool          // guarded by Locker.mu: do not re-arm
	exited   chan struct{} // closed by a check that saw stopped
	lastPing time.Time     // used by the checks only, which run one at a time
}

// register adds p to the set the liveness check watches, arming the check
// if it was idle.
func (l *Locker) register(p *pinned) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pins[p] = struct{}{}
	if l.check == nil {
		c := &checker{exited: make(chan struct{}), lastPing: time.Now()}
		c.t = time.AfterFunc(l.checkInterval, func() { l.tick(c) })
		l.check = c
	}
}

// unregister removes p from the watched set. When the set becomes empty it
// stops the liveness check and waits for a check in progress to end, so no
// goroutine outlives the last Release.
func (l *Locker) unregister(p *pinned) {
	l.mu.Lock()
	delete(l.pins, p)
	var wait chan struct{}
	if c := l.check; len(l.pins) == 0 && c != nil {
		l.check = nil
		c.stopped = true
		// The timer is re-armed only under l.mu: if Stop finds it not
		// pending, a check has started and will see stopped.
		if !c.t.Stop() {
			wait = c.exited
		}
	}
	l.mu.Unlock()
	if wait != nil {
		<-wait
	}
}

// tick is one liveness check: every CheckInterval it peeks at each pinned
// connection's socket without blocking (a closed session shows as EOF or as
// a pending FATAL message), and every PingInterval it pings each one.
func (l *Locker) tick(c *checker) {
	l.mu.Lock()
	if c.stopped {
		l.mu.Unlock()
		close(c.exited)
		return
	}
	snap := make([]*pinned, 0, len(l.pins))
	for p := range l.pins {
		snap = append(snap, p)
	}
	l.mu.Unlock()

	ping := time.Since(c.lastPing) >= l.pingInterval
	if ping {
		c.lastPing = time.Now()
	}
	for _, p := range snap {
		p.check(ping)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if c.stopped {
		close(c.exited)
		return
	}
	c.t.Reset(l.checkInterval)
}

// releaseTimeout bounds an unlock whose context has no deadline.
const releaseTimeout = 10 * time.Second

// pingTimeout bounds a liveness ping.
const pingTimeout = 5 * time.Second

// check looks at one pinned connection, unless a statement is using it.
func (p *pinned) check(ping bool) {
	if !p.mu.TryLock() {
		return
	}
	defer p.mu.Unlock()
	if p.done || p.lost != nil {
		return
	}
	pc := p.conn.Conn().PgConn()
	if pc.IsClosed() {
		p.loseLocked(errors.New("pglock: connection closed"))
		return
	}
	state, err := peek(pc.Conn())
	switch state {
	case peekAlive:
		if !ping {
			return
		}
	case peekDead:
		p.loseLocked(fmt.Errorf("pglock: session ended: %w", err))
		return
	}
	// Pending data on an idle connection (most likely the FATAL message
	// of a terminated session), no way to peek, or time for a ping: ask.
	// The ping's context is not the monitor's: a ping is never cut short
	// by a stop, which only comes once no live connection is pinned.
	pctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	err = pc.Ping(pctx)
	cancel()
	if err != nil {
		p.loseLocked(fmt.Errorf("pglock: session ended: %w", err))
	}
}
