package pglock_test

import (
	"testing"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/locktest"
	"github.com/caesura-go/caesura/pglock"
)

// TestConformance runs caesura's conformance suite, losing a lock by
// terminating its session with pg_terminate_backend.
func TestConformance(t *testing.T) {
	pool := newPool(t, 20)
	l := newLocker(t, pool, pglock.Options{})
	locktest.Run(t, locktest.Harness{
		Lock: func(name string) caesura.Lock { return l.Mutex(name) },
		Lose: func(t *testing.T, name string) { terminate(t, pool, l.ID(name)) },
	})
}
