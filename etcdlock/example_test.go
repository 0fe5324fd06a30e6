package etcdlock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/etcdlock"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Two accounts are locked in one yield: both keys are free, so one etcd
// transaction takes them, and both carry the same fencing token.
func Example() {
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   etcdlock.EmbeddedEndpoints(), // your cluster's client URLs
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	locks, err := etcdlock.New(client, etcdlock.WithPrefix("/example/"), etcdlock.WithTTL(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer locks.Close(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		// Lock-free work goes here.
		alice, bob := locks.Mutex("account:alice"), locks.Mutex("account:bob")
		if err := yield(alice, bob); err != nil {
			return err
		}
		ta, _ := caesura.Token(ctx, alice)
		tb, _ := caesura.Token(ctx, bob)
		fmt.Println("holding", alice.Key(), "and", bob.Key())
		fmt.Println("same token:", ta == tb && ta > 0)
		return nil // both released here
	})
	fmt.Println("err:", err)
	// Output:
	// holding etcd:/example/account:alice and etcd:/example/account:bob
	// same token: true
	// err: <nil>
}

// TryAcquire tells a taken lock (caesura.ErrNotAcquired) apart from an etcd
// that cannot be reached (etcdlock.ErrUnavailable).
func ExampleLocker_Mutex() {
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   etcdlock.EmbeddedEndpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	a, _ := etcdlock.New(client, etcdlock.WithPrefix("/example-try/"))
	defer a.Close(context.Background())
	b, _ := etcdlock.New(client, etcdlock.WithPrefix("/example-try/")) // another process, say
	defer b.Close(context.Background())

	ctx := context.Background()
	held, err := a.Mutex("report").Acquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	_, err = b.Mutex("report").(caesura.TryLocker).TryAcquire(ctx)
	switch {
	case errors.Is(err, caesura.ErrNotAcquired):
		fmt.Println("taken: someone else is writing the report")
	case errors.Is(err, etcdlock.ErrUnavailable):
		fmt.Println("etcd unreachable:", err)
	}
	fmt.Println("release:", held.Release(ctx))
	// Output:
	// taken: someone else is writing the report
	// release: <nil>
}
