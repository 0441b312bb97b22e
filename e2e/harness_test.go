package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/etcdtest"
	"github.com/haconfd/haconfd/internal/testbed"
	"github.com/haconfd/haconfd/internal/testhaproxy"
)

// haconfdBin is the binary built once by TestMain.
var haconfdBin string

// haproxyBin is the HAProxy every test runs against (testhaproxy.Find:
// $HACONFD_TEST_HAPROXY, else haproxy on PATH or in /usr/sbin). TestMain
// also puts it first on PATH as "haproxy", for the processes that look it
// up themselves: haconfd's default --haproxy-bin, confd check_cmd lines,
// the examples' scripts.
var haproxyBin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	hp, err := testhaproxy.Find()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: HAProxy is required: %v; run `make test`\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: %s\n", hp)
	haproxyBin = hp.Path
	dir, err := os.MkdirTemp("", "haconfd-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	path, err := hp.ShimPATH(filepath.Join(dir, "path"), os.Getenv("PATH"))
	if err == nil {
		err = os.Setenv("PATH", path)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	haconfdBin = filepath.Join(dir, "haconfd")
	build := exec.Command("go", "build", "-race", "-o", haconfdBin, "../cmd/haconfd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building haconfd:", err)
		return 1
	}
	return m.Run()
}

const prefix = "/components/galera"

// env is one test's world: an in-process etcd, a temp dir for HAProxy's
// files and a free frontend port.
type env struct {
	t       *testing.T
	dir     string
	etcd    *etcdserver.Server
	cli     *clientv3.Client
	front   string
	cfgPath string
	pidFile string
	sock    string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "hce2e") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{t: t, dir: dir, cfgPath: filepath.Join(dir, "haproxy.cfg"),
		pidFile: filepath.Join(dir, "haproxy.pid"), sock: filepath.Join(dir, "admin.sock")}
	if e.front, err = testbed.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	e.etcd = etcdtest.Start(t)
	e.cli = e.client(e.etcd.Endpoints())
	t.Cleanup(e.killHAProxy)
	return e
}

func (e *env) client(endpoints []string) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cli.Close() })
	return cli
}

// killHAProxy stops every HAProxy the test's pidfile names.
func (e *env) killHAProxy() {
	for _, pid := range e.haproxyPIDs() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (e *env) haproxyPIDs() []int {
	b, err := os.ReadFile(e.pidFile)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && haproxy.Alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// baseArgs are the flags every test's haconfd gets.
func (e *env) baseArgs() []string {
	return e.argsWith(strings.Join(e.etcd.Endpoints(), ","))
}

func (e *env) argsWith(endpoints string) []string {
	return []string{
		"--etcd-endpoints", endpoints,
		"--output", e.cfgPath, "--pidfile", e.pidFile, "--runtime-socket", e.sock,
		"--bind", e.front, "--check-port", "none", "--wait", "20ms:200ms",
		"--stop-haproxy-on-exit", "--log-level", "debug", "--listen", "127.0.0.1:0",
	}
}

// proc is a running haconfd.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Log is everything haconfd printed so far.
func (p *proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs `haconfd <args...>` until the test ends.
func (e *env) start(args ...string) *proc {
	e.t.Helper()
	p := &proc{t: e.t, done: make(chan struct{})}
	p.cmd = exec.Command(haconfdBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	e.t.Cleanup(func() {
		p.stop()
		if e.t.Failed() {
			e.t.Logf("haconfd log:\n%s", p.Log())
		}
	})
	return p
}

// run starts haconfd run with the base flags plus extra.
func (e *env) run(extra ...string) *proc {
	return e.start(append(append([]string{"run"}, e.baseArgs()...), extra...)...)
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// exited waits up to d for haconfd to exit and returns its exit code,
// or -1 when it is still running.
func (p *proc) exited(d time.Duration) int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		return -1
	}
}

// putNode registers b under id in the fleet directory layout on a lease.
func (e *env) putNode(id string, b *testbed.Backend) clientv3.LeaseID {
	e.t.Helper()
	ctx := context.Background()
	l, err := e.cli.Grant(ctx, 60)
	if err != nil {
		e.t.Fatal(err)
	}
	base := prefix + "/" + id
	_, err = e.cli.Txn(ctx).Then(
		clientv3.OpPut(base+"/ip", "127.0.0.1", clientv3.WithLease(l.ID)),
		clientv3.OpPut(base+"/port", strconv.Itoa(b.Port), clientv3.WithLease(l.ID)),
		clientv3.OpPut(base+"/host", id, clientv3.WithLease(l.ID)),
	).Commit()
	if err != nil {
		e.t.Fatal(err)
	}
	return l.ID
}

func (e *env) put(key, value string) {
	e.t.Helper()
	if _, err := e.cli.Put(context.Background(), key, value); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) del(key string, opts ...clientv3.OpOption) {
	e.t.Helper()
	if _, err := e.cli.Delete(context.Background(), key, opts...); err != nil {
		e.t.Fatal(err)
	}
}

// backends starts n backends named prefix1..prefixN.
func backends(t *testing.T, name string, n int) []*testbed.Backend {
	t.Helper()
	var bs []*testbed.Backend
	for i := 1; i <= n; i++ {
		b, err := testbed.StartBackend(fmt.Sprintf("%s%d", name, i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		bs = append(bs, b)
	}
	return bs
}

// round makes n connections through the frontend and counts who answered.
func (e *env) round(n int) map[string]int {
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		id, err := testbed.Ask(e.front, 2*time.Second)
		if err != nil {
			id = "error"
		}
		seen[id]++
	}
	return seen
}

// eventually polls until a round of connections satisfies cond.
func (e *env) eventually(what string, cond func(map[string]int) bool) map[string]int {
	e.t.Helper()
	var last map[string]int
	err := testbed.Poll(30*time.Second, 50*time.Millisecond, func() bool {
		last = e.round(12)
		return cond(last)
	})
	if err != nil {
		e.t.Fatalf("%s: not reached within 30s; last round %v", what, last)
	}
	return last
}

func (e *env) live() string {
	b, err := os.ReadFile(e.cfgPath)
	if err != nil {
		return ""
	}
	return string(b)
}

// waitLog polls haconfd's log for a substring.
func (p *proc) waitLog(substr string) {
	p.t.Helper()
	if err := testbed.Poll(30*time.Second, 20*time.Millisecond, func() bool { return strings.Contains(p.Log(), substr) }); err != nil {
		p.t.Fatalf("haconfd never logged %q", substr)
	}
}

// loader makes connections through addr from n goroutines until stop is
// closed and counts successes and failures.
type loader struct {
	ok, failed int
	mu         sync.Mutex
	wg         sync.WaitGroup
	stop       chan struct{}
	errs       []string
}

func startLoad(addr string, n int) *loader {
	l := &loader{stop: make(chan struct{})}
	for i := 0; i < n; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				_, err := testbed.Ask(addr, 2*time.Second)
				l.mu.Lock()
				if err != nil {
					l.failed++
					if len(l.errs) < 5 {
						l.errs = append(l.errs, err.Error())
					}
				} else {
					l.ok++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *loader) finish() (ok, failed int, errs []string) {
	close(l.stop)
	l.wg.Wait()
	return l.ok, l.failed, l.errs
}

// httpAddr is the address haconfd's --listen bound (read from its log).
func (p *proc) httpAddr() string {
	p.t.Helper()
	var addr string
	err := testbed.Poll(30*time.Second, 20*time.Millisecond, func() bool {
		for _, line := range strings.Split(p.Log(), "\n") {
			if strings.Contains(line, "serving /metrics") {
				if i := strings.Index(line, "listen="); i >= 0 {
					addr = strings.Fields(line[i+len("listen="):])[0]
					return true
				}
			}
		}
		return false
	})
	if err != nil {
		p.t.Fatalf("haconfd never said where it serves /metrics:\n%s", p.Log())
	}
	return addr
}

// get fetches http://addr/path and returns the status code and body.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// applies counts the changes haconfd made live: its "config live" lines
// at info level (a revision that changed nothing logs at debug).
func countApplies(log string) int {
	return strings.Count(log, `level=INFO msg="config live"`)
}
