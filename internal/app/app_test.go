package app

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/testbed"
	"github.com/haconfd/haconfd/render"
	"github.com/haconfd/haconfd/watch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ---- fakes of the small interfaces (the real ones are tested in haproxy and e2e) ----

// chanSource forwards snapshots the test sends.
type chanSource chan watch.Snapshot

func (c chanSource) Run(ctx context.Context, out chan<- watch.Snapshot) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-c:
			select {
			case out <- s:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// fakeRenderer renders "srv/<name>" = "<ip:port>[ options]" as server lines
// of "listen galera", and "struct/<k>" = line as lines of the global
// section (a structural change); "bad" fails.
type fakeRenderer struct{}

func (fakeRenderer) Render(in render.Input) (render.Output, error) {
	kvs := in.Map()
	var glob, servers []string
	for _, k := range slices.Sorted(maps.Keys(kvs)) {
		switch {
		case k == "bad":
			return render.Output{}, &render.TemplateError{File: "t.tmpl", Line: 3, Msg: "boom"}
		case strings.HasPrefix(k, "struct/"):
			glob = append(glob, "    "+kvs[k]+"\n")
		case strings.HasPrefix(k, "srv/"):
			servers = append(servers, strings.TrimPrefix(k, "srv/"))
		}
	}
	var b strings.Builder
	b.WriteString("global\n    maxconn 100\n")
	for _, l := range glob {
		b.WriteString(l)
	}
	b.WriteString("listen galera\n    bind 127.0.0.1:1\n    balance roundrobin\n")
	svc := render.Service{Name: "galera", Prefix: "/srv"}
	for _, name := range servers {
		fmt.Fprintf(&b, "    server %s %s\n", name, kvs["srv/"+name])
		svc.Nodes = append(svc.Nodes, render.Node{ID: name, Name: name})
	}
	return render.Output{Config: []byte(b.String()), Services: []render.Service{svc}}, nil
}

// fakeHAProxy is the runtime API and the reloader of one fake HAProxy:
// ops change its live state; a reload takes the servers of the new file.
type fakeHAProxy struct {
	mu      sync.Mutex
	live    []byte
	state   haproxy.LiveState
	sent    []string // runtime lines, in order
	writes  [][]byte
	applies [][]byte
	refuse  func(line string) bool
	// stateErr: show servers state fails (the runtime API does not answer).
	stateErr error
	applyFn  func(cfg []byte) error                      // nil: success
	writeFn  func(ctx context.Context, cfg []byte) error // nil: success
	// drains block until the test releases them (release), or ctx ends.
	drainGate map[string]chan struct{}
	drained   []string
	gateAll   bool
	events    []string // "send X", "drained X", "apply", "write"
}

func newFakeHAProxy() *fakeHAProxy {
	return &fakeHAProxy{state: haproxy.LiveState{}, drainGate: map[string]chan struct{}{}}
}

func (f *fakeHAProxy) ServersState() (haproxy.LiveState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stateErr != nil {
		return nil, f.stateErr
	}
	return f.state.Clone(), nil
}

func (f *fakeHAProxy) Send(op haproxy.ServerOp) error {
	line := op.NowLine()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse != nil && f.refuse(line) {
		return &haproxy.RuntimeError{Command: line, Reply: "refused by the test"}
	}
	f.sent = append(f.sent, line)
	f.events = append(f.events, "send "+op.Backend+"/"+op.Server+" "+string(op.Kind))
	s, _ := f.state.Get(op.Backend, op.Server)
	s.Backend, s.Name = op.Backend, op.Server
	switch op.Kind {
	case haproxy.OpAdd:
		s = haproxy.ServerState{Backend: op.Backend, Name: op.Server, Addr: op.Addr, Port: op.Port, Weight: *op.Weight}
		if op.Disabled {
			s.Admin = haproxy.AdminForcedMaint
		}
	case haproxy.OpRemove:
		s.Admin = haproxy.AdminForcedDrain
	case haproxy.OpUpdate:
		if op.Addr != "" {
			s.Addr, s.Port = op.Addr, op.Port
		}
		if op.Weight != nil {
			s.Weight = *op.Weight
		}
		s.Admin = 0
		if op.Disabled {
			s.Admin = haproxy.AdminForcedMaint
		}
	}
	f.state.Set(s)
	return nil
}

func (f *fakeHAProxy) gate(server string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.drainGate[server]
	if g == nil {
		g = make(chan struct{})
		f.drainGate[server] = g
	}
	return g
}

func (f *fakeHAProxy) release(server string) { close(f.gate(server)) }

func (f *fakeHAProxy) FinishDrain(ctx context.Context, op haproxy.ServerOp, _ time.Duration) error {
	f.mu.Lock()
	gated := f.gateAll
	f.mu.Unlock()
	if gated {
		select {
		case <-f.gate(op.Server):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state.Delete(op.Backend, op.Server)
	f.drained = append(f.drained, op.Server)
	f.events = append(f.events, "drained "+op.Backend+"/"+op.Server)
	return nil
}

// stateOf is the live state a fresh HAProxy has for cfg.
func stateOf(cfg []byte) haproxy.LiveState {
	out := haproxy.LiveState{}
	lines, _ := haproxy.ServerLines(cfg)
	for b, m := range lines {
		for name, line := range m {
			f := strings.Fields(line)
			host, port, _ := strings.Cut(f[2], ":")
			var p int
			fmt.Sscan(port, &p)
			s := haproxy.ServerState{Backend: b, Name: name, Addr: host, Port: p, Weight: 1}
			if i := slices.Index(f, "weight"); i > 0 && i+1 < len(f) {
				fmt.Sscan(f[i+1], &s.Weight)
			}
			if slices.Contains(f, "disabled") {
				s.Admin = haproxy.AdminForcedMaint | haproxy.AdminConfigMaint
			}
			out.Set(s)
		}
	}
	return out
}

func (f *fakeHAProxy) Apply(ctx context.Context, cfg []byte) (haproxy.Result, error) {
	f.mu.Lock()
	fn := f.applyFn
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return haproxy.Result{Action: haproxy.ActionNone}, err
	}
	if fn != nil {
		if err := fn(cfg); err != nil {
			return haproxy.Result{Action: haproxy.ActionNone}, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	action := haproxy.ActionReload
	if f.live == nil {
		action = haproxy.ActionStart
	}
	f.applies = append(f.applies, cfg)
	f.events = append(f.events, "apply")
	f.live = cfg
	f.state = stateOf(cfg)
	return haproxy.Result{Action: action, PID: len(f.applies)}, nil
}

func (f *fakeHAProxy) Write(ctx context.Context, cfg []byte) error {
	f.mu.Lock()
	fn := f.writeFn
	f.mu.Unlock()
	if fn != nil {
		if err := fn(ctx, cfg); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes = append(f.writes, cfg)
	f.events = append(f.events, "write")
	f.live = cfg
	return nil
}

func (f *fakeHAProxy) Check(context.Context, []byte) error { return nil }

func (f *fakeHAProxy) Live() ([]byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live, f.live != nil, nil
}

func (f *fakeHAProxy) Process(context.Context) haproxy.Process {
	f.mu.Lock()
	defer f.mu.Unlock()
	return haproxy.Process{Running: f.live != nil, Healthy: f.live != nil, PID: len(f.applies) + 1}
}

func (f *fakeHAProxy) NeedsReload() bool         { return false }
func (f *fakeHAProxy) Warnings() []string        { return nil }
func (f *fakeHAProxy) Restarts() <-chan struct{} { return nil }

func (f *fakeHAProxy) snapshot() (sent []string, applies, writes int, events []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sent), len(f.applies), len(f.writes), slices.Clone(f.events)
}

// gateSlot is a fleet reload slot the test opens.
type gateSlot struct {
	open     chan struct{}
	mu       sync.Mutex
	acquired int
	waiting  int
}

func (g *gateSlot) Acquire(ctx context.Context, _ haproxy.Action, _ []byte, _ render.Input) (func(bool, error), error) {
	g.mu.Lock()
	g.waiting++
	g.mu.Unlock()
	select {
	case <-g.open:
	case <-ctx.Done():
		g.mu.Lock()
		g.waiting--
		g.mu.Unlock()
		return nil, ctx.Err()
	}
	g.mu.Lock()
	g.acquired++
	g.waiting--
	g.mu.Unlock()
	return func(bool, error) {}, nil
}

func (g *gateSlot) counts() (waiting, acquired int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting, g.acquired
}

// ---- a fake clock ----

type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// Advance moves time on and runs the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	for _, t := range c.timers {
		if !t.stopped && !t.at.After(c.now) {
			t.stopped = true
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

// ---- harness ----

type rig struct {
	t     *testing.T
	src   chanSource
	hx    *fakeHAProxy
	board *Board
	bus   *Bus
	tgt   *HAProxyTarget
	clock *fakeClock
	stop  func()
	rev   int64
	kvs   map[string]string
}

type rigOpts struct {
	wait   time.Duration
	guards GuardOptions
	slot   ReloadSlot
	live   map[string]string // servers of a HAProxy already running (nil: none)
	mode   string
	resync time.Duration // LoopOptions.Resync (a real ticker; 0: never)
}

func newRig(t *testing.T, o rigOpts) *rig {
	t.Helper()
	r := &rig{t: t, src: make(chanSource), hx: newFakeHAProxy(), board: &Board{}, bus: NewBus(), clock: newFakeClock(), kvs: map[string]string{}}
	if o.live != nil {
		for k, v := range o.live {
			r.kvs["srv/"+k] = v
		}
		out, err := fakeRenderer{}.Render(render.Input{KVs: r.kvs})
		if err != nil {
			t.Fatal(err)
		}
		r.hx.live = out.Config
		r.hx.state = stateOf(out.Config)
	}
	r.tgt = NewHAProxyTarget(fakeRenderer{}, r.hx, r.hx, o.slot, HAProxyOptions{
		Mode: o.mode, Guards: o.guards, Board: r.board, Bus: r.bus,
		RetryMin: 20 * time.Millisecond, RetryMax: 40 * time.Millisecond,
	})
	loop := NewLoop(r.src, r.tgt, LoopOptions{WaitMin: o.wait, WaitMax: 4 * o.wait, Clock: r.clock, Resync: o.resync,
		OnSnapshot: func(s watch.Snapshot) { recordSnapshot(r.board, r.bus, nil, s) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx) }()
	r.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(r.stop)
	return r
}

// set changes keys ("" deletes) and sends the snapshot.
func (r *rig) set(kv ...string) int64 {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(r.kvs, kv[i])
		} else {
			r.kvs[kv[i]] = kv[i+1]
		}
	}
	r.rev++
	s := watch.Snapshot{Revision: r.rev}
	for _, k := range slices.Sorted(maps.Keys(r.kvs)) {
		s.KVs = append(s.KVs, watch.KV{Key: k, Value: r.kvs[k]})
	}
	r.src <- s
	return r.rev
}

func (r *rig) waitFor(what string, cond func() bool) {
	r.t.Helper()
	if err := testbed.Poll(10*time.Second, 2*time.Millisecond, cond); err != nil {
		r.t.Fatalf("%s: %v\nstatus: %+v\nfake: %+v", what, err, r.board.Get(), r.hx.events)
	}
}

func (r *rig) status() Status { return r.board.Get() }

func (r *rig) sentLine(substr string) bool {
	sent, _, _, _ := r.hx.snapshot()
	for _, l := range sent {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

// ---- tests ----

// Quiescence of the reload lane: a job starts MIN after the last submit,
// never later than MAX after the first one of the burst (fake clock).
func TestQuiescenceWindow(t *testing.T) {
	clock := newFakeClock()
	ran := make(chan time.Time, 10)
	got := make(chan *Lanes, 1)
	tgt := &funcTarget{start: func(l *Lanes) { got <- l }}
	loop := NewLoop(chanSource(make(chan watch.Snapshot)), tgt, LoopOptions{WaitMin: 100 * time.Millisecond, WaitMax: 250 * time.Millisecond, Clock: clock})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx) }()
	defer func() { cancel(); <-done }()
	lanes := <-got
	job := &Job{Name: "t", Wait: true, Run: func(context.Context) error { ran <- clock.Now(); return nil }}
	submit := func() {
		if err := lanes.Call(context.Background(), func() { lanes.Submit(job) }); err != nil {
			t.Fatal(err)
		}
	}
	start := clock.Now()
	submit()
	for i := 0; i < 2; i++ { // t=0, 80, 160: each submit restarts MIN
		clock.Advance(80 * time.Millisecond)
		submit()
	}
	clock.Advance(80 * time.Millisecond) // t=240: MIN not over, MAX (250) not reached
	select {
	case at := <-ran:
		t.Fatalf("job ran at +%v, before MAX", at.Sub(start))
	case <-time.After(50 * time.Millisecond):
	}
	clock.Advance(10 * time.Millisecond) // t=250: MAX
	select {
	case at := <-ran:
		if got := at.Sub(start); got != 250*time.Millisecond {
			t.Fatalf("job ran at +%v, want +250ms (MAX after the first submit)", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("job never ran at MAX")
	}
	// A lone submit runs MIN after it.
	start = clock.Now()
	job2 := &Job{Name: "t2", Wait: true, Run: func(context.Context) error { ran <- clock.Now(); return nil }}
	if err := lanes.Call(context.Background(), func() { lanes.Submit(job2) }); err != nil {
		t.Fatal(err)
	}
	clock.Advance(99 * time.Millisecond)
	select {
	case <-ran:
		t.Fatal("ran before MIN")
	case <-time.After(50 * time.Millisecond):
	}
	clock.Advance(time.Millisecond)
	select {
	case at := <-ran:
		if got := at.Sub(start); got != 100*time.Millisecond {
			t.Fatalf("ran at +%v, want +100ms", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("never ran")
	}
}

type funcTarget struct{ start func(*Lanes) }

func (f *funcTarget) Start(_ context.Context, l *Lanes) error {
	f.start(l)
	return nil
}
func (f *funcTarget) Snapshot(context.Context, watch.Snapshot) {}
func (f *funcTarget) Resync(context.Context)                   {}
func (f *funcTarget) Result() error                            { return nil }

// A server-only change goes through the runtime API and the file is
// written; HAProxy is never reloaded.
func TestServerChangeIsRuntimeOnly(t *testing.T) {
	r := newRig(t, rigOpts{wait: time.Hour, live: map[string]string{"db1": "10.0.0.1:3306", "db2": "10.0.0.2:3306"}})
	rev := r.set("srv/db3", "10.0.0.3:3306")
	r.waitFor("db3 added and written", func() bool { return r.status().Applied == rev })
	sent, applies, writes, _ := r.hx.snapshot()
	if applies != 0 || writes != 1 || len(sent) != 1 || !strings.HasPrefix(sent[0], "add server galera/db3 10.0.0.3:3306") {
		t.Fatalf("sent %q, %d applies, %d writes; want one add, no reload, one write", sent, applies, writes)
	}
	// Quiescence (an hour here) never delays the fast lane.
	rev = r.set("srv/db1", "10.0.0.1:3306 disabled")
	r.waitFor("db1 disabled", func() bool { return r.sentLine("set server galera/db1 state maint") })
	r.waitFor("written", func() bool { return r.status().Applied == rev })
}

// A write cut short because a newer render made it pointless (a node
// added and removed again while haproxy -c checked the file with it) is
// not a failure: no error, no failed event, no retry.
func TestSupersededWriteIsNoFailure(t *testing.T) {
	r := newRig(t, rigOpts{live: map[string]string{"db1": "10.0.0.1:3306", "db2": "10.0.0.2:3306"}})
	started := make(chan struct{})
	var once sync.Once
	r.hx.mu.Lock()
	r.hx.writeFn = func(ctx context.Context, cfg []byte) error {
		if !strings.Contains(string(cfg), "db3") {
			return nil
		}
		once.Do(func() { close(started) })
		<-ctx.Done()
		return fmt.Errorf("validate stage: %w", ctx.Err())
	}
	r.hx.mu.Unlock()
	r.set("srv/db3", "10.0.0.3:3306")
	<-started
	rev := r.set("srv/db3", "")
	r.waitFor("db3 gone again, live", func() bool { return r.status().Applied == rev })
	r.waitFor("the canceled write done", func() bool {
		idle := false
		if err := r.tgt.lanes.Call(context.Background(), func() { idle = r.tgt.lanes.running == nil }); err != nil {
			t.Fatal(err)
		}
		return idle
	})
	if st := r.status(); st.LastError != "" {
		t.Fatalf("last error %q after a superseded write", st.LastError)
	}
	for _, e := range r.bus.Recent() {
		if e.Kind == EventFailed {
			t.Fatalf("failed event after a superseded write: %+v", e)
		}
	}
}

// The fleet reload slot is held elsewhere and a reload waits for it;
// meanwhile a node leaving Synced is drained through the runtime API at
// once; when the slot frees, one reload runs, with the newest render.
func TestUrgentChangeDoesNotWaitForReloadSlot(t *testing.T) {
	slot := &gateSlot{open: make(chan struct{})}
	r := newRig(t, rigOpts{slot: slot, live: map[string]string{"db1": "10.0.0.1:3306", "db2": "10.0.0.2:3306"}})
	r.set("struct/a", "tune.bufsize 32768") // needs a reload
	r.waitFor("reload waiting for the slot", func() bool { w, _ := slot.counts(); return w == 1 })
	if p := r.status().Pending; p == nil || p.Waiting != "fleet reload slot" {
		t.Fatalf("pending = %+v, want waiting for the fleet reload slot", p)
	}
	r.set("srv/db2", "10.0.0.2:3306 disabled")
	r.waitFor("db2 out of rotation before the slot frees", func() bool { return r.sentLine("set server galera/db2 state maint") })
	if _, applies, _, _ := r.hx.snapshot(); applies != 0 {
		t.Fatal("reloaded before the slot was free")
	}
	rev := r.set("srv/db3", "10.0.0.3:3306")
	r.waitFor("db3 added meanwhile", func() bool { return r.sentLine("add server galera/db3") })
	close(slot.open)
	r.waitFor("reload done", func() bool { return r.status().Applied == rev })
	_, applies, _, _ := r.hx.snapshot()
	if applies != 1 {
		t.Fatalf("%d reloads, want exactly 1", applies)
	}
	live, _, _ := r.hx.Live()
	for _, want := range []string{"tune.bufsize 32768", "server db2 10.0.0.2:3306 disabled", "server db3 10.0.0.3:3306"} {
		if !strings.Contains(string(live), want) {
			t.Errorf("reloaded config lacks %q:\n%s", want, live)
		}
	}
}

// A removed server drains in the background: a change of another server
// goes live while the first one still drains.
func TestDrainsDoNotBlock(t *testing.T) {
	r := newRig(t, rigOpts{live: map[string]string{"db1": "10.0.0.1:3306", "db2": "10.0.0.2:3306", "db3": "10.0.0.3:3306"}})
	r.hx.mu.Lock()
	r.hx.gateAll = true
	r.hx.mu.Unlock()
	r.set("srv/db1", "")
	r.waitFor("db1 draining", func() bool { return r.sentLine("set server galera/db1 state drain") })
	r.waitFor("file written without db1 while it drains", func() bool {
		live, _, _ := r.hx.Live()
		return !strings.Contains(string(live), "server db1 ")
	})
	r.set("srv/db2", "10.0.0.2:3306 disabled")
	r.waitFor("db2 maint while db1 drains", func() bool { return r.sentLine("set server galera/db2 state maint") })
	if st := r.status(); !slices.Equal(st.Draining, []string{"galera/db1"}) {
		t.Fatalf("draining = %v", st.Draining)
	}
	r.hx.release("db1")
	r.waitFor("db1 gone", func() bool { return len(r.status().Draining) == 0 })
	_, _, _, ev := r.hx.snapshot()
	want := []string{"send galera/db1 remove", "send galera/db2 update", "drained galera/db1"}
	var got []string
	for _, e := range ev {
		if strings.HasPrefix(e, "send") || strings.HasPrefix(e, "drained") {
			got = append(got, e)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// A server that comes back while it drains is returned to rotation.
func TestDrainCanceledWhenNodeReturns(t *testing.T) {
	r := newRig(t, rigOpts{live: map[string]string{"db1": "10.0.0.1:3306", "db2": "10.0.0.2:3306", "db3": "10.0.0.3:3306"}})
	r.hx.mu.Lock()
	r.hx.gateAll = true
	r.hx.mu.Unlock()
	r.set("srv/db1", "")
	r.waitFor("db1 draining", func() bool { return len(r.status().Draining) == 1 })
	rev := r.set("srv/db1", "10.0.0.1:3306")
	r.waitFor("db1 ready again", func() bool { return r.sentLine("set server galera/db1 state ready") })
	r.waitFor("converged", func() bool { return r.status().Applied == rev && len(r.status().Draining) == 0 })
	st, _ := r.hx.ServersState()
	if s, ok := st.Get("galera", "db1"); !ok || s.Drain() || s.Maint() {
		t.Fatalf("db1 = %+v, %v; want in rotation", s, ok)
	}
}

// --max-remove holds only the removals beyond the share, per server; an
// add goes live meanwhile; each held server goes after its own
// --guard-hold.
func TestGuardHoldsServersNotRenders(t *testing.T) {
	live := map[string]string{}
	for i := 1; i <= 6; i++ {
		live[fmt.Sprintf("db%d", i)] = fmt.Sprintf("10.0.0.%d:3306", i)
	}
	r := newRig(t, rigOpts{live: live, guards: GuardOptions{MinServers: 1, MaxRemove: 0.5, Hold: time.Minute}})
	r.set("srv/db3", "", "srv/db4", "", "srv/db5", "", "srv/db6", "")
	r.waitFor("one server held", func() bool { return len(r.status().HeldServers) == 1 })
	if h := r.status().HeldServers[0]; h.Server != "db6" || h.Guard != GuardMaxRemove || h.Until.IsZero() {
		t.Fatalf("held = %+v, want db6 by max_remove with a release time", h)
	}
	for _, s := range []string{"db3", "db4", "db5"} {
		r.waitFor(s+" removed", func() bool { return r.sentLine("set server galera/" + s + " state drain") })
	}
	if r.sentLine("galera/db6") {
		t.Fatal("db6 was touched while held")
	}
	rev := r.set("srv/db7", "10.0.0.7:3306")
	r.waitFor("db7 served during the hold", func() bool { return r.sentLine("add server galera/db7") })
	r.waitFor("live", func() bool { return r.status().Applied == rev })
	if ok, why := r.status().Ready(); !ok || !strings.Contains(why, "db6") {
		t.Fatalf("readyz = %v %q, want ready listing the held server", ok, why)
	}
	live2, _, _ := r.hx.Live()
	if !strings.Contains(string(live2), "server db6 10.0.0.6:3306") {
		t.Fatalf("held server not kept in the file:\n%s", live2)
	}
	// Other keys keep changing; the hold ends after its own minute.
	r.set("srv/db1", "10.0.0.1:3306 weight 2")
	r.clock.Advance(61 * time.Second)
	r.waitFor("db6 released", func() bool { return r.sentLine("set server galera/db6 state drain") })
	r.waitFor("no hold left", func() bool { return len(r.status().HeldServers) == 0 })
}

// Removals spread over time count together (sliding window).
func TestGuardWindowCountsSpreadRemovals(t *testing.T) {
	live := map[string]string{}
	for i := 1; i <= 6; i++ {
		live[fmt.Sprintf("db%d", i)] = fmt.Sprintf("10.0.0.%d:3306", i)
	}
	r := newRig(t, rigOpts{live: live, guards: GuardOptions{MinServers: 1, MaxRemove: 0.5, Hold: time.Minute}})
	for i, s := range []string{"db3", "db4", "db5"} {
		rev := r.set("srv/"+s, "")
		r.waitFor(s+" removed", func() bool { return r.status().Applied == rev })
		r.clock.Advance(300 * time.Millisecond)
		if n := len(r.status().HeldServers); n != 0 {
			t.Fatalf("removal %d held", i+1)
		}
	}
	r.set("srv/db6", "")
	r.waitFor("the fourth removal is held", func() bool { return len(r.status().HeldServers) == 1 })
	// Outside the window, removals go again.
	r.clock.Advance(2 * time.Minute)
	r.waitFor("released", func() bool { return len(r.status().HeldServers) == 0 })
}

// --min-servers keeps the last server of a section, never released by
// time; it goes once another server is back.
func TestMinServersKeepsLast(t *testing.T) {
	r := newRig(t, rigOpts{live: map[string]string{"db1": "10.0.0.1:3306", "db2": "10.0.0.2:3306"}, guards: GuardOptions{MinServers: 1, MaxRemove: 1, Hold: time.Second}})
	r.set("srv/db1", "", "srv/db2", "")
	r.waitFor("one kept", func() bool { return len(r.status().HeldServers) == 1 })
	if h := r.status().HeldServers[0]; h.Guard != GuardMinServers || !h.Until.IsZero() {
		t.Fatalf("held = %+v", h)
	}
	r.clock.Advance(time.Hour)
	time.Sleep(20 * time.Millisecond)
	if len(r.status().HeldServers) != 1 {
		t.Fatal("min_servers hold released by time")
	}
	r.set("srv/db3", "10.0.0.3:3306")
	r.waitFor("released once db3 is there", func() bool { return len(r.status().HeldServers) == 0 })
}

// A failed reload leaves an error; a change back to what is live clears it.
func TestBackToLiveClearsError(t *testing.T) {
	r := newRig(t, rigOpts{live: map[string]string{"db1": "10.0.0.1:3306"}})
	r.hx.applyFn = func(cfg []byte) error {
		if strings.Contains(string(cfg), "broken") {
			return fmt.Errorf("%w: line 3: unknown keyword 'broken'", haproxy.ErrInvalidConfig)
		}
		return nil
	}
	r.set("struct/x", "broken")
	r.waitFor("failed", func() bool { return r.status().LastError != "" })
	rev := r.set("struct/x", "")
	r.waitFor("error cleared by going back", func() bool { s := r.status(); return s.LastError == "" && s.Applied == rev })
	if ok, why := r.status().Ready(); !ok {
		t.Fatalf("not ready: %s", why)
	}
}

// A runtime command HAProxy refuses falls back to a reload.
func TestRefusedRuntimeChangeReloads(t *testing.T) {
	r := newRig(t, rigOpts{live: map[string]string{"db1": "10.0.0.1:3306"}})
	r.hx.refuse = func(line string) bool { return strings.Contains(line, "add server galera/db2") }
	rev := r.set("srv/db2", "10.0.0.2:3306")
	r.waitFor("reloaded", func() bool { return r.status().Applied == rev })
	if _, applies, _, _ := r.hx.snapshot(); applies != 1 {
		t.Fatalf("%d reloads, want 1", applies)
	}
}

// A change typed by hand on the socket is repaired at the next resync.
func TestResyncRepairsLiveState(t *testing.T) {
	r := newRig(t, rigOpts{live: map[string]string{"db1": "10.0.0.1:3306", "db2": "10.0.0.2:3306"}})
	rev := r.set("srv/db3", "10.0.0.3:3306")
	r.waitFor("live", func() bool { return r.status().Applied == rev })
	r.hx.mu.Lock()
	s, _ := r.hx.state.Get("galera", "db1")
	s.Admin = haproxy.AdminForcedMaint
	r.hx.state.Set(s)
	r.hx.mu.Unlock()
	r.tgt.lanes.Post(func() { r.tgt.Resync(context.Background()) })
	r.waitFor("db1 ready again", func() bool { return r.sentLine("set server galera/db1 state ready") })
	if r.status().Repairs != 1 {
		t.Fatalf("repairs = %d", r.status().Repairs)
	}
}

// The first start waits for nodes (--min-servers), then starts once.
func TestFirstStartHeldUntilNodes(t *testing.T) {
	r := newRig(t, rigOpts{guards: GuardOptions{MinServers: 1}})
	r.set("struct/a", "tune.bufsize 16384")
	r.waitFor("start held", func() bool { return strings.Contains(r.status().Held, "fewer than --min-servers 1") })
	if ok, _ := r.status().Ready(); ok {
		t.Fatal("ready before anything is live")
	}
	rev := r.set("srv/db1", "10.0.0.1:3306")
	r.waitFor("started", func() bool { return r.status().Applied == rev })
	if _, applies, _, _ := r.hx.snapshot(); applies != 1 {
		t.Fatalf("%d starts", applies)
	}
}

// A render that fails leaves everything as it was; a failed start may be
// retried, a rejected config is not (until it changes).
func TestFailuresAndRetries(t *testing.T) {
	r := newRig(t, rigOpts{live: map[string]string{"db1": "10.0.0.1:3306"}})
	r.set("bad", "x")
	r.waitFor("render error", func() bool { return strings.Contains(r.status().LastError, "t.tmpl:3") })
	var mu sync.Mutex
	calls := 0
	r.hx.applyFn = func([]byte) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls < 3 {
			return fmt.Errorf("%w: bind busy", haproxy.ErrStartFailed)
		}
		return nil
	}
	rev := r.set("bad", "", "struct/a", "tune.bufsize 16384")
	r.waitFor("retried until it works", func() bool { r.clock.Advance(50 * time.Millisecond); return r.status().Applied == rev })
	r.hx.applyFn = func([]byte) error {
		mu.Lock()
		calls++
		mu.Unlock()
		return fmt.Errorf("%w: x", haproxy.ErrInvalidConfig)
	}
	mu.Lock()
	calls = 0
	mu.Unlock()
	r.set("struct/a", "tune.bufsize 8192")
	r.waitFor("rejected", func() bool { mu.Lock(); defer mu.Unlock(); return calls == 1 })
	for range 5 {
		r.clock.Advance(50 * time.Millisecond) // past RetryMax: a rejected config is not retried
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Fatalf("a rejected config was tried %d times", calls)
	}
}

// A render whose file haproxy -c refuses never stays live: the servers
// the runtime API already changed for it are changed back to the live
// file's (an added server is removed again).
func TestRejectedWriteUndoesRuntimeChanges(t *testing.T) {
	r := newRig(t, rigOpts{live: map[string]string{"db1": "10.0.0.1:3306"}})
	r.hx.mu.Lock()
	r.hx.writeFn = func(_ context.Context, cfg []byte) error {
		if strings.Contains(string(cfg), "db2") {
			return fmt.Errorf("%w: line 9: db2 refused by the test", haproxy.ErrInvalidConfig)
		}
		return nil
	}
	r.hx.mu.Unlock()
	r.set("srv/db2", "10.0.0.2:3306")
	r.waitFor("db2 added through the runtime API", func() bool { return r.sentLine("add server galera/db2") })
	r.waitFor("db2 taken out again after haproxy -c refused the file", func() bool { return r.sentLine("set server galera/db2 state drain") })
	if s := r.status(); !strings.Contains(s.LastError, "db2 refused by the test") {
		t.Fatalf("last error %q, want haproxy -c's", s.LastError)
	}
}

// A runtime API that does not answer (three failed reads of the live
// state) sends server changes through a reload.
func TestUnansweringRuntimeAPIReloads(t *testing.T) {
	r := newRig(t, rigOpts{live: map[string]string{"db1": "10.0.0.1:3306"}})
	r.hx.mu.Lock()
	r.hx.stateErr = errors.New("connection refused by the test")
	r.hx.mu.Unlock()
	r.clock.Advance(time.Hour) // the next resync fails
	r.set("srv/db2", "10.0.0.2:3306")
	r.waitFor("db2 live through a reload", func() bool {
		r.clock.Advance(100 * time.Millisecond)
		r.hx.mu.Lock()
		defer r.hx.mu.Unlock()
		return slices.ContainsFunc(r.hx.applies, func(cfg []byte) bool { return strings.Contains(string(cfg), "server db2 ") })
	})
	if r.sentLine("add server galera/db2") {
		t.Fatal("add server sent although the runtime API does not answer")
	}
}

// A socket that stays dead while reloads succeed does not make haconfd
// reload the same config at every failed resync (it did: ~50,000 reloads
// in 10 s with no wait): a render equal to the live file needs no reload.
func TestUnansweringRuntimeAPIDoesNotReloadUnchanged(t *testing.T) {
	r := newRig(t, rigOpts{live: map[string]string{"db1": "10.0.0.1:3306"}, resync: 5 * time.Millisecond})
	rev := r.set("srv/db1", "10.0.0.1:3306")
	r.waitFor("adopted", func() bool { return r.status().Applied == rev })
	r.hx.mu.Lock()
	r.hx.stateErr = errors.New("connection refused by the test")
	before := len(r.hx.applies)
	r.hx.mu.Unlock()
	for range 100 { // 100 resyncs at least, each failing
		r.clock.Advance(10 * time.Second) // past every retry backoff
		time.Sleep(10 * time.Millisecond)
	}
	r.hx.mu.Lock()
	n := len(r.hx.applies) - before
	r.hx.mu.Unlock()
	if n > 0 {
		t.Fatalf("%d reloads of an unchanged config while the runtime API does not answer", n)
	}
	// Once the socket answers again, server changes take the runtime API
	// again (no reload left over from the outage).
	r.hx.mu.Lock()
	r.hx.stateErr = nil
	r.hx.mu.Unlock()
	was := r.status().Resynced
	r.waitFor("a resync that reads the live state", func() bool { return r.status().Resynced.After(was) })
	r.set("srv/db2", "10.0.0.2:3306")
	r.waitFor("db2 added through the runtime API", func() bool {
		r.clock.Advance(100 * time.Millisecond)
		return r.sentLine("add server galera/db2")
	})
	r.hx.mu.Lock()
	defer r.hx.mu.Unlock()
	if n := len(r.hx.applies) - before; n > 0 {
		t.Fatalf("%d reloads after the runtime API answered again", n)
	}
}

// A structural change that failed is not tried again until something
// structural changes: a server change meanwhile goes through the runtime
// API and does not start the failed reload again.
func TestFailedStructuralChangeNotRetriedOnServerChange(t *testing.T) {
	r := newRig(t, rigOpts{live: map[string]string{"db1": "10.0.0.1:3306"}})
	var mu sync.Mutex
	calls := 0
	r.hx.applyFn = func([]byte) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return fmt.Errorf("%w: x", haproxy.ErrInvalidConfig)
	}
	r.set("struct/a", "tune.bufsize 8192")
	r.waitFor("rejected", func() bool { mu.Lock(); defer mu.Unlock(); return calls == 1 })
	rev := r.set("srv/db2", "10.0.0.2:3306")
	r.waitFor("db2 added through the runtime API", func() bool { return r.status().RuntimeApplied == rev })
	for range 5 {
		r.clock.Advance(50 * time.Millisecond) // past quiescence and RetryMax
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Fatalf("the failed structural change was tried %d times after a server change", calls)
	}
}

// --once applies the first snapshot and returns its result.
func TestOnce(t *testing.T) {
	hx := newFakeHAProxy()
	src := make(chanSource, 1)
	tgt := NewHAProxyTarget(fakeRenderer{}, hx, hx, nil, HAProxyOptions{Guards: GuardOptions{MinServers: 1}})
	src <- watch.Snapshot{Revision: 1, KVs: []watch.KV{{Key: "srv/db1", Value: "10.0.0.1:3306"}}}
	if err := NewLoop(src, tgt, LoopOptions{Once: true}).Run(context.Background()); err != nil {
		t.Fatalf("once: %v", err)
	}
	hx.applyFn = func([]byte) error { return errors.New("nope") }
	tgt = NewHAProxyTarget(fakeRenderer{}, hx, hx, nil, HAProxyOptions{Guards: GuardOptions{MinServers: 1}})
	src <- watch.Snapshot{Revision: 2, KVs: []watch.KV{{Key: "srv/db1", Value: "10.0.0.1:3306"}, {Key: "struct/a", Value: "tune.bufsize 1"}}}
	if err := NewLoop(src, tgt, LoopOptions{Once: true}).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("once: %v, want nope", err)
	}
}
