package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/internal/testbed"
)

// The fault kinds. Each one takes one resource for its storm (see
// resource): two faults never act on the same thing at once.
const (
	etcdKill      = "etcd-kill"       // SIGKILL a member (target -1: the leader), start it again
	etcdPause     = "etcd-pause"      // SIGSTOP a member longer than the lease TTL, then SIGCONT
	lbCut         = "lb-cut"          // lb3's etcd link down, then up
	haconfdKill   = "haconfd-kill"    // SIGKILL haconfd, start it again
	haproxyKill   = "haproxy-kill"    // SIGKILL HAProxy (lb2: its worker)
	leaseExpire   = "lease-expire"    // SIGKILL a registrar: its lease expires; start it again
	nodeRemove    = "node-remove"     // SIGTERM a registrar (deletes its node); start it again
	drainNode     = "drain"           // haconfd drain, then undrain
	stateFlap     = "state-flap"      // the node's wsrep_local_state_comment to Donor/Desynced, then removed
	structural    = "structural"      // /chaos/extra: a listen section more, then less
	brokenTmpl    = "broken-template" // a template edit that does not parse, then the fix
	hostileValue  = "hostile-value"   // a node whose ip has a newline, a space, or 1 MiB
	hostileLine   = 0
	hostileSpace  = 1
	hostileHuge   = 2
	stormMargin   = 500 * time.Millisecond
	maxNodeFaults = 4 // nodes out at once at most: the others keep every section served
)

var kinds = []string{etcdKill, etcdPause, lbCut, haconfdKill, haproxyKill, leaseExpire, nodeRemove,
	drainNode, stateFlap, structural, brokenTmpl, hostileValue}

// fault is one fault of the plan: at, dur are relative to its storm.
type fault struct {
	id     int
	storm  int
	kind   string
	target int
	at     time.Duration
	dur    time.Duration
}

func (x fault) String() string {
	return fmt.Sprintf("#%d storm %d +%s %s %s for %s", x.id, x.storm+1, x.at.Round(100*time.Millisecond),
		x.kind, x.targetName(), x.dur.Round(100*time.Millisecond))
}

func (x fault) targetName() string {
	switch x.kind {
	case etcdKill, etcdPause:
		if x.target < 0 {
			return "leader"
		}
		return fmt.Sprintf("m%d", x.target+1)
	case lbCut, haconfdKill, haproxyKill, brokenTmpl:
		return fmt.Sprintf("lb%d", x.target+1)
	case leaseExpire, nodeRemove, drainNode, stateFlap:
		return fmt.Sprintf("db%d", x.target+1)
	case hostileValue:
		return []string{"newline", "space", "huge"}[x.target]
	}
	return ""
}

// resource is what the fault acts on.
func (x fault) resource() string {
	switch x.kind {
	case etcdKill, etcdPause:
		return "etcd"
	case haconfdKill, haproxyKill:
		return fmt.Sprintf("lb%d", x.target)
	case leaseExpire, nodeRemove, drainNode, stateFlap:
		return fmt.Sprintf("db%d", x.target)
	case brokenTmpl:
		return fmt.Sprintf("tmpl%d", x.target)
	}
	return x.kind
}

type plan struct {
	storms []int // the storm numbers of the original schedule that are kept
	faults []fault
}

// makePlan draws the schedule from the seed: storms of 3-5 faults.
func makePlan(f flags) plan {
	rng := rand.New(rand.NewPCG(f.seed, f.seed^0x9e3779b97f4a7c15))
	n := max(1, int(f.duration/(f.storm+f.quiet)))
	var p plan
	id := 1
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	for s := range n {
		p.storms = append(p.storms, s)
		used := map[string]bool{}
		nodes := 0
		want := 3 + rng.IntN(3)
		for tries := 0; want > 0 && tries < 100; tries++ {
			x := fault{storm: s, kind: kinds[rng.IntN(len(kinds))]}
			switch x.kind {
			case etcdKill:
				x.target = rng.IntN(4) - 1
				x.dur = between(2*time.Second, 6*time.Second)
			case etcdPause:
				x.target = rng.IntN(4) - 1
				x.dur = between(f.ttl+time.Second, f.ttl+4*time.Second)
			case lbCut:
				x.target = 2
				x.dur = between(3*time.Second, 10*time.Second)
			case haconfdKill:
				x.target = rng.IntN(3)
				x.dur = between(500*time.Millisecond, 3*time.Second)
			case haproxyKill:
				x.target = rng.IntN(3)
			case leaseExpire:
				x.target = rng.IntN(nBackends)
				x.dur = between(f.ttl+time.Second, f.ttl+5*time.Second)
			case nodeRemove:
				x.target = rng.IntN(nBackends)
				x.dur = between(2*time.Second, 6*time.Second)
			case drainNode:
				x.target = rng.IntN(nBackends)
				x.dur = between(time.Second, 5*time.Second)
			case stateFlap:
				x.target = rng.IntN(nBackends)
				x.dur = between(time.Second, 4*time.Second)
			case structural:
				x.dur = between(3*time.Second, 8*time.Second)
			case brokenTmpl:
				x.target = rng.IntN(3)
				x.dur = between(2*time.Second, 6*time.Second)
			case hostileValue:
				x.target = rng.IntN(3)
				x.dur = between(2*time.Second, 6*time.Second)
			}
			isNode := strings.HasPrefix(x.resource(), "db")
			if used[x.resource()] || (isNode && nodes == maxNodeFaults) || x.dur > f.storm-2*stormMargin {
				continue
			}
			used[x.resource()] = true
			if isNode {
				nodes++
			}
			x.at = between(0, f.storm-x.dur-stormMargin)
			x.id = id
			id++
			p.faults = append(p.faults, x)
			want--
		}
	}
	return p
}

// keep is the plan with only the faults ids, and only the storms that
// still have one.
func (p plan) keep(ids []int) plan {
	var out plan
	for _, x := range p.faults {
		if slices.Contains(ids, x.id) {
			out.faults = append(out.faults, x)
			if !slices.Contains(out.storms, x.storm) {
				out.storms = append(out.storms, x.storm)
			}
		}
	}
	return out
}

func (p plan) stormFaults(storm int) []fault {
	var out []fault
	for _, x := range p.faults {
		if x.storm == storm {
			out = append(out, x)
		}
	}
	return out
}

func faultIDs(fs []fault) []int {
	var out []int
	for _, x := range fs {
		out = append(out, x.id)
	}
	return out
}

func idList(fs []fault) string { return joinInts(faultIDs(fs)) }

// window is a fault as it happened: when it began and ended (its heal).
type window struct {
	fault
	member  int // etcd faults: the member it hit
	began   time.Time
	healed  time.Time
	healRev int64     // the model's revision at the heal
	dead    time.Time // kills: when the killed processes were gone
	healing time.Time // when the heal began
	err     string
}

// storms runs every storm of the plan, each followed by its quiet time,
// convergence measure and checks.
func (e *env) storms(ctx context.Context) error {
	for _, s := range e.sched.storms {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		faults := e.sched.stormFaults(s)
		e.res.mu.Lock()
		e.res.storm = s // what the monitors find now belongs to this storm
		e.res.mu.Unlock()
		logf("== storm %d: %d faults", s+1, len(faults))
		t0 := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, x := range faults {
			wg.Go(func() {
				w := e.inject(ctx, t0, x)
				mu.Lock()
				e.res.windows = append(e.res.windows, w)
				mu.Unlock()
			})
		}
		wg.Wait()
		e.afterStorm(ctx, s)
	}
	return nil
}

// inject runs one fault: waits for its time, breaks, waits its duration,
// heals.
func (e *env) inject(ctx context.Context, t0 time.Time, x fault) *window {
	w := &window{fault: x, member: -1}
	if testbed.Sleep(ctx, time.Until(t0.Add(x.at))) != nil {
		return w
	}
	w.began = time.Now()
	if err := e.breakIt(ctx, w); err != nil {
		w.err = err.Error()
		logf("fault %s: break failed: %v", x, err)
	} else {
		logf("fault %s: broken%s", x, memberNote(w))
	}
	_ = testbed.Sleep(ctx, x.dur)
	w.healing = time.Now()
	if err := e.heal(ctx, w); err != nil {
		w.err = strings.TrimPrefix(w.err+"; ", "; ") + "heal: " + err.Error()
		logf("fault %s: heal failed: %v", x, err)
	}
	w.healed = time.Now()
	w.healRev, _ = e.model.revision()
	if x.dur > 0 {
		logf("fault #%d %s %s: healed", x.id, x.kind, x.targetName())
	}
	return w
}

func memberNote(w *window) string {
	if w.member >= 0 {
		return fmt.Sprintf(" (member m%d)", w.member+1)
	}
	return ""
}

func (e *env) breakIt(ctx context.Context, w *window) error {
	x := w.fault
	switch x.kind {
	case etcdKill, etcdPause:
		w.member = x.target
		if w.member < 0 {
			if w.member = e.leader(ctx); w.member < 0 {
				w.member = 0
			}
		}
		if x.kind == etcdKill {
			return e.killMember(w.member)
		}
		return e.pauseMember(w.member, true)
	case lbCut:
		return e.top.cut(true)
	case haconfdKill:
		l := e.lbs[x.target]
		l.mu.Lock()
		l.held = true
		p := l.haconfd
		l.mu.Unlock()
		if err := p.signal(syscall.SIGKILL); err != nil {
			return err
		}
		<-p.done
		w.dead = time.Now()
		return nil
	case haproxyKill:
		pids := e.workerPIDs(e.lbs[x.target])
		if len(pids) == 0 {
			return fmt.Errorf("no HAProxy process of %s found", e.lbs[x.target].name)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// Connections dialed until they are gone still succeed.
		_ = testbed.WaitFor(ctx, 5*time.Second, func() bool { return !anyAlive(pids) })
		w.dead = time.Now()
		return nil
	case leaseExpire, nodeRemove:
		r := e.regs[x.target]
		sig := syscall.SIGKILL
		if x.kind == nodeRemove {
			sig = syscall.SIGTERM
		}
		r.proc.stop(sig, 10*time.Second)
		return nil
	case drainNode:
		return e.haconfdCmd("drain", e.backends[x.target].id, "--reason", fmt.Sprintf("chaos fault %d", x.id))
	case stateFlap:
		return e.put(ctx, prefix+"/"+e.backends[x.target].id+"/wsrep_local_state_comment", "Donor/Desynced")
	case structural:
		return e.put(ctx, chaosKeys+"/extra", "1")
	case brokenTmpl:
		l := e.lbs[x.target]
		return os.WriteFile(l.tmpl, []byte(strings.Replace(chaosTemplate, "{{- range .Nodes }}", "{{- range .Nodes }{{ if }}", 1)), 0o644)
	case hostileValue:
		return e.putHostile(ctx, x)
	}
	return fmt.Errorf("unknown fault %s", x.kind)
}

func (e *env) heal(ctx context.Context, w *window) error {
	x := w.fault
	switch x.kind {
	case etcdKill:
		return e.restartMember(w.member)
	case etcdPause:
		return e.pauseMember(w.member, false)
	case lbCut:
		return e.top.cut(false)
	case haconfdKill:
		return e.startHaconfd(e.lbs[x.target])
	case haproxyKill:
		return nil
	case leaseExpire, nodeRemove:
		return e.startRegistrar(e.regs[x.target])
	case drainNode:
		return e.haconfdCmd("undrain", e.backends[x.target].id)
	case stateFlap:
		return e.del(ctx, prefix+"/"+e.backends[x.target].id+"/wsrep_local_state_comment")
	case structural:
		return e.del(ctx, chaosKeys+"/extra")
	case brokenTmpl:
		return os.WriteFile(e.lbs[x.target].tmpl, []byte(chaosTemplate), 0o644)
	case hostileValue:
		return e.del(ctx, prefix+"/"+hostileID(x)+"/")
	}
	return nil
}

func hostileID(x fault) string { return fmt.Sprintf("evil%d", x.id) }

// putHostile registers a node whose ip is not one: haconfd must skip it
// (and never write it into a config).
func (e *env) putHostile(ctx context.Context, x fault) error {
	ip := []string{
		e.top.dataIP() + "\n    server injected 127.0.0.1:1",
		e.top.dataIP() + " backup",
		strings.Repeat("9", 1<<20),
	}[x.target]
	base := prefix + "/" + hostileID(x)
	if err := e.put(ctx, base+"/port", fmt.Sprint(e.backends[0].port)); err != nil {
		return err
	}
	return e.put(ctx, base+"/ip", ip)
}

// put and del retry for a while: etcd may be electing a leader.
func (e *env) put(ctx context.Context, k, v string) error {
	return e.retry(ctx, func(c context.Context) error { _, err := e.cli.Put(c, k, v); return err })
}

func (e *env) del(ctx context.Context, k string) error {
	return e.retry(ctx, func(c context.Context) error {
		_, err := e.cli.Delete(c, k, clientv3.WithPrefix())
		return err
	})
}

func (e *env) retry(ctx context.Context, op func(context.Context) error) error {
	var err error
	for range 30 {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = op(c)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		_ = testbed.Sleep(ctx, 200*time.Millisecond)
	}
	return err
}

// haconfdCmd runs a haconfd client command against the cluster (drain,
// undrain), retried while etcd elects.
func (e *env) haconfdCmd(args ...string) error {
	args = append(args, "--etcd-endpoints", strings.Join(e.endpoints, ","))
	var out []byte
	var err error
	for range 10 {
		out, err = exec.Command(e.haconfd, args...).CombinedOutput()
		if err == nil {
			return nil
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("haconfd %s: %w: %s", args[0], err, firstLine(string(out)))
}

// anyAlive says whether one of pids still runs (a zombie does not).
func anyAlive(pids []int) bool {
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err == nil && !strings.Contains(string(b), ") Z ") {
			return true
		}
	}
	return false
}
