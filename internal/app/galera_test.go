package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/internal/etcdclient"
	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/etcdtest"
	"github.com/haconfd/haconfd/render"
	"github.com/haconfd/haconfd/watch"
)

// galeraRig is the target with the default templates behind a fake
// HAProxy, driven by node keys.
func galeraRig(t *testing.T, flags ...string) *rig {
	t.Helper()
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	config.AddFlags(fs)
	out := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := fs.Parse(append([]string{"--output", out, "--bind", "127.0.0.1:3306", "--writer-bind", "127.0.0.1:3307", "--check-port", "none"}, flags...)); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(fs, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	rend, err := NewRenderer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, src: make(chanSource), hx: newFakeHAProxy(), board: &Board{}, bus: NewBus(), clock: newFakeClock(), kvs: map[string]string{}}
	r.tgt = NewHAProxyTarget(rend, r.hx, r.hx, nil, HAProxyOptions{
		Board: r.board, Bus: r.bus, RetryMin: 20 * time.Millisecond, RetryMax: 40 * time.Millisecond, Metrics: NewMetrics(),
		KeepWriterSessions: cfg.WriterFailoverSessions == config.WriterSessionsKeep,
	})
	loop := NewLoop(r.src, r.tgt, LoopOptions{WaitMin: time.Millisecond, WaitMax: 4 * time.Millisecond,
		OnSnapshot: func(s watch.Snapshot) { recordSnapshot(r.board, r.bus, nil, s) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx) }()
	r.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(r.stop)
	return r
}

// nodeKVs are the keys of a Synced node id at 10.0.0.<n> with extra
// fields ("priority=1", ...).
func nodeKVs(id string, n int, extra ...string) []string {
	p := "/components/galera/" + id + "/"
	kv := []string{p + "ip", "10.0.0." + string(rune('0'+n)), p + "port", "3306", p + "wsrep_local_state_comment", "Synced",
		p + "wsrep_local_index", string(rune('0' + n))}
	for _, e := range extra {
		k, v, _ := strings.Cut(e, "=")
		kv = append(kv, p+k, v)
	}
	return kv
}

func (r *rig) waitApplied(rev int64) {
	r.t.Helper()
	r.waitFor("revision live", func() bool { return r.status().Applied >= rev })
}

// --writer-failover-sessions shutdown: when the writes move away from a
// writer that still serves (failback), its sessions in the writer section
// are shut down after its weight went to 0, and only there; an operator's
// drain of the writer moves the writes and leaves its sessions to finish.
func TestWriterHandoverShutsDownSessions(t *testing.T) {
	r := galeraRig(t, "--writer-failback")
	r.set(slices.Concat(nodeKVs("a", 1, "priority=2"), nodeKVs("b", 2, "priority=1", "wsrep_local_state_comment=Joined"))...)
	r.waitFor("started", func() bool { _, applies, _, _ := r.hx.snapshot(); return applies == 1 })
	r.waitApplied(1)
	rev := r.set("/components/galera/b/wsrep_local_state_comment", "Synced") // the preferred node is back: failback
	r.waitApplied(rev)
	sent, _, _, _ := r.hx.snapshot()
	weight := slices.Index(sent, "set server galera-writer/a weight 0")
	shut := slices.Index(sent, "shutdown sessions server galera-writer/a")
	if weight < 0 || shut < weight {
		t.Fatalf("sent %q: want the old writer's weight 0, then its sessions shut down", sent)
	}
	if slices.Contains(sent, "shutdown sessions server galera/a") {
		t.Fatalf("sessions shut down in the multi-writer section, where a still serves: %q", sent)
	}
	// An operator drains the writer b: writes move to a, b's sessions stay.
	n := len(sent)
	rev = r.set("/components/galera/b/drain", `{"by":"ops","reason":"maintenance"}`)
	r.waitApplied(rev)
	sent, _, _, _ = r.hx.snapshot()
	if !slices.Contains(sent[n:], "set server galera-writer/b weight 0") || slices.ContainsFunc(sent[n:], func(l string) bool { return strings.HasPrefix(l, "shutdown sessions") }) {
		t.Fatalf("after the drain sent %q: want b drained, no session shut down", sent[n:])
	}
	if v := r.serverView("galera", "b"); v.InRotation || !strings.Contains(strings.Join(v.Reasons, ";"), "drained by an operator (by ops: maintenance)") {
		t.Fatalf("/servers for b: %+v", v)
	}
}

func TestWriterHandoverKeepSessions(t *testing.T) {
	r := galeraRig(t, "--writer-failback", "--writer-failover-sessions", "keep")
	r.set(slices.Concat(nodeKVs("a", 1, "priority=2"), nodeKVs("b", 2, "priority=1", "wsrep_local_state_comment=Joined"))...)
	r.waitApplied(1)
	rev := r.set("/components/galera/b/wsrep_local_state_comment", "Synced")
	r.waitApplied(rev)
	sent, _, _, _ := r.hx.snapshot()
	if !slices.Contains(sent, "set server galera-writer/a weight 0") || slices.ContainsFunc(sent, func(l string) bool { return strings.HasPrefix(l, "shutdown sessions") }) {
		t.Fatalf("sent %q: want the writes moved, no session shut down", sent)
	}
}

// A node that leaves Synced is drained (weight 0) through the runtime API,
// never put in maintenance, and comes back with its weight, without
// "health down" (its checks never stopped).
func TestHealthExclusionIsDrainNotMaint(t *testing.T) {
	r := galeraRig(t)
	r.set(slices.Concat(nodeKVs("a", 1), nodeKVs("b", 2))...)
	r.waitApplied(1)
	rev := r.set("/components/galera/b/wsrep_local_state_comment", "Donor/Desynced")
	r.waitApplied(rev)
	rev = r.set("/components/galera/b/wsrep_local_state_comment", "Synced")
	r.waitApplied(rev)
	sent, applies, _, _ := r.hx.snapshot()
	for _, want := range []string{"set server galera/b weight 0", "set server galera/b weight 1"} {
		if !slices.Contains(sent, want) {
			t.Errorf("sent %q: want %q", sent, want)
		}
	}
	for _, l := range sent {
		if strings.Contains(l, "state maint") || strings.Contains(l, "health down") {
			t.Errorf("sent %q: a health exclusion must not stop the checks", l)
		}
	}
	if applies != 1 {
		t.Errorf("%d reloads, want none after the start", applies-1)
	}
	v := r.serverView("galera", "b")
	if !v.InRotation || v.Signals["state"] != "Synced" {
		t.Errorf("/servers for b: %+v", v)
	}
}

// Notes (a prefix that yields no node) are in /status.
func TestNotesInStatus(t *testing.T) {
	r := galeraRig(t, "--force")
	rev := r.set("/components/galera/x/junk", "1")
	r.waitFor("note", func() bool {
		n := r.status().Notes
		return r.status().Revision == rev && len(n) == 1 && strings.HasPrefix(n[0], "prefix /components/galera: no node among its 1 key(s); first keys it could not use: /components/galera/x/junk")
	})
}

func (r *rig) serverView(section, server string) ServerView {
	for _, v := range r.board.Servers() {
		if v.Section == section && v.Server == server {
			return v
		}
	}
	return ServerView{}
}

// The lag memory goes from one render to the next through the target: a
// node drained for its recv queue stays drained above half the limit.
func TestLagHysteresisThroughTarget(t *testing.T) {
	r := galeraRig(t, "--max-recv-queue", "100")
	r.set(slices.Concat(nodeKVs("a", 1, "wsrep_local_recv_queue=0"), nodeKVs("b", 2))...)
	r.waitApplied(1)
	rev := r.set("/components/galera/a/wsrep_local_recv_queue", "150")
	r.waitApplied(rev)
	rev = r.set("/components/galera/a/wsrep_local_recv_queue", "70")
	r.waitApplied(rev)
	if v := r.serverView("galera", "a"); v.InRotation {
		t.Fatalf("a back in rotation at 70 (above half of 100): %+v", v)
	}
	rev = r.set("/components/galera/a/wsrep_local_recv_queue", "30")
	r.waitApplied(rev)
	if v := r.serverView("galera", "a"); !v.InRotation {
		t.Fatalf("a still out at 30: %+v", v)
	}
}

// A writer that leaves for its health (desync) hands the writes over: its
// sessions end in the writer section only; in the others it drains.
func TestWriterHandoverOnlyWriterSections(t *testing.T) {
	r := galeraRig(t, "--reader-bind", "127.0.0.1:3308")
	r.set(slices.Concat(nodeKVs("a", 1, "priority=1"), nodeKVs("b", 2, "priority=2"))...)
	r.waitApplied(1)
	rev := r.set("/components/galera/a/wsrep_local_state_comment", "Donor/Desynced", "/components/galera/a/wsrep_desync", "ON")
	r.waitApplied(rev)
	sent, _, _, _ := r.hx.snapshot()
	if !slices.Contains(sent, "shutdown sessions server galera-writer/a") {
		t.Fatalf("sent %q: want the old writer's sessions shut down in galera-writer", sent)
	}
	for _, l := range sent {
		if l == "shutdown sessions server galera/a" || l == "shutdown sessions server galera-reader/a" {
			t.Fatalf("sent %q: sessions shut down outside the writer section", l)
		}
	}
}

// fakeWriters records what the target asks to record.
type fakeWriters struct {
	mu  sync.Mutex
	got []render.WriterUpdate
}

func (f *fakeWriters) Record(_ context.Context, u render.WriterUpdate) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, u)
	return nil
}

func (f *fakeWriters) updates() []render.WriterUpdate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got)
}

// The target records the writers it chose for the fleet, once per
// proposal (the same proposal is not sent again for every snapshot).
func TestTargetRecordsWriters(t *testing.T) {
	store := &fakeWriters{}
	r := galeraRig(t)
	r.tgt.opts.Writers = store
	r.set(slices.Concat(nodeKVs("a", 1, "priority=1"), nodeKVs("b", 2, "priority=2"))...)
	r.waitApplied(1)
	r.waitFor("recorded", func() bool { return len(store.updates()) == 1 })
	u := store.updates()[0]
	if u.Key != "/haconfd/instances.writers/galera" || !slices.Equal(u.Writers, []string{"a"}) || u.PrevRev != 0 {
		t.Fatalf("recorded %+v", u)
	}
	for i := 0; i < 3; i++ {
		r.waitApplied(r.set("/components/galera/b/host", fmt.Sprintf("h%d", i)))
	}
	if n := len(store.updates()); n != 1 {
		t.Fatalf("%d records for one proposal", n)
	}
}

// The etcd store creates the key when the render saw none, and refuses
// when another load balancer wrote it since.
func TestEtcdWritersRecord(t *testing.T) {
	srv := etcdtest.Start(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	st := etcdWriters{cli: cli}
	key := "/haconfd/instances.writers/galera"
	if err := st.Record(ctx, render.WriterUpdate{Key: key, Writers: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != `{"writers":["a"]}` {
		t.Fatalf("%v %v", resp, err)
	}
	rev := resp.Kvs[0].ModRevision
	if err := st.Record(ctx, render.WriterUpdate{Key: key, Writers: []string{"b"}}); !errors.Is(err, ErrWriterRace) {
		t.Fatalf("create over an existing key: %v", err)
	}
	if err := st.Record(ctx, render.WriterUpdate{Key: key, Writers: []string{"b"}, PrevRev: rev}); err != nil {
		t.Fatal(err)
	}
	if err := st.Record(ctx, render.WriterUpdate{Key: key, Writers: []string{"c"}, PrevRev: rev}); !errors.Is(err, ErrWriterRace) {
		t.Fatalf("stale revision: %v", err)
	}
}

// /metrics says for each node whether it is in rotation or a writer, and
// counts the nodes out by reason.
func TestNodeMetrics(t *testing.T) {
	r := galeraRig(t)
	rev := r.set(slices.Concat(nodeKVs("a", 1, "priority=1"), nodeKVs("b", 2, `drain={"by":"x","reason":"y"}`), nodeKVs("c", 3, "wsrep_reject_queries=ALL"))...)
	r.waitApplied(rev)
	reg := r.tgt.opts.Metrics.Registry
	want := `
# HELP haconfd_nodes_out_of_rotation Nodes out of rotation by service and first reason: drained, unreadable_signal, lag, reject_queries, maintenance, not_ready, non_primary, donor, not_synced, other.
# TYPE haconfd_nodes_out_of_rotation gauge
haconfd_nodes_out_of_rotation{reason="drained",service="galera"} 1
haconfd_nodes_out_of_rotation{reason="reject_queries",service="galera"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "haconfd_nodes_out_of_rotation"); err != nil {
		t.Fatal(err)
	}
	in := testutil.ToFloat64(r.tgt.galera.metrics.inRotation.WithLabelValues("galera", "a"))
	out := testutil.ToFloat64(r.tgt.galera.metrics.inRotation.WithLabelValues("galera", "b"))
	w := testutil.ToFloat64(r.tgt.galera.metrics.writer.WithLabelValues("galera", "a"))
	if in != 1 || out != 0 || w != 1 {
		t.Fatalf("a in %v writer %v, b in %v", in, w, out)
	}
}

// An etcd user that may read only the node prefix keeps its own writers
// (a warning) and its node watch: the writers prefix is not watched.
func TestSharedWriterKeysPermission(t *testing.T) {
	srv := etcdtest.StartWith(t, etcdserver.Options{Auth: &etcdserver.Auth{
		RootPassword: "root-pw",
		Users:        []etcdserver.User{{Name: "lb", Password: "lb-pw", ReadPrefix: "/components/galera"}},
	}})
	cfg := config.Defaults()
	cfg.WriterBind = "127.0.0.1:3307"
	var logs strings.Builder
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(), Username: "lb", Password: "lb-pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	e := &Etcd{Client: &etcdclient.Client{Client: cli}}
	if wk := sharedWriterKeys(context.Background(), cfg, e, logger); wk != "" || !strings.Contains(logs.String(), "etcd denies reading them") {
		t.Fatalf("writers %q, log %q", wk, logs.String())
	}
	root, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(), Username: "root", Password: "root-pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if wk := sharedWriterKeys(context.Background(), cfg, &Etcd{Client: &etcdclient.Client{Client: root}}, logger); wk != "/haconfd/instances.writers" {
		t.Fatalf("root: writers %q", wk)
	}
	cfg.WriterBind = ""
	if wk := sharedWriterKeys(context.Background(), cfg, &Etcd{Client: &etcdclient.Client{Client: root}}, logger); wk != "" {
		t.Fatalf("no writer section: writers %q", wk)
	}
}
