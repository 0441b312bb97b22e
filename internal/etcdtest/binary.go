package etcdtest

import (
	"context"
	"fmt"
	"github.com/haconfd/haconfd/internal/testbed"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Process is an etcd member run from the etcd binary (Debian's
// etcd-server package: etcd 3.4 on Debian 12), for what only a real
// process shows (its own bugs, being paused or killed).
type Process struct {
	Name      string
	ClientURL string
	PeerURL   string
	Dir       string
	cmd       *exec.Cmd
	done      chan struct{}
	mu        sync.Mutex
	out       strings.Builder
}

// Binary returns the path of the etcd binary: $HACONFD_TEST_ETCD, else
// etcd on PATH. When there is none the test is skipped, or fails with
// CI=true (CI installs etcd-server).
func Binary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("HACONFD_TEST_ETCD")
	if bin == "" {
		p, err := exec.LookPath("etcd")
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("the etcd binary is required in CI (apt-get install -y etcd-server)")
			}
			t.Skip("no etcd binary (apt-get install -y etcd-server)")
		}
		bin = p
	}
	return bin
}

// StartProcess runs a single-member etcd from the etcd binary in a temp
// dir on free 127.0.0.1 ports, waits until it answers, and kills it when
// the test ends.
func StartProcess(t testing.TB) *Process {
	t.Helper()
	bin := Binary(t)
	cu, err := testbed.FreeURL()
	if err != nil {
		t.Fatal(err)
	}
	pu, err := testbed.FreeURL()
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{Name: "p0", ClientURL: cu, PeerURL: pu, Dir: filepath.Join(t.TempDir(), "etcd"), done: make(chan struct{})}
	p.cmd = exec.Command(bin, "--name", p.Name, "--data-dir", p.Dir,
		"--listen-client-urls", cu, "--advertise-client-urls", cu,
		"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
		"--initial-cluster", p.Name+"="+pu, "--initial-cluster-state", "new",
		"--unsafe-no-fsync", "--log-level", "error")
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Kill)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cu}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(testStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "/")
		cancel()
		if err == nil {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("etcd exited at start: %s", p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd did not answer within %s: %v\n%s", testStartTimeout, err, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *Process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Output is what etcd printed.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Endpoints are the client URLs.
func (p *Process) Endpoints() []string { return []string{p.ClientURL} }

// Kill ends the process and waits for it.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Version is what `etcd --version` says first ("etcd Version: 3.4.23").
func Version(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(first)
}

// Signal sends sig to the member (SIGSTOP: a member that stops answering
// but keeps its connections, as a frozen VM or a stuck disk does).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }
