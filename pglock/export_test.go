package pglock

// Watching reports how many sessions of l the liveness check watches, and
// whether its timer is armed.
func Watching(l *Locker) (sessions int, armed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sessions), l.check != nil
}

// SessionSkip is how many values of the fencing sequence a database session
// skips before its first token, when tokens are drawn without a flush.
const SessionSkip = sessionSkip

// FastTokens reports whether l draws tokens without waiting for a WAL flush
// (false also before l looked its sequence up).
func FastTokens(l *Locker) bool {
	f := l.resolved.Load()
	return f != nil && f.fast
}
