package reliability

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// section returns the events of one critical section by slot w, op n, that
// acquired at t (ms) with token tok, read r, wrote r+1 and released at t+d.
func section(w, n int, t, d int64, tok uint64, r int64) []event {
	ms := int64(time.Millisecond)
	return []event{
		{T: (t - 1) * ms, Slot: w, Op: n, Kind: evInvoke},
		{T: t * ms, Slot: w, Op: n, Kind: evAcquired, Tok: tok},
		{T: (t + d - 1) * ms, Slot: w, Op: n, Kind: evWrite, Tok: tok, Read: r, Val: r + 1},
		{T: (t + d) * ms, Slot: w, Op: n, Kind: evRelease},
		{T: (t + d + 1) * ms, Slot: w, Op: n, Kind: evOK},
	}
}

func cat(parts ...[]event) []event {
	var all []event
	for _, p := range parts {
		all = append(all, p...)
	}
	return all
}

// histories writes events as one history file (plus a torn line, as a kill
// leaves) and reads it back.
func histories(t *testing.T, evs []event) map[opKey]*opRec {
	t.Helper()
	name := filepath.Join(t.TempDir(), "h.jsonl")
	var b []byte
	for _, e := range evs {
		j, _ := json.Marshal(e)
		b = append(append(b, j...), '\n')
	}
	b = append(b, `{"t":12,"w":0,"i`...)
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ops, bad, err := readHistories([]string{name})
	if err != nil {
		t.Fatal(err)
	}
	if bad != 1 {
		t.Fatalf("torn lines = %d, want 1", bad)
	}
	return ops
}

// TestChecker runs the checkers on made-up histories: each case says what
// the checker must find, so a checker that finds nothing cannot pass.
func TestChecker(t *testing.T) {
	ms := int64(time.Millisecond)
	cases := []struct {
		name   string
		why    string
		evs    []event
		faults []fault
		final  int64
		want   func(r *result) bool
	}{{
		name:  "clean",
		why:   "three sections one after the other: nothing to report",
		evs:   cat(section(0, 0, 10, 5, 1, 0), section(1, 0, 20, 5, 2, 1), section(0, 1, 30, 5, 3, 2)),
		final: 3,
		want:  func(r *result) bool { return r.violations() == 0 && r.OK == 3 && r.Committed == 3 },
	}, {
		name:  "lost update",
		why:   "two sections read 0 and both wrote 1: one increment is lost",
		evs:   cat(section(0, 0, 10, 5, 1, 0), section(1, 0, 20, 5, 2, 0)),
		final: 1,
		want:  func(r *result) bool { return r.LostUpdates == 1 },
	}, {
		name:  "overlap",
		why:   "two completed sections overlap in time: mutual exclusion broken",
		evs:   cat(section(0, 0, 10, 10, 1, 0), section(1, 0, 15, 10, 2, 1)),
		final: 2,
		want:  func(r *result) bool { return r.Overlaps == 1 && r.LostUpdates == 0 },
	}, {
		name:  "token order",
		why:   "a later section has a lower token",
		evs:   cat(section(0, 0, 10, 5, 5, 0), section(1, 0, 20, 5, 4, 1)),
		final: 2,
		want:  func(r *result) bool { return r.TokenOrder == 1 },
	}, {
		name: "killed inside, write landed",
		why:  "a worker killed after its write but before recording it: indeterminate, not a violation",
		evs: cat(section(0, 0, 10, 5, 1, 0),
			[]event{{T: 19 * ms, Slot: 1, Op: 0, Kind: evInvoke}, {T: 20 * ms, Slot: 1, Op: 0, Kind: evAcquired, Tok: 2}},
			section(2, 0, 40, 5, 3, 2)),
		faults: []fault{{kind: "kill", t: 22 * ms, slot: 1}},
		final:  3,
		want: func(r *result) bool {
			return r.violations() == 0 && r.Indeterminate == 1 && r.Ambiguous == 1 && len(r.Takeover) == 1 && r.Takeover[0] == 18*time.Millisecond
		},
	}, {
		name:  "phantom",
		why:   "the register is above every write that could have landed",
		evs:   section(0, 0, 10, 5, 1, 0),
		final: 5,
		want:  func(r *result) bool { return r.Phantom == 4 },
	}, {
		name: "paused holder detects the loss",
		why:  "SIGSTOP at 12ms, SIGCONT at 30ms, loss seen at 31ms; another process acquired at 16ms",
		evs: cat([]event{
			{T: 9 * ms, Slot: 0, Op: 0, Kind: evInvoke}, {T: 10 * ms, Slot: 0, Op: 0, Kind: evAcquired, Tok: 1},
			{T: 31 * ms, Slot: 0, Op: 0, Kind: evLost}, {T: 32 * ms, Slot: 0, Op: 0, Kind: evFail, Lost: true},
		}, section(1, 0, 16, 5, 2, 0)),
		faults: []fault{{kind: "stop", t: 12 * ms, end: 30 * ms, slot: 0}},
		final:  1,
		want: func(r *result) bool {
			return r.violations() == 0 && r.LockLost == 1 && len(r.Detect) == 1 && r.Detect[0] == time.Millisecond &&
				len(r.PauseTakeover) == 1 && r.PauseTakeover[0] == 4*time.Millisecond
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ops := histories(t, c.evs)
			r := check(ops, c.faults, c.final, false)
			if !c.want(r) {
				t.Errorf("%s: got %s", c.why, r.summary())
			}
			// The overlap of two completed sections is the one case here
			// that is not linearizable against a mutex.
			want := porcupine.Ok
			if c.name == "overlap" {
				want = porcupine.Illegal
			}
			if got, _ := checkMutex(ops, 10*time.Second); got != want {
				t.Errorf("porcupine: got %s, want %s", got, want)
			}
		})
	}
}
