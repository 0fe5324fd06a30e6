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
// function's context, owns the locks its yields acquired, and releases them
// when the function ends.
type scope struct {
	lazyCancel // the function's context

	outer *scope  // the enclosing scope, found through the context; nil at the top
	cfg   *config // shared by every run of a Run or Serialize call site
	yield Yield
	obs   *observing // nil unless observers are configured

	ymu sync.Mutex // held by a running yield; TryLock detects a racing yield

	timer atomic.Pointer[releaseTimer] // the release context's, once a backend asked

	faulty atomic.Bool // fault is set: a yield failed or a lock was lost

	lent atomic.Bool // slot was lent
	slot lend.Slot   // room for one handle of the memory backend

	// mu guards what follows. Writers of held, maxKey and closed also hold
	// ymu, so the goroutine that holds ymu may read them without mu;
	// everyone else (nested scopes, Token) takes mu.
	mu     sync.Mutex
	held   []heldLock
	maxKey string  // the highest key in held
	fault  *faults // nil until a yield fails or a lock is lost
	closed bool    // the function returned: yields fail
	more   *scopeMore
	buf    [1]heldLock
}

// faults are what went wrong in a scope; the first of each kind is kept.
type faults struct {
	err  error // the first failed yield's error
	lost error // the first lost lock's *LostError
}

func (s *scope) faultsLocked() *faults {
	if s.fault == nil {
		s.fault = &faults{}
		s.faulty.Store(true)
	}
	return s.fault
}

// failed returns the first failed yield's error.
func (s *scope) failed() error {
	if !s.faulty.Load() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failedLocked()
}

// failed returns the first failed yield's error; s.mu is held.
func (s *scope) failedLocked() error {
	if s.fault == nil {
		return nil
	}
	return s.fault.err
}

// scopeMore is what only scopes with many locks, several locks in one yield
// or restarts need: kept apart so that the common scope is small.
type scopeMore struct {
	index   map[string]int // key -> position in held, once held grows large
	seen    []Lock         // every lock yielded so far, kept only when restart is on
	scratch []pending
	attach  *attachmentSet // what backends attached, see Attach
}

func (s *scope) extra() *scopeMore {
	if s.more == nil {
		s.more = &scopeMore{}
	}
	return s.more
}

type heldLock struct {
	key   string
	h     Held
	stop  func() bool   // stops the loss watch; nil when the Held is not Lossy
	batch BatchReleaser // set when a batch acquired it and can release in one call
}

type pending struct {
	key  string
	lock Lock
}

// indexAt is the number of held locks from which a scope keeps a map from key
// to position instead of scanning.
const indexAt = 16

func newScope(ctx context.Context, outer *scope, cfg *config) *scope {
	s := &scope{outer: outer, cfg: cfg}
	s.lazyCancel.parent = ctx
	s.held = s.buf[:0]
	s.yield = s.yieldLocks
	return s
}

// Value makes the scope findable from the function's context.
func (s *scope) Value(key any) any {
	if key == (scopeKey{}) {
		return s
	}
	return s.lazyCancel.value(key)
}

// LendSlot lends the memory backend room for one handle (see internal/lend):
// the first caller gets it, later ones nil.
func (s *scope) LendSlot() *lend.Slot {
	if !s.lent.CompareAndSwap(false, true) {
		return nil
	}
	return &s.slot
}

func scopeFrom(ctx context.Context) *scope {
	s, _ := ctx.Value(scopeKey{}).(*scope)
	return s
}

// yieldLocks is the scope's Yield.
func (s *scope) yieldLocks(locks ...Lock) error {
	if !s.ymu.TryLock() {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return ErrScopeEnded
		}
		err := ErrConcurrentYield
		s.fail(err)
		return err
	}
	defer s.ymu.Unlock()

	// Holding ymu, this goroutine is the only writer of closed, held and
	// maxKey: it reads them without mu.
	if s.closed {
		return ErrScopeEnded
	}
	if failed := s.failed(); failed != nil {
		return fmt.Errorf("%w: %w", ErrYieldFailed, failed)
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
	if s.obs == nil {
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
	s.obs.began = time.Now()
	s.obs.emit(Event{Kind: WaitStart, Keys: keys})
	err := s.acquireLocks(locks)
	s.obs.emit(Event{Kind: WaitEnd, Keys: keys, Wait: time.Since(s.obs.began), Err: err})
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
		s.add(key, h, releaser(l))
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

	start := len(s.held) // ymu is held: no other writer
	for i := 0; i < len(ps); {
		if ps[i].key < top {
			h, err := s.take(ps[i].lock, ps[i].key, top)
			if err != nil {
				return s.undo(start, err)
			}
			s.add(ps[i].key, h, releaser(ps[i].lock))
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
			br, _ := b.(BatchReleaser)
			for k, h := range hs {
				s.add(ps[i+k].key, h, br)
			}
			i = j
			continue
		}
		h, err := s.take(ps[i].lock, ps[i].key, top)
		if err != nil {
			return s.undo(start, err)
		}
		s.add(ps[i].key, h, releaser(ps[i].lock))
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
	s.mu.Lock() // more is read by nested scopes under mu
	m := s.extra()
	s.mu.Unlock()
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
	s.obs.emit(Event{Kind: Refused, Key: e.Key, Held: e.Held, Err: e})
	return e
}

// chain reports whether key is held by this scope or an enclosing one, and
// the highest key they hold. The caller holds s.ymu, so s's own state is
// read without s.mu; enclosing scopes are read under theirs.
func (s *scope) chain(key string) (held bool, top string) {
	held, top = s.holdsLocked(key), s.maxKey
	for c := s.outer; c != nil; c = c.outer {
		c.mu.Lock()
		if !held {
			held = c.holdsLocked(key)
		}
		if c.maxKey > top {
			top = c.maxKey
		}
		c.mu.Unlock()
	}
	return held, top
}

func (s *scope) holdsLocked(key string) bool { return s.findLocked(key) >= 0 }

// findLocked returns key's position in held, or -1.
func (s *scope) findLocked(key string) int {
	if s.more != nil && s.more.index != nil {
		if i, ok := s.more.index[key]; ok {
			return i
		}
		return -1
	}
	for i := range s.held {
		if s.held[i].key == key {
			return i
		}
	}
	return -1
}

// add records an acquired lock and starts watching it for loss. br, if not
// nil, can release it together with its neighbours.
func (s *scope) add(key string, h Held, br BatchReleaser) {
	hl := heldLock{key: key, h: h, batch: br}
	if s.obs != nil {
		s.obs.acquired(key, h)
	}
	if lh, ok := h.(Lossy); ok {
		if lost := lh.Lost(); lost != nil {
			hl.stop = context.AfterFunc(lost, func() { s.onLost(key, context.Cause(lost)) })
		}
	}
	s.mu.Lock()
	s.held = append(s.held, hl)
	if s.more != nil && s.more.index != nil {
		s.more.index[key] = len(s.held) - 1
	} else if len(s.held) > indexAt {
		m := s.extra()
		m.index = make(map[string]int, 2*len(s.held))
		for i := range s.held {
			m.index[s.held[i].key] = i
		}
	}
	if key > s.maxKey {
		s.maxKey = key
	}
	s.mu.Unlock()
}

func (s *scope) onLost(key string, cause error) {
	err, ok := cause.(*LostError) // a backend may report loss with one already
	if !ok || err.Key != key {
		err = &LostError{Key: key, Err: cause}
	}
	s.obs.emit(Event{Kind: Lost, Key: key, Err: err})
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
	batch := slices.Clone(s.held[start:])
	clear(s.held[start:])
	s.held = s.held[:start]
	if s.more != nil && s.more.index != nil {
		for _, hl := range batch {
			delete(s.more.index, hl.key)
		}
	}
	s.maxKey = ""
	for i := range s.held {
		s.maxKey = max(s.maxKey, s.held[i].key)
	}
	s.mu.Unlock()
	return errors.Join(err, s.releaseAll(batch))
}

// end marks the scope ended (later yields fail), waits for a yield still
// running in another goroutine, and releases everything, newest first.
func (s *scope) end() error {
	if !s.ymu.TryLock() {
		s.cancel(ErrScopeEnded) // ends the running yield's wait
		s.ymu.Lock()
	}
	s.mu.Lock()
	s.closed = true
	held := s.held
	s.held = nil
	var att *attachmentSet
	if s.more != nil {
		s.more.index = nil
		att = s.more.attach
	}
	s.mu.Unlock()
	s.ymu.Unlock()
	// The function's context ends first, so that goroutines it left
	// running stop using the locks and the backends' resources before they
	// go.
	s.lazyCancel.end()
	err := s.releaseAll(held)
	if att != nil {
		err = errors.Join(err, s.detach(att))
	}
	s.closeRelease()
	return err
}

func (s *scope) releaseContext() context.Context { return (*releaseCtx)(s) }

func (s *scope) releaseAll(held []heldLock) error {
	var errs []error
	for i := len(held) - 1; i >= 0; {
		// A run of locks one BatchReleaser acquired goes back in one call.
		j := i
		if br := held[i].batch; br != nil {
			for j > 0 && held[j-1].batch == br {
				j--
			}
		}
		for k := i; k >= j; k-- {
			if held[k].stop != nil {
				held[k].stop()
			}
		}
		if j < i {
			hs := make([]Held, 0, i-j+1)
			for k := i; k >= j; k-- {
				hs = append(hs, held[k].h)
			}
			err := held[i].batch.ReleaseBatch(s.releaseContext(), hs)
			if err != nil {
				err = fmt.Errorf("caesura: release %d locks from %s to %s: %w", i-j+1, QuoteKey(held[j].key), QuoteKey(held[i].key), err)
				errs = append(errs, err)
			}
			for k := i; k >= j; k-- {
				if s.obs != nil {
					s.obs.released(held[k].key, err)
				}
			}
		} else {
			hl := held[i]
			err := hl.h.Release(s.releaseContext())
			if err != nil {
				err = fmt.Errorf("caesura: release %s: %w", QuoteKey(hl.key), err)
				errs = append(errs, err)
			}
			if s.obs != nil {
				s.obs.released(hl.key, err)
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
	if !s.faulty.Load() && relErr == nil {
		return fnErr
	}
	s.mu.Lock()
	var yieldErr, lost error
	if s.fault != nil {
		yieldErr, lost = s.fault.err, s.fault.lost
	}
	s.mu.Unlock()
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
			h = c.held[i].h
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
