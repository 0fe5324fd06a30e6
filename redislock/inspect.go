package redislock

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/caesura-go/caesura"
	"github.com/redis/go-redis/v9"
)

var _ caesura.Inspector = (*Mutex)(nil)

// inspectScript reads a lock's state with the server's clock: owner, lease
// end (ms), fencing counter and the server time (ms).
var inspectScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1]) or '0'
local t = redis.call('TIME')
local now = tostring(t[1] * 1000 + (t[2] - t[2] % 1000) / 1000)
if #v < 46 then return {'', '0', v, now} end
local o = string.sub(v, 1, 32)
if o == string.rep('-', 32) then o = '' end
return {o, string.sub(v, 33, 45), string.sub(v, 46 + 55 * math.floor((#v - 45) / 55)), now}
`)

// Inspect reports whether the lock is held and its fencing counter, without
// taking the lock or a token. The holder and the time it took the lock are
// not recorded in Redis, so they stay empty. It is not supported in Redlock
// mode.
func (m *Mutex) Inspect(ctx context.Context) (caesura.LockState, error) {
	if m.name == "" {
		return caesura.LockState{}, fmt.Errorf("redislock: %w: empty name", caesura.ErrInvalidLock)
	}
	if m.l.c == nil {
		return caesura.LockState{}, errors.New("redislock: Inspect is not supported in Redlock mode")
	}
	vals, err := inspectScript.Run(ctx, m.l.c, []string{m.key}).StringSlice()
	if err != nil {
		return caesura.LockState{}, fmt.Errorf("redislock: inspect %q: %w: %w", m.key, ErrUnavailable, err)
	}
	if len(vals) != 4 {
		return caesura.LockState{}, fmt.Errorf("redislock: inspect %q: unexpected reply %q", m.key, vals)
	}
	until, _ := strconv.ParseInt(vals[1], 10, 64)
	fence, _ := strconv.ParseUint(vals[2], 10, 64)
	now, _ := strconv.ParseInt(vals[3], 10, 64)
	st := caesura.LockState{Token: fence}
	st.Held = vals[0] != "" && until > now
	return st, nil
}
