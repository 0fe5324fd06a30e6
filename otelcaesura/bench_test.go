package otelcaesura_test

import (
	"context"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
	"github.com/caesura-go/caesura/otelcaesura"
)

// discard is a span processor that drops ended spans, so that the SDK
// benchmark measures recording, not exporting.
type discard struct{}

func (discard) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discard) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discard) Shutdown(context.Context) error                  { return nil }
func (discard) ForceFlush(context.Context) error                { return nil }

// emptyObserver does nothing: it measures what observing costs the core.
type emptyObserver struct{}

func (emptyObserver) StartScope(ctx context.Context, _ caesura.ScopeInfo) (context.Context, caesura.ScopeObserver) {
	return ctx, emptyObserver{}
}
func (emptyObserver) Event(caesura.Event) {}
func (emptyObserver) End(error)           {}

// BenchmarkRun is the cost of one uncontended Run that yields one memlock
// lock: without an observer, with an observer that does nothing, with the adapter on no-op providers (the
// global default), and with the SDK sampling every trace or none.
func BenchmarkRun(b *testing.B) {
	ctx := context.Background()
	newObs := func(b *testing.B, opts ...otelcaesura.Option) []caesura.Option {
		o, err := otelcaesura.New(opts...)
		if err != nil {
			b.Fatal(err)
		}
		return []caesura.Option{caesura.WithObserver(o)}
	}
	sdk := func(b *testing.B, sampler sdktrace.Sampler) []caesura.Option {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithSpanProcessor(discard{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { _ = tp.Shutdown(ctx); _ = mp.Shutdown(ctx) })
		return newObs(b, otelcaesura.WithTracerProvider(tp), otelcaesura.WithMeterProvider(mp))
	}
	for _, bc := range []struct {
		name string
		opts func(*testing.B) []caesura.Option
	}{
		{"none", func(*testing.B) []caesura.Option { return nil }},
		{"empty-observer", func(*testing.B) []caesura.Option { return []caesura.Option{caesura.WithObserver(emptyObserver{})} }},
		{"otel-noop", func(b *testing.B) []caesura.Option {
			return newObs(b, otelcaesura.WithTracerProvider(tracenoop.NewTracerProvider()),
				otelcaesura.WithMeterProvider(metricnoop.NewMeterProvider()))
		}},
		{"otel-sdk-unsampled", func(b *testing.B) []caesura.Option { return sdk(b, sdktrace.NeverSample()) }},
		{"otel-sdk-sampled", func(b *testing.B) []caesura.Option { return sdk(b, sdktrace.AlwaysSample()) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			opts := bc.opts(b)
			lock := memlock.New(memlock.Options{}).Mutex("a")
			fn := func(ctx context.Context, yield caesura.Yield) error { return yield(lock) }
			b.ReportAllocs()
			for b.Loop() {
				if err := caesura.Run(ctx, fn, opts...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
