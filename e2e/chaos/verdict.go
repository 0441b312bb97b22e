package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/haconfd/haconfd/internal/testbed"
)

// exclusion is a stretch during which a load balancer could not know of
// etcd's changes: cut off, or its haconfd dead, until it had caught up.
type exclusion struct {
	from, to time.Time // to zero: not caught up (yet)
	why      string
}

func (e *env) exclusions(i int) []exclusion {
	e.res.mu.Lock()
	ws := slices.Clone(e.res.windows)
	e.res.mu.Unlock()
	var out []exclusion
	for _, w := range ws {
		if w.target != i || (w.kind != haconfdKill && w.kind != lbCut) || w.began.IsZero() {
			continue
		}
		x := exclusion{from: w.began, why: w.kind}
		if !w.healed.IsZero() {
			x.to, _ = e.mon.caughtUp(i, w.healed, w.healRev)
		}
		out = append(out, x)
	}
	return append(out, e.mon.silent(i)...)
}

// checkConns checks the connections made since the last check: none
// reached a node out of rotation later than lateBound after the change
// (on a load balancer that had caught up with etcd), and every failure is
// explained by a fault on its path.
func (e *env) checkConns(storm int) {
	name := fmt.Sprintf("storm %d", storm+1)
	if storm < 0 {
		name = "final"
	}
	clear(e.backAt)
	var late, excused, failed, unexplained int
	var lateEx, failEx []string
	for i, l := range e.lbs {
		cs, next := e.load.since(i, e.evaluated[i])
		e.evaluated[i] = next
		ex := e.exclusions(i)
		for _, c := range cs {
			if c.backend < 0 {
				failed++
				cause, ok := e.explain(i, c)
				if !ok {
					unexplained++
					e.dumpAround(i, c.start)
					if len(failEx) < 5 {
						failEx = append(failEx, fmt.Sprintf("%s %s at %s (%s)", l.name, c.err, c.start.Format("15:04:05.000"), e.activeAt(c.start)))
					}
				}
				e.res.count(cause, 1)
				continue
			}
			id := e.backends[c.backend].id
			sp, out := e.model.outAt(id, c.start)
			if !out || (!sp.to.IsZero() && !c.end.Before(sp.to)) || e.returnedBy(c.backend, sp.from, c.start) {
				continue
			}
			ref, skip := sp.from, ""
			for _, x := range ex {
				if !c.start.Before(x.from) && (x.to.IsZero() || c.start.Before(x.to)) {
					skip = x.why
				}
				if !x.to.IsZero() && x.to.After(ref) && !x.to.After(c.start) && !x.from.After(c.start) && x.to.After(sp.from) {
					ref = x.to
				}
			}
			d := c.start.Sub(ref)
			if skip == "" && d > lateBound && d <= etcdGrace && e.etcdFaultAt(sp.from) {
				e.res.mu.Lock()
				e.res.lateEtcd++
				e.res.worstEtcd = max(e.res.worstEtcd, d)
				e.res.mu.Unlock()
				continue
			}
			switch {
			case skip != "":
				excused++
			case d > lateBound:
				late++
				if len(lateEx) < 5 {
					lateEx = append(lateEx, fmt.Sprintf("%s -> %s %s after it left (%s)", l.name, id, d.Round(time.Millisecond), e.activeAt(c.start)))
				}
			default:
				e.res.mu.Lock()
				e.res.worstDrain = max(e.res.worstDrain, d)
				e.res.mu.Unlock()
			}
		}
	}
	e.res.check(name+": no new connection to a node out of rotation past "+lateBound.String(), late == 0,
		fmt.Sprintf("%d late (%d more on a load balancer cut off or without haconfd, not counted)%s", late, excused, examples(lateEx)))
	e.res.check(name+": every failed connection explained by a fault on its path", unexplained == 0,
		fmt.Sprintf("%d failed, %d unexplained%s", failed, unexplained, examples(failEx)))
}

// etcdFaultAt says whether an etcd member was paused or killed at t: an
// instance whose watch was on it learns of changes only once it noticed
// (a stalled watch stream: ~1 s; a read that went to it: its timeout).
func (e *env) etcdFaultAt(t time.Time) bool {
	e.res.mu.Lock()
	defer e.res.mu.Unlock()
	for _, w := range e.res.windows {
		if (w.kind == etcdPause || w.kind == etcdKill) && !w.began.IsZero() && !t.Before(w.began) &&
			(w.healed.IsZero() || !t.After(w.healed)) {
			return true
		}
	}
	return false
}

func examples(ex []string) string {
	if len(ex) == 0 {
		return ""
	}
	return ": " + strings.Join(ex, "; ")
}

// explain names the fault on lb i's path that explains failed connection
// c: its HAProxy killed (or its supervising haconfd), until the first
// connection through it succeeded again.
func (e *env) explain(i int, c conn) (string, bool) {
	e.res.mu.Lock()
	ws := slices.Clone(e.res.windows)
	e.res.mu.Unlock()
	for _, w := range ws {
		if w.target != i || w.began.IsZero() || (w.kind != haproxyKill && w.kind != haconfdKill) {
			continue
		}
		if c.end.Before(w.began) {
			continue
		}
		back := e.firstOK(i, later(w.began, w.dead))
		if back.IsZero() || !c.start.After(back) {
			return fmt.Sprintf("%s %s", w.kind, e.lbs[i].name), true
		}
	}
	return "unexplained " + c.err, false
}

// firstOK is when lb i was back after t: the first connection dialed
// after t that succeeded and after which none failed for restartSettle
// (a HAProxy starting refuses a few connections among the first it
// serves). Zero: not yet.
func (e *env) firstOK(i int, t time.Time) time.Time {
	key := fmt.Sprintf("%d@%d", i, t.UnixNano())
	if back, ok := e.backAt[key]; ok {
		return back
	}
	back := e.findOK(i, t)
	e.backAt[key] = back // "not yet" too: checkConns forgets them all
	return back
}

func (e *env) findOK(i int, t time.Time) time.Time {
	e.load.mu.Lock()
	var oks, fails []time.Time
	for _, c := range e.load.conns[i] {
		switch {
		case !c.start.After(t):
		case c.backend >= 0:
			oks = append(oks, c.start)
		default:
			fails = append(fails, c.start)
		}
	}
	e.load.mu.Unlock()
	slices.SortFunc(oks, time.Time.Compare)
	slices.SortFunc(fails, time.Time.Compare)
	for _, s := range oks {
		k := sort.Search(len(fails), func(k int) bool { return !fails[k].Before(s) })
		if k == len(fails) || fails[k].After(s.Add(restartSettle)) {
			return s
		}
	}
	return time.Time{}
}

// activeAt lists the faults active at t.
func (e *env) activeAt(t time.Time) string {
	e.res.mu.Lock()
	defer e.res.mu.Unlock()
	var out []string
	for _, w := range e.res.windows {
		if !w.began.IsZero() && !t.Before(w.began) && (w.healed.IsZero() || !t.After(w.healed.Add(2*time.Second))) {
			out = append(out, fmt.Sprintf("#%d %s %s%s", w.id, w.kind, w.targetName(), memberNote(w)))
		}
	}
	if len(out) == 0 {
		return "no fault active"
	}
	return "faults: " + strings.Join(out, ", ")
}

// finalChecks: after the last storm, exactly the processes the setup
// started are left, and a cut-off instance served while cut off.
func (e *env) finalChecks(ctx context.Context) {
	e.res.mu.Lock()
	e.res.storm = -1
	e.res.mu.Unlock()
	e.checkConns(-1)
	want := map[string]int{"register": nBackends}
	for _, l := range e.lbs {
		want[l.name+" haconfd"] = 1
		want[l.name+" haproxy"] = 1
		if l.supervise {
			want[l.name+" haproxy"] = 2 // master and worker
		}
	}
	var got map[string]int
	err := testbed.WaitFor(ctx, 15*time.Second, func() bool {
		got = e.processCounts()
		for k, n := range want {
			if got[k] != n {
				return false
			}
		}
		return len(got) == len(want)
	})
	e.res.check("no process leak at the end", err == nil, fmt.Sprintf("processes %v (want %v); most at once during the run %v", got, want, e.mon.maxProc))
	e.res.mu.Lock()
	ws := slices.Clone(e.res.windows)
	e.res.mu.Unlock()
	for _, w := range ws {
		if w.kind != lbCut || w.healed.IsZero() {
			continue
		}
		e.load.mu.Lock()
		var ok, bad int
		for _, c := range e.load.conns[w.target] {
			if c.start.After(w.began) && c.end.Before(w.healed) {
				if c.backend >= 0 {
					ok++
				} else {
					bad++
				}
			}
		}
		e.load.mu.Unlock()
		e.res.check(fmt.Sprintf("fault #%d: lb3 served while cut off from etcd", w.id), ok > 0 && bad == 0,
			fmt.Sprintf("%d connections served, %d failed during the %s cut", ok, bad, w.healed.Sub(w.began).Round(100*time.Millisecond)))
	}
}

func (e *env) report() {
	r := e.res
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Printf("\n==== chaos report: seed %d\n", e.f.seed)
	fmt.Println("faults:")
	sort.Slice(r.windows, func(i, j int) bool { return r.windows[i].began.Before(r.windows[j].began) })
	for _, w := range r.windows {
		status := ""
		if w.err != "" {
			status = " ERROR " + w.err
		}
		fmt.Printf("  %s  +%-6s %-16s %-8s for %s%s\n", w.began.Format("15:04:05.000"), w.began.Sub(e.began).Round(100*time.Millisecond),
			w.kind, w.targetName()+memberNote(w), w.healed.Sub(w.began).Round(100*time.Millisecond), status)
	}
	fmt.Println("checks:")
	for _, c := range r.checks {
		fmt.Println("  " + c)
	}
	n, failed := e.load.total()
	fmt.Printf("connections: %d, failed %d\n", n, failed)
	var causes []string
	for c := range r.causes {
		causes = append(causes, c)
	}
	sort.Strings(causes)
	for _, c := range causes {
		fmt.Printf("  failed: %-40s %d\n", c, r.causes[c])
	}
	var worst time.Duration
	var cs []string
	for _, d := range r.converge {
		worst = max(worst, d)
		cs = append(cs, d.Round(time.Millisecond).String())
	}
	fmt.Printf("haconfd status converged after each storm: %s (worst %s)\n", strings.Join(cs, " "), worst.Round(time.Millisecond))
	worst, cs = 0, nil
	for _, d := range r.serversConverge {
		worst = max(worst, d)
		cs = append(cs, d.Round(time.Millisecond).String())
	}
	fmt.Printf("servers right everywhere after each storm: %s (worst %s)\n", strings.Join(cs, " "), worst.Round(time.Millisecond))
	fmt.Printf("latest allowed new connection to a node out of rotation: %s after it left\n", r.worstDrain.Round(time.Millisecond))
	fmt.Printf("new connections to a node that left while an etcd member was paused or killed, later than %s (not counted up to %s): %d, latest %s\n",
		lateBound, etcdGrace, r.lateEtcd, r.worstEtcd.Round(time.Millisecond))
	e.mon.mu.Lock()
	fmt.Printf("config versions checked: %v; most processes at once: %v\n", e.mon.configs, e.mon.maxProc)
	e.mon.mu.Unlock()
	fmt.Printf("violations: %d\n", len(r.violations))
	for _, v := range r.violations {
		fmt.Println("  " + v)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// dumpAround writes lb i's connections within a second of t to
// conns-<lb>.log in the work directory (once per second of t), for the
// analysis of an unexplained failure.
func (e *env) dumpAround(i int, t time.Time) {
	key := fmt.Sprintf("%d@%d", i, t.Unix())
	if e.dumped[key] {
		return
	}
	e.dumped[key] = true
	e.load.mu.Lock()
	var b strings.Builder
	fmt.Fprintf(&b, "== around %s\n", t.Format("15:04:05.000"))
	for _, c := range e.load.conns[i] {
		if c.start.After(t.Add(-time.Second)) && c.start.Before(t.Add(time.Second)) {
			what := c.err
			if c.backend >= 0 {
				what = e.backends[c.backend].id
			}
			fmt.Fprintf(&b, "%s %s %s\n", c.start.Format("15:04:05.000000"), c.end.Format("15:04:05.000000"), what)
		}
	}
	e.load.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(e.dir, "conns-"+e.lbs[i].name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err == nil {
		_, _ = f.WriteString(b.String())
		f.Close()
	}
}

// returnedBy says whether the harness itself put backend b back in
// rotation (undrain, its state key removed) between from and t: the
// model learns of it from its own watch, which may lag behind the load
// balancers' (its member restarting, say).
func (e *env) returnedBy(b int, from, t time.Time) bool {
	e.res.mu.Lock()
	defer e.res.mu.Unlock()
	for _, w := range e.res.windows {
		if w.target == b && (w.kind == drainNode || w.kind == stateFlap) && !w.healed.IsZero() &&
			!w.healing.Before(from) && !w.healing.After(t) {
			return true
		}
	}
	return false
}
