// Command transfer runs the funds-transfer demonstration on the memory
// backend: many workers, random transfers between accounts with one-yield
// tuples and sequential yields, then throughput, lock-wait percentiles and
// the invariants (total balance unchanged, no deadlock).
//
//	go run ./examples/transfer [-workers 16] [-accounts 64] [-transfers 20000]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/caesura-go/caesura/internal/demo"
	"github.com/caesura-go/caesura/memlock"
)

func main() {
	var cfg demo.Config
	flag.IntVar(&cfg.Workers, "workers", 16, "concurrent workers")
	flag.IntVar(&cfg.Accounts, "accounts", 64, "accounts")
	flag.IntVar(&cfg.Transfers, "transfers", 20000, "transfers in all")
	flag.Parse()
	locks := memlock.New(memlock.Options{})
	cfg.Lock = locks.Mutex
	fmt.Printf("funds transfer on the memory backend: %d workers, %d accounts, %d transfers\n", cfg.Workers, cfg.Accounts, cfg.Transfers)
	res, err := demo.Run(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	res.Print(os.Stdout)
	if !res.OK() {
		os.Exit(1)
	}
}
