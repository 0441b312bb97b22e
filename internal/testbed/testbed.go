// Package testbed has the small real parts that the demo, the e2e tests
// and the benchmarks share: TCP backends that answer their own id, a
// client that asks through HAProxy which backend served it, and free
// loopback ports.
package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Backend is a TCP server on 127.0.0.1 that writes its ID and a newline
// to every connection, then closes it.
type Backend struct {
	ID   string
	Addr string // 127.0.0.1:port
	Port int
	// Hold: keep each connection open after the ID until the peer closes
	// it (a client session), instead of closing at once.
	hold  bool
	conns map[net.Conn]bool

	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	hits int
}

// StartBackend starts a backend on a free port.
func StartBackend(id string) (*Backend, error) { return start(id, false) }

// StartHoldingBackend starts a backend that keeps each connection open
// after writing its ID, until the client closes it: a session that a
// removed server must drain.
func StartHoldingBackend(id string) (*Backend, error) { return start(id, true) }

func start(id string, hold bool) (*Backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", id, err)
	}
	b := &Backend{ID: id, Addr: ln.Addr().String(), Port: ln.Addr().(*net.TCPAddr).Port, ln: ln, hold: hold, conns: map[net.Conn]bool{}}
	b.wg.Add(1)
	go b.serve()
	return b, nil
}

// Open is the number of connections a holding backend keeps open.
func (b *Backend) Open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

func (b *Backend) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.hits++
		b.mu.Unlock()
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte(b.ID + "\n"))
		if !b.hold {
			_ = c.Close()
			continue
		}
		b.mu.Lock()
		b.conns[c] = true
		b.mu.Unlock()
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			_, _ = io.Copy(io.Discard, c)
			_ = c.Close()
			b.mu.Lock()
			delete(b.conns, c)
			b.mu.Unlock()
		}()
	}
}

// Hits is the number of connections the backend accepted.
func (b *Backend) Hits() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits
}

// Close stops the backend, ends the connections it holds and waits for
// its goroutines.
func (b *Backend) Close() {
	_ = b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// Hold connects to addr until the backend id answers (at most tries
// connections) and returns that connection, open: a session on id.
func Hold(addr, id string, tries int) (net.Conn, error) {
	for range tries {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && strings.TrimSpace(line) == id {
			_ = c.SetReadDeadline(time.Time{})
			return c, nil
		}
		_ = c.Close()
	}
	return nil, fmt.Errorf("no connection through %s reached %s in %d tries", addr, id, tries)
}

// Ask connects to addr and returns the line the backend behind it
// wrote (its ID).
func Ask(addr string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from %s: %w", addr, err)
	}
	return strings.TrimSpace(line), nil
}

// FreePort is a TCP port on 127.0.0.1 that nothing uses now and that no
// outgoing connection can take before the caller binds it.
//
// A port the kernel hands out for ":0" comes from the ephemeral range
// (net.ipv4.ip_local_port_range), the same range every outgoing
// connection draws its local port from. Between closing the probe and
// HAProxy (or etcd) binding the port, a long-lived client connection of
// another test package running alongside (an etcd client, say) can take
// it, and the bind then fails with "address already in use" for as long
// as that connection lives (seen in CI). So the port is drawn at random
// below the ephemeral range, checked by binding it, and never handed out
// twice by one process.
func FreePort() (int, error) {
	lo, hi := portPool()
	if hi <= lo {
		return kernelPort()
	}
	portMu.Lock()
	defer portMu.Unlock()
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		if portGiven[p] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		if err := ln.Close(); err != nil {
			return 0, err
		}
		portGiven[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d on 127.0.0.1 after 200 tries", lo, hi-1)
}

var (
	portMu    sync.Mutex
	portGiven = map[int]bool{}
)

// portPool is [lo, hi): the ports below the kernel's ephemeral range,
// from 10000 up. Empty when that range starts too low to leave room.
func portPool() (lo, hi int) {
	lo, hi = 10000, 32768 // Linux's default ephemeral range starts at 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				hi = n
			}
		}
	}
	if hi-lo < 1000 {
		return 0, 0
	}
	return lo, hi
}

// kernelPort asks the kernel for a free port (the ephemeral range).
func kernelPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr is 127.0.0.1:<free port>.
func FreeAddr() (string, error) {
	p, err := FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// FreeURL is http://127.0.0.1:<FreePort>, for an etcd that is started
// later on it.
func FreeURL() (string, error) {
	a, err := FreeAddr()
	if err != nil {
		return "", err
	}
	return "http://" + a, nil
}

// Sleep waits d, or until ctx ends (its error then).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// WaitFor polls cond every 20 ms for at most d, or until ctx ends.
func WaitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		if err := Sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// ErrTimeout is returned by Poll when the condition never held.
var ErrTimeout = errors.New("condition not met before the deadline")

// Poll calls cond every interval until it returns true or timeout passes.
func Poll(timeout, interval time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return ErrTimeout
		}
		time.Sleep(interval)
	}
}

// NoCheckTemplate is a whole haproxy.cfg with the galera section and no
// health checks, so that a server added through the runtime API takes
// traffic at once (with `check` it waits for its `rise` checks, by
// design). The e2e tests and the benchmarks use it.
const NoCheckTemplate = `global
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
{{- range .Nodes }}
    server {{ .Name }} {{ .Addr }}{{ if not .Synced }} disabled{{ end }}
{{- end }}
`

// Eventually polls cond every 10ms until it holds, and fails the test
// when it has not within timeout: the one way tests wait for an effect
// (never a sleep). what names the awaited condition in the failure.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := Poll(timeout, 10*time.Millisecond, cond); err != nil {
		t.Fatalf("%s: not within %s", what, timeout)
	}
}

// NeedTool returns the path of the program name, and when it is not
// installed skips the test, or fails it in CI (CI=true), where every tool
// a test needs is installed: a test never skips silently there. hint
// says how to install it.
func NeedTool(t testing.TB, name, hint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (%s): required in CI", name, hint)
		}
		t.Skipf("%s is not installed here (%s)", name, hint)
	}
	return p
}
