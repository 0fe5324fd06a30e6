package caesura_test

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

type Payload struct{ Body string }

// Serialize wraps a function that does its lock-free work first and yields
// a lock exactly where locking starts.
func ExampleSerialize() {
	locks := memlock.New(memlock.Options{})
	balances := map[string]int{"ada": 10}

	processWebhook := caesura.Serialize(func(ctx context.Context, yield caesura.Yield, p Payload) (bool, error) {
		user, amount, ok := strings.Cut(p.Body, "+") // lock-free work
		if !ok {
			return false, fmt.Errorf("bad payload %q", p.Body)
		}
		if err := yield(locks.Mutex("user:" + user)); err != nil { // blocks here until held
			return false, err
		}
		balances[user] += len(amount) // runs locked
		return true, nil
	}) // every lock is released here: on return, on error, on panic

	ok, err := processWebhook(context.Background(), Payload{Body: "ada+xyz"})
	fmt.Println(ok, err, balances["ada"])
	_, err = processWebhook(context.Background(), Payload{Body: "garbage"})
	fmt.Println(err)
	// Output:
	// true <nil> 13
	// bad payload "garbage"
}

// Several locks in one yield are sorted by key and taken in that order, so
// two opposite transfers never deadlock.
func ExampleRun() {
	locks := memlock.New(memlock.Options{})
	sender, receiver := "bob", "alice"

	err := caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(locks.Mutex(sender), locks.Mutex(receiver)); err != nil { // taken as alice, bob
			return err
		}
		fmt.Println("moving funds from", sender, "to", receiver)
		return nil
	})
	fmt.Println("err:", err)
	// Output:
	// moving funds from bob to alice
	// err: <nil>
}

// A lock whose key sorts below a held one is never waited for: if it is
// taken, the yield fails with an error naming both keys.
func ExampleRun_outOfOrder() {
	locks := memlock.New(memlock.Options{})
	ctx := context.Background()
	other, _ := locks.Mutex("a").Acquire(ctx) // someone else holds "a"
	defer other.Release(ctx)

	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(locks.Mutex("b")); err != nil {
			return err
		}
		return yield(locks.Mutex("a")) // below "b" and taken: refused
	})
	fmt.Println(errors.Is(err, caesura.ErrOutOfOrder))
	var oe *caesura.OrderError
	if errors.As(err, &oe) {
		fmt.Println(oe.Key, "below", oe.Held)
	}
	// Output:
	// true
	// mem:a below mem:b
}

// With WithRestart an out-of-order refusal runs the function again with
// every key seen so far taken up front, in order.
func ExampleWithRestart() {
	locks := memlock.New(memlock.Options{})
	ctx := context.Background()
	other, _ := locks.Mutex("a").Acquire(ctx)

	attempts := 0
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		attempts++
		if attempts == 1 {
			defer other.Release(ctx) // the other holder finishes meanwhile
		}
		if err := yield(locks.Mutex("b")); err != nil {
			return err
		}
		return yield(locks.Mutex("a"))
	}, caesura.WithRestart(3))
	fmt.Println(attempts, err)
	// Output:
	// 2 <nil>
}

// Token gives the fencing token of a held lock, for storage that rejects
// writes from stale holders.
func ExampleToken() {
	locks := memlock.New(memlock.Options{})
	account := locks.Mutex("account:7")
	var tokens []uint64
	for range 2 {
		_ = caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(account); err != nil {
				return err
			}
			tok, _ := caesura.Token(ctx, account)
			tokens = append(tokens, tok)
			return nil
		})
	}
	fmt.Println(tokens[1] > tokens[0])
	// Output:
	// true
}

// FromFuncs yields anything that can be acquired and released.
func ExampleFromFuncs() {
	lease := caesura.FromFuncs("lease:report",
		func(ctx context.Context) error { fmt.Println("acquire"); return nil },
		func(ctx context.Context) error { fmt.Println("release"); return nil })
	_ = caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(lease); err != nil {
			return err
		}
		fmt.Println("work")
		return nil
	})
	// Output:
	// acquire
	// work
	// release
}
