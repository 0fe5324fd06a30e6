package otelcaesura

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/caesura-go/caesura"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/caesura-go/caesura/otelcaesura"

// DefaultContentionThreshold is the wait above which an acquisition counts
// as contended unless [WithContentionThreshold] says otherwise. It is set
// above the round trip of a healthy Redis, PostgreSQL or etcd backend, so
// that an uncontended remote acquisition is not counted.
const DefaultContentionThreshold = 10 * time.Millisecond

// Option configures [New].
type Option interface {
	apply(*config) error
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

type config struct {
	tp        trace.TracerProvider
	mp        metric.MeterProvider
	threshold time.Duration
}

// WithTracerProvider records spans with tp instead of the global
// [otel.GetTracerProvider].
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) error {
		if tp == nil {
			return errors.New("otelcaesura: WithTracerProvider(nil)")
		}
		c.tp = tp
		return nil
	})
}

// WithMeterProvider records metrics with mp instead of the global
// [otel.GetMeterProvider].
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) error {
		if mp == nil {
			return errors.New("otelcaesura: WithMeterProvider(nil)")
		}
		c.mp = mp
		return nil
	})
}

// WithContentionThreshold sets the time an acquisition must wait, at least,
// to be counted in caesura.lock.contended (see the package doc). The default
// is [DefaultContentionThreshold]; it must be positive.
func WithContentionThreshold(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("otelcaesura: WithContentionThreshold(%v): the threshold must be positive", d)
		}
		c.threshold = d
		return nil
	})
}

// New returns a [caesura.Observer] that records traces and metrics of every
// scope it is given with [caesura.WithObserver]. Without options it uses the
// global providers, as they are when New is called ([otel.GetTracerProvider]
// returns a delegate that follows a later [otel.SetTracerProvider]).
//
// New fails on an invalid option, or when the meter refuses to create an
// instrument. The Observer is safe for concurrent use by any number of
// scopes; create one and share it.
func New(opts ...Option) (caesura.Observer, error) {
	c := config{threshold: DefaultContentionThreshold}
	for _, o := range opts {
		if o == nil {
			return nil, errors.New("otelcaesura: nil Option")
		}
		if err := o.apply(&c); err != nil {
			return nil, err
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	o := &observer{
		tracer:    c.tp.Tracer(ScopeName),
		threshold: c.threshold,
	}
	meter := c.mp.Meter(ScopeName)
	var errs []error
	hist := func(name, desc string) metric.Float64Histogram {
		h, err := meter.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(buckets...))
		errs = append(errs, err)
		return h
	}
	count := func(name, unit, desc string) metric.Int64Counter {
		n, err := meter.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return n
	}
	o.wait = hist(MetricWait, "Time a yield spent acquiring its locks.")
	o.hold = hist(MetricHold, "Time a lock was held, from its acquisition to its release.")
	o.acquisitions = count(MetricAcquisitions, "{acquisition}", "Locks acquired.")
	o.contended = count(MetricContended, "{acquisition}", "Locks acquired after waiting at least the contention threshold.")
	o.restarts = count(MetricRestarts, "{restart}", "Functions run again after an out-of-order refusal.")
	o.refusals = count(MetricRefusals, "{refusal}", "Out-of-order acquisitions refused because the lock was taken or cannot be tried.")
	o.losses = count(MetricLosses, "{loss}", "Locks lost while held (lease expired, session dropped).")
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("otelcaesura: creating instruments: %w", err)
	}
	return o, nil
}

// The metric instruments' names.
const (
	MetricWait         = "caesura.lock.wait"
	MetricHold         = "caesura.lock.hold"
	MetricAcquisitions = "caesura.lock.acquisitions"
	MetricContended    = "caesura.lock.contended"
	MetricRestarts     = "caesura.scope.restarts"
	MetricRefusals     = "caesura.lock.refusals"
	MetricLosses       = "caesura.lock.losses"
)

// The span names.
const (
	SpanScope = "caesura.scope"
	SpanYield = "caesura.yield"
)

// The attribute keys.
const (
	AttrAttempt = attribute.Key("caesura.attempt")
	AttrName    = attribute.Key("caesura.name") // the scope's caesura.WithName
	AttrKey     = attribute.Key("caesura.key")
	AttrKeys    = attribute.Key("caesura.keys")
	AttrHeld    = attribute.Key("caesura.held")
	AttrBackend = attribute.Key("caesura.backend")
	AttrToken   = attribute.Key("caesura.token")
	AttrWait    = attribute.Key("caesura.wait")
	AttrHold    = attribute.Key("caesura.hold")
	AttrOutcome = attribute.Key("caesura.outcome")
	AttrError   = attribute.Key("caesura.error")
)

// The values of caesura.outcome.
const (
	OutcomeOK      = "ok"
	OutcomeRefused = "refused"
	OutcomeError   = "error"
)

// buckets suit both waits (sub-millisecond for memlock, milliseconds for a
// remote backend) and holds (up to a minute). They are advice: an SDK view
// can replace them.
var buckets = []float64{0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

type observer struct {
	tracer    trace.Tracer
	threshold time.Duration

	wait, hold                                          metric.Float64Histogram
	acquisitions, contended, restarts, refusals, losses metric.Int64Counter

	sets  sync.Map   // backend name -> *backendSets
	mu    sync.Mutex // serializes additions to sets
	nsets int        // the number of backends in sets, guarded by mu
}

// MaxBackends is the number of distinct caesura.backend values the metrics
// of one Observer use; the events of further backends are recorded with
// caesura.backend set to [OtherBackend]. Spans are not affected.
const MaxBackends = 32

// OtherBackend is the caesura.backend of metrics beyond [MaxBackends].
const OtherBackend = "other"

// backendSets are the metric attribute sets of one backend, built once:
// recording with a prepared set does not allocate.
type backendSets struct {
	add  []metric.AddOption       // caesura.backend
	rec  []metric.RecordOption    // caesura.backend
	wait [3][]metric.RecordOption // caesura.backend and caesura.outcome, by outcome()
}

func (o *observer) setsFor(backend string) *backendSets {
	if v, ok := o.sets.Load(backend); ok {
		return v.(*backendSets)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.nsets >= MaxBackends {
		// The backend is the text before a key's first ':', which the
		// user chooses for keys made with FromLocker or FromFuncs: cap
		// the series it can create.
		backend = OtherBackend
	}
	if v, ok := o.sets.Load(backend); ok {
		return v.(*backendSets)
	}
	b := AttrBackend.String(backend)
	base := metric.WithAttributeSet(attribute.NewSet(b))
	s := &backendSets{add: []metric.AddOption{base}, rec: []metric.RecordOption{base}}
	for i, out := range outcomes {
		s.wait[i] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(b, AttrOutcome.String(out)))}
	}
	o.sets.Store(backend, s)
	o.nsets++
	return s
}

func (o *observer) StartScope(ctx context.Context, info caesura.ScopeInfo) (context.Context, caesura.ScopeObserver) {
	ctx, span := o.tracer.Start(ctx, SpanScope)
	rec := span.IsRecording()
	if rec {
		span.SetAttributes(AttrAttempt.Int(info.Attempt))
		if info.Name != "" {
			span.SetAttributes(AttrName.String(info.Name))
		}
	}
	return ctx, &scope{o: o, ctx: ctx, span: span, recording: rec, attempt: info.Attempt}
}

// scope is the state of one run. Its methods are called from the scope's
// goroutine, from the goroutine of a yield, and (Lost) from the backend's:
// mu guards everything that changes.
type scope struct {
	o         *observer
	ctx       context.Context // carries span: the parent of yield spans
	span      trace.Span
	recording bool

	mu       sync.Mutex
	attempt  int
	yield    trace.Span    // the running yield's span, nil between yields
	lastWait time.Duration // Acquired.Wait of the yield's previous acquisition
	ended    bool
}

func outcome(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, caesura.ErrOutOfOrder):
		return 1
	default:
		return 2
	}
}

var outcomes = [3]string{OutcomeOK, OutcomeRefused, OutcomeError}

func (s *scope) Event(e caesura.Event) {
	o := s.o
	ctx := s.ctx
	s.mu.Lock()
	defer s.mu.Unlock()
	switch e.Kind {
	case caesura.WaitStart:
		s.lastWait = 0
		if s.yield != nil { // cannot happen: yields are sequential
			s.yield.End()
		}
		if s.ended || !s.recording {
			// A yield span is recorded only under a recorded scope
			// span: without it the yield would be an orphan, and the
			// no-op and unsampled paths stay cheap.
			s.yield = nil
			return
		}
		_, s.yield = o.tracer.Start(ctx, SpanYield, trace.WithAttributes(
			AttrKeys.StringSlice(e.Keys), // copies: the core reuses Keys
			AttrBackend.String(e.Backend),
		))
	case caesura.WaitEnd:
		i := outcome(e.Err)
		o.wait.Record(ctx, e.Wait.Seconds(), o.setsFor(e.Backend).wait[i]...)
		if y := s.yield; y != nil {
			s.yield = nil
			if y.IsRecording() {
				y.SetAttributes(AttrWait.Float64(e.Wait.Seconds()), AttrOutcome.String(outcomes[i]))
				if e.Err != nil {
					y.SetStatus(codes.Error, e.Err.Error())
				}
			}
			y.End()
		}
	case caesura.Acquired:
		sets := o.setsFor(e.Backend)
		o.acquisitions.Add(ctx, 1, sets.add...)
		// e.Wait runs from the start of the yield; this key's own wait
		// starts where the previous key of the yield was acquired.
		own := e.Wait - s.lastWait
		s.lastWait = e.Wait
		if own >= o.threshold {
			o.contended.Add(ctx, 1, sets.add...)
		}
		if s.recording && !s.ended {
			attrs := make([]attribute.KeyValue, 0, 4)
			attrs = append(attrs, AttrKey.String(e.Key), AttrBackend.String(e.Backend))
			if e.Token != 0 {
				attrs = append(attrs, token(e.Token))
			}
			attrs = append(attrs, AttrWait.Float64(e.Wait.Seconds()))
			s.span.AddEvent("caesura.acquired", trace.WithAttributes(attrs...))
		}
	case caesura.Released:
		o.hold.Record(ctx, e.Hold.Seconds(), o.setsFor(e.Backend).rec...)
		if s.recording && !s.ended {
			attrs := make([]attribute.KeyValue, 0, 4)
			attrs = append(attrs, AttrKey.String(e.Key), AttrBackend.String(e.Backend), AttrHold.Float64(e.Hold.Seconds()))
			if e.Err != nil {
				attrs = append(attrs, AttrError.String(e.Err.Error()))
			}
			s.span.AddEvent("caesura.released", trace.WithAttributes(attrs...))
		}
	case caesura.Refused:
		o.refusals.Add(ctx, 1, o.setsFor(e.Backend).add...)
		if s.recording && !s.ended {
			s.span.AddEvent("caesura.refused", trace.WithAttributes(
				AttrKey.String(e.Key), AttrBackend.String(e.Backend), AttrHeld.String(e.Held), errAttr(e.Err)))
		}
	case caesura.Lost:
		o.losses.Add(ctx, 1, o.setsFor(e.Backend).add...)
		if s.recording && !s.ended {
			s.span.AddEvent("caesura.lost", trace.WithAttributes(
				AttrKey.String(e.Key), AttrBackend.String(e.Backend), errAttr(e.Err)))
		}
	case caesura.Restart:
		// The Restart event names no key: the refusal it carries does.
		backend := e.Backend
		var oe *caesura.OrderError
		if backend == "" && errors.As(e.Err, &oe) {
			backend = namespace(oe.Key)
		}
		o.restarts.Add(ctx, 1, o.setsFor(backend).add...)
		if s.recording && !s.ended {
			s.span.AddEvent("caesura.restart", trace.WithAttributes(AttrBackend.String(backend), errAttr(e.Err)))
		}
	}
}

func (s *scope) End(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.ended = true
	if s.yield != nil { // cannot happen: a yield ends before its scope
		s.yield.End()
		s.yield = nil
	}
	if err != nil && s.recording {
		s.span.RecordError(err)
		s.span.SetStatus(codes.Error, err.Error())
	}
	s.span.End()
}

func errAttr(err error) attribute.KeyValue {
	if err == nil {
		return AttrError.String("")
	}
	return AttrError.String(err.Error())
}

// token is an int64 attribute when it fits (every shipped backend's does),
// a decimal string otherwise.
func token(t uint64) attribute.KeyValue {
	if t <= math.MaxInt64 {
		return AttrToken.Int64(int64(t))
	}
	return AttrToken.String(fmt.Sprint(t))
}

// namespace is the text before a key's first ':', as caesura's Event.Backend.
func namespace(key string) string {
	if i := strings.IndexByte(key, ':'); i > 0 {
		return key[:i]
	}
	return ""
}
