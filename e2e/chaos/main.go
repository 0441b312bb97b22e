// Command chaos is haconfd's soak test (`make chaos`, via run.sh): a real
// setup under random faults for minutes, with haconfd's promises checked
// all the time.
//
// Setup: a 3-member etcd cluster (etcd binary processes), three load
// balancers each with `haconfd run` and its HAProxy (lb1 daemon mode, lb2
// --supervise, lb3 daemon mode in a network namespace of its own, joined by
// one veth pair for etcd and one for data, so that it can be cut off from
// etcd and go on serving), 8 backends that write their id on every
// connection, each registered by its own `haconfd register`, and a client
// load of -clients connections at a time through every frontend.
//
// The run is a series of storms (-storm long, then -quiet with no fault):
// in each, several faults chosen by the seed at once: an etcd member killed
// (the leader or not) or paused longer than the lease TTL, lb3 cut off from
// etcd, haconfd SIGKILLed, HAProxy's (worker) SIGKILLed, a registrar killed
// (its lease expires) or stopped (the node leaves) and started again, a
// node drained with `haconfd drain` or put out of Synced, a structural
// change (a listen section), a broken template edit and its fix, a hostile
// node (a newline, a space, a huge value).
//
// Invariants: every version of every live config file is complete and
// `haproxy -c`-valid; no server whose node is out of rotation gets a new
// connection later than 100 ms after the change on an instance that had
// caught up with etcd; no client connection fails outside a window that a
// fault on that path explains (counted by cause); no process leaks; after
// each storm every instance serves exactly the nodes in rotation (`show
// servers state`) and `haconfd status` says converged within -converge; a
// cut-off instance keeps its config and serves.
//
// It prints the seed, every fault with its time, every check with its
// result, failed connections by cause and the convergence time after each
// storm. A failing run replays the first failing storm alone, then without
// each of its faults in turn, and prints the smallest fault set that still
// fails and the command that replays it.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haconfd/haconfd/internal/testhaproxy"
)

const (
	prefix    = "/components/galera"
	chaosKeys = "/chaos"
	nBackends = 8
	lateBound = 100 * time.Millisecond
	// etcdGrace bounds how late a node that left while an etcd member was
	// paused or killed may still get connections on an instance whose
	// watch was on that member: the stalled stream is noticed within ~1 s,
	// a read that goes to the paused member waits its 5 s timeout.
	etcdGrace = 7 * time.Second
	// restartSettle: a HAProxy that starts refuses a few of the first
	// connections it gets (measured: for ~15 ms); back means no failure
	// for this long.
	restartSettle = 200 * time.Millisecond
	// reloadSlot: what one instance's turn of a staggered reload wave may
	// take (lock, validate, reload, verify, settle, publish).
	reloadSlot = time.Second
	endTrailer = "# chaos: end of config\n"
)

type flags struct {
	haconfd  string
	haproxy  string
	etcd     string
	seed     uint64
	duration time.Duration
	storm    time.Duration
	quiet    time.Duration
	converge time.Duration
	ttl      time.Duration
	clients  int
	suffix   string
	only     string
	shrink   bool
	keep     bool
}

func main() {
	os.Exit(run())
}

func run() int {
	var f flags
	flag.StringVar(&f.haconfd, "haconfd", "bin/haconfd", "haconfd binary")
	flag.StringVar(&f.haproxy, "haproxy", "", "HAProxy binary (default: $"+testhaproxy.EnvVar+", else haproxy on PATH or in /usr/sbin)")
	flag.StringVar(&f.etcd, "etcd", "etcd", "etcd binary (3.4: Debian's etcd-server)")
	flag.Uint64Var(&f.seed, "seed", 0, "seed of the fault schedule (0: a random one, printed)")
	flag.DurationVar(&f.duration, "duration", 10*time.Minute, "how long the storms last in all")
	flag.DurationVar(&f.storm, "storm", 25*time.Second, "length of one storm (its faults start and end within it)")
	flag.DurationVar(&f.quiet, "quiet", 12*time.Second, "pause without faults after each storm (convergence is measured there)")
	flag.DurationVar(&f.converge, "converge", 2*time.Second, "bound on the convergence after a storm")
	flag.DurationVar(&f.ttl, "ttl", 3*time.Second, "lease TTL of the registrars")
	flag.IntVar(&f.clients, "clients", 32, "concurrent client connections per frontend")
	flag.StringVar(&f.suffix, "suffix", "", "suffix of the namespace and links (run.sh picks it to clean up after a crash); default random")
	flag.StringVar(&f.only, "faults", "", "replay only these faults of the seed's schedule (comma-separated numbers)")
	flag.BoolVar(&f.shrink, "shrink", true, "on failure, look for the smallest fault set that still fails")
	flag.BoolVar(&f.keep, "keep", false, "keep the work directory (logs, configs) even on success")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "chaos: run as root (network namespaces, veth, iptables)")
		return 2
	}
	if f.seed == 0 {
		f.seed = rand.Uint64() >> 12 // short enough to type
	}
	if f.suffix == "" {
		f.suffix = fmt.Sprintf("%05x", time.Now().UnixNano()&0xfffff)
	}
	if !regexp.MustCompile(`^[a-z0-9]{1,6}$`).MatchString(f.suffix) {
		fmt.Fprintf(os.Stderr, "chaos: -suffix %q: 1-6 lower-case letters or digits\n", f.suffix)
		return 2
	}
	only, err := parseIDs(f.only)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: -faults: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	sched := makePlan(f)
	fmt.Printf("chaos: seed %d, %d storms of %s (+%s quiet), %d faults; replay: make chaos SEED=%d DURATION=%s\n",
		f.seed, len(sched.storms), f.storm, f.quiet, len(sched.faults), f.seed, f.duration)
	if only != nil {
		sched = sched.keep(only)
		fmt.Printf("chaos: replaying faults %s only (%d storms)\n", idList(sched.faults), len(sched.storms))
	}
	res := runOnce(ctx, f, sched)
	if res.ok() {
		fmt.Printf("\nPASS seed %d (%s in all)\n", f.seed, res.took.Round(time.Second))
		return 0
	}
	fmt.Printf("\nFAIL seed %d: %d violations; replay: make chaos SEED=%d DURATION=%s\n", f.seed, len(res.violations), f.seed, f.duration)
	switch {
	case !f.shrink || ctx.Err() != nil:
	case len(res.failedStorms) > 0:
		shrink(ctx, f, sched, res)
	default:
		fmt.Println("the failure is outside every storm (setup or the final checks): replay the whole schedule")
	}
	return 1
}

// runOnce builds the setup, runs sched and tears it all down.
func runOnce(ctx context.Context, f flags, sched plan) *result {
	e := &env{f: f, sched: sched, began: time.Now(), res: &result{}}
	err := e.run(ctx)
	if cerr := e.cleanup(); cerr != nil {
		fmt.Fprintln(os.Stderr, cerr)
	}
	if err != nil {
		e.res.violations = append(e.res.violations, "setup or run: "+err.Error())
		fmt.Printf("chaos: %v\n", err)
	}
	e.res.took = time.Since(e.began)
	keep := f.keep || !e.res.ok()
	if e.dir != "" {
		if keep {
			fmt.Printf("logs and configs kept in %s\n", e.dir)
		} else {
			os.RemoveAll(e.dir)
		}
	}
	return e.res
}

// shrink replays the first failing storm alone, then drops its faults one
// at a time while the replay still fails.
func shrink(ctx context.Context, f flags, sched plan, res *result) {
	f.shrink = false
	f.keep = false
	cand := sched.stormFaults(res.failedStorms[0])
	fmt.Printf("\n== shrinking: storm %d alone (faults %s)\n", res.failedStorms[0]+1, idList(cand))
	fails := func(ids []int) bool {
		r := runOnce(ctx, f, sched.keep(ids))
		fmt.Printf("== replay of faults %v: %s\n", ids, map[bool]string{true: "FAILS", false: "passes"}[!r.ok()])
		return !r.ok()
	}
	ids := faultIDs(cand)
	if !fails(ids) {
		fmt.Printf("== the storm alone passes: the failure needs earlier storms; smallest known: the whole schedule (seed %d)\n", f.seed)
		return
	}
	for i := 0; i < len(ids) && len(ids) > 1 && ctx.Err() == nil; {
		try := append(append([]int{}, ids[:i]...), ids[i+1:]...)
		if fails(try) {
			ids = try
			continue
		}
		i++
	}
	fmt.Printf("== smallest failing fault set: %v\n", ids)
	for _, x := range sched.faults {
		for _, id := range ids {
			if x.id == id {
				fmt.Printf("     %s\n", x)
			}
		}
	}
	fmt.Printf("   replay: make chaos SEED=%d DURATION=%s FAULTS=%s\n", f.seed, f.duration, joinInts(ids))
}

func parseIDs(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(ids []int) string {
	var s []string
	for _, id := range ids {
		s = append(s, strconv.Itoa(id))
	}
	return strings.Join(s, ",")
}

// env is everything one run started.
type env struct {
	f         flags
	sched     plan
	res       *result
	began     time.Time
	dir       string
	haconfd   string // the copy in dir that every process runs
	haproxy   string
	top       *topo
	members   []*member
	endpoints []string
	cli       etcdClient
	backends  []*backend
	regs      []*registrar
	lbs       []*lb
	load      *load
	model     *model
	procs     []*proc
	mon       *monitors
	evaluated []int // per load balancer: connections checked so far
	dumped    map[string]bool
	backAt    map[string]time.Time // firstOK's answers
}

func logf(format string, a ...any) {
	fmt.Printf("%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// proc is a process the run started (through ip netns exec, which execs
// it: the pid is the program's).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

func (e *env) start(name, logPath string, argv ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "==== %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	p := &proc{name: name, cmd: exec.Command(argv[0], argv[1:]...), log: f, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	e.procs = append(e.procs, p)
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig syscall.Signal) error {
	if p.exited() {
		return fmt.Errorf("%s already exited", p.name)
	}
	return p.cmd.Process.Signal(sig)
}

// stop sends sig and waits up to d for the exit (then SIGKILL).
func (p *proc) stop(sig syscall.Signal, d time.Duration) {
	if p.signal(sig) != nil {
		return
	}
	select {
	case <-p.done:
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
