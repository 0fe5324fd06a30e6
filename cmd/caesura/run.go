package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/spf13/cobra"
)

// releaseTimeout bounds the release of the locks after the command ends. It
// is short because the command is over: a lock that cannot be released in
// time (a server gone) is freed by its lease or session anyway.
const releaseTimeout = 3 * time.Second

// tryWaitFallback is how long --wait 0 waits for a lock whose backend cannot
// try without waiting (no caesura.TryLocker).
const tryWaitFallback = 50 * time.Millisecond

// Environment variables set for the command.
const (
	envKeys        = "CAESURA_KEYS"
	envToken       = "CAESURA_TOKEN"
	envTokenPrefix = "CAESURA_TOKEN_"
)

type runOptions struct {
	backend      string
	keys         []string
	wait         time.Duration
	waitSet      bool // --wait was given: without it, wait as long as it takes
	ttl          time.Duration
	grace        time.Duration
	conflictCode int
	lostCode     int
}

func newRunCmd(a *app) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run [--backend URL] -k KEY [-k KEY ...] [--wait D] [--ttl D] -- COMMAND [ARGS...]",
		Short: "Run a command while holding named locks",
		Long: `Run takes every key (-k) in one step, in one global order (so two runs naming
the same keys in any order cannot deadlock), runs COMMAND, and releases the
locks when it ends. SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to the command and, on
Linux, to every process it started (background jobs and orphans included;
the command stays in caesura's process group, so it keeps the terminal).
Processes the command leaves running keep the locks held: caesura waits for
them before it releases the locks.

Exit status: the command's own (128+N if it died of signal N); 1 if the locks
were not acquired within --wait (--conflict-exit-code); 75 if a lock was lost
while the command, or a process it left, ran (--lost-exit-code): they all get
SIGTERM, and SIGKILL --grace later, and caesura exits once they have ended;
126/127 if the command could not be run / was not found; 128+N if caesura got
signal N while waiting (SIGINT 130, SIGTERM 143); 2 for bad usage or a backend
error.

The command's environment gets CAESURA_KEYS (the keys, sorted, joined with
","), CAESURA_TOKEN_<NAME> with each key's fencing token (<NAME>: the key
upper-cased, every byte other than A-Z and 0-9 replaced by "_"), and
CAESURA_TOKEN when there is one key.`,
		Example: `  # cron: one run at a time on this host (file backend)
  caesura run -k nightly-report -- ./report.sh
  # the same as: flock /tmp/nightly-report.lock ./report.sh

  # across hosts, skipping the run if another host holds the lock
  export CAESURA_BACKEND=postgres://locker:secret@db.internal/locks
  caesura run --wait 0 -k nightly-report -- ./report.sh || echo skipped

  # several locks, taken in one global order; wait at most a minute
  caesura run --wait 1m -k account:alice -k account:bob -- ./transfer alice bob 10

  # fence writes with the token
  caesura run -k invoice:42 -- sh -c 'psql -c "update invoices set fence=$CAESURA_TOKEN where id=42 and fence<$CAESURA_TOKEN"'`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.waitSet = cmd.Flags().Changed("wait")
			if !cmd.Flags().Changed("backend") {
				o.backend = a.defaultBackend("file:")
			}
			return a.run(cmd.Context(), o, args)
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false) // everything after COMMAND is the command's
	f.StringVar(&o.backend, "backend", "", "backend URL (default $CAESURA_BACKEND, else file: in "+os.TempDir()+"/caesura-locks-<uid>)")
	f.StringArrayVarP(&o.keys, "key", "k", nil, "a lock to hold while COMMAND runs (repeat for several)")
	f.DurationVar(&o.wait, "wait", 0, "wait at most this long for the locks; 0 tries once (default: wait as long as it takes)")
	f.DurationVar(&o.ttl, "ttl", 0, "lease of backends that have one (Redis, etcd), renewed while COMMAND runs (default: the backend's)")
	f.DurationVar(&o.grace, "grace", 10*time.Second, "after a lock is lost, time between SIGTERM and SIGKILL to COMMAND and the processes it started")
	f.IntVar(&o.conflictCode, "conflict-exit-code", exitConflictDefault, "exit code when the locks are not acquired within --wait")
	f.IntVar(&o.lostCode, "lost-exit-code", exitLostDefault, "exit code when a lock is lost while COMMAND runs")
	return cmd
}

// validate checks the options and the command before any backend is opened.
func (o *runOptions) validate(argv []string) error {
	if len(o.keys) == 0 {
		return usageErr("run: no key: give at least one -k KEY")
	}
	for _, k := range o.keys {
		if k == "" {
			return usageErr("run: empty key: -k needs a non-empty name")
		}
	}
	if len(argv) == 0 {
		return usageErr("run: missing command after --: caesura run -k KEY -- COMMAND [ARGS...]")
	}
	if o.wait < 0 {
		return usageErr("run: --wait %v is negative", o.wait)
	}
	if o.ttl < 0 {
		return usageErr("run: --ttl %v is negative", o.ttl)
	}
	if o.grace < 0 {
		return usageErr("run: --grace %v is negative", o.grace)
	}
	for _, c := range []struct {
		flag string
		v    int
	}{{"--conflict-exit-code", o.conflictCode}, {"--lost-exit-code", o.lostCode}} {
		if c.v < 0 || c.v > 255 {
			return usageErr("run: %s %d is not an exit code (0 to 255)", c.flag, c.v)
		}
	}
	return nil
}

// envName is the name of the variable that holds key's fencing token: the
// key with ASCII letters upper-cased, ASCII digits kept and every other byte
// replaced by '_', after CAESURA_TOKEN_.
func envName(key string) string {
	b := []byte(key)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		default:
			b[i] = '_'
		}
	}
	return envTokenPrefix + string(b)
}

// tokenEnvNames returns each key's variable name, refusing two keys that
// give the same name.
func tokenEnvNames(keys []string) ([]string, error) {
	names := make([]string, len(keys))
	seen := make(map[string]string, len(keys))
	for i, k := range keys {
		n := envName(k)
		if other, dup := seen[n]; dup {
			return nil, usageErr("run: keys %q and %q would both set %s: rename one", other, k, n)
		}
		seen[n] = k
		names[i] = n
	}
	return names, nil
}

// quoteKeys shows keys as "a", "b".
func quoteKeys(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = strconv.Quote(k)
	}
	return strings.Join(q, ", ")
}

// tryOnly makes Acquire try without waiting (--wait 0).
type tryOnly struct{ caesura.TryLocker }

func (t tryOnly) Acquire(ctx context.Context) (caesura.Held, error) { return t.TryAcquire(ctx) }

func (a *app) run(ctx context.Context, o runOptions, argv []string) error {
	if err := o.validate(argv); err != nil {
		return err
	}
	keys := slices.Sorted(slices.Values(o.keys))
	keys = slices.Compact(keys)
	names, err := tokenEnvNames(keys)
	if err != nil {
		return err
	}
	be, err := a.openBackend(ctx, o.backend, backendOptions{TTL: o.ttl, Held: len(keys)})
	if err != nil {
		return err
	}
	defer func() {
		if err := be.Close(); err != nil {
			a.logf("run: closing backend %s: %v", be.shown, err)
		}
	}()
	return a.runLocked(ctx, o, be, keys, names, argv)
}

// runLocked holds the locks of keys on be while argv runs, and returns the
// exit status as an *exitError (nil for 0).
func (a *app) runLocked(ctx context.Context, o runOptions, be *backend, keys, names, argv []string) error {
	tryOnce := o.waitSet && o.wait == 0
	locks := make([]caesura.Lock, len(keys))
	allTry := true
	for i, k := range keys {
		l := be.lock(k)
		if t, ok := l.(caesura.TryLocker); ok && tryOnce {
			l = tryOnly{t}
		} else if !ok {
			allTry = false
		}
		locks[i] = l
	}

	waitCtx, cancelWait := context.WithCancelCause(ctx)
	defer cancelWait(nil)

	// Signals: before the command starts they end the wait; after, they are
	// forwarded to it.
	var (
		mu          sync.Mutex
		tree        processTree
		interrupted os.Signal
	)
	sigs := make(chan os.Signal, 4)
	// SIGHUP (the terminal went away) and SIGQUIT would otherwise kill
	// caesura at once, leaving the command's tree running with no lock.
	signal.Notify(sigs, forwarded...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case s := <-sigs:
				mu.Lock()
				if tree != nil {
					a.logf("run: forwarding %v to %s", s, tree.what())
					if sig, ok := s.(syscall.Signal); ok {
						if err := tree.signal(sig); err != nil {
							a.errorf("run: forwarding %v: %v", s, err)
						}
					}
				} else if interrupted == nil {
					interrupted = s
					cancelWait(fmt.Errorf("interrupted by %v", s))
				}
				mu.Unlock()
			case <-stop:
				return
			}
		}
	})
	defer func() {
		signal.Stop(sigs)
		close(stop)
		wg.Wait()
	}()

	var timedOut atomic.Bool
	var timer *time.Timer
	limit := o.wait
	if tryOnce && !allTry {
		limit = tryWaitFallback
	}
	if o.waitSet && limit > 0 {
		timer = time.AfterFunc(limit, func() {
			timedOut.Store(true)
			cancelWait(fmt.Errorf("not acquired within --wait %v", o.wait))
		})
	}

	var (
		state    *os.ProcessState
		startErr error
		lost     error
		lostLeft bool // lost once the command had ended, while processes it left ran
	)
	start := time.Now()
	a.logf("run: waiting for %s on %s", quoteKeys(keys), be.shown)
	runErr := caesura.Run(waitCtx, func(ctx context.Context, yield caesura.Yield) error {
		err := yield(locks...)
		if timer != nil && !timer.Stop() && err == nil {
			// The timer fired (or is firing) as the locks came: --wait ran
			// out, and its callback must not cancel a running command.
			timedOut.Store(true)
			return fmt.Errorf("not acquired within --wait %v: %w", o.wait, caesura.ErrNotAcquired)
		}
		if err != nil {
			return err
		}
		env := commandEnv(os.Environ(), keys, names, func(i int) (uint64, bool) { return caesura.Token(ctx, locks[i]) })
		a.logf("run: acquired %s on %s in %v", quoteKeys(keys), be.shown, time.Since(start).Round(time.Microsecond))

		cmd := exec.Command(argv[0], argv[1:]...)
		if a.stdin != nil { // a nil *os.File in an io.Reader would not be nil
			cmd.Stdin = a.stdin
		}
		cmd.Stdout, cmd.Stderr = a.stdout, a.stderr
		cmd.Env = env
		cmd.SysProcAttr = childProcAttr()
		runtime.LockOSThread() // see childProcAttr
		defer runtime.UnlockOSThread()
		mu.Lock()
		if err := ctx.Err(); err != nil { // interrupted, or --wait ran out just as the locks came
			mu.Unlock()
			return context.Cause(ctx)
		}
		if err := cmd.Start(); err != nil {
			mu.Unlock()
			startErr = err
			return err
		}
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait() // the status is in cmd.ProcessState
			close(done)
		}()
		tree = newProcessTree(a.subreaper, cmd.Process, done)
		mu.Unlock()

		select {
		case <-done:
			// Processes the command left running go on with its work: the
			// locks stay held until they end, as flock(1)'s lock stays held
			// while a process that inherited its descriptor runs.
			if left := tree.running(); len(left) > 0 {
				a.errorf("run: the command %s, leaving %s running; the locks stay held until they end (SIGTERM to caesura, pid %d, is forwarded to them)",
					describe(cmd.ProcessState), describeProcs(left), os.Getpid())
				select {
				case <-tree.gone():
				case <-ctx.Done():
					lost, lostLeft = context.Cause(ctx), true
					a.stopTree(tree, lost, o.grace)
				}
			}
			<-tree.gone()
		case <-ctx.Done():
			lost = context.Cause(ctx)
			a.stopTree(tree, lost, o.grace)
		}
		state = cmd.ProcessState
		return nil
	}, append(a.runOptions(), caesura.WithReleaseTimeout(releaseTimeout))...)

	switch {
	case state != nil && lostLeft:
		return &exitError{code: o.lostCode, err: fmt.Errorf("run: lock lost while processes the command left ran (the command %s): %v", describe(state), lost)}
	case state != nil && lost != nil:
		return &exitError{code: o.lostCode, err: fmt.Errorf("run: lock lost while the command ran (the command %s): %v", describe(state), lost)}
	case state != nil:
		if runErr != nil { // a release error: the command's status still counts
			a.errorf("run: after the command: %v", runErr)
		} else {
			a.logf("run: released %s", quoteKeys(keys))
		}
		if code := exitStatus(state); code != 0 {
			return &exitError{code: code}
		}
		return nil
	case startErr != nil:
		code := exitCannotExecute
		if errors.Is(startErr, exec.ErrNotFound) || errors.Is(startErr, fs.ErrNotExist) {
			code = exitCommandNotFound
		}
		return &exitError{code: code, err: fmt.Errorf("run: cannot run %q: %v", argv[0], startErr)}
	}
	mu.Lock()
	sig := interrupted
	mu.Unlock()
	if sig != nil {
		code := exitSignalBase + 2
		if s, ok := sig.(syscall.Signal); ok {
			code = exitSignalBase + int(s)
		}
		return &exitError{code: code, err: fmt.Errorf("run: interrupted by %v while waiting for %s", sig, quoteKeys(keys))}
	}
	if timedOut.Load() || (tryOnce && errors.Is(runErr, caesura.ErrNotAcquired)) {
		a.logf("run: %v", runErr)
		how := "within --wait " + o.wait.String()
		if tryOnce {
			how = "without waiting (--wait 0)"
		}
		return &exitError{code: o.conflictCode, err: fmt.Errorf("run: could not lock %s %s on %s: held by another", quoteKeys(keys), how, be.shown)}
	}
	if errors.Is(runErr, caesura.ErrLockLost) { // lost before the command started
		return &exitError{code: o.lostCode, err: fmt.Errorf("run: lock lost before the command started: %v", runErr)}
	}
	return &exitError{code: exitUsage, err: fmt.Errorf("run: locking %s on %s: %v", quoteKeys(keys), be.shown, runErr)}
}

// forwarded are the signals caesura passes on to the command's tree once it
// runs, and that end the wait for the locks before.
var forwarded = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// A processTree is the command's process and, where caesura can follow
// them, the processes it started in turn: the processes that a lost lock
// stops and that forwarded signals reach.
type processTree interface {
	// signal sends each of sigs, in turn, to every process of the tree
	// that has not ended. The error names the processes it could not
	// signal.
	signal(sigs ...syscall.Signal) error
	// terminate sends SIGTERM to every process of the tree, and SIGCONT
	// where there is one, so that a stopped process acts on it.
	terminate() error
	// running describes the processes of the tree that have not ended.
	running() []string
	// gone is closed once the command has been reaped and every other
	// process of the tree has ended.
	gone() <-chan struct{}
	// what names the processes signal reaches, for messages.
	what() string
}

// commandOnly is the tree where caesura cannot follow the processes the
// command starts (systems other than Linux, or a caesura that is no child
// subreaper): the command alone.
type commandOnly struct {
	proc *os.Process
	done <-chan struct{} // closed once exec.Cmd.Wait has reaped the command
}

var _ processTree = commandOnly{}

func (c commandOnly) signal(sigs ...syscall.Signal) error {
	for _, s := range sigs {
		if err := c.proc.Signal(s); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("%v to pid %d: %w", s, c.proc.Pid, err)
		}
	}
	return nil
}

func (c commandOnly) terminate() error { return c.signal(syscall.SIGTERM) }

func (c commandOnly) running() []string {
	select {
	case <-c.done:
		return nil
	default:
		return []string{"pid " + strconv.Itoa(c.proc.Pid)}
	}
}

func (c commandOnly) gone() <-chan struct{} { return c.done }

func (c commandOnly) what() string { return "the command" }

// killRetry is the first pause between two rounds of SIGKILL to the tree;
// it doubles up to killRetryMax. A process forked while a round ran is
// found by the next; a process that does not die (one in uninterruptible
// sleep, or that caesura may not signal) is not looked for too often.
const (
	killRetry    = 10 * time.Millisecond
	killRetryMax = time.Second
)

// stopTree ends the command's tree after the loss of a lock: SIGTERM to
// every process of the tree (with SIGCONT, see processTree.terminate),
// then SIGKILL to those still running --grace later, again and again until
// none is left. It returns once the tree is gone.
func (a *app) stopTree(tree processTree, lost error, grace time.Duration) {
	a.errorf("run: %v; sending SIGTERM to %s", lost, tree.what())
	if err := tree.terminate(); err != nil {
		a.errorf("run: %v", err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-tree.gone():
		return
	case <-t.C:
	}
	what := tree.what()
	if left := tree.running(); len(left) > 0 {
		what = describeProcs(left)
	}
	a.errorf("run: %s still running %v after SIGTERM; sending SIGKILL", what, grace)
	for pause := killRetry; ; pause = min(2*pause, killRetryMax) {
		if err := tree.signal(syscall.SIGKILL); err != nil && pause == killRetry {
			a.errorf("run: %v", err)
		}
		t.Reset(pause)
		select {
		case <-tree.gone():
			return
		case <-t.C:
		}
	}
}

// describeProcs shows processes as "2 processes (pid 12 sh, pid 13 sleep)",
// naming the first few.
func describeProcs(procs []string) string {
	const shown = 5
	n := "1 process"
	if len(procs) != 1 {
		n = strconv.Itoa(len(procs)) + " processes"
	}
	list := strings.Join(procs[:min(len(procs), shown)], ", ")
	if len(procs) > shown {
		list += ", ..."
	}
	return n + " (" + list + ")"
}

// commandEnv is the command's environment: caesura's own, less any
// CAESURA_KEYS and CAESURA_TOKEN* it inherited (from an enclosing caesura
// run), plus this run's.
func commandEnv(environ, keys, names []string, token func(i int) (uint64, bool)) []string {
	env := make([]string, 0, len(environ)+len(keys)+2)
	for _, kv := range environ {
		if strings.HasPrefix(kv, envKeys+"=") || strings.HasPrefix(kv, envToken+"=") || strings.HasPrefix(kv, envTokenPrefix) {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, envKeys+"="+strings.Join(keys, ","))
	for i := range keys {
		t, ok := token(i)
		if !ok {
			continue
		}
		v := strconv.FormatUint(t, 10)
		env = append(env, names[i]+"="+v)
		if len(keys) == 1 {
			env = append(env, envToken+"="+v)
		}
	}
	return env
}

// exitStatus is the command's exit status as a shell reports it: 128+N for
// death by signal N.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignalBase + int(ws.Signal())
	}
	return ps.ExitCode()
}

func describe(ps *os.ProcessState) string {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("died of signal %d (%v)", int(ws.Signal()), ws.Signal())
	}
	return "exited with status " + strconv.Itoa(ps.ExitCode())
}
