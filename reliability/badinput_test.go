package reliability

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/etcdlock"
	"github.com/caesura-go/caesura/filelock"
	"github.com/caesura-go/caesura/internal/testredis"
	"github.com/caesura-go/caesura/memlock"
	"github.com/caesura-go/caesura/pglock"
	"github.com/caesura-go/caesura/redislock"
)

// badCase is one row of the report's bad-input table.
type badCase struct{ backend, name, outcome string }

var badResults struct {
	mu  sync.Mutex
	all []badCase
}

func recordBad(backend, name, outcome string) {
	badResults.mu.Lock()
	defer badResults.mu.Unlock()
	badResults.all = append(badResults.all, badCase{backend, name, outcome})
}

// badHarness is what the bad-input table needs of a backend, in the test
// process.
type badHarness struct {
	// open returns the constructor of the locks of a client of its own
	// whose names start with prefix, and a function that closes it.
	open func(t *testing.T, prefix string) (lock func(string) caesura.Lock, close func())
	// leftovers lists what the server still keeps of the locks named
	// names under prefix (keys, advisory locks), "" for nothing.
	leftovers func(t *testing.T, prefix string, names []string) string
	// ttl builds a Locker whose lease is d; nil when the backend has no
	// lease. It returns the Locker's lock constructor (nil on error).
	ttl func(t *testing.T, d time.Duration) (lock func(string) caesura.Lock, close func(), err error)
	// ttlZero says what a zero TTL means: "" if it must be refused, else
	// the default it stands for.
	ttlZero string
	// ttlName names the setting in the table ("TTL").
	ttlName string
	// unreachableName names the unreachable case ("unreachable server").
	unreachableName string
	// unreachable returns a lock of a client whose server address has no
	// server behind it.
	unreachable func(t *testing.T) (caesura.Lock, func())
	// unreachableWait is how long an acquisition against it may take: 0
	// when it must fail at once (connection refused).
	unreachableWait time.Duration
	// unreachableIs is the error an unreachable server must match.
	unreachableIs error
	// dir is the file backend's lock directory ("" for the others).
	dir string
}

// TestBadInput runs the bad-input table against every backend: an empty
// key, a 1 MiB key, NUL bytes and invalid UTF-8 in a key, the same key
// twice in one yield, zero and negative TTLs, a context already cancelled,
// and a server address with nothing behind it. Each case must end with a
// clear error or a success, leave every lock it named free and nothing of
// it on the server, and leave no goroutine behind (goleak, once its clients
// are closed).
//
// It does not run in parallel: the leak check of each case needs the
// process to itself (the backends' scenario tests wait until it is done).
func TestBadInput(t *testing.T) {
	for _, name := range []string{"memlock", "filelock", "redislock", "pglock", "etcdlock"} {
		t.Run(name, func(t *testing.T) {
			h := badHarnessFor(t, name)
			runBadInput(t, name, h)
		})
	}
}

func badHarnessFor(t *testing.T, name string) *badHarness {
	switch name {
	case "memlock":
		// One Locker for both clients of a case: memlock's lock space is
		// its Locker. It has no server, no lease and nothing to reach.
		l := memlock.New(memlock.Options{})
		return &badHarness{
			open: func(t *testing.T, prefix string) (func(string) caesura.Lock, func()) {
				return func(n string) caesura.Lock {
					if n == "" {
						return l.Mutex("")
					}
					return l.Mutex(prefix + n)
				}, func() {}
			},
			leftovers: func(*testing.T, string, []string) string {
				if n := l.Len(); n > 0 {
					return fmt.Sprintf("%d keys held or waited for", n)
				}
				return ""
			},
		}
	case "filelock":
		dir := t.TempDir()
		return &badHarness{
			dir: dir,
			open: func(t *testing.T, prefix string) (func(string) caesura.Lock, func()) {
				l, err := filelock.New(filelock.Options{Dir: dir, Prefix: "file:" + prefix})
				if err != nil {
					t.Fatal(err)
				}
				return l.Mutex, func() {}
			},
			leftovers: func(*testing.T, string, []string) string { return "" },
			unreachable: func(t *testing.T) (caesura.Lock, func()) {
				// No server: the nearest is a lock directory that cannot
				// exist (a path under a regular file).
				f := filepath.Join(t.TempDir(), "file")
				if err := os.WriteFile(f, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				_, err := filelock.New(filelock.Options{Dir: filepath.Join(f, "locks")})
				if err == nil {
					t.Fatal("filelock.New with a directory under a regular file: no error")
				}
				return badLock{err}, func() {}
			},
			unreachableIs:   syscall.ENOTDIR,
			unreachableName: "unusable lock directory (no server to reach)",
		}
	case "redislock":
		srv := testredis.Start(t, testredis.Options{Why: "the Redis bad-input cases"})
		newLocker := func(t *testing.T, addr string, opts *redislock.Options) (*redislock.Locker, func(), error) {
			c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 500 * time.Millisecond, MaxRetries: -1})
			l, err := redislock.New(c, opts)
			if err != nil {
				c.Close()
				return nil, nil, err
			}
			return l, func() { l.Close(); c.Close() }, nil
		}
		return &badHarness{
			open: func(t *testing.T, prefix string) (func(string) caesura.Lock, func()) {
				l, closeAll, err := newLocker(t, srv.Addr(), &redislock.Options{Prefix: prefix, TTL: redisTTL})
				if err != nil {
					t.Fatal(err)
				}
				return func(n string) caesura.Lock { return l.Mutex(n) }, closeAll
			},
			// A lock's value stays when the lock is free, as its fencing
			// counter alone (redislock/scripts.go): anything longer names
			// an owner or a waiter.
			leftovers: func(t *testing.T, prefix string, names []string) string {
				var left []string
				for _, n := range names {
					v, err := srv.Do("GET", prefix+n)
					if err != nil {
						t.Fatalf("GET: %v", err)
					}
					if s, _ := v.(string); len(s) >= 46 {
						left = append(left, fmt.Sprintf("%.40q is held or waited for: %.60q", n, s))
					} else if strings.Trim(s, "0123456789") != "" {
						left = append(left, fmt.Sprintf("%.40q has the value %.60q", n, s))
					}
				}
				return strings.Join(left, ", ")
			},
			ttl: func(t *testing.T, d time.Duration) (func(string) caesura.Lock, func(), error) {
				l, closeAll, err := newLocker(t, srv.Addr(), &redislock.Options{Prefix: "bad-ttl:", TTL: d})
				if err != nil {
					return nil, nil, err
				}
				return func(n string) caesura.Lock { return l.Mutex(n) }, closeAll, nil
			},
			ttlZero: "redislock.DefaultTTL",
			unreachable: func(t *testing.T) (caesura.Lock, func()) {
				l, closeAll, err := newLocker(t, deadAddr(t), &redislock.Options{TTL: redisTTL})
				if err != nil {
					t.Fatal(err)
				}
				return l.Mutex("x"), closeAll
			},
			unreachableIs: syscall.ECONNREFUSED,
		}
	case "pglock":
		requirePG(t)
		admin, err := pgPool(pgDSN(), "", 2)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(admin.Close)
		newLocker := func(t *testing.T, addr string, opts pglock.Options) (*pglock.Locker, func()) {
			pool, err := pgPool(pgDSN(), addr, 4)
			if err != nil {
				t.Fatal(err)
			}
			opts.Sequence = pgSequence
			l, err := pglock.New(pool, opts)
			if err != nil {
				pool.Close()
				t.Fatal(err)
			}
			return l, pool.Close
		}
		return &badHarness{
			open: func(t *testing.T, prefix string) (func(string) caesura.Lock, func()) {
				l, closeAll := newLocker(t, "", pglock.Options{Prefix: pgPrefix + prefix})
				return l.Mutex, closeAll
			},
			leftovers: func(t *testing.T, prefix string, names []string) string {
				names = append(names, "") // an empty name is refused before any id is locked
				l, err := pglock.New(admin, pglock.Options{Prefix: pgPrefix + prefix})
				if err != nil {
					t.Fatal(err)
				}
				var ids []int64
				for _, n := range names {
					ids = append(ids, l.ID(n))
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				var n int
				err = admin.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
					AND (classid::bigint << 32 | objid::bigint) = ANY($1)`, ids).Scan(&n)
				if err != nil {
					t.Fatalf("pg_locks: %v", err)
				}
				if n > 0 {
					return fmt.Sprintf("%d advisory locks in pg_locks", n)
				}
				return ""
			},
			// No lease: its timing options must not be negative.
			ttl: func(t *testing.T, d time.Duration) (func(string) caesura.Lock, func(), error) {
				pool, err := pgPool(pgDSN(), "", 4)
				if err != nil {
					t.Fatal(err)
				}
				l, err := pglock.New(pool, pglock.Options{Prefix: pgPrefix + "bad-ttl:", Sequence: pgSequence, CheckInterval: d, PingInterval: d})
				if err != nil {
					pool.Close()
					return nil, nil, err
				}
				return l.Mutex, pool.Close, nil
			},
			ttlZero: "pglock.DefaultCheckInterval and DefaultPingInterval",
			ttlName: "check and ping interval (no lease)",
			unreachable: func(t *testing.T) (caesura.Lock, func()) {
				l, closeAll := newLocker(t, deadAddr(t), pglock.Options{Prefix: pgPrefix + "dead:"})
				return l.Mutex("x"), closeAll
			},
			unreachableIs: syscall.ECONNREFUSED,
		}
	case "etcdlock":
		srv := startEtcd(t)
		admin := srv.client(t)
		// Connect the admin client now: its connection's goroutines must
		// not count as a case's.
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := admin.Get(wctx, "/bad/")
		wcancel()
		if err != nil {
			t.Fatalf("etcd: %v", err)
		}
		newClient := func(t *testing.T, addr string) *clientv3.Client {
			c, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		newLocker := func(t *testing.T, addr string, opts ...etcdlock.Option) (*etcdlock.Locker, func(), error) {
			c := newClient(t, addr)
			l, err := etcdlock.New(c, opts...)
			if err != nil {
				c.Close()
				return nil, nil, err
			}
			return l, func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := l.Close(ctx); err != nil && !errors.Is(err, etcdlock.ErrUnavailable) {
					t.Errorf("etcdlock Close: %v", err)
				}
				c.Close()
			}, nil
		}
		return &badHarness{
			open: func(t *testing.T, prefix string) (func(string) caesura.Lock, func()) {
				l, closeAll, err := newLocker(t, srv.addr(), etcdlock.WithPrefix("/bad/"+prefix), etcdlock.WithTTL(etcdTTL))
				if err != nil {
					t.Fatal(err)
				}
				return l.Mutex, closeAll
			},
			leftovers: func(t *testing.T, prefix string, _ []string) string {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				resp, err := admin.Get(ctx, "/bad/"+prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
				if err != nil {
					t.Fatalf("etcd get: %v", err)
				}
				if resp.Count > 0 {
					return fmt.Sprintf("%d etcd keys under the prefix", resp.Count)
				}
				return ""
			},
			ttl: func(t *testing.T, d time.Duration) (func(string) caesura.Lock, func(), error) {
				l, closeAll, err := newLocker(t, srv.addr(), etcdlock.WithPrefix("/bad/ttl/"), etcdlock.WithTTL(d))
				if err != nil {
					return nil, nil, err
				}
				return l.Mutex, closeAll, nil
			},
			unreachable: func(t *testing.T) (caesura.Lock, func()) {
				l, closeAll, err := newLocker(t, deadAddr(t), etcdlock.WithTTL(etcdTTL))
				if err != nil {
					t.Fatal(err)
				}
				return l.Mutex("x"), closeAll
			},
			// etcd's client cannot tell a server that is down from one
			// that is slow: it retries until the context ends.
			unreachableWait: 3 * time.Second,
			unreachableIs:   etcdlock.ErrUnavailable,
		}
	}
	t.Fatalf("no bad-input harness for %s", name)
	return nil
}

// deadAddr returns a 127.0.0.1 address that nothing listens on (a moment
// ago).
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// badLock is a lock whose backend could not even be set up: a yield of it
// fails with err.
type badLock struct{ err error }

func (b badLock) Key() string { return "bad:setup" }

func (b badLock) Acquire(context.Context) (caesura.Held, error) { return nil, b.err }

func runBadInput(t *testing.T, backend string, h *badHarness) {
	// caseRun runs one case with a client of its own under prefix, then
	// checks that the locks named names are free and nothing of them is
	// left on the server, closes the clients and checks for goroutines
	// left behind.
	// other is a second client under the same prefix, for the checks.
	caseRun := func(t *testing.T, name string, names []string, body func(t *testing.T, lock, other func(string) caesura.Lock) string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			prefix := fmt.Sprintf("bad-%d-%s/", time.Now().UnixNano(), strings.ReplaceAll(name, " ", "-"))
			lock, closeLock := h.open(t, prefix)
			checkLock, closeCheck := h.open(t, prefix)
			outcome := body(t, lock, checkLock)
			for _, n := range names {
				if n == "" {
					continue
				}
				if !isFree(t, checkLock(n)) {
					t.Errorf("lock %.40q is held after Run returned", n)
					outcome += "; HELD afterwards"
				}
			}
			closeLock()
			closeCheck()
			if left := h.leftovers(t, prefix, names); left != "" {
				t.Errorf("left on the server: %s", left)
				outcome += "; left on the server: " + left
			}
			if err := goleak.Find(ignore); err != nil {
				t.Errorf("goroutines left behind: %v", err)
				outcome += "; GOROUTINES LEFT"
			}
			if !t.Failed() {
				outcome += "; nothing held or left after, no goroutine left"
			}
			t.Logf("%s", outcome)
			recordBad(backend, name, outcome)
		})
	}

	ctx := func(t *testing.T, d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		return ctx
	}

	// The checks themselves: a lock held through one client is not free
	// for the other, and the server shows it.
	t.Run("the checks see a held lock", func(t *testing.T) {
		prefix := fmt.Sprintf("bad-%d-probe/", time.Now().UnixNano())
		lock, closeLock := h.open(t, prefix)
		defer closeLock()
		other, closeOther := h.open(t, prefix)
		defer closeOther()
		err := caesura.Run(ctx(t, 20*time.Second), func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(lock("probe")); err != nil {
				return err
			}
			if isFree(t, other("probe")) {
				t.Error("a held lock is free for another client")
			}
			if backend != "filelock" && h.leftovers(t, prefix, []string{"probe"}) == "" {
				t.Error("the server shows nothing of a held lock")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if left := h.leftovers(t, prefix, []string{"probe"}); left != "" {
			t.Errorf("left on the server after a plain Run: %s", left)
		}
	})

	caseRun(t, "empty key", []string{""}, func(t *testing.T, lock, _ func(string) caesura.Lock) string {
		ran := false
		err := caesura.Run(ctx(t, 10*time.Second), func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(lock("")); err != nil {
				return err
			}
			ran = true
			return nil
		})
		if !errors.Is(err, caesura.ErrInvalidLock) || ran {
			t.Fatalf("empty key: ran past the yield %v, err %v; want ErrInvalidLock", ran, err)
		}
		return "refused: " + short(err)
	})

	for _, c := range []struct{ name, key string }{
		{"NUL bytes in a key", "a\x00b\x00"},
		{"invalid UTF-8 in a key", "\xff\xfe\xc3\x28"},
		{"1 MiB key", strings.Repeat("k", 1<<20)},
	} {
		caseRun(t, c.name, []string{c.key}, func(t *testing.T, lock, _ func(string) caesura.Lock) string {
			ran := false
			err := caesura.Run(ctx(t, 20*time.Second), func(ctx context.Context, yield caesura.Yield) error {
				if err := yield(lock(c.key)); err != nil {
					return err
				}
				ran = true
				return nil
			})
			switch {
			case err == nil && ran:
				return "accepted: acquired and released"
			case err == nil:
				t.Fatal("Run returned nil without running its function to the end")
			case errors.Is(err, context.DeadlineExceeded):
				t.Fatalf("the yield hung until the deadline: %.300v", err)
			case err.Error() == "":
				t.Fatal("an error without a message")
			case ran:
				t.Fatalf("the function ran, then Run failed: %.300v", err)
			}
			return "refused: " + short(err)
		})
	}

	caseRun(t, "duplicate keys in one yield", []string{"dup"}, func(t *testing.T, lock, other func(string) caesura.Lock) string {
		err := caesura.Run(ctx(t, 20*time.Second), func(ctx context.Context, yield caesura.Yield) error {
			a, b := lock("dup"), lock("dup")
			if err := yield(a, b, a); err != nil {
				return err
			}
			if _, ok := caesura.Token(ctx, b); !ok {
				return errors.New("no token for the duplicated lock")
			}
			if isFree(t, other("dup")) {
				return errors.New("another client took the lock while the scope held it")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("the same key three times in one yield: %v, want one acquisition", err)
		}
		return "one acquisition, Run returned nil"
	})

	caseRun(t, "context already cancelled", []string{"cancelled"}, func(t *testing.T, lock, _ func(string) caesura.Lock) string {
		cctx, cancel := context.WithCancel(context.Background())
		cancel()
		ran := false
		err := caesura.Run(cctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(lock("cancelled")); err != nil {
				return err
			}
			ran = true
			return nil
		})
		if ran || !errors.Is(err, context.Canceled) || !errors.Is(err, caesura.ErrNotAcquired) {
			t.Fatalf("ran past the yield %v, err %v; want Canceled and ErrNotAcquired", ran, err)
		}
		return "refused: " + short(err)
	})

	if h.ttl == nil {
		recordBad(backend, "zero and negative TTL", "n/a: no lease")
	} else {
		for _, d := range []time.Duration{0, -time.Second} {
			name := fmt.Sprintf("%s %v", cmp.Or(h.ttlName, "TTL"), d)
			caseRun(t, name, []string{"ttl"}, func(t *testing.T, _, _ func(string) caesura.Lock) string {
				lock, closeTTL, err := h.ttl(t, d)
				if d < 0 || h.ttlZero == "" {
					if err == nil {
						closeTTL()
						t.Fatalf("a Locker with TTL %v: no error", d)
					}
					return "refused: " + short(err)
				}
				if err != nil {
					t.Fatalf("a Locker with TTL 0 (meaning %s): %v", h.ttlZero, err)
				}
				defer closeTTL()
				if err := caesura.Run(ctx(t, 10*time.Second), func(ctx context.Context, yield caesura.Yield) error {
					return yield(lock("ttl"))
				}); err != nil {
					t.Fatalf("a lock of a Locker with TTL 0 (meaning %s): %v", h.ttlZero, err)
				}
				return "accepted as " + h.ttlZero + "; a lock acquired and released"
			})
		}
	}

	if backend == "filelock" {
		const key = "../../etc/passwd"
		caseRun(t, key+" as a key", []string{key}, func(t *testing.T, lock, _ func(string) caesura.Lock) string {
			target := filepath.Join(h.dir, key) // where a naive name would land
			before, berr := os.Stat(target)
			err := caesura.Run(ctx(t, 10*time.Second), func(ctx context.Context, yield caesura.Yield) error {
				return yield(lock(key))
			})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			after, aerr := os.Stat(target)
			if (berr == nil) != (aerr == nil) || (berr == nil && (before.Size() != after.Size() || !before.ModTime().Equal(after.ModTime()))) {
				t.Fatalf("%s changed: the key escaped the lock directory", target)
			}
			entries, err := os.ReadDir(h.dir)
			if err != nil || len(entries) == 0 {
				t.Fatalf("no lock file in the lock directory (%v)", err)
			}
			state := "still absent"
			if aerr == nil {
				state = "unchanged"
			}
			return "accepted: its lock file is in the lock directory under an escaped name; the path the key names relative to it is " + state
		})
	}

	if h.unreachable == nil {
		return // nothing to reach (memlock)
	}
	caseRun(t, cmp.Or(h.unreachableName, "unreachable server"), nil, func(t *testing.T, _, _ func(string) caesura.Lock) string {
		l, closeDead := h.unreachable(t)
		defer closeDead()
		wait := h.unreachableWait
		if wait == 0 {
			wait = 10 * time.Second
		}
		start := time.Now()
		err := caesura.Run(ctx(t, wait), func(ctx context.Context, yield caesura.Yield) error {
			return yield(l)
		})
		took := time.Since(start)
		switch {
		case err == nil:
			t.Fatal("Run against an unreachable server returned nil")
		case !errors.Is(err, h.unreachableIs):
			t.Fatalf("got %v, want an error matching %v", err, h.unreachableIs)
		case h.unreachableWait == 0 && took > 5*time.Second:
			t.Fatalf("a refused connection took %v to report, want at once: %v", took, err)
		case took > wait+2*time.Second:
			t.Fatalf("Run returned %v after its context's %v deadline: %v", took-wait, wait, err)
		}
		return fmt.Sprintf("refused after %v: %s", took.Round(time.Millisecond), short(err))
	})
}

// isFree reports whether l can be taken now by another client (and releases
// it).
func isFree(t *testing.T, l caesura.Lock) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var h caesura.Held
	var err error
	if tl, ok := l.(caesura.TryLocker); ok {
		h, err = tl.TryAcquire(ctx)
	} else {
		wctx, wcancel := context.WithTimeout(ctx, time.Second)
		h, err = l.Acquire(wctx)
		wcancel()
	}
	if errors.Is(err, caesura.ErrNotAcquired) {
		return false
	}
	if err != nil {
		// The check itself failed (the key is one the backend refuses):
		// the server's state is checked instead (leftovers).
		t.Logf("lock %.40q could not be checked: %.200v", l.Key(), err)
		return true
	}
	if err := h.Release(ctx); err != nil {
		t.Errorf("release %.40q: %v", l.Key(), err)
	}
	return true
}

// short returns an error's message cut to a table cell.
func short(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	s = strings.ToValidUTF8(s, "?")
	if len(s) > 240 {
		// The head names the call and the key, the tail the reason.
		s = strings.ToValidUTF8(s[:120], "?") + fmt.Sprintf(" …(%d bytes)… ", len(err.Error())) + strings.ToValidUTF8(s[len(s)-120:], "?")
	}
	return "`" + strings.ReplaceAll(s, "`", "'") + "`"
}
