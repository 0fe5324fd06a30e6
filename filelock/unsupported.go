//go:build !(darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd)

package filelock

import (
	"errors"

	"github.com/caesura-go/caesura"
)

// Options configures a [Locker]; see the Unix version. This platform has no
// flock(2), so [New] always fails.
type Options struct {
	Dir    string
	Prefix string
}

// DefaultPrefix is the key prefix of a zero [Options].
const DefaultPrefix = "file:"

// Locker is not available on this platform.
type Locker struct{}

// New returns an error: this platform has no flock(2).
func New(opts Options) (*Locker, error) {
	return nil, errors.New("filelock: not supported on this platform (no flock(2))")
}

// Dir returns "".
func (l *Locker) Dir() string { return "" }

// Mutex panics: no Locker can be created on this platform.
func (l *Locker) Mutex(name string) caesura.Lock {
	panic("filelock: not supported on this platform")
}
