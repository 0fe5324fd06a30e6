package memlock_test

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

// Entries are counted with atomics and reused across keys, and a shared Lock
// value remembers the entry it saw last. This stresses exactly that: more
// keys of one shard (so entries move between keys), Lock values
// shared by goroutines next to fresh ones, waits cut short by deadlines. No
// two holders of a key may overlap, and at the end no entry may be left.
func TestEntriesReusedAcrossKeys(t *testing.T) {
	ctx := context.Background()
	l := memlock.New(memlock.Options{})
	const keys = 6
	names := l.SameShard(keys)
	shared := make([]caesura.Lock, keys)
	inside := make([]atomic.Int32, keys)
	for i := range shared {
		shared[i] = l.Mutex(names[i])
	}
	var overlaps, acquired atomic.Int64
	deadline := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				k := (i*7 + g*13) % keys
				if g%2 == 0 {
					k %= 2 // half the goroutines crowd two keys
				}
				lock := shared[k]
				if i%3 == 0 {
					lock = l.Mutex(names[k])
				}
				actx, cancel := context.WithTimeout(ctx, time.Duration(i%5)*100*time.Microsecond)
				h, err := lock.Acquire(actx)
				cancel()
				if err != nil {
					continue
				}
				acquired.Add(1)
				if inside[k].Add(1) != 1 {
					overlaps.Add(1)
				}
				runtime.Gosched() // widen the critical section
				inside[k].Add(-1)
				if err := h.Release(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if overlaps.Load() != 0 {
		t.Fatalf("%d overlapping holders in %d acquisitions", overlaps.Load(), acquired.Load())
	}
	if acquired.Load() == 0 {
		t.Fatal("nothing was acquired")
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
	t.Logf("%d acquisitions, no overlap", acquired.Load())
}
