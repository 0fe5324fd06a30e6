// Package redisbench compares caesura's Redis backend with redsync v4 and
// bsm/redislock on one local redis-server that the benchmarks start
// themselves: uncontended lock+release, 8 keys at once, and 8 workers
// contending for one key (as goroutines and as separate processes), with the
// hand-off, fairness and Redis-command measures of
// shared/research/measured-peers.md.
//
//	cd bench/redis && GOWORK=off go test -run '^$' -bench . -benchtime 1x -count 1   # contended runs
//	GOWORK=off go test -run '^$' -bench 'Uncontended|EightKeys' -benchmem
//
// It lives in a module of its own so that no user of caesura pulls the peer
// libraries.
package redisbench
