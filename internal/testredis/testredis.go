// Package testredis starts redis-server processes of a test's own, on
// ephemeral 127.0.0.1 ports, for the tests and benchmarks of caesura's
// modules (redislock, reliability, bench/redis), so that a test may kill and
// restart its server. It uses the standard library only.
package testredis

import (
	"bufio"
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
)

// Options configures a Server. A zero Options is a server that keeps
// nothing on disk.
type Options struct {
	// Persist keeps every write in an append-only file fsynced before the
	// reply, so that a crash loses nothing.
	Persist bool
	// Why names what needs the server, for the skip message.
	Why string
}

// Server is one redis-server process.
type Server struct {
	bin  string
	opts Options
	port int
	dir  string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start starts a server, killed when tb ends. Without a redis-server binary
// on PATH it skips tb, or fails it when the environment variable CI is
// "true". A port taken between its reservation and the server's bind is
// tried again on a new one.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		why := opts.Why
		if why == "" {
			why = "the Redis tests"
		}
		msg := "redis-server not found on PATH: install it (Debian: apt-get install redis-server) to run " + why
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	s := &Server{bin: bin, opts: opts, dir: tb.TempDir()}
	for attempt := 0; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		s.port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if err := s.start(); err == nil {
			break
		} else if attempt == 5 {
			tb.Fatalf("start redis-server: %v", err)
		}
	}
	tb.Cleanup(s.Kill)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *Server) start() error {
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", ""}
	if s.opts.Persist {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(args, "--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log"))
	cmd := exec.Command(s.bin, args...)
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

// Kill stops the server at once (SIGKILL), as a crash. It is a no-op when
// the server is down.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// Restart starts the server again on the same port: empty, or as it was
// with Options.Persist.
func (s *Server) Restart() error { return s.start() }
