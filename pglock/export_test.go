package pglock

// Watching reports how many sessions of l the liveness check watches, and
// whether its timer is armed.
func Watching(l *Locker) (sessions int, armed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sessions), l.check != nil
}

// Horizon reports the fencing sequence's horizon as l last saw it (0 for
// none), and whether l tracks it.
func Horizon(l *Locker) (horizon int64, tracked bool) {
	return l.horizon.Load(), l.predict.Load()
}
