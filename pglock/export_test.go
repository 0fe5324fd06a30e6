package pglock

// Watching reports how many sessions of l the liveness check watches, and
// whether its timer is armed.
func Watching(l *Locker) (sessions int, armed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sessions), l.check != nil
}
