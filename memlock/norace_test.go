//go:build !race

package memlock_test

const raceEnabled = false
