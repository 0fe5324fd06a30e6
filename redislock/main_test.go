package redislock_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/caesura-go/caesura/internal/testredis"
	"github.com/caesura-go/caesura/redislock"
)

const childEnv = "REDISLOCK_TEST_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(child(spec))
	}
	// The tests kill servers on purpose: keep the client's dial errors
	// out of the output.
	redis.SetLogger(quiet{})
	goleak.VerifyTestMain(m)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// child acquires a lock ("addr name ttl") in a process of its own, says
// "held" on stdout and then exits without releasing it, as a crashed holder.
func child(spec string) int {
	f := strings.Fields(spec)
	ttl, _ := time.ParseDuration(f[2])
	c := redis.NewClient(&redis.Options{Addr: f[0]})
	l, err := redislock.New(c, &redislock.Options{TTL: ttl})
	if err != nil {
		fmt.Println(err)
		return 2
	}
	if _, err := l.Mutex(f[1]).Acquire(context.Background()); err != nil {
		fmt.Println(err)
		return 2
	}
	fmt.Println("held")
	return 0 // os.Exit: no release, no renewal
}

// server is a redis-server process of the test's own (internal/testredis),
// on an ephemeral 127.0.0.1 port, so that a test may kill and restart it.
type server struct {
	*testredis.Server
	t *testing.T
}

func startServer(t *testing.T) *server {
	t.Helper()
	return &server{Server: testredis.Start(t, testredis.Options{Why: "the Redis backend tests"}), t: t}
}

// Restart starts the server again on the same port, empty.
func (s *server) Restart() {
	s.t.Helper()
	if err := s.Server.Restart(); err != nil {
		s.t.Fatal(err)
	}
}

// client returns a go-redis client of s, closed at cleanup.
func (s *server) client(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	return c
}

// locker returns a Locker on a fresh client of s, closed at cleanup.
func (s *server) locker(t *testing.T, o *redislock.Options) *redislock.Locker {
	t.Helper()
	l, err := redislock.New(s.client(t), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
