package main

import (
	"strings"
	"testing"
)

// Every bad input gets one line on standard error naming the problem, a
// non-zero exit, nothing on standard output, and never a stack trace.
func TestBadInput(t *testing.T) {
	file := fileBackend(t)
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string // in the message
		code int
	}{
		{"malformed URL", nil, []string{"run", "--backend", "redis://host:port:x", "-k", "k", "--", "true"}, "malformed backend URL", 2},
		{"URL without scheme", nil, []string{"run", "--backend", "/var/lock", "-k", "k", "--", "true"}, "no scheme", 2},
		{"unknown scheme", nil, []string{"run", "--backend", "zookeeper://h:2181", "-k", "k", "--", "true"}, `unknown backend scheme "zookeeper"`, 2},
		{"unknown scheme from CAESURA_BACKEND", []string{"CAESURA_BACKEND=consul://h"}, []string{"run", "-k", "k", "--", "true"}, `unknown backend scheme "consul"`, 2},
		{"file URL with a host", nil, []string{"run", "--backend", "file://otherhost/x", "-k", "k", "--", "true"}, "names host", 2},
		{"relative file URL", nil, []string{"run", "--backend", "file:locks", "-k", "k", "--", "true"}, "absolute path", 2},
		{"mem URL with a path", nil, []string{"status", "--backend", "mem:/x/y", "k"}, "mem URL", 2},
		{"missing command", nil, []string{"run", "--backend", file, "-k", "k", "--"}, "missing command", 2},
		{"missing command, no dash", nil, []string{"run", "--backend", file, "-k", "k"}, "missing command", 2},
		{"empty key", nil, []string{"run", "--backend", file, "-k", "", "--", "true"}, "empty key", 2},
		{"no key", nil, []string{"run", "--backend", file, "--", "true"}, "no key", 2},
		{"keys with one variable name", nil, []string{"run", "--backend", file, "-k", "a-b", "-k", "a.b", "--", "true"}, "CAESURA_TOKEN_A_B", 2},
		{"negative wait", nil, []string{"run", "--backend", file, "--wait", "-1s", "-k", "k", "--", "true"}, "--wait", 2},
		{"bad duration", nil, []string{"run", "--wait", "soon", "-k", "k", "--", "true"}, `invalid argument "soon"`, 2},
		{"bad exit code", nil, []string{"run", "--conflict-exit-code", "300", "-k", "k", "--", "true"}, "--conflict-exit-code 300", 2},
		{"unknown flag", nil, []string{"run", "--frobnicate", "-k", "k", "--", "true"}, "unknown flag: --frobnicate", 2},
		{"unknown command", nil, []string{"lock", "k"}, `unknown command "lock"`, 2},
		{"status: empty key", nil, []string{"status", "--backend", file, ""}, "empty key", 2},
		{"status: no key", nil, []string{"status", "--backend", file}, "no key", 2},
		{"demo: one account", nil, []string{"demo", "--accounts", "1"}, "--accounts 1", 2},
		{"demo: an argument", nil, []string{"demo", "now"}, "unknown command", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCaesura(t, tc.env, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", r.code, tc.code, r.stderr)
			}
			oneLine(t, r)
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr: got %q, want it to contain %q", r.stderr, tc.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout: got %q, want nothing", r.stdout)
			}
		})
	}
}

// A backend that needs a server: refused clearly while not built in, and one
// line naming the server when it is built in but cannot be reached.
func TestUnreachableOrMissingBackend(t *testing.T) {
	for _, u := range []string{
		"redis://127.0.0.1:1",
		"rediss://127.0.0.1:1",
		"redis+sentinel://127.0.0.1:1/mymaster",
		"redis+cluster://127.0.0.1:1,127.0.0.1:2",
		"postgres://caesura@127.0.0.1:1/db?connect_timeout=2",
		"postgresql://caesura@127.0.0.1:1/db?connect_timeout=2",
		"etcd://127.0.0.1:1,127.0.0.1:2",
	} {
		t.Run(u, func(t *testing.T) {
			t.Parallel()
			r := runCaesura(t, nil, "--connect-timeout", "500ms", "run", "--backend", u, "--wait", "5s", "-k", "k", "--", "true")
			if r.code != 2 {
				t.Errorf("exit %d, want 2; stderr: %s", r.code, r.stderr)
			}
			oneLine(t, r)
			if !strings.Contains(r.stderr, "not built into this caesura") && !strings.Contains(r.stderr, "127.0.0.1:1") {
				t.Errorf("stderr %q names neither the missing backend nor the server", r.stderr)
			}
		})
	}
}

// No output of any command shows a password given in a backend URL, on the
// command line or in CAESURA_BACKEND, valid or malformed, with -v or not.
func TestNoPasswordInOutput(t *testing.T) {
	const pw = "hunter2-Secret"
	urls := []string{
		"redis://user:" + pw + "@127.0.0.1:1/0",
		"rediss://:" + pw + "@127.0.0.1:1",
		"redis+sentinel://user:" + pw + "@127.0.0.1:1,127.0.0.1:2/mymaster",
		"postgres://user:" + pw + "@127.0.0.1:1/db?connect_timeout=1",
		"postgres://user@127.0.0.1:1/db?password=" + pw + "&connect_timeout=1",
		"etcd://user:" + pw + "@127.0.0.1:1",
		"zookeeper://user:" + pw + "@h:2181",
		"redis://user:" + pw + "@host:port:x",      // malformed
		"redis://user:" + pw + "@ho st:1",          // malformed
		"redis://user:" + pw + "%zz@127.0.0.1:1",   // malformed escape in the password
		"mem://user:" + pw + "@host",               // mem takes no host
		"file://user:" + pw + "@otherhost/x",       // file takes no host
		"postgres://u:" + pw + "@h:1/db?x=%zz&y=1", // malformed query
	}
	for _, u := range urls {
		t.Run(u, func(t *testing.T) {
			t.Parallel()
			noPasswordShown(t, u)
		})
	}
}

func noPasswordShown(t *testing.T, u string) {
	for _, args := range [][]string{
		{"-v", "--connect-timeout", "500ms", "run", "--backend", u, "--wait", "2s", "-k", "k", "--", "true"},
		{"--connect-timeout", "500ms", "status", "--backend", u, "k"},
		{"--connect-timeout", "500ms", "demo", "--backend", u, "--transfers", "10"},
	} {
		r := runCaesura(t, nil, args...)
		if strings.Contains(r.stdout+r.stderr, "hunter2") {
			t.Errorf("caesura %q shows the password:\n%s%s", args, r.stdout, r.stderr)
		}
		if r.code == 0 {
			t.Errorf("caesura %q: exit 0, want an error", args)
		}
	}
	for _, args := range [][]string{
		{"-v", "--connect-timeout", "500ms", "run", "--wait", "2s", "-k", "k", "--", "true"},
		{"--connect-timeout", "500ms", "status", "k"},
	} {
		r := runCaesura(t, []string{"CAESURA_BACKEND=" + u}, args...)
		if strings.Contains(r.stdout+r.stderr, "hunter2") {
			t.Errorf("CAESURA_BACKEND=%s caesura %q shows the password:\n%s%s", u, args, r.stdout, r.stderr)
		}
		if r.code == 0 {
			t.Errorf("CAESURA_BACKEND=%s caesura %q: exit 0, want an error", u, args)
		}
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"redis://u:pw@h:1/0", "redis://u:xxxxx@h:1/0"},
		{"redis://:pw@h:1", "redis://:xxxxx@h:1"},
		{"postgres://u@h/db?password=pw&sslmode=disable", "postgres://u@h/db?password=xxxxx&sslmode=disable"},
		{"redis://u:pw@host:port:x", "redis://u:xxxxx@host:port:x"},
		{"postgres://u@h/db?x=%zz&password=pw", "postgres://u@h/db?x=%zz&password=xxxxx"},
		{"file:///var/lock", "file:///var/lock"},
	} {
		if got := redactRaw(tc.raw); got != tc.want {
			t.Errorf("redactRaw(%q): got %q, want %q", tc.raw, got, tc.want)
		}
	}
	a := newApp()
	a.addSecrets(urlSecrets("redis://u:s%40cret@h:1")...)
	if got := a.scrub("dial s@cret and s%40cret\nfailed"); got != "dial xxxxx and xxxxx; failed" {
		t.Errorf("scrub: got %q", got)
	}
}
