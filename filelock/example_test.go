//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package filelock_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/filelock"
)

func Example() {
	dir, err := os.MkdirTemp("", "filelock-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	locks, err := filelock.New(filelock.Options{Dir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(locks.Mutex("invoice:42")); err != nil {
			return err
		}
		// Held: another process (or Locker) cannot take it now.
		other, _ := filelock.New(filelock.Options{Dir: dir})
		_, err := other.Mutex("invoice:42").(caesura.TryLocker).TryAcquire(ctx)
		fmt.Println("taken elsewhere:", errors.Is(err, caesura.ErrNotAcquired))

		token, _ := caesura.Token(ctx, locks.Mutex("invoice:42"))
		fmt.Println("fencing token:", token)
		return nil
	})
	fmt.Println("err:", err)
	// Output:
	// taken elsewhere: true
	// fencing token: 1
	// err: <nil>
}
