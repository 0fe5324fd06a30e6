package reliability

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// TestProxy checks the partition proxy: it forwards, holds everything while
// blocked, and delivers it late once healed.
func TestProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() { // an echo server
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			c.Write([]byte(line))
		}
	}()
	px := startProxy(t, ln.Addr().String())
	c, err := net.Dial("tcp", px.addr())
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	echo := func(msg string, within time.Duration) (string, error) {
		c.SetDeadline(time.Now().Add(within))
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			return "", err
		}
		return r.ReadString('\n')
	}
	if got, err := echo("a", 5*time.Second); err != nil || got != "a\n" {
		t.Fatalf("through the proxy: got %q, %v; want \"a\\n\"", got, err)
	}
	px.block(true)
	if got, err := echo("b", 100*time.Millisecond); err == nil {
		t.Fatalf("while blocked: got %q, want a timeout", got)
	}
	px.block(false)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "b\n" {
		t.Fatalf("after healing: got %q, %v; want the held \"b\\n\"", got, err)
	}
	c.Close()
	px.close()
	<-done
}
