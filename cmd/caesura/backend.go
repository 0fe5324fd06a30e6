package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/filelock"
	"github.com/caesura-go/caesura/memlock"
)

// redacted replaces a password wherever caesura prints a URL or a message.
const redacted = "xxxxx"

// backendOptions are the flags that reach a backend.
type backendOptions struct {
	TTL time.Duration // lease of backends that have one; 0 means the backend's default
	// ConnectTimeout bounds the first connection of a network backend,
	// which tells an unreachable server from a reachable one.
	ConnectTimeout time.Duration
	// Held is how many locks the command may hold at once, for backends
	// that pin a connection per lock (PostgreSQL sizes its pool from it).
	Held int
}

// backend is an opened lock backend.
type backend struct {
	name  string // "file", "mem", "redis", ...
	shown string // the URL with its password redacted
	lock  func(name string) caesura.Lock
	close func() error // nil if there is nothing to close
}

func (b *backend) Close() error {
	if b == nil || b.close == nil {
		return nil
	}
	return b.close()
}

// opener opens a backend from its parsed URL. ctx bounds the connection
// check of a network backend.
type opener func(ctx context.Context, u *url.URL, o backendOptions) (*backend, error)

// openers maps a URL scheme to the code that opens it. A network backend
// registers itself from its own backend_<name>.go file, which imports its
// module; without that file its schemes are known but refused.
var openers = map[string]opener{
	"file": openFile,
	"mem":  openMem,
}

// plannedSchemes are the schemes caesura knows, with the backend they name.
var plannedSchemes = map[string]string{
	"file":           "file",
	"mem":            "mem",
	"redis":          "redis",
	"rediss":         "redis",
	"redis+sentinel": "redis",
	"redis+cluster":  "redis",
	"postgres":       "postgres",
	"postgresql":     "postgres",
	"etcd":           "etcd",
}

// register adds a backend's opener for its schemes (from an init function).
func register(o opener, schemes ...string) {
	for _, s := range schemes {
		openers[s] = o
	}
}

// openBackend parses raw and opens the backend it names. Every error names
// the URL with its password redacted, and a registers the password so that no
// later message shows it either.
func (a *app) openBackend(ctx context.Context, raw string, o backendOptions) (*backend, error) {
	a.addSecrets(urlSecrets(raw)...)
	shown := redactRaw(raw)
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL, password and all
		}
		return nil, usageErr("malformed backend URL %q: %v", shown, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme == "" {
		return nil, usageErr("backend URL %q has no scheme: want file:///dir, mem:, redis://host:port, postgres://..., or etcd://host:port", shown)
	}
	open, ok := openers[scheme]
	if !ok {
		if name, known := plannedSchemes[scheme]; known {
			return nil, usageErr("backend %s is not built into this caesura yet (URL %q)", name, shown)
		}
		return nil, usageErr("unknown backend scheme %q in %q: want one of %s", scheme, shown, strings.Join(sortedSchemes(), ", "))
	}
	u.Scheme = scheme
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = a.connectTimeout
	}
	b, err := open(ctx, u, o)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return nil, err
		}
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("backend %q: %w", shown, err)}
	}
	if b.shown == "" {
		b.shown = redactURL(u)
	}
	return b, nil
}

func sortedSchemes() []string {
	s := make([]string, 0, len(plannedSchemes))
	for k := range plannedSchemes {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// openFile opens file:///dir, or file: / file:// for filelock's default
// directory ($TMPDIR/caesura-locks-<uid>).
func openFile(_ context.Context, u *url.URL, _ backendOptions) (*backend, error) {
	if u.Opaque != "" {
		return nil, fmt.Errorf("file URL needs an absolute path, as in file:///var/lock/caesura (got %q)", "file:"+u.Opaque)
	}
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("file URL names host %q: the file backend locks this host only; write file:///dir", u.Host)
	}
	if err := noQuery(u); err != nil {
		return nil, err
	}
	l, err := filelock.New(filelock.Options{Dir: u.Path})
	if err != nil {
		return nil, err
	}
	return &backend{name: "file", shown: (&url.URL{Scheme: "file", Path: l.Dir()}).String(), lock: l.Mutex}, nil
}

// openMem opens mem:, a backend inside this process.
func openMem(_ context.Context, u *url.URL, _ backendOptions) (*backend, error) {
	if u.Opaque != "" || u.Host != "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("mem URL takes no host or path: write mem:")
	}
	if err := noQuery(u); err != nil {
		return nil, err
	}
	return &backend{name: "mem", lock: memlock.New(memlock.Options{}).Mutex}, nil
}

func noQuery(u *url.URL) error {
	if u.RawQuery != "" {
		return fmt.Errorf("%s URL takes no parameters (got %q)", u.Scheme, "?"+u.RawQuery)
	}
	return nil
}

// secretParams are query parameters whose values are secrets (PostgreSQL's
// password=, and the like).
var secretParams = []string{"password", "pass", "passwd", "pwd", "secret", "token", "sslpassword"}

func isSecretParam(k string) bool { return slices.Contains(secretParams, strings.ToLower(k)) }

// redactURL shows u with its password and secret parameters replaced.
func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery = redactQuery(c.RawQuery)
	return c.Redacted()
}

// redactQuery replaces the values of secret parameters in a raw query,
// leaving everything else as written (even what would not parse).
func redactQuery(q string) string {
	if q == "" {
		return q
	}
	pairs := strings.Split(q, "&")
	for i, p := range pairs {
		k, _, ok := strings.Cut(p, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if ok && isSecretParam(k) {
			pairs[i] = p[:strings.Index(p, "=")+1] + redacted
		}
	}
	return strings.Join(pairs, "&")
}

// userinfoRE finds "scheme://user:password@" in a string that may not parse.
var userinfoRE = regexp.MustCompile(`(//[^/@:?#]*):([^@/?#]*)@`)

// redactRaw shows a backend URL that may be malformed with its password
// replaced.
func redactRaw(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return redactURL(u)
	}
	s := userinfoRE.ReplaceAllString(raw, "${1}:"+redacted+"@")
	if base, q, ok := strings.Cut(s, "?"); ok {
		s = base + "?" + redactQuery(q)
	}
	return s
}

// urlSecrets returns the passwords in raw, as written and unescaped, so that
// they can be scrubbed from any message, whoever wrote it.
func urlSecrets(raw string) []string {
	var out []string
	add := func(s string) {
		if len(s) >= 3 && s != redacted { // shorter strings would mangle innocent text
			out = append(out, s)
		}
		if un, err := url.PathUnescape(s); err == nil && un != s && len(un) >= 3 {
			out = append(out, un)
		}
	}
	for _, m := range userinfoRE.FindAllStringSubmatch(raw, -1) {
		add(m[2])
	}
	if u, err := url.Parse(raw); err == nil {
		if p, ok := u.User.Password(); ok {
			add(p)
		}
	}
	if _, q, ok := strings.Cut(raw, "?"); ok {
		for _, p := range strings.Split(q, "&") {
			k, v, ok := strings.Cut(p, "=")
			if uk, err := url.QueryUnescape(k); err == nil {
				k = uk
			}
			if ok && isSecretParam(k) {
				v, _, _ = strings.Cut(v, "#")
				add(v)
				if uv, err := url.QueryUnescape(v); err == nil {
					add(uv)
				}
			}
		}
	}
	return out
}
