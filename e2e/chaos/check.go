package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/testbed"
)

// result is what one run found.
type result struct {
	mu              sync.Mutex
	violations      []string
	failedStorms    []int
	windows         []*window
	checks          []string        // every check with its result, in order
	causes          map[string]int  // failed connections by cause
	converge        []time.Duration // haconfd status converged, after each storm
	serversConverge []time.Duration // show servers state right everywhere
	worstDrain      time.Duration   // the latest new connection to a node out of rotation (allowed ones)
	lateEtcd        int             // late connections to nodes that left during an etcd member fault
	worstEtcd       time.Duration
	took            time.Duration
	storm           int // the storm being checked (-1: none)
}

func (r *result) ok() bool { return len(r.violations) == 0 }

// check records one check and its outcome; a failed one is a violation.
func (r *result) check(name string, ok bool, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	word := "ok  "
	if !ok {
		word = "FAIL"
		r.violations = append(r.violations, name+": "+detail)
		if r.storm >= 0 && !slices.Contains(r.failedStorms, r.storm) {
			r.failedStorms = append(r.failedStorms, r.storm)
		}
	}
	line := fmt.Sprintf("%s %s: %s", word, name, detail)
	r.checks = append(r.checks, line)
	logf("check %s", line)
}

func (r *result) count(cause string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.causes == nil {
		r.causes = map[string]int{}
	}
	r.causes[cause] += n
}

// monitors run all the time: the config files, haconfd's /status, the
// processes.
type monitors struct {
	e       *env
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples [][]statusSample // per load balancer
	configs []int            // versions of each config file seen
	maxProc map[string]int
	over    map[string]int // consecutive samples over the bound
}

type statusSample struct {
	at        time.Time
	ok        bool
	connected bool
	rev       int64
}

func newMonitors(e *env) *monitors {
	return &monitors{e: e, samples: make([][]statusSample, len(e.lbs)), configs: make([]int, len(e.lbs)),
		maxProc: map[string]int{}, over: map[string]int{}}
}

func (m *monitors) start(ctx context.Context) {
	for i, l := range m.e.lbs {
		m.wg.Go(func() { m.configLoop(ctx, i, l) })
		m.wg.Go(func() { m.statusLoop(ctx, i, l) })
	}
	m.wg.Go(func() { m.procLoop(ctx) })
}

func (m *monitors) wait() { m.wg.Wait() }

// configLoop validates every version of l's live file it sees (every
// 50 ms): complete (the template's last line), `haproxy -c`-valid, and
// never a hostile value.
func (m *monitors) configLoop(ctx context.Context, i int, l *lb) {
	var last [32]byte
	tmp := filepath.Join(l.dir, "checked.cfg")
	for testbed.Sleep(ctx, 50*time.Millisecond) == nil {
		b, err := os.ReadFile(l.cfg)
		if err != nil {
			m.e.res.check(l.name+" config readable", false, err.Error())
			continue
		}
		sum := sha256.Sum256(b)
		if sum == last {
			continue
		}
		last = sum
		m.mu.Lock()
		m.configs[i]++
		m.mu.Unlock()
		if !bytes.HasSuffix(b, []byte(endTrailer)) {
			m.e.res.check(l.name+" config complete", false, fmt.Sprintf("%d bytes without the template's last line", len(b)))
			continue
		}
		if bytes.Contains(b, []byte("injected")) || bytes.Contains(b, []byte("evil")) {
			m.e.res.check(l.name+" config free of hostile values", false, "a hostile node reached the config")
		}
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			continue
		}
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(c, m.e.haproxy, "-c", "-q", "-f", tmp).CombinedOutput()
		cancel()
		if err != nil && ctx.Err() == nil {
			m.e.res.check(l.name+" config valid", false, fmt.Sprintf("haproxy -c: %v: %s", err, firstLine(string(out))))
		}
	}
}

// statusLoop reads haconfd's /status every 100 ms.
func (m *monitors) statusLoop(ctx context.Context, i int, l *lb) {
	hc := &http.Client{Timeout: 300 * time.Millisecond}
	for testbed.Sleep(ctx, 100*time.Millisecond) == nil {
		s := statusSample{at: time.Now()}
		if resp, err := hc.Get("http://" + l.listen + "/status"); err == nil {
			var st struct {
				Revision      int64 `json:"revision"`
				EtcdConnected bool  `json:"etcd_connected"`
			}
			if json.NewDecoder(resp.Body).Decode(&st) == nil {
				s.ok, s.connected, s.rev = true, st.EtcdConnected, st.Revision
			}
			resp.Body.Close()
		}
		m.mu.Lock()
		m.samples[i] = append(m.samples[i], s)
		m.mu.Unlock()
	}
}

// caughtUp is when l's haconfd first answered at or after t having seen
// revision rev.
func (m *monitors) caughtUp(i int, t time.Time, rev int64) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.samples[i] {
		if !s.at.Before(t) && s.ok && s.rev >= rev {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// procLoop counts the processes every 2 s: more HAProxy processes than
// reloads explain, or two haconfd for one load balancer, is a leak.
func (m *monitors) procLoop(ctx context.Context) {
	for testbed.Sleep(ctx, 2*time.Second) == nil {
		counts := m.e.processCounts()
		m.mu.Lock()
		for k, n := range counts {
			m.maxProc[k] = max(m.maxProc[k], n)
			bound := 4 // a process per reload still finishing its connections
			switch {
			case strings.HasSuffix(k, "haconfd"):
				bound = 1
			case k == "register":
				bound = nBackends
			}
			if n > bound {
				m.over[k]++
			} else {
				m.over[k] = 0
			}
			if m.over[k] == 3 {
				m.mu.Unlock()
				m.e.res.check("no process leak", false, fmt.Sprintf("%d %s processes for 6s", n, k))
				m.mu.Lock()
			}
		}
		m.mu.Unlock()
	}
}

// process is one process of this run, from /proc.
type process struct {
	pid, ppid int
	argv      []string
}

func (e *env) processes() []process {
	ents, _ := os.ReadDir("/proc")
	var out []process
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(e.dir)) {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		ppid := 0
		if _, rest, ok := bytes.Cut(st, []byte(") ")); ok {
			if f := strings.Fields(string(rest)); len(f) > 1 {
				ppid, _ = strconv.Atoi(f[1])
			}
		}
		// a zombie has an empty cmdline: not counted.
		out = append(out, process{pid: pid, ppid: ppid, argv: strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")})
	}
	return out
}

func (p process) is(name string) bool { return len(p.argv) > 0 && filepath.Base(p.argv[0]) == name }

func (p process) mentions(s string) bool {
	return slices.ContainsFunc(p.argv, func(a string) bool { return strings.Contains(a, s) })
}

// haproxyPIDs are l's HAProxy processes (masters and workers).
func (e *env) haproxyPIDs(l *lb) []int {
	var out []int
	for _, p := range e.processes() {
		if e.isHAProxyOf(p, l) {
			out = append(out, p.pid)
		}
	}
	return out
}

// workerPIDs are the processes that serve l's clients: lb2's worker (a
// child of the master), the others' daemon.
func (e *env) workerPIDs(l *lb) []int {
	procs := e.processes()
	mine := map[int]bool{}
	for _, p := range procs {
		if e.isHAProxyOf(p, l) {
			mine[p.pid] = true
		}
	}
	var out []int
	for _, p := range procs {
		if mine[p.pid] && (!l.supervise || mine[p.ppid]) {
			out = append(out, p.pid)
		}
	}
	return out
}

func (e *env) processCounts() map[string]int {
	out := map[string]int{}
	for _, p := range e.processes() {
		for _, l := range e.lbs {
			switch {
			case e.isHAProxyOf(p, l):
				out[l.name+" haproxy"]++
			case p.is("haconfd") && p.mentions(l.yaml):
				out[l.name+" haconfd"]++
			}
		}
		if p.is("haconfd") && len(p.argv) > 1 && p.argv[1] == "register" {
			out["register"]++
		}
	}
	return out
}

// liveServers is the set of addresses l's HAProxy sends new connections
// to in listen galera (weight above 0, not in maintenance or drain).
func (e *env) liveServers(l *lb) ([]string, error) {
	reply, err := socketCmd(l.sock, "show servers state galera")
	if err != nil {
		return nil, err
	}
	st, err := haproxy.ParseServersState(reply)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range st.Sorted() {
		if s.Weight > 0 && !s.Maint() && !s.Drain() {
			out = append(out, net.JoinHostPort(s.Addr, strconv.Itoa(s.Port)))
		}
	}
	sort.Strings(out)
	return out, nil
}

func socketCmd(path, cmd string) (string, error) {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		return "", err
	}
	var b bytes.Buffer
	_, err = b.ReadFrom(c)
	return b.String(), err
}

func sameSet(a, b []string) bool { return slices.Equal(a, b) }

// fleetConverged runs `haconfd status`: exit 0 when every instance is
// converged.
func (e *env) fleetConverged() (bool, string) {
	out, err := exec.Command(e.haconfd, "status", "--etcd-endpoints", strings.Join(e.endpoints, ","), "--etcd-dial-timeout", "1s").CombinedOutput()
	return err == nil, string(out)
}

// checkBaseline: before any fault, no connection failed.
func (e *env) checkBaseline() {
	e.res.mu.Lock()
	e.res.storm = -1
	e.res.mu.Unlock()
	n, failed := e.load.total()
	e.res.check("baseline (3s, no fault)", failed == 0 && n > 0, fmt.Sprintf("%d connections, %d failed", n, failed))
	e.evaluated = make([]int, len(e.lbs))
	e.dumped = map[string]bool{}
	e.backAt = map[string]time.Time{}
	for i := range e.lbs {
		_, e.evaluated[i] = e.load.since(i, 0)
	}
}

// afterStorm measures the convergence once the storm's faults are healed
// and checks the connections made during the storm.
func (e *env) afterStorm(ctx context.Context, storm int) {
	e.res.mu.Lock()
	e.res.storm = storm
	var healed time.Time
	for _, w := range e.res.windows {
		if w.storm == storm && w.healed.After(healed) {
			healed = w.healed
		}
	}
	e.res.mu.Unlock()
	// Servers first: every instance's HAProxy sends new connections to
	// exactly the nodes in rotation (runtime API: no reload waits). Then
	// the fleet says converged: a structural change's reloads go one
	// instance at a time (--max-concurrent-reloads 1), so that bound
	// grows by reloadSlot per instance after the first.
	var detail string
	var serversAt time.Time
	err := testbed.WaitFor(ctx, 30*time.Second, func() bool {
		for _, l := range e.lbs {
			live, err := e.liveServers(l)
			if err != nil {
				detail = fmt.Sprintf("%s: show servers state: %v", l.name, err)
				return false
			}
			if want := e.model.inRotation(); !sameSet(live, want) {
				detail = fmt.Sprintf("%s serves %d servers, %d nodes in rotation (%s)", l.name, len(live), len(want), e.model)
				serversAt = time.Time{}
				return false
			}
		}
		if serversAt.IsZero() {
			serversAt = time.Now()
		}
		ok, out := e.fleetConverged()
		detail = "haconfd status: " + strings.Join(strings.Fields(out), " ")
		return ok
	})
	_, last := e.model.revision()
	from := healed
	if last.After(from) {
		from = last
	}
	took := time.Since(from)
	if err != nil {
		e.res.check(fmt.Sprintf("storm %d converged", storm+1), false, fmt.Sprintf("not converged 30s after the last heal: %s", detail))
	} else {
		servers := serversAt.Sub(from)
		if servers < 0 {
			servers = 0
		}
		wave := e.f.converge + time.Duration(len(e.lbs)-1)*reloadSlot
		e.res.converge = append(e.res.converge, took)
		e.res.serversConverge = append(e.res.serversConverge, servers)
		e.res.check(fmt.Sprintf("storm %d: every instance serves the nodes in rotation within %s", storm+1, e.f.converge), servers <= e.f.converge,
			fmt.Sprintf("the %d nodes in rotation, %s after the last change", len(e.model.inRotation()), servers.Round(time.Millisecond)))
		e.res.check(fmt.Sprintf("storm %d: haconfd status converged within %s", storm+1, wave), took <= wave,
			fmt.Sprintf("%s after the last change", took.Round(time.Millisecond)))
	}
	_ = testbed.Sleep(ctx, time.Until(from.Add(e.f.quiet)))
	e.checkConns(storm)
}

// isHAProxyOf: p is one of l's HAProxy processes (not a haproxy -c of the
// checker).
func (e *env) isHAProxyOf(p process, l *lb) bool {
	return p.is(filepath.Base(e.haproxy)) && p.mentions(l.dir+"/") && !slices.Contains(p.argv, "-c")
}

// silent lists the stretches when lb i's haconfd did not answer /status
// (not running: killed, or exited and not started again yet) or said it
// was not connected to etcd, each until it answered connected again.
func (m *monitors) silent(i int) []exclusion {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []exclusion
	var from time.Time
	for _, s := range m.samples[i] {
		up := s.ok && s.connected
		switch {
		case !up && from.IsZero():
			from = s.at
		case up && !from.IsZero():
			out = append(out, exclusion{from: from, to: s.at, why: "haconfd not answering or not connected to etcd"})
			from = time.Time{}
		}
	}
	if !from.IsZero() {
		out = append(out, exclusion{from: from, why: "haconfd not answering or not connected to etcd"})
	}
	return out
}
