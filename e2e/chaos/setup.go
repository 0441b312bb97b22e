package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haconfd/haconfd/internal/testbed"
	"github.com/haconfd/haconfd/internal/testhaproxy"
)

type etcdClient = *clientv3.Client

func quietLogger() *zap.Logger { return zap.NewNop() }

// lb is one load balancer: haconfd run and its HAProxy.
type lb struct {
	n         int
	name      string
	ns        string // network namespace ("": the root one)
	dir       string
	front     string // the frontend the clients use
	extra     string // the structural change's listen section
	listen    string // haconfd's HTTP (/status)
	yaml      string
	tmpl      string
	cfg       string
	sock      string
	pidfile   string
	supervise bool
	mu        sync.Mutex
	haconfd   *proc
	held      bool // a haconfd-kill fault keeps it down until its heal
}

// backend answers every connection with its id.
type backend struct {
	id   string
	addr string
	port int
	ln   net.Listener
	wg   sync.WaitGroup
}

// registrar is a node's `haconfd register`.
type registrar struct {
	b    *backend
	proc *proc
}

func (e *env) run(ctx context.Context) error {
	if err := e.prepare(ctx); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	e.mon = newMonitors(e)
	e.mon.start(runCtx)
	e.startLoad(runCtx)
	for _, l := range e.lbs {
		e.load.wg.Go(func() { e.superviseHaconfd(runCtx, l) })
	}
	logf("client: %d connections at a time through each of %d frontends", e.f.clients, len(e.lbs))
	if err := testbed.Sleep(ctx, 3*time.Second); err != nil {
		return err
	}
	e.checkBaseline()
	err := e.storms(ctx)
	cancel()
	e.load.wg.Wait()
	e.mon.wait()
	e.finalChecks(ctx)
	e.report()
	return err
}

// prepare makes the work directory, the network, etcd, the backends, the
// registrars and the load balancers, and waits until all serve.
func (e *env) prepare(ctx context.Context) error {
	for _, tool := range []string{"ip", "iptables", e.f.etcd} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (run.sh installs iproute2, iptables, etcd-server): %w", tool, err)
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
	hv, _ := exec.Command(e.haproxy, "-v").Output()
	ev, _ := exec.Command(e.f.etcd, "--version").Output()
	logf("HAProxy: %s; %s", firstLine(string(hv)), firstLine(string(ev)))
	if e.dir, err = os.MkdirTemp("", "hcchaos"); err != nil {
		return err
	}
	// A copy in the work directory: every process of the run names it.
	e.haconfd = filepath.Join(e.dir, "haconfd")
	if err := copyFile(e.f.haconfd, e.haconfd, 0o755); err != nil {
		return err
	}
	subnet, err := testbed.FreeSubnet()
	if err != nil {
		return err
	}
	e.top = &topo{sfx: e.f.suffix, net: subnet, ns: "hcc-" + e.f.suffix}
	if err := e.top.up(); err != nil {
		return err
	}
	logf("network: namespace %s, etcd link %s (%s-%s), data link %s (%s-%s)", e.top.ns,
		e.top.etcdLink(), e.top.etcdIP(), e.top.nsEtcdIP(), e.top.dataLink(), e.top.dataIP(), e.top.nsDataIP())
	t0 := time.Now()
	if err := e.startEtcd(ctx); err != nil {
		return fmt.Errorf("etcd cluster: %w", err)
	}
	logf("etcd: 3 members up in %s (%s)", time.Since(t0).Round(time.Millisecond), strings.Join(e.endpoints, " "))
	e.model = newModel()
	if err := e.model.start(ctx, e.cli); err != nil {
		return err
	}
	for i := range nBackends {
		b, err := startBackend(fmt.Sprintf("db%d", i+1), e.top.dataIP())
		if err != nil {
			return err
		}
		e.backends = append(e.backends, b)
		r := &registrar{b: b}
		e.regs = append(e.regs, r)
		if err := e.startRegistrar(r); err != nil {
			return err
		}
	}
	if err := testbed.WaitFor(ctx, 30*time.Second, func() bool { return len(e.model.inRotation()) == nBackends }); err != nil {
		return fmt.Errorf("the %d registrars: only %d nodes in etcd after 30s", nBackends, len(e.model.inRotation()))
	}
	logf("backends: %d registered by haconfd register (--ttl %s) on %s", nBackends, e.f.ttl, e.top.dataIP())
	for i := 1; i <= 3; i++ {
		l, err := e.newLB(i)
		if err != nil {
			return err
		}
		e.lbs = append(e.lbs, l)
		if err := e.startHaconfd(l); err != nil {
			return err
		}
	}
	for _, l := range e.lbs {
		if err := testbed.WaitFor(ctx, 60*time.Second, func() bool {
			st, err := e.liveServers(l)
			return err == nil && sameSet(st, e.model.inRotation())
		}); err != nil {
			return fmt.Errorf("%s does not serve the %d nodes after 60s (see %s)", l.name, nBackends, filepath.Join(l.dir, "haconfd.log"))
		}
	}
	logf("load balancers: lb1 (daemon HAProxy), lb2 (--supervise), lb3 (daemon HAProxy, namespace %s) serve all nodes", e.top.ns)
	return nil
}

func startBackend(id, ip string) (*backend, error) {
	port, err := testbed.FreePort()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", id, err)
	}
	b := &backend{id: id, addr: ln.Addr().String(), port: port, ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			_, _ = io.WriteString(c, b.id+"\n")
			_ = c.Close()
		}
	}()
	return b, nil
}

func (b *backend) close() {
	_ = b.ln.Close()
	b.wg.Wait()
}

// backendIndex is the index of the backend whose id is id (-1: none).
func (e *env) backendIndex(id string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(id, "db"))
	if err != nil || !strings.HasPrefix(id, "db") || n < 1 || n > len(e.backends) {
		return -1
	}
	return n - 1
}

func (e *env) startRegistrar(r *registrar) error {
	p, err := e.start("register "+r.b.id, filepath.Join(e.dir, "register-"+r.b.id+".log"), e.haconfd, "register",
		"--etcd-endpoints", strings.Join(e.endpoints, ","), "--id", r.b.id, "--host", r.b.id,
		"--ip", e.top.dataIP(), "--port", strconv.Itoa(r.b.port), "--ttl", e.f.ttl.String(), "--log-level", "info")
	r.proc = p
	return err
}

// chaosTemplate: /chaos/extra adds a listen section (a structural change:
// a reload everywhere). The last line lets the checker tell a complete
// file from a cut one.
const chaosTemplate = `global
    maxconn 8192
    stats socket {{ .Vars.runtime_socket }} mode 660 level admin expose-fd listeners
    server-state-file {{ .Vars.state_file }}
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    load-server-state-from-file global
listen galera
    bind {{ .Vars.bind }}
    balance roundrobin
    option redispatch
    default-server inter 2s downinter 200ms fastinter 100ms rise 2 fall 2
{{- range .Nodes }}
    server {{ .Name }} {{ .Addr }} check{{ if .Writable }}{{ if .Weighted }} weight {{ .Weight }}{{ end }}{{ else }} weight 0{{ end }}
{{- end }}
{{- if exists "/chaos/extra" }}
listen extra
    bind {{ .Vars.extra_bind }}
    balance roundrobin
{{- range .Nodes }}
    server {{ .Name }} {{ .Addr }}{{ if not .Writable }} weight 0{{ end }}
{{- end }}
{{- end }}
` + endTrailer

func (e *env) newLB(n int) (*lb, error) {
	l := &lb{n: n, name: fmt.Sprintf("lb%d", n), supervise: n == 2}
	l.dir = filepath.Join(e.dir, l.name)
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return nil, err
	}
	host := "127.0.0.1"
	if n == 3 {
		l.ns = e.top.ns
		host = e.top.nsDataIP()
	}
	var ports []int
	for range 3 {
		p, err := testbed.FreePort()
		if err != nil {
			return nil, err
		}
		ports = append(ports, p)
	}
	l.front = net.JoinHostPort(host, strconv.Itoa(ports[0]))
	l.extra = net.JoinHostPort(host, strconv.Itoa(ports[1]))
	l.listen = net.JoinHostPort(host, strconv.Itoa(ports[2]))
	l.tmpl = filepath.Join(l.dir, "chaos.tmpl")
	l.cfg = filepath.Join(l.dir, "haproxy.cfg")
	l.sock = filepath.Join(l.dir, "admin.sock")
	l.pidfile = filepath.Join(l.dir, "haproxy.pid")
	l.yaml = filepath.Join(l.dir, "haconfd.yaml")
	if err := os.WriteFile(l.tmpl, []byte(chaosTemplate), 0o644); err != nil {
		return nil, err
	}
	eps := strings.Join(e.endpoints, ", ")
	y := fmt.Sprintf(`etcd-endpoints: [%s]
prefix: [%s, %s]
template: %s
bind: "%s"
check-port: none
output: %s
haproxy-bin: %s
pidfile: %s
runtime-socket: %s
listen: "%s"
instance: %s
status-ttl: 5s
resync: 2s
max-remove: 1
var:
  extra_bind: "%s"
log-level: info
`, eps, prefix, chaosKeys, l.tmpl, l.front, l.cfg, e.haproxy, l.pidfile, l.sock, l.listen, l.name, l.extra)
	if l.supervise {
		y += fmt.Sprintf("supervise: true\nmaster-socket: %s\n", filepath.Join(l.dir, "master.sock"))
	}
	return l, os.WriteFile(l.yaml, []byte(y), 0o644)
}

func (e *env) startHaconfd(l *lb) error {
	argv := []string{e.haconfd, "run", "--config", l.yaml}
	if l.ns != "" {
		argv = append([]string{"ip", "netns", "exec", l.ns}, argv...)
	}
	p, err := e.start(l.name+" haconfd", filepath.Join(l.dir, "haconfd.log"), argv...)
	l.mu.Lock()
	l.haconfd = p
	l.held = false
	l.mu.Unlock()
	return err
}

// superviseHaconfd starts l's haconfd again when it exits on its own, a
// second later, as systemd's Restart= does (a start refused for a broken
// template, say); a haconfd-kill fault holds it down until its heal.
func (e *env) superviseHaconfd(ctx context.Context, l *lb) {
	for testbed.Sleep(ctx, 200*time.Millisecond) == nil {
		l.mu.Lock()
		p, held := l.haconfd, l.held
		l.mu.Unlock()
		if held || !p.exited() {
			continue
		}
		logf("%s: haconfd exited (%v), starting it again in 1s", l.name, p.cmd.ProcessState)
		if testbed.Sleep(ctx, time.Second) != nil {
			return
		}
		l.mu.Lock()
		again := l.haconfd == p && !l.held
		l.mu.Unlock()
		if again {
			if err := e.startHaconfd(l); err != nil {
				logf("%s: %v", l.name, err)
			}
		}
	}
}

func (e *env) cleanup() error {
	var errs []error
	for _, r := range e.regs {
		if r.proc != nil {
			r.proc.stop(syscall.SIGKILL, 5*time.Second)
		}
	}
	for _, l := range e.lbs {
		if l.haconfd != nil {
			l.haconfd.stop(syscall.SIGTERM, 10*time.Second)
		}
	}
	// HAProxy outlives haconfd by design (no --stop-haproxy-on-exit).
	for _, l := range e.lbs {
		for _, pid := range e.haproxyPIDs(l) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, m := range e.members {
		if m.paused {
			_ = m.proc.signal(syscall.SIGCONT)
		}
	}
	for _, p := range e.procs {
		p.stop(syscall.SIGTERM, 10*time.Second)
		p.log.Close()
	}
	if e.top != nil {
		errs = append(errs, e.top.down())
	}
	if e.cli != nil {
		e.cli.Close()
	}
	for _, b := range e.backends {
		b.close()
	}
	return errors.Join(errs...)
}

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, mode)
}
