package memlock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

// lossyLock is a memlock lock whose handles report loss through lost.
type lossyLock struct {
	caesura.Lock
	lost context.Context
}

type lossyHeld struct {
	caesura.Held
	lost context.Context
}

func (h lossyHeld) Lost() context.Context { return h.lost }

func (l lossyLock) Acquire(ctx context.Context) (caesura.Held, error) {
	h, err := l.Lock.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return lossyHeld{Held: h, lost: l.lost}, nil
}

// A waiter inside a scope ends its wait however the scope's context ends:
// the parent is cancelled, another held lock is lost, a concurrent yield
// fails, the function returns. Each case runs twice: with the scope's
// context untouched, so that the scope waits on its own (lend.Waiter), and
// with the function having asked for ctx.Done() first, so that memlock
// waits on that channel.
func TestScopeWaitEnds(t *testing.T) {
	for _, done := range []bool{false, true} {
		// touch makes the scope's context, in the second pass.
		touch := func(ctx context.Context) {
			if done {
				_ = ctx.Done()
			}
		}
		t.Run(fmt.Sprintf("done=%v", done), func(t *testing.T) {
			t.Run("parent cancelled", func(t *testing.T) {
				ml, k, h := heldKey(t)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var cause error
				res := make(chan error, 1)
				go func() {
					res <- caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
						touch(ctx)
						err := yield(k)
						cause = context.Cause(ctx)
						return err
					})
				}()
				parked(t, 1)
				cancel()
				if err := <-res; !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.Canceled) {
					t.Fatalf("Run: got %v, want ErrNotAcquired and context.Canceled", err)
				}
				if !errors.Is(cause, context.Canceled) {
					t.Fatalf("cause: got %v, want context.Canceled", cause)
				}
				releaseAndCheck(t, ml, h)
			})
			t.Run("lock lost", func(t *testing.T) {
				ml, k, h := heldKey(t)
				lost, lose := context.WithCancelCause(context.Background())
				defer lose(nil)
				reason := errors.New("lease expired")
				var cause error
				res := make(chan error, 1)
				go func() {
					res <- caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
						touch(ctx)
						if err := yield(lossyLock{ml.Mutex("a"), lost}); err != nil {
							return err
						}
						err := yield(k)
						cause = context.Cause(ctx)
						return err
					})
				}()
				parked(t, 1)
				lose(reason)
				if err := <-res; !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, caesura.ErrLockLost) {
					t.Fatalf("Run: got %v, want ErrNotAcquired and ErrLockLost", err)
				}
				var le *caesura.LostError
				if !errors.As(cause, &le) || le.Key != "mem:a" || !errors.Is(cause, reason) {
					t.Fatalf("cause: got %v, want the LostError of mem:a", cause)
				}
				releaseAndCheck(t, ml, h)
			})
			t.Run("concurrent yield", func(t *testing.T) {
				ml, k, h := heldKey(t)
				var waited error
				err := caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
					touch(ctx)
					res := make(chan error, 1)
					go func() { res <- yield(k) }()
					parked(t, 1)
					if err := yield(ml.Mutex("b")); !errors.Is(err, caesura.ErrConcurrentYield) {
						t.Errorf("second yield: got %v, want ErrConcurrentYield", err)
					}
					waited = <-res
					return nil
				})
				if !errors.Is(waited, caesura.ErrNotAcquired) {
					t.Fatalf("waiting yield: got %v, want ErrNotAcquired", waited)
				}
				if !errors.Is(err, caesura.ErrConcurrentYield) {
					t.Fatalf("Run: got %v, want ErrConcurrentYield", err)
				}
				releaseAndCheck(t, ml, h)
			})
			t.Run("function returns", func(t *testing.T) {
				ml, k, h := heldKey(t)
				res := make(chan error, 1)
				err := caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
					touch(ctx)
					go func() { res <- yield(k) }()
					parked(t, 1)
					return nil
				})
				if waited := <-res; !errors.Is(waited, caesura.ErrNotAcquired) {
					t.Fatalf("waiting yield: got %v, want ErrNotAcquired", waited)
				}
				if !errors.Is(err, caesura.ErrNotAcquired) {
					t.Fatalf("Run: got %v, want the waiting yield's ErrNotAcquired", err)
				}
				releaseAndCheck(t, ml, h)
			})
			t.Run("acquires outlive the function", func(t *testing.T) {
				// Two waits outside any yield, on the function's context:
				// one arms the scope's wake, the other waits on Done.
				ml, k, h := heldKey(t)
				k2 := ml.Mutex("k2")
				h2, err := k2.Acquire(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				res := make(chan error, 2)
				err = caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
					touch(ctx)
					for _, l := range []caesura.Lock{k, k2} {
						go func() {
							_, err := l.Acquire(ctx)
							res <- err
						}()
					}
					parked(t, 2)
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				for range 2 {
					if err := <-res; !errors.Is(err, caesura.ErrNotAcquired) || !errors.Is(err, context.Canceled) {
						t.Fatalf("Acquire after the function returned: got %v, want ErrNotAcquired and context.Canceled", err)
					}
				}
				if err := h2.Release(context.Background()); err != nil {
					t.Fatal(err)
				}
				releaseAndCheck(t, ml, h)
			})
		})
	}
}

// heldKey returns a Locker whose key "k" is held, its Lock and the handle.
func heldKey(t *testing.T) (*memlock.Locker, caesura.Lock, caesura.Held) {
	t.Helper()
	ml := memlock.New(memlock.Options{})
	k := ml.Mutex("k")
	h, err := k.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ml, k, h
}

// releaseAndCheck releases h and checks that no waiter stayed behind.
func releaseAndCheck(t *testing.T, ml *memlock.Locker, h caesura.Held) {
	t.Helper()
	if err := h.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := ml.Len(); n != 0 {
		t.Fatalf("%d keys held or waited for after the test, want 0", n)
	}
}

// Yields that wait inside scopes are served in arrival order too, with
// cancellable parents (the wait selects on them) and without.
func TestScopeWaitersFIFO(t *testing.T) {
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	ml, k, h := heldKey(t)
	const waiters = 8
	order := make(chan int, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		ctx := context.Background()
		if i%2 == 1 {
			ctx = cancellable
		}
		wg.Go(func() {
			err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
				if err := yield(k); err != nil {
					return err
				}
				order <- i
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
		parked(t, i+1)
	}
	if err := h.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(order)
	var got []int
	for i := range order {
		got = append(got, i)
	}
	if want := []int{0, 1, 2, 3, 4, 5, 6, 7}; !slices.Equal(got, want) {
		t.Fatalf("acquisition order %v, want %v", got, want)
	}
	if n := ml.Len(); n != 0 {
		t.Fatalf("%d keys held or waited for after the test, want 0", n)
	}
}
