//go:build !purego

package caesura

import "unsafe"

// The scope's Yield without an allocation. A method value s.yieldLocks
// costs a 16-byte closure {code, receiver} per Run. The scope instead starts
// with those two words (code, self), so a func value that points at the scope
// is that very closure. This depends on how cmd/compile lays out the closure
// of a method value, which it has done the same way since Go 1.1: the code
// reads its receiver from the closure's second word. closureCode checks the
// layout once at start-up and yields 0 (the method value is used) if it
// differs; build with the purego tag to do without unsafe altogether.

// yieldCode is the entry of the closure the compiler makes for a method
// value s.yieldLocks, or 0 if that closure is not laid out as the scope's
// first two words expect.
var yieldCode = closureCode()

func closureCode() uintptr {
	probe := new(scope)
	f := Yield(probe.yieldLocks)
	words := *(**[2]uintptr)(unsafe.Pointer(&f))
	if words[0] == 0 || words[1] != uintptr(unsafe.Pointer(probe)) {
		return 0
	}
	return words[0]
}

// scopeYield is the scope itself as its Yield.
func scopeYield(s *scope) Yield { return *(*Yield)(unsafe.Pointer(&s)) }
