// Package filelock is caesura's backend for the processes of one host: each
// key is a file in a directory, locked with flock(2).
//
//	locks, err := filelock.New(filelock.Options{}) // files under os.TempDir()
//	if err != nil {
//		return err
//	}
//	err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
//		if err := yield(locks.Mutex("invoice:42")); err != nil {
//			return err
//		}
//		return issue(ctx, 42) // no other process of this host issues it now
//	})
//
// It needs flock(2): Linux, macOS and the BSDs. Elsewhere [New] fails.
//
// # Guarantees
//
//   - Mutual exclusion among all goroutines of all processes of one host that
//     use the same directory and key, through any number of Lockers: a lock
//     is held by one open file description (flock's unit), and every Locker
//     opens its own. The descriptors are close-on-exec, so a child process
//     inherits nothing.
//   - Waiting honours the context and never polls. Goroutines of one Locker
//     queue in memory for their key (a memlock, FIFO, context-aware); only
//     the goroutine at the head touches the file. It tries flock with
//     LOCK_NB, and if another process holds the file it blocks in flock(2).
//     flock cannot be interrupted, so when the context can end, that wait
//     runs in a helper goroutine: if the context ends first, Acquire returns
//     at once with an error matching [caesura.ErrNotAcquired] and the
//     context's error, and the helper waits on until the other process
//     releases, then unlocks the file at once and lets the next goroutine of
//     the Locker have its turn. Such a helper, and the OS thread blocked in
//     flock, live as long as the other process holds the file; goroutines of
//     this Locker that queue for the key meanwhile wait for that same release
//     (their own contexts still end their waits).
//   - A failed Acquire or TryAcquire holds nothing. TryAcquire never waits:
//     it fails with [caesura.ErrNotAcquired] if a goroutine of the Locker or
//     another process holds the key.
//   - A crashed process's locks are freed by the kernel when the process
//     ends, however it ends (SIGKILL included): no lease, no expiry, no
//     clean-up. Nothing else can take a lock away from a live process, so a
//     Held does not implement [caesura.Lossy].
//   - A second Release of a Held returns an error matching
//     [caesura.ErrNotHeld] and leaves the current holder alone.
//
// An empty name is refused with [caesura.ErrInvalidLock], as memlock does;
// every other string is a valid name.
//
// # Ordering
//
// Within one Locker, goroutines get a key in the order they asked for it
// (FIFO): a releaser that asks again queues behind the waiters.
//
// Between processes (and between Lockers of one process) the order is the
// kernel's, and flock is not fair: a process that releases and asks again
// at once usually takes the lock back before a blocked process wakes up.
// Measured with TestHandoff (closed loop, 100µs hold, 4000 turns, on a busy
// 2-CPU VM): with 4 processes the releaser took the lock back 88–95% of the
// time, the median hand-off was 10–15µs, the worst wait 21–83ms, and turns
// per process ranged 790–1175; with 8 processes, 92–94%, 10µs, 58–70ms and
// 356–643. Four goroutines of one Locker in the same test take turns FIFO:
// self-reacquire 0.00–0.04 (only when no other goroutine was queued yet),
// with a median hand-off of 28–45µs (waking a parked goroutine, then the
// new holder's system calls).
// If processes must take turns fairly, do not rely on flock: use a backend
// whose server queues waiters (pglock), or put think time between turns.
//
// A turnstile (a second flock taken before the lock file and dropped once
// it is held) was tried: it cost two system calls and a second file per key
// and only lowered the releaser's share to 70–87%, because a woken waiter
// often does not run before the releaser comes back.
//
// # Cost
//
// An uncontended Acquire and Release make five system calls: flock
// (LOCK_EX|LOCK_NB), fstat (is the file still linked?), pread and pwrite
// (the fencing counter), flock (LOCK_UN), with 2 allocations.
// BenchmarkFile puts it beside flock on a descriptor kept open (2 calls, the
// floor) and open+flock+close each time (what gofrs/flock does).
//
// # Lock loss and fencing
//
// Every Held implements [caesura.Fenced]. Its token is a per-key counter
// kept in the lock file itself, 8 bytes big-endian at offset 0, read,
// incremented and written back (pread/pwrite) while the lock is held: every
// acquisition of a key in a directory, by any process, gets a token above
// all earlier ones, and the counter survives process restarts and crashes.
// It is not fsynced: a power loss or kernel crash can roll back the last
// increments, a directory on tmpfs (a common /tmp) starts over at boot, and
// a deleted lock file starts over at 1. Storage that must reject stale
// writers across host crashes should not rely on these tokens alone.
//
// In the same write the holder records the time, its process id and its host
// name after the counter (64 bytes in all), for the lock's Inspect
// ([caesura.Inspector], used by `caesura status`). On Linux, Inspect finds
// whether the file is locked in /proc/locks without touching the lock.
//
// # Files
//
// A key (prefix + name) maps to one file name, injectively and safely: any
// bytes are allowed in a key ('/', "..", NUL, invalid UTF-8) and its file is
// always a plain name inside the directory. A key whose escaped form fits in
// 128 bytes is stored under "k-" and the key with every byte outside
// [a-z0-9._:-] written as %xx ("file:user:42" is "k-file:user:42",
// "file:../x" is "k-file:..%2fx"); a longer key under "h-" and the hex
// SHA-256 of the key. Upper-case letters are escaped so that keys differing
// in case stay apart on case-insensitive file systems. The mapping is part
// of the on-disk format and will not change.
//
// Lock files are never deleted. Unlinking one races with flock: a process
// opens the file, another locks it, deletes it and unlocks, the first locks
// the deleted file while a third creates a new file under the same name and
// locks that, and both hold "the" lock. Keeping the files makes this
// impossible, at the price of one small file per key ever used: a directory
// fed unbounded keys (request IDs, say) grows without bound, so give such
// keys another backend, or delete the directory while no process uses it.
// If a file is deleted anyway (a temporary-file cleaner such as
// systemd-tmpfiles ages /tmp; each acquisition writes the token, so only
// keys idle that long are affected), the next acquisition notices that its
// descriptor names a deleted file and opens the new one; a file deleted
// while held cannot be protected. A Locker keeps up to 64 unlocked lock
// files open, so a key used again skips open(2); they are closed when the
// Locker is garbage collected.
//
// # Network file systems
//
// Use a local file system. On NFS, Linux emulates flock with byte-range
// locks through the server (so flock and fcntl locks then conflict), locks
// held by a client can be lost when the server restarts or the network
// partitions, and other systems may lock only on the local host. Across
// hosts, use a network backend (Redis, PostgreSQL, etcd). Containers on one
// host exclude each other if they share the directory (a bind mount): they
// share the kernel.
package filelock
