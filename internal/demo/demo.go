// Package demo is the funds-transfer scenario that shows caesura's main job:
// many workers move money between random accounts, some with one yield of
// both accounts, some with two yields in random order, and the total must not
// change and nothing may deadlock. The example program and the caesura
// command run it on any backend.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/caesura-go/caesura"
)

// Config describes one run. A zero field takes the default in brackets.
type Config struct {
	Workers   int // concurrent workers [16]
	Accounts  int // accounts [64]
	Transfers int // transfers in all [20000]
	Restarts  int // restarts allowed per transfer before it is retried from scratch [8]
	Seed      uint64

	// Lock names the lock of an account. Required.
	Lock func(name string) caesura.Lock
	// Progress, if set, is called with the number of transfers done, from
	// one goroutine, about ten times a second and once at the end.
	Progress func(done, total int)
	// Deadline bounds the whole run; a run that does not finish by then is
	// reported as deadlocked [2m].
	Deadline time.Duration
	// Options are added to every transfer's caesura options (a logger, an
	// observer).
	Options []caesura.Option
}

// Result is what a run measured.
type Result struct {
	Transfers    int
	Elapsed      time.Duration
	WaitP50      time.Duration // time a transfer spent inside its yields
	WaitP99      time.Duration
	Restarts     int64 // function re-runs after an out-of-order refusal
	Refusals     int64 // out-of-order refusals (each one restarted or retried)
	BalanceStart int64
	BalanceEnd   int64
	Deadlocks    int // workers that had not finished at the deadline
}

// OK reports whether the run kept its invariants.
func (r Result) OK() bool { return r.BalanceStart == r.BalanceEnd && r.Deadlocks == 0 }

// Run runs the scenario.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Lock == nil {
		return Result{}, errors.New("demo: Config.Lock is nil")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.Workers, 16)
	def(&cfg.Accounts, 64)
	def(&cfg.Transfers, 20000)
	def(&cfg.Restarts, 8)
	if cfg.Accounts < 2 {
		return Result{}, fmt.Errorf("demo: %d accounts: need at least 2", cfg.Accounts)
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()

	locks := make([]caesura.Lock, cfg.Accounts)
	balance := make([]atomic.Int64, cfg.Accounts) // atomics only for the race detector on remote backends
	var res Result
	for i := range locks {
		locks[i] = cfg.Lock(fmt.Sprintf("account:%04d", i))
		balance[i].Store(1000)
		res.BalanceStart += 1000
	}

	var done atomic.Int64
	var calls, refusals atomic.Int64
	waits := make([][]time.Duration, cfg.Workers)
	errs := make([]error, cfg.Workers)
	var wg sync.WaitGroup
	start := time.Now()
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				if cfg.Progress != nil {
					cfg.Progress(int(done.Load()), cfg.Transfers)
				}
			case <-stopProgress:
				return
			}
		}
	}()

	transfer := caesura.Serialize(func(ctx context.Context, yield caesura.Yield, t move) (time.Duration, error) {
		calls.Add(1)
		var waited time.Duration
		timed := func(ls ...caesura.Lock) error {
			t0 := time.Now()
			err := yield(ls...)
			waited += time.Since(t0)
			return err
		}
		var err error
		switch t.mode {
		case 0: // one yield, both accounts: sorted by caesura
			err = timed(locks[t.from], locks[t.to])
		case 1: // two yields, from first
			if err = timed(locks[t.from]); err == nil {
				err = timed(locks[t.to])
			}
		default: // two yields, to first
			if err = timed(locks[t.to]); err == nil {
				err = timed(locks[t.from])
			}
		}
		if errors.Is(err, caesura.ErrOutOfOrder) {
			refusals.Add(1)
		}
		if err != nil {
			return waited, err
		}
		b := balance[t.from].Load()
		balance[t.from].Store(b - t.amount)
		balance[t.to].Store(balance[t.to].Load() + t.amount)
		return waited, nil
	}, append([]caesura.Option{caesura.WithRestart(cfg.Restarts), caesura.WithName("transfer")}, cfg.Options...)...)

	per := cfg.Transfers / cfg.Workers
	for w := range cfg.Workers {
		n := per
		if w < cfg.Transfers%cfg.Workers {
			n++
		}
		wg.Go(func() {
			r := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
			for range n {
				m := move{from: r.IntN(cfg.Accounts), amount: int64(r.IntN(100)), mode: r.IntN(3)}
				m.to = r.IntN(cfg.Accounts - 1)
				if m.to >= m.from {
					m.to++
				}
				for {
					waited, err := transfer(ctx, m)
					if errors.Is(err, caesura.ErrOutOfOrder) && ctx.Err() == nil {
						continue // restarts ran out: try the whole transfer again
					}
					if err != nil {
						errs[w] = err
						return
					}
					waits[w] = append(waits[w], waited)
					done.Add(1)
					break
				}
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-ctx.Done():
		<-finished // workers stop at their next yield
	}
	res.Elapsed = time.Since(start)
	close(stopProgress)
	<-progressDone
	if cfg.Progress != nil {
		cfg.Progress(int(done.Load()), cfg.Transfers)
	}

	for w, err := range errs {
		if err != nil && errors.Is(err, context.DeadlineExceeded) {
			res.Deadlocks++
		} else if err != nil {
			return res, fmt.Errorf("demo: worker %d: %w", w, err)
		}
	}
	all := slices.Concat(waits...)
	slices.Sort(all)
	if len(all) > 0 {
		res.WaitP50 = all[len(all)/2]
		res.WaitP99 = all[min(len(all)-1, len(all)*99/100)]
	}
	res.Transfers = int(done.Load())
	res.Restarts = calls.Load() - int64(res.Transfers) - int64(res.Deadlocks)
	res.Refusals = refusals.Load()
	for i := range balance {
		res.BalanceEnd += balance[i].Load()
	}
	return res, nil
}

type move struct {
	from, to int
	amount   int64
	mode     int
}

// Print writes r as a table.
func (r Result) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "transfers\t%d\n", r.Transfers)
	fmt.Fprintf(tw, "elapsed\t%v\n", r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(tw, "transfers/s\t%.0f\n", float64(r.Transfers)/r.Elapsed.Seconds())
	fmt.Fprintf(tw, "lock wait p50\t%v\n", r.WaitP50)
	fmt.Fprintf(tw, "lock wait p99\t%v\n", r.WaitP99)
	fmt.Fprintf(tw, "restarts\t%d\n", r.Restarts)
	fmt.Fprintf(tw, "out-of-order refusals\t%d\n", r.Refusals)
	fmt.Fprintf(tw, "total balance before\t%d\n", r.BalanceStart)
	fmt.Fprintf(tw, "total balance after\t%d\n", r.BalanceEnd)
	fmt.Fprintf(tw, "deadlocks\t%d\n", r.Deadlocks)
	verdict := "OK: balance unchanged, no deadlock"
	if !r.OK() {
		verdict = "FAILED"
	}
	fmt.Fprintf(tw, "verdict\t%s\n", verdict)
	tw.Flush()
}
