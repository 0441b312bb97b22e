package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/haconfd/haconfd/internal/testbed"
)

// scenario breaks the holder h and brings it back.
type scenario struct {
	name string
	// moves: the address must leave h; otherwise it must stay on h
	// for watch, with no failed connection.
	moves bool
	watch time.Duration
	// stale: h keeps the address too (a keepalived killed without
	// cleaning up) until fix; reported, not a failure.
	stale bool
	brk   func(ctx context.Context, h *lb) error
	// check runs once the address moved (or watch passed).
	check func(ctx context.Context, h *lb) error
	fix   func(ctx context.Context, h *lb) error
	// healthy: how long h may take to pass status --self after fix.
	healthy time.Duration
	// recovers, if set, says h is back on its own before the address
	// moved (then it stays: reported, not a failure).
	recovers func(h *lb) bool
}

type result struct {
	name       string
	moves      bool
	stale      bool
	from, to   string
	failover   time.Duration // break → address on the new holder
	gap        time.Duration // last good connection via the old holder → first via the new one
	outage     time.Duration // longest stretch without a good connection
	failed     int
	total      int
	overlap    time.Duration // longest time two namespaces held the address
	overlapWho string
	back       time.Duration // fix → the old holder passes status --self again
	after      string        // holder once everything is back
	recovered  time.Duration // the holder came back on its own this long after the break: no move
	err        error
}

// killHAProxy kills every HAProxy process of h.
func (e *env) killHAProxy(h *lb) error {
	pids := pidsIn(filepath.Join(h.dir, "haproxy.pid"))
	if len(pids) == 0 {
		return errors.New("no HAProxy pid")
	}
	e.killed = pids
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return err
		}
	}
	return nil
}

// haproxyBack: h's haconfd started a new HAProxy (its pidfile names a
// live process that was not killed).
func (e *env) haproxyBack(h *lb) bool {
	for _, pid := range pidsIn(filepath.Join(h.dir, "haproxy.pid")) {
		if !slices.Contains(e.killed, pid) && syscall.Kill(pid, 0) == nil {
			return true
		}
	}
	return false
}

func (e *env) others(h *lb) []*lb {
	var out []*lb
	for _, l := range e.lbs {
		if l != h {
			out = append(out, l)
		}
	}
	return out
}

// iptables in l's namespace: drop its traffic to and from etcd's port
// (the backends, the client and VRRP still pass).
func (e *env) etcdLink(l *lb, op string) error {
	for _, rule := range [][]string{
		{"OUTPUT", "-p", "tcp", "-d", e.top.ip(1), "--dport", e.etcdPort, "-j", "DROP"},
		{"INPUT", "-p", "tcp", "-s", e.top.ip(1), "--sport", e.etcdPort, "-j", "DROP"},
	} {
		args := append([]string{"netns", "exec", l.ns, "iptables", "-w", op}, rule...)
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables %s in %s: %w: %s", op, l.name, err, out)
		}
	}
	return nil
}

func (e *env) scenarios() []scenario {
	noop := func(context.Context, *lb) error { return nil }
	return []scenario{
		{
			name:  "kill -9 HAProxy on the holder",
			moves: true,
			brk:   func(_ context.Context, h *lb) error { return e.killHAProxy(h) },
			// haconfd starts HAProxy again at its next --resync (30s):
			// nothing to do. When that comes before keepalived's fall 2,
			// the address stays.
			recovers: e.haproxyBack,
			fix:      noop,
			healthy:  60 * time.Second,
		},
		{
			name:  "kill -9 haconfd on the holder",
			moves: true,
			brk: func(_ context.Context, h *lb) error {
				if err := h.haconfd.signal(syscall.SIGKILL); err != nil {
					return err
				}
				<-h.haconfd.done
				return nil
			},
			fix:     func(_ context.Context, h *lb) error { return e.startHaconfd(h) },
			healthy: 60 * time.Second,
		},
		{
			name:  "restart haconfd on the holder (SIGTERM, start)",
			moves: false,
			watch: 8 * time.Second,
			brk: func(_ context.Context, h *lb) error {
				h.haconfd.stop(syscall.SIGTERM, 10*time.Second)
				return e.startHaconfd(h)
			},
			fix:     noop,
			healthy: 30 * time.Second,
		},
		{
			name:    "cut the holder's link to etcd",
			moves:   true,
			brk:     func(_ context.Context, h *lb) error { return e.etcdLink(h, "-I") },
			fix:     func(_ context.Context, h *lb) error { return e.etcdLink(h, "-D") },
			healthy: 60 * time.Second,
		},
		{
			name:    "config fails on the holder (rolled back, wave stopped)",
			moves:   true,
			brk:     e.breakConfig,
			check:   e.waveStopped,
			fix:     e.fixConfig,
			healthy: 60 * time.Second,
		},
		{
			name:  "stop keepalived on the holder (SIGTERM)",
			moves: true,
			brk: func(_ context.Context, h *lb) error {
				h.keepalived.stop(syscall.SIGTERM, 10*time.Second)
				return nil
			},
			fix:     func(_ context.Context, h *lb) error { return e.startKeepalived(h) },
			healthy: 30 * time.Second,
		},
		{
			name:  "etcd down for every load balancer",
			moves: false,
			// haconfd notices within its 5s probe, then --etcd-grace 10s,
			// then fall 2: every chk_haconfd fails after ~17s.
			watch: 25 * time.Second,
			brk: func(context.Context, *lb) error {
				e.etcd.Close()
				return nil
			},
			check:   e.allSoftFailed,
			fix:     e.etcdBack,
			healthy: 60 * time.Second,
		},
		{
			// The two checks: with every chk_haconfd failing (all at
			// 200), a HAProxy that dies still gives the address up
			// (chk_haproxy: FAULT).
			name:  "etcd down for every load balancer, then kill -9 HAProxy on the holder",
			moves: true,
			brk: func(ctx context.Context, h *lb) error {
				e.etcd.Close()
				if err := e.allSoftFailedWithin(ctx, 60*time.Second); err != nil {
					return err
				}
				e.breakAt = time.Now()
				return e.killHAProxy(h)
			},
			recovers: e.haproxyBack,
			fix:      e.etcdBack,
			healthy:  60 * time.Second,
		},
		{
			name:  "kill -9 keepalived on the holder (no clean-up)",
			moves: true,
			stale: true,
			brk: func(_ context.Context, h *lb) error {
				// Both processes at once, as a crash: the VRRP child does
				// not get to remove the address.
				pids := pidsIn(filepath.Join(h.dir, "vrrp.pid"))
				pids = append(pids, h.keepalived.cmd.Process.Pid)
				for _, pid := range pids {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				<-h.keepalived.done
				return nil
			},
			fix:     func(_ context.Context, h *lb) error { return e.startKeepalived(h) },
			healthy: 30 * time.Second,
		},
	}
}

// breakConfig: a change that fails on the holder only (chroot into its
// directory, removed) while the two others are frozen, so that the holder
// meets it first; then they go on and find the wave stopped.
func (e *env) breakConfig(ctx context.Context, h *lb) error {
	if err := os.Remove(filepath.Join(h.dir, "chroot")); err != nil {
		return err
	}
	others := e.others(h)
	for _, o := range others {
		if err := o.haconfd.signal(syscall.SIGSTOP); err != nil {
			return err
		}
	}
	defer func() {
		for _, o := range others {
			_ = o.haconfd.signal(syscall.SIGCONT)
		}
	}()
	if _, err := e.cli.Put(ctx, testKeys+"/fragile", "1"); err != nil {
		return err
	}
	var last string
	if err := testbed.WaitFor(ctx, 30*time.Second, func() bool {
		code, r, out := e.self(h)
		last = out
		return code == 1 && strings.Contains(failedChecks(r), "apply")
	}); err != nil {
		return fmt.Errorf("%s never reported the failed reload:\n%s", h.name, last)
	}
	_, r, _ := e.self(h)
	logf("%s: %s", h.name, checkDetail(r, "apply"))
	return nil
}

// waveStopped: the two others hold the last good config on purpose and
// pass status --self; the holder fails it.
func (e *env) waveStopped(ctx context.Context, h *lb) error {
	for _, o := range e.others(h) {
		var last string
		if err := testbed.WaitFor(ctx, 30*time.Second, func() bool {
			code, r, out := e.self(o)
			last = out
			return code == 0 && strings.Contains(checkDetail(r, "config"), "wave stopped")
		}); err != nil {
			return fmt.Errorf("%s: not healthy and held by the stopped wave:\n%s", o.name, last)
		}
		_, r, _ := e.self(o)
		logf("%s: %s", o.name, checkDetail(r, "config"))
	}
	return nil
}

func (e *env) fixConfig(ctx context.Context, h *lb) error {
	if err := os.Mkdir(filepath.Join(h.dir, "chroot"), 0o755); err != nil {
		return err
	}
	_, err := e.cli.Delete(ctx, testKeys+"/fragile")
	return err
}

// allSoftFailed: with etcd down, every load balancer fails status --self
// on etcd only (HAProxy still answers): all at priority 50.
func (e *env) allSoftFailed(_ context.Context, _ *lb) error {
	for _, l := range e.lbs {
		code, r, out := e.self(l)
		if code != 1 || failedChecks(r) != "etcd" {
			return fmt.Errorf("%s with etcd down: exit %d, failing %q (want etcd only):\n%s", l.name, code, failedChecks(r), out)
		}
	}
	for _, l := range e.lbs {
		_, r, _ := e.self(l)
		logf("%s: %s", l.name, checkDetail(r, "etcd"))
	}
	return nil
}

// etcdBack starts etcd again and logs when each load balancer passes
// status --self again (they reconnect at their own pace: a backup that
// is back before the holder must not take the address, preempt_delay).
func (e *env) etcdBack(ctx context.Context, _ *lb) error {
	t0 := time.Now()
	if err := e.restartEtcd(); err != nil {
		return err
	}
	at := map[string]time.Duration{}
	if err := testbed.WaitFor(ctx, 60*time.Second, func() bool {
		for _, l := range e.lbs {
			if _, ok := at[l.name]; !ok {
				if code, _, _ := e.self(l); code == 0 {
					at[l.name] = time.Since(t0)
				}
			}
		}
		return len(at) == len(e.lbs)
	}); err != nil {
		return fmt.Errorf("not every load balancer healthy 60s after etcd came back: %v", at)
	}
	var back []string
	for _, l := range e.lbs {
		back = append(back, fmt.Sprintf("%s %s", l.name, at[l.name].Round(10*time.Millisecond)))
	}
	logf("etcd started again; status --self passes again after: %s", strings.Join(back, ", "))
	return nil
}

// allSoftFailedWithin waits until every load balancer fails status
// --self on etcd only.
func (e *env) allSoftFailedWithin(ctx context.Context, d time.Duration) error {
	if err := testbed.WaitFor(ctx, d, func() bool { return e.allSoftFailed(ctx, nil) == nil }); err != nil {
		return fmt.Errorf("not every load balancer failed on etcd alone within %s: %v", d, e.allSoftFailed(ctx, nil))
	}
	return nil
}

// runScenario breaks the current holder, follows the address, brings the
// holder back and measures.
func (e *env) runScenario(ctx context.Context, s scenario) (res result) {
	res = result{name: s.name, moves: s.moves, stale: s.stale}
	fmt.Println()
	logf("== %s", s.name)
	var h *lb
	if err := testbed.WaitFor(ctx, 30*time.Second, func() bool { h = e.soleHolder(); return h != nil }); err != nil {
		res.err = fmt.Errorf("no single holder before the scenario: %v", e.mon.holders())
		return res
	}
	// Everyone healthy before: a previous scenario's load balancer back.
	for _, l := range e.lbs {
		if err := e.waitHealthy(ctx, l, 60*time.Second); err != nil {
			res.err = err
			return res
		}
	}
	res.from = h.name
	tb := time.Now()
	e.breakAt = time.Time{}
	if err := s.brk(ctx, h); err != nil {
		res.err = fmt.Errorf("break: %w", err)
		e.fixQuietly(ctx, s, h)
		return res
	}
	if !e.breakAt.IsZero() {
		tb = e.breakAt
	}
	logf("broke %s", h.name)
	var to *lb
	if s.moves {
		err := testbed.WaitFor(ctx, 60*time.Second, func() bool {
			if s.recovers != nil && s.recovers(h) && slices.Equal(e.mon.holders(), []string{h.name}) {
				res.recovered = time.Since(tb)
				return true
			}
			hs := e.mon.holders()
			for _, n := range hs {
				if n != h.name && (s.stale || len(hs) == 1) {
					if a, ok := e.client.lastOK(); ok && a.at.After(tb) && a.lb == e.lb(n).ip {
						to = e.lb(n)
						return true
					}
				}
			}
			return false
		})
		if err != nil {
			res.err = fmt.Errorf("the address did not move within 60s (holders %v)", e.mon.holders())
			e.fixQuietly(ctx, s, h)
			return res
		}
		if to == nil {
			logf("haconfd started HAProxy on %s again %s after the kill, before keepalived acted: the address stays", h.name, ms(res.recovered))
		} else {
			res.failover = e.mon.addedAfter(to.name, tb).Sub(tb)
			logf("address on %s %s after the break", to.name, res.failover.Round(time.Millisecond))
		}
	} else {
		if err := testbed.Sleep(ctx, s.watch); err != nil {
			res.err = err
			return res
		}
		if hs := e.mon.holders(); len(hs) != 1 || hs[0] != h.name {
			res.err = fmt.Errorf("the address moved: holders %v after %s", hs, s.watch)
		}
		logf("address stayed on %s for %s", h.name, s.watch)
	}
	if s.check != nil && res.err == nil {
		if err := s.check(ctx, h); err != nil {
			res.err = err
		}
	}
	_ = testbed.Sleep(ctx, 2*time.Second)
	tf := time.Now()
	if err := s.fix(ctx, h); err != nil && res.err == nil {
		res.err = fmt.Errorf("bring back: %w", err)
	}
	if err := e.waitHealthy(ctx, h, s.healthy); err != nil && res.err == nil {
		res.err = err
	}
	res.back = time.Since(tf)
	logf("%s healthy again %s after it was brought back", h.name, res.back.Round(time.Millisecond))
	if s.stale {
		_ = testbed.WaitFor(ctx, 10*time.Second, func() bool { return len(e.mon.holders()) == 1 })
	}
	// The address must not move back: equal priorities never preempt.
	_ = testbed.Sleep(ctx, 4*time.Second)
	te := time.Now()
	res.after = strings.Join(e.mon.holders(), "+")
	res.to = h.name
	if to != nil {
		res.to = to.name
	}
	if res.err == nil && res.after != res.to {
		res.err = fmt.Errorf("the address moved again after %s came back: now on %s", h.name, res.after)
	}
	if to == nil {
		res.moves = false
	}
	e.measure(&res, h, tb, te)
	if res.err == nil && !s.moves && res.failed > 0 {
		res.err = fmt.Errorf("%d connections failed where the address should stay", res.failed)
	}
	if res.err == nil && !s.stale && res.overlap > maxOverlap {
		res.err = fmt.Errorf("%s held the address at once for %s", res.overlapWho, res.overlap)
	}
	logf("%s → %s: failover %s, gap %s, outage %s, failed %d/%d, overlap %s, back %s",
		res.from, res.to, ms(res.failover), ms(res.gap), ms(res.outage), res.failed, res.total, ms(res.overlap), ms(res.back))
	return res
}

// fixQuietly brings h back after a failed scenario, so the next can run.
func (e *env) fixQuietly(ctx context.Context, s scenario, h *lb) {
	if err := s.fix(ctx, h); err != nil {
		logf("bring back %s: %v", h.name, err)
	}
	_ = e.waitHealthy(ctx, h, s.healthy)
}

// measure fills res from the client's attempts and the address events
// in [tb, te].
func (e *env) measure(res *result, h *lb, tb, te time.Time) {
	all := e.client.between(tb.Add(-2*time.Second), te)
	var prev time.Time
	var firstNew, lastOld time.Time
	for _, a := range all {
		if !a.at.Before(tb) {
			res.total++
			if !a.ok {
				res.failed++
			}
		}
		if !a.ok {
			continue
		}
		if !prev.IsZero() && !a.at.Before(tb) {
			res.outage = max(res.outage, a.at.Sub(prev))
		}
		prev = a.at
		if res.moves && a.at.After(tb) && a.lb != h.ip && firstNew.IsZero() {
			firstNew = a.at
		}
		if a.lb == h.ip && (firstNew.IsZero() || a.at.Before(firstNew)) {
			lastOld = a.at
		}
	}
	if res.moves && !firstNew.IsZero() && !lastOld.IsZero() {
		res.gap = firstNew.Sub(lastOld)
	}
	res.overlap, res.overlapWho = e.mon.overlap(tb, te)
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000)
	}
	return d.Round(time.Millisecond).String()
}

// printTable prints the scenario table and the failover summary.
func (e *env) printTable() {
	fmt.Println()
	fmt.Println("| scenario | holder | address moved after | last good on old → first on new | longest without a good connection | failed / connections | two holders at once | back healthy after | result |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	var gaps []time.Duration
	for _, r := range e.results {
		holder := r.from + " → " + r.to
		if !r.moves {
			holder = r.from + " (stays)"
		}
		two := "no"
		if r.overlap > 0 {
			two = fmt.Sprintf("%s for %s", r.overlapWho, ms(r.overlap))
		}
		res := "ok"
		if r.err != nil {
			res = "FAILED: " + oneLine(r.err.Error())
		}
		if r.stale && r.err == nil {
			res = "ok (stale address until keepalived restarted: expected)"
		}
		if r.recovered > 0 && r.err == nil {
			res = fmt.Sprintf("ok (haconfd restarted HAProxy %s after the kill, before keepalived's fall 2: no move)", ms(r.recovered))
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %d / %d | %s | %s | %s |\n", r.name, holder, ms(r.failover), ms(r.gap), ms(r.outage),
			r.failed, r.total, two, ms(r.back), res)
		if r.moves && r.gap > 0 && !r.stale {
			gaps = append(gaps, r.gap)
		}
	}
	if len(gaps) > 0 {
		slices.Sort(gaps)
		fmt.Printf("\nfailover (last good connection via the old holder → first via the new one) over %d scenarios: p50 %s, max %s\n",
			len(gaps), ms(gaps[len(gaps)/2]), ms(gaps[len(gaps)-1]))
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
