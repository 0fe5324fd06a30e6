package redislock

// ID returns l's id: the start of its tokens and the end of its channel.
func ID(l *Locker) string { return l.id }
