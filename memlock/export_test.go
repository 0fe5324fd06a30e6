package memlock

// Waiting returns how many callers hold or wait for name's key.
func (l *Locker) Waiting(name string) int {
	key := l.prefix + name
	sh := l.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.m[key]; e != nil {
		return e.refs
	}
	return 0
}
