package testredis

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// MasterName is the name under which the sentinels of [StartSentinel]
// monitor their master.
const MasterName = "caesura"

// SentinelOptions configures [StartSentinel].
type SentinelOptions struct {
	// DownAfter is how long the master must fail to answer before a
	// sentinel holds it down (down-after-milliseconds): the least time a
	// failover takes. Zero means 500ms.
	DownAfter time.Duration
	// Why names what needs the servers, for the skip message.
	Why string
}

// Sentinel is a master with one replica, monitored by three sentinels
// (quorum 2) under [MasterName]. Every process is killed when the test
// ends.
type Sentinel struct {
	// Master is the master at start.
	Master *Server
	// Replica replicates Master; the sentinels promote it when Master dies.
	Replica *Server
	// Sentinels are the three redis-server --sentinel processes.
	Sentinels []*Server
}

// StartSentinel starts a master, its replica and three sentinels, and
// returns once the replica is in sync and every sentinel knows the replica
// and the two other sentinels, so that a failover can start. It skips tb
// (fails it under CI=true) without a redis-server binary.
func StartSentinel(tb testing.TB, opts SentinelOptions) *Sentinel {
	tb.Helper()
	bin := lookBin(tb, "", opts.Why)
	downAfter := opts.DownAfter
	if downAfter <= 0 {
		downAfter = 500 * time.Millisecond
	}
	so := Options{Why: opts.Why}
	g := &Sentinel{Master: newServer(tb, so, bin), Replica: newServer(tb, so, bin)}

	m := g.Master
	m.args = func(port, bus int) []string {
		// Full syncs at once, without the default wait for more replicas.
		return append(m.plainArgs(port, bus), "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
	}
	m.startNew(tb, false)
	masterPort := strconv.Itoa(m.Port())

	r := g.Replica
	r.args = func(port, bus int) []string {
		return append(r.plainArgs(port, bus), "--replicaof", "127.0.0.1", masterPort,
			"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
	}
	r.startNew(tb, false)
	if err := WaitFor(10*time.Second, func() error {
		info, err := r.Do("INFO", "replication")
		if err != nil {
			return err
		}
		if st := infoField(info, "master_link_status"); st != "up" {
			return fmt.Errorf("replica %s: master_link_status %q", r.Addr(), st)
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}

	for range 3 {
		s := newServer(tb, so, bin)
		s.args = func(int, int) []string { return []string{"--sentinel"} }
		s.config = func(port int) string {
			return fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
logfile %s
sentinel monitor %s 127.0.0.1 %s 2
sentinel down-after-milliseconds %[4]s %[6]d
sentinel failover-timeout %[4]s 2000
sentinel parallel-syncs %[4]s 1
`, port, s.dir, filepath.Join(s.dir, "redis.log"), MasterName, masterPort, downAfter.Milliseconds())
		}
		s.startNew(tb, false)
		g.Sentinels = append(g.Sentinels, s)
	}
	// Sentinels find the replica in the master's INFO at once, and each
	// other through hello messages every 2s.
	if err := WaitFor(20*time.Second, func() error {
		for _, s := range g.Sentinels {
			v, err := s.Do("SENTINEL", "MASTER", MasterName)
			if err != nil {
				return err
			}
			st := pairs(v)
			if st["num-slaves"] != "1" || st["num-other-sentinels"] != "2" {
				return fmt.Errorf("sentinel %s knows %s replicas and %s other sentinels, want 1 and 2",
					s.Addr(), st["num-slaves"], st["num-other-sentinels"])
			}
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return g
}

// SentinelAddrs returns the sentinels' host:port addresses.
func (g *Sentinel) SentinelAddrs() []string {
	var out []string
	for _, s := range g.Sentinels {
		out = append(out, s.Addr())
	}
	return out
}

// WaitMaster waits until every sentinel names addr as the master and the
// server at addr says it is one, or timeout passes.
func (g *Sentinel) WaitMaster(addr string, timeout time.Duration) error {
	return WaitFor(timeout, func() error {
		for _, s := range g.Sentinels {
			v, err := s.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MasterName)
			if err != nil {
				return err
			}
			hp, _ := v.([]any)
			if len(hp) != 2 {
				return fmt.Errorf("sentinel %s: master address %v", s.Addr(), v)
			}
			host, _ := hp[0].(string)
			port, _ := hp[1].(string)
			if got := net.JoinHostPort(host, port); got != addr {
				return fmt.Errorf("sentinel %s names %s as the master, want %s", s.Addr(), got, addr)
			}
		}
		info, err := Do(addr, "INFO", "replication")
		if err != nil {
			return err
		}
		if role := infoField(info, "role"); role != "master" {
			return errors.New(addr + " has role " + role)
		}
		return nil
	})
}
