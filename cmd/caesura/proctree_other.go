//go:build !linux

package main

import (
	"errors"
	"os"
)

// becomeSubreaper: only Linux lets a process adopt its orphaned
// descendants.
func becomeSubreaper() error { return errors.ErrUnsupported }

// newProcessTree returns the command p alone, whose exec.Cmd.Wait closes
// done: without a subreaper, caesura cannot follow the processes the
// command starts.
func newProcessTree(_ bool, p *os.Process, done <-chan struct{}) processTree {
	return commandOnly{proc: p, done: done}
}
