module github.com/caesura-go/caesura/reliability

go 1.26.0

require (
	github.com/anishathalye/porcupine v1.3.1
	github.com/caesura-go/caesura v0.0.0
	github.com/caesura-go/caesura/redislock v0.0.0
	github.com/redis/go-redis/v9 v9.23.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

replace (
	github.com/caesura-go/caesura => ../
	github.com/caesura-go/caesura/redislock => ../redislock
)
