package testredis

import "testing"

// A server whose port is already served by another redis-server must not
// take that server's PING for its own: start fails, so that Start tries
// again on a new port.
func TestPortTakenByAnotherServer(t *testing.T) {
	a := Start(t, Options{})
	b := newServer(t, Options{}, "")
	b.args = b.plainArgs
	b.port = a.Port()
	if err := b.start(); err == nil {
		b.Kill()
		t.Fatalf("started on %s, which another redis-server holds", a.Addr())
	}
	if _, err := a.Do("PING"); err != nil {
		t.Fatalf("the first server stopped answering: %v", err)
	}
}

func TestDoReplies(t *testing.T) {
	s := Start(t, Options{})
	for _, tc := range []struct {
		args []string
		want any
	}{
		{[]string{"SET", "k", "v"}, "OK"},
		{[]string{"GET", "k"}, "v"},
		{[]string{"GET", "missing"}, nil},
		{[]string{"INCR", "n"}, "1"},
	} {
		got, err := s.Do(tc.args...)
		if err != nil || got != tc.want {
			t.Errorf("%v: got %#v, %v; want %#v", tc.args, got, err, tc.want)
		}
	}
	got, err := s.Do("MGET", "k", "missing")
	if arr, ok := got.([]any); err != nil || !ok || len(arr) != 2 || arr[0] != "v" || arr[1] != nil {
		t.Errorf("MGET: got %#v, %v", got, err)
	}
	if _, err := s.Do("NOSUCHCOMMAND"); err == nil {
		t.Error("an unknown command: got no error")
	} else if _, ok := err.(ReplyError); !ok {
		t.Errorf("an unknown command: got %T %v, want a ReplyError", err, err)
	}
}
