package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// A set is one invocation of one bench module's test binary.
type set struct {
	name   string // the prefix of its result keys
	module string // directory under bench/, "" for bench itself
	bench  string // -test.bench
	skip   string // -test.skip: benchmarks another set runs
	// benchtime for a full and a quick run; "" means the run's -benchtime.
	benchtime, quickBenchtime string
	env                       []string
	// rounds caps the number of rounds the set runs in (0: every round).
	rounds int
	// fullOnly sets are left out of a -quick run: too long for a smoke run.
	fullOnly bool
}

// redisKnown are the bench/redis benchmarks that sets name; the last redis
// set runs every other one, so that a benchmark added there is measured
// (and listed under further results) before the report knows it.
const redisKnown = "^Benchmark(RoundTrip|Uncontended|EightKeys|Contended|Interleaved|Paired|Scaling|Redlock|Held100k)$"

// sets are the benchmark sets, in-process first. A set whose module does not
// compile, or whose TestMain skips (no server), is reported as missing.
// Network throughput curves run a fixed count per point so that a sweep of
// 42 points stays bounded.
var sets = []set{
	{name: "mem", bench: "^Benchmark(Uncontended|Contended|EightKeysMem|FileUncontended|Scaling|FileScaling)$"},
	{name: "mem", bench: "^Benchmark(HandOff|HandOffProcesses)$", benchtime: "1x", quickBenchtime: "1x"},
	{name: "mem", bench: "^BenchmarkMemScale$", benchtime: "1x", quickBenchtime: "1x",
		env: []string{"CAESURA_BENCH_SCALE=1"}, rounds: 1},
	{name: "redis", module: "redis", bench: "^Benchmark(RoundTrip|Uncontended|EightKeys)$"},
	{name: "redis", module: "redis", bench: "^Benchmark(Contended|Interleaved|Paired)$", benchtime: "1x", quickBenchtime: "1x"},
	{name: "redis", module: "redis", bench: "^BenchmarkScaling$", benchtime: "1000x", quickBenchtime: "200x"},
	{name: "redis", module: "redis", bench: "^BenchmarkRedlock$"},
	{name: "redis", module: "redis", bench: "^BenchmarkHeld100k$", benchtime: "1x", rounds: 1, fullOnly: true},
	{name: "redis", module: "redis", bench: ".", skip: redisKnown},
	// The same library on Valkey 8.1, where redislock releases by a
	// conditional SET (scripts/install-valkey builds valkey-server).
	{name: "valkey", module: "redis", bench: "^BenchmarkUncontended$", env: []string{"REDISBENCH_SERVER=valkey-server"}},
	{name: "valkey", module: "redis", bench: "^Benchmark(Interleaved|Paired)$", benchtime: "1x", quickBenchtime: "1x",
		env: []string{"REDISBENCH_SERVER=valkey-server"}},
	{name: "pg", module: "pg", bench: "^Benchmark(RoundTrip|Uncontended|EightKeys|CompareUncontended|CompareEightKeys)$"},
	{name: "pg", module: "pg", bench: "^BenchmarkHandOff$", benchtime: "2000x", quickBenchtime: "1000x"},
	{name: "pg", module: "pg", bench: "^BenchmarkScaling$", benchtime: "1000x", quickBenchtime: "200x"},
	{name: "etcd", module: "etcd", bench: "^Benchmark(Floor|Uncontended|EightKeys)$"},
	{name: "etcd", module: "etcd", bench: "^Benchmark(Contended|HandOff)$", benchtime: "400x", quickBenchtime: "150x"},
	{name: "etcd", module: "etcd", bench: "^BenchmarkScaling$", benchtime: "200x", quickBenchtime: "40x"},
}

// runner builds each bench module's test binary once and runs the sets.
type runner struct {
	benchDir  string // .../bench
	rawDir    string // where raw outputs go
	quick     bool
	benchtime string
	log       io.Writer
	binaries  map[string]string // module -> test binary, "" if it did not build
	buildErr  map[string]string // module -> why it did not build
	missing   map[string]string // set name (or "name bench") -> why it is missing
}

func (r *runner) moduleDir(module string) string { return filepath.Join(r.benchDir, module) }

// build compiles the test binary of module, once.
func (r *runner) build(ctx context.Context, module, tmp string) string {
	if bin, ok := r.binaries[module]; ok {
		return bin
	}
	bin := filepath.Join(tmp, strings.NewReplacer("/", "_").Replace("bench_"+module)+".test")
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, ".")
	cmd.Dir = r.moduleDir(module)
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOTOOLCHAIN=local")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	fmt.Fprintf(r.log, "building %s\n", cmd.Dir)
	if err := cmd.Run(); err != nil {
		r.binaries[module] = ""
		r.buildErr[module] = "does not compile: " + firstError(stderr.String())
		fmt.Fprintf(r.log, "  %s\n", r.buildErr[module])
		return ""
	}
	r.binaries[module] = bin
	return bin
}

// runSet runs one set once and returns its output.
func (r *runner) runSet(ctx context.Context, s set, bin string) ([]byte, error) {
	bt := r.benchtime
	if r.quick && s.quickBenchtime != "" {
		bt = s.quickBenchtime
	} else if !r.quick && s.benchtime != "" {
		bt = s.benchtime
	}
	args := []string{"-test.run=^$", "-test.bench=" + s.bench, "-test.benchmem", "-test.benchtime=" + bt,
		"-test.count=1", "-test.timeout=20m"}
	if s.skip != "" {
		args = append(args, "-test.skip="+s.skip)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = r.moduleDir(s.module)
	cmd.Env = append(os.Environ(), s.env...)
	var out, stderr bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &stderr
	t0 := time.Now()
	err := cmd.Run()
	fmt.Fprintf(r.log, "  %-6s %-70s %6.1fs\n", s.name, s.label(), time.Since(t0).Seconds())
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %v: %s", s.name, s.label(), err, lastLines(out.String()+stderr.String(), 5))
	}
	return out.Bytes(), nil
}

// label names s in logs and in the report's list of failed sets.
func (s set) label() string {
	if s.skip != "" {
		return s.bench + " (but " + s.skip + ")"
	}
	return s.bench
}

// firstError returns the first line of go build's output that is not a
// "# package" header.
func firstError(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return l
		}
	}
	return firstLine(out)
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], " | ")
}

// run runs every set rounds times, in a shuffled order within each round
// so that the drift of a shared machine falls on every set alike, appends
// each output to rawDir/<name>.txt and parses it into rs.
func (r *runner) run(ctx context.Context, rounds int, rs *Results) error {
	tmp, err := os.MkdirTemp("", "caesura-report-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(r.rawDir, 0o755); err != nil {
		return err
	}
	raw := map[string]*os.File{}
	for _, s := range sets {
		if raw[s.name] == nil {
			f, err := os.Create(filepath.Join(r.rawDir, s.name+".txt"))
			if err != nil {
				return err
			}
			defer f.Close()
			raw[s.name] = f
		}
		if r.build(ctx, s.module, tmp) == "" {
			r.missing[s.name] = r.buildErr[s.module]
		}
	}
	produced := map[string]bool{}
	for round := 1; round <= rounds; round++ {
		fmt.Fprintf(r.log, "round %d of %d\n", round, rounds)
		for _, i := range rand.Perm(len(sets)) {
			s := sets[i]
			bin := r.binaries[s.module]
			if bin == "" || (s.rounds > 0 && round > s.rounds) || (r.quick && s.fullOnly) {
				continue
			}
			out, err := r.runSet(ctx, s, bin)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				fmt.Fprintf(r.log, "  %v\n", err)
				r.missing[s.name+" "+s.label()] = err.Error()
			}
			if bytes.Contains(out, []byte("\nBenchmark")) || bytes.HasPrefix(out, []byte("Benchmark")) {
				produced[s.name] = true
			} else if msg := firstLine(string(out)); strings.HasPrefix(msg, "SKIP") {
				r.missing[s.name] = msg
			}
			raw[s.name].Write(out)
			if err := rs.Parse(s.name, bytes.NewReader(out), s.name+".txt"); err != nil {
				return err
			}
		}
	}
	for name := range produced {
		delete(r.missing, name)
	}
	return nil
}
