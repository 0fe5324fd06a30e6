package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caesura-go/caesura"
)

// workerEnv selects the worker role; its value is a workerSpec in JSON.
const workerEnv = "CAESURA_RELIABILITY_WORKER"

// workerSpec is everything a worker process needs.
type workerSpec struct {
	Backend  string            // key of backends
	Config   map[string]string // the backend's settings, from its start
	Slot     int               // worker slot, 0..N-1
	Inc      int               // incarnation: 0, then +1 at every restart
	Lock     string            // lock name
	Register string            // "file" or "store"
	File     string            // the register's file (Register "file")
	Store    string            // the fenced store's address (Register "store")
	Key      string            // the register's key in the store
	History  string            // this incarnation's history file
	Holder   string            // this slot's file, where the worker writes its pid and when it acquired while it holds the lock
	Ops      int               // at most this many critical sections
	Start    string            // file the parent writes the run's deadline (UnixNano) into once every worker is ready
	Ready    string            // file this worker creates when it is ready
	Pause    time.Duration     // inside the critical section, half before and half after the context check
	Watch    bool              // the pause inside the critical section ends early when the context is done
	Workload string            // "register" or "transfers"
	Accounts int               // transfers: accounts acct-0..acct-N-1 in the store
}

// event is one line of a history.
type event struct {
	T    int64  `json:"t"`              // time.Now().UnixNano()
	Slot int    `json:"w"`              // worker slot
	Inc  int    `json:"i"`              // incarnation
	Op   int    `json:"op"`             // op number within the incarnation
	Kind string `json:"k"`              // invoke acquired write release lost rejected ok fail
	Tok  uint64 `json:"tok,omitempty"`  // fencing token (acquired, write)
	Read int64  `json:"r,omitempty"`    // value read (write)
	Val  int64  `json:"v,omitempty"`    // value written (write)
	Err  string `json:"err,omitempty"`  // fail
	PID  int    `json:"pid,omitempty"`  // invoke
	Lost bool   `json:"lost,omitempty"` // fail: the error matched caesura.ErrLockLost
	// Transfers (acquired): the accounts whose locks the section holds,
	// and each one's token.
	Accts []int    `json:"a,omitempty"`
	Toks  []uint64 `json:"ts,omitempty"`
}

// Event kinds.
const (
	evInvoke   = "invoke"
	evAcquired = "acquired"
	evWrite    = "write"
	evRelease  = "release"
	evLost     = "lost"
	evRejected = "rejected"
	evOK       = "ok"
	evRestart  = "restart"    // transfers: caesura ran the function again (WithRestart)
	evDescend  = "descending" // transfers: the second yield asks for a key below the first's
	evFail     = "fail"
)

// history appends events to a file, one write(2) per line, so that what a
// killed worker wrote before it died is all there.
type history struct {
	mu        sync.Mutex
	f         *os.File
	slot, inc int
}

func (h *history) rec(e event) {
	e.T = time.Now().UnixNano()
	e.Slot, e.Inc = h.slot, h.inc
	b, _ := json.Marshal(e)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.f.Write(append(b, '\n'))
}

func workerMain(specJSON string) int {
	var spec workerSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 2
	}
	if err := runWorker(spec); err != nil {
		fmt.Fprintf(os.Stderr, "worker %d.%d: %v\n", spec.Slot, spec.Inc, err)
		return 1
	}
	return 0
}

// work takes d. A watchful worker stops when ctx is done, returning its
// cause; otherwise the work goes on regardless, as a GC pause or a slow disk
// would.
func work(ctx context.Context, d time.Duration, watch bool) error {
	if !watch {
		time.Sleep(d)
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func runWorker(spec workerSpec) error {
	b := backends[spec.Backend]
	if b == nil {
		return fmt.Errorf("unknown backend %q", spec.Backend)
	}
	newLock, closeBackend, err := b.open(spec.Config)
	if err != nil {
		return err
	}
	defer closeBackend()
	f, err := os.OpenFile(spec.History, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	h := &history{f: f, slot: spec.Slot, inc: spec.Inc}
	holder, err := os.OpenFile(spec.Holder, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer holder.Close()
	noHolder := fmt.Appendf(nil, "%10d %20d\n", 0, 0)

	var reg register
	switch spec.Register {
	case "file":
		reg = fileRegister(spec.File)
	case "store":
		sc, err := dialStore(spec.Store)
		if err != nil {
			return err
		}
		defer sc.c.Close()
		reg = &storeRegister{sc: sc, key: spec.Key}
	default:
		return fmt.Errorf("unknown register %q", spec.Register)
	}

	lock := newLock(spec.Lock)
	accounts := make([]caesura.Lock, spec.Accounts)
	for i := range accounts {
		accounts[i] = newLock(fmt.Sprintf("%s/acct-%d", spec.Lock, i))
	}
	// Say ready, then wait for the parent's go: the run's clock starts
	// only when every worker has started, however loaded the machine.
	if err := os.WriteFile(spec.Ready, nil, 0o644); err != nil {
		return err
	}
	var deadline time.Time
	for wait := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		if b, err := os.ReadFile(spec.Start); err == nil {
			ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				return fmt.Errorf("start file: %v", err)
			}
			deadline = time.Unix(0, ns)
			break
		}
		if time.Since(wait) > 5*time.Minute {
			return errors.New("no start from the parent within 5 minutes")
		}
	}
	for op := 0; op < spec.Ops && time.Now().Before(deadline); op++ {
		h.rec(event{Op: op, Kind: evInvoke, PID: os.Getpid()})
		// A wait is bounded too: past the deadline plus a margin the
		// worker gives up, so the run ends.
		ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(5*time.Second))
		var err error
		// acquired records the acquisition and names this process as the
		// holder, for the nemesis; the returned function clears the name.
		// Losses are recorded by the observer (watcher), also when they
		// come after the function returned, while the lock is released.
		acquired := func(ctx context.Context, tok uint64, accts []int, toks []uint64) func() {
			h.rec(event{Op: op, Kind: evAcquired, Tok: tok, Accts: accts, Toks: toks})
			holder.WriteAt(fmt.Appendf(nil, "%10d %20d\n", os.Getpid(), time.Now().UnixNano()), 0)
			return func() { holder.WriteAt(noHolder, 0) }
		}
		rejected := func(err error, tok uint64) error {
			if errors.Is(err, errStale) {
				h.rec(event{Op: op, Kind: evRejected, Tok: tok})
			}
			return err
		}
		if spec.Workload == "transfers" {
			err = transfer(ctx, spec, op, h, accounts, reg.(*storeRegister).sc, acquired, rejected)
		} else {
			err = caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
				if err := yield(lock); err != nil {
					return err
				}
				tok, _ := caesura.Token(ctx, lock)
				defer acquired(ctx, tok, nil, nil)()
				v, err := reg.read(tok)
				if err != nil {
					return rejected(err, tok)
				}
				if err := work(ctx, spec.Pause/2, spec.Watch); err != nil { // work on the value
					return err
				}
				if err := ctx.Err(); err != nil {
					return context.Cause(ctx) // the check every holder should make
				}
				// The write on its way: a GC pause, a slow disk.
				if err := work(ctx, spec.Pause/2, spec.Watch); err != nil {
					return err
				}
				if err := reg.write(tok, v+1); err != nil {
					return rejected(err, tok)
				}
				h.rec(event{Op: op, Kind: evWrite, Tok: tok, Read: v, Val: v + 1})
				h.rec(event{Op: op, Kind: evRelease})
				return nil
			}, caesura.WithObserver(watcher{h, op}))
		}
		cancel()
		if err != nil {
			h.rec(event{Op: op, Kind: evFail, Err: err.Error(), Lost: errors.Is(err, caesura.ErrLockLost)})
			time.Sleep(5 * time.Millisecond) // no busy loop while a server is down
		} else {
			h.rec(event{Op: op, Kind: evOK})
		}
	}
	return nil
}

// transfer moves a random amount between two random accounts kept in the
// fenced store. Even ops take both locks in one yield (sorted by caesura);
// odd ops take them in two yields in the random order they were drawn, so
// that half of them ask for a lower key while holding a higher one: caesura
// then tries it without waiting and, with WithRestart, runs the function
// again with both taken up front.
func transfer(ctx context.Context, spec workerSpec, op int, h *history, accounts []caesura.Lock, sc *storeClient,
	acquired func(context.Context, uint64, []int, []uint64) func(), rejected func(error, uint64) error) error {
	from := rand.IntN(len(accounts))
	to := (from + 1 + rand.IntN(len(accounts)-1)) % len(accounts)
	amount := int64(1 + rand.IntN(10))
	kf, kt := fmt.Sprintf("acct-%d", from), fmt.Sprintf("acct-%d", to)
	if op%2 == 1 && accounts[to].Key() < accounts[from].Key() {
		h.rec(event{Op: op, Kind: evDescend})
	}
	return caesura.Run(ctx, func(ctx context.Context, yield caesura.Yield) error {
		if op%2 == 0 {
			if err := yield(accounts[from], accounts[to]); err != nil {
				return err
			}
		} else {
			if err := yield(accounts[from]); err != nil {
				return err
			}
			if err := yield(accounts[to]); err != nil {
				return err
			}
		}
		tf, _ := caesura.Token(ctx, accounts[from])
		tt, _ := caesura.Token(ctx, accounts[to])
		defer acquired(ctx, tf, []int{from, to}, []uint64{tf, tt})()
		bf, err := sc.read(kf, tf)
		if err != nil {
			return rejected(err, tf)
		}
		bt, err := sc.read(kt, tt)
		if err != nil {
			return rejected(err, tt)
		}
		time.Sleep(spec.Pause / 2)
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		time.Sleep(spec.Pause / 2)
		if err := sc.write2(kf, tf, bf-amount, kt, tt, bt+amount); err != nil {
			return rejected(err, tf)
		}
		h.rec(event{Op: op, Kind: evWrite, Tok: tf, Read: bf, Val: bf - amount})
		h.rec(event{Op: op, Kind: evRelease})
		return nil
	}, caesura.WithRestart(10), caesura.WithObserver(watcher{h, op}))
}

// watcher records caesura's lock losses and restarts in the history.
type watcher struct {
	h  *history
	op int
}

func (w watcher) StartScope(ctx context.Context, _ caesura.ScopeInfo) (context.Context, caesura.ScopeObserver) {
	return ctx, w
}

func (w watcher) Event(e caesura.Event) {
	switch e.Kind {
	case caesura.Restart:
		w.h.rec(event{Op: w.op, Kind: evRestart})
	case caesura.Lost:
		w.h.rec(event{Op: w.op, Kind: evLost})
	}
}

func (watcher) End(error) {}

// register is the shared value the workload increments.
type register interface {
	read(tok uint64) (int64, error)
	write(tok uint64, v int64) error
}

// fileRegister is a decimal in a file, replaced atomically (write a temporary
// file, rename it), so that a worker killed mid-write leaves the old value
// or the new one, never a torn one. It ignores tokens: no fencing.
type fileRegister string

func (p fileRegister) read(uint64) (int64, error) {
	b, err := os.ReadFile(string(p))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

func (p fileRegister) write(_ uint64, v int64) error {
	tmp := fmt.Sprintf("%s.%d.tmp", p, os.Getpid())
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(v, 10)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, string(p))
}

// storeRegister is the register kept by the fenced store.
type storeRegister struct {
	sc  *storeClient
	key string
}

func (s *storeRegister) read(tok uint64) (int64, error)  { return s.sc.read(s.key, tok) }
func (s *storeRegister) write(tok uint64, v int64) error { return s.sc.write(s.key, tok, v) }
