package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
)

// inspectLock is a Lock whose backend reports its state (caesura.Inspector),
// as no built-in backend does yet.
type inspectLock struct {
	name  string
	state caesura.LockState
	err   error
}

func (l *inspectLock) Key() string { return "inspect:" + l.name }
func (l *inspectLock) Acquire(context.Context) (caesura.Held, error) {
	return nil, errors.New("not used")
}
func (l *inspectLock) Inspect(context.Context) (caesura.LockState, error) {
	return l.state, l.err
}

// plainLock can neither be inspected nor tried.
type plainLock struct{}

func (plainLock) Key() string                                   { return "plain:plain" }
func (plainLock) Acquire(context.Context) (caesura.Held, error) { return nil, errors.New("not used") }

func TestStatusInspector(t *testing.T) {
	since := time.Now().Add(-90 * time.Second)
	states := map[string]*inspectLock{
		"held": {name: "held", state: caesura.LockState{Held: true, Since: since, Token: 42, Holder: "web-1 pid 4711"}},
		"free": {name: "free", state: caesura.LockState{Token: 41}},
		"bad":  {name: "bad", err: errors.New("server said no")},
	}
	be := &backend{name: "inspect", shown: "inspect:", lock: func(name string) caesura.Lock {
		if name == "plain" {
			return plainLock{}
		}
		return states[name]
	}}
	var stdout, stderr bytes.Buffer
	a := &app{stdout: &stdout, stderr: &stderr, getenv: os.Getenv}

	err := a.printStatus(context.Background(), be, []string{"held", "free"})
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("a held key: got %v, want exit code 1", err)
	}
	out := stdout.String()
	for _, want := range []string{`"held"  held`, since.Format(time.RFC3339), "(1m30s ago)", "42", "web-1 pid 4711", `"free"  free`, "41"} {
		if !strings.Contains(out, want) {
			t.Errorf("output has no %q:\n%s", want, out)
		}
	}

	stdout.Reset()
	if err := a.printStatus(context.Background(), be, []string{"free"}); err != nil {
		t.Errorf("all free: got %v, want nil (exit 0)", err)
	}

	for _, key := range []string{"bad", "plain"} {
		stdout.Reset()
		stderr.Reset()
		err = a.printStatus(context.Background(), be, []string{"free", key})
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%s: got %v, want exit code 2", key, err)
		}
		if !hasRow(stdout.String(), `"`+key+`"`, "error") || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("%s: stdout %q, stderr %q: want an error row and one line naming it", key, stdout.String(), stderr.String())
		}
	}
}

// hasRow reports whether the table has a row starting with fields.
func hasRow(table string, fields ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(fields) && strings.Join(f[:len(fields)], " ") == strings.Join(fields, " ") {
			return true
		}
	}
	return false
}
