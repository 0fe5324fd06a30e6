//go:build purego

package caesura

// With the purego build tag the scope's Yield is a method value (one
// allocation per Run more); see yield_unsafe.go.
const yieldCode = 0

func scopeYield(s *scope) Yield { return s.yieldLocks }
