package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/spf13/cobra"
)

// Exit codes shared by the commands; see the package doc, # Exit codes.
const (
	exitUsage           = 2  // bad usage or a backend error
	exitConflictDefault = 1  // run: locks not acquired within --wait
	exitLostDefault     = 75 // run: a lock was lost while the command ran (EX_TEMPFAIL)
	exitCannotExecute   = 126
	exitCommandNotFound = 127
	exitStatusHeld      = 1 // status: some key is held
	exitDemoFailed      = 1 // demo: an invariant broke
	exitSignalBase      = 128
)

// defaultBackendEnvVar names the variable that gives the backend URL when
// --backend is not given.
const defaultBackendEnvVar = "CAESURA_BACKEND"

// exitError carries an exit code out of a command. A nil err exits quietly.
type exitError struct {
	code int
	err  error
}

var _ error = (*exitError)(nil)

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageErr is a usage error: exit code 2.
func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// app is one invocation: where output goes and which secrets must never
// appear in it.
type app struct {
	stdin          *os.File
	stdout, stderr io.Writer
	getenv         func(string) string
	verbose        bool
	connectTimeout time.Duration // --connect-timeout
	logLevel       string        // --log-level
	logFormat      string        // --log-format
	logger         *slog.Logger  // nil unless --log-level asks for records
	// subreaper says that caesura's process is a child subreaper (main
	// makes it one, on Linux): run then follows, signals and waits for the
	// command's whole process tree, not the command alone. Tests that run
	// a command in the test's own process leave it off.
	subreaper bool

	mu      sync.Mutex
	secrets []string // passwords seen in backend URLs, scrubbed from every message
}

func newApp() *app {
	return &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
}

// addSecrets registers strings that must never be printed.
func (a *app) addSecrets(s ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, x := range s {
		if x != "" {
			a.secrets = append(a.secrets, x)
		}
	}
}

// scrub replaces every registered secret in s, and makes s one line.
func (a *app) scrub(s string) string {
	a.mu.Lock()
	for _, x := range a.secrets {
		s = strings.ReplaceAll(s, x, redacted)
	}
	a.mu.Unlock()
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "; ")
}

// errorf prints one line "caesura: ..." on standard error.
func (a *app) errorf(format string, args ...any) {
	msg := strings.TrimPrefix(fmt.Sprintf(format, args...), "caesura: ")
	msg = strings.ReplaceAll(msg, ": caesura: ", ": ") // the library's errors repeat the prefix
	fmt.Fprintln(a.stderr, "caesura: "+a.scrub(msg))
}

// logf prints a progress line on standard error when --verbose is on.
func (a *app) logf(format string, args ...any) {
	if a.verbose {
		a.errorf(format, args...)
	}
}

// setupLogger builds the slog logger that --log-level and --log-format ask
// for. Records go to standard error through the secret scrubber.
func (a *app) setupLogger() error {
	var level slog.Level
	switch strings.ToLower(a.logLevel) {
	case "off", "":
		return nil
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		return usageErr("--log-level %q: want debug, info, warn, error or off", a.logLevel)
	}
	w := scrubWriter{a}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(a.logFormat) {
	case "text", "":
		a.logger = slog.New(slog.NewTextHandler(w, opts))
	case "json":
		a.logger = slog.New(slog.NewJSONHandler(w, opts))
	default:
		return usageErr("--log-format %q: want text or json", a.logFormat)
	}
	return nil
}

// runOptions are the caesura options of every Run the command makes.
func (a *app) runOptions() []caesura.Option {
	if a.logger == nil {
		return nil
	}
	return []caesura.Option{caesura.WithLogger(a.logger)}
}

// scrubWriter writes log records with every registered secret replaced.
type scrubWriter struct{ a *app }

func (w scrubWriter) Write(p []byte) (int, error) {
	s := string(p)
	w.a.mu.Lock()
	for _, x := range w.a.secrets {
		s = strings.ReplaceAll(s, x, redacted)
	}
	w.a.mu.Unlock()
	if _, err := io.WriteString(w.a.stderr, s); err != nil {
		return 0, err
	}
	return len(p), nil
}

// defaultBackend is the backend URL when --backend is not given.
func (a *app) defaultBackend(fallback string) string {
	if v := a.getenv(defaultBackendEnvVar); v != "" {
		return v
	}
	return fallback
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "caesura",
		Short: "Named locks for the shell, on one host or across many",
		Long: `caesura runs a command while holding named locks: a distributed flock(1)
for cron jobs, migrations and deployments. The locks live in a backend chosen
by URL (--backend, or $CAESURA_BACKEND): files on this host by default, or
Redis, PostgreSQL or etcd where this build has them.

Several keys are taken in one global order, so runs that name the same keys
cannot deadlock; a lock lost while the command runs stops the command and
every process it started; and each key's fencing token reaches the command
in its environment.`,
		Example: `  # one nightly report at a time on this host
  caesura run -k nightly-report -- ./report.sh

  # skip this run if another one holds the lock (exit code 1, like flock -n)
  caesura run --wait 0 -k db:migrate -- ./migrate up

  # the funds-transfer demo, in memory
  caesura demo

  # who holds the lock
  caesura status nightly-report`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVarP(&a.verbose, "verbose", "v", false, "log acquisitions, releases and losses on standard error")
	root.PersistentFlags().DurationVar(&a.connectTimeout, "connect-timeout", 5*time.Second, "bound on the first connection to a network backend")
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "off", "structured log of lock events on standard error: debug, info, warn, error or off")
	root.PersistentFlags().StringVar(&a.logFormat, "log-format", "text", "format of --log-level records: text or json")
	root.PersistentPreRunE = func(*cobra.Command, []string) error { return a.setupLogger() }
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: fmt.Errorf("%s: %w (see '%s --help')", c.CommandPath(), err, c.CommandPath())}
	})
	root.AddCommand(newRunCmd(a), newDemoCmd(a), newStatusCmd(a))
	return root
}

// execute runs the command line args and returns the exit code.
func (a *app) execute(ctx context.Context, args []string) int {
	root := newRootCmd(a)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			a.errorf("%v", ee.err)
		}
		return ee.code
	}
	a.errorf("%v", err) // cobra's own errors: unknown command, bad arguments
	return exitUsage
}

func main() {
	a := newApp()
	a.subreaper = becomeSubreaper() == nil
	os.Exit(a.execute(context.Background(), os.Args[1:]))
}
