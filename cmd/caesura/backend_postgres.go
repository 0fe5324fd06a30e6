package main

// The PostgreSQL backend: pglock on a pgx pool. Kept in its own file (and
// its own require in go.mod) so that it can be dropped or fixed on its own.

import (
	"context"
	"fmt"
	"net/url"

	"github.com/caesura-go/caesura/pglock"
	"github.com/jackc/pgx/v5/pgxpool"
)

func init() { register(openPostgres, "postgres", "postgresql") }

// openPostgres opens postgres://user:password@host:port/db?params, any URL
// that pgx accepts (sslmode, pool_max_conns, ...). --ttl does not apply: a
// PostgreSQL lock lives as long as its session. Without pool_max_conns the
// pool gets a connection per lock that may be held at once, plus one.
func openPostgres(ctx context.Context, u *url.URL, o backendOptions) (*backend, error) {
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		return nil, err
	}
	// Every held lock pins a connection: a pool smaller than the locks held
	// at once would make a waiter wait for a connection while holding locks.
	if !u.Query().Has("pool_max_conns") && int(cfg.MaxConns) <= o.Held {
		cfg.MaxConns = int32(o.Held + 1)
	}
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach PostgreSQL at %s: %w", cfg.ConnConfig.Host+":"+fmt.Sprint(cfg.ConnConfig.Port), err)
	}
	l, err := pglock.New(pool, pglock.Options{})
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &backend{name: "postgres", lock: l.Mutex, close: func() error { pool.Close(); return nil }}, nil
}
