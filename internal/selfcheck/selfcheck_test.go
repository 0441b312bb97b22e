package selfcheck

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/haconfd/haconfd/internal/app"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Each rule of Judge, on haconfd's status as /status serves it. (Run and
// the haproxy rule are tested against a real haconfd and HAProxy in
// e2e/self_test.go.)
func TestJudge(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	o := Options{EtcdGrace: 10 * time.Second, LagGrace: 30 * time.Second}
	healthy := func() app.Status {
		return app.Status{Revision: 42, Applied: 42, HAProxy: app.HAProxyStatus{PID: 7, Running: true},
			EtcdConnected: true, EtcdSince: now.Add(-time.Hour)}
	}
	with := func(f func(*app.Status)) app.Status {
		s := healthy()
		f(&s)
		return s
	}
	behind := func(s *app.Status) { s.Revision = 50 }
	for _, tc := range []struct {
		name   string
		st     app.Status
		opts   *Options
		failed string // the failing rules, space-separated ("" healthy)
		detail string // in the failing (or, when healthy, some) check's detail
	}{
		{"converged", healthy(), nil, "", "revision 42 live"},
		{"haconfd says HAProxy is not running", with(func(s *app.Status) { s.HAProxy.Running = false }), nil, "running", "not running"},
		{"last apply failed (rolled back)", with(func(s *app.Status) { s.LastError = "reload: haproxy failed to start\n(rolled back)" }), nil,
			"apply", "failed (the last good config serves): reload: haproxy failed to start (rolled back)"},
		{"no snapshot from etcd yet", with(func(s *app.Status) { s.EtcdConnected, s.EtcdSince = false, time.Time{} }), nil, "etcd", "no snapshot"},
		{"etcd unreachable within the grace", with(func(s *app.Status) {
			s.EtcdConnected, s.EtcdSince, s.EtcdError = false, now.Add(-9*time.Second), "context deadline exceeded"
		}), nil, "", "unreachable for 9s, within --etcd-grace 10s: the last good config serves: context deadline exceeded"},
		{"etcd unreachable past the grace", with(func(s *app.Status) { s.EtcdConnected, s.EtcdSince = false, now.Add(-11*time.Second) }), nil,
			"etcd", "unreachable for 11s, longer than --etcd-grace 10s"},
		{"etcd grace 0", with(func(s *app.Status) { s.EtcdConnected, s.EtcdSince = false, now.Add(-time.Millisecond) }),
			&Options{EtcdGrace: 0, LagGrace: time.Minute}, "etcd", "longer than --etcd-grace 0s"},
		{"nothing live yet", with(func(s *app.Status) { s.Applied = 0 }), nil, "config", "no config live yet"},
		{"held on purpose: wave stopped", with(func(s *app.Status) {
			behind(s)
			s.Held = "reload held: wave stopped: instance lb1 failed to reload this config"
			s.Pending = &app.PendingReload{Action: "reload", Since: now.Add(-time.Hour), Waiting: "retry in 1s"}
		}), nil, "", "revision 42 live, 50 held on purpose: reload held: wave stopped"},
		{"servers held by a guard", with(func(s *app.Status) {
			s.Held, s.HeldServers = "1 server held", []app.HeldServer{{Section: "galera", Server: "db1", Guard: "max_remove"}}
		}), nil, "", "revision 42 live"},
		{"reload pending within the lag grace", with(func(s *app.Status) {
			behind(s)
			s.Pending = &app.PendingReload{Action: "reload", Since: now.Add(-2 * time.Second), Waiting: "fleet reload slot"}
		}), nil, "", "50 waits for a reload (fleet reload slot) for 2s, within --lag-grace 30s"},
		{"reload pending past the lag grace", with(func(s *app.Status) {
			behind(s)
			s.Pending = &app.PendingReload{Action: "reload", Since: now.Add(-31 * time.Second), Waiting: "fleet reload slot"}
		}), nil, "config", "lagging: revision 42 live, 50 has waited for a reload (fleet reload slot) for 31s"},
		{"behind with nothing pending", with(behind), nil, "config", "lagging: revision 50 seen, 42 live, nothing pending"},
		{"failed and etcd gone and not running", with(func(s *app.Status) {
			s.LastError, s.EtcdConnected, s.EtcdSince, s.HAProxy.Running = "x", false, now.Add(-time.Minute), false
		}), nil, "running apply etcd", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := o
			if tc.opts != nil {
				opts = *tc.opts
			}
			r := newReport(Judge(tc.st, now, opts))
			var failed []string
			for _, c := range r.Failed() {
				failed = append(failed, c.Name)
			}
			if got := strings.Join(failed, " "); got != tc.failed || r.Healthy != (tc.failed == "") {
				t.Errorf("failed rules %q (healthy %v), want %q: %+v", got, r.Healthy, tc.failed, r.Checks)
			}
			if tc.detail == "" {
				return
			}
			found := false
			for _, c := range r.Checks {
				found = found || (strings.Contains(c.Detail, tc.detail) && (c.OK == (tc.failed == "")))
			}
			if !found {
				t.Errorf("no check says %q: %+v", tc.detail, r.Checks)
			}
		})
	}
}

func TestStatusURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9480": "http://127.0.0.1:9480/status",
		":9480":          "http://127.0.0.1:9480/status",
		"0.0.0.0:9480":   "http://127.0.0.1:9480/status",
		"[::]:9480":      "http://[::1]:9480/status",
		"10.0.0.5:1":     "http://10.0.0.5:1/status",
	} {
		if got, err := StatusURL(in); err != nil || got != want {
			t.Errorf("StatusURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := StatusURL("9480"); err == nil {
		t.Error("StatusURL(9480): no error")
	}
}

// A socket that accepts and never answers (a stopped HAProxy's backlog
// does that: e2e/self_test.go stops a real one) fails within the bound.
func TestHAProxyBounded(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	c := HAProxy(ctx, sock)
	if c.OK || !strings.Contains(c.Detail, "i/o timeout") {
		t.Errorf("%+v", c)
	}
	if c := HAProxy(context.Background(), filepath.Join(t.TempDir(), "none.sock")); c.OK || !strings.Contains(c.Detail, "no such file") {
		t.Errorf("%+v", c)
	}
}
