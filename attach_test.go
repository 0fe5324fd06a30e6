package caesura_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caesura-go/caesura"
)

// sessionKey is the Attach key of the test backend below.
type sessionKey struct{}

// sessionBackend is a backend whose locks share one "session" per scope,
// as pglock's share one connection. It logs what happens, in order.
type sessionBackend struct {
	mu     sync.Mutex
	log    []string
	opened atomic.Int32
	failOpen,
	failDone error
}

func (b *sessionBackend) note(format string, args ...any) {
	b.mu.Lock()
	b.log = append(b.log, fmt.Sprintf(format, args...))
	b.mu.Unlock()
}

func (b *sessionBackend) lock(key string) caesura.Lock {
	var session int32
	return caesura.FromFuncs(key, func(ctx context.Context) error {
		s, ok, err := caesura.Attach(ctx, sessionKey{}, func() (int32, error) {
			if b.failOpen != nil {
				return 0, b.failOpen
			}
			n := b.opened.Add(1)
			b.note("open %d", n)
			return n, nil
		}, func(ctx context.Context, s int32) error {
			if ctx.Err() != nil {
				return fmt.Errorf("done got a finished context: %w", ctx.Err())
			}
			b.note("done %d", s)
			return b.failDone
		})
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("no scope")
		}
		session = s
		b.note("acquire %s on %d", key, s)
		return nil
	}, func(context.Context) error {
		b.note("release %s on %d", key, session)
		return nil
	})
}

func TestAttachOneValuePerScope(t *testing.T) {
	b := &sessionBackend{}
	err := caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(b.lock("s:a"), b.lock("s:b")); err != nil {
			return err
		}
		return yield(b.lock("s:c"))
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"open 1", "acquire s:a on 1", "acquire s:b on 1", "acquire s:c on 1",
		"release s:c on 1", "release s:b on 1", "release s:a on 1", "done 1",
	}
	if !slices.Equal(b.log, want) {
		t.Fatalf("log:\n%q\nwant\n%q", b.log, want)
	}
}

func TestAttachDoneRunsWhenFunctionContextIsCancelled(t *testing.T) {
	b := &sessionBackend{}
	ctx, cancel := context.WithCancel(context.Background())
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(b.lock("s:a")); err != nil {
			return err
		}
		cancel()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v, want context.Canceled", err)
	}
	if got := b.log[len(b.log)-1]; got != "done 1" {
		t.Fatalf("last event %q, want done 1 (log %q)", got, b.log)
	}
}

func TestAttachErrors(t *testing.T) {
	t.Run("outside a scope", func(t *testing.T) {
		called := false
		_, ok, err := caesura.Attach(context.Background(), sessionKey{}, func() (int, error) { called = true; return 1, nil },
			func(context.Context, int) error { return nil })
		if ok || err != nil || called {
			t.Fatalf("ok %v, err %v, open called %v; want false, nil, false", ok, err, called)
		}
	})
	t.Run("nil arguments", func(t *testing.T) {
		_, _, err := caesura.Attach[int](context.Background(), nil, nil, nil)
		if err == nil {
			t.Fatal("no error for nil key and functions")
		}
	})
	t.Run("open fails and is tried again", func(t *testing.T) {
		b := &sessionBackend{failOpen: errors.New("pool exhausted")}
		err := caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(b.lock("s:a")); err == nil {
				t.Error("yield succeeded with a failing open")
			}
			return nil
		})
		if err == nil || !errors.Is(err, b.failOpen) {
			t.Fatalf("Run: %v, want the open error", err)
		}
		b2 := &sessionBackend{}
		var tries int
		err = caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
			_, _, err := caesura.Attach(ctx, sessionKey{}, func() (int, error) {
				tries++
				if tries == 1 {
					return 0, errors.New("first open fails")
				}
				return 7, nil
			}, func(context.Context, int) error { return nil })
			if err == nil {
				return errors.New("the first open's error was not returned")
			}
			v, _, err := caesura.Attach(ctx, sessionKey{}, func() (int, error) { tries++; return 7, nil },
				func(context.Context, int) error { b2.note("done"); return nil })
			if err != nil || v != 7 {
				return fmt.Errorf("second Attach: %d, %v", v, err)
			}
			return nil
		})
		if err != nil || tries != 2 || !slices.Equal(b2.log, []string{"done"}) {
			t.Fatalf("Run: %v, tries %d, log %q", err, tries, b2.log)
		}
	})
	t.Run("done error is joined", func(t *testing.T) {
		b := &sessionBackend{failDone: errors.New("session would not close")}
		err := caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
			return yield(b.lock("s:a"))
		})
		if !errors.Is(err, b.failDone) {
			t.Fatalf("Run: %v, want the done error joined", err)
		}
	})
	t.Run("after the function returned", func(t *testing.T) {
		var kept context.Context
		_ = caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
			kept = ctx
			return nil
		})
		_, ok, err := caesura.Attach(kept, sessionKey{}, func() (int, error) { return 1, nil },
			func(context.Context, int) error { return nil })
		if !ok || !errors.Is(err, caesura.ErrScopeEnded) {
			t.Fatalf("ok %v, err %v; want true, ErrScopeEnded", ok, err)
		}
	})
	t.Run("another type under the key", func(t *testing.T) {
		err := caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
			if _, _, err := caesura.Attach(ctx, sessionKey{}, func() (int, error) { return 1, nil },
				func(context.Context, int) error { return nil }); err != nil {
				return err
			}
			_, _, err := caesura.Attach(ctx, sessionKey{}, func() (string, error) { return "x", nil },
				func(context.Context, string) error { return nil })
			if err == nil {
				return errors.New("no error for a value of another type")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestAttachNestedScopesHaveTheirOwn(t *testing.T) {
	b := &sessionBackend{}
	err := caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(b.lock("s:a")); err != nil {
			return err
		}
		if err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			return yield(b.lock("s:b"))
		}); err != nil {
			return err
		}
		b.note("inner ended")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"open 1", "acquire s:a on 1", "open 2", "acquire s:b on 2", "release s:b on 2", "done 2",
		"inner ended", "release s:a on 1", "done 1"}
	if !slices.Equal(b.log, want) {
		t.Fatalf("log:\n%q\nwant\n%q", b.log, want)
	}
}

func TestAttachConcurrentOpensOnce(t *testing.T) {
	var opened, closed atomic.Int32
	err := caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				_, _, _ = caesura.Attach(ctx, sessionKey{}, func() (int, error) { opened.Add(1); return 1, nil },
					func(context.Context, int) error { closed.Add(1); return nil })
			})
		}
		wg.Wait()
		return nil
	})
	if err != nil || opened.Load() != 1 || closed.Load() != 1 {
		t.Fatalf("Run %v, opened %d, closed %d; want nil, 1, 1", err, opened.Load(), closed.Load())
	}
}
