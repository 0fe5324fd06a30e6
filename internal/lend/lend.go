// Package lend lets a scope of the core lend the memory backend room for one
// lock handle, so that the most common run (one yield of one in-process lock)
// allocates no handle of its own.
//
// The slot lives inside the scope, which is never reused: a handle that
// points into it is unique to one acquisition for as long as anyone keeps it,
// so a stale handle can never release a later acquisition (Done guards a
// second release). A scope lends its slot once; later acquisitions allocate.
//
// Only this module's packages can name Slot, so the hook is invisible to
// users and to other backends, which need nothing of it.
package lend

import "sync/atomic"

// Slot is the room for one handle. Its zero value is an unused slot.
type Slot struct {
	Key   string      // the key of the lock the handle releases
	State any         // the backend's per-key state
	Fence uint64      // the acquisition's fencing token
	Done  atomic.Bool // set by the first release
}

// Lender is implemented by the core's scope, which is the context a Lock's
// Acquire receives during a yield.
type Lender interface {
	// LendSlot returns the scope's slot the first time it is called, and
	// nil after that.
	LendSlot() *Slot
}
