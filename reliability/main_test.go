package reliability

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// reportEnv names the file the results table is written to when the run
// ends (RELIABILITY.md at the repository root is generated this way).
const reportEnv = "CAESURA_RELIABILITY_REPORT"

func TestMain(m *testing.M) {
	if spec := os.Getenv(etcdEnv); spec != "" {
		os.Exit(etcdServerMain(spec))
	}
	if spec := os.Getenv(workerEnv); spec != "" {
		redis.SetLogger(quietRedis{})
		os.Exit(workerMain(spec))
	}
	redis.SetLogger(quietRedis{})
	// The backends' tests run in parallel with each other: their workers
	// mostly sleep inside critical sections, so the four of them share two
	// CPUs well. go test runs GOMAXPROCS parallel tests at once unless told
	// (-parallel): four here, unless told.
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		flag.Set("test.parallel", strconv.Itoa(max(runtime.GOMAXPROCS(0), 4)))
	}
	goleak.VerifyTestMain(reporting{m})
}

// reporting runs the tests, then writes the report if asked to.
type reporting struct{ m *testing.M }

func (r reporting) Run() int {
	code := r.m.Run()
	if path := os.Getenv(reportEnv); path != "" {
		results.mu.Lock()
		all := results.all
		results.mu.Unlock()
		if len(all) == 0 {
			fmt.Fprintf(os.Stderr, "%s: no scenario ran, %s not written\n", reportEnv, path)
			return code
		}
		notRun.mu.Lock()
		nr := notRun.all
		notRun.mu.Unlock()
		badResults.mu.Lock()
		bad := badResults.all
		badResults.mu.Unlock()
		if err := os.WriteFile(path, []byte(renderReport(all, nr, bad, code == 0)), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", reportEnv, err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "reliability report written to %s\n", path)
	}
	return code
}
