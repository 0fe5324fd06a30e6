package main

// The etcd backend: etcdlock on a clientv3 client. Kept in its own file (and
// its own require in go.mod) so that it can be dropped or fixed on its own.

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caesura-go/caesura/etcdlock"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func init() { register(openEtcd, "etcd") }

// etcdCloseTimeout bounds revoking the session lease at exit.
const etcdCloseTimeout = 2 * time.Second

// openEtcd opens etcd://[user:password@]host:port[,host:port] (plain
// HTTP endpoints). --ttl is the session lease (etcdlock.WithTTL).
func openEtcd(ctx context.Context, u *url.URL, o backendOptions) (*backend, error) {
	if u.Host == "" {
		return nil, fmt.Errorf("etcd URL needs host:port[,host:port]")
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("etcd URL takes no path (got %q)", u.Path)
	}
	if err := noQuery(u); err != nil {
		return nil, err
	}
	var endpoints []string
	for _, h := range strings.Split(u.Host, ",") {
		if h == "" {
			return nil, fmt.Errorf("etcd URL has an empty host in %q", u.Host)
		}
		endpoints = append(endpoints, "http://"+h)
	}
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: o.ConnectTimeout,
		Logger:      zap.NewNop(), // the client's own logs would not be redacted
	}
	if u.User != nil {
		cfg.Username = u.User.Username()
		cfg.Password, _ = u.User.Password()
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot reach etcd at %s: %w", u.Host, err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	if _, err := cli.Get(ctx, "caesura-ping"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("cannot reach etcd at %s: %w", u.Host, err)
	}
	var opts []etcdlock.Option
	if o.TTL > 0 {
		opts = append(opts, etcdlock.WithTTL(o.TTL))
	}
	l, err := etcdlock.New(cli, opts...)
	if err != nil {
		cli.Close()
		return nil, err
	}
	return &backend{name: "etcd", lock: l.Mutex, close: func() error {
		ctx, cancel := context.WithTimeout(context.Background(), etcdCloseTimeout)
		defer cancel()
		err := l.Close(ctx)
		if cerr := cli.Close(); err == nil {
			err = cerr
		}
		return err
	}}, nil
}
