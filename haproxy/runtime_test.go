package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type rtServer struct {
	name  string
	port  int
	extra string // options after the address
}

// rtConfig renders a config with a state file and one "listen db".
func (s *site) rtConfig(front int, balance string, servers ...rtServer) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "global\n    stats socket %s level admin expose-fd listeners\n    server-state-file %s\n", s.sock, filepath.Join(s.dir, "state"))
	b.WriteString("defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n    load-server-state-from-file global\n")
	fmt.Fprintf(&b, "listen db\n    bind 127.0.0.1:%d\n    balance %s\n    default-server inter 100ms rise 1 fall 2\n", front, balance)
	for _, sv := range servers {
		fmt.Fprintf(&b, "    server %s 127.0.0.1:%d %s\n", sv.name, sv.port, sv.extra)
	}
	return []byte(b.String())
}

func newRuntimeSite(t *testing.T, mutate func(*Options)) *site {
	return newSite(t, func(o *Options) {
		o.StateFile = filepath.Join(filepath.Dir(o.ConfigPath), "state")
		if mutate != nil {
			mutate(o)
		}
	})
}

// fastResult is what applyFast did.
type fastResult struct {
	plan     ServerPlan
	commands int
	took     time.Duration // until the last command was answered (drains excluded)
	sent     []string      // every line sent to the runtime API, drains included
}

// lineLog collects the "runtime command" lines a Runtime logs.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *lineLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "line" {
			l.mu.Lock()
			l.lines = append(l.lines, a.Value.String())
			l.mu.Unlock()
		}
		return true
	})
	return nil
}
func (l *lineLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *lineLog) WithGroup(string) slog.Handler      { return l }

func (l *lineLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// applyFast does what haconfd's fast lane does with next: plan against
// HAProxy's live state, send each op, finish drains (here in line, at
// most drain), then write the file (haproxy -c first). It fails the test
// when the plan needs a reload.
func applyFast(t *testing.T, s *site, next []byte, drain time.Duration) fastResult {
	t.Helper()
	sent := &lineLog{}
	rt, err := NewRuntime(s.sock, slog.New(sent), haproxyVersion.Caps())
	if err != nil {
		t.Fatal(err)
	}
	live, err := rt.ServersState()
	if err != nil {
		t.Fatal(err)
	}
	running, _, err := s.m.Live()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	plan, err := PlanServers(running, next, live, nil, haproxyVersion.Caps())
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Pending) > 0 {
		t.Fatalf("plan needs a reload: %v", plan.Pending)
	}
	res := fastResult{plan: plan}
	var drains []ServerOp
	for _, op := range plan.Ops {
		if err := rt.Send(op); err != nil {
			t.Fatalf("send %q: %v", op.NowLine(), err)
		}
		res.commands++
		if op.Drains() {
			drains = append(drains, op)
		}
	}
	res.took = time.Since(start)
	for _, op := range drains {
		if err := rt.FinishDrain(t.Context(), op, drain); err != nil {
			t.Fatalf("drain %s/%s: %v", op.Backend, op.Server, err)
		}
	}
	res.sent = sent.all()
	if err := s.m.Write(t.Context(), next); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, s.cfg), next) {
		t.Fatal("live file is not the applied config")
	}
	return res
}

// serverStates returns "show servers state" lines of backend db by server name.
func serverStates(t *testing.T, sock string) map[string][]string {
	t.Helper()
	return serverStatesOf(t, sock, "db")
}

// serverStatesOf returns "show servers state" lines of backend by server name.
func serverStatesOf(t *testing.T, sock, backend string) map[string][]string {
	t.Helper()
	reply, err := socketCommand(t.Context(), sock, "show servers state "+backend)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]string)
	for _, l := range strings.Split(string(reply), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && f[1] == backend {
			out[f[3]] = f
		}
	}
	return out
}

func mustApply(t *testing.T, s *site, cfg []byte, want Action) Result {
	t.Helper()
	res, err := s.m.Apply(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Apply = %+v, %v", res, err)
	}
	if res.Action != want {
		t.Fatalf("Apply action = %s (%+v), want %s", res.Action, res, want)
	}
	if !bytes.Equal(readFile(t, s.cfg), cfg) {
		t.Fatal("live file is not the applied config")
	}
	return res
}

// seenWithin dials until a connection reaches id, and reports how long it took.
func seenWithin(t *testing.T, port int, id string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if got, err := dial(port); err == nil && got == id {
			return time.Since(start)
		}
	}
	t.Fatalf("no connection reached %q within %v", id, d)
	return 0
}

func TestRuntimeAddMoveWeightDisable(t *testing.T) {
	s := newRuntimeSite(t, nil)
	a, b, c := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")
	front := freePort(t)
	first := mustApply(t, s, s.rtConfig(front, "roundrobin", rtServer{"a", a.port, "check"}), ActionStart)
	pid := first.PID

	steps := []struct {
		name    string
		servers []rtServer
		sees    string
	}{
		{"add without check", []rtServer{{"a", a.port, "check"}, {"b", b.port, ""}}, "b"},
		{"add with check", []rtServer{{"a", a.port, "check"}, {"b", b.port, ""}, {"c", c.port, "check weight 3"}}, "c"},
		{"weight", []rtServer{{"a", a.port, "check"}, {"b", b.port, ""}, {"c", c.port, "check weight 10"}}, ""},
		{"disable", []rtServer{{"a", a.port, "check"}, {"b", b.port, "disabled"}, {"c", c.port, "check weight 10"}}, ""},
		{"move a to c's port", []rtServer{{"a", c.port, "check"}, {"b", b.port, "disabled"}, {"c", c.port, "check weight 10"}}, ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			res := applyFast(t, s, s.rtConfig(front, "roundrobin", st.servers...), 2*time.Second)
			if res.commands == 0 {
				t.Fatalf("plan = %+v, want commands", res.plan)
			}
			if pids := s.m.Process(t.Context()).PIDs; !slices.Equal(pids, []int{pid}) {
				t.Fatalf("PIDs = %v, want [%d]", pids, pid)
			}
			if st.sees != "" {
				took := seenWithin(t, front, st.sees, 5*time.Second)
				t.Logf("runtime %v (%d commands); first connection to %s %v after that", res.took, res.commands, st.sees, took)
			}
		})
	}
	states := serverStates(t, s.sock)
	if w := states["c"][7]; w != "10" {
		t.Errorf("c weight = %s, want 10", w)
	}
	if adm := states["b"][6]; adm != "1" { // SRV_ADMF_FMAINT
		t.Errorf("b admin state = %s, want 1 (maint)", adm)
	}
	if port := states["a"][18]; port != strconv.Itoa(c.port) {
		t.Errorf("a port = %s, want %d", port, c.port)
	}
	for range 20 {
		if got, err := dial(front); err != nil || got != "a" && got != "c" {
			t.Fatalf("client got %q, %v; want a or c (b is disabled, a moved to c)", got, err)
		}
	}
}

// holdBackend accepts connections, writes its id and keeps them open until
// the peer closes; conns counts the open ones.
func holdBackend(t *testing.T, id string) (backend, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var open atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			open.Add(1)
			wg.Go(func() {
				defer open.Add(-1)
				_, _ = io.WriteString(c, id+"\n")
				_, _ = io.Copy(io.Discard, c)
				_ = c.Close()
			})
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return backend{id: id, port: l.Addr().(*net.TCPAddr).Port}, &open
}

func TestRuntimeRemoveDrains(t *testing.T) {
	s := newRuntimeSite(t, nil)
	a := startBackend(t, "a")
	h, open := holdBackend(t, "h")
	front := freePort(t)
	res := mustApply(t, s, s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""}, rtServer{"h", h.port, ""}), ActionStart)
	pid := res.PID

	// One client connection held on h.
	var held net.Conn
	for i := 0; held == nil && i < 50; i++ {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(front))
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && strings.TrimSpace(line) == "h" {
			held = c
			break
		}
		_ = c.Close()
	}
	if held == nil {
		t.Fatal("no connection reached h")
	}
	defer func() { _ = held.Close() }()

	start := time.Now()
	fr := applyFast(t, s, s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""}), 300*time.Millisecond)
	took := time.Since(start)
	// The removal method is the version's: HAProxy 3.0 documents "wait
	// srv-removable" before "del server"; 2.6 has no such command.
	waited := slices.ContainsFunc(fr.sent, func(l string) bool { return strings.HasPrefix(l, "wait ") && strings.Contains(l, "srv-removable db/h") })
	if waited != haproxyVersion.Caps().WaitRemovable {
		t.Fatalf("HAProxy %s: wait srv-removable sent = %v, want %v; sent:\n%s", haproxyVersion, waited, !waited, strings.Join(fr.sent, "\n"))
	}
	// --drain-timeout: the sessions left are shut down when it ends,
	// before the removal is attempted (not by the removal's own retries).
	shut := slices.IndexFunc(fr.sent, func(l string) bool { return l == "shutdown sessions server db/h" })
	removal := slices.IndexFunc(fr.sent, func(l string) bool {
		return strings.HasPrefix(l, "del server db/h") || strings.Contains(l, "srv-removable db/h")
	})
	if shut < 0 || removal < 0 || shut > removal {
		t.Fatalf("shutdown sessions at %d, removal at %d: want the drain timeout's shutdown first; sent:\n%s", shut, removal, strings.Join(fr.sent, "\n"))
	}
	if pids := s.m.Process(t.Context()).PIDs; !slices.Equal(pids, []int{pid}) {
		t.Fatalf("pids %v, want [%d]", pids, pid)
	}
	if _, ok := serverStates(t, s.sock)["h"]; ok {
		t.Fatal("h still exists after removal")
	}
	// The held connection was ended by "shutdown sessions" after the drain timeout.
	if err := held.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := held.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("held connection still open after removal: %v", err)
	}
	eventually(t, 5*time.Second, "h to have no connection", func() bool { return open.Load() == 0 })
	for range 10 {
		if got, err := dial(front); err != nil || got != "a" {
			t.Fatalf("client got %q, %v; want a", got, err)
		}
	}
	t.Logf("removal with a held connection took %v (drain timeout 300ms)", took)
}

// A server added by hand under a name haconfd wants, at the wrong
// address, is moved where the config says: the plan starts from HAProxy's
// live state, not from the file.
func TestRuntimeRepairsHandAddedServer(t *testing.T) {
	s := newRuntimeSite(t, nil)
	a, b, x := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "x")
	front := freePort(t)
	pid := mustApply(t, s, s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""}), ActionStart).PID
	if reply, err := socketCommand(t.Context(), s.sock, fmt.Sprintf("add server db/b 127.0.0.1:%d", x.port)); err != nil || !strings.Contains(string(reply), "New server") {
		t.Fatalf("add by hand: %q, %v", reply, err)
	}
	if _, err := socketCommand(t.Context(), s.sock, "set server db/b state ready"); err != nil {
		t.Fatal(err)
	}
	res := applyFast(t, s, s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""}, rtServer{"b", b.port, ""}), time.Second)
	if len(res.plan.Ops) != 1 || res.plan.Ops[0].Kind != OpUpdate {
		t.Fatalf("plan = %+v, want one update (move)", res.plan)
	}
	seenWithin(t, front, "b", 5*time.Second)
	for range 20 {
		if got, err := dial(front); err != nil || got == "x" {
			t.Fatalf("client got %q, %v", got, err)
		}
	}
	if pids := s.m.Process(t.Context()).PIDs; !slices.Equal(pids, []int{pid}) {
		t.Fatalf("pids %v, want [%d]: no reload", pids, pid)
	}
}

// A command HAProxy refuses comes back as a *RuntimeError naming it.
func TestRuntimeRefusal(t *testing.T) {
	s := newRuntimeSite(t, nil)
	a := startBackend(t, "a")
	front := freePort(t)
	mustApply(t, s, s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""}), ActionStart)
	rt, err := NewRuntime(s.sock, nil, haproxyVersion.Caps())
	if err != nil {
		t.Fatal(err)
	}
	live, _ := rt.ServersState()
	running, _, _ := s.m.Live()
	plan, err := PlanServers(running, s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""}, rtServer{"t", a.port, "track db/nosuch"}), live, nil, haproxyVersion.Caps())
	if err != nil || len(plan.Ops) != 1 {
		t.Fatalf("plan = %+v, %v", plan, err)
	}
	err = rt.Send(plan.Ops[0])
	var re *RuntimeError
	if !errors.As(err, &re) || !errors.Is(err, ErrRuntimeRefused) || !strings.Contains(re.Command, "add server db/t") {
		t.Fatalf("Send = %v, want a *RuntimeError for the add", err)
	}
	t.Logf("refusal: %v", err)
}

func TestStateSurvivesReload(t *testing.T) {
	s := newRuntimeSite(t, nil)
	a, b, c := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")
	front := freePort(t)
	mustApply(t, s, s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""}, rtServer{"b", b.port, ""}), ActionStart)
	// Runtime-only state: a server added at runtime; b drained (by hand,
	// right before the reload: haconfd's fast lane would undo it).
	applyFast(t, s, s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""}, rtServer{"b", b.port, ""}, rtServer{"c", c.port, "weight 7"}), time.Second)
	if _, err := socketCommand(t.Context(), s.sock, "set server db/b state drain"); err != nil {
		t.Fatal(err)
	}

	// A structural change (new section) and a server changed in the same reload.
	other := freePort(t)
	next := append(s.rtConfig(front, "roundrobin", rtServer{"a", c.port, ""}, rtServer{"b", b.port, ""}, rtServer{"c", c.port, "weight 7"}),
		fmt.Sprintf("listen extra\n    bind 127.0.0.1:%d\n    server e 127.0.0.1:%d\n", other, a.port)...)
	res := mustApply(t, s, next, ActionReload)
	state := string(readFile(t, filepath.Join(s.dir, "state")))
	if !strings.Contains(state, " db ") || !strings.Contains(state, " b ") || strings.Contains(state, " a 127.0.0.1") {
		t.Errorf("state file should hold b and c but not a (changed by the reload):\n%s", state)
	}
	st := serverStates(t, s.sock)
	if adm := st["b"][6]; adm != "8" { // SRV_ADMF_FDRAIN
		t.Errorf("b admin state after reload = %s, want 8 (drain)", adm)
	}
	if w := st["c"][7]; w != "7" {
		t.Errorf("c weight after reload = %s, want 7", w)
	}
	if port := st["a"][18]; port != strconv.Itoa(c.port) {
		t.Errorf("a port after reload = %s, want the new config's %d", port, c.port)
	}
	if got, err := dial(other); err != nil || got != "a" {
		t.Errorf("extra section: %q, %v", got, err)
	}
	t.Logf("reload with state file: %v", res.Duration)
}

func TestRuntimeStaticRRSlots(t *testing.T) {
	s := newRuntimeSite(t, nil)
	a, b, c := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "c")
	front := freePort(t)
	slots := func(ports ...int) []byte {
		var sv []rtServer
		for i := range 3 {
			if i < len(ports) {
				sv = append(sv, rtServer{fmt.Sprintf("slot%d", i+1), ports[i], "check"})
			} else {
				sv = append(sv, rtServer{fmt.Sprintf("slot%d", i+1), 1, "check disabled"})
			}
		}
		return s.rtConfig(front, "static-rr", sv...)
	}
	pid := mustApply(t, s, slots(a.port), ActionStart).PID
	for _, step := range []struct {
		name  string
		ports []int
		ids   []string
	}{
		{"fill two", []int{a.port, b.port, c.port}, []string{"a", "b", "c"}},
		{"free one", []int{a.port, b.port}, []string{"a", "b"}},
		{"refill", []int{a.port, b.port, c.port}, []string{"a", "b", "c"}},
		{"down to one", []int{c.port}, []string{"c"}},
	} {
		t.Run(step.name, func(t *testing.T) {
			applyFast(t, s, slots(step.ports...), time.Second)
			if pids := s.m.Process(t.Context()).PIDs; !slices.Equal(pids, []int{pid}) {
				t.Fatalf("pids %v, want [%d]", pids, pid)
			}
			eventually(t, 5*time.Second, fmt.Sprintf("clients to reach exactly %v", step.ids), func() bool {
				seen := make(map[string]bool)
				for range 30 {
					got, err := dial(front)
					if err != nil {
						return false
					}
					seen[got] = true
				}
				var ids []string
				for id := range seen {
					ids = append(ids, id)
				}
				sort.Strings(ids)
				return slices.Equal(ids, step.ids)
			})
		})
	}
}

// TestRuntimeChurnUnderLoad: 32 clients connect in a loop through HAProxy
// while servers are added, removed, moved and disabled every 300 ms for
// ~5 s; no connection may fail and no HAProxy process may start.
func TestRuntimeChurnUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	s := newRuntimeSite(t, func(o *Options) { o.Logger = nil })
	var pool []backend
	for i := range 6 {
		pool = append(pool, startBackend(t, fmt.Sprintf("b%d", i)))
	}
	front := freePort(t)
	cfg := func(gen int) []byte {
		// Always two stable servers; the rest come and go, move and get disabled.
		sv := []rtServer{{"s0", pool[0].port, "check"}, {"s1", pool[1].port, ""}}
		if gen%2 == 1 {
			sv = append(sv, rtServer{"n2", pool[2].port, "check"})
		}
		if gen%3 != 0 {
			sv = append(sv, rtServer{"n3", pool[3+gen%3].port, "check"}) // moves between b4 and b5
		}
		if gen%4 < 2 {
			sv = append(sv, rtServer{"n4", pool[3].port, ""})
		} else {
			sv = append(sv, rtServer{"n4", pool[3].port, "disabled"})
		}
		sv = append(sv, rtServer{"w", pool[2].port, fmt.Sprintf("weight %d", 1+gen%5)})
		return s.rtConfig(front, "roundrobin", sv...)
	}
	pid := mustApply(t, s, cfg(0), ActionStart).PID

	const clients = 32
	var okCount, failCount atomic.Int64
	var firstErr atomic.Value
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := dial(front); err != nil {
					failCount.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				okCount.Add(1)
			}
		})
	}
	var applyErr error
	var runtimeApplies, cmds int
	var durs []time.Duration
	deadline := time.Now().Add(5 * time.Second)
	for gen := 1; time.Now().Before(deadline); gen++ {
		res := applyFast(t, s, cfg(gen), time.Second)
		runtimeApplies++
		cmds += res.commands
		durs = append(durs, res.took)
		time.Sleep(300 * time.Millisecond) // the churn period, not a wait for an effect
	}
	cancel()
	wg.Wait()
	if applyErr != nil {
		t.Fatal(applyErr)
	}
	slices.Sort(durs)
	t.Logf("%d runtime applies (%d commands; runtime part p50 %v, max %v), %d clients: %d ok, %d failed connections, pids %v",
		runtimeApplies, cmds, durs[len(durs)/2], durs[len(durs)-1], clients, okCount.Load(), failCount.Load(), s.m.Process(t.Context()).PIDs)
	if failCount.Load() != 0 {
		t.Errorf("%d connections failed, first: %v", failCount.Load(), firstErr.Load())
	}
	if pids := s.m.Process(t.Context()).PIDs; !slices.Equal(pids, []int{pid}) {
		t.Errorf("PIDs = %v, want only the first %d", pids, pid)
	}
}

func TestParseReplies(t *testing.T) {
	tests := []struct {
		reply string
		bad   string
	}{
		{"\n[6]: New server registered.\n\n", ""},
		{"\n[4]: no need to change the addr, port changed from '1' to '2'\n", ""},
		{"\n\n\n", ""},
		{"\n[3]: Already exists a server with the same name in backend.\n\n", "Already exists a server with the same name in backend."},
		{"\n\n[3]: No such server.\n", "No such server."},
	}
	for _, tt := range tests {
		msg, bad := replyError(tt.reply)
		if bad != (tt.bad != "") || msg != tt.bad {
			t.Errorf("replyError(%q) = %q, %v; want %q", tt.reply, msg, bad, tt.bad)
		}
	}
}
