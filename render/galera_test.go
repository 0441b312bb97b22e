package render_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/haconfd/haconfd/render"
	"github.com/haconfd/haconfd/render/node"
)

func galeraRenderer(t *testing.T, policy node.Policy, vars map[string]string) *render.Renderer {
	t.Helper()
	v := defaultVars()
	for k, x := range vars {
		v[k] = x
	}
	r, err := render.New(render.Options{Templates: defaultTemplates(t), Prefixes: []string{"/components/galera"}, Vars: v, Galera: policy})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func gkvs(nodes ...string) map[string]string {
	m := map[string]string{}
	for i, spec := range nodes {
		id, extra, _ := strings.Cut(spec, " ")
		p := "/components/galera/" + id
		m[p+"/ip"] = "10.0.0." + string(rune('1'+i))
		m[p+"/port"] = "3306"
		m[p+"/wsrep_local_state_comment"] = "Synced"
		m[p+"/wsrep_local_index"] = string(rune('0' + i))
		for _, kv := range strings.Fields(extra) {
			k, v, _ := strings.Cut(kv, "=")
			m[p+"/"+k] = v
		}
	}
	return m
}

// The writer is remembered through Input.Memory (sticky), and a writer
// that hands the writes over while still serving is a Handover; one
// drained by an operator is not (its sessions finish).
func TestRenderWriterMemoryAndHandovers(t *testing.T) {
	sticky := galeraRenderer(t, node.Policy{}, map[string]string{"writer_bind": "127.0.0.1:3307"})
	failback := galeraRenderer(t, node.Policy{WriterFailback: true}, map[string]string{"writer_bind": "127.0.0.1:3307"})

	out, err := sticky.Render(render.Input{KVs: gkvs("a priority=2", "b priority=1 wsrep_local_state_comment=Joined", "c priority=3")})
	if err != nil || out.Writer != "a" || len(out.Handovers) != 0 {
		t.Fatalf("start: writer %q handovers %v err %v", out.Writer, out.Handovers, err)
	}
	mem := out.Memory
	// b (the preferred) is back: sticky keeps a, failback moves to b.
	back := gkvs("a priority=2", "b priority=1", "c priority=3")
	out, _ = sticky.Render(render.Input{KVs: back, Memory: mem})
	if out.Writer != "a" || len(out.Handovers) != 0 {
		t.Fatalf("sticky: writer %q handovers %v", out.Writer, out.Handovers)
	}
	out, _ = failback.Render(render.Input{KVs: back, Memory: mem})
	if out.Writer != "b" || len(out.Handovers) != 1 || out.Handovers[0].Node != "a" || !slices.Equal(out.Handovers[0].To, []string{"b"}) {
		t.Fatalf("failback: writer %q handovers %+v", out.Writer, out.Handovers)
	}
	if !strings.Contains(string(out.Config), "server a 10.0.0.1:3306 check weight 0\n") {
		t.Fatalf("the old writer still takes writes:\n%s", out.Config)
	}
	// An operator drains the writer: the writes move, no handover.
	out, _ = sticky.Render(render.Input{KVs: gkvs(`a priority=2 drain={"by":"x","reason":"y"}`, "b priority=1", "c priority=3"), Memory: mem})
	if out.Writer != "b" || len(out.Handovers) != 0 {
		t.Fatalf("drain: writer %q handovers %+v", out.Writer, out.Handovers)
	}
	// The writer leaves for its health (desync): a handover.
	out, _ = sticky.Render(render.Input{KVs: gkvs("a priority=2 wsrep_desync=ON wsrep_local_state_comment=Donor/Desynced", "b priority=1", "c priority=3"), Memory: mem})
	if out.Writer != "b" || len(out.Handovers) != 1 {
		t.Fatalf("desync: writer %q handovers %+v", out.Writer, out.Handovers)
	}
}

// The lag memory flows through Input.Memory: a node drained for lag stays
// drained above half of --max-recv-queue.
func TestRenderLagHysteresis(t *testing.T) {
	r := galeraRenderer(t, node.Policy{MaxRecvQueue: 100}, nil)
	out, _ := r.Render(render.Input{KVs: gkvs("a wsrep_local_recv_queue=150", "b")})
	if !strings.Contains(string(out.Config), "server a 10.0.0.1:3306 check weight 0\n") {
		t.Fatalf("lagging node in rotation:\n%s", out.Config)
	}
	out, _ = r.Render(render.Input{KVs: gkvs("a wsrep_local_recv_queue=70", "b"), Memory: out.Memory})
	if !strings.Contains(string(out.Config), "server a 10.0.0.1:3306 check weight 0\n") {
		t.Fatalf("hysteresis lost:\n%s", out.Config)
	}
	out, _ = r.Render(render.Input{KVs: gkvs("a wsrep_local_recv_queue=10", "b"), Memory: out.Memory})
	if !strings.Contains(string(out.Config), "server a 10.0.0.1:3306 check\n") {
		t.Fatalf("not back below half:\n%s", out.Config)
	}
}

// Clusters under a prefix: each cluster is its own section only when a
// cluster bind names it; the order of clusters does not move a bind.
func TestRenderClusters(t *testing.T) {
	kvs := map[string]string{
		"/galera/b/10.0.0.1/wsrep_local_state_comment": "Synced",
		"/galera/c/10.0.0.2/wsrep_local_state_comment": "Synced",
	}
	r, err := render.New(render.Options{Templates: defaultTemplates(t), Prefixes: []string{"/galera"}, Vars: defaultVars(),
		ClusterBinds: map[string]string{"c": "127.0.0.1:4000"}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.Render(render.Input{KVs: kvs})
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(out.Config)
	if !strings.Contains(cfg, "listen c\n    bind 127.0.0.1:4000\n") || strings.Contains(cfg, "listen b") || strings.Contains(cfg, "listen galera") {
		t.Fatalf("sections:\n%s", cfg)
	}
	if len(out.Notes) != 1 || !strings.Contains(out.Notes[0], `cluster "b" under prefix /galera has 1 node(s) and no --cluster-bind b=ADDR`) {
		t.Fatalf("notes %v", out.Notes)
	}
	// A cluster "a" appears before c: c keeps its bind.
	kvs["/galera/a/10.0.0.3/wsrep_local_state_comment"] = "Synced"
	out, _ = r.Render(render.Input{KVs: kvs})
	if !strings.Contains(string(out.Config), "listen c\n    bind 127.0.0.1:4000\n    mode tcp") {
		t.Fatalf("sections after a new cluster:\n%s", out.Config)
	}
	if got := []string{out.Services[0].Name, out.Services[1].Name, out.Services[3].Cluster, out.Services[3].Bind}; !slices.Equal(got, []string{"galera", "a", "c", "127.0.0.1:4000"}) {
		t.Fatalf("services %v", got)
	}
}

// The fleet's writers, recorded in etcd, win over a load balancer's own
// memory while they stay eligible: two load balancers that saw the
// changes in a different order, or one started later, serve the same
// writers. A render proposes its writers when they differ.
func TestRenderFleetWriters(t *testing.T) {
	mk := func(failback bool) *render.Renderer {
		r, err := render.New(render.Options{Templates: defaultTemplates(t), Prefixes: []string{"/components/galera"}, Vars: defaultVars(),
			WriterKeys: "/haconfd/instances.writers", Galera: node.Policy{WriterFailback: failback}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := mk(false)
	kvs := gkvs("a priority=1", "b priority=2")
	key := "/haconfd/instances.writers/galera"
	input := func(m map[string]string, rev int64) render.Input {
		var in render.Input
		for _, p := range sortedKV(m) {
			in.Sorted = append(in.Sorted, p)
			in.Revs = append(in.Revs, rev)
		}
		return in
	}
	// Nothing recorded: the best by priority, proposed with a create.
	out, _ := r.Render(input(kvs, 5))
	if out.Writer != "a" || len(out.WriterUpdates) != 1 || out.WriterUpdates[0].Key != key || out.WriterUpdates[0].PrevRev != 0 {
		t.Fatalf("writer %q updates %+v", out.Writer, out.WriterUpdates)
	}
	// b recorded by another load balancer (after a was out for it): this
	// one, fresh, serves b too and proposes nothing.
	kvs[key] = `{"writers":["b"]}`
	out, _ = r.Render(input(kvs, 7))
	if out.Writer != "b" || len(out.WriterUpdates) != 0 {
		t.Fatalf("recorded b: writer %q updates %+v", out.Writer, out.WriterUpdates)
	}
	// The recorded writer is not eligible here: the best one, proposed
	// against the revision seen.
	kvs["/components/galera/b/wsrep_local_state_comment"] = "Joined"
	out, _ = r.Render(input(kvs, 9))
	if out.Writer != "a" || len(out.WriterUpdates) != 1 || out.WriterUpdates[0].PrevRev != 9 || !slices.Equal(out.WriterUpdates[0].Prev, []string{"b"}) {
		t.Fatalf("recorded b out: writer %q updates %+v", out.Writer, out.WriterUpdates)
	}
	// With failback every load balancer picks by priority: nothing recorded.
	kvs["/components/galera/b/wsrep_local_state_comment"] = "Synced"
	out, _ = mk(true).Render(input(kvs, 11))
	if out.Writer != "a" || len(out.WriterUpdates) != 0 {
		t.Fatalf("failback: writer %q updates %+v", out.Writer, out.WriterUpdates)
	}
}

func sortedKV(m map[string]string) []render.KVPair {
	out := make([]render.KVPair, 0, len(m))
	for k, v := range m {
		out = append(out, render.KVPair{Key: k, Value: v})
	}
	slices.SortFunc(out, func(a, b render.KVPair) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// A cluster whose section name another section already has (here the
// prefix's own "galera") is reported and not served: two sections never
// share a name.
func TestRenderClusterNameTaken(t *testing.T) {
	kvs := map[string]string{
		"/galera/galera/10.0.0.1/wsrep_local_state_comment": "Synced",
		"/galera/c/10.0.0.2/wsrep_local_state_comment":      "Synced",
	}
	r, err := render.New(render.Options{Templates: defaultTemplates(t), Prefixes: []string{"/galera"}, Vars: defaultVars(),
		ClusterBinds: map[string]string{"c": "127.0.0.1:4000"}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.Render(render.Input{KVs: kvs})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, s := range out.Services {
		names[s.Name]++
	}
	if names["galera"] > 1 {
		t.Errorf("two services named galera: %+v", out.Services)
	}
	if !slices.ContainsFunc(out.Notes, func(n string) bool {
		return strings.Contains(n, `cluster "galera" under prefix /galera: its name "galera" is taken by another section`)
	}) {
		t.Fatalf("notes %v, want the taken name reported", out.Notes)
	}
}
