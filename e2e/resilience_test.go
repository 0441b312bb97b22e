package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
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

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/testbed"
)

// Guards hold single servers, never a render: when more than
// --max-remove of a section's servers leave within --guard-hold, the
// removals beyond the share are held (the servers stay configured) and
// released after --guard-hold; every other change goes live meanwhile.
// The last server of a section is kept (--min-servers), not released by
// time, until another one is back.
func TestGuardsHoldServers(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 5)
	for i, b := range bs[:4] {
		e.putNode(fmt.Sprintf("db%d", i+1), b)
	}
	p := e.run("--max-remove", "0.5", "--guard-hold", "1500ms")
	addr := p.httpAddr()
	e.eventually("4 nodes serve", func(m map[string]int) bool { return len(m) == 4 && m["error"] == 0 })

	// 3 of 4 removed at once: 2 go, db4 is held.
	if _, err := e.cli.Txn(context.Background()).Then(
		clientv3.OpDelete(prefix+"/db2/", clientv3.WithPrefix()),
		clientv3.OpDelete(prefix+"/db3/", clientv3.WithPrefix()),
		clientv3.OpDelete(prefix+"/db4/", clientv3.WithPrefix()),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	p.waitLog("more than --max-remove 0.5")
	e.eventually("db2 and db3 gone, db4 held", func(m map[string]int) bool {
		return m["db2"] == 0 && m["db3"] == 0 && m["db1"] > 0 && m["db4"] > 0 && m["error"] == 0
	})
	var st struct {
		Held        string `json:"held"`
		Holds       int    `json:"holds"`
		HeldServers []struct {
			Section, Server, Guard, Reason string
		} `json:"held_servers"`
	}
	_, body := get(t, addr, "/status")
	if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.HeldServers) != 1 || st.HeldServers[0].Server != "db4" ||
		st.HeldServers[0].Guard != "max_remove" || st.Holds < 1 {
		t.Fatalf("/status while held: %v %s", err, body)
	}
	if err := testbed.Poll(10*time.Second, 20*time.Millisecond, func() bool {
		code, body := get(t, addr, "/readyz")
		return code == 200 && strings.Contains(body, "galera/db4")
	}); err != nil {
		code, body := get(t, addr, "/readyz")
		t.Fatalf("/readyz while db4 is held: %d %s", code, body)
	}
	if !strings.Contains(e.live(), "server db4 ") {
		t.Fatalf("held server not in the live file:\n%s", e.live())
	}
	// An add goes live during the hold.
	e.putNode("db5", bs[4])
	e.eventually("db5 served during the hold", func(m map[string]int) bool { return m["db5"] > 0 })
	p.waitLog("held server released")
	e.eventually("db4 gone after --guard-hold", func(m map[string]int) bool { return m["db4"] == 0 && m["db1"] > 0 && m["db5"] > 0 && m["error"] == 0 })

	// The last servers gone: one is kept, and not released by time.
	if _, err := e.cli.Txn(context.Background()).Then(
		clientv3.OpDelete(prefix+"/db1/", clientv3.WithPrefix()),
		clientv3.OpDelete(prefix+"/db5/", clientv3.WithPrefix()),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	p.waitLog("fewer than --min-servers 1")
	time.Sleep(2 * time.Second) // longer than --guard-hold: must stay held
	if live := e.live(); !strings.Contains(live, "server db1 ") && !strings.Contains(live, "server db5 ") {
		t.Fatalf("an empty section went live:\n%s", live)
	}
	e.eventually("still served", func(m map[string]int) bool { return m["db1"]+m["db5"] == 12 })
	_, metrics := get(t, addr, "/metrics")
	for _, want := range []string{`haconfd_guard_holds_total{guard="max_remove"}`, `haconfd_guard_holds_total{guard="min_servers"}`, `haconfd_held_servers{guard="min_servers",section="galera"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("/metrics lacks %q", want)
		}
	}
	e.putNode("db2", bs[1])
	e.eventually("db2 back, the kept one released", func(m map[string]int) bool { return m["db2"] == 12 })
}

// /healthz, /readyz, /status and /metrics answer with what haconfd did.
func TestHealthAndMetrics(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 2)
	e.putNode("db1", bs[0])
	e.putNode("db2", bs[1])
	p := e.run()
	addr := p.httpAddr()
	e.eventually("serving", func(m map[string]int) bool { return m["db1"] > 0 && m["db2"] > 0 })
	if st, err := os.Stat(e.sock); err != nil || st.Mode().Perm() != 0o660 {
		t.Fatalf("runtime socket %s: mode %v (err %v), want 0660", e.sock, st.Mode().Perm(), err)
	}
	if code, body := get(t, addr, "/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz %d %q", code, body)
	}
	if err := testbed.Poll(10*time.Second, 20*time.Millisecond, func() bool { c, _ := get(t, addr, "/readyz"); return c == 200 }); err != nil {
		t.Fatalf("/readyz never 200")
	}
	var st struct {
		Revision, Applied int64
		LastAction        string `json:"last_action"`
		Servers           int
		EtcdConnected     bool `json:"etcd_connected"`
	}
	_, body := get(t, addr, "/status")
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Applied == 0 || st.Applied != st.Revision || st.Servers != 2 || !st.EtcdConnected {
		t.Fatalf("/status: %v %s", err, body)
	}
	_, metrics := get(t, addr, "/metrics")
	for _, want := range []string{
		`haconfd_applies_total{method="start",result="ok"} 1`,
		`haconfd_starts_total 1`,
		`haconfd_reloads_total 0`,
		`haconfd_etcd_connected 1`,
		fmt.Sprintf("haconfd_last_applied_revision %d", st.Applied),
		`haconfd_servers{section="galera",state="unknown"} 2`,
		`haconfd_render_duration_seconds_count`,
		`haconfd_apply_duration_seconds_count{method="start"} 1`,
		`haconfd_rollbacks_total 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("/metrics lacks %q", want)
		}
	}
}

// A template edited on disk is picked up; a broken edit is reported with
// file:line and the last good template stays in force; SIGHUP re-reads.
func TestTemplateHotReload(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 1)
	e.putNode("db1", bs[0])
	tmpl := filepath.Join(e.dir, "t.tmpl")
	write := func(balance string) {
		txt := strings.Replace(testTemplate, "balance roundrobin", "balance "+balance, 1)
		if err := os.WriteFile(tmpl+".new", []byte(txt), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmpl+".new", tmpl); err != nil { // as editors and ConfigMaps do
			t.Fatal(err)
		}
	}
	write("roundrobin")
	p := e.run("--template", tmpl)
	e.eventually("serving", func(m map[string]int) bool { return m["db1"] == 12 })

	write("leastconn")
	waitFile(t, e.cfgPath, "balance leastconn")

	good := e.live()
	if err := os.WriteFile(tmpl, []byte("global\n{{ if }}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.waitLog("t.tmpl:2")
	p.waitLog("last good ones stay in force")
	if e.live() != good {
		t.Fatalf("broken template changed the live config")
	}
	e.eventually("still serving", func(m map[string]int) bool { return m["db1"] == 12 })

	write("first")
	waitFile(t, e.cfgPath, "balance first")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog("why=SIGHUP")
}

// A burst of 200 changes is applied at most twice (quiescence), and the
// final state is the last one written.
func TestBurstOfChanges(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 1)
	e.putNode("db1", bs[0])
	p := e.run("--wait", "300ms:5s")
	e.eventually("serving", func(m map[string]int) bool { return m["db1"] == 12 })
	before := countApplies(p.Log())
	// Servers that refuse: one closed port on 127.0.0.1. (An outside address
	// is no good: some networks accept any SYN, and the health checks pass.)
	closed, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		e.put(fmt.Sprintf("%s/s%03d", prefix, i), fmt.Sprintf("127.0.0.1:%d", closed))
	}
	waitFile(t, e.cfgPath, fmt.Sprintf("server s199 127.0.0.1:%d", closed))
	e.eventually("still serving", func(m map[string]int) bool { return m["db1"] > 0 && m["error"] == 0 })
	applies := countApplies(p.Log()) - before
	t.Logf("200 changes → %d applies", applies)
	if applies > 2 {
		t.Fatalf("200 changes caused %d applies, want at most 2", applies)
	}
}

// haconfd killed with SIGKILL at random points of many applies never
// leaves a partial or invalid config file, and HAProxy keeps serving.
func TestKillDuringApplies(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 2)
	e.putNode("db1", bs[0])
	rng := rand.New(rand.NewPCG(1, 2))
	var load *loader
	for round := 0; round < 8; round++ {
		p := e.run("--wait", "0")
		if round == 0 {
			e.eventually("serving", func(m map[string]int) bool { return m["db1"] > 0 })
			load = startLoad(e.front, 2)
		}
		// Changes keep coming while haconfd applies them.
		stop := make(chan struct{})
		done := make(chan struct{})
		jitter := rand.New(rand.NewPCG(uint64(round), 3))
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("%s/k%d", prefix, i%5)
				if _, err := e.cli.Put(context.Background(), key, fmt.Sprintf("127.0.0.1:%d", bs[1].Port)); err != nil {
					return
				}
				time.Sleep(time.Duration(20+jitter.IntN(40)) * time.Millisecond)
				_, _ = e.cli.Delete(context.Background(), key)
			}
		}()
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		_ = p.cmd.Process.Kill()
		<-p.done
		close(stop)
		<-done
		live := e.live()
		if live == "" || !strings.HasSuffix(live, "\n") || !strings.Contains(live, "listen galera") {
			t.Fatalf("round %d: config file incomplete after SIGKILL:\n%s", round, live)
		}
		if out, err := exec.Command(haproxyBin, "-c", "-q", "-f", e.cfgPath).CombinedOutput(); err != nil {
			t.Fatalf("round %d: config left by a killed haconfd is invalid: %v\n%s", round, err, out)
		}
		matches, _ := filepath.Glob(filepath.Join(e.dir, ".haconfd-stage-*"))
		if round == 7 && len(matches) > 0 {
			t.Logf("stage files left by SIGKILL (harmless, never the live file): %v", matches)
		}
	}
	e.run("--wait", "0")
	e.eventually("serving after the kills", func(m map[string]int) bool { return m["db1"] > 0 && m["error"] == 0 })
	ok, failed, errs := load.finish()
	// A haconfd killed between starting a new HAProxy and stopping the old
	// one leaves both running; its successor stops the old ones.
	var procs []int
	if err := testbed.Poll(20*time.Second, 50*time.Millisecond, func() bool {
		procs = haproxyProcs(e.cfgPath)
		return len(procs) == 1
	}); err != nil {
		t.Fatalf("HAProxy processes left running on %s after the kills: %v", e.cfgPath, procs)
	}
	t.Logf("clients during 8 SIGKILLs of haconfd: %d ok, %d failed %v", ok, failed, errs)
	if failed > 0 {
		t.Fatalf("%d client connections failed while haconfd was being killed", failed)
	}
}

// SIGTERM ends haconfd cleanly (exit 0) and leaves HAProxy serving the
// last good config; a new haconfd takes over the running HAProxy without
// starting another one.
func TestSIGTERMLeavesHAProxyServing(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 1)
	e.putNode("db1", bs[0])
	var args []string
	for _, a := range e.baseArgs() {
		if a != "--stop-haproxy-on-exit" {
			args = append(args, a)
		}
	}
	p := e.start(append([]string{"run"}, args...)...)
	e.eventually("serving", func(m map[string]int) bool { return m["db1"] == 12 })
	pids := e.haproxyPIDs()
	load := startLoad(e.front, 4)
	p.stop()
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d on SIGTERM", code)
	}
	e.eventually("HAProxy serves without haconfd", func(m map[string]int) bool { return m["db1"] == 12 })
	q := e.start(append([]string{"run"}, args...)...)
	q.waitLog(`msg="config live"`)
	ok, failed, _ := load.finish()
	if failed > 0 {
		t.Fatalf("%d of %d connections failed across haconfd's stop and restart", failed, ok+failed)
	}
	if after := e.haproxyPIDs(); len(after) != 1 || after[0] != pids[0] {
		t.Fatalf("HAProxy pids %v → %v: the restarted haconfd did not take over the running HAProxy", pids, after)
	}
}

// haproxyProcs lists the live haproxy processes started on config.
func haproxyProcs(config string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil || !haproxy.Alive(pid) {
			continue
		}
		b, err := os.ReadFile("/proc/" + en.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.Contains(filepath.Base(args[0]), "haproxy") && slices.Contains(args, config) {
			pids = append(pids, pid)
		}
	}
	return pids
}
