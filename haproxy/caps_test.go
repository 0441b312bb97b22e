package haproxy

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// "add server" takes "cookie" on 3.0+: the plan adds such a server at
// runtime there, and plans a reload (naming the keyword) on 2.6.
func TestPlanAddCookie(t *testing.T) {
	prev := "backend be\n    mode http\n    cookie SRV insert indirect nocache\n    server a 10.0.0.1:80 cookie a\n"
	next := prev + "    server b 10.0.0.2:80 cookie b\n"
	p, err := PlanChange([]byte(prev), []byte(next), Caps{})
	if err != nil || !p.Reload || !slices.ContainsFunc(p.Reasons, func(r string) bool { return strings.Contains(r, `"cookie"`) }) {
		t.Fatalf("2.6: plan = %+v, %v; want a reload because of cookie", p, err)
	}
	p, err = PlanChange([]byte(prev), []byte(next), Caps{AddCookie: true})
	if err != nil || p.Reload || len(p.Ops) != 1 || p.Ops[0].AddArgs != "10.0.0.2:80 cookie b" {
		t.Fatalf("3.0: plan = %+v, %v; want add server with its cookie", p, err)
	}
}

// On the HAProxy under test, a server with a cookie is added the way its
// version allows: at runtime on 3.0+ (and HAProxy takes it), by a reload
// before.
func TestAddServerWithCookie(t *testing.T) {
	s := newRuntimeSite(t, nil)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	front := freePort(t)
	conf := func(servers ...string) []byte {
		c := fmt.Sprintf("global\n    stats socket %s level admin expose-fd listeners\n    server-state-file %s\n", s.sock, filepath.Join(s.dir, "state")) +
			"defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n    load-server-state-from-file global\n" +
			fmt.Sprintf("listen web\n    bind 127.0.0.1:%d\n    balance roundrobin\n    cookie SRV insert indirect nocache\n", front)
		for _, sv := range servers {
			c += "    " + sv + "\n"
		}
		return []byte(c)
	}
	base := conf(fmt.Sprintf("server a 127.0.0.1:%d cookie a", a.port))
	mustApply(t, s, base, ActionStart)
	next := conf(fmt.Sprintf("server a 127.0.0.1:%d cookie a", a.port), fmt.Sprintf("server b 127.0.0.1:%d cookie b", b.port))
	if !haproxyVersion.Caps().AddCookie {
		p, err := PlanChange(base, next, haproxyVersion.Caps())
		if err != nil || !p.Reload {
			t.Fatalf("HAProxy %s: plan = %+v, %v; want a reload", haproxyVersion, p, err)
		}
		return
	}
	res := applyFast(t, s, next, 0)
	if len(res.plan.Ops) != 1 || res.plan.Ops[0].Kind != OpAdd || !strings.Contains(res.plan.Ops[0].AddArgs, "cookie b") {
		t.Fatalf("HAProxy %s: plan = %+v, want one add server with cookie b", haproxyVersion, res.plan)
	}
	if _, ok := serverStatesOf(t, s.sock, "web")["b"]; !ok {
		t.Fatalf("HAProxy %s: b not in show servers state after add server", haproxyVersion)
	}
}

// The master CLI's answer to "reload" on 2.7+.
func TestParseReloadStatus(t *testing.T) {
	ok, logs, err := parseReloadStatus("Success=1\n--\n[NOTICE]   (12789) : New worker (12897) forked\n[NOTICE]   (12789) : Loading success.\n")
	if err != nil || !ok || newWorkerPID(logs) != 12897 {
		t.Fatalf("success: %v, %q, %v (pid %d)", ok, logs, err, newWorkerPID(logs))
	}
	ok, logs, err = parseReloadStatus("Success=0\n--\n[ALERT]    (12789) : config : parsing [m.cfg:11] : unknown keyword 'bogus' in 'listen' section\n[WARNING]  (12789) : Loading failure!\n")
	if err != nil || ok || firstAlert(logs) != "m.cfg:11: unknown keyword 'bogus' in 'listen' section" {
		t.Fatalf("failure: %v, %q, %v (alert %q)", ok, logs, err, firstAlert(logs))
	}
	if _, _, err := parseReloadStatus("Unknown command\n"); err == nil || !strings.Contains(err.Error(), `"Unknown command"`) {
		t.Fatalf("garbage: %v", err)
	}
}

// haproxy -c of the first start finds a server-state file (empty): 2.6
// warns about a missing one, and that warning would be shown to
// operators as a problem of their config.
func TestFirstStartWithoutStateFileWarning(t *testing.T) {
	s := newRuntimeSite(t, nil)
	a := startBackend(t, "a")
	mustApply(t, s, s.rtConfig(freePort(t), "roundrobin", rtServer{"a", a.port, ""}), ActionStart)
	if w := s.m.Warnings(); len(w) != 0 {
		t.Fatalf("HAProxy %s: warnings after the first start: %q", haproxyVersion, w)
	}
}
