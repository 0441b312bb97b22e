package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/internal/testbed"
)

// noCheckTemplate is testbed.NoCheckTemplate plus a listen section that
// /lbtest/extra/bind switches on (a structural change).
const noCheckTemplate = testbed.NoCheckTemplate + `{{- if exists "/lbtest/extra/bind" }}
listen extra
    bind {{ getv "/lbtest/extra/bind" }}
{{- range .Nodes }}
    server {{ .Name }} {{ .Addr }}
{{- end }}
{{- end }}
`

func (e *env) runTemplate(text string, extra ...string) *proc {
	e.t.Helper()
	tmpl := filepath.Join(e.dir, "rt.tmpl")
	if err := os.WriteFile(tmpl, []byte(text), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return e.run(append([]string{"--template", tmpl, "--prefix", prefix + ",/lbtest", "--wait", "0", "--drain-timeout", "1s"}, extra...)...)
}

// putAddr registers id as a value-style node ip:port.
func (e *env) putAddr(id string, port int) {
	e.put(prefix+"/"+id, "127.0.0.1:"+strconv.Itoa(port))
}

// Membership churn (add, remove, move to a new port, drain and back)
// every 300-500 ms under 32 concurrent clients: no failed connection and
// no HAProxy process started.
func TestChurnThroughRuntimeAPI(t *testing.T) {
	e := newEnv(t)
	const n = 6
	bs := backends(t, "db", n)
	alt := backends(t, "db", n) // the same ids on a second port, for moves
	for i := 0; i < 3; i++ {
		e.putAddr(bs[i].ID, bs[i].Port)
	}
	p := e.runTemplate(noCheckTemplate)
	e.eventually("3 serving", func(m map[string]int) bool { return len(m) == 3 && m["error"] == 0 })
	pids := e.haproxyPIDs()

	load := startLoad(e.front, 32)
	deadline := time.Now().Add(15 * time.Second)
	steps := 0
	moved := map[int]bool{}
	for i := 0; time.Now().Before(deadline); i++ {
		k := i % n
		id := bs[k].ID
		switch i % 4 {
		case 0: // add (or move back)
			e.putAddr(id, bs[k].Port)
			moved[k] = false
		case 1: // move to a new port
			e.putAddr(id, alt[k].Port)
			moved[k] = true
		case 2: // drain: state not Synced
			port := bs[k].Port
			if moved[k] {
				port = alt[k].Port
			}
			e.put(prefix+"/"+id, fmt.Sprintf(`{"ip":"127.0.0.1","port":%d,"state":"Donor/Desynced"}`, port))
		case 3: // remove, unless it would leave fewer than 2
			if i%8 == 3 {
				e.del(prefix + "/" + id)
			} else {
				e.putAddr(id, bs[k].Port)
			}
		}
		steps++
		time.Sleep(time.Duration(300+(i*37)%200) * time.Millisecond)
	}
	ok, failed, errs := load.finish()
	after := e.haproxyPIDs()
	log := p.Log()
	t.Logf("churn: %d membership changes in 15 s, 32 clients: %d ok, %d failed %v; runtime applies %d, reloads %d; haproxy pids before %v after %v",
		steps, ok, failed, errs, strings.Count(log, "action=runtime"), strings.Count(log, "action=reload"), pids, after)
	if failed > 0 {
		t.Fatalf("%d client connections failed during membership churn", failed)
	}
	if !slices.Equal(pids, after) || strings.Contains(log, "action=reload") || countApplies(log) != strings.Count(log, "action=runtime")+1 {
		t.Fatalf("HAProxy processes were started for membership churn: pids %v → %v", pids, after)
	}
	if strings.Count(log, "action=runtime") < steps/2 {
		t.Fatalf("only %d runtime applies for %d changes", strings.Count(log, "action=runtime"), steps)
	}
}

// A structural change (a listen section added, then removed) under the
// same load: a hitless reload, no failed connection.
func TestStructuralChangeUnderLoad(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 2)
	e.putAddr("db1", bs[0].Port)
	e.putAddr("db2", bs[1].Port)
	p := e.runTemplate(noCheckTemplate)
	e.eventually("serving", func(m map[string]int) bool { return m["db1"] > 0 && m["db2"] > 0 })
	extra, err := testbed.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	load := startLoad(e.front, 32)
	for i := 0; i < 3; i++ {
		e.put("/lbtest/extra/bind", extra)
		if err := testbed.Poll(30*time.Second, 20*time.Millisecond, func() bool {
			_, err := testbed.Ask(extra, time.Second)
			return err == nil
		}); err != nil {
			t.Fatalf("the added listen section never answered")
		}
		e.del("/lbtest/extra/bind")
		waitFileLacks(t, e.cfgPath, "listen extra")
		time.Sleep(400 * time.Millisecond)
	}
	ok, failed, errs := load.finish()
	t.Logf("3× listen section added and removed under 32 clients: %d ok, %d failed %v; reloads %d",
		ok, failed, errs, strings.Count(p.Log(), "action=reload"))
	if failed > 0 {
		t.Fatalf("%d client connections failed during reloads", failed)
	}
}

// slotsTemplate serves a static-rr backend (which refuses dynamic
// servers) from four pre-provisioned slots: a free slot is a disabled
// placeholder, filled and freed through the runtime API.
const slotsTemplate = `global
    stats socket {{ .Vars.runtime_socket }} mode 660 level admin expose-fd listeners
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
listen galera
    bind {{ .Vars.bind }}
    balance static-rr
{{- $nodes := .Nodes }}
{{- range $i := seq 0 3 }}
{{- if lt $i (len $nodes) }}{{ with index $nodes $i }}
    server slot{{ $i }} {{ .Addr }}
{{- end }}{{ else }}
    server slot{{ $i }} 127.0.0.1:1 disabled
{{- end }}
{{- end }}
`

func TestStaticRRSlots(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 4)
	e.putAddr("db1", bs[0].Port)
	p := e.runTemplate(slotsTemplate)
	e.eventually("db1 serves", func(m map[string]int) bool { return m["db1"] == 12 })
	pids := e.haproxyPIDs()
	for _, b := range bs[1:] {
		e.putAddr(b.ID, b.Port)
	}
	e.eventually("scaled up to 4", func(m map[string]int) bool { return len(m) == 4 && m["error"] == 0 })
	e.del(prefix+"/db3", clientv3.WithPrefix())
	e.del(prefix+"/db4", clientv3.WithPrefix())
	e.eventually("scaled down to 2", func(m map[string]int) bool { return len(m) == 2 && m["db1"] > 0 && m["db2"] > 0 })
	if after := e.haproxyPIDs(); !slices.Equal(pids, after) || strings.Contains(p.Log(), "action=reload") {
		t.Fatalf("static-rr scaling reloaded HAProxy: %v → %v", pids, after)
	}
}

// A server added by hand on the socket under a name haconfd wants, at
// the wrong address, is moved where etcd says through the runtime API:
// the fast lane starts from HAProxy's live state, not from the file.
func TestHandAddedServerIsRepaired(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 2)
	e.putAddr("db1", bs[0].Port)
	p := e.runTemplate(noCheckTemplate)
	e.eventually("db1 serves", func(m map[string]int) bool { return m["db1"] == 12 })
	pids := e.haproxyPIDs()
	if reply := adminCommand(t, e.sock, "add server galera/db2 127.0.0.1:1"); !strings.Contains(reply, "New server registered") {
		t.Fatalf("manual add server: %q", reply)
	}
	e.putAddr("db2", bs[1].Port)
	e.eventually("db2 serves at its registered port", func(m map[string]int) bool { return m["db1"] > 0 && m["db2"] > 0 && m["error"] == 0 })
	if after := e.haproxyPIDs(); !slices.Equal(pids, after) || strings.Contains(p.Log(), "action=reload") {
		t.Fatalf("reloaded: pids %v → %v", pids, after)
	}
}

func adminCommand(t *testing.T, sock, cmd string) string {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// render --plan shows the runtime commands for a membership change and
// "reload" with the reason for a structural one.
func TestRenderPlan(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 5)
	e.putAddr("db1", bs[0].Port)
	p := e.runTemplate(noCheckTemplate)
	e.eventually("db1 serves", func(m map[string]int) bool { return m["db1"] == 12 })
	p.stop()
	args := append([]string{"render", "--plan", "--template", filepath.Join(e.dir, "rt.tmpl"), "--prefix", prefix + ",/lbtest"}, e.baseArgs()...)
	q := e.start(args...)
	if code := q.exited(30 * time.Second); code != 0 || !strings.Contains(q.Log(), "nothing to do") {
		t.Fatalf("plan with nothing to do: exit %d\n%s", code, q.Log())
	}
	e.putAddr("db2", bs[1].Port)
	q = e.start(args...)
	if code := q.exited(30 * time.Second); code != 1 || !strings.Contains(q.Log(), "add server galera/db2 127.0.0.1:"+strconv.Itoa(bs[1].Port)) {
		t.Fatalf("plan for an added node: exit %d\n%s", code, q.Log())
	}
	e.put("/lbtest/extra/bind", "127.0.0.1:1")
	q = e.start(append(args, "--format", "json")...)
	if code := q.exited(30 * time.Second); code != 1 || !strings.Contains(q.Log(), `"reload": true`) || !strings.Contains(q.Log(), "listen extra") {
		t.Fatalf("plan for a structural change: exit %d\n%s", code, q.Log())
	}
	e.del("/lbtest/extra/bind")

	// 4 servers live, 3 of them gone from etcd: the plan says which removal
	// the guards would hold (--max-remove 0.5: 2 go, 1 stays).
	for i := 2; i <= 4; i++ {
		e.putAddr(fmt.Sprintf("db%d", i), bs[i-1].Port)
	}
	p = e.runTemplate(noCheckTemplate)
	e.eventually("4 serve", func(m map[string]int) bool { return len(m) == 4 && m["error"] == 0 })
	p.stop()
	for i := 2; i <= 4; i++ {
		e.del(fmt.Sprintf("%s/db%d", prefix, i))
	}
	q = e.start(append(args, "--max-remove", "0.5")...)
	if code := q.exited(30 * time.Second); code != 1 || !strings.Contains(q.Log(), "held: galera/db4 stays configured (max_remove:") ||
		!strings.Contains(q.Log(), "del server galera/db2") || !strings.Contains(q.Log(), "del server galera/db3") || strings.Contains(q.Log(), "server galera/db4 state") {
		t.Fatalf("plan with a held removal: exit %d\n%s", code, q.Log())
	}
	q = e.start(append(args, "--max-remove", "0.5", "--format", "json")...)
	if code := q.exited(30 * time.Second); code != 1 || !strings.Contains(q.Log(), `"guard": "max_remove"`) {
		t.Fatalf("json plan with a held removal: exit %d\n%s", code, q.Log())
	}
}

func waitFileLacks(t *testing.T, path, substr string) {
	t.Helper()
	if err := testbed.Poll(30*time.Second, 20*time.Millisecond, func() bool {
		b, _ := os.ReadFile(path)
		return !strings.Contains(string(b), substr)
	}); err != nil {
		t.Fatalf("%s still contains %q", path, substr)
	}
}
