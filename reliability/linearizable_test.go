package reliability

import (
	"maps"
	"math"
	"slices"
	"time"

	"github.com/anishathalye/porcupine"
)

// mutexInput is one operation on the lock: the acquisition or the release of
// critical section id.
type mutexInput struct {
	acquire bool
	id      int
}

// mutexModel is a lock as a sequential object: its state is the id of the
// critical section that holds it, or -1. An acquisition needs it free; a
// release needs it held by the same section.
var mutexModel = porcupine.Model{
	Init: func() any { return -1 },
	Step: func(state, input, _ any) (bool, any) {
		holder, in := state.(int), input.(mutexInput)
		if in.acquire {
			return holder == -1, in.id
		}
		return holder == in.id, -1
	},
	DescribeOperation: func(input, _ any) string {
		in := input.(mutexInput)
		if in.acquire {
			return "acquire"
		}
		return "release"
	},
}

// mutexHistory turns the critical sections of one lock into porcupine
// operations. Each acquisition runs from invoke to the acquired event. Each
// release runs from the release event to the end of Run for a section that
// completed; for one that failed after acquiring (its lock lost, its token
// refused) from the acquired event to the end of Run, since the lock may have
// gone at any time in between; and for one whose worker was killed inside it,
// from the last thing it recorded to infinity: indeterminate, so the checker
// may place it anywhere after that. Sections that never acquired are left
// out.
func mutexHistory(ops map[opKey]*opRec) (hist []porcupine.Operation, indeterminate int) {
	keys := make([]opKey, 0, len(ops))
	for k, o := range ops {
		if o.acquired != 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b opKey) int { return cmpInt(ops[a].acquired, ops[b].acquired) })
	for id, k := range keys {
		o := ops[k]
		call := o.invoke
		if call == 0 || call > o.acquired {
			call = o.acquired
		}
		hist = append(hist, porcupine.Operation{ClientId: k.slot, Input: mutexInput{acquire: true, id: id}, Call: call, Return: o.acquired})
		rel := porcupine.Operation{ClientId: k.slot, Input: mutexInput{id: id}}
		switch {
		case o.ok && o.release != 0:
			rel.Call, rel.Return = o.release, o.end
		case o.end != 0:
			rel.Call, rel.Return = o.acquired, o.end
		default:
			rel.Call, rel.Return = max(o.acquired, o.write, o.release, o.lostAt), math.MaxInt64
			indeterminate++
		}
		hist = append(hist, rel)
	}
	return hist, indeterminate
}

// checkMutex checks that the acquisitions and releases of one lock are
// linearizable against mutexModel. It returns porcupine's verdict (Unknown
// if it ran out of time) and the number of sections left indeterminate.
func checkMutex(ops map[opKey]*opRec, timeout time.Duration) (porcupine.CheckResult, int) {
	hist, ind := mutexHistory(ops)
	return porcupine.CheckOperationsTimeout(mutexModel, hist, timeout), ind
}

// checkLocks checks the history of every lock of a run against mutexModel:
// the register's one lock, or each account's lock for transfers (each
// critical section holds two: it is in the history of both). It returns the
// worst verdict (Illegal, then Unknown, then Ok), the sections left
// indeterminate, the number of lock histories checked and how many of them
// were found linearizable.
func checkLocks(ops map[opKey]*opRec, transfers bool, timeout time.Duration) (verdict string, indeterminate, locks, ok int) {
	by := map[int]map[opKey]*opRec{0: ops}
	if transfers {
		by = perLock(ops)
	}
	worst := porcupine.Ok
	for _, a := range slices.Sorted(maps.Keys(by)) {
		res, ind := checkMutex(by[a], timeout)
		indeterminate += ind
		switch {
		case res == porcupine.Ok:
			ok++
		case res == porcupine.Illegal:
			worst = porcupine.Illegal
		case res == porcupine.Unknown && worst == porcupine.Ok:
			worst = porcupine.Unknown
		}
	}
	return string(worst), indeterminate, len(by), ok
}
