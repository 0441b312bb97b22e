package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/internal/fleet"
	"github.com/haconfd/haconfd/internal/testbed"
)

// fleetTemplate: /lbtest/balance changes the balance algorithm (a
// structural change: a reload); /lbtest/fragile adds "chroot
// <.Vars.fragile>" on the instances given --var fragile=DIR only.
const fleetTemplate = `global
    stats socket {{ .Vars.runtime_socket }} mode 660 level admin expose-fd listeners
    server-state-file {{ .Vars.state_file }}
{{- if exists "/lbtest/fragile" }}{{ with .Vars.fragile }}
    chroot {{ . }}{{ end }}{{ end }}
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    load-server-state-from-file global
listen galera
    bind {{ .Vars.bind }}
    balance {{ if exists "/lbtest/balance" }}{{ getv "/lbtest/balance" }}{{ else }}roundrobin{{ end }}
{{- range .Nodes }}
    server {{ .Name }} {{ .Addr }}
{{- end }}
`

const statusPrefix = "/haconfd/instances"

// lb is one haconfd + HAProxy pair of the fleet.
type lb struct {
	name, dir, front, cfg, pid string
	p                          *proc
}

// startLB runs haconfd instance name with its own files and frontend.
func (e *env) startLB(name, ttl string, extra ...string) *lb {
	e.t.Helper()
	l := &lb{name: name, dir: filepath.Join(e.dir, name)}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	var err error
	if l.front, err = testbed.FreeAddr(); err != nil {
		e.t.Fatal(err)
	}
	l.cfg, l.pid = filepath.Join(l.dir, "haproxy.cfg"), filepath.Join(l.dir, "haproxy.pid")
	tmpl := filepath.Join(e.dir, "fleet.tmpl")
	if err := os.WriteFile(tmpl, []byte(fleetTemplate), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { killPids(l.pid) })
	args := []string{"run", "--etcd-endpoints", strings.Join(e.etcd.Endpoints(), ","),
		"--output", l.cfg, "--pidfile", l.pid, "--runtime-socket", filepath.Join(l.dir, "a.sock"),
		"--bind", l.front, "--check-port", "none", "--wait", "0", "--drain-timeout", "1s",
		"--stop-haproxy-on-exit", "--log-level", "debug", "--listen", "",
		"--template", tmpl, "--prefix", prefix + ",/lbtest",
		"--instance", name, "--status-ttl", ttl}
	l.p = e.start(append(args, extra...)...)
	return l
}

func killPids(pidfile string) {
	b, _ := os.ReadFile(pidfile)
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// statuses reads what every instance published.
func (e *env) statuses() map[string]fleet.Report {
	e.t.Helper()
	resp, err := e.cli.Get(context.Background(), statusPrefix+"/", clientv3.WithPrefix())
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]fleet.Report{}
	for _, kv := range resp.Kvs {
		var st fleet.Report
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			e.t.Fatalf("%s: %v", kv.Key, err)
		}
		out[st.Instance] = st
	}
	return out
}

// waitFleet polls the published statuses until cond holds.
func (e *env) waitFleet(what string, cond func(map[string]fleet.Report) bool) map[string]fleet.Report {
	e.t.Helper()
	var last map[string]fleet.Report
	if err := testbed.Poll(60*time.Second, 50*time.Millisecond, func() bool {
		last = e.statuses()
		return cond(last)
	}); err != nil {
		b, _ := json.MarshalIndent(last, "", "  ")
		e.t.Fatalf("%s: not reached within 60s; statuses:\n%s", what, b)
	}
	return last
}

// status runs `haconfd status` and returns its stdout and exit code.
func (e *env) status(format string) (string, int) {
	e.t.Helper()
	cmd := exec.Command(haconfdBin, "status", "--etcd-endpoints", strings.Join(e.etcd.Endpoints(), ","),
		"--prefix", prefix+",/lbtest", "--format", format)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		e.t.Fatalf("haconfd status: %v\n%s", err, stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code == 2 {
		e.t.Fatalf("haconfd status exited 2:\n%s%s", out, stderr.String())
	}
	return string(out), cmd.ProcessState.ExitCode()
}

func (e *env) fleetStates() (map[string]fleet.Instance, string) {
	e.t.Helper()
	out, _ := e.status("json")
	var f fleet.Fleet
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		e.t.Fatalf("status --format json: %v\n%s", err, out)
	}
	m := map[string]fleet.Instance{}
	for _, in := range f.Instances {
		m[in.Instance] = in
	}
	return m, out
}

func (e *env) waitStates(what string, want map[string]fleet.State) map[string]fleet.Instance {
	e.t.Helper()
	var last map[string]fleet.Instance
	var raw string
	if err := testbed.Poll(60*time.Second, 100*time.Millisecond, func() bool {
		last, raw = e.fleetStates()
		if len(last) != len(want) {
			return false
		}
		for name, st := range want {
			if last[name].State != st {
				return false
			}
		}
		return true
	}); err != nil {
		e.t.Fatalf("%s: status never showed %v:\n%s", what, want, raw)
	}
	return last
}

// reloadsSince returns every instance's reloads (action reload) started
// after t0, finished.
func reloadsSince(sts map[string]fleet.Report, t0 time.Time) map[string][]fleet.Reload {
	out := map[string][]fleet.Reload{}
	for name, st := range sts {
		for _, r := range st.Reloads {
			if r.Action == "reload" && r.Started.After(t0) && !r.Finished.IsZero() {
				out[name] = append(out[name], r)
			}
		}
	}
	return out
}

// timeline logs the reloads in start order and fails on an overlap.
func timeline(t *testing.T, title string, rs map[string][]fleet.Reload, t0 time.Time) {
	t.Helper()
	type row struct {
		name string
		r    fleet.Reload
	}
	var rows []row
	for name, list := range rs {
		for _, r := range list {
			rows = append(rows, row{name, r})
		}
	}
	slices.SortFunc(rows, func(a, b row) int { return a.r.Started.Compare(b.r.Started) })
	var b strings.Builder
	fmt.Fprintf(&b, "%s (ms after the etcd Put):\n", title)
	for _, x := range rows {
		res := "ok"
		if !x.r.OK {
			res = "FAILED: " + x.r.Error
		}
		fmt.Fprintf(&b, "  %-4s reload %7.1f → %7.1f  coordinated=%v  %s\n", x.name,
			float64(x.r.Started.Sub(t0).Microseconds())/1000, float64(x.r.Finished.Sub(t0).Microseconds())/1000, x.r.Coordinated, res)
	}
	t.Log(b.String())
	for i := 1; i < len(rows); i++ {
		if rows[i].r.Started.Before(rows[i-1].r.Finished) {
			t.Errorf("reloads overlap: %s started at %v before %s finished at %v", rows[i].name, rows[i].r.Started, rows[i-1].name, rows[i-1].r.Finished)
		}
	}
}

// Three haconfd + HAProxy pairs on one etcd: structural changes reload
// one instance at a time; a change that fails on one instance stops the
// wave (the others keep their config); status shows converged, lagging,
// failing and gone.
func TestFleet(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 2)
	for _, b := range bs {
		e.putAddr(b.ID, b.Port)
	}
	// --listen: status --self reads /status (the wave-stop step).
	lbs := []*lb{
		e.startLB("lb1", "5s", "--var", "fragile=/nonexistent-dir", "--listen", "127.0.0.1:0"),
		e.startLB("lb2", "5s", "--listen", "127.0.0.1:0"),
		e.startLB("lb3", "5s"),
	}
	serving := func(l *lb) bool {
		id, err := testbed.Ask(l.front, time.Second)
		return err == nil && strings.HasPrefix(id, "db")
	}
	e.waitStates("three instances up", map[string]fleet.State{"lb1": fleet.Converged, "lb2": fleet.Converged, "lb3": fleet.Converged})
	for _, l := range lbs {
		if !serving(l) {
			t.Fatalf("%s does not serve", l.name)
		}
	}
	table, code := e.status("table")
	t.Logf("haconfd status (exit %d):\n%s", code, table)
	if code != 0 || strings.Count(table, "converged") != 4 { // 3 rows + the summary
		t.Errorf("status table: exit %d\n%s", code, table)
	}

	t.Run("structural changes reload one instance at a time", func(t *testing.T) {
		for i, balance := range []string{"leastconn", "source"} {
			t0 := time.Now()
			e.put("/lbtest/balance", balance)
			sts := e.waitFleet("all reloaded", func(m map[string]fleet.Report) bool {
				return len(reloadsSince(m, t0)) == 3
			})
			rs := reloadsSince(sts, t0)
			timeline(t, fmt.Sprintf("change %d: balance %s", i+1, balance), rs, t0)
			for name, list := range rs {
				if !list[0].OK || !list[0].Coordinated {
					t.Errorf("%s: %+v", name, list[0])
				}
			}
			e.waitStates("converged after the change", map[string]fleet.State{"lb1": fleet.Converged, "lb2": fleet.Converged, "lb3": fleet.Converged})
		}
		for _, l := range lbs {
			if b, _ := os.ReadFile(l.cfg); !strings.Contains(string(b), "balance source") {
				t.Errorf("%s live config:\n%s", l.name, b)
			}
		}
	})

	t.Run("a failed reload stops the wave", func(t *testing.T) {
		// lb2 and lb3 are frozen so that lb1 meets the change first:
		// its config gets "chroot /nonexistent-dir", HAProxy fails to
		// start, lb1 rolls back and publishes the failure.
		before := map[string]string{}
		for _, l := range lbs[1:] {
			b, _ := os.ReadFile(l.cfg)
			before[l.name] = string(b)
			if err := l.p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		}
		resumed := false
		resume := func() {
			if resumed {
				return
			}
			resumed = true
			for _, l := range lbs[1:] {
				_ = l.p.cmd.Process.Signal(syscall.SIGCONT)
			}
		}
		t.Cleanup(resume)
		t0 := time.Now()
		if _, err := e.cli.Txn(context.Background()).Then(
			clientv3.OpPut("/lbtest/fragile", "1"),
			clientv3.OpPut("/lbtest/balance", "leastconn"),
		).Commit(); err != nil {
			t.Fatal(err)
		}
		e.waitFleet("lb1 failed", func(m map[string]fleet.Report) bool { return m["lb1"].FailedChange != "" })
		resume()
		sts := e.waitFleet("lb2 and lb3 held: wave stopped", func(m map[string]fleet.Report) bool {
			return strings.Contains(m["lb2"].Held, "wave stopped: instance lb1") && strings.Contains(m["lb3"].Held, "wave stopped: instance lb1")
		})
		timeline(t, "failing change", reloadsSince(sts, t0), t0)
		for _, l := range lbs[1:] {
			if b, _ := os.ReadFile(l.cfg); string(b) != before[l.name] {
				t.Errorf("%s left its last good config:\n%s", l.name, b)
			}
		}
		for _, l := range lbs {
			if !serving(l) {
				t.Errorf("%s stopped serving", l.name)
			}
		}
		st := e.waitStates("failing + lagging", map[string]fleet.State{"lb1": fleet.Failing, "lb2": fleet.Lagging, "lb3": fleet.Lagging})
		if !strings.Contains(st["lb1"].Detail, "haproxy failed to start") || !strings.Contains(st["lb2"].Detail, "wave stopped: instance lb1 failed to reload this config") {
			t.Errorf("details: lb1 %q, lb2 %q", st["lb1"].Detail, st["lb2"].Detail)
		}
		table, code := e.status("table")
		t.Logf("haconfd status (exit %d):\n%s", code, table)
		if code != 1 {
			t.Errorf("status exit %d with a failing instance", code)
		}
		// For a virtual IP: the instance that failed is not a good holder,
		// one that holds the last good config on purpose is.
		wantSelf(t, "status --self on lb1 (failed, rolled back)", self(t, lbs[0].p.httpAddr(), filepath.Join(lbs[0].dir, "a.sock")), 1, "apply")
		held := self(t, lbs[1].p.httpAddr(), filepath.Join(lbs[1].dir, "a.sock"))
		wantSelf(t, "status --self on lb2 (wave stopped)", held, 0, "")
		if d := held.detail("config"); !strings.Contains(d, "held on purpose: reload held: wave stopped") {
			t.Errorf("lb2 config: %q", d)
		}

		// The fix is a new change: the wave goes on.
		t0 = time.Now()
		e.del("/lbtest/fragile")
		sts = e.waitFleet("everyone reloaded the fix", func(m map[string]fleet.Report) bool {
			rs := reloadsSince(m, t0)
			for _, n := range []string{"lb1", "lb2", "lb3"} {
				if len(rs[n]) == 0 || !rs[n][len(rs[n])-1].OK {
					return false
				}
			}
			return true
		})
		timeline(t, "fix (delete /lbtest/fragile)", reloadsSince(sts, t0), t0)
		e.waitStates("converged after the fix", map[string]fleet.State{"lb1": fleet.Converged, "lb2": fleet.Converged, "lb3": fleet.Converged})
	})

	t.Run("lagging while frozen, gone after kill -9", func(t *testing.T) {
		l3 := lbs[2]
		if err := l3.p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l3.p.cmd.Process.Signal(syscall.SIGCONT) })
		e.putAddr("db9", bs[0].Port) // a runtime change lb3 cannot see while frozen
		st := e.waitStates("lb3 lagging", map[string]fleet.State{"lb1": fleet.Converged, "lb2": fleet.Converged, "lb3": fleet.Lagging})
		t.Logf("lb3: %s", st["lb3"].Detail)
		table, _ := e.status("table")
		t.Logf("haconfd status:\n%s", table)
		if err := l3.p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		st = e.waitStates("lb3 gone", map[string]fleet.State{"lb1": fleet.Converged, "lb2": fleet.Converged, "lb3": fleet.Gone})
		table, code := e.status("table")
		t.Logf("haconfd status (exit %d):\n%s", code, table)
		if !strings.Contains(st["lb3"].Detail, "lease expired") || code != 1 {
			t.Errorf("lb3 %+v, exit %d", st["lb3"], code)
		}
	})

	t.Run("clean stop removes the instance", func(t *testing.T) {
		lbs[1].p.stop()
		e.waitStates("lb2 removed", map[string]fleet.State{"lb1": fleet.Converged, "lb3": fleet.Gone})
	})

	// Every log line names its component once (the fleet's lines said
	// component=fleet twice).
	for _, l := range lbs {
		for _, line := range strings.Split(l.p.Log(), "\n") {
			if strings.Count(line, "component=") > 1 {
				t.Errorf("%s: a log line names its component twice: %s", l.name, line)
			}
		}
	}
}

func TestFleetBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"ttl below 1s", []string{"--status-ttl", "500ms"}, "--status-ttl: must be at least 1s"},
		{"negative reloads", []string{"--max-concurrent-reloads", "-1"}, "--max-concurrent-reloads: must not be negative"},
		{"instance with a slash", []string{"--instance", "a/b"}, "--instance: \"a/b\": no slashes"},
		{"status prefix inside the watched prefix", []string{"--status-prefix", prefix + "/status"}, "--status-prefix: \"/components/galera/status\" overlaps the watched --prefix"},
		{"relative status prefix", []string{"--status-prefix", "haconfd"}, "--status-prefix: \"haconfd\" must start with /"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(haconfdBin, append([]string{"run", "--validate-config", "--output", filepath.Join(t.TempDir(), "h.cfg")}, tc.args...)...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
				t.Errorf("exit %v, output:\n%s\nwant %q", err, out, tc.want)
			}
		})
	}
	cmd := exec.Command(haconfdBin, "status", "--format", "yaml")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), `--format: "yaml" must be table or json`) {
		t.Errorf("status --format yaml: %v\n%s", err, out)
	}
}
