package caesura

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Observer watches scopes: how long yields wait, what is acquired, held,
// released, refused, restarted and lost. Give one to [Run] or [Serialize]
// with [WithObserver]; [WithLogger] is an Observer that writes log/slog
// records. The OpenTelemetry adapter (module otelcaesura) is another.
//
// Observers are called synchronously from the scope's goroutine (loss events
// from the backend's), so they must be quick, must not block and must not
// yield. With no observer configured caesura does no observing work at all.
type Observer interface {
	// StartScope is called when a function starts running (again, on a
	// restart). ctx is the context given to Run. It returns the context
	// the function runs with, derived from ctx (an OpenTelemetry observer
	// puts its scope span there, so that spans the function starts are
	// its children), and the ScopeObserver that receives the run's events,
	// which may be nil to ignore the run.
	StartScope(ctx context.Context, info ScopeInfo) (context.Context, ScopeObserver)
}

// ScopeInfo describes a run of a function to an [Observer].
type ScopeInfo struct {
	Name    string // the name given with [WithName], or ""
	Attempt int    // 1, and one more for every restart
}

// ScopeObserver receives the events of one run of a function. A Lost event
// comes from the backend's goroutine and may arrive after the lock's
// Released event or after End, when the loss raced the release.
type ScopeObserver interface {
	// Event reports one event.
	Event(Event)
	// End is called once, after every lock was released, with the error
	// Run returns for this run (nil on success; on a restart, the refusal
	// that caused it).
	End(err error)
}

// EventKind says what happened.
type EventKind int

// The events, in the order a scope sees them.
const (
	WaitStart EventKind = iota + 1 // a yield starts acquiring Keys
	Acquired                       // Key is held (Token, Wait)
	WaitEnd                        // the yield ended (Keys, Wait, Err)
	Refused                        // Key sorts below Held and could not be taken without waiting (Err)
	Lost                           // Key was lost while held (Err)
	Released                       // Key was released (Hold, Err)
	Restart                        // the function will run again (Err is the refusal)
)

var kindNames = [...]string{"", "wait-start", "acquired", "wait-end", "refused", "lost", "released", "restart"}

// String returns the kind's name as it appears in log records.
func (k EventKind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Event is one observation. Fields that do not apply to its Kind are zero.
type Event struct {
	Kind    EventKind
	Key     string        // the lock's key (Acquired, Refused, Lost, Released)
	Keys    []string      // the yield's keys, sorted, without duplicates, held ones included (WaitStart, WaitEnd); do not keep
	Held    string        // the highest held key (Refused)
	Backend string        // the key's namespace: the text before its first ':' ("mem", "redis", ...)
	Token   uint64        // fencing token, 0 if the backend issues none (Acquired)
	Wait    time.Duration // time spent waiting (Acquired: since the yield began; WaitEnd: the whole yield)
	Hold    time.Duration // time the lock was held (Released)
	Attempt int           // the run's attempt, from 1
	Err     error         // why it failed, or the cause of a loss
}

func namespace(key string) string {
	if i := strings.IndexByte(key, ':'); i > 0 {
		return key[:i]
	}
	return ""
}

// WithName names the function for observers (a span name, a log attribute).
func WithName(name string) Option {
	return optionFunc(func(c *config) error {
		c.name = name
		return nil
	})
}

// WithObserver sends the events of every run to o. Several WithObserver
// options add observers; each sees every event.
func WithObserver(o Observer) Option {
	return optionFunc(func(c *config) error {
		if o == nil {
			return errors.New("caesura: WithObserver(nil)")
		}
		c.observers = append(c.observers, o)
		return nil
	})
}

// WithLogger logs scope events to l: waits, acquisitions and releases at
// Debug, restarts and refusals at Info, losses and release errors at Warn.
// Nothing is logged without this option.
func WithLogger(l *slog.Logger) Option {
	if l == nil {
		return optionFunc(func(*config) error { return errors.New("caesura: WithLogger(nil)") })
	}
	return WithObserver(slogObserver{l})
}

type slogObserver struct{ l *slog.Logger }

func (o slogObserver) StartScope(ctx context.Context, info ScopeInfo) (context.Context, ScopeObserver) {
	l := o.l
	if info.Name != "" {
		l = l.With(slog.String("scope", info.Name))
	}
	return ctx, &slogScope{l: l, ctx: ctx}
}

type slogScope struct {
	l   *slog.Logger
	ctx context.Context
}

func (s *slogScope) Event(e Event) {
	level := slog.LevelDebug
	switch {
	case e.Kind == Lost, e.Kind == Released && e.Err != nil:
		level = slog.LevelWarn
	case e.Kind == Refused, e.Kind == Restart, e.Kind == WaitEnd && e.Err != nil:
		level = slog.LevelInfo
	}
	if !s.l.Enabled(s.ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs, slog.Int("attempt", e.Attempt))
	if e.Key != "" {
		attrs = append(attrs, slog.String("key", e.Key))
	}
	if e.Keys != nil {
		attrs = append(attrs, slog.Any("keys", append([]string(nil), e.Keys...)))
	}
	if e.Backend != "" {
		attrs = append(attrs, slog.String("backend", e.Backend))
	}
	if e.Held != "" {
		attrs = append(attrs, slog.String("held", e.Held))
	}
	if e.Token != 0 {
		attrs = append(attrs, slog.Uint64("token", e.Token))
	}
	if e.Wait != 0 {
		attrs = append(attrs, slog.Duration("wait", e.Wait))
	}
	if e.Hold != 0 {
		attrs = append(attrs, slog.Duration("hold", e.Hold))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	s.l.LogAttrs(s.ctx, level, "caesura: "+e.Kind.String(), attrs...)
}

func (s *slogScope) End(err error) {
	if err != nil {
		s.l.LogAttrs(s.ctx, slog.LevelDebug, "caesura: scope ended", slog.String("error", err.Error()))
		return
	}
	s.l.LogAttrs(s.ctx, slog.LevelDebug, "caesura: scope ended")
}

// observing is a scope's view of its observers.
type observing struct {
	scopes  []ScopeObserver
	attempt int
	began   time.Time            // when the running yield began
	mu      sync.Mutex           // guards since (Lost comes from other goroutines)
	since   map[string]time.Time // when each held key was acquired
}

func (o *observing) acquired(key string, h Held) {
	now := time.Now()
	o.mu.Lock()
	if o.since == nil {
		o.since = make(map[string]time.Time)
	}
	o.since[key] = now
	o.mu.Unlock()
	var tok uint64
	if f, ok := h.(Fenced); ok {
		tok = f.Token()
	}
	o.emit(Event{Kind: Acquired, Key: key, Token: tok, Wait: now.Sub(o.began)})
}

func (o *observing) released(key string, err error) {
	o.mu.Lock()
	at := o.since[key]
	delete(o.since, key)
	o.mu.Unlock()
	o.emit(Event{Kind: Released, Key: key, Hold: time.Since(at), Err: err})
}

// startObserving starts a run's observers; each gets the context the one
// before it returned. It returns the context the function runs with.
func startObserving(ctx context.Context, cfg *config, attempt int) (context.Context, *observing) {
	if len(cfg.observers) == 0 {
		return ctx, nil
	}
	o := &observing{attempt: attempt}
	info := ScopeInfo{Name: cfg.name, Attempt: attempt}
	for _, ob := range cfg.observers {
		octx, so := ob.StartScope(ctx, info)
		if octx != nil {
			ctx = octx
		}
		if so != nil {
			o.scopes = append(o.scopes, so)
		}
	}
	return ctx, o
}

func (o *observing) emit(e Event) {
	if o == nil {
		return
	}
	e.Attempt = o.attempt
	if e.Backend == "" {
		if e.Key != "" {
			e.Backend = namespace(e.Key)
		} else if len(e.Keys) > 0 {
			e.Backend = namespace(e.Keys[0])
		}
	}
	for _, s := range o.scopes {
		s.Event(e)
	}
}

func (o *observing) end(err error) {
	if o == nil {
		return
	}
	for _, s := range o.scopes {
		s.End(err)
	}
}
