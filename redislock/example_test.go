package redislock_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/caesura-go/caesura"
	"github.com/redis/go-redis/v9"

	"github.com/caesura-go/caesura/redislock"
)

// A transfer locks both accounts in one yield: one script call takes both,
// in key order, whoever runs it.
func Example() {
	client := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer client.Close()
	rl, err := redislock.New(client, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer rl.Close()

	err = caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
		// lock-free work goes here
		if err := yield(rl.Mutex("account:alice"), rl.Mutex("account:bob")); err != nil {
			return err
		}
		token, _ := caesura.Token(ctx, rl.Mutex("account:alice"))
		fmt.Println("fencing token for storage writes:", token > 0)
		return nil // both locks are released here
	})
	switch {
	case errors.Is(err, caesura.ErrLockLost):
		log.Print("a lease ran out while the function ran")
	case errors.Is(err, redislock.ErrUnavailable):
		log.Print("redis is down")
	case err != nil:
		log.Print(err)
	}
}

// TryAcquire returns at once when the lock is taken.
func ExampleMutex_TryAcquire() {
	client := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer client.Close()
	rl, _ := redislock.New(client, nil)
	defer rl.Close()

	ctx := context.Background()
	h, err := rl.Mutex("report:daily").TryAcquire(ctx)
	if errors.Is(err, caesura.ErrNotAcquired) {
		return // someone else is writing the report
	}
	if err != nil {
		log.Fatal(err)
	}
	defer h.Release(ctx)
	// write the report
}
