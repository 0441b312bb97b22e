package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/haconfd/haconfd/internal/app"
	"github.com/haconfd/haconfd/internal/testbed"
)

// Two lanes: the urgent change (a node leaving Synced or the cluster)
// never waits behind a drain, a reload, a fleet lock or a guard.

// status reads haconfd's /status.
func status(t *testing.T, addr string) app.Status {
	t.Helper()
	_, body := get(t, addr, "/status")
	var st app.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	return st
}

// events reads haconfd's /events (oldest first).
func events(t *testing.T, addr string) []app.Event {
	t.Helper()
	_, body := get(t, addr, "/events")
	var ev []app.Event
	if err := json.Unmarshal([]byte(body), &ev); err != nil {
		t.Fatalf("/events: %v\n%s", err, body)
	}
	return ev
}

// waitStatus polls /status until cond holds.
func waitStatus(t *testing.T, addr, what string, cond func(app.Status) bool) app.Status {
	t.Helper()
	var st app.Status
	if err := testbed.Poll(30*time.Second, 10*time.Millisecond, func() bool { st = status(t, addr); return cond(st) }); err != nil {
		t.Fatalf("%s: not within 30s; status %+v", what, st)
	}
	return st
}

// putJSON registers id as a JSON value with a Galera state.
func (e *env) putJSON(id string, port int, state string) {
	e.put(prefix+"/"+id, fmt.Sprintf(`{"ip":"127.0.0.1","port":%d,"state":%q}`, port, state))
}

func startBackendT(t *testing.T, id string, hold bool) *testbed.Backend {
	t.Helper()
	start := testbed.StartBackend
	if hold {
		start = testbed.StartHoldingBackend
	}
	b, err := start(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// stopsServing polls rounds of connections until none reaches id, and
// returns how long it took from since.
func (e *env) stopsServing(id string, since time.Time) time.Duration {
	e.t.Helper()
	e.eventually(id+" gets no new connection", func(m map[string]int) bool { return m[id] == 0 && m["error"] == 0 })
	return time.Since(since)
}

// A session is held on db1; db1 is removed (it drains, --drain-timeout
// 20s); 200 ms later db2 turns Donor/Desynced: db2 gets no new connection
// once its change is live, while db1 still drains. The events say so in
// that order.
func TestUrgentChangeWhileAnotherServerDrains(t *testing.T) {
	e := newEnv(t)
	db1 := startBackendT(t, "db1", true)
	db2 := startBackendT(t, "db2", false)
	db3 := startBackendT(t, "db3", false)
	for _, b := range []*testbed.Backend{db1, db2, db3} {
		e.putJSON(b.ID, b.Port, "Synced")
	}
	p := e.runTemplate(noCheckTemplate, "--drain-timeout", "20s")
	addr := p.httpAddr()
	e.eventually("three nodes serve", func(m map[string]int) bool { return m["db2"] > 0 && m["db3"] > 0 && m["error"] == 0 })
	session, err := testbed.Hold(e.front, "db1", 50)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	e.del(prefix + "/db1")
	waitStatus(t, addr, "db1 draining", func(s app.Status) bool { return slices.Contains(s.Draining, "galera/db1") })
	time.Sleep(200 * time.Millisecond) // the scenario: db2 changes 200 ms into db1's drain
	t0 := time.Now()
	e.putJSON("db2", db2.Port, "Donor/Desynced")
	st := waitStatus(t, addr, "db2's change live", func(s app.Status) bool { return s.RuntimeApplied >= s.Revision && s.Revision > 0 })
	took := e.stopsServing("db2", t0)
	if !slices.Contains(status(t, addr).Draining, "galera/db1") || db1.Open() != 1 {
		t.Fatalf("db1 no longer drains (draining %v, open sessions %d): the test did not overlap", st.Draining, db1.Open())
	}
	t.Logf("db2 out of rotation %v after its state changed, while db1 still drains", took.Round(time.Millisecond))
	_, body := get(t, addr, "/servers")
	var views []app.ServerView
	if err := json.Unmarshal([]byte(body), &views); err != nil {
		t.Fatal(err)
	}
	why := map[string]app.ServerView{}
	for _, v := range views {
		why[v.Server] = v
	}
	if v := why["db1"]; !v.Draining || len(v.Reasons) == 0 {
		t.Errorf("/servers db1 = %+v, want draining with a reason", v)
	}
	if v := why["db2"]; !v.Disabled || v.State != "Donor/Desynced" || len(v.Reasons) == 0 || !strings.Contains(v.Reasons[0], "not Synced") {
		t.Errorf("/servers db2 = %+v, want out of rotation because not Synced", v)
	}
	_ = session.Close()
	waitStatus(t, addr, "db1 drained", func(s app.Status) bool { return len(s.Draining) == 0 })
	var order []string
	for _, ev := range events(t, addr) {
		for _, s := range ev.Servers {
			if s == "galera/db1" || s == "galera/db2" {
				order = append(order, ev.Kind+" "+s)
			}
		}
	}
	want := []string{"runtime galera/db1", "runtime galera/db2", "drained galera/db1"}
	if !slices.Equal(order, want) {
		t.Fatalf("events %q, want %q", order, want)
	}
}

// Another holder has the fleet's reload lock and a change that needs a
// reload is pending; db2 turns Donor/Desynced: it is out of rotation
// before the lock frees; once it frees, one reload runs, with the newest
// render.
func TestUrgentChangeWhileReloadWaitsForFleetLock(t *testing.T) {
	e := newEnv(t)
	db1 := startBackendT(t, "db1", false)
	db2 := startBackendT(t, "db2", false)
	e.putJSON("db1", db1.Port, "Synced")
	e.putJSON("db2", db2.Port, "Synced")
	p := e.runTemplate(noCheckTemplate+"{{ if exists \"/lbtest/comment\" }}# {{ getv \"/lbtest/comment\" }}\n{{ end }}", "--wait", "20ms:200ms")
	addr := p.httpAddr()
	e.eventually("both serve", func(m map[string]int) bool { return m["db1"] > 0 && m["db2"] > 0 && m["error"] == 0 })
	pids := e.haproxyPIDs()

	// Hold slot 0 of the reload semaphore, as another instance reloading would.
	sess, err := concurrency.NewSession(e.cli, concurrency.WithTTL(30))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	lock := concurrency.NewMutex(sess, "/haconfd/instances.reload-lock/0")
	if err := lock.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	locked := true
	defer func() {
		if locked {
			_ = lock.Unlock(context.Background())
		}
	}()
	// A structural change: a new listen section.
	other, err := testbed.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	e.put("/lbtest/extra/bind", other)
	waitStatus(t, addr, "reload waiting for the lock", func(s app.Status) bool { return s.Pending != nil && s.Pending.Waiting == "fleet reload slot" })
	t0 := time.Now()
	e.putJSON("db2", db2.Port, "Donor/Desynced")
	took := e.stopsServing("db2", t0)
	if st := status(t, addr); st.Pending == nil || st.Pending.Waiting != "fleet reload slot" {
		t.Fatalf("the reload no longer waits for the lock: %+v", st.Pending)
	}
	if got := e.haproxyPIDs(); !slices.Equal(got, pids) {
		t.Fatalf("reloaded while another instance held the lock: pids %v → %v", pids, got)
	}
	t.Logf("db2 out of rotation %v after its state changed, while the reload waited for the fleet lock", took.Round(time.Millisecond))
	e.put("/lbtest/comment", "newest")
	if err := lock.Unlock(context.Background()); err != nil {
		t.Fatal(err)
	}
	locked = false
	st := waitStatus(t, addr, "reloaded", func(s app.Status) bool { return s.Applied >= s.Revision && s.Pending == nil && s.Reloads >= 2 })
	if st.Reloads != 2 { // the first start, then exactly one reload
		t.Fatalf("%d starts and reloads, want 2 (start + one reload)", st.Reloads)
	}
	live := e.live()
	for _, want := range []string{"listen extra", "# newest", "server db2 127.0.0.1:" + strconv.Itoa(db2.Port) + " disabled"} {
		if !strings.Contains(live, want) {
			t.Fatalf("the reload did not take the newest render (lacks %q):\n%s", want, live)
		}
	}
	e.eventually("db1 serves, db2 still out", func(m map[string]int) bool { return m["db1"] > 0 && m["db2"] == 0 && m["error"] == 0 })
}

// A change typed by hand on the socket (a server put in maintenance) is
// repaired at the next resync.
func TestResyncRepairsHandChanges(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 2)
	e.putAddr("db1", bs[0].Port)
	e.putAddr("db2", bs[1].Port)
	p := e.runTemplate(noCheckTemplate, "--resync", "300ms")
	addr := p.httpAddr()
	e.eventually("both serve", func(m map[string]int) bool { return m["db1"] > 0 && m["db2"] > 0 && m["error"] == 0 })
	waitStatus(t, addr, "haconfd converged", func(s app.Status) bool { return s.Applied > 0 && s.Applied >= s.Revision })
	if reply := adminCommand(t, e.sock, "set server galera/db1 state maint"); strings.TrimSpace(reply) != "" {
		t.Fatalf("set server by hand: %q", reply)
	}
	e.eventually("db1 back in rotation", func(m map[string]int) bool { return m["db1"] > 0 && m["error"] == 0 })
	p.waitLog("differs from haconfd's; repairing")
	if st := status(t, addr); st.Repairs < 1 {
		t.Fatalf("repairs = %d", st.Repairs)
	}
}

// A node registered key by key, as the seed's discovery unit does (ip,
// then port 300 ms later), under client load: it is never added with a
// guessed address, and no connection fails.
func TestKeyByKeyRegistration(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 2)
	e.putNode("db1", bs[0])
	p := e.runTemplate(noCheckTemplate, "--wait", "0")
	addr := p.httpAddr()
	e.eventually("db1 serves", func(m map[string]int) bool { return m["db1"] == 12 })
	load := startLoad(e.front, 8)
	e.put(prefix+"/db2/ip", "127.0.0.1")
	waitStatus(t, addr, "db2 known as incomplete", func(s app.Status) bool { return len(s.Incomplete) == 1 })
	time.Sleep(300 * time.Millisecond) // the discovery unit's pace
	e.put(prefix+"/db2/port", strconv.Itoa(bs[1].Port))
	e.put(prefix+"/db2/host", "db2")
	e.eventually("db2 serves", func(m map[string]int) bool { return m["db2"] > 0 })
	ok, failed, errs := load.finish()
	t.Logf("key-by-key registration under 8 clients: %d ok, %d failed %v", ok, failed, errs)
	if failed > 0 {
		t.Fatalf("%d connections failed", failed)
	}
	var adds []string
	for _, ev := range events(t, addr) {
		for _, c := range ev.Commands {
			if strings.Contains(c, "add server galera/db2") {
				adds = append(adds, c)
			}
		}
	}
	if len(adds) != 1 || strings.Contains(adds[0], "127.0.0.1:3306") {
		t.Fatalf("db2 added with a guessed port, or more than once: %q", adds)
	}
}

// SIGTERM while a removed server drains: HAProxy keeps serving; a
// restarted haconfd adopts HAProxy and the file as they are and finishes
// the removal through the runtime API, without a reload.
func TestRestartDuringDrainConvergesWithoutReload(t *testing.T) {
	e := newEnv(t)
	db1 := startBackendT(t, "db1", true)
	db2 := startBackendT(t, "db2", false)
	e.putAddr("db1", db1.Port)
	e.putAddr("db2", db2.Port)
	tmpl := filepath.Join(e.dir, "rt.tmpl")
	if err := os.WriteFile(tmpl, []byte(noCheckTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "--etcd-endpoints", strings.Join(e.etcd.Endpoints(), ","),
		"--output", e.cfgPath, "--pidfile", e.pidFile, "--runtime-socket", e.sock,
		"--bind", e.front, "--wait", "0", "--log-level", "debug", "--listen", "127.0.0.1:0",
		"--template", tmpl, "--drain-timeout", "30s"}
	p := e.start(args...)
	e.eventually("both serve", func(m map[string]int) bool { return m["db1"] > 0 && m["db2"] > 0 && m["error"] == 0 })
	pids := e.haproxyPIDs()
	session, err := testbed.Hold(e.front, "db1", 50)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	e.del(prefix + "/db1")
	waitStatus(t, p.httpAddr(), "db1 draining", func(s app.Status) bool { return slices.Contains(s.Draining, "galera/db1") })
	p.stop()
	e.eventually("HAProxy serves db2 without haconfd", func(m map[string]int) bool { return m["db2"] == 12 })

	q := e.start(args...)
	addr := q.httpAddr()
	waitStatus(t, addr, "converged after the restart", func(s app.Status) bool { return s.Applied > 0 && s.Applied >= s.Revision })
	waitStatus(t, addr, "db1 draining again", func(s app.Status) bool { return slices.Contains(s.Draining, "galera/db1") })
	_ = session.Close()
	waitStatus(t, addr, "db1 gone", func(s app.Status) bool { return len(s.Draining) == 0 })
	if reply := adminCommand(t, e.sock, "show servers state galera"); strings.Contains(reply, " db1 ") {
		t.Fatalf("db1 still in HAProxy:\n%s", reply)
	}
	if got := e.haproxyPIDs(); !slices.Equal(got, pids) || strings.Contains(q.Log(), "haproxy reloaded") {
		t.Fatalf("reloaded: pids %v → %v", pids, got)
	}
	e.killHAProxy()
}
