module github.com/caesura-go/caesura/bench

go 1.26.0

require (
	github.com/caesura-go/caesura v0.0.0
	github.com/gofrs/flock v0.13.2
	go.uber.org/goleak v1.3.0
	golang.org/x/sync v0.25.0
	golang.org/x/sys v0.49.0
)

replace github.com/caesura-go/caesura => ../
