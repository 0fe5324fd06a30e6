package redislock_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// queued runs acquire in a goroutine and returns, once key has a queue
// (acquire's waiter, which then waits for a release), a channel that gets
// what acquire returned: the zero value after an error, which it reports.
func queued[T any](t *testing.T, ctx context.Context, c redis.Cmdable, key string, acquire func() (T, error)) <-chan T {
	t.Helper()
	got := make(chan T, 1)
	go func() {
		v, err := acquire()
		if err != nil {
			t.Error(err)
		}
		got <- v
	}()
	for readState(ctx, c, key).queued == 0 {
		if ctx.Err() != nil {
			t.Fatal("the waiter never queued")
		}
		time.Sleep(time.Millisecond)
	}
	return got
}

// lockState is a lock's value in Redis as the scripts write it (see
// scripts.go): the next fencing token alone when free, else owner (32),
// the owner's fencing token, and when waiters queue "|", the queue in
// entries of 55 bytes, "|" and the channel prefix.
type lockState struct {
	owner  string // "" when free or missing
	fence  string // the owner's token; when free, the next one; "" when missing
	queued int
}

func parseState(v string) lockState {
	if len(v) < 32 {
		return lockState{fence: v}
	}
	st := lockState{owner: v[:32], fence: v[32:]}
	if f, rest, ok := strings.Cut(st.fence, "|"); ok {
		q, _, _ := strings.Cut(rest, "|")
		st.fence, st.queued = f, len(q)/55
	}
	return st
}

// readState reads the state of key (zero if missing).
func readState(ctx context.Context, c redis.Cmdable, key string) lockState {
	v, _ := c.Get(ctx, key).Result()
	return parseState(v)
}

// dropOwner frees key behind its holder's back, as a release by another
// token would: the key keeps the next fencing token and its expiry, and
// loses its queue.
func dropOwner(ctx context.Context, c redis.Scripter, key string) error {
	return c.Eval(ctx, `
local v = redis.call('GET', KEYS[1])
if v and #v >= 32 then
  local f = string.sub(v, 33)
  local b = string.find(f, '|', 1, true)
  if b then f = string.sub(f, 1, b - 1) end
  redis.call('SET', KEYS[1], string.format('%d', tonumber(f) + 1), 'KEEPTTL')
end
return 0`, []string{key}).Err()
}

// stateOf parses a reply of testredis's Do("GET", key).
func stateOf(v any) lockState {
	s, _ := v.(string)
	return parseState(s)
}

// lapse ends the lease at key behind its holder's back, as Redis does when
// it runs out: the key expires, with its queue.
func lapse(ctx context.Context, c redis.Cmdable, key string) error {
	return c.Del(ctx, key).Err()
}
