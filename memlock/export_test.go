package memlock

import "fmt"

// Waiting returns how many callers hold or wait for name's key.
func (l *Locker) Waiting(name string) int {
	key := l.prefix + name
	sh := l.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.m[key]; e != nil {
		return int(e.refs.Load())
	}
	return 0
}

// SameShard returns n names whose keys share a shard, so that tests can make
// entries move between keys.
func (l *Locker) SameShard(n int) []string {
	var names []string
	target := l.shard(l.prefix + "0")
	for i := 0; len(names) < n; i++ {
		name := fmt.Sprint(i)
		if l.shard(l.prefix+name) == target {
			names = append(names, name)
		}
	}
	return names
}
