package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/caesura-go/caesura/internal/demo"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

type demoOptions struct {
	backend   string
	workers   int
	accounts  int
	transfers int
}

func newDemoCmd(a *app) *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo [--backend URL] [--workers N] [--accounts N] [--transfers N]",
		Short: "Run the funds-transfer demo and check its invariants",
		Long: `Demo runs caesura's main job: many workers move money between random
accounts, some locking both accounts in one yield (sorted by caesura), some in
two yields in either order (caesura never waits out of order: it tries, and
restarts the transfer if the lock is taken). A progress bar shows on a
terminal, plain lines otherwise; then a summary: transfers/s, lock-wait p50
and p99, restarts and out-of-order refusals, total balance before and after,
and deadlocks, which must be 0.

It runs in memory unless --backend names another backend ($CAESURA_BACKEND is
not used here: the demo takes real locks on whatever it is given). Exit status:
0 when the balance is unchanged and nothing deadlocked, 1 otherwise, 2 on an
error.`,
		Example: `  # in memory, in seconds
  caesura demo

  # processes of this host would exclude each other through these files
  caesura demo --backend file:///tmp/caesura-demo --transfers 2000

  # more contention: few accounts, many workers
  caesura demo --workers 64 --accounts 8`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.demo(cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.backend, "backend", "mem:", "backend URL")
	f.IntVar(&o.workers, "workers", 16, "concurrent workers")
	f.IntVar(&o.accounts, "accounts", 64, "accounts (at least 2)")
	f.IntVar(&o.transfers, "transfers", 20000, "transfers in all")
	return cmd
}

func (a *app) demo(cmd *cobra.Command, o demoOptions) error {
	switch {
	case o.workers < 1:
		return usageErr("demo: --workers %d: need at least 1", o.workers)
	case o.accounts < 2:
		return usageErr("demo: --accounts %d: need at least 2", o.accounts)
	case o.transfers < 1:
		return usageErr("demo: --transfers %d: need at least 1", o.transfers)
	}
	ctx := cmd.Context()
	be, err := a.openBackend(ctx, o.backend, backendOptions{Held: 2 * o.workers})
	if err != nil {
		return err
	}
	defer func() {
		if err := be.Close(); err != nil {
			a.logf("demo: closing backend %s: %v", be.shown, err)
		}
	}()
	fmt.Fprintf(a.stdout, "funds transfer on %s (%d workers, %d accounts, %d transfers)\n", be.shown, o.workers, o.accounts, o.transfers)
	p := newProgress(a.stdout, isTerminal(a.stdout))
	res, err := demo.Run(ctx, demo.Config{
		Workers:   o.workers,
		Accounts:  o.accounts,
		Transfers: o.transfers,
		Seed:      uint64(time.Now().UnixNano()),
		Lock:      be.lock,
		Progress:  p.update,
		Options:   a.runOptions(),
	})
	p.finish()
	if err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("demo on %s: %v", be.shown, err)}
	}
	res.Print(a.stdout)
	if !res.OK() {
		return &exitError{code: exitDemoFailed, err: fmt.Errorf("demo: FAILED: balance %d before, %d after, %d deadlocked workers", res.BalanceStart, res.BalanceEnd, res.Deadlocks)}
	}
	return nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progress shows how far the demo is: a bar redrawn in place on a terminal,
// a line every 10% otherwise. Its methods are called from one goroutine at a
// time (demo.Config.Progress's promise, then finish).
type progress struct {
	w       io.Writer
	tty     bool
	started time.Time
	lastTen int // the last tenth printed in plain mode
	drawn   bool
}

func newProgress(w io.Writer, tty bool) *progress {
	return &progress{w: w, tty: tty, started: time.Now(), lastTen: -1}
}

const barWidth = 40

func (p *progress) update(done, total int) {
	if total <= 0 {
		return
	}
	if p.tty {
		filled := done * barWidth / total
		rate := float64(done) / max(time.Since(p.started).Seconds(), 1e-9)
		fmt.Fprintf(p.w, "\r[%s%s] %d/%d %3d%% %8.0f/s", strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled), done, total, done*100/total, rate)
		p.drawn = true
		return
	}
	if ten := done * 10 / total; ten > p.lastTen {
		p.lastTen = ten
		fmt.Fprintf(p.w, "progress: %d/%d transfers (%d%%)\n", done, total, done*100/total)
	}
}

// finish ends the bar's line.
func (p *progress) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}
