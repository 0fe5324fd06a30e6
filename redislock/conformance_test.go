package redislock_test

import (
	"context"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/locktest"
	"github.com/caesura-go/caesura/redislock"
	"github.com/redis/go-redis/v9"
)

func TestConformance(t *testing.T) {
	s := startServer(t)
	// A short TTL so that Lose (deleting the key) is noticed at the next
	// renewal, within a second.
	conformance(t, s.locker(t, &redislock.Options{TTL: time.Second}), s.client(t))
}

// conformance runs the conformance suite on l's locks, losing a lock by
// deleting its key through c.
func conformance(t *testing.T, l *redislock.Locker, c redis.Cmdable) {
	t.Helper()
	locktest.Run(t, locktest.Harness{
		Lock: func(name string) caesura.Lock { return l.Mutex(name) },
		Lose: func(t *testing.T, name string) {
			if err := c.Del(context.Background(), l.Mutex(name).Key()).Err(); err != nil {
				t.Fatal(err)
			}
		},
		HandOff: 5 * time.Second,
	})
}
