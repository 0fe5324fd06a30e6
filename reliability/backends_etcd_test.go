package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/etcdlock"
	"github.com/caesura-go/caesura/internal/testport"
)

// etcd runs as a process of the suite's own: the test binary re-executed
// with etcdEnv set runs one embedded etcd member (go.etcd.io/etcd/server/v3)
// on 127.0.0.1 ports and a data directory that the parent chose, so that the
// parent can kill it (kill -9) and start it again on the same data directory
// and ports, as a member restart. The workers connect to it over TCP.

// etcdEnv selects the etcd server role; its value is an etcdSpec in JSON.
const etcdEnv = "CAESURA_RELIABILITY_ETCD"

type etcdSpec struct {
	Dir    string // data directory
	Client string // client URL, http://127.0.0.1:port
	Peer   string // peer URL
	Ready  string // file written once the member serves
}

const (
	// etcdTTL is the session lease. etcd counts whole seconds, and raises a
	// TTL to 1.5 election timeouts: the member runs with a 500ms election
	// timeout so that 1s is allowed.
	etcdTTL = time.Second
	// etcdRenew bounds the time between two keep-alives: the client sends
	// them every TTL/3, but from a loop that wakes every 500ms; and the
	// server looks for expired leases every 500ms.
	etcdRenew = 500 * time.Millisecond
	// etcdPrefix is the etcd key prefix of the suite's locks (the member is
	// the suite's own: nothing else uses it).
	etcdPrefix = "/reliability/"
)

func init() {
	backends["etcdlock"] = &backend{
		name:  "etcdlock",
		lossy: true,
		start: func(t *testing.T) *env {
			return startEtcd(t).env(t)
		},
		// A second member, so that its crashes do not touch the other
		// scenarios' data. etcd always keeps its data (WAL and bbolt) on
		// disk; the member restarts on it.
		persistent: func(t *testing.T) *env {
			return startEtcd(t).env(t)
		},
		open: func(cfg map[string]string) (func(string) caesura.Lock, func(), error) {
			ttl, err := time.ParseDuration(cfg["ttl"])
			if err != nil {
				return nil, nil, fmt.Errorf("etcd ttl: %w", err)
			}
			c, err := clientv3.New(clientv3.Config{Endpoints: []string{cfg["addr"]}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				return nil, nil, fmt.Errorf("etcd client: %w", err)
			}
			l, err := etcdlock.New(c, etcdlock.WithPrefix(cfg["prefix"]), etcdlock.WithTTL(ttl))
			if err != nil {
				c.Close()
				return nil, nil, err
			}
			closeAll := func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				l.Close(ctx)
				c.Close()
			}
			return l.Mutex, closeAll, nil
		},
	}
}

func TestEtcdlock(t *testing.T) {
	t.Parallel()
	runBackend(t, "etcdlock")
}

// env is the backend's settings for the workers, its faults and its
// bounds, with an admin client of the parent's own for the lease revokes.
func (s *etcdServer) env(t *testing.T) *env {
	admin := s.client(t)
	return &env{
		cfg:     map[string]string{"addr": s.addr(), "ttl": etcdTTL.String(), "prefix": etcdPrefix},
		lease:   etcdTTL,
		renew:   etcdRenew,
		crash:   s.crash,
		addrKey: "addr",
		expire: func(lock string) error {
			return revokeHolder(admin, etcdPrefix, lock)
		},
		// The holder watches its own key (after holding 50ms): a revoke
		// deletes it, and the watch reports it at once.
		detect: 500 * time.Millisecond,
		// A 1s lease pauses and partitions for 2s: runs of 6s leave room
		// for a few of them.
		minRun: 6 * etcdTTL,
		missing: map[string]string{
			"sever": "etcd has no command that drops every client connection (Redis: CLIENT KILL); the proxy's reset does it per worker in fenced-store/network, and the member is killed and restarted in fenced-store/server-crash-persistent",
		},
	}
}

// revokeHolder revokes the lease of the key at the head of lock's queue:
// the holder's session ends, as when its lease expires.
func revokeHolder(c *clientv3.Client, prefix, lock string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	queue := prefix + etcdEscaper.Replace(lock) + "/"
	resp, err := c.Get(ctx, queue, clientv3.WithFirstCreate()...)
	if err != nil {
		return fmt.Errorf("read the queue of %q: %w", lock, err)
	}
	if len(resp.Kvs) == 0 {
		return errNoHolder
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)
	if lease == clientv3.NoLease {
		return fmt.Errorf("the holder's key %q has no lease", resp.Kvs[0].Key)
	}
	if _, err := c.Revoke(ctx, lease); err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return errNoHolder
		}
		return fmt.Errorf("revoke lease %x: %w", int64(lease), err)
	}
	return nil
}

// etcdEscaper maps a lock name to its queue's path segment as etcdlock does.
var etcdEscaper = strings.NewReplacer("%", "%25", "/", "%2F")

// etcdServer is one etcd member process of the suite's own.
type etcdServer struct {
	dir       string // data directory
	clientURL string
	peerURL   string
	starts    int

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *bytes.Buffer
}

// startEtcd starts a member on newly reserved ports, again on new ones (and
// a new data directory) when a port was taken before the member bound it,
// and kills it when t ends.
func startEtcd(t *testing.T) *etcdServer {
	t.Helper()
	base := t.TempDir()
	var errs []error
	for attempt := range 5 {
		peer, err := freeURL()
		if err != nil {
			t.Fatal(err)
		}
		client, err := freeURL()
		if err != nil {
			t.Fatal(err)
		}
		s := &etcdServer{dir: filepath.Join(base, fmt.Sprintf("data-%d", attempt)), clientURL: client, peerURL: peer}
		if err := s.start(); err != nil {
			errs = append(errs, err)
			continue
		}
		t.Cleanup(s.kill)
		return s
	}
	t.Fatalf("start etcd: %v", errors.Join(errs...))
	return nil
}

// freeURL returns an http URL on a 127.0.0.1 port that was free a moment ago,
// outside the range the kernel gives outgoing connections: a restart binds
// it again.
func freeURL() (string, error) {
	port, err := testport.One()
	if err != nil {
		return "", err
	}
	return "http://127.0.0.1:" + strconv.Itoa(port), nil
}

func (s *etcdServer) addr() string {
	u, _ := url.Parse(s.clientURL)
	return u.Host
}

// start runs the member and waits until it serves, or fails if it exits
// first (a port taken: the caller tries again).
func (s *etcdServer) start() error {
	ready := filepath.Join(filepath.Dir(s.dir), fmt.Sprintf("%s.ready-%d", filepath.Base(s.dir), s.starts))
	s.starts++
	spec, _ := json.Marshal(etcdSpec{Dir: s.dir, Client: s.clientURL, Peer: s.peerURL, Ready: ready})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), etcdEnv+"="+string(spec))
	// Should the test binary die without its clean-ups (a timeout), the
	// member goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the etcd member: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.After(2 * time.Minute) // a race-enabled binary on a loaded machine
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case <-done:
			return fmt.Errorf("etcd member on %s exited at start (%v): %s", s.clientURL, cmd.ProcessState, stderr.String())
		case <-deadline:
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("etcd member on %s not ready after 2 minutes: %s", s.clientURL, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.mu.Lock()
	s.cmd, s.done, s.stderr = cmd, done, stderr
	s.mu.Unlock()
	return nil
}

// kill stops the member at once (SIGKILL); a no-op when it is down.
func (s *etcdServer) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		<-done
	}
}

// crash kills the member (kill -9), waits down, and starts it again on the
// same data directory and ports: a member restart. The ports were freed by
// the kill; if another process took one meanwhile, the start is tried
// again a few times.
func (s *etcdServer) crash(down time.Duration) error {
	s.kill()
	time.Sleep(down)
	var err error
	for range 5 {
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// client returns a client of the parent's own, closed when t ends.
func (s *etcdServer) client(t *testing.T) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.addr()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// etcdServerMain is the etcd member process.
func etcdServerMain(specJSON string) int {
	var spec etcdSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		return 2
	}
	pu, err := url.Parse(spec.Peer)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		return 2
	}
	cu, err := url.Parse(spec.Client)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		return 2
	}
	cfg := embed.NewConfig()
	cfg.Name = "m0"
	cfg.Dir = spec.Dir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// The member's process is killed, not the machine: what it wrote is in
	// the kernel's page cache and survives without fsync.
	cfg.UnsafeNoFsync = true
	// The minimum lease TTL is 1.5 election timeouts, rounded up to a whole
	// second: 1s with a 500ms election timeout (etcd's default, 1s, makes
	// it 2s).
	cfg.TickMs, cfg.ElectionMs = 100, 500
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.InitialCluster = cfg.Name + "=" + spec.Peer
	cfg.InitialClusterToken = "caesura-reliability"
	cfg.ClusterState = embed.ClusterStateFlagNew // ignored on a restart: the data directory has it
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		return 3
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(2 * time.Minute):
		fmt.Fprintln(os.Stderr, "etcd member: not ready after 2 minutes")
		return 4
	}
	if err := os.WriteFile(spec.Ready, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		return 5
	}
	select {
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		return 6
	case <-e.Server.StopNotify():
		return 0
	}
}
