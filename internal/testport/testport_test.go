package testport

import (
	"net"
	"strconv"
	"testing"
)

func TestReserveOutsideEphemeralRange(t *testing.T) {
	lo, hi := candidates()
	if lo > hi {
		t.Skip("the ephemeral range covers every usable port")
	}
	ports, err := Reserve(8)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < lo || p > hi {
			t.Errorf("port %d outside %d-%d", p, lo, hi)
		}
		if seen[p] {
			t.Errorf("port %d handed out twice", p)
		}
		seen[p] = true
		// Free again once Reserve returned.
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Errorf("port %d not free after Reserve: %v", p, err)
			continue
		}
		ln.Close()
	}
}

// An outgoing connection takes its local port from the ephemeral range, so
// it never lands on a reserved port.
func TestOutgoingConnectionsAvoidReservedRange(t *testing.T) {
	lo, hi := candidates()
	if lo > hi {
		t.Skip("the ephemeral range covers every usable port")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range 50 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		p := c.LocalAddr().(*net.TCPAddr).Port
		c.Close()
		if p >= lo && p <= hi {
			t.Fatalf("outgoing connection used port %d in the reserved interval %d-%d", p, lo, hi)
		}
	}
}
