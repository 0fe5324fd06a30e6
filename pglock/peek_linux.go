//go:build linux

package pglock

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
)

// peek looks at an idle connection's socket without blocking and without
// consuming anything: EOF or an error means the session is gone, pending
// bytes need a closer look (an idle server sends only a FATAL message before
// it closes), nothing pending means the TCP connection is still open.
func peek(c net.Conn) (peekState, error) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return peekUnknown, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return peekUnknown, nil
	}
	var n int
	var rerr error
	if err := rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		return peekDead, err
	}
	switch {
	case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EINTR):
		return peekAlive, nil
	case rerr != nil:
		return peekDead, rerr
	case n == 0:
		return peekDead, io.EOF
	}
	return peekUnknown, nil
}
