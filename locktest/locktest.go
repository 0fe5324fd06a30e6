// Package locktest is the conformance suite every caesura backend runs: the
// memory and file backends in this module, and Redis, PostgreSQL and etcd in
// their own modules, call [Run] from a test.
package locktest

import (
	"testing"
	"time"

	"github.com/caesura-go/caesura"
)

// Harness describes a backend under test.
type Harness struct {
	// Lock names a lock. The suite passes names unique to each subtest;
	// the backend adds its own namespace to form the key.
	Lock func(name string) caesura.Lock

	// Lose, if set, makes the lock with the given name lost from outside
	// while a scope holds it (delete the key, terminate the session,
	// revoke the lease), so the suite can check that the loss cancels the
	// function's context. Backends whose locks cannot be lost leave it nil.
	Lose func(t *testing.T, name string)

	// HandOff bounds how long the suite waits for a released lock to reach
	// a waiter before it calls the backend broken. Zero means 10s.
	HandOff time.Duration
}

// Run runs the conformance suite against h.
func Run(t *testing.T, h Harness) {
	t.Helper()
	runSuite(t, h)
}
