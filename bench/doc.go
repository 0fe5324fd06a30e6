// Package bench holds caesura's benchmarks against peer libraries. It is a
// module of its own so that the peers (golang.org/x/sync here; redsync,
// bsm/redislock, etcd's concurrency.Mutex in the backend folders) never reach
// the go.mod of a caesura user.
//
// Run: go test -run X -bench . -benchmem -count 6 | tee new.txt; benchstat new.txt
package bench
