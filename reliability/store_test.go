package reliability

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fencedStore is storage that checks fencing tokens (Kleppmann's "How to do
// distributed locking"): it remembers, per key, the highest token any read or
// write carried, and counts every request that carries a lower one. With
// enforce it refuses them; without, it accepts them, to show what fencing
// prevents. It serves a line protocol on 127.0.0.1:
//
//	R key token        -> V value | STALE highest
//	W key token value  -> OK      | STALE highest
//	M key token value key token value ...  -> OK | STALE
//
// M writes several keys all or nothing (a transfer between two accounts), so
// that a worker killed between its two writes cannot tear a transfer: the
// balance total is then a fair invariant. It is refused (when enforcing) if
// any of its tokens is stale, and counts as one stale write.
//
// Reads raise the highest token too: a holder that read under token 7 cannot
// then be overwritten by a paused holder with token 6.
type fencedStore struct {
	enforce bool
	ln      net.Listener

	mu             sync.Mutex
	val            map[string]int64
	max            map[string]uint64
	staleReads     int // reads with a lower token (refused when enforcing)
	staleAttempted int // writes with a lower token
	staleAccepted  int // of those, accepted (must be 0 when enforcing)
	conns          map[net.Conn]struct{}
	closed         bool
	wg             sync.WaitGroup
}

func startStore(t *testing.T, enforce bool) *fencedStore {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fencedStore{enforce: enforce, ln: ln, val: map[string]int64{}, max: map[string]uint64{}, conns: map[net.Conn]struct{}{}}
	s.wg.Go(s.accept)
	t.Cleanup(s.close)
	return s
}

func (s *fencedStore) addr() string { return s.ln.Addr().String() }

func (s *fencedStore) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() { s.serve(c) })
	}
}

func (s *fencedStore) serve(c net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := c.Write([]byte(s.handle(strings.Fields(line)) + "\n")); err != nil {
			return
		}
	}
}

func (s *fencedStore) handle(f []string) string {
	if len(f) < 3 {
		return "ERR bad request"
	}
	key := f[1]
	tok, err := strconv.ParseUint(f[2], 10, 64)
	if err != nil {
		return "ERR bad token"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f[0] == "M" {
		return s.multi(f[1:])
	}
	stale := tok < s.max[key]
	switch {
	case f[0] == "R":
		if stale {
			s.staleReads++
			if s.enforce {
				return fmt.Sprintf("STALE %d", s.max[key])
			}
		} else {
			s.max[key] = tok
		}
		return fmt.Sprintf("V %d", s.val[key])
	case f[0] == "W" && len(f) == 4:
		v, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			return "ERR bad value"
		}
		if stale {
			s.staleAttempted++
			if s.enforce {
				return fmt.Sprintf("STALE %d", s.max[key])
			}
			s.staleAccepted++
		} else {
			s.max[key] = tok
		}
		s.val[key] = v
		return "OK"
	}
	return "ERR bad request"
}

// multi handles M; s.mu is held.
func (s *fencedStore) multi(f []string) string {
	if len(f) == 0 || len(f)%3 != 0 {
		return "ERR bad request"
	}
	type w struct {
		key string
		tok uint64
		v   int64
	}
	var ws []w
	stale := false
	for i := 0; i < len(f); i += 3 {
		tok, err1 := strconv.ParseUint(f[i+1], 10, 64)
		v, err2 := strconv.ParseInt(f[i+2], 10, 64)
		if err1 != nil || err2 != nil {
			return "ERR bad request"
		}
		ws = append(ws, w{f[i], tok, v})
		stale = stale || tok < s.max[f[i]]
	}
	if stale {
		s.staleAttempted++
		if s.enforce {
			return "STALE"
		}
		s.staleAccepted++
	}
	for _, w := range ws {
		s.max[w.key] = max(s.max[w.key], w.tok)
		s.val[w.key] = w.v
	}
	return "OK"
}

func (s *fencedStore) set(key string, v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.val[key] = v
}

func (s *fencedStore) value(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.val[key]
}

func (s *fencedStore) counts() (staleReads, attempted, accepted int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.staleReads, s.staleAttempted, s.staleAccepted
}

func (s *fencedStore) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// errStale is a fenced store's refusal of a stale token.
var errStale = errors.New("fenced store: stale token refused")

// storeClient is a worker's connection to the fenced store.
type storeClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialStore(addr string) (*storeClient, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	return &storeClient{c: c, r: bufio.NewReader(c)}, nil
}

func (sc *storeClient) do(format string, args ...any) (string, error) {
	sc.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(sc.c, format+"\n", args...); err != nil {
		return "", err
	}
	line, err := sc.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSpace(line)
	switch {
	case strings.HasPrefix(line, "STALE"):
		return "", fmt.Errorf("%w (%s)", errStale, line)
	case strings.HasPrefix(line, "ERR"):
		return "", errors.New("fenced store: " + line)
	}
	return line, nil
}

func (sc *storeClient) read(key string, tok uint64) (int64, error) {
	line, err := sc.do("R %s %d", key, tok)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimPrefix(line, "V "), 10, 64)
}

func (sc *storeClient) write(key string, tok uint64, v int64) error {
	_, err := sc.do("W %s %d %d", key, tok, v)
	return err
}

// write2 writes two keys all or nothing.
func (sc *storeClient) write2(k1 string, t1 uint64, v1 int64, k2 string, t2 uint64, v2 int64) error {
	_, err := sc.do("M %s %d %d %s %d %d", k1, t1, v1, k2, t2, v2)
	return err
}
