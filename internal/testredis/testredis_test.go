package testredis_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/caesura-go/caesura/internal/testredis"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	fmt.Fprint(c, "PING\r\n")
	c.SetReadDeadline(time.Now().Add(time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.HasPrefix(line, "+PONG")
}

// A server answers, is down after Kill, and answers on the same port after
// Restart.
func TestStartKillRestart(t *testing.T) {
	s := testredis.Start(t, testredis.Options{})
	if !ping(s.Addr()) {
		t.Fatalf("%s does not answer PING", s.Addr())
	}
	s.Kill()
	if ping(s.Addr()) {
		t.Fatal("answers PING after Kill")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if !ping(s.Addr()) {
		t.Fatal("does not answer PING after Restart")
	}
}

// The sentinels promote the replica when the master dies, and it keeps the
// master's data.
func TestSentinelFailover(t *testing.T) {
	g := testredis.StartSentinel(t, testredis.SentinelOptions{})
	if _, err := g.Master.Do("SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	if n, err := g.Master.Do("WAIT", "1", "2000"); err != nil || n != "1" {
		t.Fatalf("WAIT 1: %v %v, want 1 replica", n, err)
	}
	if err := g.WaitMaster(g.Master.Addr(), time.Second); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	g.Master.Kill()
	if err := g.WaitMaster(g.Replica.Addr(), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("failover took %v", time.Since(start))
	if v, err := g.Replica.Do("GET", "k"); err != nil || v != "v" {
		t.Fatalf("GET k on the promoted replica: %v %v, want v", v, err)
	}
	if _, err := g.Replica.Do("SET", "k2", "v"); err != nil {
		t.Fatalf("SET on the promoted replica: %v", err)
	}
}

// Every node serves its share of the slots and redirects the others.
func TestCluster(t *testing.T) {
	c := testredis.StartCluster(t, testredis.ClusterOptions{})
	if len(c.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(c.Nodes))
	}
	// "foo" is in slot 12182: the third node's share.
	if _, err := c.Nodes[2].Do("SET", "foo", "bar"); err != nil {
		t.Fatalf("SET foo on its node: %v", err)
	}
	_, err := c.Nodes[0].Do("SET", "foo", "bar")
	if err == nil || !strings.HasPrefix(err.Error(), "redis: MOVED 12182 "+c.Nodes[2].Addr()) {
		t.Fatalf("SET foo on another node: got %v, want MOVED to %s", err, c.Nodes[2].Addr())
	}
}
