package caesura

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

type keyLock string

func (k keyLock) Key() string                               { return string(k) }
func (k keyLock) Acquire(ctx context.Context) (Held, error) { return nil, nil }

// FuzzSortPending checks the ordering rule on arbitrary keys: the result is
// strictly ascending byte-wise, holds every distinct input key exactly once,
// and keeps the first Lock given for a key.
func FuzzSortPending(f *testing.F) {
	f.Add([]byte("b\x00a\x00b\x00\xff\x00B"))
	f.Add([]byte("\x00\x00"))
	f.Add([]byte("user:1\x00user:10\x00user:2\x00é\x00e"))
	f.Fuzz(func(t *testing.T, data []byte) {
		parts := bytes.Split(data, []byte{0})
		if len(parts) > 64 {
			parts = parts[:64]
		}
		var ps []pending
		first := map[string]int{}
		for i, p := range parts {
			k := string(p)
			ps = append(ps, pending{key: k, lock: keyLock(k)})
			if _, ok := first[k]; !ok {
				first[k] = i
			}
			// Tag the lock with its position so "the first one" is checkable.
			ps[len(ps)-1].lock = posLock{keyLock(k), i}
		}
		got := sortPending(ps)
		if len(got) != len(first) {
			t.Fatalf("%d keys out, want %d distinct", len(got), len(first))
		}
		for i := range got {
			if i > 0 && strings.Compare(got[i-1].key, got[i].key) >= 0 {
				t.Fatalf("not strictly ascending at %d: %q then %q", i, got[i-1].key, got[i].key)
			}
			if pos := got[i].lock.(posLock).pos; pos != first[got[i].key] {
				t.Fatalf("key %q kept the Lock from position %d, want the first, %d", got[i].key, pos, first[got[i].key])
			}
		}
	})
}

type posLock struct {
	keyLock
	pos int
}
