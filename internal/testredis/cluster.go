package testredis

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// ClusterOptions configures [StartCluster].
type ClusterOptions struct {
	// Masters is the number of master nodes; each serves an equal share of
	// the 16384 hash slots. Zero means 3.
	Masters int
	// Why names what needs the servers, for the skip message.
	Why string
}

// Cluster is a Redis Cluster of masters without replicas, each node on its
// own ephemeral client and cluster-bus ports. Every node is killed when the
// test ends.
type Cluster struct {
	// Nodes are the masters, in slot order: node i serves the i-th share.
	Nodes []*Server
}

var versionRE = regexp.MustCompile(`v=(\d+)\.`)

// StartCluster starts the nodes, assigns the slots and joins them (as
// redis-cli --cluster create would, without its binary), and returns once
// every node sees the whole cluster as ok. It needs Redis 7.0 or later (for
// cluster-port); it skips tb (fails it under CI=true) otherwise or without a
// redis-server binary.
func StartCluster(tb testing.TB, opts ClusterOptions) *Cluster {
	tb.Helper()
	bin := lookBin(tb, "", opts.Why)
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		tb.Fatalf("%s --version: %v", bin, err)
	}
	if m := versionRE.FindSubmatch(out); m == nil {
		tb.Fatalf("%s --version: no version in %q", bin, out)
	} else if v, _ := strconv.Atoi(string(m[1])); v < 7 {
		need(tb, fmt.Sprintf("%s is %q: the Cluster tests need Redis 7.0 or later (cluster-port)", bin, out))
	}
	n := opts.Masters
	if n <= 0 {
		n = 3
	}
	c := &Cluster{}
	for range n {
		s := newServer(tb, Options{Why: opts.Why}, bin)
		s.args = func(port, bus int) []string {
			return append(s.plainArgs(port, bus), "--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(s.dir, "nodes-"+strconv.Itoa(port)+".conf"),
				"--cluster-port", strconv.Itoa(bus), "--cluster-node-timeout", "5000")
		}
		s.startNew(tb, true)
		c.Nodes = append(c.Nodes, s)
	}
	for i, s := range c.Nodes {
		lo, hi := 16384*i/n, 16384*(i+1)/n-1
		if _, err := s.Do("CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i+1)); err != nil {
			tb.Fatalf("node %s: CLUSTER SET-CONFIG-EPOCH: %v", s.Addr(), err)
		}
		if _, err := s.Do("CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi)); err != nil {
			tb.Fatalf("node %s: CLUSTER ADDSLOTSRANGE %d %d: %v", s.Addr(), lo, hi, err)
		}
	}
	first := c.Nodes[0]
	for _, s := range c.Nodes[1:] {
		s.mu.Lock()
		port, bus := s.port, s.bus
		s.mu.Unlock()
		if _, err := first.Do("CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(port), strconv.Itoa(bus)); err != nil {
			tb.Fatalf("node %s: CLUSTER MEET %s: %v", first.Addr(), s.Addr(), err)
		}
	}
	if err := WaitFor(20*time.Second, func() error {
		for _, s := range c.Nodes {
			info, err := s.Do("CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if st, known, slots := infoField(info, "cluster_state"), infoField(info, "cluster_known_nodes"),
				infoField(info, "cluster_slots_assigned"); st != "ok" || known != strconv.Itoa(n) || slots != "16384" {
				return fmt.Errorf("node %s: cluster_state %s, %s known nodes, %s slots assigned", s.Addr(), st, known, slots)
			}
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return c
}

// Addrs returns the nodes' host:port addresses.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, s := range c.Nodes {
		out = append(out, s.Addr())
	}
	return out
}
