package reliability

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// scenario is one bounded run: a workload, the faults injected, the checks.
type scenario struct {
	name      string
	why       string // what it shows, for the report
	register  string // "file" (no fencing) or "store"
	fenced    bool   // the store refuses stale tokens
	transfers bool   // the transfers workload instead of the register
	// nemeses: "kill" (kill -9 of the holder, restarted), "stop" (SIGSTOP
	// for 2×lease, SIGCONT), "server" (kill -9 of the backend's server,
	// restarted empty after serverDown; only backends with a crash),
	// "sever" (every client connection dropped; only backends with a sever),
	// "partition" (the holder's connections to the server blackholed for
	// 2×lease through a proxy; only backends with an addrKey), "delay"
	// (the same connections slowed by lease/2 per chunk for 2×lease),
	// "reset" (the same connections reset), "expire" (the holder's session
	// ended from outside: pg_terminate_backend, an etcd lease revoked; only
	// backends with an expire).
	nemeses []string
	// long makes each critical section last 4/3 of the lease (the
	// default pause otherwise), so that the lease must be renewed inside it.
	long bool
	// persistent runs the scenario against a second server of the backend
	// that keeps its data across a crash (backends with persistent only).
	persistent bool
	// watchful makes the holder wait inside its critical section (up to
	// watchPause) on its context, as a holder that checks it should: a
	// holder told of a loss ends its section at once.
	watchful bool
}

// scenarios run on every backend, in this order.
var scenarios = []scenario{
	{name: "register-file/kill", register: "file", nemeses: []string{"kill"},
		why: "file register, no fencing; kill -9 of the holder"},
	{name: "fenced-store/stop", register: "store", fenced: true, nemeses: []string{"stop"},
		why: "register in the fenced store, fencing on; SIGSTOP of the holder for twice its lease, then SIGCONT"},
	{name: "unfenced-store/stop", register: "store", nemeses: []string{"stop"},
		why: "the same register and faults, fencing off: what a paused holder does without it"},
	{name: "transfers/stop+kill", register: "store", fenced: true, transfers: true, nemeses: []string{"stop", "kill"},
		why: fmt.Sprintf("transfers between %d accounts in the fenced store, fencing on, half with both locks in one yield and half with two yields in random key order (WithRestart); SIGSTOP and kill -9 of a holder", accounts)},
	{name: "fenced-store/server-crash+client-kill", register: "store", fenced: true, nemeses: []string{"server", "sever"},
		why: "register in the fenced store, fencing on; kill -9 of the backend's server, restarted empty (no persistence: every lock is forgotten), and every client connection killed (Redis: CLIENT KILL)"},
	{name: "fenced-store/server-crash-persistent", register: "store", fenced: true, nemeses: []string{"server"}, persistent: true,
		why: "the same server crashes against a server that keeps its data across the crash. Redis: appendonly, appendfsync always, so locks and fencing counters survive the restart. PostgreSQL: a private instance of the suite's own on an ephemeral port (the shared server on 5432 is never restarted), kill -9 of the postmaster and every backend, restarted on its data directory with crash recovery; advisory locks die with their sessions, the fencing sequence survives in the WAL. etcd: the single member killed (kill -9) and restarted on its data directory and port; leases and revisions survive"},
	{name: "fenced-store/session-expiry", register: "store", fenced: true, nemeses: []string{"expire"}, watchful: true,
		why: "register in the fenced store, fencing on; the holder's session ended from outside while it works in a critical section of up to " + watchPause.String() + " that watches its context (PostgreSQL: pg_terminate_backend of the backend holding the advisory lock; etcd: the holder's lease revoked): the holder must be told (its context cancelled with ErrLockLost), and no Run whose lock was gone before its release may return nil"},
	{name: "fenced-store/network", register: "store", fenced: true, nemeses: []string{"partition", "delay", "reset"}, long: true,
		why: "register in the fenced store, fencing on, critical sections longer than the lease (so it must be renewed inside them); through a proxy per worker, the holder's connections to the server blackholed for 2×lease then healed, delayed by lease/2 per chunk for 2×lease, or reset (TCP RST)"},
}

const (
	serverDown = 100 * time.Millisecond
	workers    = 4
	accounts   = 6 // transfers
	balance    = 100
	pause      = 20 * time.Millisecond // inside each critical section
	// grace is added to liveness bounds for a loaded machine under -race,
	// where the kernel frees a killed process's flock only after tearing
	// down its memory (the race detector's shadow included): up to 400ms
	// was seen on a busy 2-CPU machine.
	grace = time.Second
	// watchPause is the critical section of a watchful holder: long, so
	// that one not told of a loss would be seen still working.
	watchPause = 3 * time.Second
)

// runDuration is the length of each of n scenarios: CAESURA_SOAK shared
// among them (the backends run in parallel, so the whole run takes about
// that long), or the quick default.
func runDuration(t *testing.T, n int) time.Duration {
	if s := os.Getenv("CAESURA_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("CAESURA_SOAK=%q: want a positive duration such as 10m", s)
		}
		return max(d/time.Duration(n), 4*time.Second)
	}
	return 4 * time.Second
}

// fault is one injected fault.
type fault struct {
	kind      string // a nemesis: kill, stop, partition, server, sever
	t, end    int64  // when it began, and when it ended (SIGCONT sent, partition healed, server up)
	slot, inc int    // the victim (-1 for the server faults)
}

// startHiccupMeter measures, until the returned function is called, the
// worst lateness of a 10ms ticker in this process: how long the machine's
// load kept a runnable goroutine waiting. It returns that maximum.
func startHiccupMeter() func() time.Duration {
	stop := make(chan struct{})
	res := make(chan time.Duration)
	go func() {
		var worst time.Duration
		const tick = 10 * time.Millisecond
		last := time.Now()
		for {
			select {
			case <-stop:
				res <- worst
				return
			case <-time.After(tick):
				now := time.Now()
				worst = max(worst, now.Sub(last)-tick)
				last = now
			}
		}
	}()
	return func() time.Duration {
		close(stop)
		return <-res
	}
}

// proc is one worker process, one incarnation of a slot.
type proc struct {
	slot, inc int
	cmd       *exec.Cmd
	killed    atomic.Bool
	stderr    bytes.Buffer
}

// cluster supervises the worker processes of one scenario run.
type cluster struct {
	t        *testing.T
	spec     workerSpec // template
	dir      string
	deadline atomic.Int64 // UnixNano; set once every worker is ready

	proxies []*proxy // per slot, for the partition nemesis
	addrKey string

	mu    sync.Mutex
	byPID map[int]*proc
}

func (c *cluster) start(slot, inc int) (*proc, error) {
	s := c.spec
	s.Slot, s.Inc = slot, inc
	s.Holder = fmt.Sprintf("%s-%d", c.spec.Holder, slot)
	if c.proxies != nil {
		s.Config = maps.Clone(s.Config)
		s.Config[c.addrKey] = c.proxies[slot].addr()
	}
	s.History = filepath.Join(c.dir, fmt.Sprintf("history-%d-%d.jsonl", slot, inc))
	s.Ready = filepath.Join(c.dir, fmt.Sprintf("ready-%d-%d", slot, inc))
	b, _ := json.Marshal(s)
	p := &proc{slot: slot, inc: inc}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(os.Environ(), workerEnv+"="+string(b))
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.byPID[p.cmd.Process.Pid] = p
	c.mu.Unlock()
	return p, nil
}

// supervise runs slot's worker, restarting it after a kill while the run
// lasts.
func (c *cluster) supervise(slot int) {
	for inc := 0; ; inc++ {
		p, err := c.start(slot, inc)
		if err != nil {
			c.t.Errorf("start worker %d: %v", slot, err)
			return
		}
		err = p.cmd.Wait()
		c.mu.Lock()
		delete(c.byPID, p.cmd.Process.Pid)
		c.mu.Unlock()
		if p.killed.Load() {
			if time.Now().UnixNano() < c.deadline.Load() {
				continue
			}
			return
		}
		if err != nil {
			c.t.Errorf("worker %d.%d: %v\n%s", slot, inc, err, p.stderr.String())
		}
		return
	}
}

// holder returns the worker process inside its critical section, if one
// is running: each worker names itself in its slot's holder file (its pid
// and when it acquired) while it holds the lock, and clears it as it leaves.
// On a backend whose locks can be lost, a paused or cut-off holder may still
// name itself after another process acquired: the latest acquisition is the
// holder.
func (c *cluster) holder() *proc {
	var best *proc
	var bestAt int64
	for slot := range workers {
		b, err := os.ReadFile(fmt.Sprintf("%s-%d", c.spec.Holder, slot))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) != 2 {
			continue
		}
		pid, err1 := strconv.Atoi(f[0])
		at, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil || pid == 0 || at <= bestAt {
			continue
		}
		c.mu.Lock()
		p := c.byPID[pid]
		c.mu.Unlock()
		if p != nil {
			best, bestAt = p, at
		}
	}
	return best
}

// all returns the running workers.
func (c *cluster) all() []*proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*proc
	for _, p := range c.byPID {
		ps = append(ps, p)
	}
	return ps
}

// nemesis injects faults on a schedule until the run's end, and returns
// them. Every stopped process is continued before it returns.
func (c *cluster) nemesis(kinds []string, e *env) []fault {
	lease := e.lease
	stopFor := e.pauseFor()
	const every = 250 * time.Millisecond
	var faults []fault
	for i := 0; ; {
		time.Sleep(every + rand.N(every/2))
		kind := kinds[i%len(kinds)]
		need := every
		switch kind {
		case "stop", "partition", "delay":
			need += stopFor
		case "kill", "server", "sever", "reset", "expire":
			need += lease + grace // time for the takeover to show
		}
		if time.Until(time.Unix(0, c.deadline.Load())) < need {
			return faults
		}
		if kind == "server" || kind == "sever" {
			t0 := time.Now().UnixNano()
			var err error
			if kind == "server" {
				err = e.crash(serverDown)
			} else {
				err = e.sever()
			}
			if err != nil {
				c.t.Errorf("nemesis %s: %v", kind, err)
				return faults
			}
			faults = append(faults, fault{kind: kind, t: t0, end: time.Now().UnixNano(), slot: -1})
			i++
			continue
		}
		// Wait (briefly) for a process inside its critical section.
		p := c.holder()
		for try := 0; p == nil && try < 100; try++ {
			time.Sleep(2 * time.Millisecond)
			p = c.holder()
		}
		if p == nil {
			continue
		}
		switch kind {
		case "kill":
			p.killed.Store(true)
			t0 := time.Now().UnixNano()
			if p.cmd.Process.Signal(syscall.SIGKILL) != nil {
				continue
			}
			faults = append(faults, fault{kind: kind, t: t0, slot: p.slot, inc: p.inc})
			i++
		case "partition":
			px := c.proxies[p.slot]
			t0 := time.Now().UnixNano()
			px.block(true)
			time.Sleep(stopFor)
			t1 := time.Now().UnixNano()
			px.block(false)
			faults = append(faults, fault{kind: kind, t: t0, end: t1, slot: p.slot, inc: p.inc})
			i++
		case "delay":
			px := c.proxies[p.slot]
			t0 := time.Now().UnixNano()
			px.setDelay(max(lease/2, 50*time.Millisecond))
			time.Sleep(stopFor)
			t1 := time.Now().UnixNano()
			px.setDelay(0)
			faults = append(faults, fault{kind: kind, t: t0, end: t1, slot: p.slot, inc: p.inc})
			i++
		case "reset":
			t0 := time.Now().UnixNano()
			c.proxies[p.slot].reset()
			faults = append(faults, fault{kind: kind, t: t0, end: t0, slot: p.slot, inc: p.inc})
			i++
		case "expire":
			t0 := time.Now().UnixNano()
			err := e.expire(c.spec.Lock)
			t1 := time.Now().UnixNano()
			if errors.Is(err, errNoHolder) {
				continue // released meanwhile
			}
			if err != nil {
				c.t.Errorf("nemesis expire: %v", err)
				return faults
			}
			faults = append(faults, fault{kind: kind, t: t0, end: t1, slot: p.slot, inc: p.inc})
			i++
		case "stop":
			t0 := time.Now().UnixNano()
			if p.cmd.Process.Signal(syscall.SIGSTOP) != nil {
				continue
			}
			time.Sleep(stopFor)
			t1 := time.Now().UnixNano()
			p.cmd.Process.Signal(syscall.SIGCONT)
			faults = append(faults, fault{kind: kind, t: t0, end: t1, slot: p.slot, inc: p.inc})
			i++
		}
	}
}

// proxied reports whether sc needs a proxy in front of the server.
func proxied(sc scenario) bool {
	return slices.ContainsFunc(sc.nemeses, func(n string) bool { return n == "partition" || n == "delay" || n == "reset" })
}

// env is a backend started for a test.
type env struct {
	b            *backend
	cfg          map[string]string
	lease, renew time.Duration
	// crash, if set, kills the backend's server, waits, and restarts it.
	crash func(down time.Duration) error
	// sever, if set, drops every client's connection or session.
	sever func() error
	// addrKey, if set, names the server address in cfg: the partition
	// nemesis puts a proxy of its own in front of it for each worker.
	addrKey string
	// expire, if set, ends the session of lock's holder from outside
	// (pg_terminate_backend, an etcd lease revoked), and returns once it
	// has ended; errNoHolder if nobody held lock.
	expire func(lock string) error
	// detect bounds the time from a forced expiry to the holder's context
	// cancellation (before the machine's load and the grace are added).
	detect time.Duration
	// stopFor, if set, is how long SIGSTOP and partitions last; 2×lease
	// otherwise, or 300ms without a lease.
	stopFor time.Duration
	// hold, if set, is the critical section of the long scenarios on a
	// backend without a lease (4/3 of the lease otherwise).
	hold time.Duration
	// minRun, if set, is the shortest run of a scenario (a long lease
	// needs longer runs for its faults to fit).
	minRun time.Duration
	// missing says, per nemesis kind, why the backend does not offer it
	// (for the report's list of scenarios not run).
	missing map[string]string
}

// errNoHolder is an expire's answer when nobody held the lock.
var errNoHolder = errors.New("no holder")

func (e *env) pauseFor() time.Duration {
	switch {
	case e.stopFor > 0:
		return e.stopFor
	case e.lease > 0:
		return 2 * e.lease
	}
	return 300 * time.Millisecond
}

// runScenario runs sc on e for d, checks it and returns the result.
func runScenario(t *testing.T, e *env, sc scenario, d time.Duration) *result {
	dir := t.TempDir()
	var st *fencedStore
	spec := workerSpec{
		Backend:  e.b.name,
		Config:   e.cfg,
		Lock:     "reliability/" + strings.ReplaceAll(sc.name, "/", "-") + "/" + strconv.FormatInt(time.Now().UnixNano(), 36),
		Register: sc.register,
		File:     filepath.Join(dir, "register"),
		Key:      "register",
		Holder:   filepath.Join(dir, "holder"),
		Ops:      100_000,
		Pause:    pause,
		Workload: "register",
	}
	if sc.transfers {
		spec.Workload, spec.Accounts = "transfers", accounts
	}
	switch {
	case sc.watchful:
		spec.Pause, spec.Watch = watchPause, true
	case sc.long && e.hold > 0:
		spec.Pause = e.hold
	case sc.long && e.lease > 0:
		spec.Pause = e.lease * 4 / 3
	}
	if sc.register == "store" {
		st = startStore(t, sc.fenced)
		spec.Store = st.addr()
		for i := range spec.Accounts {
			st.set(fmt.Sprintf("acct-%d", i), balance)
		}
	}
	spec.Start = filepath.Join(dir, "start")
	c := &cluster{t: t, spec: spec, dir: dir, byPID: map[int]*proc{}, addrKey: e.addrKey}
	if proxied(sc) {
		for range workers {
			c.proxies = append(c.proxies, startProxy(t, e.cfg[e.addrKey]))
		}
	}

	var wg sync.WaitGroup
	for slot := range workers {
		wg.Go(func() { c.supervise(slot) })
	}
	// The clock starts when every worker is ready: on a loaded machine a
	// race-enabled process can take seconds to start.
	startWait := time.Now()
	for slot := 0; slot < workers; {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("ready-%d-0", slot))); err == nil {
			slot++
			continue
		}
		if time.Since(startWait) > 2*time.Minute {
			os.WriteFile(spec.Start, []byte("0"), 0o644) // let the others end at once
			wg.Wait()
			t.Fatalf("worker %d not ready after 2 minutes", slot)
		}
		time.Sleep(10 * time.Millisecond)
	}
	began := time.Now()
	deadline := began.Add(d)
	c.deadline.Store(deadline.UnixNano())
	tmp := spec.Start + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(deadline.UnixNano(), 10)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, spec.Start); err != nil {
		t.Fatal(err)
	}
	hiccups := startHiccupMeter()
	faults := c.nemesis(sc.nemeses, e)
	// Workers stop by themselves after the deadline (a wait gives up 5s
	// past it); past that they are killed and the run fails.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(deadline) + 15*time.Second):
		for _, p := range c.all() {
			p.cmd.Process.Signal(syscall.SIGCONT)
			p.cmd.Process.Kill()
		}
		<-done
		t.Errorf("workers still running 15s after the deadline: killed")
	}
	elapsed := time.Since(began)
	r0hiccup := hiccups()

	files, _ := filepath.Glob(filepath.Join(dir, "history-*.jsonl"))
	ops, bad, err := readHistories(files)
	if err != nil {
		t.Fatal(err)
	}
	var final int64
	if st != nil {
		final = st.value(spec.Key)
	} else {
		v, err := fileRegister(spec.File).read(0)
		if err != nil {
			t.Fatalf("read the register: %v", err)
		}
		final = v
	}
	r := check(ops, faults, final, sc.transfers)
	// Every lock's history against a mutex model: one lock for the
	// register, one per account for transfers.
	r.Linearizable, r.LinIndeterminate, r.LinLocks, r.LinOk = checkLocks(ops, sc.transfers, 20*time.Second)
	checkForced(r, ops, faults, e.detect+grace+2*r0hiccup)
	if sc.transfers {
		r.TotalWant = int64(accounts * balance)
		for i := range accounts {
			r.Total += st.value(fmt.Sprintf("acct-%d", i))
		}
		r.Drift = max(r.Total-r.TotalWant, r.TotalWant-r.Total)
	}
	r.Backend, r.Scenario, r.Why = e.b.name, sc.name, sc.why
	r.Lossy, r.Fenced, r.Register = e.b.lossy, sc.fenced, sc.register
	r.Elapsed = elapsed
	r.TornLines = bad
	r.Lease, r.Renew = e.lease, e.renew
	r.Hiccup = r0hiccup
	r.StartWait = began.Sub(startWait)
	r.PauseFor = e.pauseFor()
	if st != nil {
		r.StaleReads, r.StaleAttempted, r.StaleAccepted = st.counts()
	}
	judge(t, r, deadline)
	return r
}

// judge fails t for every broken guarantee, and logs what is only reported.
func judge(t *testing.T, r *result, deadline time.Time) {
	t.Helper()
	t.Logf("%s", r.summary())
	if r.Overlaps > 0 {
		t.Errorf("mutual exclusion: %d completed critical sections overlap another completed one, want 0", r.Overlaps)
	}
	if r.TokenOrder > 0 {
		t.Errorf("fencing tokens: %d completed critical sections have a token not above the one before, want 0", r.TokenOrder)
	}
	if r.Linearizable == string(porcupine.Illegal) {
		t.Errorf("porcupine: the acquire/release history is not linearizable against a mutex")
	}
	if r.Phantom > 0 {
		t.Errorf("register = %d, more than %d writes recorded plus %d indeterminate: phantom increments", r.Final, r.Committed, r.Ambiguous)
	}
	if r.StaleAccepted > 0 && r.Fenced {
		t.Errorf("fenced store accepted %d stale writes, want 0", r.StaleAccepted)
	}
	if f := r.Forced["expire"]; f != nil {
		if f.Untold > 0 {
			t.Errorf("forced expiry: %d holders were still in their critical section %v after their session was ended and were never told (context not cancelled with ErrLockLost)", f.Untold, r.Bound)
		}
		if f.CompletedAfter > 0 {
			t.Errorf("forced expiry: %d critical sections whose session was ended before their release returned nil from Run, want an error", f.CompletedAfter)
		}
	}
	// Where the lock is its connection's session (no lease to outlive it),
	// a reset connection or a crashed server ends the session too.
	if r.Lossy && r.Lease == 0 {
		for _, k := range []string{"reset", "server"} {
			if f := r.Forced[k]; f != nil && f.CompletedAfter > 0 {
				t.Errorf("%s: %d critical sections whose session had ended before their release returned nil from Run, want an error", faultName[k], f.CompletedAfter)
			}
		}
	}
	switch {
	case r.withoutFencing():
		if r.unfencedViolations() > 0 {
			t.Logf("violation without fencing (expected on a lease backend): %d lost updates, balance drift %d, %d stale writes accepted", r.LostUpdates, r.Drift, r.StaleAccepted)
		}
	case r.LostUpdates > 0:
		t.Errorf("%d lost updates, want 0", r.LostUpdates)
	case r.Drift != 0:
		t.Errorf("balance total = %d, want %d", r.Total, r.TotalWant)
	}
	// Progress: every worker slot was granted the lock. (Completing a
	// section is not required: the nemesis kills holders, and flock is not
	// fair, so a slot can be killed every time it holds.)
	for slot, n := range r.AcquiredPerSlot {
		if n == 0 {
			t.Errorf("liveness: worker %d never acquired the lock", slot)
		}
	}
	// The bound allows for the machine's load: the worst scheduling delay
	// the parent saw during the run (its hiccup) counts twice on top.
	bound := r.Lease + r.Renew + grace + 2*r.Hiccup
	for _, d := range r.Takeover {
		if d > bound {
			t.Errorf("liveness: the lock of a killed holder was taken over after %v, want at most %v (lease %v + renewal %v + grace %v + 2 × hiccup %v)", d, bound, r.Lease, r.Renew, grace, r.Hiccup)
		}
	}
	for _, k := range r.NotTakenOver {
		if deadline.Sub(time.Unix(0, k)) > bound {
			t.Errorf("liveness: the lock of the holder killed at %v was never taken over", time.Unix(0, k).Format(time.StampMilli))
		}
	}
}

// results collects every scenario's result for the report.
var results struct {
	mu  sync.Mutex
	all []*result
}

func record(r *result) {
	results.mu.Lock()
	defer results.mu.Unlock()
	results.all = append(results.all, r)
}

// runBackend starts backend name and runs every scenario on it.
func runBackend(t *testing.T, name string) {
	defer func() {
		if t.Skipped() {
			recordNotRun(name, "every scenario", skipReason(t))
		}
	}()
	b := backends[name]
	e := b.start(t)
	e.b = b
	var run []scenario
	for _, sc := range scenarios {
		if why := missing(sc, e, b); why != "" {
			recordNotRun(name, sc.name, why)
			continue
		}
		run = append(run, sc)
	}
	d := max(runDuration(t, len(run)), e.minRun)
	for _, sc := range run {
		t.Run(sc.name, func(t *testing.T) {
			defer func() {
				if t.Skipped() {
					recordNotRun(name, sc.name, skipReason(t))
				}
			}()
			e := e
			if sc.persistent {
				e = b.persistent(t)
				e.b = b
			}
			d := d
			if sc.long || sc.watchful {
				d = d * 3 / 2 // fewer, longer critical sections: more time for the faults
			}
			record(runScenario(t, e, sc, d))
		})
	}
}

// missing returns why backend b (started as e) cannot run sc, or "".
func missing(sc scenario, e *env, b *backend) string {
	why := func(kind, def string) string {
		if s := e.missing[kind]; s != "" {
			return s
		}
		return def
	}
	if sc.persistent {
		if b.persistent == nil {
			return why("persistent", "the backend has no server that keeps its data across a crash")
		}
	} else if slices.Contains(sc.nemeses, "server") && e.crash == nil {
		return why("server", "the backend has no server the suite can crash")
	}
	switch {
	case sc.fenced && b.unfenced:
		return "the backend issues no fencing tokens"
	case slices.Contains(sc.nemeses, "sever") && e.sever == nil:
		return why("sever", "the backend has no command that drops every client connection")
	case slices.Contains(sc.nemeses, "expire") && e.expire == nil:
		return why("expire", "no forced session expiry for this backend in the suite")
	case proxied(sc) && e.addrKey == "":
		return why("partition", "the backend has no network connection to cut")
	case sc.long && e.lease == 0 && e.hold == 0:
		return why("long", "the backend has no lease to renew inside a long critical section")
	}
	return ""
}

// notRun lists the scenarios a backend did not run, and why.
var notRun struct {
	mu   sync.Mutex
	all  []notRunRec
	skip map[string]string // test name -> the reason given to skipScenario
}

type notRunRec struct{ backend, scenario, why string }

func recordNotRun(backend, scenario, why string) {
	notRun.mu.Lock()
	defer notRun.mu.Unlock()
	notRun.all = append(notRun.all, notRunRec{backend, scenario, why})
}

// skipScenario skips t with why, which the report lists among the
// scenarios not run. It is for a prerequisite the machine lacks (a failure
// to start what is there is a failure).
func skipScenario(t *testing.T, why string) {
	t.Helper()
	notRun.mu.Lock()
	if notRun.skip == nil {
		notRun.skip = map[string]string{}
	}
	notRun.skip[t.Name()] = why
	notRun.mu.Unlock()
	t.Skip(why)
}

func skipReason(t *testing.T) string {
	notRun.mu.Lock()
	defer notRun.mu.Unlock()
	if why := notRun.skip[t.Name()]; why != "" {
		return why
	}
	return "skipped (see the test output)"
}

// The backends run in parallel with each other (their workers mostly
// sleep inside critical sections); the scenarios of one backend one after
// the other.

func TestFilelock(t *testing.T) {
	t.Parallel()
	runBackend(t, "filelock")
}

func TestRedislock(t *testing.T) {
	t.Parallel()
	runBackend(t, "redislock")
}

// TestRedislockUnfenced runs redislock's unfenced Locker (plain SET … NX,
// release by deleting the key) through the scenarios without fencing.
func TestRedislockUnfenced(t *testing.T) {
	t.Parallel()
	runBackend(t, "redislock-unfenced")
}

// TestRedislockValkey runs redislock on Valkey 8.1, where its one-key
// releases are conditional SETs rather than scripts.
func TestRedislockValkey(t *testing.T) {
	t.Parallel()
	runBackend(t, "redislock-valkey")
}
