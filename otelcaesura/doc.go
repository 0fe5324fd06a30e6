// Package otelcaesura records caesura's lock waits, holds, refusals, restarts
// and losses as OpenTelemetry traces and metrics.
//
//	obs, err := otelcaesura.New() // the global TracerProvider and MeterProvider
//	if err != nil {
//		return err
//	}
//	err = caesura.Run(ctx, fn, caesura.WithObserver(obs))
//
// It uses the OpenTelemetry API only: the program chooses the SDK, the
// sampler and the exporters, and without an SDK every call is a no-op. Pass
// providers with [WithTracerProvider] and [WithMeterProvider] to use others
// than the global ones. One Observer serves any number of concurrent scopes.
//
// # Traces
//
// Every run of a function gets a span named caesura.scope (the constant
// [SpanScope]), a child of the span in the context given to [caesura.Run] or
// to the serialized function. A run that is restarted ([caesura.WithRestart])
// ends its span and the next attempt starts a sibling span, so a restarted
// call shows as several caesura.scope spans under one parent. Attributes:
//
//	caesura.attempt  int     the run's attempt, from 1
//	caesura.name     string  the name given with caesura.WithName, if any
//
// The function runs with the scope span in its context, so spans it starts
// (and the scope spans of nested Runs) are children of caesura.scope.
//
// When a run ends with an error, its span's status is Error with the error's
// text, and the error is recorded as an exception event. On a restart that
// error is the refusal that caused it.
//
// Every yield gets a child span of its scope's span named caesura.yield
// ([SpanYield]), from the start of the yield to its end:
//
//	caesura.keys     string[]  the yield's keys, sorted, without duplicates
//	caesura.backend  string    the namespace of the first key ("mem", "redis", ...)
//	caesura.wait     float64   seconds the yield took
//	caesura.outcome  string    "ok"; "refused" (out of order, see caesura's
//	                           ErrOutOfOrder); or "error" (anything else:
//	                           a cancelled wait, a backend failure)
//
// A failed yield's span has status Error with the error's text. A yield span
// is recorded only when its scope span is: an unsampled scope costs no yield
// spans.
//
// What happens to locks is recorded as events on the scope span, each with
// caesura.key and caesura.backend:
//
//	caesura.acquired  caesura.token (int, when the backend issues fencing
//	                  tokens), caesura.wait (seconds since the yield began)
//	caesura.refused   caesura.held (the highest held key), caesura.error
//	caesura.lost      caesura.error (the cause, such as an expired lease)
//	caesura.released  caesura.hold (seconds the lock was held), caesura.error
//	                  (only when the release failed)
//	caesura.restart   caesura.error (the refusal); no key, and the
//	                  backend is the refused key's
//
// A loss is reported from the backend's goroutine, possibly while the
// function still runs; a loss reported after its scope ended is counted in
// caesura.lock.losses but not added to the ended span.
//
// # Metrics
//
// Durations are in seconds (unit "s"), in histograms with bucket boundaries
// from 100µs to 60s (advice only: an SDK view may replace them). Counters
// count events (units "{acquisition}", "{restart}", ...). The names are the
// Metric constants:
//
//	caesura.lock.wait          histogram  per yield: the time the yield took,
//	                                      attributes caesura.backend and
//	                                      caesura.outcome; a yield whose keys
//	                                      were all held already is recorded
//	                                      too, with a wait near zero
//	caesura.lock.hold          histogram  per released lock: acquisition to
//	                                      release
//	caesura.lock.acquisitions  counter    locks acquired
//	caesura.lock.contended     counter    acquisitions that waited at least the
//	                                      contention threshold (below)
//	caesura.scope.restarts     counter    runs restarted after a refusal; the
//	                                      backend is the refused key's
//	caesura.lock.refusals      counter    out-of-order acquisitions refused
//	caesura.lock.losses        counter    locks lost while held
//
// Measurements are made with the scope span's context, so an SDK that keeps
// exemplars (the Go SDK does, for sampled traces, by default) links a slow
// wait or a long hold to its trace.
//
// Contention: caesura does not know whether a backend made it wait, only how
// long the acquisition took. An acquisition's own wait is the time from the
// previous acquisition of the same yield (or from the yield's start, for the
// first key) to its own; it is contended when that is at least the threshold,
// [DefaultContentionThreshold] (10ms) unless [WithContentionThreshold] says
// otherwise. Set the threshold above the backend's normal round trip. Keys
// that a backend acquires in one batch count their shared wait once, on the
// first key of the batch.
//
// # Cardinality
//
// Metrics carry caesura.backend (and, for caesura.lock.wait,
// caesura.outcome), never a key. Keys usually name the thing being locked
// (an account, an order, a job), so a key attribute would make one time
// series per entity: unbounded memory in the SDK and cost in the metrics
// backend, for a view no dashboard can aggregate. The backend is one of a
// handful of values; as it is the text before a key's first ':', keys made
// with caesura.FromLocker or FromFuncs choose it, so one Observer records at
// most [MaxBackends] distinct values and reports the rest as [OtherBackend].
// Traces carry the keys, because a span is one event, not
// a series: to find which key was slow or lost, look for caesura.yield spans
// with a long caesura.wait, or for caesura.lost events. If keys contain
// personal data, drop caesura.keys and caesura.key in the SDK or the
// collector.
package otelcaesura
