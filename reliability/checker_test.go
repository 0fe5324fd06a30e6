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
		name: "refused, overtaken",
		why:  "a holder overtaken by a later acquisition with a higher token is refused: fencing at work, tokens did not go back",
		evs: cat([]event{
			{T: 9 * ms, Slot: 0, Op: 0, Kind: evInvoke},
			{T: 10 * ms, Slot: 0, Op: 0, Kind: evAcquired, Tok: 1},
			{T: 40 * ms, Slot: 0, Op: 0, Kind: evRejected, Tok: 1},
			{T: 41 * ms, Slot: 0, Op: 0, Kind: evFail},
		}, section(1, 0, 20, 5, 2, 0)),
		final: 1,
		want:  func(r *result) bool { return r.Rejected == 1 && r.TokensBack == 0 },
	}, {
		name: "refused, tokens went back",
		why:  "a section acquired after another with a token not above it is refused: the server forgot its counter",
		evs: cat(section(0, 0, 10, 5, 5, 0), []event{
			{T: 19 * ms, Slot: 1, Op: 0, Kind: evInvoke},
			{T: 20 * ms, Slot: 1, Op: 0, Kind: evAcquired, Tok: 3},
			{T: 22 * ms, Slot: 1, Op: 0, Kind: evRejected, Tok: 3},
			{T: 23 * ms, Slot: 1, Op: 0, Kind: evFail},
		}),
		final: 1,
		want:  func(r *result) bool { return r.Rejected == 1 && r.TokensBack == 1 },
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
	}, {
		name: "partitioned holder overtaken, never told",
		why:  "partition at 12ms; another process acquired at 20ms; the holder's Run failed at 40ms without a loss signal",
		evs: cat([]event{
			{T: 9 * ms, Slot: 0, Op: 0, Kind: evInvoke}, {T: 10 * ms, Slot: 0, Op: 0, Kind: evAcquired, Tok: 1},
			{T: 40 * ms, Slot: 0, Op: 0, Kind: evFail},
		}, section(1, 0, 20, 5, 2, 0)),
		faults: []fault{{kind: "partition", t: 12 * ms, end: 30 * ms, slot: 0}},
		final:  1,
		want: func(r *result) bool {
			return r.violations() == 0 && r.Partitioned == 1 && r.PartitionUntold == 1 && r.UntoldFailed == 1 && r.UntoldOvertaken == 1 &&
				len(r.PartitionTakeover) == 1 && r.PartitionTakeover[0] == 8*time.Millisecond
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

// transferSection returns the events of a transfer by slot w, op n, that
// held accounts a and b (tokens ta, tb) from t to t+d (ms).
func transferSection(w, n int, t, d int64, a, b int, ta, tb uint64) []event {
	ms := int64(time.Millisecond)
	return []event{
		{T: (t - 1) * ms, Slot: w, Op: n, Kind: evInvoke},
		{T: t * ms, Slot: w, Op: n, Kind: evAcquired, Tok: ta, Accts: []int{a, b}, Toks: []uint64{ta, tb}},
		{T: (t + d - 1) * ms, Slot: w, Op: n, Kind: evWrite, Tok: ta},
		{T: (t + d) * ms, Slot: w, Op: n, Kind: evRelease},
		{T: (t + d + 1) * ms, Slot: w, Op: n, Kind: evOK},
	}
}

// TestCheckerTransfers: the transfers workload is checked per account lock
// (mutual exclusion, token order, porcupine), so a violation on one account
// is found even though the sections hold different pairs.
func TestCheckerTransfers(t *testing.T) {
	cases := []struct {
		name         string
		evs          []event
		overlaps     int
		tokenOrder   int
		lin          porcupine.CheckResult
		locks, linOk int
	}{{
		name: "disjoint accounts at once, then shared in turn",
		evs: cat(transferSection(0, 0, 10, 10, 0, 1, 1, 1), transferSection(1, 0, 12, 10, 2, 3, 2, 2),
			transferSection(2, 0, 30, 5, 1, 2, 3, 4)),
		lin: porcupine.Ok, locks: 4, linOk: 4,
	}, {
		name: "account 2 held by two sections at once",
		evs:  cat(transferSection(0, 0, 10, 10, 0, 2, 1, 1), transferSection(1, 0, 15, 10, 2, 3, 2, 2)),
		// Two sections overlap in time on account 2 only.
		overlaps: 1, lin: porcupine.Illegal, locks: 3, linOk: 2,
	}, {
		name: "account 1's token goes back",
		evs:  cat(transferSection(0, 0, 10, 5, 1, 0, 7, 7), transferSection(1, 0, 20, 5, 1, 3, 6, 8)),
		// Account 1: 7 then 6; accounts 0 and 3 are held once each.
		tokenOrder: 1, lin: porcupine.Ok, locks: 3, linOk: 3,
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ops := histories(t, c.evs)
			r := check(ops, nil, 0, true)
			if r.Overlaps != c.overlaps || r.TokenOrder != c.tokenOrder {
				t.Errorf("overlaps %d, token order %d; want %d, %d", r.Overlaps, r.TokenOrder, c.overlaps, c.tokenOrder)
			}
			lin, _, locks, ok := checkLocks(ops, true, 10*time.Second)
			if lin != string(c.lin) || locks != c.locks || ok != c.linOk {
				t.Errorf("porcupine: %s, %d of %d lock histories Ok; want %s, %d of %d", lin, ok, locks, c.lin, c.linOk, c.locks)
			}
		})
	}
}

// TestCheckerForced: what became of holders whose session was ended from
// outside is classified, and the two failures (a holder never told, a Run
// that returned nil after its session ended) are found.
func TestCheckerForced(t *testing.T) {
	ms := int64(time.Millisecond)
	bound := 100 * time.Millisecond
	held := func(w int, t0 int64, rest ...event) []event {
		return append([]event{
			{T: (t0 - 1) * ms, Slot: w, Op: 0, Kind: evInvoke},
			{T: t0 * ms, Slot: w, Op: 0, Kind: evAcquired, Tok: 1},
		}, rest...)
	}
	cases := []struct {
		name string
		evs  []event
		want forced
	}{{
		name: "told",
		evs: cat(held(0, 10, event{T: 40 * ms, Slot: 0, Kind: evLost}, event{T: 41 * ms, Slot: 0, Kind: evFail, Lost: true}),
			section(1, 0, 25, 5, 2, 0)),
		want: forced{Caught: 1, Told: 1, ToldAfter: 1},
	}, {
		name: "never told, went on past the bound",
		evs:  held(0, 10, event{T: 300 * ms, Slot: 0, Kind: evFail}),
		want: forced{Caught: 1, Untold: 1},
	}, {
		name: "ended before it could be told",
		evs:  held(0, 10, event{T: 50 * ms, Slot: 0, Kind: evFail}),
		want: forced{Caught: 1, EndedFirst: 1},
	}, {
		name: "Run returned nil after the session ended",
		evs:  held(0, 10, event{T: 60 * ms, Slot: 0, Kind: evRelease}, event{T: 61 * ms, Slot: 0, Kind: evOK}),
		want: forced{Caught: 1, EndedFirst: 1, CompletedAfter: 1},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ops := histories(t, c.evs)
			faults := []fault{{kind: "expire", t: 20 * ms, end: 22 * ms, slot: 0}}
			r := check(ops, faults, 0, false)
			checkForced(r, ops, faults, bound)
			f := r.Forced["expire"]
			if f == nil {
				t.Fatal("no holder caught")
			}
			got := *f
			got.Detect, got.Takeover = nil, nil
			if got.Caught != c.want.Caught || got.Told != c.want.Told || got.ToldFirst != c.want.ToldFirst || got.ToldAfter != c.want.ToldAfter ||
				got.EndedFirst != c.want.EndedFirst || got.Untold != c.want.Untold || got.CompletedAfter != c.want.CompletedAfter {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
			if c.want.Told == 1 && (len(f.Detect) != 1 || f.Detect[0] != 20*time.Millisecond) {
				t.Errorf("detection %v, want [20ms] (fault at 20ms, loss seen at 40ms)", f.Detect)
			}
		})
	}
}
