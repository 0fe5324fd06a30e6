package caesura

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caesura-go/caesura/internal/lend"
)

// A scope is one run of a function under Run or Serialize: it is the
// function's context and its Yield (see yieldFunc), owns the locks its yields
// acquired, and releases them when the function ends.
//
// Everything a run with one yield of one lock needs is in the scope itself,
// so that such a run allocates nothing but the scope; the rest (more locks,
// restarts, observers, faults, attachments, the release timer) is in more,
// made on first need.
type scope struct {
	// code and self make the scope the closure of its own Yield: they must
	// stay the first two words (see yieldFunc).
	code uintptr
	self *scope

	parent context.Context             // the caller's context (an observer's, if one gave it)
	inner  atomic.Pointer[cancelState] // the function's cancellable context, once needed (context.go)
	wake   atomic.Pointer[lend.Wake]   // the armed wait of Send, if any (context.go)
	outer  *scope                      // the enclosing scope, found through the context; nil at the top
	cfg    *config                     // shared by every run of a Run or Serialize call site
	more   atomic.Pointer[scopeMore]   // made once by extra, never replaced

	flags atomic.Uint32 // the flag... bits below

	// mu guards the held locks (one while flagOne is set, and those in
	// more). Only the running yield (the goroutine that set flagYielding)
	// writes them, so it may read them without mu; everyone else (nested
	// scopes, Token, end) takes mu, or reads one after seeing flagOne.
	mu sync.Mutex

	slot lend.Slot   // room for one handle of the memory backend
	one  [1]heldLock // the first held lock; see flagOne
}

// The scope's flags. flagYielding is the yield's gate: a yield sets it with
// a compare-and-swap, so a racing yield sees it and fails, and end waits for
// it to clear (flagWaiter) before it sets flagClosed.
const (
	flagYielding = 1 << iota // a yield is running
	flagWaiter               // end waits for the running yield: its leave closes more.left
	flagClosed               // the function returned: yields fail
	flagDone                 // the function returned: its context is done
	flagOne                  // one[0] holds a lock; written before the flag is set, never after
	flagFaulty               // more.fault is set: a yield failed or a lock was lost
	flagLent                 // slot was lent
)

// faults are what went wrong in a scope; the first of each kind is kept.
type faults struct {
	err  error // the first failed yield's error
	lost error // the first lost lock's *LostError
}

func (s *scope) faultsLocked() *faults {
	m := s.extra()
	s.flags.Or(flagFaulty)
	return &m.fault
}

// failed returns the first failed yield's error.
func (s *scope) failed() error {
	if s.flags.Load()&flagFaulty == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failedLocked()
}

// failed returns the first failed yield's error; s.mu is held.
func (s *scope) failedLocked() error {
	if s.flags.Load()&flagFaulty == 0 {
		return nil
	}
	return s.more.Load().fault.err
}

// scopeMore is what only scopes with several locks, restarts, observers,
// faults, attachments or a release timer need: kept apart so that the
// common scope is small.
type scopeMore struct {
	obs *observing // set before the scope is shared; nil unless observers are configured

	// Under the scope's mu; written by the running yield only.
	spilled bool           // the held locks are in held, not in the scope's one
	held    []heldLock     // oldest first
	maxKey  string         // the highest key in held
	index   map[string]int // key -> position in held, once held grows large
	seen    []Lock         // every lock yielded so far, kept only when restart is on
	scratch []pending      // the running yield's alone

	fault  faults         // under mu; see flagFaulty
	attach *attachmentSet // what backends attached, see Attach; under mu
	left   chan struct{}  // closed by a yield that leaves while end waits; see flagWaiter

	timer atomic.Pointer[releaseTimer] // the release context's, once a backend asked
}

// extra returns the scope's scopeMore, making it on first need.
func (s *scope) extra() *scopeMore {
	if m := s.more.Load(); m != nil {
		return m
	}
	m := &scopeMore{}
	if s.more.CompareAndSwap(nil, m) {
		return m
	}
	return s.more.Load()
}

// observer returns the scope's observers, nil if none is configured.
func (s *scope) observer() *observing {
	if m := s.more.Load(); m != nil {
		return m.obs
	}
	return nil
}

type heldLock struct {
	key  string
	h    Held
	lock Lock        // what acquired it; its BatchReleaser, if any, releases it with its neighbours
	stop func() bool // stops the loss watch; nil when the Held is not Lossy, or a LossNotifier
}

type pending struct {
	key  string
	lock Lock
}

// indexAt is the number of held locks from which a scope keeps a map from key
// to position instead of scanning.
const indexAt = 16

// yieldFunc returns the scope's Yield. Where yieldCode is set (see
// yield_unsafe.go), the scope starts with the two words of the closure of
// s.yieldLocks, so a Yield that points at the scope is that closure, and
// handing it out allocates nothing; otherwise (the purego build tag, or a
// compiler that lays out closures otherwise) it is a method value of its own.
func (s *scope) yieldFunc() Yield {
	if s.code == 0 {
		return s.yieldLocks
	}
	return scopeYield(s)
}

func newScope(ctx context.Context, outer *scope, cfg *config, obs *observing) *scope {
	s := &scope{code: yieldCode, parent: ctx, outer: outer, cfg: cfg}
	s.self = s
	if obs != nil {
		s.more.Store(&scopeMore{obs: obs})
	}
	return s
}

// Value makes the scope findable from the function's context.
func (s *scope) Value(key any) any {
	if key == (scopeKey{}) {
		return s
	}
	if in := s.inner.Load(); in != nil {
		return in.ctx.Value(key)
	}
	return s.parent.Value(key)
}

// LendSlot lends the memory backend room for one handle (see internal/lend):
// the first caller gets it, later ones nil.
func (s *scope) LendSlot() *lend.Slot {
	if s.flags.Or(flagLent)&flagLent != 0 {
		return nil
	}
	return &s.slot
}

func scopeFrom(ctx context.Context) *scope {
	s, _ := ctx.Value(scopeKey{}).(*scope)
	return s
}

// heldLocked returns the locks the scope holds, oldest first. The caller
// holds mu, or is the running yield and only reads.
func (s *scope) heldLocked() []heldLock {
	if m := s.more.Load(); m != nil && m.spilled {
		return m.held
	}
	if s.flags.Load()&flagOne != 0 {
		return s.one[:]
	}
	return nil
}

// maxKeyLocked returns the highest key the scope holds; see heldLocked.
func (s *scope) maxKeyLocked() string {
	if m := s.more.Load(); m != nil && m.spilled {
		return m.maxKey
	}
	if s.flags.Load()&flagOne != 0 {
		return s.one[0].key
	}
	return ""
}

// yieldLocks is the scope's Yield.
func (s *scope) yieldLocks(locks ...Lock) error {
	f := s.flags.Load()
	for f&(flagYielding|flagClosed) != 0 || !s.flags.CompareAndSwap(f, f|flagYielding) {
		if f&flagClosed != 0 {
			return ErrScopeEnded
		}
		if f&flagYielding != 0 {
			err := ErrConcurrentYield
			s.fail(err)
			return err
		}
		f = s.flags.Load()
	}
	var one uint32 // flagOne when this yield took one[0] without mu
	defer func() { s.leave(one) }()

	if failed := s.failed(); failed != nil {
		return fmt.Errorf("%w: %w", ErrYieldFailed, failed)
	}
	// The common case, one lock in a scope that holds none, with no
	// enclosing scope, no options, no fault and a live context: the lock
	// goes into one without mu, and leave publishes it (flagOne) as it opens
	// the gate.
	if len(locks) == 1 && f&(flagOne|flagFaulty) == 0 && s.outer == nil && s.cfg.restart == 0 &&
		s.more.Load() == nil && s.inner.Load() == nil && locks[0] != nil && s.parent.Err() == nil {
		l := locks[0]
		if key := l.Key(); key != "" {
			h, err := s.take(l, key, "")
			if err != nil {
				s.fail(err)
				return err
			}
			s.record(&s.one[0], key, h, l)
			one = flagOne
			return nil
		}
	}

	if s.cfg.restart > 0 {
		s.mu.Lock()
		m := s.extra()
		m.seen = append(m.seen, locks...)
		s.mu.Unlock()
	}
	if err := s.Err(); err != nil {
		err = fmt.Errorf("caesura: yield: %w", errors.Join(ErrNotAcquired, context.Cause(s)))
		s.fail(err)
		return err
	}
	if err := s.acquire(locks); err != nil {
		s.fail(err)
		return err
	}
	return nil
}

// leave opens the yield's gate, setting flagOne if one is flagOne, and
// wakes end if it waits.
func (s *scope) leave(one uint32) {
	if s.flags.Add(one-flagYielding)&flagWaiter != 0 {
		close(s.more.Load().left)
	}
}

// fail records a yield's error and cancels the function's context with it.
func (s *scope) fail(err error) {
	s.mu.Lock()
	if f := s.faultsLocked(); f.err == nil {
		f.err = err
	}
	s.mu.Unlock()
	s.cancel(err)
}

// acquire takes every lock of one yield, or none of them.
func (s *scope) acquire(locks []Lock) error {
	obs := s.observer()
	if obs == nil {
		return s.acquireLocks(locks)
	}
	keys := make([]string, 0, len(locks))
	for _, l := range locks {
		if l != nil {
			keys = append(keys, l.Key())
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	obs.began = time.Now()
	obs.emit(Event{Kind: WaitStart, Keys: keys})
	err := s.acquireLocks(locks)
	obs.emit(Event{Kind: WaitEnd, Keys: keys, Wait: time.Since(obs.began), Err: err})
	return err
}

func (s *scope) acquireLocks(locks []Lock) error {
	if len(locks) == 1 { // the common case: no sorting, no scratch space
		l := locks[0]
		if l == nil {
			return fmt.Errorf("caesura: yield: %w: nil Lock", ErrInvalidLock)
		}
		key := l.Key()
		if key == "" {
			return fmt.Errorf("caesura: yield: %w: empty key (%T)", ErrInvalidLock, l)
		}
		held, top := s.chain(key)
		if held {
			return nil
		}
		h, err := s.take(l, key, top)
		if err != nil {
			return err
		}
		s.add(key, h, l)
		return nil
	}

	ps, err := s.sorted(locks)
	if err != nil {
		return err
	}
	// Drop what the scope (or an enclosing one) holds already, and find
	// the highest key held: locks below it are only tried.
	n := 0
	var top string
	for _, p := range ps {
		held, t := s.chain(p.key)
		top = t
		if !held {
			ps[n] = p
			n++
		}
	}
	ps = ps[:n]

	start := len(s.heldLocked()) // the running yield is the only writer
	for i := 0; i < len(ps); {
		if ps[i].key < top {
			h, err := s.take(ps[i].lock, ps[i].key, top)
			if err != nil {
				return s.undo(start, err)
			}
			s.add(ps[i].key, h, ps[i].lock)
			i++
			continue
		}
		// A run of locks of one backend that can batch goes in one call.
		j := i + 1
		var b Batcher
		if bl, ok := ps[i].lock.(BatchLock); ok {
			b = bl.Batcher()
			for j < len(ps) {
				bj, ok := ps[j].lock.(BatchLock)
				if !ok || bj.Batcher() != b {
					break
				}
				j++
			}
		}
		if b != nil && j-i > 1 {
			run := make([]Lock, j-i)
			for k := range run {
				run[k] = ps[i+k].lock
			}
			hs, err := b.AcquireBatch(s, run)
			if err != nil {
				return s.undo(start, fmt.Errorf("caesura: acquire %d locks from %s to %s: %w", j-i, QuoteKey(ps[i].key), QuoteKey(ps[j-1].key), err))
			}
			if len(hs) != len(run) {
				for _, h := range hs {
					_ = h.Release(s.releaseContext())
				}
				return s.undo(start, fmt.Errorf("caesura: %T.AcquireBatch returned %d handles for %d locks", b, len(hs), len(run)))
			}
			for k, h := range hs {
				s.add(ps[i+k].key, h, ps[i+k].lock)
			}
			i = j
			continue
		}
		h, err := s.take(ps[i].lock, ps[i].key, top)
		if err != nil {
			return s.undo(start, err)
		}
		s.add(ps[i].key, h, ps[i].lock)
		i++
	}
	return nil
}

// releaser returns the BatchReleaser that can release l's Helds together
// with others, if l's backend has one.
func releaser(l Lock) BatchReleaser {
	if bl, ok := l.(BatchLock); ok {
		br, _ := bl.Batcher().(BatchReleaser)
		return br
	}
	return nil
}

// sorted validates locks and returns them sorted by key without duplicates,
// in scratch space the scope reuses.
func (s *scope) sorted(locks []Lock) ([]pending, error) {
	m := s.extra()
	ps := m.scratch[:0]
	for i, l := range locks {
		if l == nil {
			return nil, fmt.Errorf("caesura: yield: %w: Lock %d of %d is nil", ErrInvalidLock, i+1, len(locks))
		}
		key := l.Key()
		if key == "" {
			return nil, fmt.Errorf("caesura: yield: %w: Lock %d of %d (%T) has an empty key", ErrInvalidLock, i+1, len(locks), l)
		}
		ps = append(ps, pending{key: key, lock: l})
	}
	m.scratch = ps[:0]
	return sortPending(ps), nil
}

// sortPending sorts by key, byte-wise, and keeps the first of equal keys.
func sortPending(ps []pending) []pending {
	slices.SortStableFunc(ps, func(a, b pending) int { return strings.Compare(a.key, b.key) })
	return slices.CompactFunc(ps, func(a, b pending) bool { return a.key == b.key })
}

// take acquires one lock: waiting when key sorts above every held key, trying
// without waiting otherwise.
func (s *scope) take(l Lock, key, top string) (Held, error) {
	if key > top {
		h, err := l.Acquire(s)
		if err != nil {
			return nil, fmt.Errorf("caesura: acquire %s: %w", QuoteKey(key), err)
		}
		if h == nil {
			return nil, fmt.Errorf("caesura: acquire %s: %T.Acquire returned a nil Held", QuoteKey(key), l)
		}
		return h, nil
	}
	t, ok := l.(TryLocker)
	if !ok {
		return nil, s.refuse(&OrderError{Key: key, Held: top, Err: fmt.Errorf("%T cannot be tried without waiting", l)})
	}
	h, err := t.TryAcquire(s)
	if err != nil {
		if errors.Is(err, ErrNotAcquired) {
			return nil, s.refuse(&OrderError{Key: key, Held: top, Err: err})
		}
		return nil, fmt.Errorf("caesura: try %s: %w", QuoteKey(key), err)
	}
	if h == nil {
		return nil, fmt.Errorf("caesura: try %s: %T.TryAcquire returned a nil Held", QuoteKey(key), l)
	}
	return h, nil
}

func (s *scope) refuse(e *OrderError) error {
	s.observer().emit(Event{Kind: Refused, Key: e.Key, Held: e.Held, Err: e})
	return e
}

// chain reports whether key is held by this scope or an enclosing one, and
// the highest key they hold. The caller is s's running yield, so s's own
// state is read without s.mu; enclosing scopes are read under theirs.
func (s *scope) chain(key string) (held bool, top string) {
	held, top = s.findLocked(key) >= 0, s.maxKeyLocked()
	for c := s.outer; c != nil; c = c.outer {
		c.mu.Lock()
		if !held {
			held = c.findLocked(key) >= 0
		}
		if t := c.maxKeyLocked(); t > top {
			top = t
		}
		c.mu.Unlock()
	}
	return held, top
}

// findLocked returns key's position in the held locks, or -1; see
// heldLocked.
func (s *scope) findLocked(key string) int {
	if m := s.more.Load(); m != nil && m.index != nil {
		if i, ok := m.index[key]; ok {
			return i
		}
		return -1
	}
	held := s.heldLocked()
	for i := range held {
		if held[i].key == key {
			return i
		}
	}
	return -1
}

// record fills hl with a lock that l acquired and starts watching it for
// loss.
func (s *scope) record(hl *heldLock, key string, h Held, l Lock) {
	if obs := s.observer(); obs != nil {
		obs.acquired(key, h)
	}
	var stop func() bool
	if ln, ok := h.(LossNotifier); ok {
		ln.OnLost(func(cause error) { s.onLost(key, cause) })
	} else if lh, ok := h.(Lossy); ok {
		if lost := lh.Lost(); lost != nil {
			stop = context.AfterFunc(lost, func() { s.onLost(key, context.Cause(lost)) })
		}
	}
	hl.key, hl.h, hl.lock, hl.stop = key, h, l, stop
}

// add records a lock that l acquired.
func (s *scope) add(key string, h Held, l Lock) {
	var hl heldLock
	s.record(&hl, key, h, l)
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.more.Load()
	if m == nil || !m.spilled {
		if s.flags.Load()&flagOne == 0 {
			s.one[0] = hl
			s.flags.Or(flagOne)
			return
		}
		// The second lock: both move to more.
		m = s.extra()
		m.spilled = true
		m.held = append(make([]heldLock, 0, 4), s.one[0])
		m.maxKey = s.one[0].key
		s.flags.And(^uint32(flagOne))
		s.one[0] = heldLock{}
	}
	m.held = append(m.held, hl)
	if m.index != nil {
		m.index[key] = len(m.held) - 1
	} else if len(m.held) > indexAt {
		m.index = make(map[string]int, 2*len(m.held))
		for i := range m.held {
			m.index[m.held[i].key] = i
		}
	}
	if key > m.maxKey {
		m.maxKey = key
	}
}

func (s *scope) onLost(key string, cause error) {
	err, ok := cause.(*LostError) // a backend may report loss with one already
	if !ok || err.Key != key {
		err = &LostError{Key: key, Err: cause}
	}
	s.observer().emit(Event{Kind: Lost, Key: key, Err: err})
	s.mu.Lock()
	if f := s.faultsLocked(); f.lost == nil {
		f.lost = err
	}
	s.mu.Unlock()
	s.cancel(err)
}

// undo releases the locks acquired since position start (a failed yield keeps
// nothing of its own) and returns err with any release error joined.
func (s *scope) undo(start int, err error) error {
	s.mu.Lock()
	held := s.heldLocked()
	batch := slices.Clone(held[start:])
	clear(held[start:])
	if m := s.more.Load(); m != nil && m.spilled {
		m.held = m.held[:start]
		if m.index != nil {
			for _, hl := range batch {
				delete(m.index, hl.key)
			}
		}
		m.maxKey = ""
		for i := range m.held {
			m.maxKey = max(m.maxKey, m.held[i].key)
		}
	} else if start == 0 {
		s.flags.And(^uint32(flagOne))
	}
	s.mu.Unlock()
	return errors.Join(err, s.releaseAll(batch))
}

// end marks the scope ended (later yields fail), waits for a yield still
// running in another goroutine, and releases everything, newest first.
func (s *scope) end() error {
	var f uint32
	for {
		f = s.flags.Load()
		if f&flagYielding != 0 {
			s.awaitYield()
			continue
		}
		if s.flags.CompareAndSwap(f, (f|flagClosed|flagDone)&^flagOne) {
			break
		}
	}
	// The function's context ends first, so that goroutines it left
	// running stop using the locks and the backends' resources before they
	// go.
	if in := s.inner.Load(); in != nil {
		in.cancel(ErrScopeEnded)
	}
	s.wakeWaiter()
	m := s.more.Load()
	if m == nil {
		if f&flagOne != 0 {
			// one stays as it is: a reader that saw flagOne may read it.
			return s.release(&s.one[0])
		}
		return nil
	}
	s.mu.Lock() // after flagClosed: an Attach either is in m.attach now or sees it
	held := m.held
	m.held = nil
	m.index = nil
	att := m.attach
	s.mu.Unlock()
	var err error
	if f&flagOne != 0 {
		err = s.release(&s.one[0])
	} else if held != nil {
		err = s.releaseAll(held)
	}
	if att != nil {
		err = errors.Join(err, s.detach(att))
	}
	s.closeRelease(m)
	return err
}

// awaitYield waits for a yield running in another goroutine to leave, after
// closing the gate behind it and cancelling its wait.
func (s *scope) awaitYield() {
	m := s.extra()
	s.mu.Lock()
	if m.left == nil {
		m.left = make(chan struct{})
	}
	s.mu.Unlock()
	for {
		f := s.flags.Load()
		if f&flagYielding == 0 {
			return
		}
		if s.flags.CompareAndSwap(f, f|flagWaiter|flagClosed) {
			break
		}
	}
	s.cancel(ErrScopeEnded) // ends the running yield's wait
	<-m.left
}

func (s *scope) releaseContext() context.Context { return (*releaseCtx)(s) }

// release releases one held lock.
func (s *scope) release(hl *heldLock) error {
	if hl.stop != nil {
		hl.stop()
	}
	err := hl.h.Release(s.releaseContext())
	if err != nil {
		err = fmt.Errorf("caesura: release %s: %w", QuoteKey(hl.key), err)
	}
	if obs := s.observer(); obs != nil {
		obs.released(hl.key, err)
	}
	return err
}

// releaseAll releases held, newest first, and clears it.
func (s *scope) releaseAll(held []heldLock) error {
	var errs []error
	for i := len(held) - 1; i >= 0; {
		// A run of locks one BatchReleaser can release goes back in one
		// call.
		j := i
		br := releaser(held[i].lock)
		if br != nil {
			for j > 0 && releaser(held[j-1].lock) == br {
				j--
			}
		}
		if j == i {
			if err := s.release(&held[i]); err != nil {
				errs = append(errs, err)
			}
			i--
			continue
		}
		hs := make([]Held, 0, i-j+1)
		for k := i; k >= j; k-- {
			if held[k].stop != nil {
				held[k].stop()
			}
			hs = append(hs, held[k].h)
		}
		err := br.ReleaseBatch(s.releaseContext(), hs)
		if err != nil {
			err = fmt.Errorf("caesura: release %d locks from %s to %s: %w", i-j+1, QuoteKey(held[j].key), QuoteKey(held[i].key), err)
			errs = append(errs, err)
		}
		if obs := s.observer(); obs != nil {
			for k := i; k >= j; k-- {
				obs.released(held[k].key, err)
			}
		}
		i = j - 1
	}
	clear(held)
	return errors.Join(errs...)
}

// result combines the function's error with what the scope knows: a failed
// yield and a lost lock are reported even if the function dropped them.
func (s *scope) result(fnErr, relErr error) error {
	if s.flags.Load()&flagFaulty == 0 && relErr == nil {
		return fnErr
	}
	var yieldErr, lost error
	if s.flags.Load()&flagFaulty != 0 {
		s.mu.Lock()
		f := s.more.Load().fault
		s.mu.Unlock()
		yieldErr, lost = f.err, f.lost
	}
	if yieldErr == nil && lost == nil && relErr == nil {
		return fnErr
	}
	errs := []error{fnErr}
	if yieldErr != nil && !errors.Is(fnErr, yieldErr) {
		errs = append(errs, yieldErr)
	}
	if lost != nil && !errors.Is(fnErr, ErrLockLost) {
		errs = append(errs, lost)
	}
	errs = append(errs, relErr)
	return errors.Join(errs...)
}

func (s *scope) token(key string) (uint64, bool) {
	for c := s; c != nil; c = c.outer {
		c.mu.Lock()
		i := c.findLocked(key)
		var h Held
		if i >= 0 {
			h = c.heldLocked()[i].h
		}
		c.mu.Unlock()
		if h != nil {
			f, ok := h.(Fenced)
			if !ok {
				return 0, false
			}
			return f.Token(), true
		}
	}
	return 0, false
}
