//go:build race

package memlock_test

// The race detector makes the million-key test about 20x slower.
const raceEnabled = true
