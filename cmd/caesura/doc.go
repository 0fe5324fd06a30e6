// Command caesura is caesura's locks for the shell: run a command while
// holding named locks (a distributed flock(1) for cron jobs and migrations),
// show the funds-transfer demo, and report whether locks are held.
//
//	caesura run -k nightly-report -- ./report.sh       # one host at a time
//	caesura run --wait 0 -k db:migrate -- ./migrate    # skip if another run holds it
//	caesura demo                                        # the funds-transfer demo, in memory
//	caesura status nightly-report                       # free or held, since when, token
//
// Install it with
//
//	go install github.com/caesura-go/caesura/cmd/caesura@latest
//
// The command is a module of its own so that its dependencies (the CLI
// library, the backends' client libraries) never reach the module graph of a
// program that only imports the caesura library.
//
// # Why cobra
//
// The command line is built with github.com/spf13/cobra, the library etcdctl,
// kubectl and the GitHub CLI use: subcommands with their own flags and
// examples, POSIX flags (-k KEY -k KEY, --wait=5s), stopping at "--" so the
// child's own flags are left alone, and shell completion for bash, zsh, fish
// and PowerShell ("caesura completion bash") for free. It is well kept, its
// only dependency is spf13/pflag, and etcd's own CLI already taught the people
// who run lock services how it behaves. The standard library's flag package
// has no subcommands, no completion and no interspersed POSIX flags;
// urfave/cli would do, but is less common among the tools this one sits beside.
//
// # caesura run
//
//	caesura run [--backend URL] -k KEY [-k KEY ...] [--wait D] [--ttl D]
//	            [--grace D] [--conflict-exit-code N] [--lost-exit-code N] -- COMMAND [ARGS...]
//
// All keys are taken by one caesura.Run through one yield: sorted by key and
// batched where the backend can, so two runs that name the same keys in any
// order cannot deadlock. The command then runs with caesura's standard input,
// output and error. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to caesura are forwarded to it and,
// on Linux, to every process it started (see below; on a terminal, Ctrl-C
// reaches them from the terminal too, so they may see SIGINT twice). When it
// ends (and, on Linux, the processes it left running have ended too), the
// locks are released and caesura exits with its exit status, or 128+N if it
// died of signal N, as a shell does.
//
// --wait bounds the wait for the locks: without it caesura waits as long as it
// takes; --wait 0 tries once and never waits (a backend that cannot try
// without waiting is given 50ms). --ttl is the lease of the backends that
// have one (Redis, etcd); the file and memory backends ignore it. A backend
// with leases renews them while the command runs.
//
// # The command's processes
//
// A cron job is often a shell script with pipelines and background jobs, and
// the lock must cover every process that does the job, not only the first. On
// Linux caesura makes itself a child subreaper (PR_SET_CHILD_SUBREAPER): a
// process that the command starts and then leaves behind (a background job of
// a shell that has exited, a double-forked daemon, even one that called
// setsid) is reparented to caesura rather than to init. The command's tree is
// then exactly caesura's descendants, which caesura finds by walking /proc:
//
//   - SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to caesura are forwarded to every process of the
//     tree. (A non-interactive shell starts its background jobs with SIGINT
//     ignored: SIGTERM ends them, SIGINT does not.)
//   - When a lock is lost, every process of the tree gets SIGTERM (and SIGCONT,
//     so that a stopped one acts on it); whatever still runs --grace later gets
//     SIGKILL, again and again until nothing is left. caesura exits, with 75,
//     only once every process of the tree has ended.
//   - When the command exits but leaves processes running, the locks stay held
//     until those end, as flock(1)'s lock stays held while any process that
//     inherited its descriptor runs: caesura names them on standard error,
//     waits, and then exits with the command's status. SIGTERM to caesura is
//     forwarded to them; a lock lost meanwhile ends them as above, and caesura
//     exits with 75. A daemon meant to outlive the job belongs to a service
//     manager, not to the job (ssh-agent: end it with ssh-agent -k).
//   - caesura reaps the orphans it adopts as they end, as init would.
//
// The command stays in caesura's process group and session: on a terminal it
// is in the foreground and can read it (psql, vim), and caesura signals
// processes by descent, not by group, so the other members of a pipeline
// ("caesura run -k x -- ./job | tee log"), which share caesura's group, are
// left alone.
//
// What the tree does not cover: a process started on the command's behalf by
// another one that is not its descendant (systemd-run, at, a service, a remote
// host through ssh); and a process of the tree that runs as another user (a
// process sudo started as root, say) cannot be signalled unless caesura runs as
// root or as that user: caesura reports the failure and waits for it to end.
// If caesura itself is killed with SIGKILL it can do nothing: the kernel sends
// the command SIGTERM (its locks went with caesura), but not the processes the
// command started, nor the orphans caesura adopted, which are reparented to
// init or to an enclosing subreaper. Stop caesura with SIGTERM, or run it
// under a service manager that stops the whole control group (systemd's
// default, KillMode=control-group). On systems other than Linux caesura
// follows the command alone, as it always did: forwarded signals, the
// SIGTERM and the SIGKILL of a lost lock reach the command only, and
// processes it leaves running are neither signalled nor waited for.
//
// # Exit codes
//
//	COMMAND's status  the command ran: its exit status, or 128+N for signal N
//	                  (once the processes it left running have ended too)
//	1                 the locks were not acquired within --wait; set with
//	                  --conflict-exit-code (flock(1)'s -E); the message names the keys
//	75                a lock was lost while the command, or a process it left
//	                  running, ran (EX_TEMPFAIL); set with --lost-exit-code.
//	                  Every process of the command's tree got SIGTERM, and
//	                  SIGKILL --grace (default 10s) later if it had not exited;
//	                  caesura exits once they have all ended
//	126, 127          the command could not be run, or was not found (as in a shell)
//	128+N             caesura got signal N (SIGINT 130, SIGTERM 143, SIGHUP 129,
//	                  SIGQUIT 131) while waiting for the locks
//	2                 bad usage (no key, an empty key, no command, a bad flag) or a
//	                  backend error (malformed URL, unknown scheme, unreachable server)
//
// caesura status exits 0 if every key is free, 1 if any key is held, and 2 on
// an error. caesura demo exits 0 when the run kept its invariants (total
// balance unchanged, no deadlock), 1 when it did not, 2 on an error.
//
// # Environment of the command
//
//	CAESURA_KEYS              the keys, de-duplicated, sorted, joined with ","
//	CAESURA_TOKEN             the fencing token, when exactly one key was given
//	CAESURA_TOKEN_<NAME>      the fencing token of each key
//	CAESURA_BACKEND           as caesura got it (caesura does not set it)
//
// A fencing token grows with every acquisition of a key: pass it with each
// write to storage that rejects writes carrying a lower token than it has
// seen, and a command that went on running after its lock was lost cannot do
// harm. A backend that issues no token sets no token variable.
//
// <NAME> is the key with every ASCII letter upper-cased, every ASCII digit
// kept, and every other byte (punctuation, spaces, each byte of a non-ASCII
// character) replaced by "_": "db:migrate" gives CAESURA_TOKEN_DB_MIGRATE,
// "report-2024.q1" gives CAESURA_TOKEN_REPORT_2024_Q1. Two keys that give the
// same name ("a-b" and "a.b") are refused before any lock is taken.
//
// # Backends
//
// --backend takes a URL; without it caesura uses $CAESURA_BACKEND, and without
// that the file backend in its default directory. Put a URL with a password
// in CAESURA_BACKEND rather than on the command line, where ps shows it.
// caesura never prints a password: every message and log line shows the URL
// with its password replaced by "xxxxx".
//
//	file:///path/to/dir       flock(2) on files in dir: the processes of one host
//	file: or file://          the same in the default directory,
//	                          $TMPDIR/caesura-locks-<uid> (filelock's default)
//	mem:                      in this process only: useful for caesura demo
//	postgres://user:pass@host:port/db?params (or postgresql://)
//	                          PostgreSQL session advisory locks (pglock); any URL
//	                          pgx accepts; without pool_max_conns the pool gets one
//	                          connection per key, plus one
//	etcd://[user:pass@]host:port[,host:port]
//	                          etcd (etcdlock), plain-HTTP endpoints; --ttl is the
//	                          session lease
//	redis://[user:pass@]host:port[/db], rediss://... (TLS),
//	redis+sentinel://[user:pass@]host:port[,host:port]/master[/db],
//	redis+cluster://[user:pass@]host:port[,host:port]
//	                          Redis (redislock): written (backend_redis.go) but
//	                          not built in yet, see that file; until then caesura
//	                          says "backend redis is not built into this caesura yet"
//
// Each network backend is wired in its own backend_<name>.go file. caesura
// connects once when it starts, bounded by --connect-timeout (default 5s), so
// that an unreachable server is reported at once, in one line, with exit
// status 2. -v (--verbose) logs the wait, the acquisition and the release on
// standard error. caesura demo defaults to mem:, not to the file backend, and
// ignores $CAESURA_BACKEND.
//
// # caesura status
//
//	caesura status [--backend URL] KEY...
//
// prints, for each key, whether it is held, since when, the current (or last
// issued) fencing token and the holder, where the backend records them
// (caesura.Inspector), without taking the lock: files record the holder's
// host, pid and time next to the token; Redis keeps the token; etcd shows the
// holder's token (create revision) and lease; PostgreSQL the holder's session
// (pid, client address, application) from pg_locks, and no per-key token. A
// lock type that is no Inspector is asked by trying it without waiting and
// releasing it at once, which shows only free or held.
package main
