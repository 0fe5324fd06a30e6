package redislock

import (
	"slices"
	"testing"
	"time"
)

func TestParseAcquire(t *testing.T) {
	for _, tc := range []struct {
		reply  any
		n      int
		ok     bool
		fences []uint64
		rem    time.Duration
		bad    bool
	}{
		{reply: int64(7), n: 1, ok: true, fences: []uint64{7}},
		{reply: "100000000000000", n: 1, ok: true, fences: []uint64{100000000000000}},
		{reply: []any{int64(1), int64(3), "100000000000001"}, n: 2, ok: true, fences: []uint64{3, 100000000000001}},
		{reply: []any{int64(0), int64(1), int64(250)}, n: 1, rem: 250 * time.Millisecond},
		{reply: []any{int64(0), int64(2), int64(9)}, n: 3, rem: 9 * time.Millisecond},
		{reply: int64(7), n: 2, bad: true},
		{reply: int64(0), n: 1, ok: true, fences: []uint64{0}}, // an unfenced token's
		{reply: int64(-1), n: 1, bad: true},
		{reply: "x", n: 1, bad: true},
		{reply: []any{int64(1), int64(3)}, n: 2, bad: true},
		{reply: []any{}, n: 1, bad: true},
		{reply: nil, n: 1, bad: true},
	} {
		ok, fences, rem, err := parseAcquire(tc.reply, tc.n)
		if (err != nil) != tc.bad || ok != tc.ok || !slices.Equal(fences, tc.fences) || rem != tc.rem {
			t.Errorf("parseAcquire(%#v, %d) = %v, %v, %v, %v", tc.reply, tc.n, ok, fences, rem, err)
		}
	}
}

func TestParseRelease(t *testing.T) {
	for _, tc := range []struct {
		reply any
		n     int
		want  []int64
		bad   bool
	}{
		{reply: int64(1), n: 1, want: []int64{1}},
		{reply: int64(1), n: 3, want: []int64{1, 1, 1}},
		{reply: []any{int64(0)}, n: 1, want: []int64{0}},
		{reply: []any{int64(1), int64(0), int64(1)}, n: 3, want: []int64{1, 0, 1}},
		{reply: []any{"1"}, n: 1, bad: true},
		{reply: "OK", n: 1, bad: true},
	} {
		got, err := parseRelease(tc.reply, tc.n)
		if (err != nil) != tc.bad || !slices.Equal(got, tc.want) {
			t.Errorf("parseRelease(%#v, %d) = %v, %v", tc.reply, tc.n, got, err)
		}
	}
}
