package main

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixture parses testdata: a small, fixed output of every bench module.
func fixture(t *testing.T) *Results {
	t.Helper()
	rs := NewResults()
	if err := parseRaw(rs, "testdata"); err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestParse(t *testing.T) {
	rs := NewResults()
	in := `goos: linux
BenchmarkUncontended/memlock-2   	 1000	 30.0 ns/op	 48 B/op	 1 allocs/op
BenchmarkUncontended/memlock-2   	 1000	 10.0 ns/op	 48 B/op	 1 allocs/op
BenchmarkUncontended/memlock-2   	 1000	 20.0 ns/op	 48 B/op	 1 allocs/op
--- BENCH: BenchmarkHandOff/mech=chan-2
    handoff_test.go:305: per worker 238-256
BenchmarkHandOff/mech=chan-2   	 1	 246319649 ns/op	 21.04 handoff-other-p50-µs	 1.000 fifo-frac
BenchmarkScaling/keys=1000/workers=64/mech=sync.Mutex-2 	 1	 115138 ns/op	 8685 acq/s
BenchmarkNoProcs	 5	 7 ns/op
PASS
`
	if err := rs.Parse("mem", strings.NewReader(in), "in"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key, unit string
		want      Stat
	}{
		{"mem:Uncontended/memlock", "ns/op", Stat{Median: 20, Min: 10, Max: 30, N: 3}},
		{"mem:Uncontended/memlock", "allocs/op", Stat{Median: 1, Min: 1, Max: 1, N: 3}},
		{"mem:HandOff/mech=chan", "handoff-other-p50-µs", Stat{Median: 21.04, Min: 21.04, Max: 21.04, N: 1}},
		{"mem:Scaling/keys=1000/workers=64/mech=sync.Mutex", "acq/s", Stat{Median: 8685, Min: 8685, Max: 8685, N: 1}},
		{"mem:NoProcs", "ns/op", Stat{Median: 7, Min: 7, Max: 7, N: 1}},
	} {
		got, ok := rs.Get(tc.key, tc.unit)
		if !ok || got != tc.want {
			t.Errorf("Get(%q, %q) = %+v, %v; want %+v", tc.key, tc.unit, got, ok, tc.want)
		}
	}
	if _, ok := rs.Get("mem:Uncontended/memlock", "sec/op"); ok {
		t.Error("got a tidied sec/op unit, want the printed ns/op only")
	}
	if got, want := rs.Keys(), []string{"mem:Uncontended/memlock", "mem:HandOff/mech=chan", "mem:Scaling/keys=1000/workers=64/mech=sync.Mutex", "mem:NoProcs"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Keys() = %v, want %v", got, want)
	}
}

func TestStat(t *testing.T) {
	rs := NewResults()
	rs.Parse("x", strings.NewReader("BenchmarkA-2 1 4 ns/op\nBenchmarkA-2 1 1 ns/op\nBenchmarkA-2 1 2 ns/op\nBenchmarkA-2 1 3 ns/op\n"), "x")
	s, _ := rs.Get("x:A", "ns/op")
	if s.Median != 2.5 || s.Min != 1 || s.Max != 4 {
		t.Errorf("got %+v, want median 2.5 of 1..4", s)
	}
	for _, tc := range []struct {
		s    Stat
		want string
	}{
		{Stat{Median: 2.5, Min: 1, Max: 4, N: 4}, "2.50 (1–4)"},
		{Stat{Median: 1.18e6, Min: 2.5e5, Max: 3.4e7, N: 3}, "1.18M (250k–34M)"},
		{Stat{Median: 1234.4, Min: 1234.4, Max: 1234.4, N: 1}, "1234"},
		{Stat{Median: 0.5, Min: 0.5, Max: 0.5, N: 3}, "0.500"},
		{Stat{Median: 0.0005, Min: 0.0001, Max: 0.0009, N: 3}, "0.0005 (0.0001–0.0009)"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.s, got, tc.want)
		}
	}
}

func TestFirstError(t *testing.T) {
	out := "# github.com/caesura-go/caesura/pglock\n../../pglock/pglock.go:12:2: undefined: x\n"
	if got, want := firstError(out), "../../pglock/pglock.go:12:2: undefined: x"; got != want {
		t.Errorf("firstError = %q, want %q", got, want)
	}
}

func TestSysinfo(t *testing.T) {
	if got, want := cpuModel([]byte("processor\t: 0\nmodel name\t: AMD  EPYC 7B13\nflags\t: x\n")), "AMD EPYC 7B13"; got != want {
		t.Errorf("cpuModel = %q, want %q", got, want)
	}
	vs := parseListM("github.com/caesura-go/caesura/bench/redis\ngithub.com/bsm/redislock v0.9.4\ngolang.org/x/sync v0.25.0 => ../sync\nexample.com/other v1.0.0\n")
	if vs["github.com/bsm/redislock"] != "v0.9.4" || vs["golang.org/x/sync"] != "v0.25.0" || len(vs) != 2 {
		t.Errorf("parseListM = %v, want bsm v0.9.4 and x/sync v0.25.0 only", vs)
	}
}

// mdTables splits markdown into its "#### " tables: title -> data rows, in
// order.
type mdTable struct {
	title string
	rows  [][]string
}

func mdTables(t *testing.T, md string) []mdTable {
	var out []mdTable
	sc := bufio.NewScanner(strings.NewReader(md))
	var cur *mdTable
	header := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#### "):
			out = append(out, mdTable{title: strings.TrimPrefix(line, "#### ")})
			cur, header = &out[len(out)-1], false
		case cur != nil && strings.HasPrefix(line, "|"):
			if !header {
				header = true // the header; the next line is the separator
				continue
			}
			if strings.HasPrefix(line, "|---") {
				continue
			}
			cells := strings.Split(strings.Trim(line, "|"), " | ")
			cur.rows = append(cur.rows, cells)
		case strings.HasPrefix(line, "## ") || strings.HasPrefix(line, "### "):
			cur = nil
		}
	}
	return out
}

func testReport(rs *Results) *Report {
	return &Report{
		Machine:  Machine{CPU: "Test CPU", Cores: 2, Kernel: "Linux 6.18", Go: "go1.26.8", Load: "1.00 2.00 3.00", Date: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC), Servers: map[string]string{"redis-server": "Redis server v=7.0.15"}},
		Versions: map[string]string{"github.com/bsm/redislock": "v0.9.4"},
		Rounds:   3,
		Command:  "go run ./bench/report",
		Missing:  map[string]string{"etcd ^BenchmarkContended$": "timed out"},
		Charts:   []string{"docs/bench/handoff.svg"},
		Results:  rs,
	}
}

func TestMarkdown(t *testing.T) {
	rs := fixture(t)
	var buf bytes.Buffer
	if err := WriteMarkdown(&buf, testReport(rs)); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, want := range []string{
		"| CPU | Test CPU |", "| cores | 2 |", "| kernel | Linux 6.18 |", "| Go | go1.26.8 |",
		"| github.com/bsm/redislock | v0.9.4 |", "| redis-server | Redis server v=7.0.15 |",
		"median (min–max) over 3 rounds", "shared 2-vCPU VM", "will be regenerated",
		"## Targets of issue 8", "- `etcd ^BenchmarkContended$`: timed out", "![handoff](docs/bench/handoff.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	got := mdTables(t, md)
	// Every table of the report, in order, with one line per row; the
	// fixture's uncovered benchmark comes as a further result.
	ts := reportTables(rs)
	i := 0
	for _, class := range classes {
		for _, tb := range ts {
			if tb.Class != class {
				continue
			}
			for i < len(got) && got[i].title != tb.Title {
				i++
			}
			if i == len(got) {
				t.Fatalf("table %q of %s missing", tb.Title, class)
			}
			if len(got[i].rows) != len(tb.Rows) {
				t.Errorf("table %q: got %d rows, want %d", tb.Title, len(got[i].rows), len(tb.Rows))
			}
			for j, r := range got[i].rows {
				if j < len(tb.Rows) && (!strings.Contains(r[0], tb.Rows[j].Label) || len(r) != len(tb.Cols)+2) {
					t.Errorf("table %q row %d = %q, want %q with %d cells", tb.Title, j, r, tb.Rows[j].Label, len(tb.Cols)+2)
				}
				if last := r[len(r)-1]; !strings.HasSuffix(strings.TrimSpace(last), ".") {
					t.Errorf("table %q row %d: why %q is not a sentence", tb.Title, j, last)
				}
			}
			i++
		}
	}
	// Rows the fixture measures show median (min–max).
	for _, want := range []string{
		"| **memlock Acquire/Release** | 20 (18–25) | 48 | 1 |",
		"| sync.Mutex | 4 (3–5) | 0 | 0 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks row %q", want)
		}
	}
	if !strings.Contains(md, "| pg:NewThing/impl=x |") {
		t.Error("an uncovered benchmark is not listed under further results")
	}
	// Targets: the fixture has caesura first on uncontended in-process? No:
	// sync.Mutex is faster, so that verdict is "not met".
	if !strings.Contains(md, "| In-process | Uncontended acquire + release, one goroutine: ns/op |") {
		t.Error("target 1 lacks the in-process uncontended row")
	}
	if !strings.Contains(md, "| Redis (redislock, 8 goroutines) | 90 (80–100) µs | 60 µs (PING, mean) | 1.50x | **met** |") {
		t.Error("target 2 Redis row missing or wrong")
	}
	if !strings.Contains(md, "| PostgreSQL | 210k ns/op | 200k ns/op | +5.0% | not met |") {
		t.Error("target 3 PostgreSQL row missing or wrong")
	}
	for _, want := range []string{
		// Target 2 takes etcd's hand-off with a hold when there is one.
		"| etcd (etcdlock, 100 µs hold) | 1000 µs | 500 µs (linearizable Get p50) | 2.00x | **met** |",
		// Target 3 compares throughput: 4000 acq/s alone, 3900 through Run.
		"| etcd (throughput, 8 workers, 1,000 keys) | 3900 acq/s | 4000 acq/s | +2.6% | **met** |",
		"1. **caesura first or tied in every row of its class**: met in ",
		"2. **Hand-off within 2x of one loopback round trip** (Redis, PostgreSQL, etcd): met in 2 of 3 (67%).",
		// An optional row with a result is shown; without one it is not.
		"| rueidislock (KeyMajority 1, NoLoopTracking: its one-server setting) | 150 |",
		// A mechanism the spec does not name gets a row of its curve.
		"| newpeer | — | — | — | 2000 |",
		// The file class ranks gofrs/flock, not the bare system call.
		"| gofrs/flock Lock/Unlock (no setting changes its speed) | 3100 | 168 | 3 |",
		"| concurrency.Mutex | a session per worker (TTL 10 s) | defaults: it has no option",
		// The file hand-off across processes, with the share columns.
		"| **filelock (a Locker per process)** | 24.1 | 1697 | 0.817 | 0.037 | 4926 | 49.8 | 0.656 | 1.35 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	for _, absent := range []string{"redsync v4 (best tuning", "rueidislock (Redis): no result", "Throughput against workers (1–64) on Redis",
		"File hand-off across processes"} {
		if strings.Contains(md, absent) {
			t.Errorf("markdown has %q", absent)
		}
	}
	// A reference row is marked and never the best peer.
	if !strings.Contains(md, "| flock(2) on a kept descriptor (no library) † |") {
		t.Error("reference row not marked")
	}
}

func TestTargetsSkipReferences(t *testing.T) {
	rs := NewResults()
	rs.Parse("mem", strings.NewReader(`BenchmarkFileUncontended/impl=filelock-2 1 3000 ns/op
BenchmarkFileUncontended/impl=gofrs-flock-2 1 3100 ns/op
BenchmarkFileUncontended/impl=flock-fd-2 1 500 ns/op
`), "x")
	var buf bytes.Buffer
	writeTargets(&buf, rs, reportTables(rs))
	want := "| File (processes of one host) | Uncontended acquire + release, one goroutine: ns/op | 3000 (filelock Acquire/Release) | 3100 (gofrs/flock Lock/Unlock (no setting changes its speed)) | **first** |"
	if !strings.Contains(buf.String(), want) {
		t.Errorf("targets lack %q:\n%s", want, buf.String())
	}
}

func TestReportTables(t *testing.T) {
	// Nothing measured: the optional-only tables (Redis curves) are left
	// out, every other table stays with its fixed rows.
	ts := reportTables(NewResults())
	for _, tb := range ts {
		if tb.Curve != nil && tb.Curve.Set == "redis" {
			t.Errorf("Redis curve %q shown with no result", tb.Title)
		}
		for _, r := range tb.Rows {
			if r.Optional {
				t.Errorf("table %q: optional row %q shown with no result", tb.Title, r.Label)
			}
		}
	}
	// Every curve has its own chart file.
	seen := map[string]bool{}
	for _, tb := range tables {
		if tb.Curve == nil {
			continue
		}
		if seen[tb.Curve.Chart] {
			t.Errorf("chart %s used twice", tb.Curve.Chart)
		}
		seen[tb.Curve.Chart] = true
	}
}

func TestBusy(t *testing.T) {
	for _, tc := range []struct {
		load  string
		cores int
		want  bool
	}{
		{"6.15 7.41 7.09", 2, true},
		{"1.00 2.00 3.00", 2, true},
		{"0.31 0.30 0.16", 2, false},
		{"", 2, false},
	} {
		if got := busy(Machine{Load: tc.load, Cores: tc.cores}); got != tc.want {
			t.Errorf("busy(%q, %d cores) = %v, want %v", tc.load, tc.cores, got, tc.want)
		}
	}
}

// validSVG decodes the whole file with encoding/xml and checks the root.
func validSVG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := xml.NewDecoder(f)
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: not valid XML: %v", path, err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Errorf("%s: root element %q, want svg", path, root)
	}
}

func TestCharts(t *testing.T) {
	rs := fixture(t)
	dir := t.TempDir()
	files, err := WriteCharts(rs, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(files, ","), "scaling-1key.svg,scaling-1000keys.svg,file-scaling-1key.svg,file-scaling-1000keys.svg,"+
		"redis-scaling-1key.svg,pg-scaling-1key.svg,pg-scaling-1000keys.svg,etcd-scaling-1key.svg,etcd-scaling-1000keys.svg,handoff.svg,uncontended.svg"; got != want {
		t.Fatalf("charts %s, want %s", got, want)
	}
	for _, f := range files {
		validSVG(t, filepath.Join(dir, f))
	}
	b, _ := os.ReadFile(filepath.Join(dir, "pg-scaling-1key.svg"))
	for _, want := range []string{"PostgreSQL throughput, one key", "* pglock Acquire/Release", "bare pg_advisory_lock"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("pg-scaling-1key.svg lacks %q", want)
		}
	}
	b, _ = os.ReadFile(filepath.Join(dir, "handoff.svg"))
	for _, want := range []string{"redislock, 8 goroutines", "memlock Acquire/Release", "p99"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("handoff.svg lacks %q", want)
		}
	}
	// Nothing measured: no chart, no error.
	files, err = WriteCharts(NewResults(), t.TempDir())
	if err != nil || len(files) != 0 {
		t.Errorf("WriteCharts(empty) = %v, %v; want none, nil", files, err)
	}
}

func TestHandoffPoints(t *testing.T) {
	pts := handoffPoints(fixture(t))
	byLabel := map[string]handoffPoint{}
	for _, p := range pts {
		byLabel[p.label] = p
	}
	// etcd reports ms: the chart is in µs. The harness without a hold is
	// left out (NoChart), so etcdlock comes once, from the 100 µs hold.
	if p, ok := byLabel["etcd: etcdlock"]; !ok || p.p50 != 1000 || p.p99 != 5000 {
		t.Errorf("etcd point = %+v, %v; want p50 1000 µs, p99 5000 µs", p, ok)
	}
	n := 0
	for _, p := range pts {
		if p.label == "etcd: etcdlock" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("got %d etcdlock points, want 1", n)
	}
	if p := byLabel["In-process: memlock Acquire/Release"]; !p.caesura || p.p50 != 20 {
		t.Errorf("memlock point = %+v, want caesura, p50 20", p)
	}
}

func TestRepoRoot(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "bench", "report"), 0o755)
	os.WriteFile(filepath.Join(dir, "bench", "report", "go.mod"), []byte("module x\n"), 0o644)
	sub := filepath.Join(dir, "bench", "report", "sub")
	os.MkdirAll(sub, 0o755)
	if got, err := repoRoot(sub); err != nil || got != dir {
		t.Errorf("repoRoot = %q, %v; want %q", got, err, dir)
	}
	if _, err := repoRoot(t.TempDir()); err == nil {
		t.Error("repoRoot outside a repository: got no error")
	}
}

func TestUncontendedPoints(t *testing.T) {
	byLabel := map[string]dotRow{}
	for _, r := range uncontendedPoints(fixture(t)) {
		byLabel[r.label] = r
	}
	// ns/op and µs tables both come out in µs.
	if r := byLabel["In-process: memlock Acquire/Release"]; len(r.vals) != 3 || r.vals[0] != 0.02 || !r.caesura {
		t.Errorf("memlock = %+v, want median 0.02 µs, caesura", r)
	}
	if r := byLabel["PostgreSQL: bare pg_advisory_lock/unlock, pinned connection (best case)"]; len(r.vals) != 3 || r.vals[0] != 180 || r.caesura {
		t.Errorf("pg bare = %+v, want median 180 µs, not caesura", r)
	}
}

func TestMeta(t *testing.T) {
	path := filepath.Join(t.TempDir(), metaFile)
	want := testReport(NewResults())
	if err := writeMeta(want, path); err != nil {
		t.Fatal(err)
	}
	got := &Report{}
	if err := readMeta(got, path); err != nil {
		t.Fatal(err)
	}
	if got.Machine.CPU != want.Machine.CPU || !got.Machine.Date.Equal(want.Machine.Date) || got.Rounds != 3 ||
		got.Command != want.Command || got.Missing["etcd ^BenchmarkContended$"] != "timed out" {
		t.Errorf("readMeta = %+v, want %+v", got, want)
	}
	if err := readMeta(&Report{}, filepath.Join(t.TempDir(), "none.json")); err != nil {
		t.Errorf("readMeta of a missing file: %v, want nil", err)
	}
}

// TestCommittedLinks: every chart the committed BENCHMARKS.md shows is
// where the link says, relative to the file (a report written elsewhere
// and copied in links its charts relative to where it was written).
func TestCommittedLinks(t *testing.T) {
	const md = "../../BENCHMARKS.md"
	b, err := os.ReadFile(md)
	if err != nil {
		t.Skip(err)
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		_, rest, ok := strings.Cut(line, "](")
		if !ok || !strings.HasPrefix(line, "![") {
			continue
		}
		link, _, _ := strings.Cut(rest, ")")
		n++
		if _, err := os.Stat(filepath.Join(filepath.Dir(md), link)); err != nil {
			t.Errorf("BENCHMARKS.md shows %s: %v", link, err)
		}
	}
	if n == 0 {
		t.Error("BENCHMARKS.md shows no chart")
	}
}
