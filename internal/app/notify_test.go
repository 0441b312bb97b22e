package app

import (
	"context"
	"github.com/haconfd/haconfd/internal/testbed"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// notifySocket is a real NOTIFY_SOCKET: a unixgram socket systemd would
// own, in a short temp dir. It sets NOTIFY_SOCKET for the test.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	dir, err := os.MkdirTemp("", "hcsd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

// next reads one datagram, failing the test after a generous deadline.
func next(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notify message: %v", err)
	}
	return string(buf[:n])
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestNotifyMessages(t *testing.T) {
	tests := []struct {
		name string
		send func(*slog.Logger) bool
		want string
	}{
		{"ready", NotifyReady, "READY=1"},
		{"stopping", NotifyStopping, "STOPPING=1"},
		{"status", func(l *slog.Logger) bool { return NotifyStatus(l, "revision 7 live") }, "STATUS=revision 7 live"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := notifySocket(t)
			if !tt.send(discard()) {
				t.Fatal("not sent")
			}
			if got := next(t, conn); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNotifyWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	if NotifyReady(discard()) {
		t.Fatal("NotifyReady sent without NOTIFY_SOCKET")
	}
}

func TestNotifyBrokenSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	if NotifyReady(discard()) {
		t.Fatal("NotifyReady reported success on a socket nobody listens on")
	}
}

func TestWatchdogFeedsWhileHealthy(t *testing.T) {
	conn := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "100000") // 100ms: a ping every 50ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	var healthy atomic.Bool
	var calls atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watchdog(ctx, discard(), func() bool {
			calls.Add(1)
			return healthy.Load()
		})
	}()
	defer func() { cancel(); <-done }()

	// Unhealthy: three checks pass without a ping. A marker sent now must
	// be the first datagram the socket holds (unix datagrams keep order).
	testbed.Eventually(t, 10*time.Second, "the watchdog asking healthy() three times", func() bool { return calls.Load() >= 3 })
	marker, err := net.DialUnix("unixgram", nil, conn.LocalAddr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := marker.Write([]byte("MARKER")); err != nil {
		t.Fatal(err)
	}
	marker.Close()
	healthy.Store(true)
	if got := next(t, conn); got != "MARKER" {
		t.Fatalf("watchdog pinged while unhealthy: first datagram %q", got)
	}
	for i := 0; i < 2; i++ {
		if got := next(t, conn); got != "WATCHDOG=1" {
			t.Fatalf("ping %d: got %q, want WATCHDOG=1", i, got)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Watchdog did not return after ctx ended")
	}
}

func TestWatchdogNoOp(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
	}{
		{"no watchdog", map[string]string{}},
		{"watchdog for another process", map[string]string{"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"}},
		{"unreadable interval", map[string]string{"WATCHDOG_USEC": "soon"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			notifySocket(t)
			t.Setenv("WATCHDOG_USEC", "")
			t.Setenv("WATCHDOG_PID", "")
			os.Unsetenv("WATCHDOG_USEC")
			os.Unsetenv("WATCHDOG_PID")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				// A context that never ends: only a no-op returns.
				Watchdog(context.Background(), discard(), func() bool {
					t.Error("healthy() called although no watchdog applies")
					return true
				})
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Watchdog did not return at once")
			}
		})
	}
}
