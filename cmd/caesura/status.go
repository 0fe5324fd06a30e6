package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/spf13/cobra"
)

// statusTimeout bounds the status query of one key.
const statusTimeout = 10 * time.Second

type statusOptions struct {
	backend string
}

func newStatusCmd(a *app) *cobra.Command {
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status [--backend URL] KEY...",
		Short: "Show whether locks are held, since when, their token and holder",
		Long: `Status prints one line per key: free or held, since when, the current (or
last issued) fencing token, and the holder, as far as the backend records
them, without taking the lock: files show host, pid, time and token; Redis
the token; etcd the token and the holder's lease; PostgreSQL the holder's
session.

Exit status: 0 if every key is free, 1 if any key is held, 2 on an error.`,
		Example: `  caesura status nightly-report
  caesura status --backend file:///var/lock/caesura account:alice account:bob

  # in a script
  if caesura status db:migrate >/dev/null; then echo "no migration running"; fi`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("backend") {
				o.backend = a.defaultBackend("file:")
			}
			return a.status(cmd.Context(), o, args)
		},
	}
	cmd.Flags().StringVar(&o.backend, "backend", "", "backend URL (default $CAESURA_BACKEND, else file:)")
	return cmd
}

// keyStatus is what status learned of one key.
type keyStatus struct {
	state   caesura.LockState
	full    bool // from an Inspector: Since, Token and Holder mean something
	errText string
}

func (a *app) status(ctx context.Context, o statusOptions, keys []string) error {
	if len(keys) == 0 {
		return usageErr("status: no key: caesura status KEY...")
	}
	for _, k := range keys {
		if k == "" {
			return usageErr("status: empty key")
		}
	}
	be, err := a.openBackend(ctx, o.backend, backendOptions{Held: 1})
	if err != nil {
		return err
	}
	defer func() {
		if err := be.Close(); err != nil {
			a.logf("status: closing backend %s: %v", be.shown, err)
		}
	}()
	return a.printStatus(ctx, be, keys)
}

// printStatus prints the table for keys on be and returns the exit status.
func (a *app) printStatus(ctx context.Context, be *backend, keys []string) error {
	results := make([]keyStatus, len(keys))
	anyHeld, anyErr := false, false
	for i, k := range keys {
		results[i] = inspect(ctx, be.lock(k))
		anyHeld = anyHeld || results[i].state.Held
		if results[i].errText != "" {
			anyErr = true
			a.errorf("status: %q on %s: %s", k, be.shown, results[i].errText)
		}
	}

	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSTATE\tSINCE\tTOKEN\tHOLDER")
	now := time.Now()
	for i, k := range keys {
		r := results[i]
		state, since, token, holder := "free", "-", "-", "-"
		switch {
		case r.errText != "":
			state = "error"
		case r.state.Held:
			state = "held"
		}
		if r.full {
			if !r.state.Since.IsZero() && r.state.Held {
				since = fmt.Sprintf("%s (%v ago)", r.state.Since.Format(time.RFC3339), now.Sub(r.state.Since).Round(time.Second))
			}
			if r.state.Token != 0 {
				token = strconv.FormatUint(r.state.Token, 10)
			}
			if r.state.Holder != "" {
				holder = r.state.Holder
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", strconv.Quote(k), state, since, token, a.scrub(holder))
	}
	tw.Flush()
	switch {
	case anyErr:
		return &exitError{code: exitUsage}
	case anyHeld:
		return &exitError{code: exitStatusHeld}
	}
	return nil
}

// inspect asks l's backend for its state, or tries it when the backend
// cannot tell.
func inspect(ctx context.Context, l caesura.Lock) keyStatus {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	if in, ok := l.(caesura.Inspector); ok {
		st, err := in.Inspect(ctx)
		if err != nil {
			return keyStatus{errText: err.Error()}
		}
		return keyStatus{state: st, full: true}
	}
	t, ok := l.(caesura.TryLocker)
	if !ok {
		return keyStatus{errText: "this backend can neither report a lock's state nor try it without waiting"}
	}
	h, err := t.TryAcquire(ctx)
	if errors.Is(err, caesura.ErrNotAcquired) && ctx.Err() == nil {
		return keyStatus{state: caesura.LockState{Held: true}}
	}
	if err != nil {
		return keyStatus{errText: err.Error()}
	}
	if err := h.Release(context.WithoutCancel(ctx)); err != nil {
		return keyStatus{errText: "released after trying: " + err.Error()}
	}
	return keyStatus{}
}
