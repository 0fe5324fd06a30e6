package pglock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// checker is one run of the liveness check: a timer that fires every
// CheckInterval while any session is pinned. It costs no goroutine between
// checks, and none at all for locks held shorter than the interval.
type checker struct {
	t        *time.Timer
	stopped  bool          // guarded by Locker.mu: do not re-arm
	exited   chan struct{} // closed by a check that saw stopped
	lastPing time.Time     // used by the checks only, which run one at a time
}

// register adds s to the set the liveness check watches, arming the check
// if it was idle.
func (l *Locker) register(s *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sessions[s] = struct{}{}
	if l.check == nil {
		c := &checker{exited: make(chan struct{}), lastPing: time.Now()}
		c.t = time.AfterFunc(l.checkInterval, func() { l.tick(c) })
		l.check = c
	}
}

// unregister removes s from the watched set. When the set becomes empty it
// stops the liveness check and waits for a check in progress to end, so no
// goroutine outlives the last Release. A check in progress never waits for
// a session's mutex (it skips a busy session), so unregister may be called
// with one held.
func (l *Locker) unregister(s *session) {
	l.mu.Lock()
	delete(l.sessions, s)
	var wait chan struct{}
	if c := l.check; len(l.sessions) == 0 && c != nil {
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
// a pending FATAL message), and every PingInterval it asks each session for
// its backend pid.
func (l *Locker) tick(c *checker) {
	l.mu.Lock()
	if c.stopped {
		l.mu.Unlock()
		close(c.exited)
		return
	}
	snap := make([]*session, 0, len(l.sessions))
	for s := range l.sessions {
		snap = append(snap, s)
	}
	l.mu.Unlock()

	ping := time.Since(c.lastPing) >= l.pingInterval
	if ping {
		c.lastPing = time.Now()
	}
	for _, s := range snap {
		s.check(ping)
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

// check looks at one session's connection, unless a statement is using it.
func (s *session) check(ping bool) {
	if !s.mu.TryLock() {
		return
	}
	defer s.mu.Unlock()
	if s.conn == nil || s.lost != nil {
		return
	}
	pc := s.conn.Conn().PgConn()
	if pc.IsClosed() {
		s.loseLocked(errors.New("pglock: connection closed"), false)
		return
	}
	state, err := peek(pc.Conn())
	switch state {
	case peekAlive:
		if !ping {
			return
		}
	case peekDead:
		s.loseLocked(fmt.Errorf("pglock: session ended: %w", err), false)
		return
	}
	// Pending data on an idle connection (most likely the FATAL message
	// of a terminated session), no way to peek, or time for a ping: ask
	// for the backend pid, which also finds a pooler that moved the
	// connection to another server session. The ping's context is not the
	// check's: a ping is never cut short by a stop, which only comes once
	// no live session is pinned.
	pctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	rs, err := pc.Exec(pctx, `SELECT pg_backend_pid()`).ReadAll()
	if err == nil && (len(rs) != 1 || len(rs[0].Rows) != 1 || len(rs[0].Rows[0]) != 1) {
		err = errors.New("unexpected reply to SELECT pg_backend_pid()")
	}
	if err != nil {
		s.loseLocked(fmt.Errorf("pglock: session ended: %w", err), false)
		return
	}
	if pid, perr := strconv.ParseUint(string(rs[0].Rows[0][0]), 10, 32); perr == nil && s.pid != 0 && uint32(pid) != s.pid {
		s.loseLocked(fmt.Errorf("pglock: %w: the locks were taken on backend %d, the connection now reaches %d", ErrSessionChanged, s.pid, pid), false)
	}
}
