// Command report runs caesura's benchmark modules against their peers and
// writes BENCHMARKS.md and SVG charts (issue 8).
//
//	go run ./bench/report            # from the repository root: ~20 minutes on 2 vCPUs
//	go run ./bench/report -quick     # a smoke run of a few minutes
//	go run ./bench/report -from docs/bench/raw   # re-render, run nothing
//	go run ./bench/report -quick -o /tmp/b/BENCHMARKS.md -charts /tmp/b   # leave the committed files alone
//
// It builds the test binary of each benchmark module (bench, bench/redis,
// bench/pg, bench/etcd) and runs it as a subprocess, -rounds times in
// shuffled order, parses the output with golang.org/x/perf/benchfmt, and
// writes the median and spread of every measure, the targets of issue 8
// computed from them, and a chart per throughput curve. A module that does
// not compile, or whose server is missing, is named in the report as not
// measured. Raw outputs go to <charts>/raw, from which -from re-renders the
// report without running anything.
//
// A bench module's results are matched by name: a benchmark that no table
// names is listed under "further results" of its class, and a curve named
// Benchmark<Scaling>/keys=N/workers=W/mech=M gains a row (and a line on its
// chart) for every mechanism M it reports.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

// repoRoot finds the repository root from dir: the directory holding
// bench/report.
func repoRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "bench", "report", "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("run from inside the caesura repository (no bench/report/go.mod above " + dir + ")")
		}
	}
}

func run(args []string, log io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(log)
	quick := fs.Bool("quick", false, "a 1–2 minute smoke run: 2 rounds, short benchmark times")
	rounds := fs.Int("rounds", 5, "rounds: every set runs once per round (the spread is over rounds)")
	benchtime := fs.String("benchtime", "200ms", "-test.benchtime of the time-based sets")
	out := fs.String("o", "", "markdown file (default <repo>/BENCHMARKS.md)")
	charts := fs.String("charts", "", "chart directory (default <repo>/docs/bench)")
	from := fs.String("from", "", "render from the raw outputs in this directory instead of running")
	if err := fs.Parse(args); err != nil {
		return err
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	root, err := repoRoot(wd)
	if err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join(root, "BENCHMARKS.md")
	}
	if *charts == "" {
		*charts = filepath.Join(root, "docs", "bench")
	}
	roundsSet := false
	fs.Visit(func(f *flag.Flag) { roundsSet = roundsSet || f.Name == "rounds" || f.Name == "benchtime" })
	if *quick && !roundsSet {
		*rounds, *benchtime = 2, "20ms"
	}
	cmdline := "go run ./bench/report"
	if len(args) > 0 {
		cmdline += " " + strings.Join(args, " ")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := &Report{Rounds: *rounds, Quick: *quick, Command: cmdline, Results: NewResults(), Missing: map[string]string{}}
	rep.Machine = readMachine(ctx)
	rep.Versions = map[string]string{}
	for _, m := range []string{"", "redis", "pg", "etcd"} {
		maps.Copy(rep.Versions, moduleVersions(ctx, filepath.Join(root, "bench", m)))
	}
	rawDir := filepath.Join(*charts, "raw")
	if *from != "" {
		if err := parseRaw(rep.Results, *from); err != nil {
			return err
		}
		rep.Rounds = rep.Results.MaxN()
		if err := readMeta(rep, filepath.Join(*from, metaFile)); err != nil {
			return err
		}
	} else {
		r := &runner{benchDir: filepath.Join(root, "bench"), rawDir: rawDir, quick: *quick, benchtime: *benchtime, log: log,
			binaries: map[string]string{}, buildErr: map[string]string{}, missing: rep.Missing}
		if err := r.run(ctx, *rounds, rep.Results); err != nil {
			return err
		}
		if err := writeMeta(rep, filepath.Join(rawDir, metaFile)); err != nil {
			return err
		}
	}
	files, err := WriteCharts(rep.Results, *charts)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(*out), *charts)
	if err != nil {
		rel = *charts
	}
	for _, f := range files {
		rep.Charts = append(rep.Charts, filepath.ToSlash(filepath.Join(rel, f)))
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := WriteMarkdown(f, rep); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(log, "wrote %s and %d charts in %s\n", *out, len(files), *charts)
	return nil
}

// parseRaw reads dir/<set>.txt for every set name.
func parseRaw(rs *Results, dir string) error {
	seen := map[string]bool{}
	for _, s := range sets {
		if seen[s.name] {
			continue
		}
		seen[s.name] = true
		f, err := os.Open(filepath.Join(dir, s.name+".txt"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		err = rs.Parse(s.name, f, f.Name())
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// metaFile, beside the raw outputs, keeps what -from cannot read from them:
// the machine and date of the run, its rounds and what was missing.
const metaFile = "meta.json"

type meta struct {
	Machine Machine
	Rounds  int
	Quick   bool
	Command string
	Missing map[string]string
}

func writeMeta(rep *Report, path string) error {
	b, err := json.MarshalIndent(meta{rep.Machine, rep.Rounds, rep.Quick, rep.Command, rep.Missing}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// readMeta fills rep from path, if it exists.
func readMeta(rep *Report, path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	rep.Machine, rep.Rounds, rep.Quick, rep.Command = m.Machine, m.Rounds, m.Quick, m.Command
	if m.Missing != nil {
		rep.Missing = m.Missing
	}
	return nil
}
