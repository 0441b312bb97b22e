package node_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/haconfd/haconfd/render/node"
)

func TestParseSignals(t *testing.T) {
	kvs := map[string]string{
		pfx + "/n1/ip": "10.0.0.1", pfx + "/n1/port": "3306",
		pfx + "/n1/wsrep_ready": "on", pfx + "/n1/wsrep_cluster_status": "primary", pfx + "/n1/wsrep_desync": "OFF",
		pfx + "/n1/wsrep_reject_queries": "none", pfx + "/n1/wsrep_sst_donor_rejects_queries": "0",
		pfx + "/n1/read_only": "ON", pfx + "/n1/pxc_maint_mode": "disabled", pfx + "/n1/wsrep_local_recv_queue": "17",
		pfx + "/n1/wsrep_flow_control_paused": "0.25", pfx + "/n1/wsrep_last_committed": "1234",
		pfx + "/n1/priority": "-3", pfx + "/n1/check_port": "9201",
		pfx + "/n1/drain": `{"by":"ops@lb","reason":"disk\nswap","since":"2026-01-02T03:04:05Z"}`,
		pfx + "/n2":       `{"ip":"10.0.0.2","port":3307,"wsrep_ready":false,"read_only":true,"wsrep_local_recv_queue":5,"priority":2,"check_port":"9300"}`,
	}
	nodes, problems := node.Parse(pfx, kvs)
	if len(problems) != 0 || len(nodes) != 2 {
		t.Fatalf("nodes %+v problems %v", nodes, problems)
	}
	n1, n2 := nodes[0], nodes[1]
	got := []any{n1.Ready, n1.ClusterStatus, n1.Desync, n1.RejectQueries, n1.DonorRejectsQueries, n1.ReadOnly, n1.MaintMode,
		n1.RecvQueue, n1.RecvQueueSet, n1.FlowControlPaused, n1.LastCommitted, n1.Priority, n1.PrioritySet, n1.CheckPort}
	want := []any{"ON", "Primary", "OFF", "NONE", "OFF", true, "DISABLED", int64(17), true, "0.25", "1234", -3, true, 9201}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("n1 signals %v, want %v", got, want)
	}
	if n1.Drain == nil || n1.Drain.By != "ops@lb" || n1.Drain.Reason != `disk\nswap` {
		t.Errorf("drain %+v (the reason must stay on one line)", n1.Drain)
	}
	got = []any{n2.Ready, n2.ReadOnly, n2.RecvQueue, n2.Priority, n2.CheckPort, n2.Port}
	want = []any{"OFF", true, int64(5), 2, 9300, 3307}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("n2 (JSON) signals %v, want %v", got, want)
	}
}

// A signal that is not what its name says keeps the node, out of
// rotation, with a problem that names the key and the value.
func TestParseBadSignals(t *testing.T) {
	for _, tc := range []struct{ field, value, why string }{
		{"wsrep_ready", "maybe", "is not ON or OFF"},
		{"wsrep_cluster_status", "Primary\nX", "is not Primary"},
		{"wsrep_reject_queries", "SOME", "is not NONE, ALL or ALL_KILL"},
		{"pxc_maint_mode", "ON", "is not DISABLED"},
		{"wsrep_local_recv_queue", "-1", "is not a whole number"},
		{"wsrep_local_recv_queue", "1e3", "is not a whole number"},
		{"wsrep_flow_control_paused", "2", "is not a number 0-1"},
		{"priority", "high", "is not a whole number"},
		{"check_port", "70000", "is not a port"},
		{"wsrep_notify", "{not json", "is not a wsrep_notify record"},
		{"read_only", "", ""}, // empty: absent
	} {
		t.Run(tc.field+"="+tc.value, func(t *testing.T) {
			kvs := map[string]string{pfx + "/n1/ip": "10.0.0.1", pfx + "/n1/port": "3306", pfx + "/n1/" + tc.field: tc.value}
			nodes, problems := node.Parse(pfx, kvs)
			if len(nodes) != 1 {
				t.Fatalf("the node was skipped: %v", problems)
			}
			if tc.why == "" {
				if len(problems) != 0 || len(nodes[0].Bad) != 0 {
					t.Fatalf("problems %v bad %v", problems, nodes[0].Bad)
				}
				return
			}
			if len(problems) != 1 || !problems[0].Drained || !strings.Contains(problems[0].Error(), tc.field) ||
				!strings.Contains(problems[0].Reason, tc.why) || strings.ContainsAny(problems[0].Error(), "\n") {
				t.Fatalf("problems %v, want one drained problem naming %s: %s", problems, tc.field, tc.why)
			}
			nodes[0].Synced = true
			node.Decide(nodes, node.Memory{}, node.Policy{})
			if nodes[0].InRotation {
				t.Fatalf("a node with an unreadable %s is in rotation", tc.field)
			}
		})
	}
}

// An unreadable drain value still drains: the key exists.
func TestParseUnreadableDrain(t *testing.T) {
	nodes, problems := node.Parse(pfx, map[string]string{pfx + "/n1": "10.0.0.1:3306", pfx + "/n1/drain": "yes please"})
	if len(problems) != 0 || len(nodes) != 1 || nodes[0].Drain == nil || !nodes[0].Drain.Unreadable {
		t.Fatalf("nodes %+v problems %v", nodes, problems)
	}
	node.Decide(nodes, node.Memory{}, node.Policy{})
	if nodes[0].InRotation || !strings.Contains(strings.Join(nodes[0].Reasons, ";"), "no readable who/why") {
		t.Fatalf("in %v reasons %v", nodes[0].InRotation, nodes[0].Reasons)
	}
}

// A drain (or notify record) left by a node that is gone is not a node.
func TestParseLeftoverAdminKeys(t *testing.T) {
	nodes, problems := node.Parse(pfx, map[string]string{
		pfx + "/gone/drain": `{"by":"x"}`, pfx + "/gone/wsrep_notify": `{"status":"synced"}`,
		pfx + "/10.0.0.9/drain": `{"by":"x"}`,
		pfx + "/n1/ip":          "10.0.0.1", pfx + "/n1/port": "3306",
	})
	if len(problems) != 0 || len(nodes) != 1 || nodes[0].ID != "n1" {
		t.Fatalf("nodes %+v problems %v", nodes, problems)
	}
}

// severalnines' layout: the directory is the node's IP, there is no ip or
// port key; the port is the default one.
func TestParseSeveralnines(t *testing.T) {
	p := "/galera/my_wsrep_cluster"
	kvs := map[string]string{
		p + "/10.0.0.1/wsrep_local_state_comment": "Synced", p + "/10.0.0.1/wsrep_last_committed": "42",
		p + "/10.0.0.2/wsrep_local_state_comment": "Donor/Desynced",
		p + "/fe80::1/wsrep_local_state_comment":  "Synced",
		p + "/db3/wsrep_local_state_comment":      "Synced", // not an IP: no address
	}
	nodes, problems := node.ParseWith(p, kvs, node.Options{DefaultPort: 3307})
	var ids, addrs []string
	for _, n := range nodes {
		ids, addrs = append(ids, n.ID), append(addrs, n.Addr)
	}
	if !slices.Equal(addrs, []string{"10.0.0.1:3307", "10.0.0.2:3307", "[fe80::1]:3307"}) || nodes[0].LastCommitted != "42" {
		t.Fatalf("nodes %v %v", ids, addrs)
	}
	if len(problems) != 1 || problems[0].Key != p+"/db3" || problems[0].Reason != "missing ip" {
		t.Fatalf("problems %v", problems)
	}
}

func TestClusters(t *testing.T) {
	kvs := sortedPairs(map[string]string{
		"/galera/c1/10.0.0.1/wsrep_local_state_comment": "Synced",
		"/galera/c1/10.0.0.2/wsrep_local_state_comment": "Synced",
		"/galera/c2/10.0.1.1/wsrep_last_committed":      "1",
		"/galera/node9/ip":                  "10.0.0.9", // a node of /galera itself
		"/galera/node9/x/ip":                "junk",
		"/galera/c3/a/b/c":                  "too deep",
		"/galera/c4/10.0.0.4/unknown_field": "x",
		"/galeraX/c5/10.0.0.5/ip":           "10.0.0.5",
	})
	if got := node.Clusters("/galera", kvs); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Fatalf("clusters %v", got)
	}
	if got := node.Clusters("/galera/c1", kvs); got != nil {
		t.Fatalf("clusters under a cluster %v", got)
	}
}

func TestEmptyPrefixNote(t *testing.T) {
	kvs := sortedPairs(map[string]string{
		"/galera/c/10.0.0.1/x/y": "1",
		"/a/n1/junk":             "1",
		"/d/n1/drain":            `{"by":"x"}`,
		"/b/n1/port":             "3306",
	})
	for _, tc := range []struct{ prefix, want string }{
		{"/none", "prefix /none: no node: no keys under it"},
		{"/galera", "prefix /galera: no node among its 1 key(s); first keys it could not use: /galera/c/10.0.0.1/x/y; every key is more than two levels below"},
		{"/a", "prefix /a: no node among its 1 key(s); first keys it could not use: /a/n1/junk; node /a/n1: missing ip"},
		{"/d", "prefix /d: no node among its 1 key(s); first keys it could not use: /d/n1/drain; none registers a node"},
	} {
		nodes, problems := node.ParseSorted(tc.prefix, kvs)
		if len(nodes) != 0 {
			t.Fatalf("%s: nodes %v", tc.prefix, nodes)
		}
		if got := node.EmptyPrefixNote(tc.prefix, kvs, problems); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %q, want it to start with %q", tc.prefix, got, tc.want)
		}
	}
	_, problems := node.ParseSorted("/b", kvs)
	if got := node.EmptyPrefixNote("/b", kvs, problems); !strings.Contains(got, "node /b/n1: missing ip") {
		t.Errorf("/b: %q does not say why", got)
	}
}

// The revisions of a node's state and wsrep_notify keys order them.
func TestParseRevisions(t *testing.T) {
	kvs := []node.KV{
		{Key: pfx + "/n1/ip", Value: "10.0.0.1"}, {Key: pfx + "/n1/port", Value: "3306"},
		{Key: pfx + "/n1/wsrep_local_state_comment", Value: "Synced"},
		{Key: pfx + "/n1/wsrep_notify", Value: `{"status":"donor","primary":true,"index":0,"members":[{"uuid":"u1","name":"n1"}]}`},
		{Key: pfx + "/n2", Value: `{"ip":"10.0.0.2","state":"Synced"}`},
	}
	nodes, problems := node.ParseSortedWith(pfx, kvs, []int64{3, 3, 5, 8, 11}, node.Options{})
	if len(problems) != 0 || len(nodes) != 2 {
		t.Fatalf("nodes %+v problems %v", nodes, problems)
	}
	if nodes[0].StateRev != 5 || nodes[0].Notify == nil || nodes[0].Notify.Rev != 8 || nodes[1].StateRev != 11 {
		t.Fatalf("revisions: n1 state %d notify %+v, n2 state %d", nodes[0].StateRev, nodes[0].Notify, nodes[1].StateRev)
	}
	if self, ok := nodes[0].Notify.Self(); !ok || self.UUID != "u1" {
		t.Fatalf("self %+v %v", self, ok)
	}
}

// What a registrar publishes is read back as published.
func TestEncodeSignalsRoundTrip(t *testing.T) {
	sig, dropped := node.Signals{Ready: "ON", ClusterStatus: "Primary", Desync: "OFF", RejectQueries: "NONE",
		DonorRejectsQueries: "OFF", ReadOnly: "1", MaintMode: "", RecvQueue: "12", FlowControlPaused: "0.123456"}.Normalized()
	if len(dropped) != 0 || sig.ReadOnly != "ON" || sig.FlowControlPaused != "0.12" {
		t.Fatalf("normalized %+v dropped %v", sig, dropped)
	}
	if _, dropped := (node.Signals{Ready: "sometimes", RecvQueue: "-4"}).Normalized(); !slices.Equal(dropped, []string{"wsrep_ready", "wsrep_local_recv_queue"}) {
		t.Fatalf("dropped %v", dropped)
	}
	for _, layout := range []node.Layout{node.LayoutDir, node.LayoutJSON} {
		reg := node.Registration{ID: "db1", IP: "10.0.0.1", Port: 3306, State: "Synced", Index: 1, Signals: sig, Priority: "2", CheckPort: 9201}
		nodes, problems := node.Parse(pfx, node.Encode(pfx, reg, layout))
		if len(problems) != 0 || len(nodes) != 1 {
			t.Fatalf("%s: %v %v", layout, nodes, problems)
		}
		n := nodes[0]
		if n.Ready != "ON" || n.ClusterStatus != "Primary" || !n.ReadOnly || n.RecvQueue != 12 || n.Priority != 2 || n.CheckPort != 9201 || n.FlowControlPaused != "0.12" {
			t.Fatalf("%s: read back %+v", layout, n)
		}
	}
}
