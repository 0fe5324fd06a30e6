package redislock_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/redislock"
)

// cmdstat returns a field (calls, rejected_calls, failed_calls) of a
// command's line in c's INFO commandstats, 0 when the command has none.
func cmdstat(t *testing.T, c *redis.Client, cmd, field string) int {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	return cmdstatIn(info, cmd, field)
}

// cmdstatIn returns a field of a command's line in an INFO commandstats
// reply, 0 when the command has none.
func cmdstatIn(info, cmd, field string) int {
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":")
		if !ok {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, field+"="); ok {
				var n int
				fmt.Sscan(v, &n)
				return n
			}
		}
	}
	return 0
}

// cycles acquires and releases name n times, and hands it once from a
// holder to a waiter (queued, as c reads the key), so that every script
// runs.
func cycles(t *testing.T, ctx context.Context, l *redislock.Locker, c *redis.Client, name string, n int) {
	t.Helper()
	m := l.Mutex(name)
	for range n {
		if err := mustAcquire(t, ctx, m).Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	h := mustAcquire(t, ctx, m)
	got := make(chan error, 1)
	go func() {
		h2, err := m.Acquire(ctx)
		if err == nil {
			err = h2.Release(ctx)
		}
		got <- err
	}()
	for readState(ctx, c, m.Key()).queued == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if _, err := m.Inspect(ctx); err != nil {
		t.Fatal(err)
	}
}

// libraries returns the names of the function libraries on c's server.
func libraries(t *testing.T, c *redis.Client) []string {
	t.Helper()
	libs, err := c.FunctionList(context.Background(), redis.FunctionListQuery{}).Result()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range libs {
		names = append(names, l.Name)
	}
	return names
}

// TestFunctions checks that the scripts run as functions of one library,
// loaded once, and loaded again after the server lost it.
func TestFunctions(t *testing.T) {
	s := startServer(t)
	c := s.client(t)
	l := s.locker(t, nil)
	ctx := ctxT(t, 10*time.Second)
	cycles(t, ctx, l, c, "f", 5)
	if got := libraries(t, c); len(got) != 1 || got[0] != redislock.LibraryName {
		t.Errorf("libraries %v, want [%s]", got, redislock.LibraryName)
	}
	if n := cmdstat(t, c, "function|load", "calls"); n != 1 {
		t.Errorf("FUNCTION LOAD ran %d times, want 1", n)
	}
	if n := cmdstat(t, c, "evalsha", "calls") + cmdstat(t, c, "eval", "calls"); n != 0 {
		t.Errorf("%d EVALSHA or EVAL calls; want all scripts as functions", n)
	}
	// 6 acquires, a wait, a hand-off, the waiter's release and an Inspect;
	// and 5 releases unless the server releases by a conditional SET.
	want := 14
	if condSet(t, c) {
		want = 9
	}
	if n := cmdstat(t, c, "fcall", "calls"); n < want {
		t.Errorf("%d FCALLs, want at least %d", n, want)
	}

	// An operator flushes the functions, or the server restarts empty.
	if err := c.FunctionFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	cycles(t, ctx, l, c, "f", 1)
	if n := cmdstat(t, c, "function|load", "calls"); n != 2 {
		t.Errorf("FUNCTION LOAD ran %d times after FUNCTION FLUSH, want 2", n)
	}
	s.Kill()
	s.Restart()
	cycles(t, ctx, l, c, "f", 1)
	if got := libraries(t, c); len(got) != 1 {
		t.Errorf("libraries after a restart %v, want [%s]", got, redislock.LibraryName)
	}
}

// scriptsOnlyClient is a Client that cannot call functions: it has only
// the methods of redislock.Client.
type scriptsOnlyClient struct{ redislock.Client }

// TestScriptsOnly runs the conformance suite where functions cannot run:
// through a client without FCALL, and for users whose ACL denies FCALL or
// FUNCTION LOAD. The backend runs cached scripts, and stops trying FCALL
// after the first refusal.
func TestScriptsOnly(t *testing.T) {
	s := startServer(t)
	admin := s.client(t)
	ctx := ctxT(t, 30*time.Second)
	for _, acl := range []string{"-fcall", "-function|load"} {
		if err := admin.Do(ctx, "ACL", "SETUSER", "u"+acl, "on", "nopass", "~*", "&*", "+@all", acl).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		client func(t *testing.T) redislock.Client
		// the command refused, and how many FCALLs ran (and failed)
		refused string
		fcalls  int
	}{
		{"NoFCallMethod", func(t *testing.T) redislock.Client { return scriptsOnlyClient{s.client(t)} }, "", 0},
		{"ACLDeniesFCALL", func(t *testing.T) redislock.Client { return userClient(t, s, "u-fcall") }, "fcall", 0},
		{"ACLDeniesFunctionLoad", func(t *testing.T) redislock.Client { return userClient(t, s, "u-function|load") }, "function|load", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := admin.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if err := admin.FunctionFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			c := tc.client(t)
			l, err := redislock.New(c, &redislock.Options{TTL: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			// The first calls come one at a time, so the refusal comes
			// once; the suite's concurrent calls then find the fallback set.
			cycles(t, ctx, l, admin, "s", 3)
			conformance(t, l, admin)
			if n := cmdstat(t, admin, "evalsha", "calls"); n < 10 {
				t.Errorf("%d EVALSHA calls, want the scripts to run as cached scripts", n)
			}
			if n := cmdstat(t, admin, "fcall", "calls"); n != tc.fcalls {
				t.Errorf("%d FCALLs ran, want %d", n, tc.fcalls)
			}
			if tc.refused != "" {
				if n := cmdstat(t, admin, tc.refused, "rejected_calls"); n != 1 {
					t.Errorf("%s refused %d times, want once: the backend must not try again", tc.refused, n)
				}
			}
			if got := libraries(t, admin); len(got) != 0 {
				t.Errorf("libraries %v loaded, want none", got)
			}
		})
	}
}

func userClient(t *testing.T, s *server, user string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), Username: user, Password: "any", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestLeastACL runs the conformance suite, a lock held past two leases and
// a Redlock cycle, as users
// granted no more than the package documentation lists: the keys and
// channels under the Prefix and its commands, once through functions and
// once through cached scripts (each command in the list is needed: the
// test fails without any one of them). Nothing else may be refused (ACL LOG),
// beyond the one FCALL of the user without it.
func TestLeastACL(t *testing.T) {
	s := startServer(t)
	admin := s.client(t)
	ctx := ctxT(t, 60*time.Second)
	common := []any{"+set", "+get", "+mget", "+del", "+pexpire", "+pttl", "+time", "+publish", "+subscribe"}
	for _, tc := range []struct {
		user    string
		run     []any
		refused int // ACL LOG entries the fallback to cached scripts costs
	}{
		{"least-functions", []any{"+fcall", "+function|load"}, 0},
		{"least-scripts", []any{"+evalsha", "+eval"}, 1},
	} {
		t.Run(tc.user, func(t *testing.T) {
			args := []any{"ACL", "SETUSER", tc.user, "reset", "on", "nopass",
				"~" + redislock.DefaultPrefix + "*", "&" + redislock.DefaultPrefix + "*"}
			args = append(append(args, tc.run...), common...)
			for _, cmd := range [][]any{args, {"ACL", "LOG", "RESET"}, {"FUNCTION", "FLUSH"}} {
				if err := admin.Do(ctx, cmd...).Err(); err != nil {
					t.Fatal(cmd[:2], err)
				}
			}
			l := newLocker(t, userClient(t, s, tc.user), &redislock.Options{TTL: time.Second})
			conformance(t, l, admin)
			// Held past two leases: renewed.
			h, err := l.Mutex("renewed").Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(2500 * time.Millisecond)
			if err := h.(caesura.Lossy).Lost().Err(); err != nil {
				t.Fatalf("lost while held past two leases: %v", context.Cause(h.(caesura.Lossy).Lost()))
			}
			if err := h.Release(ctx); err != nil {
				t.Fatal(err)
			}
			rl, err := redislock.NewRedlock([]redislock.Client{userClient(t, s, tc.user)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rl.Close() })
			for _, name := range []string{"redlock", "redlock"} {
				h, err := rl.Mutex(name).Acquire(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := h.Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
			entries, err := admin.Do(ctx, "ACL", "LOG").Slice()
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != tc.refused {
				t.Errorf("ACL LOG has %d entries, want %d: %v", len(entries), tc.refused, entries)
			}
		})
	}
}
