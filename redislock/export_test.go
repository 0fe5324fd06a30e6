package redislock

// ID returns l's id: the start of its tokens and the end of its channel.
func ID(l *Locker) string { return l.id }

// Ended reports whether h was lost or released, without making its Lost
// context.
func Ended(h *Held) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ended
}

// LibraryName is the name of the function library the scripts load.
var LibraryName = functions.name

// SameTakenSlot reports whether l remembers keys a and b as one, when it
// found either taken (see Locker.taken).
func SameTakenSlot(l *Locker, a, b string) bool { return l.takenSlot(a) == l.takenSlot(b) }
