package redisbench

import (
	"context"
	"strings"
	"testing"
	"time"

	bsm "github.com/bsm/redislock"
	"github.com/redis/go-redis/v9"

	"github.com/caesura-go/caesura/redislock"
)

// fakeScripter answers every script call with reply(args), args being the
// command as go-redis built it, without a network or a server: what is left
// is the library's own client work (and go-redis's command building).
type fakeScripter struct{ reply func(args []any) any }

func (f fakeScripter) cmd(ctx context.Context, args ...any) *redis.Cmd {
	c := redis.NewCmd(ctx, args...)
	c.SetVal(f.reply(args))
	return c
}
func (f fakeScripter) Eval(ctx context.Context, s string, keys []string, args ...any) *redis.Cmd {
	return f.EvalSha(ctx, s, keys, args...)
}
func (f fakeScripter) EvalSha(ctx context.Context, s string, keys []string, args ...any) *redis.Cmd {
	return f.call(ctx, "evalsha", s, keys, args)
}
func (f fakeScripter) EvalRO(ctx context.Context, s string, keys []string, args ...any) *redis.Cmd {
	return f.EvalSha(ctx, s, keys, args...)
}
func (f fakeScripter) EvalShaRO(ctx context.Context, s string, keys []string, args ...any) *redis.Cmd {
	return f.EvalSha(ctx, s, keys, args...)
}
func (f fakeScripter) FCall(ctx context.Context, fn string, keys []string, args ...any) *redis.Cmd {
	return f.call(ctx, "fcall", fn, keys, args)
}
func (f fakeScripter) call(ctx context.Context, cmd, s string, keys []string, args []any) *redis.Cmd {
	a := make([]any, 0, 3+len(keys)+len(args))
	a = append(a, cmd, s, len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	a = append(a, args...)
	return f.cmd(ctx, a...)
}
func (f fakeScripter) FunctionLoad(ctx context.Context, code string) *redis.StringCmd { return nil }
func (f fakeScripter) ScriptExists(ctx context.Context, h ...string) *redis.BoolSliceCmd {
	return nil
}
func (f fakeScripter) ScriptLoad(ctx context.Context, s string) *redis.StringCmd { return nil }
func (f fakeScripter) Subscribe(ctx context.Context, ch ...string) *redis.PubSub { return nil }

// BenchmarkClientOnly measures the client side of a lock + release alone,
// against a fake client: caesura and bsm/redislock (the peer whose cycle is
// closest to caesura's) each build two script calls and read their
// replies. The rest of a real cycle is two round trips and the server.
func BenchmarkClientOnly(b *testing.B) {
	ctx := context.Background()
	b.Run("caesura", func(b *testing.B) {
		// caesura calls its library's functions: the release replies 1,
		// the acquire a fence.
		rl, err := redislock.New(fakeScripter{func(args []any) any {
			if strings.HasSuffix(args[1].(string), "_release") {
				return int64(1)
			}
			return "1795000000000000"
		}}, &redislock.Options{TTL: ttl})
		if err != nil {
			b.Fatal(err)
		}
		defer rl.Close()
		b.ReportAllocs()
		for b.Loop() {
			h, err := rl.Mutex("k").Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := h.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bsm", func(b *testing.B) {
		// bsm's obtain script takes 3 arguments and replies OK; its release
		// takes 1 and replies 1.
		bl := bsm.New(fakeScripter{func(args []any) any {
			if len(args) == 4+3 {
				return "OK"
			}
			return int64(1)
		}})
		b.ReportAllocs()
		for b.Loop() {
			l, err := bl.Obtain(ctx, "k", 8*time.Second, nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
