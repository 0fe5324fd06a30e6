package otelcaesura_test

import (
	"context"
	"fmt"
	"log"
	"slices"
	"strings"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
	"github.com/caesura-go/caesura/otelcaesura"
)

// An Observer records a span per run and per yield, and lock metrics. Here
// the SDK keeps them in memory; a service would configure an exporter.
func Example() {
	ctx := context.Background()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(ctx)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)

	obs, err := otelcaesura.New(otelcaesura.WithTracerProvider(tp), otelcaesura.WithMeterProvider(mp))
	if err != nil {
		log.Fatal(err)
	}
	locks := memlock.New(memlock.Options{})
	err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		// lock-free work here
		return yield(locks.Mutex("account:1"), locks.Mutex("account:2"))
	}, caesura.WithObserver(obs))
	if err != nil {
		log.Fatal(err)
	}

	for _, s := range spans.Ended() {
		fmt.Printf("span %s, %d events\n", s.Name(), len(s.Events()))
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		log.Fatal(err)
	}
	metrics := rm.ScopeMetrics[0].Metrics
	slices.SortFunc(metrics, func(a, b metricdata.Metrics) int { return strings.Compare(a.Name, b.Name) })
	for _, m := range metrics {
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			fmt.Printf("%s (%s): %d\n", m.Name, m.Unit, d.DataPoints[0].Value)
		case metricdata.Histogram[float64]:
			fmt.Printf("%s (%s): %d recorded\n", m.Name, m.Unit, d.DataPoints[0].Count)
		}
	}
	// Output:
	// span caesura.yield, 0 events
	// span caesura.scope, 4 events
	// caesura.lock.acquisitions ({acquisition}): 2
	// caesura.lock.hold (s): 2 recorded
	// caesura.lock.wait (s): 1 recorded
}
