package redisbench

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkCPU measures where the time of an uncontended lock + release
// goes: the CPU time the redis-server process spent per cycle (user and
// system, from /proc: 10ms ticks, so run at least 20000x) and the client's
// own. On a VM most of the server's part is the kernel's network work for
// the two round trips, not the commands. Linux only.
func BenchmarkCPU(b *testing.B) {
	for _, im := range implsNamed("caesura", "bsm-linear100ms", "redsync-default") {
		b.Run(im.name, func(b *testing.B) {
			s := startServer(b)
			c := s.client(b, nil)
			ctx := context.Background()
			pid, err := serverPID(ctx, b, s)
			if err != nil {
				b.Skip(err)
			}
			lock := im.make(b, c, nil)
			cycle := func(i int) {
				unlock, err := lock(ctx, "cpu"+strconv.Itoa(i%512))
				if err != nil {
					b.Fatal(err)
				}
				if err := unlock(ctx); err != nil {
					b.Fatal(err)
				}
			}
			for i := range 1024 { // load the scripts, create every key
				cycle(i)
			}
			s0, c0 := procCPU(b, pid), selfCPU()
			b.ResetTimer()
			for i := range b.N {
				cycle(i)
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(float64((procCPU(b, pid)-s0).Microseconds())/n, "server-cpu-µs/op")
			b.ReportMetric(float64((selfCPU()-c0).Microseconds())/n, "client-cpu-µs/op")
		})
	}
}

// serverPID returns the process id of s's redis-server (INFO server).
func serverPID(ctx context.Context, tb testing.TB, s *server) (int, error) {
	c := s.client(tb, nil)
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, os.ErrNotExist
}

// procCPU returns the user and system CPU time of process pid.
func procCPU(tb testing.TB, pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		tb.Skip(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// selfCPU returns this process's user and system CPU time.
func selfCPU() time.Duration {
	var r syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r)
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}
