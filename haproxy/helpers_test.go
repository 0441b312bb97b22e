package haproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/haconfd/haconfd/internal/testbed"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/haconfd/haconfd/internal/testhaproxy"
)

// haproxyBin is the HAProxy the tests run against (testhaproxy.Find:
// $HACONFD_TEST_HAPROXY, else haproxy on PATH or in /usr/sbin); "" when
// there is none outside CI.
var haproxyBin string

// haproxyVersion is haproxyBin's version: the tests drive it with the
// methods haconfd picks for it (Version.Caps).
var haproxyVersion Version

func TestMain(m *testing.M) {
	b, err := testhaproxy.Announce("haproxy")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	haproxyBin = b.Path
	if haproxyBin != "" {
		if haproxyVersion, err = BinaryVersion(context.Background(), haproxyBin); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	goleak.VerifyTestMain(m)
}

func requireHAProxy(t *testing.T) {
	t.Helper()
	if haproxyBin == "" {
		t.Skip("no HAProxy to test against (see the first line of this package's output)")
	}
}

// shortDir returns a temp dir short enough for unix socket paths.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// freePort returns a port the kernel just handed out on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// backend is a tiny TCP server that writes its id and closes.
type backend struct {
	id   string
	port int
}

func startBackend(t *testing.T, id string) backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, id+"\n")
			_ = c.Close()
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	return backend{id: id, port: l.Addr().(*net.TCPAddr).Port}
}

// dial connects to 127.0.0.1:port and returns the backend id it reads.
func dial(port int) (string, error) {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from :%d: %w (got %q)", port, err, line)
	}
	return strings.TrimSpace(line), nil
}

// eventually is testbed.Eventually.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testbed.Eventually(t, d, what, cond)
}

// site is one managed HAProxy in a temp dir.
type site struct {
	dir, cfg, pid, sock string
	m                   *Manager
}

func newSite(t *testing.T, mutate func(*Options)) *site {
	t.Helper()
	requireHAProxy(t)
	dir := shortDir(t)
	s := &site{
		dir:  dir,
		cfg:  filepath.Join(dir, "haproxy.cfg"),
		pid:  filepath.Join(dir, "haproxy.pid"),
		sock: filepath.Join(dir, "s.sock"),
	}
	opts := Options{
		Bin:        haproxyBin,
		ConfigPath: s.cfg,
		PIDFile:    s.pid,
		Socket:     s.sock,
		Settle:     100 * time.Millisecond,
		Timeout:    10 * time.Second,
		StopGrace:  2 * time.Second,
		Version:    haproxyVersion,
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mutate != nil {
		mutate(&opts)
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.m = m
	t.Cleanup(func() { s.kill(t) })
	return s
}

// kill ends every haproxy of the site: Stop, then SIGKILL to anything left in the pidfile.
func (s *site) kill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.m.Stop(ctx); err != nil {
		t.Logf("cleanup: %v", err)
	}
	pids, _ := readPIDFile(s.pid)
	for _, p := range pids {
		if alive(p) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type listenSpec struct {
	name     string
	port     int
	backends []backend
}

// config renders a haproxy.cfg with one listen section per spec.
func (s *site) config(extraGlobal string, listens ...listenSpec) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "global\n    stats socket %s level admin expose-fd listeners\n", s.sock)
	if extraGlobal != "" {
		fmt.Fprintf(&b, "    %s\n", extraGlobal)
	}
	b.WriteString("defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n")
	for _, l := range listens {
		fmt.Fprintf(&b, "listen %s\n    bind 127.0.0.1:%d\n    balance roundrobin\n", l.name, l.port)
		for _, be := range l.backends {
			fmt.Fprintf(&b, "    server %s 127.0.0.1:%d\n", be.id, be.port)
		}
	}
	return []byte(b.String())
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func stageLeftovers(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, ".haconfd-stage-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustErrorIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want errors.Is %v", err, target)
	}
}
