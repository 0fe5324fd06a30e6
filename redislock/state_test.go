package redislock_test

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// lockState is a lock's value in Redis as the scripts write it (see
// scripts.go): the fencing counter alone when free without a queue, else
// owner (32, "-" when free), until (13), the queue in entries of 55 bytes,
// then the fencing counter.
type lockState struct {
	owner  string // "" when free or missing
	until  string // the lease's end, server ms
	fence  string
	queued int
}

func parseState(v string) lockState {
	if len(v) < 46 {
		return lockState{fence: v}
	}
	k := (len(v) - 45) / 55
	st := lockState{owner: v[:32], until: v[32:45], fence: v[45+55*k:], queued: k}
	if st.owner == strings.Repeat("-", 32) {
		st.owner = ""
	}
	return st
}

// readState reads the state of key (zero if missing).
func readState(ctx context.Context, c redis.Cmdable, key string) lockState {
	v, _ := c.Get(ctx, key).Result()
	return parseState(v)
}

// dropOwner marks key free behind its holder's back, keeping the fencing
// counter and the queue, as a lapsed lease looks to the scripts.
func dropOwner(ctx context.Context, c redis.Scripter, key string) error {
	return c.Eval(ctx, `
local v = redis.call('GET', KEYS[1])
if v and #v >= 46 then redis.call('SET', KEYS[1], string.rep('-', 32) .. '0000000000000' .. string.sub(v, 46)) end
return 0`, []string{key}).Err()
}

// stateOf parses a reply of testredis's Do("GET", key).
func stateOf(v any) lockState {
	s, _ := v.(string)
	return parseState(s)
}

// lapse ends the lease at key behind its holder's back (its end set to 1ms
// after the epoch), keeping the owner, the queue and the fencing counter.
func lapse(ctx context.Context, c redis.Scripter, key string) error {
	return c.Eval(ctx, `
local v = redis.call('GET', KEYS[1])
if v and #v >= 46 then redis.call('SET', KEYS[1], string.sub(v, 1, 32) .. '0000000000001' .. string.sub(v, 46)) end
return 0`, []string{key}).Err()
}
