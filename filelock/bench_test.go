//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package filelock

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/caesura-go/caesura"
)

// BenchmarkFile compares an uncontended acquire+release of a filelock Mutex
// with the references beside it: flock(2) on a descriptor kept open (the
// floor), and open+flock+close each time (what gofrs/flock does).
func BenchmarkFile(b *testing.B) {
	ctx := context.Background()
	b.Run("filelock", func(b *testing.B) {
		lk := newLocker(b, b.TempDir()).Mutex("bench")
		b.ReportAllocs()
		for b.Loop() {
			h, err := lk.Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := h.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("filelock-try", func(b *testing.B) {
		lk := newLocker(b, b.TempDir()).Mutex("bench").(caesura.TryLocker)
		b.ReportAllocs()
		for b.Loop() {
			h, err := lk.TryAcquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := h.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("filelock-Run", func(b *testing.B) {
		lk := newLocker(b, b.TempDir()).Mutex("bench")
		b.ReportAllocs()
		for b.Loop() {
			err := caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error { return yield(lk) })
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("flock-kept-fd", func(b *testing.B) {
		f, err := os.OpenFile(filepath.Join(b.TempDir(), "lock"), os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		fd := int(f.Fd())
		b.ReportAllocs()
		for b.Loop() {
			if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
				b.Fatal(err)
			}
			if err := syscall.Flock(fd, syscall.LOCK_UN); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("open-flock-close", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "lock")
		b.ReportAllocs()
		for b.Loop() {
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
			if err != nil {
				b.Fatal(err)
			}
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
				b.Fatal(err)
			}
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
	// Goroutines of one process contending for one key (zero hold): the
	// in-process FIFO gate hands the key over; flock is uncontended.
	b.Run("filelock-parallel", func(b *testing.B) {
		lk := newLocker(b, b.TempDir()).Mutex("bench")
		b.ReportAllocs()
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h, err := lk.Acquire(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				if err := h.Release(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
