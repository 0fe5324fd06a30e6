package memlock_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

// Waiters get the lock in the order they started waiting, and a releaser that
// asks again queues behind them.
func TestFIFO(t *testing.T) {
	ctx := context.Background()
	l := memlock.New(memlock.Options{})
	m := l.Mutex("k")
	h, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 10
	order := make(chan int, waiters+1)
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Go(func() {
			h, err := m.Acquire(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			_ = h.Release(ctx)
		})
		for l.Waiting("k") != i+2 { // the holder and i+1 waiters
			runtime.Gosched()
		}
		parked(t, i+1)
	}
	// The holder releases and asks again: it must come last.
	_ = h.Release(ctx)
	h, err = m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	order <- waiters
	_ = h.Release(ctx)
	var got []int
	for range waiters + 1 {
		got = append(got, <-order)
	}
	want := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if !slices.Equal(got, want) {
		t.Fatalf("acquisition order %v, want %v", got, want)
	}
	// A releaser hands the lock on before it drops its reference to the
	// key's entry: wait for the last waiters to finish their Release.
	wg.Wait()
	if n := l.Len(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}

// A waiter that gives up leaves the queue; the next one still gets the lock.
func TestCancelledWaiterLeavesQueue(t *testing.T) {
	ctx := context.Background()
	l := memlock.New(memlock.Options{})
	m := l.Mutex("k")
	h, _ := m.Acquire(ctx)
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { _, err := m.Acquire(cctx); errc <- err }()
	for l.Waiting("k") != 2 {
		runtime.Gosched()
	}
	got := make(chan caesura.Held, 1)
	go func() { h, _ := m.Acquire(ctx); got <- h }()
	for l.Waiting("k") != 3 {
		runtime.Gosched()
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) || !errors.Is(err, caesura.ErrNotAcquired) {
		t.Fatalf("cancelled waiter: got %v", err)
	}
	_ = h.Release(ctx)
	select {
	case h2 := <-got:
		_ = h2.Release(ctx)
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter behind a cancelled one never got the lock")
	}
	if n := l.Len(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}

// One million distinct keys held at once, then all released: nothing stays.
func TestMillionKeys(t *testing.T) {
	n := 1_000_000
	if testing.Short() || raceEnabled {
		n = 100_000 // the full million runs without -race: go test -run Million ./memlock
	}
	ctx := context.Background()
	l := memlock.New(memlock.Options{})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	hs := make([]caesura.Held, n)
	start := time.Now()
	for i := range hs {
		h, err := l.Mutex(fmt.Sprintf("key-%07d", i)).Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hs[i] = h
	}
	took := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := l.Len(); got != n {
		t.Fatalf("%d keys held, want %d", got, n)
	}
	t.Logf("%d keys held: acquired in %v, %.0f bytes per held lock (heap, including handle, lock value and key)",
		n, took, float64(after.HeapAlloc-before.HeapAlloc)/float64(n))
	for _, h := range hs {
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.Len(); got != 0 {
		t.Fatalf("%d keys left after releasing all", got)
	}
}

// parked waits until n goroutines are blocked inside memlock's Acquire.
// Waiting counts a waiter as soon as it holds a reference to the key's
// entry, before it blocks on the entry's channel; tests of queue order need
// the waiter to be in the queue.
func parked(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		got := 0
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			head, _, _ := strings.Cut(g, "\n")
			if (strings.Contains(head, "[chan send") || strings.Contains(head, "[select")) &&
				strings.Contains(g, "caesura/memlock.(*mutex).Acquire") {
				got++
			}
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines parked in Acquire, want %d", got, n)
		}
		runtime.Gosched()
	}
}
