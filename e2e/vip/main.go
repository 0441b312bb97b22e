// Command vip is haconfd's virtual-IP end-to-end test (`make e2e-vip`, via
// run.sh): three load balancer hosts, each a network namespace with
// keepalived (examples/keepalived/keepalived.conf, its addresses and paths
// replaced), haconfd and HAProxy; a bridge joining them in a namespace of
// its own; etcd and two backends in this process, reached over a veth
// from the root namespace; a client in its own namespace connecting to the
// virtual IP in a loop (4 loops, each a new connection every 20 ms).
//
// Each scenario breaks the load balancer holding the address, waits for
// the address to move (or, where it must not, watches it stay), brings
// the load balancer back and checks that the address does not move back.
// It prints, per scenario: holder before → after, how long until the
// address was on the new holder, the gap between the last good connection
// through the old holder and the first through the new one, the longest
// stretch without a good connection, the failed connections, and the
// longest time two namespaces held the address at once (from the
// kernel's address events). It fails when the address does not move (or
// moves where it must not), when two namespaces hold it longer than a
// VRRP preemption explains (50 ms), when a load balancer does not come
// back, or when the address moves back.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/selfcheck"
	"github.com/haconfd/haconfd/internal/testbed"
	"github.com/haconfd/haconfd/internal/testhaproxy"
)

const (
	vipHost   = 100 // the virtual IP is <net>.100
	frontPort = "3306"
	prefix    = "/components/galera"
	testKeys  = "/vipe2e" // template switches the scenarios flip
	// maxOverlap: a VRRP preemption adds the address on the new master
	// before the old one, on the new master's first advertisement,
	// removes it (measured: ~0.1 ms); anything longer is two holders.
	maxOverlap = 50 * time.Millisecond
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "client" {
		os.Exit(runClient(os.Args[2:]))
	}
	os.Exit(run())
}

type flags struct {
	haconfd string
	haproxy string
	example string
	suffix  string
	only    string
	keep    bool
}

func run() int {
	var f flags
	flag.StringVar(&f.haconfd, "haconfd", "bin/haconfd", "haconfd binary")
	flag.StringVar(&f.haproxy, "haproxy", "", "HAProxy binary (default: $"+testhaproxy.EnvVar+", else haproxy on PATH or in /usr/sbin)")
	flag.StringVar(&f.example, "example", "examples/keepalived/keepalived.conf", "the keepalived.conf every load balancer runs (its addresses and paths replaced)")
	flag.StringVar(&f.suffix, "suffix", "", "suffix of the namespaces and links (run.sh picks it to clean up after a crash); default random")
	flag.StringVar(&f.only, "only", "", "run only the scenarios whose name contains one of these comma-separated words")
	flag.BoolVar(&f.keep, "keep", false, "keep the work directory (logs, configs) even on success")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e-vip: run as root (network namespaces, keepalived, iptables)")
		return 2
	}
	if f.suffix == "" {
		f.suffix = fmt.Sprintf("%05x", time.Now().UnixNano()&0xfffff)
	}
	if !regexp.MustCompile(`^[a-z0-9]{1,6}$`).MatchString(f.suffix) {
		fmt.Fprintf(os.Stderr, "e2e-vip: -suffix %q: 1-6 lower-case letters or digits\n", f.suffix)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	e := &env{f: f, began: time.Now()}
	err := e.run(ctx)
	if cerr := e.cleanup(); cerr != nil {
		fmt.Fprintln(os.Stderr, cerr)
		if err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nFAIL: %v\n", err)
		if e.dir != "" {
			fmt.Fprintf(os.Stderr, "logs and configs kept in %s\n", e.dir)
		}
		return 1
	}
	if !f.keep {
		os.RemoveAll(e.dir)
	} else {
		fmt.Printf("logs and configs kept in %s\n", e.dir)
	}
	fmt.Printf("\nPASS (%s in all)\n", time.Since(e.began).Round(time.Second))
	return 0
}

// env is everything the test started.
type env struct {
	f        flags
	began    time.Time
	dir      string
	haconfd  string // the copy the load balancers and keepalived run
	haproxy  string
	top      *topo
	lbs      []*lb
	vip      string
	etcd     *etcdserver.Server
	etcdDir  string
	etcdURL  string
	etcdPort string
	cli      *clientv3.Client
	backends []*backend
	mon      *addrMonitor
	client   *clientLog
	procs    []*proc
	results  []result
	// breakAt, when a scenario's break sets it, is the moment that
	// counts (after its preparation): the figures start there.
	breakAt time.Time
	// killed are the HAProxy pids a scenario killed.
	killed []int
}

// lb is one load balancer host.
type lb struct {
	n          int
	name, ns   string
	ip, dir    string
	yaml       string // haconfd's --config
	kconf      string // keepalived.conf
	haconfd    *proc
	keepalived *proc
}

func logf(format string, a ...any) {
	fmt.Printf("%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

func (e *env) run(ctx context.Context) error {
	if err := e.prepare(); err != nil {
		return err
	}
	if err := e.startAll(ctx); err != nil {
		return err
	}
	if err := e.measureCheck(); err != nil {
		return err
	}
	if err := e.baseline(ctx); err != nil {
		return err
	}
	var failed []string
	for _, s := range e.scenarios() {
		if !e.wanted(s.name) {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r := e.runScenario(ctx, s)
		e.results = append(e.results, r)
		if r.err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", r.name, r.err))
			logf("FAILED: %v", r.err)
		}
	}
	e.printTable()
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "\n      "))
	}
	return nil
}

func (e *env) wanted(name string) bool {
	if e.f.only == "" {
		return true
	}
	for _, w := range strings.Split(e.f.only, ",") {
		if w != "" && strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// prepare makes the work directory, the network, etcd, the backends and
// every file the load balancers need.
func (e *env) prepare() error {
	for _, tool := range []string{"ip", "keepalived", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (run.sh installs iproute2, keepalived, iptables): %w", tool, err)
		}
	}
	hp, err := testhaproxy.Find()
	if e.f.haproxy != "" {
		hp, err = testhaproxy.Binary{Path: e.f.haproxy}, nil
	}
	if err != nil {
		return err
	}
	e.haproxy = hp.Path
	out, _ := exec.Command(e.haproxy, "-v").Output()
	kv, _ := exec.Command("keepalived", "--version").CombinedOutput()
	logf("HAProxy: %s; %s", firstLine(string(out)), firstLine(string(kv)))

	// A directory only root can write: keepalived's enable_script_security
	// refuses a script in a directory others could change.
	if e.dir, err = os.MkdirTemp("", "hcvip"); err != nil {
		return err
	}
	e.haconfd = filepath.Join(e.dir, "haconfd")
	if err := copyFile(e.f.haconfd, e.haconfd, 0o755); err != nil {
		return err
	}
	example, err := os.ReadFile(e.f.example)
	if err != nil {
		return err
	}

	subnet, err := testbed.FreeSubnet()
	if err != nil {
		return err
	}
	e.top = &topo{sfx: e.f.suffix, net: subnet, rootIf: "hcv" + e.f.suffix + "r", hosts: []string{"lb1", "lb2", "lb3", "client"}}
	e.top.sw = e.top.ns("sw")
	e.vip = e.top.ip(vipHost)
	addrs := map[string]int{"lb1": 11, "lb2": 12, "lb3": 13, "client": 50}
	t0 := time.Now()
	if err := e.top.up(addrs); err != nil {
		return err
	}
	logf("network %s.0/24 up in %s: bridge in %s, lb1-3 .11-.13, client .50, this process .1 (%s), virtual IP %s",
		subnet, time.Since(t0).Round(time.Millisecond), e.top.sw, e.top.rootIf, e.vip)

	if err := e.startEtcd(); err != nil {
		return err
	}
	for i := 1; i <= 2; i++ {
		b, err := startBackend(fmt.Sprintf("db%d", i), e.top.ip(1))
		if err != nil {
			return err
		}
		e.backends = append(e.backends, b)
		if _, err := e.cli.Put(context.Background(), prefix+"/"+b.id, b.addr); err != nil {
			return err
		}
	}

	tmpl := filepath.Join(e.dir, "lb.tmpl")
	if err := os.WriteFile(tmpl, []byte(lbTemplate), 0o644); err != nil {
		return err
	}
	var ips []string
	for i := 1; i <= 3; i++ {
		ips = append(ips, e.top.ip(10+i))
	}
	for i := 1; i <= 3; i++ {
		l := &lb{n: i, name: fmt.Sprintf("lb%d", i), ip: ips[i-1]}
		l.ns = e.top.ns(l.name)
		l.dir = filepath.Join(e.dir, l.name)
		for _, d := range []string{l.dir, filepath.Join(l.dir, "chroot")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		l.yaml = filepath.Join(l.dir, "haconfd.yaml")
		if err := os.WriteFile(l.yaml, []byte(e.haconfdYAML(l, tmpl)), 0o644); err != nil {
			return err
		}
		var peers []string
		for _, ip := range ips {
			if ip != l.ip {
				peers = append(peers, ip)
			}
		}
		conf, err := keepalivedConf(string(example), l, peers, e.vip, e.haconfd)
		if err != nil {
			return fmt.Errorf("%s: %w", e.f.example, err)
		}
		l.kconf = filepath.Join(l.dir, "keepalived.conf")
		if err := os.WriteFile(l.kconf, []byte(conf), 0o644); err != nil {
			return err
		}
		// keepalived's own config test, in the namespace (its eth0).
		if out, err := exec.Command("ip", "netns", "exec", l.ns, "keepalived", "--config-test", "-f", l.kconf).CombinedOutput(); err != nil {
			return fmt.Errorf("keepalived --config-test on %s's copy of %s: %w\n%s", l.name, e.f.example, err, out)
		}
		e.lbs = append(e.lbs, l)
	}
	return nil
}

// lbTemplate: /vipe2e/fragile adds "chroot <.Vars.fragile>" (each load
// balancer's own directory): removing one load balancer's directory makes
// HAProxy die after fork there only, which haconfd rolls back.
const lbTemplate = `global
    stats socket {{ .Vars.runtime_socket }} mode 660 level admin expose-fd listeners
    server-state-file {{ .Vars.state_file }}
{{- if exists "/vipe2e/fragile" }}
    chroot {{ .Vars.fragile }}{{ end }}
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    load-server-state-from-file global
listen galera
    bind {{ .Vars.bind }}
    balance roundrobin
{{- range .Nodes }}
    server {{ .Name }} {{ .Addr }}
{{- end }}
`

// haconfdYAML is the load balancer's /etc/haconfd/haconfd.yaml: haconfd
// run and the keepalived checks read it. bind :3306 (the default): HAProxy
// listens on every address of the host, so it serves the virtual IP the
// moment keepalived adds it, without net.ipv4.ip_nonlocal_bind.
func (e *env) haconfdYAML(l *lb, tmpl string) string {
	return fmt.Sprintf(`etcd-endpoints: [%s]
prefix: [%s, %s]
template: %s
bind: ":%s"
check-port: none
output: %s/haproxy.cfg
haproxy-bin: %s
pidfile: %s/haproxy.pid
runtime-socket: %s/admin.sock
listen: 127.0.0.1:9480
instance: %s
status-ttl: 5s
var:
  fragile: %s/chroot
log-level: info
`, e.etcdURL, prefix, testKeys, tmpl, frontPort, l.dir, e.haproxy, l.dir, l.dir, l.name, l.dir)
}

// keepalivedConf turns the example (written for lb1 10.0.0.21, peers .22
// and .23, virtual IP 10.0.0.100) into l's: every replaced text must be
// there, so that the test runs the example as it is.
func keepalivedConf(example string, l *lb, peers []string, vip, haconfd string) (string, error) {
	peerBlock := regexp.MustCompile(`unicast_peer \{[^}]*\}`)
	if !peerBlock.MatchString(example) {
		return "", errors.New("no unicast_peer { ... } block")
	}
	out := peerBlock.ReplaceAllString(example, "unicast_peer {\n        "+strings.Join(peers, "\n        ")+"\n    }")
	for _, r := range []struct{ old, new string }{
		{"router_id lb1", "router_id " + l.name},
		{"unicast_src_ip 10.0.0.21", "unicast_src_ip " + l.ip},
		{"10.0.0.100/24 dev eth0", vip + "/24 dev eth0"},
		{"/usr/local/bin/haconfd", haconfd},
		{"/etc/haconfd/haconfd.yaml", l.yaml},
		// The test runs everything as root (no haconfd user here).
		{"script_user haconfd", "script_user root"},
	} {
		if !strings.Contains(out, r.old) {
			return "", fmt.Errorf("%q not found", r.old)
		}
		out = strings.ReplaceAll(out, r.old, r.new)
	}
	return out, nil
}

func (e *env) startEtcd() error {
	ln, err := net.Listen("tcp", e.top.ip(1)+":0")
	if err != nil {
		return err
	}
	_, e.etcdPort, _ = net.SplitHostPort(ln.Addr().String())
	ln.Close()
	e.etcdURL = "http://" + net.JoinHostPort(e.top.ip(1), e.etcdPort)
	e.etcdDir = filepath.Join(e.dir, "etcd")
	if err := e.restartEtcd(); err != nil {
		return err
	}
	e.cli, err = clientv3.New(clientv3.Config{Endpoints: []string{e.etcdURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	return err
}

// restartEtcd starts etcd on its directory and URL (again).
func (e *env) restartEtcd() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := etcdserver.Start(ctx, etcdserver.Options{Dir: e.etcdDir, ClientURL: e.etcdURL})
	if err != nil {
		return fmt.Errorf("etcd on %s: %w", e.etcdURL, err)
	}
	e.etcd = s
	return nil
}

// startAll starts haconfd everywhere, waits until each is healthy, then
// keepalived, the address monitors and the client.
func (e *env) startAll(ctx context.Context) error {
	t0 := time.Now()
	for _, l := range e.lbs {
		if err := e.startHaconfd(l); err != nil {
			return err
		}
	}
	for _, l := range e.lbs {
		if err := e.waitHealthy(ctx, l, 60*time.Second); err != nil {
			return err
		}
	}
	logf("haconfd + HAProxy healthy on lb1-3 in %s", time.Since(t0).Round(time.Millisecond))
	e.mon = newAddrMonitor(e.vip)
	for _, l := range e.lbs {
		if err := e.mon.watch(l.ns, l.name); err != nil {
			return err
		}
	}
	time.Sleep(300 * time.Millisecond) // let ip monitor subscribe
	t0 = time.Now()
	for _, l := range e.lbs {
		if err := e.startKeepalived(l); err != nil {
			return err
		}
	}
	var h *lb
	if err := testbed.WaitFor(ctx, 30*time.Second, func() bool { h = e.soleHolder(); return h != nil }); err != nil {
		return fmt.Errorf("no load balancer took the virtual IP within 30s (holders %v)", e.mon.holders())
	}
	if err := e.checkHolderByIP(h); err != nil {
		return err
	}
	logf("keepalived: %s holds %s after %s", h.name, e.vip, time.Since(t0).Round(time.Millisecond))
	cmd := exec.Command("ip", "netns", "exec", e.top.ns("client"), selfExe(), "client", "-addr", net.JoinHostPort(e.vip, frontPort))
	cmd.Stderr = os.Stderr
	var err error
	if e.client, err = startClient(cmd); err != nil {
		return err
	}
	if err := testbed.WaitFor(ctx, 10*time.Second, func() bool { a, ok := e.client.lastOK(); return ok && a.lb == h.ip }); err != nil {
		return fmt.Errorf("the client never connected through %s", e.vip)
	}
	return nil
}

func selfExe() string {
	p, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return p
}

func (e *env) startHaconfd(l *lb) error {
	p, err := e.start(l.name+" haconfd", filepath.Join(l.dir, "haconfd.log"), "ip", "netns", "exec", l.ns, e.haconfd, "run", "--config", l.yaml)
	l.haconfd = p
	return err
}

func (e *env) startKeepalived(l *lb) error {
	p, err := e.start(l.name+" keepalived", filepath.Join(l.dir, "keepalived.log"), "ip", "netns", "exec", l.ns,
		"keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
		"-f", l.kconf, "-p", filepath.Join(l.dir, "keepalived.pid"), "-r", filepath.Join(l.dir, "vrrp.pid"))
	l.keepalived = p
	return err
}

// self runs the keepalived check, status --self, in l's namespace.
func (e *env) self(l *lb, extra ...string) (int, selfcheck.Report, string) {
	args := append([]string{"netns", "exec", l.ns, e.haconfd, "status", "--self", "--config", l.yaml, "--format", "json"}, extra...)
	cmd := exec.Command("ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.Output()
	var r selfcheck.Report
	_ = json.Unmarshal(out, &r)
	return cmd.ProcessState.ExitCode(), r, string(out) + stderr.String()
}

func failedChecks(r selfcheck.Report) string {
	var names []string
	for _, c := range r.Failed() {
		names = append(names, c.Name)
	}
	return strings.Join(names, " ")
}

func checkDetail(r selfcheck.Report, name string) string {
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Detail
		}
	}
	return ""
}

func (e *env) waitHealthy(ctx context.Context, l *lb, d time.Duration) error {
	var last string
	err := testbed.WaitFor(ctx, d, func() bool {
		code, _, out := e.self(l)
		last = out
		return code == 0
	})
	if err != nil {
		return fmt.Errorf("%s not healthy within %s:\n%s", l.name, d, last)
	}
	return nil
}

// soleHolder is the one load balancer holding the address (nil when none
// or several do).
func (e *env) soleHolder() *lb {
	hs := e.mon.holders()
	if len(hs) != 1 {
		return nil
	}
	return e.lb(hs[0])
}

func (e *env) lb(name string) *lb {
	for _, l := range e.lbs {
		if l.name == name {
			return l
		}
	}
	return nil
}

func (e *env) byIP(ip string) string {
	for _, l := range e.lbs {
		if l.ip == ip {
			return l.name
		}
	}
	return ip
}

// checkHolderByIP compares the monitor's view with `ip addr` in every
// namespace.
func (e *env) checkHolderByIP(h *lb) error {
	for _, l := range e.lbs {
		out, err := exec.Command("ip", "-n", l.ns, "-4", "-o", "addr", "show", "dev", "eth0").Output()
		if err != nil {
			return err
		}
		has := strings.Contains(string(out), " "+e.vip+"/")
		if has != (l == h) {
			return fmt.Errorf("ip addr in %s says holder=%v, the address monitor says %s holds it", l.name, has, h.name)
		}
	}
	return nil
}

// measureCheck times keepalived's checks, for the summary.
func (e *env) measureCheck() error {
	l := e.lbs[0]
	for _, c := range []struct {
		what  string
		extra []string
	}{{"status --self", nil}, {"status --self --haproxy-only", []string{"--haproxy-only"}}} {
		var ds []time.Duration
		for range 20 {
			t0 := time.Now()
			code, _, out := e.self(l, c.extra...)
			if code != 0 {
				return fmt.Errorf("%s on %s: exit %d\n%s", c.what, l.name, code, out)
			}
			ds = append(ds, time.Since(t0))
		}
		slices.Sort(ds)
		logf("%s (keepalived's check, via ip netns exec): p50 %s, max %s over 20 runs", c.what,
			ds[len(ds)/2].Round(100*time.Microsecond), ds[len(ds)-1].Round(100*time.Microsecond))
	}
	return nil
}

// baseline: nothing breaks for 5 s; no connection may fail.
func (e *env) baseline(ctx context.Context) error {
	t0 := time.Now()
	if err := testbed.Sleep(ctx, 5*time.Second); err != nil {
		return err
	}
	all := e.client.between(t0, time.Now())
	failed := 0
	for _, a := range all {
		if !a.ok {
			failed++
		}
	}
	logf("baseline 5s: %d connections, %d failed", len(all), failed)
	if failed > 0 || len(all) == 0 {
		return fmt.Errorf("baseline: %d of %d connections failed", failed, len(all))
	}
	return nil
}

// proc is a process the test started (through ip netns exec, which execs
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

func (p *proc) signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return fmt.Errorf("%s already exited", p.name)
	default:
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

func (e *env) cleanup() error {
	if e.client != nil {
		e.client.stop()
		_ = e.client.dump(filepath.Join(e.dir, "client.log"))
	}
	for _, l := range e.lbs {
		if l.keepalived != nil {
			l.keepalived.stop(syscall.SIGTERM, 5*time.Second)
		}
	}
	for _, p := range e.procs {
		p.stop(syscall.SIGTERM, 10*time.Second)
		p.log.Close()
	}
	if e.mon != nil {
		e.mon.stop()
		_ = e.mon.dump(filepath.Join(e.dir, "addresses.log"))
	}
	var errs []error
	if e.top != nil {
		errs = append(errs, e.top.down())
	}
	if e.cli != nil {
		e.cli.Close()
	}
	if e.etcd != nil {
		e.etcd.Close()
	}
	for _, b := range e.backends {
		b.close()
	}
	return errors.Join(errs...)
}

// backend answers every connection with its id and the address the
// connection came from (the load balancer that served the client).
type backend struct {
	id, addr string
	ln       net.Listener
}

func startBackend(id, ip string) (*backend, error) {
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", id, err)
	}
	b := &backend{id: id, addr: ln.Addr().String(), ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			_, _ = io.WriteString(c, b.id+" "+host+"\n")
			_ = c.Close()
		}
	}()
	return b, nil
}

func (b *backend) close() { _ = b.ln.Close() }

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, mode)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func pidsIn(file string) []int {
	b, _ := os.ReadFile(file)
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			out = append(out, pid)
		}
	}
	return out
}
