package e2e

import (
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haconfd/haconfd/internal/app"
	"github.com/haconfd/haconfd/internal/selfcheck"
	"github.com/haconfd/haconfd/internal/testbed"
)

// selfResult is one run of `haconfd status --self`.
type selfResult struct {
	code int
	rep  selfcheck.Report
	text string
}

// failed names the failing checks, space-separated.
func (r selfResult) failed() string {
	var names []string
	for _, c := range r.rep.Failed() {
		names = append(names, c.Name)
	}
	return strings.Join(names, " ")
}

// detail is the named check's detail.
func (r selfResult) detail(name string) string {
	for _, c := range r.rep.Checks {
		if c.Name == name {
			return c.Detail
		}
	}
	return ""
}

// self runs `haconfd status --self` against the haconfd on addr and the
// HAProxy on sock (JSON output).
func self(t *testing.T, addr, sock string, extra ...string) selfResult {
	t.Helper()
	args := append([]string{"status", "--self", "--format", "json", "--listen", addr, "--runtime-socket", sock}, extra...)
	cmd := exec.Command(haconfdBin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("haconfd %s: %v", strings.Join(args, " "), err)
	}
	r := selfResult{code: cmd.ProcessState.ExitCode(), text: string(out) + stderr.String()}
	if r.code == 2 {
		t.Fatalf("haconfd %s exited 2:\n%s", strings.Join(args, " "), r.text)
	}
	if err := json.Unmarshal(out, &r.rep); err != nil {
		t.Fatalf("status --self --format json: %v\n%s", err, r.text)
	}
	return r
}

// wantSelf fails the test unless the check exits code with exactly the
// failing rules failed ("" when healthy).
func wantSelf(t *testing.T, what string, r selfResult, code int, failed string) {
	t.Helper()
	if r.code != code || r.failed() != failed || r.rep.Healthy != (code == 0) {
		t.Errorf("%s: exit %d failing %q, want exit %d failing %q:\n%s", what, r.code, r.failed(), code, failed, r.text)
	}
}

// `haconfd status --self` against a real haconfd, HAProxy and etcd: each
// rule turns the check to exit 1 when what it watches goes wrong, and back
// to 0 when it is right again.
func TestSelfCheck(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 1)
	e.putAddr(bs[0].ID, bs[0].Port)
	// --wait 3s: a structural change waits 3s for its reload (quiescence);
	// --resync 0: haconfd does not restart a HAProxy killed behind its back.
	p := e.runTemplate(fleetTemplate, "--var", "fragile=/nonexistent-dir", "--wait", "3s:3s", "--resync", "0")
	addr := p.httpAddr()
	status := func() app.Status {
		var st app.Status
		_, body := get(t, addr, "/status")
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("/status: %v\n%s", err, body)
		}
		return st
	}
	waitStatus := func(what string, cond func(app.Status) bool) app.Status {
		t.Helper()
		var st app.Status
		if err := testbed.Poll(30*time.Second, 20*time.Millisecond, func() bool { st = status(); return cond(st) }); err != nil {
			t.Fatalf("%s: not within 30s; /status %+v", what, st)
		}
		return st
	}
	healthy := func(what string) {
		t.Helper()
		var r selfResult
		if err := testbed.Poll(30*time.Second, 100*time.Millisecond, func() bool { r = self(t, addr, e.sock); return r.code == 0 }); err != nil {
			t.Fatalf("%s: status --self never exited 0:\n%s", what, r.text)
		}
		wantSelf(t, what, r, 0, "")
	}
	healthy("started")
	wantSelf(t, "--haproxy-only", self(t, addr, e.sock, "--haproxy-only"), 0, "")

	t.Run("a reload waiting counts until --lag-grace", func(t *testing.T) {
		e.put("/lbtest/balance", "leastconn")
		waitStatus("reload pending", func(s app.Status) bool { return s.Pending != nil && s.Applied < s.Revision })
		within := self(t, addr, e.sock, "--lag-grace", "1h")
		past := self(t, addr, e.sock, "--lag-grace", "1ms")
		if st := status(); st.Applied >= st.Revision {
			t.Fatalf("the reload went through while the checks ran (the 3s quiescence passed): cannot judge")
		}
		wantSelf(t, "pending, --lag-grace 1h", within, 0, "")
		if d := within.detail("config"); !strings.Contains(d, "waits for a reload (quiescence)") {
			t.Errorf("config: %q", d)
		}
		wantSelf(t, "pending, --lag-grace 1ms", past, 1, "config")
		if d := past.detail("config"); !strings.Contains(d, "lagging") {
			t.Errorf("config: %q", d)
		}
		healthy("reloaded")
	})

	t.Run("a failed reload, rolled back", func(t *testing.T) {
		e.put("/lbtest/fragile", "1") // chroot /nonexistent-dir: HAProxy dies after fork
		waitStatus("reload failed", func(s app.Status) bool { return s.LastError != "" })
		r := self(t, addr, e.sock)
		wantSelf(t, "after the failed reload", r, 1, "apply")
		if d := r.detail("apply"); !strings.Contains(d, "failed") {
			t.Errorf("apply: %q", d)
		}
		// The last good config serves again: HAProxy answers.
		wantSelf(t, "--haproxy-only after the rollback", self(t, addr, e.sock, "--haproxy-only"), 0, "")
		if id, err := testbed.Ask(e.front, 2*time.Second); err != nil || id != "db1" {
			t.Errorf("HAProxy after the rollback: %q %v", id, err)
		}
		e.del("/lbtest/fragile")
		healthy("fixed")
	})

	t.Run("haconfd not answering", func(t *testing.T) {
		if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = p.cmd.Process.Signal(syscall.SIGCONT) }()
		r := self(t, addr, e.sock, "--timeout", "500ms")
		wantSelf(t, "haconfd stopped", r, 1, "haconfd")
		if d := r.detail("haconfd"); !strings.Contains(d, "does not answer") {
			t.Errorf("haconfd: %q", d)
		}
		wantSelf(t, "--haproxy-only, haconfd stopped", self(t, addr, e.sock, "--haproxy-only", "--timeout", "500ms"), 0, "")
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		healthy("haconfd continued")
	})

	t.Run("HAProxy not answering", func(t *testing.T) {
		pids := e.haproxyPIDs()
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		}
		cont := func() {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		}
		defer cont()
		wantSelf(t, "HAProxy stopped", self(t, addr, e.sock, "--timeout", "500ms"), 1, "haproxy")
		wantSelf(t, "--haproxy-only, HAProxy stopped", self(t, addr, e.sock, "--haproxy-only", "--timeout", "500ms"), 1, "haproxy")
		cont()
		healthy("HAProxy continued")
	})

	t.Run("etcd unreachable", func(t *testing.T) {
		e.etcd.Close()
		st := waitStatus("etcd unreachable", func(s app.Status) bool { return !s.EtcdConnected })
		r := self(t, addr, e.sock, "--etcd-grace", "1h")
		wantSelf(t, "etcd unreachable, --etcd-grace 1h", r, 0, "")
		if d := r.detail("etcd"); !strings.Contains(d, "within --etcd-grace 1h0m0s: the last good config serves") {
			t.Errorf("etcd: %q", d)
		}
		r = self(t, addr, e.sock, "--etcd-grace", "0")
		wantSelf(t, "etcd unreachable, --etcd-grace 0", r, 1, "etcd")
		if d := r.detail("etcd"); !strings.Contains(d, "longer than --etcd-grace 0s") {
			t.Errorf("etcd: %q (since %s)", d, st.EtcdSince)
		}
		if id, err := testbed.Ask(e.front, 2*time.Second); err != nil || id != "db1" {
			t.Errorf("HAProxy without etcd: %q %v", id, err)
		}
	})

	t.Run("HAProxy gone", func(t *testing.T) {
		e.killHAProxy()
		if err := testbed.Poll(10*time.Second, 20*time.Millisecond, func() bool { return len(e.haproxyPIDs()) == 0 }); err != nil {
			t.Fatal("HAProxy still alive after SIGKILL")
		}
		// haconfd has not looked yet (--resync 0): only the socket says so.
		r := self(t, addr, e.sock, "--etcd-grace", "1h")
		wantSelf(t, "HAProxy killed", r, 1, "haproxy")
		if d := r.detail("haproxy"); !strings.Contains(d, "does not answer") {
			t.Errorf("haproxy: %q", d)
		}
		wantSelf(t, "--haproxy-only, HAProxy killed", self(t, addr, e.sock, "--haproxy-only"), 1, "haproxy")
	})

	t.Run("haconfd gone", func(t *testing.T) {
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-p.done
		r := self(t, addr, e.sock)
		if r.code != 1 || !strings.Contains(r.failed(), "haconfd") || !strings.Contains(r.detail("haconfd"), "connection refused") {
			t.Errorf("haconfd killed: exit %d failing %q:\n%s", r.code, r.failed(), r.text)
		}
	})
}

// Bad input to status --self: one line naming the flag, exit 2.
func TestSelfBadFlags(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "a.sock")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--haproxy-only"}, "--haproxy-only: only with --self"},
		{[]string{"--etcd-grace", "1s"}, "--etcd-grace: only with --self"},
		{[]string{"--self", "--timeout", "0s"}, "--timeout 0s: must be positive"},
		{[]string{"--self", "--etcd-grace", "-1s"}, "--etcd-grace -1s: must not be negative"},
		{[]string{"--self", "--lag-grace", "-1s"}, "--lag-grace -1s: must not be negative"},
		{[]string{"--self", "--listen", ""}, "--listen: empty, but status --self reads haconfd's /status there"},
		{[]string{"--self", "--runtime-socket", ""}, "--runtime-socket: must not be empty for status --self"},
		{[]string{"--self", "--listen", "9480"}, `--listen: "9480" is not host:port`},
		{[]string{"--self", "--format", "yaml"}, `--format: "yaml" must be table or json`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append([]string{"status", "--runtime-socket", sock}, tc.args...)
			out, err := exec.Command(haconfdBin, args...).CombinedOutput()
			var ee *exec.ExitError
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if !errors.As(err, &ee) || ee.ExitCode() != 2 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Errorf("exit %v, output:\n%s\nwant one line with %q", err, out, tc.want)
			}
		})
	}
}
