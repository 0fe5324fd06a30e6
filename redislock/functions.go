package redislock

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// A script is one of the backend's Lua scripts. Where the server has Redis
// Functions (Redis 7 and later) it runs as a function of the backend's
// library (FCALL), which costs the server about 2.6k instructions less per
// call than a cached script (EVALSHA; callgrind, Redis 7.0): no script hash
// to look up, no KEYS and ARGV globals to set. Elsewhere it runs as a cached
// script, sent in full (EVAL) when the server does not have it yet.
type script struct {
	name string // the function's name in the library, set by newLibrary
	src  string
	eval *redis.Script
}

func newScript(src string) *script {
	return &script{src: src, eval: redis.NewScript(src)}
}

// library is the Lua function library of a set of scripts. Its name and
// the names of its functions carry a hash of the scripts, so that versions
// of this package that share a server load libraries of their own and
// never replace each other's functions.
type library struct {
	name string
	code string // FUNCTION LOAD's argument
}

// newLibrary names every script's function and returns their library. Each
// script's body becomes the body of a function whose parameters are named
// KEYS and ARGV, as a script sees them.
func newLibrary(scripts map[string]*script) *library {
	names := make([]string, 0, len(scripts))
	for n := range scripts {
		names = append(names, n)
	}
	slices.Sort(names) // the hash must not depend on map order
	h := sha1.New()
	for _, n := range names {
		h.Write([]byte(n + "\x00" + scripts[n].src + "\x00"))
	}
	lib := &library{name: "caesura_" + hex.EncodeToString(h.Sum(nil))[:12]}
	var b strings.Builder
	b.WriteString("#!lua name=" + lib.name + "\n")
	for _, n := range names {
		s := scripts[n]
		s.name = lib.name + "_" + n
		b.WriteString("redis.register_function('" + s.name + "', function(KEYS, ARGV)\n" + s.src + "\nend)\n")
	}
	lib.code = b.String()
	return lib
}

// functionClient is the part of a go-redis client that runs functions.
// Every [redis.UniversalClient] implements it; a [Client] that does not
// runs the scripts as cached scripts.
type functionClient interface {
	FCall(ctx context.Context, function string, keys []string, args ...any) *redis.Cmd
	FunctionLoad(ctx context.Context, code string) *redis.StringCmd
}

// conn is one Redis of a Locker (its only one, or a Redlock master) and
// how scripts run there.
type conn struct {
	Client
	fc functionClient // nil when the client cannot call functions

	// scriptsOnly is set once the server showed that it will not run the
	// library (no Redis Functions, or an ACL that denies FCALL or FUNCTION
	// LOAD): scripts run as cached scripts from then on, without another
	// try.
	scriptsOnly atomic.Bool

	do doer // nil when the client cannot send a plain command
	// noCondSet is set once the server showed that it has no conditional
	// SET (IFEQ): releases run the script from then on.
	noCondSet atomic.Bool
}

// doer is the part of a go-redis client that sends any command. Every
// [redis.UniversalClient] implements it.
type doer interface {
	Do(ctx context.Context, args ...any) *redis.Cmd
}

func newConn(c Client) *conn {
	fc, _ := c.(functionClient)
	do, _ := c.(doer)
	return &conn{Client: c, fc: fc, do: do}
}

// condRelease releases one key held with value val (token and fence) by a
// conditional SET, SET key next KEEPTTL IFEQ val GET (Redis 8.4, Valkey
// 8.1): one plain command, which costs the server about a third of the
// release script. The server writes the next fence only if the key holds
// val, and replies what the key held, so the answer is as exact as the
// script's. done is false when the script must release the key instead:
// the key has a queue to hand on, the server has no IFEQ (after which c
// never tries again: see condSetRefused), or it refused this call (a key
// of another type, a replica, a server loading its data).
func (c *conn) condRelease(ctx context.Context, key string, val []byte, next uint64) (freed, done bool, err error) {
	if c.do == nil || c.noCondSet.Load() {
		return false, false, nil
	}
	old, err := c.do.Do(ctx, "SET", key, next, "KEEPTTL", "IFEQ", val, "GET").Text()
	switch {
	case err == nil:
		if old == string(val) {
			return true, true, nil
		}
		// Held by val with waiters: the script hands the key on.
		queued := len(old) > len(val) && old[len(val)] == '|' && old[:len(val)] == string(val)
		// Otherwise not val's: IFEQ changed nothing.
		return false, !queued, nil
	case errors.Is(err, redis.Nil): // missing: the lease ended
		return false, true, nil
	case !isServerError(err):
		return false, true, err
	case condSetRefused(err):
		c.noCondSet.Store(true)
	}
	return false, false, nil
}

// plainValue is the value a plain SET writes for token tok (see
// plainAcquire): the token and a fencing token of 0, as an unfenced Locker
// issues none (see scripts.go). The release sends it for the script to
// compare whole.
func plainValue(tok string) string { return tok + "0" }

// plainAcquire tries to take one missing key for an unfenced Locker (its
// one Redis, or a Redlock master) with SET key val PX ttl NX, val being
// plainValue of the attempt's token: one plain command where the acquire
// script costs the server a GET and a SET inside a script, as redsync's
// acquire is. done is false when the script must decide: the key exists
// (held, or free with the counter a fenced Locker keeps), or the server
// refused the command; a network error is done, with err.
func (c *conn) plainAcquire(ctx context.Context, key, val string, ttlMs any) (ok, done bool, err error) {
	if c.do == nil {
		return false, false, nil
	}
	err = c.do.Do(ctx, "SET", key, val, "PX", ttlMs, "NX").Err()
	switch {
	case err == nil:
		return true, true, nil
	case errors.Is(err, redis.Nil), isServerError(err):
		return false, false, nil
	}
	return false, true, err
}

// condSetRefused reports whether an error reply to a conditional SET says
// the server will never take it: a generic error ("ERR syntax error" before
// Redis 8.4 and Valkey 8.1; a proxy's "ERR unknown option"). Errors with a
// code of their own concern the call (WRONGTYPE, READONLY, LOADING, OOM,
// BUSY, TRYAGAIN, NOPERM for a key), and the script gets them too.
func condSetRefused(err error) bool {
	return strings.HasPrefix(err.Error(), "ERR ")
}

// run runs s on c with keys and args. The first call of a function that the
// server does not have (a new or restarted server, FUNCTION FLUSH, a Cluster
// master added since) loads the library and calls it again.
func (s *script) run(ctx context.Context, c *conn, keys []string, args ...any) *redis.Cmd {
	if c.fc == nil || c.scriptsOnly.Load() {
		return s.eval.Run(ctx, c.Client, keys, args...)
	}
	cmd := c.fc.FCall(ctx, s.name, keys, args...)
	switch err := cmd.Err(); {
	case err == nil || !isServerError(err):
		return cmd
	case unsupported(err):
		c.scriptsOnly.Store(true)
		return s.eval.Run(ctx, c.Client, keys, args...)
	case !strings.Contains(err.Error(), "Function not found"):
		return cmd
	}
	switch err := c.load(ctx); {
	case err == nil:
		return c.fc.FCall(ctx, s.name, keys, args...)
	case isServerError(err):
		// The server refused the library. Cached scripts need none: from
		// now on where it will never take it (an ACL without FUNCTION LOAD,
		// a proxy without it), for this call where the refusal may pass (a
		// replica, a server loading its data, out of memory).
		if unsupported(err) {
			c.scriptsOnly.Store(true)
		}
		return s.eval.Run(ctx, c.Client, keys, args...)
	default:
		cmd.SetErr(err)
		return cmd
	}
}

// load loads the library on c's server, on every master of a Cluster.
// Another caller may have loaded it meanwhile: that is no error.
func (c *conn) load(ctx context.Context) error {
	loadOn := func(ctx context.Context, fc functionClient) error {
		err := fc.FunctionLoad(ctx, functions.code).Err()
		if err != nil && strings.Contains(err.Error(), "already exists") {
			return nil
		}
		return err
	}
	if cc, ok := c.Client.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			return loadOn(ctx, m)
		})
	}
	return loadOn(ctx, c.fc)
}

// isServerError reports whether err is an error reply of the server, not a
// network error or a context's.
func isServerError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.Nil)
}

// unsupported reports whether an error reply to FCALL or FUNCTION LOAD says
// the server will never run functions for this client: an unknown command
// (before Redis 7, or a proxy) or an ACL that denies the command (not one
// that denies a key).
func unsupported(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "unknown command") ||
		strings.HasPrefix(msg, "noperm") && (strings.Contains(msg, "'fcall'") || strings.Contains(msg, "'function"))
}
