package pglock

// peekState is what a look at an idle connection's socket found.
type peekState int

const (
	peekUnknown peekState = iota // cannot tell: ask the server
	peekAlive                    // open, nothing pending
	peekDead                     // closed: the session is gone
)
