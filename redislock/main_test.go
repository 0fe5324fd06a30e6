package redislock_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

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

// server is a redis-server process of the test's own, on an ephemeral
// 127.0.0.1 port, so that a test may kill and restart it.
type server struct {
	t    *testing.T
	port int
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// redisServer finds the redis-server binary, or skips (fails under CI=true).
func redisServer(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server not found on PATH: install it (Debian: apt-get install redis-server) to run the Redis backend tests"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

func startServer(t *testing.T) *server {
	t.Helper()
	bin := redisServer(t)
	s := &server{t: t, dir: t.TempDir()}
	for attempt := 0; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if err := s.start(bin); err == nil {
			break
		} else if attempt == 5 {
			t.Fatalf("start redis-server: %v", err)
		}
	}
	t.Cleanup(s.Kill)
	return s
}

func (s *server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *server) start(bin string) error {
	cmd := exec.Command(bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--logfile", filepath.Join(s.dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", s.Addr(), 100*time.Millisecond)
		if err == nil {
			fmt.Fprint(c, "PING\r\n")
			c.SetReadDeadline(time.Now().Add(time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "+PONG") {
				s.mu.Lock()
				s.cmd = cmd
				s.mu.Unlock()
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	return fmt.Errorf("redis-server on port %d did not answer PING", s.port)
}

// Kill stops the server at once (SIGKILL), as a crash.
func (s *server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// Restart starts the server again on the same port, empty.
func (s *server) Restart() {
	s.t.Helper()
	if err := s.start(redisServer(s.t)); err != nil {
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
