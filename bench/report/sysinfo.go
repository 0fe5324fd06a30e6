package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Machine describes where the benchmarks ran.
type Machine struct {
	CPU     string
	Cores   int
	Kernel  string
	Go      string
	Load    string // /proc/loadavg at the start
	Date    time.Time
	Servers map[string]string // server name -> version line
}

func readMachine(ctx context.Context) Machine {
	m := Machine{CPU: "unknown", Cores: runtime.NumCPU(), Kernel: "unknown", Date: time.Now().UTC(), Servers: map[string]string{}}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU = cpuModel(b)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.Load = strings.Join(f[:3], " ")
		}
	}
	m.Go = firstLine(command(ctx, "", "go", "env", "GOVERSION"))
	for name, args := range map[string][]string{
		"redis-server": {"redis-server", "--version"},
		"PostgreSQL":   {"postgres", "--version"},
	} {
		if v := firstLine(command(ctx, "", args[0], args[1:]...)); v != "" {
			m.Servers[name] = v
		}
	}
	return m
}

// cpuModel returns the first "model name" of a /proc/cpuinfo.
func cpuModel(cpuinfo []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "unknown"
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// command runs name in dir and returns its standard output ("" on error).
func command(ctx context.Context, dir, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOTOOLCHAIN=local")
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// peerModules are the modules whose versions the report names.
var peerModules = []string{
	"golang.org/x/sync",
	"github.com/go-redsync/redsync/v4",
	"github.com/bsm/redislock",
	"github.com/redis/go-redis/v9",
	"github.com/redis/rueidis",
	"github.com/gofrs/flock",
	"github.com/jackc/pgx/v5",
	"go.etcd.io/etcd/client/v3",
	"go.etcd.io/etcd/server/v3",
}

// moduleVersions runs `go list -m` in dir and returns path -> version for
// the peer modules it requires.
func moduleVersions(ctx context.Context, dir string) map[string]string {
	return parseListM(command(ctx, dir, "go", "list", "-m", "all"))
}

func parseListM(out string) map[string]string {
	vs := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			for _, p := range peerModules {
				if f[0] == p {
					vs[p] = f[1]
				}
			}
		}
	}
	return vs
}
