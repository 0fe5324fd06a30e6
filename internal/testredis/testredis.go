// Package testredis starts redis-server processes of a test's own, on
// ephemeral 127.0.0.1 ports, for the tests and benchmarks of caesura's
// modules (redislock, reliability, bench/redis), so that a test may kill and
// restart its server: one server ([Start]), a master with a replica watched
// by three sentinels ([StartSentinel]), or a Redis Cluster of masters
// ([StartCluster]); a single server may be a valkey-server ([Options.Bin]).
// It uses the standard library only.
//
// Ports are reserved by binding to port 0 and closing the listener; a port
// taken by another process before the server binds it makes the server exit,
// and the server is started again on new ports.
package testredis

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caesura-go/caesura/internal/testport"
)

// Options configures a Server. A zero Options is a server that keeps
// nothing on disk.
type Options struct {
	// Persist keeps every write in an append-only file fsynced before the
	// reply, so that a crash loses nothing.
	Persist bool
	// Why names what needs the server, for the skip message.
	Why string
	// Bin is the server binary, looked up on PATH: "valkey-server", or
	// "redis-server" when empty. Sentinels and clusters are always Redis.
	Bin string
}

// Server is one redis-server (or valkey-server) process (a plain server, a
// replica, a sentinel or a cluster node).
type Server struct {
	bin  string
	opts Options
	dir  string
	// args returns the arguments for the process on port (and bus, the
	// cluster bus port, for cluster nodes).
	args func(port, bus int) []string
	// config, if set, is written to dir/redis.conf before every start and
	// passed as the first argument (sentinels need a writable file).
	config func(port int) string

	mu   sync.Mutex
	port int
	bus  int
	proc *process
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
}

// Start starts a server, killed when tb ends. Without a redis-server binary
// on PATH it skips tb, or fails it when the environment variable CI is
// "true". A port taken between its reservation and the server's bind is
// tried again on a new one.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s := newServer(tb, opts, "")
	s.args = s.plainArgs
	s.startNew(tb, false)
	return s
}

// lookBin returns the server binary called name ("" is redis-server), or
// skips tb (fails it under CI=true) when there is none.
func lookBin(tb testing.TB, name, why string) string {
	tb.Helper()
	if name == "" {
		name = "redis-server"
	}
	bin, err := exec.LookPath(name)
	if err != nil {
		if why == "" {
			why = "the Redis tests"
		}
		how := "install it (Debian: apt-get install redis-server, which also runs sentinels as redis-server --sentinel)"
		if name == "valkey-server" {
			how = "scripts/install-valkey builds Valkey 8.1 from Debian's source and installs it"
		}
		need(tb, name+" not found on PATH: "+how+", to run "+why)
	}
	return bin
}

// need skips tb with msg, or fails it when CI is "true", where every Redis
// test must run.
func need(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

func newServer(tb testing.TB, opts Options, bin string) *Server {
	tb.Helper()
	if bin == "" {
		bin = lookBin(tb, opts.Bin, opts.Why)
	}
	return &Server{bin: bin, opts: opts, dir: tb.TempDir()}
}

// plainArgs are the arguments of a stand-alone server or a replica.
func (s *Server) plainArgs(port, _ int) []string {
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", ""}
	if s.opts.Persist {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	return append(args, "--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log"))
}

// startNew starts s on newly reserved ports (two with bus: the cluster bus
// needs one too), again on other ports when the server cannot bind them,
// and kills it when tb ends.
func (s *Server) startNew(tb testing.TB, bus bool) {
	tb.Helper()
	var errs []error
	for attempt := 0; ; attempt++ {
		n := 1
		if bus {
			n = 2
		}
		ports, err := testport.Reserve(n)
		if err != nil {
			tb.Fatal(err)
		}
		s.mu.Lock()
		s.port = ports[0]
		if bus {
			s.bus = ports[1]
		}
		s.mu.Unlock()
		err = s.start()
		if err == nil {
			break
		}
		errs = append(errs, err)
		if attempt == 5 {
			tb.Fatalf("start redis-server: %v", errors.Join(errs...))
		}
	}
	tb.Cleanup(s.Kill)
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port()) }

// Port is the server's port.
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// start runs the process and waits until it answers as itself: a port taken
// by another server (which would answer PING too) is told apart by the
// process id in INFO.
func (s *Server) start() error {
	s.mu.Lock()
	port, bus := s.port, s.bus
	s.mu.Unlock()
	args := s.args(port, bus)
	if s.config != nil {
		conf := filepath.Join(s.dir, "redis.conf")
		if err := os.WriteFile(conf, []byte(s.config(port)), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", conf, err)
		}
		args = append([]string{conf}, args...)
	}
	cmd := exec.Command(s.bin, args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	want := "process_id:" + strconv.Itoa(cmd.Process.Pid)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("redis-server on port %d exited at start (%v): %s", port, cmd.ProcessState, s.logTail())
		default:
		}
		if info, err := Do(addr, "INFO", "server"); err == nil {
			if str, _ := info.(string); strings.Contains(str, want+"\r\n") {
				s.mu.Lock()
				s.proc = p
				s.mu.Unlock()
				return nil
			}
			// Another process answers on our port: ours cannot bind it.
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("redis-server on port %d did not answer as itself within 5s: %s", port, s.logTail())
}

// logTail returns the last lines of the server's log, for error messages.
func (s *Server) logTail() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return "no log"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return "log: " + strings.Join(lines[max(0, len(lines)-5):], " | ")
}

// Kill stops the server at once (SIGKILL), as a crash. It is a no-op when
// the server is down.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.cmd.Process.Kill()
		<-p.done
	}
}

// Restart starts the server again on the same port: empty, or as it was
// with Options.Persist (a cluster node keeps its cluster configuration).
func (s *Server) Restart() error { return s.start() }

// Do sends one command to the server and returns its reply; see [Do].
func (s *Server) Do(args ...string) (any, error) { return Do(s.Addr(), args...) }

// Do sends one command to the Redis server (or sentinel) at addr on a
// connection of its own and returns the reply: a string for simple, bulk
// and integer replies, []any for arrays, nil for null, and an error for an
// error reply or a failure. It is for set-up and checks, not for speed.
func Do(addr string, args ...string) (any, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return nil, err
	}
	return readReply(bufio.NewReader(c))
}

// ReplyError is an error reply of the server.
type ReplyError string

func (e ReplyError) Error() string { return "redis: " + string(e) }

func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("redis: empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return nil, ReplyError(line[1:])
	case '$', '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, fmt.Errorf("redis: bad length in %q", line)
		}
		if n < 0 {
			return nil, nil
		}
		if line[0] == '$' {
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(r, buf); err != nil {
				return nil, err
			}
			return string(buf[:n]), nil
		}
		out := make([]any, n)
		for i := range out {
			v, err := readReply(r)
			var re ReplyError
			if err != nil && !errors.As(err, &re) {
				return nil, err
			}
			if err != nil {
				v = err
			}
			out[i] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("redis: unexpected reply %q", line)
}

// infoField returns the value of name in an INFO (or CLUSTER INFO) reply.
func infoField(info any, name string) string {
	str, _ := info.(string)
	for _, line := range strings.Split(str, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// pairs turns a flat [field, value, ...] array reply into a map.
func pairs(v any) map[string]string {
	arr, _ := v.([]any)
	m := make(map[string]string, len(arr)/2)
	for i := 0; i+1 < len(arr); i += 2 {
		k, _ := arr[i].(string)
		val, _ := arr[i+1].(string)
		m[k] = val
	}
	return m
}

// WaitFor calls ok every 20ms until it returns nil or timeout passes, and
// returns its last error then.
func WaitFor(timeout time.Duration, ok func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
