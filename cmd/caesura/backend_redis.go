package main

// The Redis backend: redislock on a go-redis v9 client. Kept in its own file
// (and its own require in go.mod) so that it can be dropped or fixed on its
// own.

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/redislock"
	"github.com/redis/go-redis/v9"
)

func init() {
	register(openRedis, "redis", "rediss", "redis+sentinel", "redis+cluster")
	// go-redis logs dial failures on standard error, unredacted and once per
	// retry; caesura reports what failed itself, in one line.
	redis.SetLogger(quietRedisLogger{})
}

type quietRedisLogger struct{}

func (quietRedisLogger) Printf(context.Context, string, ...any) {}

// openRedis opens
//
//	redis://[user:password@]host:port[/db][?params]      one server (rediss: TLS)
//	redis+sentinel://[user:password@]host:port[,host:port]/master[/db][?params]
//	redis+cluster://[user:password@]host:port[,host:port][?params]
//
// params are go-redis's (dial_timeout, read_timeout, ...). For Sentinel the
// user and password are the master's; the sentinels are asked without. --ttl
// is the lease (redislock.Options.TTL), renewed every third of it.
func openRedis(ctx context.Context, u *url.URL, o backendOptions) (*backend, error) {
	hosts := strings.Split(u.Host, ",")
	for _, h := range hosts {
		if h == "" {
			return nil, fmt.Errorf("%s URL has an empty host in %q", u.Scheme, u.Host)
		}
	}
	// go-redis parses redis:// URLs with one host; the others go in addr=.
	plain := *u
	plain.Scheme = "redis"
	if u.Scheme == "rediss" {
		plain.Scheme = "rediss"
	}
	plain.Host = hosts[0]
	q := plain.Query()
	for _, h := range hosts[1:] {
		q.Add("addr", h)
	}
	plain.RawQuery = q.Encode()

	var client redis.UniversalClient
	switch u.Scheme {
	case "redis", "rediss":
		if len(hosts) > 1 {
			return nil, fmt.Errorf("%s URL names %d hosts: use redis+sentinel:// or redis+cluster://", u.Scheme, len(hosts))
		}
		opt, err := redis.ParseURL(plain.String())
		if err != nil {
			return nil, err
		}
		client = redis.NewClient(opt)
	case "redis+cluster":
		if plain.Path != "" && plain.Path != "/" {
			return nil, fmt.Errorf("redis+cluster URL takes no path (got %q)", plain.Path)
		}
		opt, err := redis.ParseClusterURL(plain.String())
		if err != nil {
			return nil, err
		}
		client = redis.NewClusterClient(opt)
	case "redis+sentinel":
		parts := strings.FieldsFunc(plain.Path, func(r rune) bool { return r == '/' })
		if len(parts) == 0 || len(parts) > 2 {
			return nil, fmt.Errorf("redis+sentinel URL needs /master[/db] after the hosts (got path %q)", plain.Path)
		}
		plain.Path = ""
		if len(parts) == 2 {
			plain.Path = "/" + parts[1]
		}
		q := plain.Query()
		q.Set("master_name", parts[0])
		plain.RawQuery = q.Encode()
		user := plain.User
		plain.User = nil
		opt, err := redis.ParseFailoverURL(plain.String())
		if err != nil {
			return nil, err
		}
		if user != nil {
			opt.Username = user.Username()
			opt.Password, _ = user.Password()
		}
		client = redis.NewFailoverClient(opt)
	default:
		return nil, fmt.Errorf("scheme %q is not a Redis scheme", u.Scheme)
	}

	pctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		// A Sentinel client's Close can take seconds when no sentinel
		// answers; caesura is about to exit, so it waits only briefly.
		closed := make(chan struct{})
		go func() { client.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(100 * time.Millisecond):
		}
		return nil, fmt.Errorf("cannot reach Redis at %s: %w", u.Host, err)
	}
	l, err := redislock.New(client, &redislock.Options{TTL: o.TTL})
	if err != nil {
		client.Close()
		return nil, err
	}
	return &backend{name: "redis", lock: func(name string) caesura.Lock { return l.Mutex(name) }, close: func() error {
		err := l.Close()
		if cerr := client.Close(); err == nil {
			err = cerr
		}
		return err
	}}, nil
}
