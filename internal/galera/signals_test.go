package galera

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/internal/etcdtest"
	"github.com/haconfd/haconfd/render/node"
)

func readNode(t *testing.T, cli *clientv3.Client) (node.Node, string) {
	vals, _ := kvs(t, cli, testPrefix)
	nodes, problems := node.Parse(testPrefix, vals)
	if len(problems) > 0 || len(nodes) != 1 {
		return node.Node{}, fmt.Sprintf("%v %v", vals, problems)
	}
	return nodes[0], fmt.Sprintf("%+v", nodes[0])
}

// Every signal haconfd routes on is published, and changes of the
// discrete ones go out at once; priority and check port with the
// registration.
func TestRegisterSignals(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	fake := &fakeStatus{}
	synced := Wsrep{State: 4, Comment: "Synced", Index: 1, Ready: "ON", ClusterStatus: "Primary", RecvQueue: "0",
		FlowControlPaused: "0.000000", Desync: "OFF", RejectQueries: "NONE", DonorRejectsQueries: "OFF"}
	fake.set(synced, nil)
	opts := dirOpts("db1", "10.0.0.1")
	opts.Wsrep = fake
	opts.StatePoll = 20 * time.Millisecond
	opts.Priority = "3"
	opts.CheckPort = 9201
	start(t, cli, opts)
	waitFor(t, "first registration", func() (bool, string) {
		n, got := readNode(t, cli)
		return n.Ready == "ON" && n.ClusterStatus == "Primary" && n.RejectQueries == "NONE" && n.Priority == 3 && n.CheckPort == 9201 &&
			n.RecvQueueSet && n.RecvQueue == 0 && n.FlowControlPaused == "0.00" && !n.ReadOnly, got
	})
	for _, step := range []struct {
		name string
		mod  func(*Wsrep)
		want func(node.Node) bool
	}{
		{"reject queries", func(w *Wsrep) { w.RejectQueries = "ALL" }, func(n node.Node) bool { return n.RejectQueries == "ALL" }},
		{"read only", func(w *Wsrep) { w.ReadOnly = true }, func(n node.Node) bool { return n.ReadOnly }},
		{"not ready", func(w *Wsrep) { w.Ready = "OFF" }, func(n node.Node) bool { return n.Ready == "OFF" }},
		{"non-Primary", func(w *Wsrep) { w.ClusterStatus = "non-Primary" }, func(n node.Node) bool { return n.ClusterStatus == "non-Primary" }},
		{"maintenance (Percona)", func(w *Wsrep) { w.MaintMode = "MAINTENANCE" }, func(n node.Node) bool { return n.MaintMode == "MAINTENANCE" }},
		{"donor rejects queries", func(w *Wsrep) { w.DonorRejectsQueries = "ON" }, func(n node.Node) bool { return n.DonorRejectsQueries == "ON" }},
		{"desync", func(w *Wsrep) { w.Desync = "ON"; w.State, w.Comment = 2, "Donor/Desynced" },
			func(n node.Node) bool { return n.Desync == "ON" && n.State == "Donor/Desynced" }},
		{"an unreadable value is not published", func(w *Wsrep) { w.Ready = "PERHAPS" }, func(n node.Node) bool { return n.Ready == "" && len(n.Bad) == 0 }},
	} {
		st := synced
		step.mod(&st)
		fake.set(st, nil)
		began := time.Now()
		waitFor(t, step.name, func() (bool, string) {
			n, got := readNode(t, cli)
			return step.want(n), got
		})
		t.Logf("%s: published after %s", step.name, time.Since(began).Round(time.Millisecond))
	}
}

// The recv queue published is the smallest over the last second: a burst
// is not published, a queue that stays high is, and a drop shows at once.
func TestRegisterRecvQueueWindow(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	fake := &fakeStatus{}
	st := Wsrep{State: 4, Comment: "Synced", Index: 0, RecvQueue: "0"}
	fake.set(st, nil)
	opts := dirOpts("db1", "10.0.0.1")
	opts.Wsrep = fake
	opts.StatePoll = 20 * time.Millisecond
	start(t, cli, opts)
	waitFor(t, "registered", func() (bool, string) { n, got := readNode(t, cli); return n.RecvQueueSet, got })
	// A burst shorter than the window.
	st.RecvQueue = "5000"
	fake.set(st, nil)
	holds(t, "a 300ms burst is not published", 300*time.Millisecond, func() (bool, string) {
		n, got := readNode(t, cli)
		return n.RecvQueue == 0, got
	})
	st.RecvQueue = "0"
	fake.set(st, nil)
	time.Sleep(100 * time.Millisecond) // let a 0 reading into the window
	st.RecvQueue = "5000"
	fake.set(st, nil)
	began := time.Now()
	waitFor(t, "a queue that stays high", func() (bool, string) { n, got := readNode(t, cli); return n.RecvQueue == 5000, got })
	if d := time.Since(began); d < recvWindow {
		t.Fatalf("published after %s, before the %s window", d, recvWindow)
	}
	st.RecvQueue = "0"
	fake.set(st, nil)
	began = time.Now()
	waitFor(t, "the drop", func() (bool, string) { n, got := readNode(t, cli); return n.RecvQueue == 0, got })
	t.Logf("drop published after %s", time.Since(began).Round(time.Millisecond))
}

func TestRecvWindowMin(t *testing.T) {
	var w recvWindowMin
	t0 := time.Unix(0, 0)
	for _, s := range []struct {
		at   time.Duration
		v    string
		want string
	}{
		{0, "10", "10"},
		{200 * time.Millisecond, "50", "10"},
		{900 * time.Millisecond, "70", "10"},
		{1100 * time.Millisecond, "80", "50"}, // the 10 left the window
		{1150 * time.Millisecond, "", ""},     // unreadable: cleared
		{1200 * time.Millisecond, "90", "90"},
	} {
		if got := w.add(t0.Add(s.at), s.v); got != s.want {
			t.Fatalf("at %s add %q: %q, want %q", s.at, s.v, got, s.want)
		}
	}
}

func TestDrainUndrain(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, testPrefix+"/db1/ip", "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, testPrefix+"/db1/port", "3306"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, testPrefix+"/db10", "10.0.0.10:3306"); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	res, err := Drain(ctx, cli, testPrefix, "db1", "alice@lb1", "kernel update", false, now)
	if err != nil || !res.Changed || res.Key != testPrefix+"/db1/drain" {
		t.Fatalf("drain: %+v %v", res, err)
	}
	vals, leases := kvs(t, cli, testPrefix)
	var d node.AdminDrain
	if err := json.Unmarshal([]byte(vals[res.Key]), &d); err != nil || d.By != "alice@lb1" || d.Reason != "kernel update" || d.Since != "2026-01-02T03:04:05Z" || leases[res.Key] != 0 {
		t.Fatalf("drain key %q lease %d: %v", vals[res.Key], leases[res.Key], err)
	}
	nodes, problems := node.Parse(testPrefix, vals)
	if len(nodes) != 2 || len(problems) != 0 {
		t.Fatalf("nodes %+v problems %v", nodes, problems)
	}
	node.Decide(nodes, node.Memory{}, node.Policy{})
	if nodes[0].ID != "db1" || nodes[0].InRotation || !strings.Contains(strings.Join(nodes[0].Reasons, ";"), "by alice@lb1 since 2026-01-02T03:04:05Z: kernel update") {
		t.Fatalf("db1 %+v", nodes[0])
	}
	if res, err := Drain(ctx, cli, testPrefix, "db1", "bob", "again", false, now); err != nil || res.Changed {
		t.Fatalf("second drain: %+v %v", res, err)
	}
	for _, bad := range []struct{ id, reason, want string }{
		{"db2", "x", `node "db2" under /components/galera: not registered (registered: db1, db10)`},
		{"a/b", "x", "not a node id"},
		{"db 1", "x", "not a node id"},
		{"db1", " ", "--reason"},
	} {
		_, err := Drain(ctx, cli, testPrefix, bad.id, "x", bad.reason, false, now)
		if err == nil || !strings.Contains(err.Error(), bad.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("drain %q %q: %v, want one line with %q", bad.id, bad.reason, err, bad.want)
		}
	}
	if _, err := Drain(ctx, cli, testPrefix, "db2", "x", "pre-drain", true, now); err != nil {
		t.Fatalf("forced drain of an unregistered node: %v", err)
	}
	res, err = Undrain(ctx, cli, testPrefix, "db1")
	if err != nil || !res.Changed || res.Drain.By != "bob" {
		t.Fatalf("undrain: %+v %v", res, err)
	}
	if res, err := Undrain(ctx, cli, testPrefix, "db1"); err != nil || res.Changed {
		t.Fatalf("second undrain: %+v %v", res, err)
	}
}

func TestNotify(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// Not registered: nothing written.
	res, err := Notify(ctx, cli, testPrefix, "db1", NotifyArgs{Status: "synced"}, now)
	if err != nil || res.Wrote {
		t.Fatalf("unregistered: %+v %v", res, err)
	}
	lease, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, testPrefix+"/db1/ip", "10.0.0.1", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, testPrefix+"/db1/port", "3306", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	// A view change, then a status change alone keeps the view.
	view := NotifyArgs{Status: "synced", UUID: "cluster-uuid", Primary: "yes", Index: "1",
		Members: "1111-aaaa/db0/10.0.0.0:3306,2222-bbbb/db1/10.0.0.1:3306"}
	if res, err = Notify(ctx, cli, testPrefix, "db1", view, now); err != nil || !res.Wrote {
		t.Fatalf("view: %+v %v", res, err)
	}
	if res, err = Notify(ctx, cli, testPrefix, "db1", NotifyArgs{Status: "Donor"}, now); err != nil {
		t.Fatal(err)
	}
	vals, leases := kvs(t, cli, testPrefix)
	key := testPrefix + "/db1/wsrep_notify"
	if leases[key] != int64(lease.ID) {
		t.Fatalf("the record is not on the registration's lease: %d, want %d", leases[key], lease.ID)
	}
	nodes, problems := node.Parse(testPrefix, vals)
	if len(problems) != 0 || len(nodes) != 1 || nodes[0].Notify == nil {
		t.Fatalf("nodes %+v problems %v", nodes, problems)
	}
	r := nodes[0].Notify
	self, ok := r.Self()
	if r.Status != "donor" || r.Primary == nil || !*r.Primary || r.Cluster != "cluster-uuid" || !ok || self.UUID != "2222-bbbb" || self.Addr != "10.0.0.1:3306" {
		t.Fatalf("record %+v self %+v", r, self)
	}
	for _, bad := range []NotifyArgs{
		{Primary: "maybe"}, {Index: "x", Members: "a/b/c"}, {Members: "/name/addr"}, {Status: "syn ced"},
	} {
		if _, err := Notify(ctx, cli, testPrefix, "db1", bad, now); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: %v, want one line", bad, err)
		}
	}
	if _, err := Notify(ctx, cli, testPrefix, "db/1", view, now); !errors.Is(err, ErrBadNode) {
		t.Errorf("bad id: %v", err)
	}
}
