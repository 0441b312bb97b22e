package node_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/haconfd/haconfd/render/node"
)

// gn is a Synced node with index idx, in the shape Parse returns it.
func gn(id string, idx int, opts ...func(*node.Node)) node.Node {
	n := node.Node{ID: id, Name: id, IP: "10.0.0.1", Port: 3306, Weight: 1, State: node.StateSynced, Index: idx, Synced: true}
	for _, o := range opts {
		o(&n)
	}
	return n
}

func state(s string) func(*node.Node) {
	return func(n *node.Node) { n.State, n.Synced = s, s == node.StateSynced }
}
func with(f func(*node.Node)) func(*node.Node) { return f }
func prio(p int) func(*node.Node) {
	return func(n *node.Node) { n.Priority, n.PrioritySet = p, true }
}
func recvQ(q int64) func(*node.Node) {
	return func(n *node.Node) { n.RecvQueue, n.RecvQueueSet = q, true }
}
func yes() *bool     { t := true; return &t }
func no() *bool      { f := false; return &f }
func idx(i int) *int { return &i }

func inRotation(nodes []node.Node) []string {
	var out []string
	for _, n := range nodes {
		if n.InRotation {
			out = append(out, n.ID)
		}
	}
	return out
}

func reasonsOf(nodes []node.Node, id string) string {
	for _, n := range nodes {
		if n.ID == id {
			return strings.Join(n.Reasons, "; ")
		}
	}
	return "(no node " + id + ")"
}

// Each rule that takes a node out of rotation, or keeps it in by
// exception, with the reason it gives.
func TestDecideRotation(t *testing.T) {
	tests := []struct {
		name   string
		nodes  []node.Node
		prev   node.Memory
		policy node.Policy
		in     []string
		why    map[string]string // node → a part of its reasons
	}{
		{name: "all synced", nodes: []node.Node{gn("a", 0), gn("b", 1)}, in: []string{"a", "b"}},
		{name: "no state published counts as synced", nodes: []node.Node{gn("a", 0, state(""))}, in: []string{"a"}},
		{name: "not synced", nodes: []node.Node{gn("a", 0), gn("b", 1, state("Joined"))}, in: []string{"a"},
			why: map[string]string{"b": `Galera state "Joined" is not Synced`}},
		{name: "unreachable", nodes: []node.Node{gn("a", 0), gn("b", 1, state("Unreachable"))}, in: []string{"a"},
			why: map[string]string{"b": "Unreachable"}},
		{name: "wsrep_ready OFF", nodes: []node.Node{gn("a", 0), gn("b", 1, with(func(n *node.Node) { n.Ready = "OFF" }))}, in: []string{"a"},
			why: map[string]string{"b": "wsrep_ready OFF"}},
		{name: "ready ON stays", nodes: []node.Node{gn("a", 0, with(func(n *node.Node) { n.Ready = "ON" }))}, in: []string{"a"}},
		{name: "non-Primary", nodes: []node.Node{gn("a", 0), gn("b", 1, with(func(n *node.Node) { n.ClusterStatus = "non-Primary" }))}, in: []string{"a"},
			why: map[string]string{"b": "not in the Primary component"}},
		{name: "reject queries", nodes: []node.Node{gn("a", 0), gn("b", 1, with(func(n *node.Node) { n.RejectQueries = "ALL" }))}, in: []string{"a"},
			why: map[string]string{"b": "wsrep_reject_queries ALL"}},
		{name: "reject NONE stays", nodes: []node.Node{gn("a", 0, with(func(n *node.Node) { n.RejectQueries = "NONE" }))}, in: []string{"a"}},
		{name: "pxc_maint_mode", nodes: []node.Node{gn("a", 0), gn("b", 1, with(func(n *node.Node) { n.MaintMode = "MAINTENANCE" }))}, in: []string{"a"},
			why: map[string]string{"b": "pxc_maint_mode MAINTENANCE"}},
		{name: "pxc_maint_mode DISABLED stays", nodes: []node.Node{gn("a", 0, with(func(n *node.Node) { n.MaintMode = "DISABLED" }))}, in: []string{"a"}},
		{name: "operator drain", nodes: []node.Node{gn("a", 0), gn("b", 1, with(func(n *node.Node) { n.Drain = &node.AdminDrain{By: "ops", Reason: "kernel"} }))}, in: []string{"a"},
			why: map[string]string{"b": "drained by an operator (by ops: kernel)"}},
		{name: "operator drain wins over the last resort", nodes: []node.Node{
			gn("a", 0, state(node.StateDonor), with(func(n *node.Node) { n.Drain = &node.AdminDrain{Reason: "x"} })), gn("b", 1, state("Joined"))},
			in: nil, why: map[string]string{"a": "drained by an operator"}},
		{name: "unreadable signal", nodes: []node.Node{gn("a", 0), gn("b", 1, with(func(n *node.Node) { n.Bad = []string{`wsrep_ready "maybe" is not ON or OFF`} }))}, in: []string{"a"},
			why: map[string]string{"b": "unreadable signal"}},
		{name: "donor out while a synced node is left", nodes: []node.Node{gn("a", 0, state(node.StateDonor)), gn("b", 1)}, in: []string{"b"},
			why: map[string]string{"a": "only when no Synced node is left"}},
		{name: "donor is the last resort", nodes: []node.Node{gn("a", 0, state(node.StateDonor)), gn("b", 1, state("Joined"))}, in: []string{"a"},
			why: map[string]string{"a": "last resort"}},
		{name: "desync ON is a donor", nodes: []node.Node{gn("a", 0, with(func(n *node.Node) { n.Desync = "ON" })), gn("b", 1)}, in: []string{"b"},
			why: map[string]string{"a": "wsrep_desync ON"}},
		{name: "donor rejecting queries is never the last resort", nodes: []node.Node{
			gn("a", 0, state(node.StateDonor), with(func(n *node.Node) { n.DonorRejectsQueries = "ON" }))}, in: nil,
			why: map[string]string{"a": "wsrep_sst_donor_rejects_queries ON"}},
		{name: "lag above max", nodes: []node.Node{gn("a", 0, recvQ(101)), gn("b", 1, recvQ(0))}, policy: node.Policy{MaxRecvQueue: 100},
			in: []string{"b"}, why: map[string]string{"a": "wsrep_local_recv_queue 101 above --max-recv-queue 100"}},
		{name: "lag at max stays", nodes: []node.Node{gn("a", 0, recvQ(100)), gn("b", 1)}, policy: node.Policy{MaxRecvQueue: 100}, in: []string{"a", "b"}},
		{name: "lag hysteresis: stays out above half", nodes: []node.Node{gn("a", 0, recvQ(50)), gn("b", 1)}, policy: node.Policy{MaxRecvQueue: 100},
			prev: node.Memory{Lagging: []string{"a"}}, in: []string{"b"}},
		{name: "lag hysteresis: back below half", nodes: []node.Node{gn("a", 0, recvQ(49)), gn("b", 1)}, policy: node.Policy{MaxRecvQueue: 100},
			prev: node.Memory{Lagging: []string{"a"}}, in: []string{"a", "b"}},
		{name: "lag off", nodes: []node.Node{gn("a", 0, recvQ(1<<30))}, in: []string{"a"}},
		{name: "lag never empties the section", nodes: []node.Node{gn("a", 0, recvQ(500)), gn("b", 1, recvQ(900))}, policy: node.Policy{MaxRecvQueue: 100},
			in: []string{"a", "b"}, why: map[string]string{"a": "kept: every node of the section lags"}},
		{name: "notify newer than the state: donor", nodes: []node.Node{
			gn("a", 0, with(func(n *node.Node) { n.StateRev = 5; n.Notify = &node.NotifyRecord{Status: "donor", Rev: 7} })), gn("b", 1)},
			in: []string{"b"}, why: map[string]string{"a": "(wsrep_notify)"}},
		{name: "notify older than the state: ignored", nodes: []node.Node{
			gn("a", 0, with(func(n *node.Node) { n.StateRev = 9; n.Notify = &node.NotifyRecord{Status: "donor", Rev: 7} })), gn("b", 1)},
			in: []string{"a", "b"}},
		{name: "notify newer: disconnecting", nodes: []node.Node{
			gn("a", 0, with(func(n *node.Node) { n.StateRev = 5; n.Notify = &node.NotifyRecord{Status: "disconnecting", Rev: 7} })), gn("b", 1)},
			in: []string{"b"}, why: map[string]string{"a": `"Disconnecting" (wsrep_notify) is not Synced`}},
		{name: "notify newer: not primary", nodes: []node.Node{
			gn("a", 0, with(func(n *node.Node) {
				n.StateRev = 5
				n.Notify = &node.NotifyRecord{Status: "synced", Primary: no(), Rev: 7}
			})), gn("b", 1)},
			in: []string{"b"}, why: map[string]string{"a": "--primary no"}},
		{name: "left the primary view", nodes: []node.Node{
			gn("a", 0, with(func(n *node.Node) {
				n.Notify = &node.NotifyRecord{Status: "synced", Primary: yes(), Index: idx(0), Members: []node.Member{{UUID: "ua"}, {UUID: "ub"}}, Rev: 10}
			})),
			gn("b", 1, with(func(n *node.Node) {
				n.Notify = &node.NotifyRecord{Status: "synced", Primary: yes(), Index: idx(0), Members: []node.Member{{UUID: "ub"}}, Rev: 12}
			}))},
			in: []string{"b"}, why: map[string]string{"a": "not a member of the Primary component: b reported a view of 1 members"}},
		{name: "back in the primary view (own record newer)", nodes: []node.Node{
			gn("a", 0, with(func(n *node.Node) {
				n.Notify = &node.NotifyRecord{Status: "synced", Primary: yes(), Index: idx(0), Members: []node.Member{{UUID: "ua2"}, {UUID: "ub"}}, Rev: 14}
			})),
			gn("b", 1, with(func(n *node.Node) {
				n.Notify = &node.NotifyRecord{Status: "synced", Primary: yes(), Index: idx(0), Members: []node.Member{{UUID: "ub"}}, Rev: 12}
			}))},
			in: []string{"a", "b"}},
		{name: "own record newer than the view: not judged by it", nodes: []node.Node{
			gn("a", 0, with(func(n *node.Node) {
				n.Notify = &node.NotifyRecord{Status: "synced", Index: idx(0), Members: []node.Member{{UUID: "ua3"}}, Rev: 14}
			})),
			gn("b", 1, with(func(n *node.Node) {
				n.Notify = &node.NotifyRecord{Status: "synced", Primary: yes(), Index: idx(0), Members: []node.Member{{UUID: "ub"}}, Rev: 12}
			}))},
			in: []string{"a", "b"}},
		{name: "read-only nodes take reads only", nodes: []node.Node{gn("a", 0, with(func(n *node.Node) { n.ReadOnly = true })), gn("b", 1)},
			in: []string{"a", "b"}, why: map[string]string{"a": "read_only ON"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := slices.Clone(tt.nodes)
			node.Decide(nodes, tt.prev, tt.policy)
			if got := inRotation(nodes); !slices.Equal(got, tt.in) {
				t.Errorf("in rotation %v, want %v (reasons: %v)", got, tt.in, reasons(nodes))
			}
			for id, part := range tt.why {
				if r := reasonsOf(nodes, id); !strings.Contains(r, part) {
					t.Errorf("%s reasons %q, want %q in them", id, r, part)
				}
			}
			for _, n := range nodes {
				if n.InRotation != (n.Writable || n.ReadOnly) || n.Writable && n.ReadOnly {
					t.Errorf("%s: in rotation %v, writable %v, read-only %v", n.ID, n.InRotation, n.Writable, n.ReadOnly)
				}
			}
		})
	}
}

func reasons(nodes []node.Node) map[string][]string {
	m := map[string][]string{}
	for _, n := range nodes {
		m[n.ID] = n.Reasons
	}
	return m
}

func TestDecideLagMemory(t *testing.T) {
	nodes := []node.Node{gn("a", 0, recvQ(500)), gn("b", 1, recvQ(0))}
	m := node.Decide(nodes, node.Memory{}, node.Policy{MaxRecvQueue: 100})
	if !slices.Equal(m.Lagging, []string{"a"}) || !nodes[0].Lagging {
		t.Fatalf("memory %+v, a lagging %v", m, nodes[0].Lagging)
	}
	// Below max but above half: stays out only because it lagged before.
	nodes = []node.Node{gn("a", 0, recvQ(60)), gn("b", 1, recvQ(0))}
	if m2 := node.Decide(nodes, m, node.Policy{MaxRecvQueue: 100}); nodes[0].InRotation || !slices.Equal(m2.Lagging, []string{"a"}) {
		t.Fatalf("hysteresis lost: in %v, memory %+v", nodes[0].InRotation, m2)
	}
}

func TestDecideWriters(t *testing.T) {
	tests := []struct {
		name   string
		nodes  []node.Node
		prev   []string
		policy node.Policy
		want   []string
	}{
		{"lowest index without priorities", []node.Node{gn("a", 2), gn("b", 0), gn("c", 1)}, nil, node.Policy{}, []string{"b"}},
		{"lowest positive priority wins", []node.Node{gn("a", 0, prio(3)), gn("b", 1, prio(2)), gn("c", 2, prio(5))}, nil, node.Policy{}, []string{"b"}},
		{"priority 0 never a writer", []node.Node{gn("a", 0, prio(0)), gn("b", 1, prio(-1)), gn("c", 2, prio(9))}, nil, node.Policy{}, []string{"c"}},
		{"only priority <= 0 left: no writer", []node.Node{gn("a", 0, prio(0))}, nil, node.Policy{}, nil},
		{"positive priority before none", []node.Node{gn("a", 0), gn("b", 1, prio(100))}, nil, node.Policy{}, []string{"b"}},
		{"ties by index", []node.Node{gn("a", 1, prio(1)), gn("b", 0, prio(1))}, nil, node.Policy{}, []string{"b"}},
		{"ties by id", []node.Node{gn("b", -1), gn("a", -1)}, nil, node.Policy{}, []string{"a"}},
		{"sticky while in rotation", []node.Node{gn("a", 0, prio(1)), gn("b", 1, prio(2))}, []string{"b"}, node.Policy{}, []string{"b"}},
		{"failback to the preferred", []node.Node{gn("a", 0, prio(1)), gn("b", 1, prio(2))}, []string{"b"}, node.Policy{WriterFailback: true}, []string{"a"}},
		{"writer out of rotation moves", []node.Node{gn("a", 0, prio(1), state("Joined")), gn("b", 1, prio(2)), gn("c", 2, prio(3))}, []string{"a"}, node.Policy{}, []string{"b"}},
		{"read-only never a writer", []node.Node{gn("a", 0, with(func(n *node.Node) { n.ReadOnly = true })), gn("b", 1)}, nil, node.Policy{}, []string{"b"}},
		{"max writers", []node.Node{gn("a", 0, prio(3)), gn("b", 1, prio(1)), gn("c", 2, prio(2))}, nil, node.Policy{MaxWriters: 2}, []string{"b", "c"}},
		{"max writers sticky then best", []node.Node{gn("a", 0, prio(3)), gn("b", 1, prio(1)), gn("c", 2, prio(2))}, []string{"a"}, node.Policy{MaxWriters: 2}, []string{"a", "b"}},
		{"last-resort donor writes", []node.Node{gn("a", 0, state(node.StateDonor)), gn("b", 1, state("Joined"))}, nil, node.Policy{}, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := slices.Clone(tt.nodes)
			m := node.Decide(nodes, node.Memory{Writers: tt.prev}, tt.policy)
			if !slices.Equal(m.Writers, tt.want) {
				t.Fatalf("writers %v, want %v", m.Writers, tt.want)
			}
			for _, n := range nodes {
				if n.IsWriter != slices.Contains(tt.want, n.ID) {
					t.Errorf("%s IsWriter %v", n.ID, n.IsWriter)
				}
			}
		})
	}
}

// The same nodes in any order give the same writers: nothing depends on
// the order of etcd events or keys.
func TestDecideWritersOrderFree(t *testing.T) {
	base := []node.Node{gn("a", 2, prio(5)), gn("b", 1, prio(5)), gn("c", 0), gn("d", 3, prio(7))}
	want := node.Decide(slices.Clone(base), node.Memory{}, node.Policy{MaxWriters: 2}).Writers
	perm := [][]int{{3, 2, 1, 0}, {1, 3, 0, 2}, {2, 0, 3, 1}}
	for _, p := range perm {
		nodes := make([]node.Node, len(base))
		for i, j := range p {
			nodes[i] = base[j]
		}
		if got := node.Decide(nodes, node.Memory{}, node.Policy{MaxWriters: 2}).Writers; !slices.Equal(got, want) {
			t.Fatalf("order %v: writers %v, want %v", p, got, want)
		}
	}
}

func TestDecideReaders(t *testing.T) {
	nodes := []node.Node{gn("a", 0), gn("b", 1)}
	node.Decide(nodes, node.Memory{}, node.Policy{WritersNotReaders: true})
	if nodes[0].Reader || !nodes[1].Reader || !nodes[0].IsWriter {
		t.Fatalf("writer a reader %v, b reader %v", nodes[0].Reader, nodes[1].Reader)
	}
	node.Decide(nodes, node.Memory{}, node.Policy{})
	if !nodes[0].Reader || !nodes[1].Reader {
		t.Fatalf("writer-is-reader: a %v b %v", nodes[0].Reader, nodes[1].Reader)
	}
	// Alone, the writer reads too.
	alone := []node.Node{gn("a", 0), gn("b", 1, state("Joined"))}
	node.Decide(alone, node.Memory{}, node.Policy{WritersNotReaders: true})
	if !alone[0].Reader || alone[1].Reader {
		t.Fatalf("alone: a reader %v, b reader %v", alone[0].Reader, alone[1].Reader)
	}
}

// A node out for another reason (FLUSH TABLES WITH READ LOCK desyncs it)
// is remembered as lagging: Synced again, it stays out until its queue is
// below half the limit.
func TestDecideLagWhileDonor(t *testing.T) {
	p := node.Policy{MaxRecvQueue: 100}
	nodes := []node.Node{gn("a", 0, state(node.StateDonor), recvQ(1400)), gn("b", 1)}
	m := node.Decide(nodes, node.Memory{}, p)
	if !slices.Equal(m.Lagging, []string{"a"}) || !strings.Contains(reasonsOf(nodes, "a"), "wsrep_local_recv_queue 1400") {
		t.Fatalf("memory %+v reasons %q", m, reasonsOf(nodes, "a"))
	}
	nodes = []node.Node{gn("a", 0, recvQ(300)), gn("b", 1)}
	m = node.Decide(nodes, m, p)
	if nodes[0].InRotation {
		t.Fatal("Synced again with a queue of 300: back in rotation")
	}
	nodes = []node.Node{gn("a", 0, recvQ(20)), gn("b", 1)}
	if node.Decide(nodes, m, p); !nodes[0].InRotation {
		t.Fatalf("queue 20: still out: %v", nodes[0].Reasons)
	}
}

// The writer sections' last resort: the only Synced node may not write
// (priority 0), so a Donor that may takes the writes.
func TestDecideWriterLastResort(t *testing.T) {
	nodes := []node.Node{gn("a", 0, prio(2), state(node.StateDonor)), gn("b", 1, prio(0)), gn("c", 2, prio(1), state("Joining"))}
	m := node.Decide(nodes, node.Memory{}, node.Policy{})
	if !slices.Equal(m.Writers, []string{"a"}) || nodes[0].InRotation || !nodes[0].LastResort || !nodes[1].InRotation {
		t.Fatalf("writers %v; a in %v last resort %v; b in %v", m.Writers, nodes[0].InRotation, nodes[0].LastResort, nodes[1].InRotation)
	}
}

// The graceful maintenances (an operator's drain, pxc_maint_mode,
// wsrep_reject_queries) leave a writer's sessions to finish; a node out
// for its health does not.
func TestGracefulOut(t *testing.T) {
	cases := []struct {
		name string
		n    node.Node
		want bool
	}{
		{"in rotation", gn("a", 0), false},
		{"operator drain", gn("a", 0, with(func(n *node.Node) { n.Drain = &node.AdminDrain{By: "ops"} })), true},
		{"pxc_maint_mode MAINTENANCE", gn("a", 0, with(func(n *node.Node) { n.MaintMode = "MAINTENANCE" })), true},
		{"pxc_maint_mode SHUTDOWN", gn("a", 0, with(func(n *node.Node) { n.MaintMode = "SHUTDOWN" })), true},
		{"pxc_maint_mode DISABLED", gn("a", 0, with(func(n *node.Node) { n.MaintMode = node.MaintDisabled })), false},
		{"wsrep_reject_queries ALL", gn("a", 0, with(func(n *node.Node) { n.RejectQueries = "ALL" })), true},
		{"wsrep_reject_queries NONE", gn("a", 0, with(func(n *node.Node) { n.RejectQueries = node.RejectNone })), false},
		{"not Synced", gn("a", 0, state("Joined")), false},
	}
	for _, tc := range cases {
		if got := tc.n.GracefulOut(); got != tc.want {
			t.Errorf("%s: GracefulOut = %v, want %v", tc.name, got, tc.want)
		}
	}
}
