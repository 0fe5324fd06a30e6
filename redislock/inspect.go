package redislock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/caesura-go/caesura"
	"github.com/redis/go-redis/v9"
)

var _ caesura.Inspector = (*Mutex)(nil)

// inspectScript reads a lock's value (false when missing or not a string).
var inspectScript = newScript(`
local v = redis.pcall('GET', KEYS[1])
if v and v.err then return false end
return v
`)

// Inspect reports whether the lock is held and its fencing token (the
// holder's; when free, the last one handed out; 0 when Redis keeps no key
// for the lock), without taking the lock or a token. The holder and the
// time it took the lock are not recorded in Redis, so they stay empty. It
// is not supported in Redlock mode.
func (m *Mutex) Inspect(ctx context.Context) (caesura.LockState, error) {
	if m.name == "" {
		return caesura.LockState{}, fmt.Errorf("redislock: %w: empty name", caesura.ErrInvalidLock)
	}
	if m.l.c == nil {
		return caesura.LockState{}, errors.New("redislock: Inspect is not supported in Redlock mode")
	}
	v, err := inspectScript.run(ctx, m.l.c, []string{m.key}).Text()
	if errors.Is(err, redis.Nil) {
		return caesura.LockState{}, nil
	}
	if err != nil {
		return caesura.LockState{}, fmt.Errorf("redislock: inspect %q: %w: %w", m.key, ErrUnavailable, err)
	}
	var st caesura.LockState
	digits := v
	if len(v) >= 32 {
		st.Held = true
		digits = v[32:]
		if i := strings.IndexByte(digits, '|'); i >= 0 {
			digits = digits[:i]
		}
	}
	f, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return caesura.LockState{}, fmt.Errorf("redislock: inspect %q: unexpected value %q", m.key, v)
	}
	if !st.Held && f > 0 {
		f-- // a free key keeps the next token
	}
	st.Token = f
	return st, nil
}
