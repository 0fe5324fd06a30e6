package otelcaesura_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
	"github.com/caesura-go/caesura/otelcaesura"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// harness is an observer recording into the SDK's in-memory span recorder
// and manual metric reader, and a parent span for the scopes.
type harness struct {
	t      *testing.T
	obs    caesura.Observer
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	ctx    context.Context // carries parent
	parent trace.Span
}

func newHarness(t *testing.T, opts ...otelcaesura.Option) *harness {
	t.Helper()
	h := &harness{t: t, spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	// A threshold no scheduling delay reaches, unless a test sets its own:
	// on a loaded machine an uncontended acquisition can take 10 ms.
	obs, err := otelcaesura.New(append([]otelcaesura.Option{
		otelcaesura.WithTracerProvider(tp), otelcaesura.WithMeterProvider(mp),
		otelcaesura.WithContentionThreshold(time.Hour)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	h.obs = obs
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	h.ctx, h.parent = tp.Tracer("test").Start(ctx, "test")
	return h
}

// traceTree ends the parent span and returns the spans below it as an
// indented tree: each span's name, attributes and status, then its events,
// then its children, in the order they started. Durations print as their
// key only (their values are checked apart); errors print as "error".
func (h *harness) traceTree() string {
	h.parent.End()
	ended := h.spans.Ended()
	var b strings.Builder
	var walk func(parent trace.SpanID, depth int)
	walk = func(parent trace.SpanID, depth int) {
		var kids []sdktrace.ReadOnlySpan
		for _, s := range ended {
			if s.Parent().SpanID() == parent && s.Parent().TraceID() == h.parent.SpanContext().TraceID() {
				kids = append(kids, s)
			}
		}
		slices.SortStableFunc(kids, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
		for _, s := range kids {
			ind := strings.Repeat("  ", depth)
			fmt.Fprintf(&b, "%s%s%s status=%s\n", ind, s.Name(), attrs(s.Attributes()), s.Status().Code)
			for _, e := range s.Events() {
				fmt.Fprintf(&b, "%s  event %s%s\n", ind, e.Name, attrs(e.Attributes))
			}
			walk(s.SpanContext().SpanID(), depth+1)
		}
	}
	walk(h.parent.SpanContext().SpanID(), 0)
	return b.String()
}

func attrs(kvs []attribute.KeyValue) string {
	kvs = slices.Clone(kvs)
	slices.SortFunc(kvs, func(a, b attribute.KeyValue) int { return strings.Compare(string(a.Key), string(b.Key)) })
	var b strings.Builder
	for _, kv := range kvs {
		k := strings.TrimPrefix(string(kv.Key), "caesura.")
		switch {
		case kv.Value.Type() == attribute.FLOAT64, kv.Key == "caesura.error", strings.HasPrefix(k, "exception."):
			if kv.Value.Type() == attribute.FLOAT64 && kv.Value.AsFloat64() < 0 {
				k += "<0!"
			}
			fmt.Fprintf(&b, " %s", k)
		default:
			fmt.Fprintf(&b, " %s=%s", k, kv.Value.Emit())
		}
	}
	return b.String()
}

// metrics collects every data point as "name{attrs} value", sorted: the
// value is a counter's sum or a histogram's count (sums are checked apart).
func (h *harness) metrics() []string {
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out = append(out, fmt.Sprintf("%s{%s} %d", m.Name, p.Attributes.Encoded(attribute.DefaultEncoder()), p.Value))
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out = append(out, fmt.Sprintf("%s{%s} count=%d", m.Name, p.Attributes.Encoded(attribute.DefaultEncoder()), p.Count))
				}
			default:
				h.t.Errorf("metric %s has unexpected data %T", m.Name, m.Data)
			}
		}
	}
	slices.Sort(out)
	return out
}

// histogramSum returns the sum of the histogram's points with the backend.
func (h *harness) histogramSum(name string) float64 {
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		h.t.Fatal(err)
	}
	var sum float64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if d, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == name {
				for _, p := range d.DataPoints {
					sum += p.Sum
				}
			}
		}
	}
	return sum
}

func (h *harness) check(wantTree string, wantMetrics []string) {
	h.t.Helper()
	if got := h.traceTree(); got != wantTree {
		h.t.Errorf("spans: got\n%s\nwant\n%s", got, wantTree)
	}
	if got := h.metrics(); !slices.Equal(got, wantMetrics) {
		h.t.Errorf("metrics: got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantMetrics, "\n"))
	}
}

// scopeStatus returns the status descriptions of the scope spans, oldest first.
func (h *harness) scopeStatus() []string {
	var out []string
	for _, s := range h.spans.Ended() {
		if s.Name() == otelcaesura.SpanScope {
			out = append(out, s.Status().Description)
		}
	}
	return out
}

func TestAcquire(t *testing.T) {
	h := newHarness(t)
	ml := memlock.New(memlock.Options{})
	err := caesura.Run(h.ctx, func(ctx context.Context, yield caesura.Yield) error {
		return yield(ml.Mutex("b"), ml.Mutex("a"))
	}, caesura.WithObserver(h.obs))
	if err != nil {
		t.Fatal(err)
	}
	h.check(`caesura.scope attempt=1 status=Unset
  event caesura.acquired backend=mem key=mem:a token=1 wait
  event caesura.acquired backend=mem key=mem:b token=2 wait
  event caesura.released backend=mem hold key=mem:b
  event caesura.released backend=mem hold key=mem:a
  caesura.yield backend=mem keys=["mem:a","mem:b"] outcome=ok wait status=Unset
`, []string{
		"caesura.lock.acquisitions{caesura.backend=mem} 2",
		"caesura.lock.hold{caesura.backend=mem} count=2",
		"caesura.lock.wait{caesura.backend=mem,caesura.outcome=ok} count=1",
	})
}

// A holder releases "a" after 300ms: the yield of a and b waits for a (one
// contended acquisition), then takes b at once (not contended). The
// threshold sits between the two, with room for a slow machine.
func TestContention(t *testing.T) {
	h := newHarness(t, otelcaesura.WithContentionThreshold(150*time.Millisecond))
	ml := memlock.New(memlock.Options{})
	held, err := ml.Mutex("a").Acquire(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	time.AfterFunc(300*time.Millisecond, func() { _ = held.Release(context.Background()); close(released) })
	err = caesura.Run(h.ctx, func(ctx context.Context, yield caesura.Yield) error {
		return yield(ml.Mutex("a"), ml.Mutex("b"))
	}, caesura.WithObserver(h.obs))
	<-released
	if err != nil {
		t.Fatal(err)
	}
	h.check(`caesura.scope attempt=1 status=Unset
  event caesura.acquired backend=mem key=mem:a token=2 wait
  event caesura.acquired backend=mem key=mem:b token=3 wait
  event caesura.released backend=mem hold key=mem:b
  event caesura.released backend=mem hold key=mem:a
  caesura.yield backend=mem keys=["mem:a","mem:b"] outcome=ok wait status=Unset
`, []string{
		"caesura.lock.acquisitions{caesura.backend=mem} 2",
		"caesura.lock.contended{caesura.backend=mem} 1",
		"caesura.lock.hold{caesura.backend=mem} count=2",
		"caesura.lock.wait{caesura.backend=mem,caesura.outcome=ok} count=1",
	})
	if got := h.histogramSum(otelcaesura.MetricWait); got < 0.25 {
		t.Errorf("wait sum: got %vs, want at least 0.25s", got)
	}
	// Measurements carry the scope span's context: the SDK's exemplars
	// link the slow wait to its trace.
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	traceID := h.parent.SpanContext().TraceID()
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name != otelcaesura.MetricWait {
			continue
		}
		ex := m.Data.(metricdata.Histogram[float64]).DataPoints[0].Exemplars
		if len(ex) == 0 || string(ex[0].TraceID) != string(traceID[:]) {
			t.Errorf("wait exemplars %+v, want one in trace %s", ex, traceID)
		}
	}
	for _, s := range h.spans.Ended() {
		if s.Name() != otelcaesura.SpanYield {
			continue
		}
		if d := s.EndTime().Sub(s.StartTime()); d < 25*time.Millisecond {
			t.Errorf("yield span lasted %v, want at least 25ms", d)
		}
		for _, kv := range s.Attributes() {
			if kv.Key == otelcaesura.AttrWait && kv.Value.AsFloat64() < 0.025 {
				t.Errorf("yield span wait: got %vs, want at least 0.025s", kv.Value.AsFloat64())
			}
		}
	}
}

// The function yields b, then a, which sorts below b and is taken: refused,
// then run again with a and b taken up front.
func TestRestart(t *testing.T) {
	h := newHarness(t)
	ml := memlock.New(memlock.Options{})
	held, err := ml.Mutex("a").Acquire(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	attempt := 0
	err = caesura.Run(h.ctx, func(ctx context.Context, yield caesura.Yield) error {
		attempt++
		if attempt == 1 {
			defer held.Release(context.Background())
		}
		if err := yield(ml.Mutex("b")); err != nil {
			return err
		}
		return yield(ml.Mutex("a"))
	}, caesura.WithObserver(h.obs), caesura.WithRestart(2))
	if err != nil {
		t.Fatal(err)
	}
	h.check(`caesura.scope attempt=1 status=Error
  event caesura.acquired backend=mem key=mem:b token=2 wait
  event caesura.refused backend=mem error held=mem:b key=mem:a
  event caesura.released backend=mem hold key=mem:b
  event caesura.restart backend=mem error
  event exception exception.message exception.type
  caesura.yield backend=mem keys=["mem:b"] outcome=ok wait status=Unset
  caesura.yield backend=mem keys=["mem:a"] outcome=refused wait status=Error
caesura.scope attempt=2 status=Unset
  event caesura.acquired backend=mem key=mem:a token=3 wait
  event caesura.acquired backend=mem key=mem:b token=4 wait
  event caesura.released backend=mem hold key=mem:b
  event caesura.released backend=mem hold key=mem:a
  caesura.yield backend=mem keys=["mem:a","mem:b"] outcome=ok wait status=Unset
  caesura.yield backend=mem keys=["mem:b"] outcome=ok wait status=Unset
  caesura.yield backend=mem keys=["mem:a"] outcome=ok wait status=Unset
`, []string{
		"caesura.lock.acquisitions{caesura.backend=mem} 3",
		"caesura.lock.hold{caesura.backend=mem} count=3",
		"caesura.lock.refusals{caesura.backend=mem} 1",
		"caesura.lock.wait{caesura.backend=mem,caesura.outcome=ok} count=4",
		"caesura.lock.wait{caesura.backend=mem,caesura.outcome=refused} count=1",
		"caesura.scope.restarts{caesura.backend=mem} 1",
	})
	st := h.scopeStatus()
	if len(st) != 2 || !strings.Contains(st[0], `"mem:a"`) || !strings.Contains(st[0], `"mem:b"`) || st[1] != "" {
		t.Errorf("scope status descriptions: got %q, want the refusal, then none", st)
	}
}

// lossyLock wraps a memlock mutex (hiding its TryAcquire and Batcher) in a
// Lock whose Held is caesura.Lossy: lost is cancelled to lose it.
type lossyLock struct {
	caesura.Lock
	lost context.Context
}

func (l lossyLock) Acquire(ctx context.Context) (caesura.Held, error) {
	h, err := l.Lock.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return lossyHeld{h.(caesura.Fenced), l.lost}, nil
}

type lossyHeld struct {
	caesura.Fenced
	lost context.Context
}

func (h lossyHeld) Lost() context.Context { return h.lost }

// The lock is lost while the function holds it: the loss is reported from
// the backend's goroutine, the function's context is cancelled, and the run
// ends in error.
func TestLoss(t *testing.T) {
	h := newHarness(t)
	ml := memlock.New(memlock.Options{})
	lost, lose := context.WithCancelCause(context.Background())
	defer lose(nil)
	l := lossyLock{ml.Mutex("a"), lost}
	err := caesura.Run(h.ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(l); err != nil {
			return err
		}
		lose(errors.New("lease expired"))
		<-ctx.Done()
		return nil
	}, caesura.WithObserver(h.obs))
	if !errors.Is(err, caesura.ErrLockLost) {
		t.Fatalf("Run: got %v, want ErrLockLost", err)
	}
	h.check(`caesura.scope attempt=1 status=Error
  event caesura.acquired backend=mem key=mem:a token=1 wait
  event caesura.lost backend=mem error key=mem:a
  event caesura.released backend=mem hold key=mem:a
  event exception exception.message exception.type
  caesura.yield backend=mem keys=["mem:a"] outcome=ok wait status=Unset
`, []string{
		"caesura.lock.acquisitions{caesura.backend=mem} 1",
		"caesura.lock.hold{caesura.backend=mem} count=1",
		"caesura.lock.losses{caesura.backend=mem} 1",
		"caesura.lock.wait{caesura.backend=mem,caesura.outcome=ok} count=1",
	})
	if st := h.scopeStatus(); len(st) != 1 || st[0] != err.Error() {
		t.Errorf("scope status: got %q, want [%q]", st, err.Error())
	}
	for _, s := range h.spans.Ended() {
		for _, e := range s.Events() {
			if e.Name != "caesura.lost" {
				continue
			}
			for _, kv := range e.Attributes {
				if kv.Key == otelcaesura.AttrError && !strings.Contains(kv.Value.AsString(), "lease expired") {
					t.Errorf("lost event error: got %q, want the cause", kv.Value.AsString())
				}
			}
		}
	}
}

// A yield that fails (here: the context is cancelled while the lock is
// waited for) has outcome error, and so does the scope.
func TestYieldError(t *testing.T) {
	h := newHarness(t)
	waiting := make(chan struct{})
	l := caesura.FromFuncs("slow:a", func(ctx context.Context) error {
		close(waiting)
		<-ctx.Done()
		return errors.Join(caesura.ErrNotAcquired, ctx.Err())
	}, func(context.Context) error { return nil })
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	go func() {
		select {
		case <-waiting:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		return yield(l)
	}, caesura.WithObserver(h.obs))
	if !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("Run: got %v, want ErrNotAcquired", err)
	}
	h.check(`caesura.scope attempt=1 status=Error
  event exception exception.message exception.type
  caesura.yield backend=slow keys=["slow:a"] outcome=error wait status=Error
`, []string{
		"caesura.lock.wait{caesura.backend=slow,caesura.outcome=error} count=1",
	})
}

// Scopes on many goroutines share one observer; run with -race.
func TestConcurrentScopes(t *testing.T) {
	h := newHarness(t)
	ml := memlock.New(memlock.Options{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 5 {
				err := caesura.Run(h.ctx, func(ctx context.Context, yield caesura.Yield) error {
					return yield(ml.Mutex("shared"), ml.Mutex(fmt.Sprint(i)))
				}, caesura.WithObserver(h.obs))
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	got := h.metrics()
	for _, want := range []string{
		"caesura.lock.acquisitions{caesura.backend=mem} 80",
		"caesura.lock.hold{caesura.backend=mem} count=80",
		"caesura.lock.wait{caesura.backend=mem,caesura.outcome=ok} count=40",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("metrics: got\n%s\nwant a line %q", strings.Join(got, "\n"), want)
		}
	}
	if n := strings.Count(h.traceTree(), "caesura.scope attempt=1 status=Unset"); n != 40 {
		t.Errorf("got %d scope spans, want 40", n)
	}
}

// Without options New uses the global providers (no-ops unless set).
func TestGlobalProviders(t *testing.T) {
	obs, err := otelcaesura.New()
	if err != nil {
		t.Fatal(err)
	}
	ml := memlock.New(memlock.Options{})
	err = caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
		return yield(ml.Mutex("a"))
	}, caesura.WithObserver(obs))
	if err != nil {
		t.Fatal(err)
	}
}

func TestOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  otelcaesura.Option
	}{
		{"nil tracer provider", otelcaesura.WithTracerProvider(nil)},
		{"nil meter provider", otelcaesura.WithMeterProvider(nil)},
		{"zero threshold", otelcaesura.WithContentionThreshold(0)},
		{"negative threshold", otelcaesura.WithContentionThreshold(-time.Second)},
		{"nil option", nil},
	} {
		if obs, err := otelcaesura.New(tc.opt); err == nil || obs != nil || !strings.HasPrefix(err.Error(), "otelcaesura: ") {
			t.Errorf("%s: got (%v, %v), want (nil, an otelcaesura error)", tc.name, obs, err)
		}
	}
}

// A threshold above the wait counts nothing as contended.
func TestContentionThreshold(t *testing.T) {
	h := newHarness(t, otelcaesura.WithContentionThreshold(time.Hour))
	ml := memlock.New(memlock.Options{})
	held, err := ml.Mutex("a").Acquire(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(10*time.Millisecond, func() { _ = held.Release(context.Background()) })
	err = caesura.Run(h.ctx, func(ctx context.Context, yield caesura.Yield) error {
		return yield(ml.Mutex("a"))
	}, caesura.WithObserver(h.obs))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range h.metrics() {
		if strings.HasPrefix(line, otelcaesura.MetricContended) {
			t.Errorf("got %q, want no contention above an hour's threshold", line)
		}
	}
}

// An unsampled scope records no spans at all (no orphan yield spans), and
// its metrics all the same.
func TestUnsampled(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()), sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer tp.Shutdown(context.Background())
	defer mp.Shutdown(context.Background())
	obs, err := otelcaesura.New(otelcaesura.WithTracerProvider(tp), otelcaesura.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	ml := memlock.New(memlock.Options{})
	err = caesura.Run(context.Background(), func(ctx context.Context, yield caesura.Yield) error {
		return yield(ml.Mutex("a"))
	}, caesura.WithObserver(obs))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(spans.Ended()) + len(spans.Started()); n != 0 {
		t.Errorf("got %d spans, want 0", n)
	}
	h := &harness{t: t, reader: reader}
	want := []string{
		"caesura.lock.acquisitions{caesura.backend=mem} 1",
		"caesura.lock.hold{caesura.backend=mem} count=1",
		"caesura.lock.wait{caesura.backend=mem,caesura.outcome=ok} count=1",
	}
	if got := h.metrics(); !slices.Equal(got, want) {
		t.Errorf("metrics: got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Past MaxBackends distinct namespaces, metrics use caesura.backend=other.
func TestBackendCap(t *testing.T) {
	h := newHarness(t)
	n := otelcaesura.MaxBackends + 3
	err := caesura.Run(h.ctx, func(ctx context.Context, yield caesura.Yield) error {
		for i := range n {
			var mu sync.Mutex
			if err := yield(caesura.FromLocker(fmt.Sprintf("ns%03d:k", i), &mu)); err != nil {
				return err
			}
		}
		return nil
	}, caesura.WithObserver(h.obs))
	if err != nil {
		t.Fatal(err)
	}
	backends := map[string]int64{}
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name != otelcaesura.MetricAcquisitions {
			continue
		}
		for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
			b, _ := p.Attributes.Value(otelcaesura.AttrBackend)
			backends[b.AsString()] += p.Value
		}
	}
	if len(backends) != otelcaesura.MaxBackends+1 || backends[otelcaesura.OtherBackend] != 3 || backends["ns000"] != 1 {
		t.Errorf("got %d backends, %d acquisitions as %q, want %d and 3",
			len(backends), backends[otelcaesura.OtherBackend], otelcaesura.OtherBackend, otelcaesura.MaxBackends+1)
	}
}

// Spans the function starts are children of its scope span, and the scope
// span carries the name given with caesura.WithName.
func TestFunctionSpansNestUnderScope(t *testing.T) {
	h := newHarness(t)
	ml := memlock.New(memlock.Options{})
	err := caesura.Run(h.ctx, func(ctx context.Context, yield caesura.Yield) error {
		if err := yield(ml.Mutex("a")); err != nil {
			return err
		}
		_, span := trace.SpanFromContext(ctx).TracerProvider().Tracer("app").Start(ctx, "write")
		span.End()
		return nil
	}, caesura.WithObserver(h.obs), caesura.WithName("transfer"))
	if err != nil {
		t.Fatal(err)
	}
	h.parent.End()
	var scope, write sdktrace.ReadOnlySpan
	for _, s := range h.spans.Ended() {
		switch s.Name() {
		case otelcaesura.SpanScope:
			scope = s
		case "write":
			write = s
		}
	}
	if scope == nil || write == nil {
		t.Fatalf("spans: scope %v, write %v", scope, write)
	}
	if write.Parent().SpanID() != scope.SpanContext().SpanID() {
		t.Fatalf("the function's span has parent %v, want the scope span %v", write.Parent().SpanID(), scope.SpanContext().SpanID())
	}
	var name string
	for _, kv := range scope.Attributes() {
		if kv.Key == otelcaesura.AttrName {
			name = kv.Value.AsString()
		}
	}
	if name != "transfer" {
		t.Fatalf("scope span caesura.name = %q, want transfer", name)
	}
}
