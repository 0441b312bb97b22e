package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/testbed"
)

// A node registered in etcd gets connections through HAProxy; a node
// removed gets none; a node whose lease is revoked disappears too.
func TestNodesAppearAndVanish(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 3)
	e.putNode("db1", bs[0])
	e.putNode("db2", bs[1])
	p := e.run("--max-remove", "1") // guards are TestGuards' business

	e.eventually("db1 and db2 serve", func(m map[string]int) bool { return m["db1"] > 0 && m["db2"] > 0 && m["error"] == 0 })
	if pids := e.haproxyPIDs(); len(pids) != 1 {
		t.Fatalf("want one haproxy process, got %v", pids)
	}

	lease := e.putNode("db3", bs[2])
	e.eventually("db3 joins", func(m map[string]int) bool { return m["db3"] > 0 && m["error"] == 0 })

	e.del(prefix+"/db1/", clientv3.WithPrefix())
	e.eventually("db1 gone", func(m map[string]int) bool { return m["db1"] == 0 && m["error"] == 0 })
	waitFileLacks(t, e.cfgPath, " db1 ")

	if _, err := e.cli.Revoke(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	e.eventually("db3 gone after lease revoke", func(m map[string]int) bool {
		return m["db3"] == 0 && m["db2"] > 0 && m["error"] == 0
	})
	p.stop()
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("haconfd exited %d on SIGTERM", code)
	}
	if pids := e.haproxyPIDs(); len(pids) != 0 {
		t.Fatalf("--stop-haproxy-on-exit left haproxy running: %v", pids)
	}
}

// A value that tries to inject a server line is skipped with a warning
// that names the key; nothing of it reaches the config.
func TestInjectedValueIsSkipped(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 1)
	e.putNode("db1", bs[0])
	e.put(prefix+"/evil/ip", "10.0.0.1\n    server evil 1.2.3.4:1")
	e.put(prefix+"/evil/port", "3306")
	p := e.run()
	e.eventually("db1 serves", func(m map[string]int) bool { return m["db1"] == 12 })
	p.waitLog(prefix + "/evil")
	if live := e.live(); strings.Contains(live, "evil") || strings.Contains(live, "1.2.3.4") {
		t.Fatalf("injected value reached the config:\n%s", live)
	}
	// Counted, and listed.
	addr := p.httpAddr()
	if _, metrics := get(t, addr, "/metrics"); !strings.Contains(metrics, "haconfd_skipped_nodes 1") {
		t.Fatalf("/metrics lacks haconfd_skipped_nodes 1")
	}
	if st := status(t, addr); len(st.Skipped) != 1 || !strings.Contains(st.Skipped[0], "/evil") {
		t.Fatalf("/status skipped_nodes = %q", st.Skipped)
	}
	// The single-writer choice is not news when --single-writer is off.
	if strings.Contains(p.Log(), `level=INFO msg="single writer"`) {
		t.Fatalf("single writer logged at info without --single-writer")
	}
}

// A template with a syntax error is reported with file:line, exits 2,
// and the live config is untouched.
func TestTemplateSyntaxError(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 1)
	e.putNode("db1", bs[0])
	p := e.run()
	e.eventually("db1 serves", func(m map[string]int) bool { return m["db1"] > 0 })
	p.stop()
	before := e.live()

	bad := filepath.Join(e.dir, "bad.tmpl")
	if err := os.WriteFile(bad, []byte("listen x\n  bind {{ .Vars.bind }}\n{{ range .Nodes }}\n  server {{ .Name }\n{{ end }}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{
		append([]string{"run"}, append(e.baseArgs(), "--template", bad)...),
		append([]string{"render"}, append(e.baseArgs(), "--template", bad)...),
	} {
		q := e.start(cmd...)
		if code := q.exited(30 * time.Second); code != 2 {
			t.Fatalf("%s with a broken template: exit %d, want 2\n%s", cmd[0], code, q.Log())
		}
		if !strings.Contains(q.Log(), "bad.tmpl:4") {
			t.Fatalf("%s: error does not name bad.tmpl:4:\n%s", cmd[0], q.Log())
		}
	}
	if after := e.live(); after != before {
		t.Fatalf("live config changed by a broken template")
	}
}

// testTemplate renders the galera section plus, driven by keys under
// /lbtest, an extra listen section and a chroot line, so that tests can
// cause structural changes from etcd.
const testTemplate = `global
    stats socket {{ .Vars.runtime_socket }} mode 660 level admin expose-fd listeners
{{- if exists "/lbtest/chroot" }}
    chroot {{ getv "/lbtest/chroot" }}
{{- end }}
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
listen galera
    bind {{ .Vars.bind }}
    balance roundrobin
{{- if exists "/lbtest/httplog" }}
    option httplog
{{- end }}
{{- range .Nodes }}
    server {{ .Name }} {{ .Addr }}
{{- end }}
{{- if exists "/lbtest/extra" }}
listen extra
    bind {{ getv "/lbtest/extra" }}
{{- range .Nodes }}
    server {{ .Name }} {{ .Addr }}
{{- end }}
{{- end }}
`

func (e *env) runWithTestTemplate() *proc {
	tmpl := filepath.Join(e.dir, "test.tmpl")
	if err := os.WriteFile(tmpl, []byte(testTemplate), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return e.run("--template", tmpl, "--prefix", prefix+",/lbtest", "--min-servers", "0")
}

// A new bind address held by another process: the change is refused
// before any reload, the live file stays, HAProxy serves throughout.
// A config that passes haproxy -c but dies after fork (missing chroot
// directory) is rolled back and HAProxy keeps serving.
func TestFailedChangesKeepServing(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 2)
	e.putNode("db1", bs[0])
	e.putNode("db2", bs[1])
	p := e.runWithTestTemplate()
	e.eventually("serving", func(m map[string]int) bool { return m["db1"] > 0 && m["db2"] > 0 && m["error"] == 0 })
	good := e.live()

	held, err := testbed.StartBackend("squatter")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	load := startLoad(e.front, 4)
	e.put("/lbtest/extra", held.Addr)
	p.waitLog("already in use")
	if e.live() != good {
		t.Fatalf("live config changed although the bind was refused")
	}
	e.del("/lbtest/extra")
	ok, failed, errs := load.finish()
	t.Logf("clients during the refused bind: %d ok, %d failed %v", ok, failed, errs)
	if failed > 0 {
		t.Fatalf("%d client connections failed during the refused bind", failed)
	}

	load = startLoad(e.front, 4)
	e.put("/lbtest/chroot", "/nonexistent-haconfd-chroot")
	p.waitLog("rolled back")
	ok, failed, errs = load.finish()
	t.Logf("clients during the start that died after fork and its rollback: %d ok, %d failed %v", ok, failed, errs)
	if e.live() != good {
		t.Fatalf("live config is not the last good one after rollback:\n%s", e.live())
	}
	e.eventually("still serving after rollback", func(m map[string]int) bool { return m["error"] == 0 })
	if failed > 0 {
		t.Fatalf("%d client connections failed during the failed start", failed)
	}

	// The next good change applies normally.
	e.del("/lbtest/chroot")
	e.del(prefix+"/db2/", clientv3.WithPrefix())
	e.eventually("next good change applies", func(m map[string]int) bool { return m["db2"] == 0 && m["db1"] > 0 })
}

// etcd unreachable at start: no config is written, haconfd says so and
// retries; when etcd comes up it applies.
func TestEtcdUnreachableAtStart(t *testing.T) {
	e := newEnv(t)
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	args := append(e.argsWith(url), "--etcd-dial-timeout", "500ms")
	p := e.start(append([]string{"run"}, args...)...)
	p.waitLog("etcd")
	if code := p.exited(2 * time.Second); code != -1 {
		t.Fatalf("haconfd exited (%d) instead of retrying:\n%s", code, p.Log())
	}
	if _, err := os.Stat(e.cfgPath); !os.IsNotExist(err) {
		t.Fatalf("a config was written while etcd was unreachable")
	}

	srv, err := etcdserver.Start(context.Background(), etcdserver.Options{Dir: t.TempDir(), ClientURL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	e.cli = e.client(srv.Endpoints())
	bs := backends(t, "db", 1)
	e.putNode("db1", bs[0])
	e.eventually("applied once etcd is up", func(m map[string]int) bool { return m["db1"] == 12 })
}

// render: prints the config, --diff exits 1 on a difference and 0 when
// the live file matches, --from-file renders offline.
func TestRenderDryRun(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 1)
	e.putNode("db1", bs[0])
	q := e.start(append([]string{"render"}, e.baseArgs()...)...)
	if code := q.exited(30 * time.Second); code != 0 {
		t.Fatalf("render exit %d:\n%s", code, q.Log())
	}
	if !strings.Contains(q.Log(), "server db1 127.0.0.1:") {
		t.Fatalf("render output lacks db1:\n%s", q.Log())
	}
	q = e.start(append([]string{"render", "--diff"}, e.baseArgs()...)...)
	if code := q.exited(30 * time.Second); code != 1 {
		t.Fatalf("render --diff with no live file: exit %d, want 1:\n%s", code, q.Log())
	}
	p := e.run()
	e.eventually("serving", func(m map[string]int) bool { return m["db1"] == 12 })
	p.stop()
	q = e.start(append([]string{"render", "--diff"}, e.baseArgs()...)...)
	if code := q.exited(30 * time.Second); code != 0 {
		t.Fatalf("render --diff against the file haconfd wrote: exit %d, want 0:\n%s", code, q.Log())
	}

	snap := filepath.Join(e.dir, "snap.json")
	if err := os.WriteFile(snap, []byte(`{"revision":7,"kvs":[{"key":"/components/galera/n1","value":"10.1.2.3:3307"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	q = e.start(append([]string{"render", "--diff", "--from-file", snap}, e.baseArgs()...)...)
	if code := q.exited(30 * time.Second); code != 1 || !strings.Contains(q.Log(), "+    server n1 10.1.2.3:3307") {
		t.Fatalf("render --from-file --diff: exit %d:\n%s", code, q.Log())
	}
}

// What haproxy -c warns about a config that goes live (here an option
// that does not fit a TCP section) is logged and shown in /status, and
// cleared when a config without it goes live.
func TestHAProxyWarningsSurface(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 1)
	e.putNode("db1", bs[0])
	p := e.runWithTestTemplate()
	e.eventually("serving", func(m map[string]int) bool { return m["db1"] > 0 && m["error"] == 0 })
	addr := p.httpAddr()
	if w := status(t, addr).HAProxy.Warnings; len(w) != 0 {
		t.Fatalf("warnings before: %q", w)
	}
	e.put("/lbtest/httplog", "on")
	p.waitLog("haproxy -c warns about the live config")
	testbed.Eventually(t, 10*time.Second, "the warning in /status", func() bool {
		w := status(t, addr).HAProxy.Warnings
		return len(w) > 0 && strings.Contains(w[0], "'option httplog' not usable") && strings.Contains(w[0], "haproxy.cfg:")
	})
	e.del("/lbtest/httplog")
	testbed.Eventually(t, 10*time.Second, "no warning in /status", func() bool {
		return len(status(t, addr).HAProxy.Warnings) == 0
	})
}
