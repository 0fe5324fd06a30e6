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
