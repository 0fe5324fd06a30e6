package main

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// Stat summarises one metric of one benchmark over the repeats.
type Stat struct {
	Median, Min, Max float64
	N                int
}

// Results are the parsed benchmark outputs: for each benchmark key
// ("set:Name/sub", without "Benchmark" and the GOMAXPROCS suffix) and unit,
// the value of every repeat.
type Results struct {
	vals  map[string]map[string][]float64
	order []string // keys in first-seen order
}

// NewResults returns an empty Results.
func NewResults() *Results {
	return &Results{vals: map[string]map[string][]float64{}}
}

// benchKey turns a benchfmt name into "prefix:Name/sub".
func benchKey(prefix string, n benchfmt.Name) string {
	base, parts := n.Parts()
	var b strings.Builder
	b.WriteString(prefix)
	b.WriteByte(':')
	b.Write(bytes.TrimPrefix(base, []byte("Benchmark")))
	for _, p := range parts {
		if len(p) > 0 && p[0] == '-' { // GOMAXPROCS
			continue
		}
		b.Write(p)
	}
	return b.String()
}

// Parse reads `go test -bench` output (plain text; the lines of a -json run
// must be decoded first) and adds every result under prefix. Values are kept
// in the units the benchmark printed (ns/op stays ns/op).
func (rs *Results) Parse(prefix string, r io.Reader, fileName string) error {
	br := benchfmt.NewReader(r, fileName)
	for br.Scan() {
		switch rec := br.Result().(type) {
		case *benchfmt.SyntaxError:
			// Log lines of failed benchmarks, truncated output: skip the line.
			continue
		case *benchfmt.Result:
			key := benchKey(prefix, rec.Name)
			m := rs.vals[key]
			if m == nil {
				m = map[string][]float64{}
				rs.vals[key] = m
				rs.order = append(rs.order, key)
			}
			for _, v := range rec.Values {
				unit, val := v.Unit, v.Value
				if v.OrigUnit != "" {
					unit, val = v.OrigUnit, v.OrigValue
				}
				m[unit] = append(m[unit], val)
			}
		}
	}
	return br.Err()
}

// Get returns the statistics of one metric, and whether it was measured.
func (rs *Results) Get(key, unit string) (Stat, bool) {
	vs := rs.vals[key][unit]
	if len(vs) == 0 {
		return Stat{}, false
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: med, Min: s[0], Max: s[len(s)-1], N: len(s)}, true
}

// Has reports whether key has any result.
func (rs *Results) Has(key string) bool { return len(rs.vals[key]) > 0 }

// Keys returns the benchmark keys in the order first seen.
func (rs *Results) Keys() []string { return slices.Clone(rs.order) }

// Units returns the units measured for key, sorted.
func (rs *Results) Units(key string) []string {
	var us []string
	for u := range rs.vals[key] {
		us = append(us, u)
	}
	slices.Sort(us)
	return us
}

// String formats s as "median (min–max)" with f formatting one number.
func (s Stat) String() string { return s.Format(fmtNum) }

// Format formats s with f.
func (s Stat) Format(f func(float64) string) string {
	if s.N <= 1 || f(s.Min) == f(s.Max) {
		return f(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.Median), f(s.Min), f(s.Max))
}

// fmtNum prints three significant digits, no exponent.
func fmtNum(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a == 0:
		return "0"
	case a >= 1e9:
		return strconv.FormatFloat(v/1e9, 'g', 3, 64) + "G"
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 3, 64) + "M"
	case a >= 1e5:
		return fmt.Sprintf("%.0fk", v/1e3)
	case a >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	case a >= 0.01:
		return fmt.Sprintf("%.3f", v)
	default:
		return fmt.Sprintf("%.2g", v)
	}
}

// MaxN returns the largest number of repeats of any measure.
func (rs *Results) MaxN() int {
	n := 0
	for _, m := range rs.vals {
		for _, vs := range m {
			n = max(n, len(vs))
		}
	}
	return n
}
