//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package filelock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caesura-go/caesura"
	"github.com/caesura-go/caesura/memlock"
)

// Options configures a [Locker]. A zero Options is the default: lock files in
// a per-user directory under [os.TempDir], keys prefixed with "file:".
type Options struct {
	// Dir is the directory that holds the lock files. Processes exclude
	// each other when they use the same Dir and the same keys. New creates
	// it with mode 0o700 if it does not exist; to share locks between
	// users, create it yourself with the permissions you need.
	//
	// Empty means filepath.Join(os.TempDir(), "caesura-locks-<uid>"). The
	// uid keeps users apart, and New refuses that directory unless it is a
	// real directory (not a symbolic link) owned by the current user that
	// no other user can write to: in a shared temporary directory another
	// user could otherwise create it first and plant links.
	Dir string

	// Prefix is put before every name to form the key, which orders the
	// lock among all the locks a program uses and names its file. Empty
	// means "file:".
	Prefix string
}

// DefaultPrefix is the key prefix of a zero [Options].
const DefaultPrefix = "file:"

// Locker names locks backed by files in one directory. It is safe for
// concurrent use. Create it with [New]; the zero value is not usable.
//
// A Locker keeps up to 64 lock files open while they are not held,
// so that a key used again skips open(2); they are closed when the Locker
// is garbage collected.
type Locker struct {
	dir    string
	prefix string
	host   string          // this host's name, recorded in lock files for Inspect
	gates  *memlock.Locker // in-process FIFO queue per key, by file path
	idle   *idleFiles
}

// New returns a Locker for opts, creating the directory if needed. It fails
// if the directory cannot be created or, for the default directory, fails
// the ownership check described at [Options].Dir.
func New(opts Options) (*Locker, error) {
	dir, prefix := opts.Dir, opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "caesura-locks-"+strconv.Itoa(os.Getuid()))
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("filelock: %w", err)
		}
		if err := checkPrivate(dir); err != nil {
			return nil, err
		}
	} else {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("filelock: %w", err)
		}
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("filelock: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("filelock: %s is not a directory", dir)
	}
	host, _ := os.Hostname()
	l := &Locker{dir: dir, prefix: prefix, host: host, gates: memlock.New(memlock.Options{}), idle: &idleFiles{fds: make(map[string]int)}}
	runtime.AddCleanup(l, (*idleFiles).closeAll, l.idle)
	return l, nil
}

// checkPrivate checks that dir is a directory, not a link, owned by the
// current user and not writable by anyone else.
func checkPrivate(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("filelock: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("filelock: refusing default lock directory %s: it must be a directory owned by uid %d and writable only by it", dir, os.Getuid())
	}
	return nil
}

// Dir returns the directory that holds the lock files.
func (l *Locker) Dir() string { return l.dir }

// Mutex names the lock with key Prefix+name without acquiring it. Any
// non-empty string is a valid name: '/', "..", NUL and invalid UTF-8 are all
// fine (see the package doc, # Files). The returned Lock implements
// [caesura.TryLocker], and its Held implements [caesura.Fenced].
func (l *Locker) Mutex(name string) caesura.Lock {
	key := l.prefix + name
	path := filepath.Join(l.dir, fileName(key))
	return &mutex{l: l, key: key, empty: name == "", path: path, gate: l.gates.Mutex(path)}
}

type mutex struct {
	l     *Locker
	key   string
	empty bool // an empty name, refused like memlock refuses it
	path  string
	gate  caesura.Lock // this key's place in l.gates
}

func (m *mutex) Key() string { return m.key }

// Acquire waits for the lock: first for this Locker's goroutines ahead of it
// for the same key (FIFO), then for other processes (flock(2), in the
// kernel's order). It returns an error matching [caesura.ErrNotAcquired] and
// ctx's error if ctx ends the wait; other errors come from the file system.
// On error nothing is held. An empty name gets an error matching
// [caesura.ErrInvalidLock].
func (m *mutex) Acquire(ctx context.Context) (caesura.Held, error) {
	if m.empty {
		return nil, m.invalid()
	}
	if ctx.Err() != nil {
		return nil, m.ctxError(ctx)
	}
	g, err := m.gate.Acquire(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, m.ctxError(ctx)
		}
		return nil, fmt.Errorf("filelock: lock %s: %w", caesura.QuoteKey(m.key), err)
	}
	return m.lock(ctx, g, true)
}

// TryAcquire takes the lock if it is free and otherwise returns at once with
// an error matching [caesura.ErrNotAcquired].
func (m *mutex) TryAcquire(ctx context.Context) (caesura.Held, error) {
	if m.empty {
		return nil, m.invalid()
	}
	g, err := m.gate.(caesura.TryLocker).TryAcquire(ctx)
	if err != nil {
		return nil, m.taken()
	}
	return m.lock(ctx, g, false)
}

func (m *mutex) invalid() error {
	return fmt.Errorf("filelock: %w: empty name", caesura.ErrInvalidLock)
}

// leave gives up a gate turn; memlock's Release fails only for a stale
// handle, which never happens here.
func leave(g caesura.Held) { _ = g.Release(context.Background()) }

func (m *mutex) taken() error {
	return fmt.Errorf("filelock: lock %s: %w", caesura.QuoteKey(m.key), caesura.ErrNotAcquired)
}

func (m *mutex) ctxError(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		err = errors.Join(err, cause)
	}
	return caesura.NotAcquired(m.key, err)
}

// errAbandoned means the caller's context ended while a helper goroutine
// waits in flock(2); the helper now owns the descriptor and the gate.
var errAbandoned = errors.New("abandoned")

// lock takes the file lock while holding the gate g. It either returns a
// Held that owns g and the descriptor, or releases g.
func (m *mutex) lock(ctx context.Context, g caesura.Held, wait bool) (caesura.Held, error) {
	for {
		fd, err := m.l.idle.take(m.path)
		if err != nil {
			leave(g)
			return nil, fmt.Errorf("filelock: lock %s: %w", caesura.QuoteKey(m.key), err)
		}
		err = flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == syscall.EWOULDBLOCK {
			if !wait {
				m.l.idle.put(m.path, fd)
				leave(g)
				return nil, m.taken()
			}
			if err = m.wait(ctx, fd, g); err == errAbandoned {
				return nil, m.ctxError(ctx)
			}
		}
		if err != nil {
			syscall.Close(fd)
			leave(g)
			return nil, fmt.Errorf("filelock: lock %s: flock: %w", caesura.QuoteKey(m.key), err)
		}
		// The descriptor may name a file that was deleted (and perhaps
		// re-created) since it was opened: then its lock excludes nobody.
		// Start again with a fresh descriptor.
		gone, err := unlinked(fd)
		if err != nil || gone {
			flock(fd, syscall.LOCK_UN)
			syscall.Close(fd)
			if err != nil {
				leave(g)
				return nil, fmt.Errorf("filelock: lock %s: %w", caesura.QuoteKey(m.key), err)
			}
			continue
		}
		token, err := bumpToken(fd, m.l.host)
		if err != nil {
			flock(fd, syscall.LOCK_UN)
			m.l.idle.put(m.path, fd)
			leave(g)
			return nil, fmt.Errorf("filelock: lock %s: fencing token: %w", caesura.QuoteKey(m.key), err)
		}
		return &held{m: m, fd: fd, gate: g, token: token}, nil
	}
}

// wait blocks in flock(2) until fd is locked or ctx ends. flock cannot be
// interrupted, so when ctx can end, the wait happens in a helper goroutine.
// If ctx ends first, wait returns errAbandoned and the helper waits on
// until the other process unlocks the file, then unlocks it at once, keeps
// fd for later and releases the gate g. The helper (and the OS thread
// blocked in flock) lives as long as the other process holds the file.
func (m *mutex) wait(ctx context.Context, fd int, g caesura.Held) error {
	done := ctx.Done()
	if done == nil {
		return flock(fd, syscall.LOCK_EX)
	}
	const (
		waiting = iota
		delivered
		abandoned
	)
	var state atomic.Int32
	result := make(chan error, 1)
	go func() {
		err := flock(fd, syscall.LOCK_EX)
		if state.CompareAndSwap(waiting, delivered) {
			result <- err
			return
		}
		if err == nil {
			flock(fd, syscall.LOCK_UN)
			m.l.idle.put(m.path, fd)
		} else {
			syscall.Close(fd)
		}
		leave(g)
	}()
	select {
	case err := <-result:
		return err
	case <-done:
		if state.CompareAndSwap(waiting, abandoned) {
			return errAbandoned
		}
		return <-result // the lock came at the same moment: keep it
	}
}

type held struct {
	m        *mutex
	fd       int
	gate     caesura.Held
	token    uint64
	released atomic.Bool
}

// Token returns the fencing token: the number of acquisitions of this key
// in this directory so far, this one included.
func (h *held) Token() uint64 { return h.token }

// Release unlocks the file and hands the key to the next goroutine of this
// Locker waiting for it. A second Release returns an error matching
// [caesura.ErrNotHeld] and changes nothing. ctx is not used: unlocking does
// not wait.
func (h *held) Release(ctx context.Context) error {
	if !h.released.CompareAndSwap(false, true) {
		return fmt.Errorf("filelock: release %s: %w", caesura.QuoteKey(h.m.key), caesura.ErrNotHeld)
	}
	err := flock(h.fd, syscall.LOCK_UN)
	if err != nil {
		syscall.Close(h.fd) // closing the last descriptor unlocks too
		err = fmt.Errorf("filelock: release %s: %w", caesura.QuoteKey(h.m.key), err)
	} else {
		h.m.l.idle.put(h.m.path, h.fd)
	}
	leave(h.gate)
	return err
}

// flock calls flock(2), retrying when a signal interrupts it.
func flock(fd, how int) error {
	for {
		err := syscall.Flock(fd, how)
		if err != syscall.EINTR {
			return err
		}
	}
}

// unlinked reports whether fd's file has been deleted: then its lock
// excludes nobody who opens the path now. One fstat(2) is much cheaper than
// comparing with a stat(2) of the path, and catches what happens (a cleaner
// deleting idle files); a file renamed over the path is not caught.
func unlinked(fd int) (bool, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return false, err
	}
	return st.Nlink == 0, nil
}

// bumpToken reads the fencing counter (8 bytes, big-endian, at offset 0; a
// new, empty file counts as 0), adds one, writes it back and returns it.
// It is called with the file locked.
// The lock file's first 64 bytes: the fencing counter, then who took the
// lock last and when, for Inspect:
//
//	0  8 bytes  fencing counter, big-endian
//	8  8 bytes  acquisition time, Unix nanoseconds, big-endian
//	16 4 bytes  the holder's process id, big-endian
//	20 1 byte   length of the host name that follows (at most 43 bytes)
//	21 ...      host name
const recordSize = 64

// bumpToken increments the counter and records the new holder, in one
// pwrite.
func bumpToken(fd int, host string) (uint64, error) {
	var b [recordSize]byte
	if _, err := syscall.Pread(fd, b[:8], 0); err != nil {
		return 0, err
	}
	token := binary.BigEndian.Uint64(b[:8]) + 1
	binary.BigEndian.PutUint64(b[:8], token)
	binary.BigEndian.PutUint64(b[8:16], uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint32(b[16:20], uint32(os.Getpid()))
	host = host[:min(len(host), recordSize-21)]
	b[20] = byte(len(host))
	copy(b[21:], host)
	n, err := syscall.Pwrite(fd, b[:], 0)
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write (%d bytes)", n)
	}
	return token, err
}

// readRecord reads what bumpToken wrote last.
func readRecord(fd int) (token uint64, since time.Time, pid int, host string, err error) {
	var b [recordSize]byte
	n, err := syscall.Pread(fd, b[:], 0)
	if err != nil || n < 8 {
		return 0, time.Time{}, 0, "", err
	}
	token = binary.BigEndian.Uint64(b[:8])
	if n < 21 {
		return token, time.Time{}, 0, "", nil
	}
	since = time.Unix(0, int64(binary.BigEndian.Uint64(b[8:16])))
	pid = int(binary.BigEndian.Uint32(b[16:20]))
	hl := min(int(b[20]), n-21)
	return token, since, pid, string(b[21 : 21+hl]), nil
}

// maxIdleFiles bounds the lock files a Locker keeps open while not held.
const maxIdleFiles = 64

// idleFiles keeps descriptors of lock files that are not locked, by path.
// The gate guarantees that at most one goroutine of the Locker uses a path
// at a time, so a descriptor taken out is owned by its taker.
type idleFiles struct {
	mu  sync.Mutex
	fds map[string]int
}

// take returns an open descriptor for path, from the idle set or opened now.
func (c *idleFiles) take(path string) (int, error) {
	c.mu.Lock()
	fd, ok := c.fds[path]
	if ok {
		delete(c.fds, path)
	}
	c.mu.Unlock()
	if ok {
		return fd, nil
	}
	for {
		fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0o666)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

// put keeps an unlocked descriptor for later, or closes it (and another, if
// the set is full).
func (c *idleFiles) put(path string, fd int) {
	c.mu.Lock()
	if _, dup := c.fds[path]; dup {
		c.mu.Unlock()
		syscall.Close(fd)
		return
	}
	evict := -1
	if len(c.fds) >= maxIdleFiles {
		for p, old := range c.fds {
			delete(c.fds, p)
			evict = old
			break
		}
	}
	c.fds[path] = fd
	c.mu.Unlock()
	if evict >= 0 {
		syscall.Close(evict)
	}
}

func (c *idleFiles) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, fd := range c.fds {
		syscall.Close(fd)
		delete(c.fds, p)
	}
}
