// Package lend lets a scope of the core lend the memory backend room for one
// lock handle, so that the most common run (one yield of one in-process lock)
// allocates no handle of its own, and lets the backend wait inside a scope
// without the scope's Done channel, so that a contended run allocates no
// cancellable context either.
//
// The slot lives inside the scope, which is never reused: a handle that
// points into it is unique to one acquisition for as long as anyone keeps it,
// so a stale handle can never release a later acquisition (Done guards a
// second release). A scope lends its slot once; later acquisitions allocate.
//
// Only this module's packages can name Slot, Wake and Wakes, so the hooks are
// invisible to users and to other backends, which need nothing of them.
package lend

import (
	"sync"
	"sync/atomic"
)

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

// A Wake is how a scope interrupts a wait in Waiter.Send: a cancellation of
// the scope takes the Wake the wait armed and sends one value on C. C has
// room for that one value, so the send never blocks.
//
// A Wake is clean, C empty, whenever no wait has it armed: Send drains it
// before it returns, so Wakes are reused, not made per wait.
type Wake struct {
	C chan struct{}
}

// Wakes is a free list of clean Wakes. Its zero value is ready for use; it
// must not be copied after first use.
type Wakes struct {
	pool sync.Pool
}

// Get returns a clean Wake, a new one if the list is empty.
func (ws *Wakes) Get() *Wake {
	if w, ok := ws.pool.Get().(*Wake); ok {
		return w
	}
	return &Wake{C: make(chan struct{}, 1)}
}

// Put returns a clean Wake to the list.
func (ws *Wakes) Put(w *Wake) { ws.pool.Put(w) }

// Waiter is implemented by the core's scope. It waits on the scope's
// cancellation without materialising the scope's context: no Done channel,
// no cancellable context is made for the wait.
type Waiter interface {
	// Send sends a value on ch, waiting until ch has room or the scope's
	// context is done, and returns handled true and err nil if it sent, or
	// err, the context's error, if the context ended the wait first. It
	// takes a Wake from wakes for the wait and puts it back clean.
	//
	// handled is false, and nothing was sent, when the scope cannot wait
	// this way (its context exists already, another wait is armed, or the
	// scope is cancelled): the caller then waits on Done, as it would on
	// any context.
	Send(ch chan<- struct{}, wakes *Wakes) (handled bool, err error)
}
