package pglock_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/pglock"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Example moves money between two accounts, holding both accounts' locks:
// lock-free work first, then one yield that takes both keys in one statement.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	locks, err := pglock.New(pool, pglock.Options{})
	if err != nil {
		log.Fatal(err)
	}

	transfer := caesura.Serialize(func(ctx context.Context, yield caesura.Yield, t [2]string) (string, error) {
		msg := fmt.Sprintf("moved from %s to %s", t[0], t[1]) // lock-free work
		if err := yield(locks.Mutex("account:"+t[0]), locks.Mutex("account:"+t[1])); err != nil {
			return "", err
		}
		if _, ok := caesura.Token(ctx, locks.Mutex("account:"+t[0])); !ok {
			return "", errors.New("no fencing token")
		}
		return msg, nil // runs locked; both locks are released on return
	})
	msg, err := transfer(ctx, [2]string{"alice", "bob"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg)
	// Output: moved from alice to bob
}

// ExampleLocker_Mutex takes a lock without waiting when it is free.
func ExampleLocker_Mutex() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	locks, err := pglock.New(pool, pglock.Options{})
	if err != nil {
		log.Fatal(err)
	}
	m := locks.Mutex("report")
	h, err := m.(caesura.TryLocker).TryAcquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	_, err = m.(caesura.TryLocker).TryAcquire(ctx)
	fmt.Println("second try:", errors.Is(err, caesura.ErrNotAcquired))
	fmt.Println("release:", h.Release(ctx))
	// Output:
	// second try: true
	// release: <nil>
}
