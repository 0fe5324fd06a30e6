package redisbench

import (
	"context"
	"testing"
)

// BenchmarkRoundTrip is the floor under every figure of this module: one
// PING from go-redis to the local redis-server, one round trip.
func BenchmarkRoundTrip(b *testing.B) {
	s := startServer(b)
	c := s.client(b, nil)
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil { // connect
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
