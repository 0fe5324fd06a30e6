package reliability

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/filelock"
	"github.com/caesura-go/caesura/internal/testredis"
	"github.com/caesura-go/caesura/redislock"
)

// backend is one caesura backend under test. To add one (as pglock and
// etcdlock are, in backends_pg_test.go and backends_etcd_test.go): write a
// file that adds an entry to backends in an init function, with a start that
// brings up what the workers need (a server of the test's own, or a skip
// with a clear message) and an open that a worker process calls.
type backend struct {
	name string
	// lossy is true when a held lock can be lost (a lease expires, a
	// session drops): a paused holder can then be overtaken, and only
	// fencing keeps storage safe.
	lossy bool
	// unfenced is true when the backend issues no fencing tokens: the
	// scenarios whose register is the fenced store do not run.
	unfenced bool
	// start runs in the parent: it starts whatever the backend needs and
	// returns the settings passed to every worker (as strings), the lease
	// (TTL) and renewal interval if the backend has leases, and, if the
	// backend has a server the suite runs, a crash function that kills it
	// (kill -9), waits down and starts it again.
	start func(t *testing.T) *env
	// persistent, if set, starts a second server that keeps its data
	// across a crash (Redis: an append-only file fsynced on every write),
	// for the scenarios that compare a restart with and without it.
	persistent func(t *testing.T) *env
	// open runs in a worker: it returns the lock names' constructor and a
	// function that frees the backend's resources.
	open func(cfg map[string]string) (lock func(name string) caesura.Lock, close func(), err error)
}

var backends = map[string]*backend{
	"filelock": {
		name: "filelock",
		start: func(t *testing.T) *env {
			return &env{cfg: map[string]string{"dir": t.TempDir()}}
		},
		open: func(cfg map[string]string) (func(string) caesura.Lock, func(), error) {
			l, err := filelock.New(filelock.Options{Dir: cfg["dir"]})
			if err != nil {
				return nil, nil, err
			}
			return l.Mutex, func() {}, nil
		},
	},
	"redislock":          redisBackend("redislock", "", false),
	"redislock-valkey":   redisBackend("redislock-valkey", "valkey-server", false),
	"redislock-unfenced": redisBackend("redislock-unfenced", "", true),
}

// redisBackend is redislock on a server binary bin (see testredis.Options):
// on redis-server 7.0 its releases are scripts; on valkey-server 8.1 a lock
// taken without waiting is released by a conditional SET. With unfenced,
// its Lockers have Options.Unfenced: a missing key is taken by a plain
// SET … NX and a release deletes the key.
func redisBackend(name, bin string, unfenced bool) *backend {
	return &backend{
		name:     name,
		lossy:    true,
		unfenced: unfenced,
		start: func(t *testing.T) *env {
			return redisEnv(startRedis(t, bin, false))
		},
		persistent: func(t *testing.T) *env {
			return redisEnv(startRedis(t, bin, true))
		},
		open: func(cfg map[string]string) (func(string) caesura.Lock, func(), error) {
			ttl, err := time.ParseDuration(cfg["ttl"])
			if err != nil {
				return nil, nil, err
			}
			c := redis.NewClient(&redis.Options{Addr: cfg["addr"], DialTimeout: 500 * time.Millisecond})
			l, err := redislock.New(c, &redislock.Options{TTL: ttl, Prefix: "reliability:", Unfenced: unfenced})
			if err != nil {
				c.Close()
				return nil, nil, err
			}
			lock := func(name string) caesura.Lock { return l.Mutex(name) }
			return lock, func() { l.Close(); c.Close() }, nil
		},
	}
}

func redisEnv(s *redisServer) *env {
	return &env{
		cfg:     map[string]string{"addr": s.Addr(), "ttl": redisTTL.String()},
		lease:   redisTTL,
		renew:   redisTTL / 3,
		crash:   s.crash,
		sever:   s.clientKill,
		addrKey: "addr",
	}
}

// redisTTL is short so that a paused holder's lease runs out within a quick
// run, and a crashed holder's lock is taken over soon.
const redisTTL = 300 * time.Millisecond

// redisServer is a redis-server process of the test's own
// (internal/testredis), on an ephemeral 127.0.0.1 port.
type redisServer struct{ *testredis.Server }

// startRedis starts redis-server (or bin: testredis.Options), or skips
// (fails under CI=true) when it is not installed. With persist, it keeps
// every write in an append-only file fsynced before the reply, so that a
// crash loses nothing.
func startRedis(t *testing.T, bin string, persist bool) *redisServer {
	t.Helper()
	return &redisServer{testredis.Start(t, testredis.Options{Persist: persist, Bin: bin, Why: "the Redis reliability scenarios"})}
}

// crash kills the server (kill -9), waits down, and starts it again on the
// same port: empty without persistence (as in the backend's own tests), so
// every lock is forgotten; with it, as it was.
func (s *redisServer) crash(down time.Duration) error {
	s.Kill()
	time.Sleep(down)
	var err error
	for range 5 {
		if err = s.Restart(); err == nil {
			return nil
		}
	}
	return err
}

// clientKill closes every client connection (CLIENT KILL TYPE normal, then
// pubsub): the nearest Redis has to a forced session expiry. The locks stay;
// go-redis reconnects.
func (s *redisServer) clientKill() error {
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(c)
	for _, typ := range []string{"normal", "pubsub"} {
		// Our own connection is normal too: SKIPME yes (the default) spares it.
		fmt.Fprintf(c, "*4\r\n$6\r\nCLIENT\r\n$4\r\nKILL\r\n$4\r\nTYPE\r\n$%d\r\n%s\r\n", len(typ), typ)
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, ":") {
			return fmt.Errorf("CLIENT KILL TYPE %s: %q", typ, strings.TrimSpace(line))
		}
	}
	return nil
}

// quietRedis keeps go-redis's reconnection chatter out of the output.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
