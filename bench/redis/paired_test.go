package redisbench

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkPaired measures one-key lock + release of caesura (fenced, and
// unfenced: Options.Unfenced), bsm/redislock and redsync turn about, cycle
// by cycle in a shuffled order, so that a slow moment of a shared machine
// (another guest's load shows as steal time) falls on every library alike,
// which rounds of hundreds of cycles (BenchmarkInterleaved) do not ensure.
// It reports each library's p50 and mean per cycle and the ratios of each
// caesura's p50 to each peer's. Run with -benchtime 1x; each op is 3000
// cycles of each library, after a warm-up.
func BenchmarkPaired(b *testing.B) {
	s := startServer(b)
	names := []string{"caesura", "bsm-linear100ms", "redsync-default", "caesura-unfenced"}
	locks := make([]lockFunc, len(names))
	for i, n := range names {
		locks[i] = implNamed(n).make(b, s.client(b, nil), nil)
	}
	paired(b, names, locks)
}

// paired runs locks turn about, cycle by cycle in a shuffled order, each on
// keys of its own, and reports each one's p50 and mean per cycle (metrics
// named name-p50-µs and name-mean-µs) and the ratio of each caesura's p50
// (a name that starts with "caesura") to each peer's (ours/peer-p50). Each
// op is 3000 cycles of each, after a warm-up.
func paired(b *testing.B, names []string, locks []lockFunc) {
	ctx := context.Background()
	cycle := func(j, i int) time.Duration {
		return timeCycle(ctx, b, locks[j], "p"+strconv.Itoa(j)+":"+strconv.Itoa(i%512))
	}
	for i := range 600 { // warm up: connections, scripts, the 512 keys
		for j := range locks {
			cycle(j, i)
		}
	}
	const n = 3000
	for b.Loop() {
		samples := make([][]time.Duration, len(locks))
		order := make([]int, len(locks))
		for j := range order {
			order[j] = j
		}
		for i := range n {
			rand.Shuffle(len(order), func(a, c int) { order[a], order[c] = order[c], order[a] })
			for _, j := range order {
				samples[j] = append(samples[j], cycle(j, i))
			}
		}
		p50 := make([]float64, len(locks))
		for j, name := range names {
			var sum time.Duration
			for _, d := range samples[j] {
				sum += d
			}
			slices.Sort(samples[j])
			p50[j] = float64(samples[j][n/2].Nanoseconds()) / 1000
			b.ReportMetric(p50[j], name+"-p50-µs")
			b.ReportMetric(float64(sum.Nanoseconds())/1000/n, name+"-mean-µs")
		}
		for i, ours := range names {
			for j, peer := range names {
				if strings.HasPrefix(ours, "caesura") && !strings.HasPrefix(peer, "caesura") {
					b.ReportMetric(p50[i]/p50[j], ours+"/"+peer+"-p50")
				}
			}
		}
	}
}
