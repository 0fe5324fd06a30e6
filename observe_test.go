package caesura_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

// recorder is an Observer that writes each event as a line.
type recorder struct {
	mu    sync.Mutex
	lines []string
	waits map[string]time.Duration
}

func (r *recorder) StartScope(ctx context.Context, _ caesura.ScopeInfo) (context.Context, caesura.ScopeObserver) {
	return ctx, r
}

func (r *recorder) Event(e caesura.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	line := fmt.Sprintf("%d %s", e.Attempt, e.Kind)
	if e.Key != "" {
		line += " " + e.Key
	}
	if e.Keys != nil {
		line += " [" + strings.Join(e.Keys, " ") + "]"
	}
	if e.Held != "" {
		line += " below " + e.Held
	}
	if e.Token != 0 {
		line += " token"
	}
	if e.Backend != "" {
		line += " (" + e.Backend + ")"
	}
	if e.Err != nil {
		line += " err"
	}
	r.lines = append(r.lines, line)
	if e.Kind == caesura.Acquired {
		if r.waits == nil {
			r.waits = map[string]time.Duration{}
		}
		r.waits[e.Key] = e.Wait
	}
}

func (r *recorder) End(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf("end err=%v", err != nil))
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lines)
}

func TestObserverScenarios(t *testing.T) {
	ctx := ctxT(t)
	t.Run("acquire", func(t *testing.T) {
		ml := memlock.New(memlock.Options{})
		r := &recorder{}
		err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			return yield(ml.Mutex("b"), ml.Mutex("a"))
		}, caesura.WithObserver(r))
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			"1 wait-start [mem:a mem:b] (mem)",
			"1 acquired mem:a token (mem)",
			"1 acquired mem:b token (mem)",
			"1 wait-end [mem:a mem:b] (mem)",
			"1 released mem:b (mem)",
			"1 released mem:a (mem)",
			"end err=false",
		}
		if got := r.got(); !slices.Equal(got, want) {
			t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("contention", func(t *testing.T) {
		ml := memlock.New(memlock.Options{})
		h, _ := ml.Mutex("a").Acquire(ctx)
		time.AfterFunc(30*time.Millisecond, func() { _ = h.Release(ctx) })
		r := &recorder{}
		err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			return yield(ml.Mutex("a"))
		}, caesura.WithObserver(r))
		if err != nil {
			t.Fatal(err)
		}
		if w := r.waits["mem:a"]; w < 25*time.Millisecond {
			t.Fatalf("acquired after a wait of %v, want at least 25ms", w)
		}
	})
	t.Run("restart", func(t *testing.T) {
		ml := memlock.New(memlock.Options{})
		h, _ := ml.Mutex("a").Acquire(ctx)
		r := &recorder{}
		attempt := 0
		err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			attempt++
			if attempt == 1 {
				defer h.Release(ctx)
			}
			if err := yield(ml.Mutex("b")); err != nil {
				return err
			}
			return yield(ml.Mutex("a"))
		}, caesura.WithObserver(r), caesura.WithRestart(2))
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			"1 wait-start [mem:b] (mem)",
			"1 acquired mem:b token (mem)",
			"1 wait-end [mem:b] (mem)",
			"1 wait-start [mem:a] (mem)",
			"1 refused mem:a below mem:b (mem) err",
			"1 wait-end [mem:a] (mem) err",
			"1 released mem:b (mem)",
			"1 restart err",
			"end err=true",
			"2 wait-start [mem:a mem:b] (mem)",
			"2 acquired mem:a token (mem)",
			"2 acquired mem:b token (mem)",
			"2 wait-end [mem:a mem:b] (mem)",
			"2 wait-start [mem:b] (mem)",
			"2 wait-end [mem:b] (mem)",
			"2 wait-start [mem:a] (mem)",
			"2 wait-end [mem:a] (mem)",
			"2 released mem:b (mem)",
			"2 released mem:a (mem)",
			"end err=false",
		}
		if got := r.got(); !slices.Equal(got, want) {
			t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("loss", func(t *testing.T) {
		e := newEnv(t)
		lost, lose := context.WithCancelCause(context.Background())
		p := lossyProbe{e.plain("a")}
		p.lost = lost
		r := &recorder{}
		err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
			if err := yield(p); err != nil {
				return err
			}
			lose(errors.New("gone"))
			<-ctx.Done()
			return nil
		}, caesura.WithObserver(r))
		if !errors.Is(err, caesura.ErrLockLost) {
			t.Fatalf("Run: %v", err)
		}
		want := []string{"1 wait-start [a]", "1 acquired a token", "1 wait-end [a]", "1 lost a err", "1 released a", "end err=true"}
		if got := r.got(); !slices.Equal(got, want) {
			t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}

func TestWithLogger(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ml := memlock.New(memlock.Options{})
	err := caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error {
		return yield(ml.Mutex("x"))
	}, caesura.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		msgs = append(msgs, rec["msg"].(string))
		if rec["msg"] == "caesura: acquired" && (rec["key"] != "mem:x" || rec["backend"] != "mem" || rec["token"] == nil) {
			t.Errorf("acquired record %v lacks key, backend or token", rec)
		}
	}
	want := []string{"caesura: wait-start", "caesura: acquired", "caesura: wait-end", "caesura: released", "caesura: scope ended"}
	if !slices.Equal(msgs, want) {
		t.Fatalf("messages %q, want %q", msgs, want)
	}
	// Nothing is logged without the option, and a quiet level logs nothing.
	buf.Reset()
	quiet := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	_ = caesura.Run(ctxT(t), func(ctx context.Context, yield caesura.Yield) error { return yield(ml.Mutex("x")) }, caesura.WithLogger(quiet))
	if buf.Len() != 0 {
		t.Fatalf("logged at Warn level for a clean run: %s", buf.String())
	}
}

type ctxObserver struct{ infos []caesura.ScopeInfo }

type obsKey struct{}

func (o *ctxObserver) StartScope(ctx context.Context, info caesura.ScopeInfo) (context.Context, caesura.ScopeObserver) {
	o.infos = append(o.infos, info)
	return context.WithValue(ctx, obsKey{}, info.Attempt), nil
}

// An observer's context reaches the function, and it learns the scope's name
// and attempt.
func TestObserverContextAndInfo(t *testing.T) {
	ml := memlock.New(memlock.Options{})
	ctx := ctxT(t)
	h, _ := ml.Mutex("a").Acquire(ctx)
	o := &ctxObserver{}
	var seen []any
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		seen = append(seen, ctx.Value(obsKey{}))
		if len(seen) == 1 {
			defer h.Release(ctx)
		}
		if err := yield(ml.Mutex("b")); err != nil {
			return err
		}
		return yield(ml.Mutex("a"))
	}, caesura.WithObserver(o), caesura.WithName("transfer"), caesura.WithRestart(1))
	if err != nil {
		t.Fatal(err)
	}
	want := []caesura.ScopeInfo{{Name: "transfer", Attempt: 1}, {Name: "transfer", Attempt: 2}}
	if !slices.Equal(o.infos, want) {
		t.Fatalf("infos %v, want %v", o.infos, want)
	}
	if !slices.Equal(seen, []any{1, 2}) {
		t.Fatalf("the function saw observer values %v, want [1 2]", seen)
	}
}
