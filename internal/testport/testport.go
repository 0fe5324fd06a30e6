// Package testport hands test harnesses 127.0.0.1 ports for servers they
// start, kill and start again on the same port.
//
// A port reserved with "127.0.0.1:0" lies in the kernel's ephemeral range,
// and the kernel hands the same range out as the local port of every
// outgoing connection. While a test's server is down, a client reconnecting
// to anything can be given its port, and the restart then fails with
// "address already in use" (this took an etcd member's peer port in CI).
// Reserve picks ports below that range (or above it when there is no room
// below), which the kernel never assigns on its own; only another harness
// picking the same port at random can take one, and the picker checks that a
// port is free before it returns it.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

const (
	lowest  = 10000 // below: well-known services a machine may run
	highest = 65535
	tries   = 200
)

// Reserve returns n distinct ports on 127.0.0.1 outside the kernel's
// ephemeral range, each free when Reserve returns. When that range covers
// every usable port, it falls back to ports the kernel chooses.
func Reserve(n int) ([]int, error) {
	lo, hi := candidates()
	var (
		ports []int
		held  []net.Listener
	)
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	for range n {
		ln, err := listen(lo, hi)
		if err != nil {
			return nil, err
		}
		held = append(held, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// One returns a single port as Reserve does.
func One() (int, error) {
	ports, err := Reserve(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// listen binds a free port in [lo, hi], or one the kernel picks when the
// interval is empty.
func listen(lo, hi int) (net.Listener, error) {
	if lo > hi {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("testport: reserve a port: %w", err)
		}
		return ln, nil
	}
	var last error
	for range tries {
		port := lo + rand.IntN(hi-lo+1)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			return ln, nil
		}
		last = err
	}
	return nil, fmt.Errorf("testport: no free port in %d-%d after %d tries: %w", lo, hi, tries, last)
}

// candidates is the larger interval of usable ports outside the ephemeral
// range in /proc/sys/net/ipv4/ip_local_port_range (Linux's default range,
// 32768-60999, when the file cannot be read).
func candidates() (lo, hi int) {
	elo, ehi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			a, errA := strconv.Atoi(f[0])
			z, errZ := strconv.Atoi(f[1])
			if errA == nil && errZ == nil && a <= z {
				elo, ehi = a, z
			}
		}
	}
	below := elo - 1 - lowest
	above := highest - (ehi + 1)
	if below >= above {
		return lowest, elo - 1
	}
	return ehi + 1, highest
}
