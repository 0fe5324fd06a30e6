package reliability

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// opKey names one critical section: worker slot, incarnation, op number.
type opKey struct{ slot, inc, op int }

// opRec is what a history says about one critical section. Times are
// UnixNano; zero means the event was not recorded.
type opRec struct {
	key                              opKey
	invoke, acquired, write, release int64
	end                              int64 // ok or fail
	lostAt                           int64 // the context was cancelled for a lost lock
	rejectedAt                       int64 // the store refused its token
	tok                              uint64
	read, val                        int64
	ok, failed, lockLost, rejected   bool
	restarts                         int      // transfers
	descending                       bool     // transfers
	accts                            []int    // transfers: the accounts whose locks it held
	toks                             []uint64 // transfers: their tokens, in the same order
}

// readHistories parses history files. A line cut short by a kill is
// counted and skipped: only the last line of a killed worker's file can be.
func readHistories(files []string) (map[opKey]*opRec, int, error) {
	ops := map[opKey]*opRec{}
	bad := 0
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, 0, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var e event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				bad++
				continue
			}
			k := opKey{e.Slot, e.Inc, e.Op}
			o := ops[k]
			if o == nil {
				o = &opRec{key: k}
				ops[k] = o
			}
			switch e.Kind {
			case evInvoke:
				o.invoke = e.T
			case evAcquired:
				o.acquired, o.tok = e.T, e.Tok
				o.accts, o.toks = e.Accts, e.Toks
			case evWrite:
				o.write, o.read, o.val = e.T, e.Read, e.Val
			case evRelease:
				o.release = e.T
			case evLost:
				if o.lostAt == 0 {
					o.lostAt = e.T
				}
			case evRejected:
				if !o.rejected {
					o.rejected, o.rejectedAt = true, e.T
				}
			case evRestart:
				o.restarts++
			case evDescend:
				o.descending = true
			case evOK:
				o.end, o.ok = e.T, true
			case evFail:
				o.end, o.failed, o.lockLost = e.T, true, e.Lost
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, 0, err
		}
	}
	return ops, bad, nil
}

// result is one scenario's figures.
type result struct {
	Backend, Scenario, Why, Register string
	Lossy, Fenced                    bool
	Lease, Renew, Elapsed            time.Duration

	Ops             int   // critical sections invoked
	OK              int   // Run returned nil
	Failed          int   // Run returned an error
	Indeterminate   int   // the worker was killed before Run returned
	LockLost        int   // failed with caesura.ErrLockLost
	Rejected        int   // the fenced store refused the holder's token
	TokensBack      int   // refused sections whose token is not above that of a section acquired before them
	PerSlot         []int // completed critical sections per worker slot
	AcquiredPerSlot []int // acquisitions per worker slot
	TornLines       int
	Hiccup          time.Duration // worst scheduling delay the parent saw during the run (machine load)
	StartWait       time.Duration // from starting the workers to all of them ready

	Faults map[string]int

	Final, Committed int64 // register value; writes recorded
	Ambiguous        int64 // critical sections that may have written without recording it
	LostUpdates      int64 // increments lost: two writes that read the same value, or a final value short of the writes
	Phantom          int64 // final value above every write that could have landed
	Overlaps         int   // completed critical sections overlapping another completed one
	TokenOrder       int   // completed critical sections whose token is not above the previous one's

	StaleReads, StaleAttempted, StaleAccepted int

	Transfers        bool  // the transfers workload: the balance total is the invariant
	Descending       int   // transfers whose second yield asked for a key below the first's
	Restarts         int   // restarts of transfers (caesura.WithRestart)
	TotalWant, Total int64 // transfers: the balance total at the start, and at the end
	Drift            int64 // |Total - TotalWant|: money created or destroyed

	Takeover      []time.Duration            // kill -9 of a holder -> next acquisition by another process
	NotTakenOver  []int64                    // kills of a holder not followed by any acquisition
	PauseTakeover []time.Duration            // SIGSTOP of a holder -> next acquisition by another process
	Detect        []time.Duration            // SIGCONT -> the paused holder's context cancelled for loss
	PausedHolders int                        // SIGSTOPs that caught a worker inside its critical section
	Recovery      map[string][]time.Duration // per fault kind (server, sever, delay, reset): the fault's end -> the next critical section that completed

	Partitioned        int             // partitions that caught a worker inside its critical section
	PartitionDetect    []time.Duration // partition start -> the holder's context cancelled for loss
	PartitionTakeover  []time.Duration // partition start -> next acquisition by another process
	LossBeforeTakeover int             // partitioned holders told of the loss before another process acquired
	LossAfterTakeover  int             // ... told only after (the drift margin was not enough)
	PartitionUntold    int             // partitioned holders never told of a loss
	UntoldFailed       int             // of those, Run returned an error (the release, cut off too, failed)
	UntoldOvertaken    int             // of those, another process acquired the lock before their Run returned

	Linearizable     string // porcupine's verdict on the locks' histories (Ok, Illegal, Unknown: the worst of them), "" if not checked
	LinIndeterminate int    // sections whose release the checker had to leave open
	LinLocks         int    // lock histories checked (1 for the register, one per account for transfers)
	LinOk            int    // of those, found linearizable

	// Forced, per fault kind that can end a holder's session from outside
	// (expire, reset, server), what became of the holders it caught.
	Forced map[string]*forced
	// Bound is how long after a forced expiry a holder may go on without
	// being told: the backend's detection bound, the grace and twice the
	// hiccup.
	Bound time.Duration

	PauseFor time.Duration // how long SIGSTOPs and partitions lasted
}

// forced is what became of the holders caught by the faults of one kind
// that can end a session from outside.
type forced struct {
	Caught         int             // holders inside their critical section when the fault hit
	Told           int             // of those, told of the loss (context cancelled with ErrLockLost)
	ToldFirst      int             // told before another process acquired the lock
	ToldAfter      int             // told only after another process acquired it
	EndedFirst     int             // not told: the function had ended (or was refused by the store) within the bound
	Untold         int             // not told although the function ran on past the bound
	Killed         int             // the worker died before its function ended (indeterminate)
	CompletedAfter int             // Run returned nil though the session was gone before its release
	Detect         []time.Duration // fault -> the holder's context cancelled
	Takeover       []time.Duration // fault -> the next acquisition by another process
}

// withoutFencing reports whether lost updates are possible by design: a
// lease backend with storage that does not check tokens. A backend whose
// locks can be lost but have no lease (pglock: a session lock) keeps a
// paused holder's lock, so it must lose nothing in these scenarios.
func (r *result) withoutFencing() bool { return r.Lossy && r.Lease > 0 && !r.Fenced }

func (r *result) violations() int64 {
	return r.LostUpdates + r.Phantom + r.Drift + int64(r.Overlaps+r.TokenOrder)
}

// unfencedViolations are the violations a lease backend may show without
// fencing: lost updates and balance drift.
func (r *result) unfencedViolations() int64 { return r.LostUpdates + r.Drift }

func (r *result) summary() string {
	s := r.summary1() + fmt.Sprintf("; lock histories checked %d (%d Ok); workers ready after %v, worst hiccup %v", r.LinLocks, r.LinOk, r.StartWait.Round(time.Millisecond), r.Hiccup.Round(time.Millisecond))
	if f := r.forcedSummary(); f != "" {
		s += "; sessions ended from outside: " + f
	}
	if r.Transfers {
		s = fmt.Sprintf("%s; balance total %d, want %d; %d transfers yielded a lower key second, %d restarts", s, r.Total, r.TotalWant, r.Descending, r.Restarts)
	}
	return s
}

func (r *result) summary1() string {
	return fmt.Sprintf("%s %s: %d ops (%d ok, %d failed, %d lost lock, %d rejected, %d indeterminate) in %v; faults %v; register %d, writes %d, indeterminate %d, lost updates %d, phantom %d; overlaps %d, token order %d; stale reads %d, stale writes %d attempted %d accepted; takeover after kill p50 %v max %v (n=%d); after pause p50 %v max %v; loss detected after SIGCONT p50 %v max %v (n=%d of %d paused holders); recovery after server restart %v, after CLIENT KILL %v, after delay %v, after reset %v; ok per worker %v, acquired per worker %v; mutex history linearizable: %s (%d indeterminate); partitioned holders %d, loss detected after %s, taken over after %s, loss signalled before takeover %d, after %d",
		r.Backend, r.Scenario, r.Ops, r.OK, r.Failed, r.LockLost, r.Rejected, r.Indeterminate, r.Elapsed.Round(time.Millisecond), r.Faults,
		r.Final, r.Committed, r.Ambiguous, r.LostUpdates, r.Phantom, r.Overlaps, r.TokenOrder,
		r.StaleReads, r.StaleAttempted, r.StaleAccepted,
		pct(r.Takeover, 50), pct(r.Takeover, 100), len(r.Takeover), pct(r.PauseTakeover, 50), pct(r.PauseTakeover, 100),
		pct(r.Detect, 50), pct(r.Detect, 100), len(r.Detect), r.PausedHolders, durs(r.Recovery["server"]), durs(r.Recovery["sever"]), durs(r.Recovery["delay"]), durs(r.Recovery["reset"]), r.PerSlot, r.AcquiredPerSlot, r.Linearizable, r.LinIndeterminate, r.Partitioned, durs(r.PartitionDetect), durs(r.PartitionTakeover), r.LossBeforeTakeover, r.LossAfterTakeover)
}

// forcedSummary describes what became of the holders caught by the faults
// that can end a session from outside, "" if none caught one.
func (r *result) forcedSummary() string {
	var parts []string
	for _, k := range []string{"expire", "reset", "server"} {
		f := r.Forced[k]
		if f == nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %d holders caught, %d told after %s (before another process acquired: %d, after: %d), %d ended first, %d untold past %v, %d killed, %d released after the fault with Run returning nil; taken over after %s",
			faultName[k], f.Caught, f.Told, durs(f.Detect), f.ToldFirst, f.ToldAfter, f.EndedFirst, f.Untold, r.Bound.Round(time.Millisecond), f.Killed, f.CompletedAfter, durs(f.Takeover)))
	}
	return strings.Join(parts, "; ")
}

// check judges a run's histories, faults and final register value.
// For transfers, final is ignored and the register checks (which assume one
// lock) are skipped; the caller sets the balance totals.
func check(ops map[opKey]*opRec, faults []fault, final int64, transfers bool) *result {
	r := &result{Faults: map[string]int{}, Recovery: map[string][]time.Duration{}, Final: final, PerSlot: make([]int, workers), AcquiredPerSlot: make([]int, workers), Transfers: transfers}
	for _, f := range faults {
		r.Faults[f.kind]++
	}
	var done []*opRec
	reads := map[int64]int64{}
	for _, o := range ops {
		if o.invoke == 0 && o.acquired == 0 {
			continue // only a torn line left of it
		}
		r.Ops++
		if o.acquired != 0 && o.key.slot < len(r.AcquiredPerSlot) {
			r.AcquiredPerSlot[o.key.slot]++
		}
		switch {
		case o.ok:
			r.OK++
			if o.key.slot < len(r.PerSlot) {
				r.PerSlot[o.key.slot]++
			}
			if o.acquired != 0 && o.release != 0 {
				done = append(done, o)
			}
		case o.failed:
			r.Failed++
		default:
			r.Indeterminate++
		}
		if o.lockLost {
			r.LockLost++
		}
		if o.rejected {
			r.Rejected++
		}
		r.Restarts += o.restarts
		if o.descending {
			r.Descending++
		}
		if o.write != 0 {
			r.Committed++
			reads[o.read]++
		} else if o.acquired != 0 && !o.rejected && (!o.ok) {
			// Killed inside its critical section, or failed after
			// acquiring: it may have written without recording it.
			r.Ambiguous++
		}
	}

	if !transfers {
		r.TokensBack = tokensBack(ops)
	}

	if transfers {
		r.Final, r.Committed, r.Ambiguous = 0, 0, 0
		done = nil
		reads = nil
	}
	// Lost updates: writes that read the same value overwrote each other.
	var dups int64
	for _, n := range reads {
		dups += n - 1
	}
	short := max(0, r.Committed-r.Final)
	r.LostUpdates = max(dups, short)
	r.Phantom = max(0, r.Final-(r.Committed+r.Ambiguous))

	// Mutual exclusion among completed critical sections: their recorded
	// intervals lie inside the real holds, so any overlap is a real one.
	// Transfers: per account lock, with that lock's token.
	if transfers {
		for _, sub := range perLock(ops) {
			var done []*opRec
			for _, o := range sub {
				if o.ok && o.acquired != 0 && o.release != 0 {
					done = append(done, o)
				}
			}
			ov, to := exclusion(done)
			r.Overlaps += ov
			r.TokenOrder += to
		}
	} else {
		r.Overlaps, r.TokenOrder = exclusion(done)
	}

	// Liveness and detection, per fault.
	for _, f := range faults {
		if f.kind == "server" || f.kind == "sever" || f.kind == "delay" || f.kind == "reset" {
			var first int64
			for _, o := range ops {
				if o.ok && o.acquired > f.end && (first == 0 || o.end < first) {
					first = o.end
				}
			}
			if first != 0 {
				r.Recovery[f.kind] = append(r.Recovery[f.kind], time.Duration(first-f.end))
			}
			continue
		}
		victim := holding(ops, f)
		if victim == nil {
			continue
		}
		next := nextAcquired(ops, f)
		if transfers {
			// Other processes may take other accounts meanwhile:
			// the next acquisition is no takeover.
			next = -1
		}
		switch f.kind {
		case "kill":
			if next < 0 {
				break
			}
			if next == 0 {
				r.NotTakenOver = append(r.NotTakenOver, f.t)
			} else {
				r.Takeover = append(r.Takeover, time.Duration(next-f.t))
			}
		case "partition":
			r.Partitioned++
			if victim.lostAt == 0 {
				r.PartitionUntold++
				if victim.failed {
					r.UntoldFailed++
				}
				if next > 0 && (victim.end == 0 || next < victim.end) {
					r.UntoldOvertaken++
				}
			}
			if victim.lostAt > f.t {
				r.PartitionDetect = append(r.PartitionDetect, time.Duration(victim.lostAt-f.t))
			}
			if next > 0 {
				r.PartitionTakeover = append(r.PartitionTakeover, time.Duration(next-f.t))
				switch {
				case victim.lostAt == 0:
				case victim.lostAt <= next:
					r.LossBeforeTakeover++
				default:
					r.LossAfterTakeover++
				}
			}
		case "stop":
			r.PausedHolders++
			if next > 0 {
				r.PauseTakeover = append(r.PauseTakeover, time.Duration(next-f.t))
			}
			if victim.lostAt >= f.end {
				r.Detect = append(r.Detect, time.Duration(victim.lostAt-f.end))
			}
		}
	}
	return r
}

// exclusion counts the completed critical sections of one lock that
// overlap an earlier one, and those whose token is not above the one
// before.
func exclusion(done []*opRec) (overlaps, tokenOrder int) {
	slices.SortFunc(done, func(a, b *opRec) int { return cmpInt(a.acquired, b.acquired) })
	var maxRelease int64
	var prevTok uint64
	for i, o := range done {
		if i > 0 && o.acquired < maxRelease {
			overlaps++
		}
		if i > 0 && o.tok <= prevTok && o.tok != 0 { // 0: a backend without tokens
			tokenOrder++
		}
		maxRelease = max(maxRelease, o.release)
		prevTok = o.tok
	}
	return overlaps, tokenOrder
}

// tokensBack counts the refused critical sections whose token was not above
// the token of a section acquired before them: the tokens went back (a
// server that forgot its counter). A refusal of a holder overtaken by a
// later acquisition with a higher token is fencing at work, not counted.
func tokensBack(ops map[opKey]*opRec) int {
	var got []*opRec
	for _, o := range ops {
		if o.acquired != 0 && o.tok != 0 {
			got = append(got, o)
		}
	}
	slices.SortFunc(got, func(a, b *opRec) int { return cmpInt(a.acquired, b.acquired) })
	n := 0
	var maxTok uint64
	for _, o := range got {
		if o.rejected && o.tok <= maxTok {
			n++
		}
		maxTok = max(maxTok, o.tok)
	}
	return n
}

// perLock splits a transfers history by account lock: for each account,
// the critical sections that held its lock, each with that lock's token.
func perLock(ops map[opKey]*opRec) map[int]map[opKey]*opRec {
	by := map[int]map[opKey]*opRec{}
	for k, o := range ops {
		for i, a := range o.accts {
			if by[a] == nil {
				by[a] = map[opKey]*opRec{}
			}
			c := *o
			if i < len(o.toks) {
				c.tok = o.toks[i]
			}
			by[a][k] = &c
		}
	}
	return by
}

// checkForced judges, for the faults that can end a holder's session from
// outside (a forced expiry, a reset, a server crash), whether each holder
// they caught was told, and whether a Run whose session was gone before its
// release returned nil. bound is how long a holder may go on untold.
func checkForced(r *result, ops map[opKey]*opRec, faults []fault, bound time.Duration) {
	r.Bound = bound
	for _, f := range faults {
		if f.kind != "expire" && f.kind != "reset" && f.kind != "server" {
			continue
		}
		var victims []*opRec
		if f.slot < 0 {
			victims = holdingAll(ops, f)
		} else if v := holding(ops, f); v != nil {
			victims = append(victims, v)
		}
		if len(victims) == 0 {
			continue
		}
		if r.Forced == nil {
			r.Forced = map[string]*forced{}
		}
		st := r.Forced[f.kind]
		if st == nil {
			st = &forced{}
			r.Forced[f.kind] = st
		}
		var next int64
		if f.slot >= 0 {
			next = nextAcquired(ops, f)
			if next > 0 {
				st.Takeover = append(st.Takeover, time.Duration(next-f.t))
			}
		}
		for _, v := range victims {
			st.Caught++
			// When the function ended: its release event (it returned
			// nil), the store's refusal, or the end of Run.
			fnEnd := v.release
			if fnEnd == 0 {
				fnEnd = v.rejectedAt
			}
			if fnEnd == 0 {
				fnEnd = v.end
			}
			switch {
			case v.lostAt != 0:
				st.Told++
				if v.lostAt >= f.t {
					st.Detect = append(st.Detect, time.Duration(v.lostAt-f.t))
				}
				if next > 0 && v.lostAt <= next {
					st.ToldFirst++
				} else if next > 0 {
					st.ToldAfter++
				}
			case fnEnd == 0:
				st.Killed++
			case fnEnd > f.t+int64(bound):
				st.Untold++
			default:
				st.EndedFirst++
			}
			if v.ok && v.release > f.end {
				st.CompletedAfter++
			}
		}
	}
}

// holdingAll returns every critical section under way when a server fault
// hit.
func holdingAll(ops map[opKey]*opRec, f fault) []*opRec {
	var out []*opRec
	for _, o := range ops {
		if o.acquired != 0 && o.acquired <= f.t && (o.end == 0 || o.end > f.t) && (o.release == 0 || o.release > f.t) {
			out = append(out, o)
		}
	}
	return out
}

// holding returns the victim's critical section that was under way when the
// fault hit: acquired before, not ended before.
func holding(ops map[opKey]*opRec, f fault) *opRec {
	for k, o := range ops {
		if k.slot == f.slot && k.inc == f.inc && o.acquired != 0 && o.acquired <= f.t && (o.end == 0 || o.end > f.t) {
			if o.release != 0 && o.release <= f.t {
				continue // releasing: the lock may be free already
			}
			return o
		}
	}
	return nil
}

// nextAcquired returns when another process first acquired the lock after
// the fault, or 0.
func nextAcquired(ops map[opKey]*opRec, f fault) int64 {
	var next int64
	for k, o := range ops {
		if k.slot == f.slot && k.inc == f.inc {
			continue
		}
		if o.acquired > f.t && (next == 0 || o.acquired < next) {
			next = o.acquired
		}
	}
	return next
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// pct returns the p-th percentile (nearest rank below), 0 for none.
func pct(xs []time.Duration, p int) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)*p/100].Round(100 * time.Microsecond)
}
