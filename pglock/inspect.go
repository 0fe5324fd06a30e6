package pglock

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caesura-go/caesura"
)

var _ caesura.Inspector = (*mutex)(nil)

// sqlInspect finds the session holding an int8 advisory lock in pg_locks
// (classid and objid are the key's high and low 32 bits, objsubid 1) and
// describes it from pg_stat_activity. PostgreSQL records no time of grant,
// so the session's last state change stands in for it.
const sqlInspect = `SELECT l.pid, coalesce(host(a.client_addr), 'local'), coalesce(a.application_name, ''), a.state_change
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = $1 AND l.objid::bigint = $2`

// Inspect reports whether the lock is held and by which server session
// (its pid, client address and application name), taking nothing. Since is
// the holder session's last state change (PostgreSQL keeps no time of
// grant), and Token stays zero: pglock's tokens come from one sequence for
// all keys, so a key has no current token of its own to show.
func (m *mutex) Inspect(ctx context.Context) (caesura.LockState, error) {
	if m.name == "" {
		return caesura.LockState{}, fmt.Errorf("pglock: %w: empty name", caesura.ErrInvalidLock)
	}
	hi, lo := int64(uint64(m.id)>>32), int64(uint64(m.id)&0xffffffff)
	var (
		pid        int32
		addr, app  string
		stateSince *time.Time
	)
	err := m.l.pool.QueryRow(ctx, sqlInspect, hi, lo).Scan(&pid, &addr, &app, &stateSince)
	if err == pgx.ErrNoRows {
		return caesura.LockState{}, nil
	}
	if err != nil {
		return caesura.LockState{}, fmt.Errorf("pglock: inspect %q: %w", m.key, err)
	}
	st := caesura.LockState{Held: true, Holder: fmt.Sprintf("pid %d from %s", pid, addr)}
	if app != "" {
		st.Holder += " (" + app + ")"
	}
	if stateSince != nil {
		st.Since = *stateSince
	}
	return st, nil
}
