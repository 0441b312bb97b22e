package node_test

import (
	"testing"

	"github.com/haconfd/haconfd/render/node"
)

func cand(id, state string, idx int) node.Node {
	return node.Node{ID: id, State: state, Index: idx, Synced: state == "" || state == node.StateSynced}
}

func TestPickWriter(t *testing.T) {
	synced := func(id string, idx int) node.Node { return cand(id, "Synced", idx) }
	tests := []struct {
		name    string
		nodes   []node.Node
		current string
		want    string
	}{
		{"none", nil, "", ""},
		{"lowest index wins", []node.Node{synced("a", 2), synced("b", 0), synced("c", 1)}, "", "b"},
		{"not synced skipped", []node.Node{cand("b", "Donor/Desynced", 0), synced("a", 2), synced("c", 1)}, "", "c"},
		{"sticky while synced", []node.Node{synced("a", 0), synced("b", 1)}, "b", "b"},
		{"writer not synced moves", []node.Node{synced("a", 1), cand("b", "Joined", 0), synced("c", 2)}, "b", "a"},
		{"writer gone moves", []node.Node{synced("a", 1), synced("c", 0)}, "b", "c"},
		{"returning node does not take back", []node.Node{synced("a", 0), synced("c", 1)}, "c", "c"},
		{"none synced", []node.Node{cand("a", "Joining", 0), cand("b", "Unreachable", 1)}, "a", ""},
		{"unknown index after known", []node.Node{synced("a", -1), synced("b", 5)}, "", "b"},
		{"ties by id", []node.Node{synced("b", -1), synced("a", -1)}, "", "a"},
		{"no state counts as synced", []node.Node{cand("a", "", -1)}, "", "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := node.PickWriter(tt.nodes, tt.current); got != tt.want {
				t.Fatalf("PickWriter = %q, want %q", got, tt.want)
			}
		})
	}
}

// Load balancers that see the same nodes in any order and start without
// a writer pick the same one.
func TestPickWriterAgrees(t *testing.T) {
	a := []node.Node{cand("x", "Synced", 2), cand("y", "Synced", 1), cand("z", "Donor/Desynced", 0)}
	b := []node.Node{a[2], a[0], a[1]}
	if node.PickWriter(a, "") != node.PickWriter(b, "") || node.PickWriter(a, "") != "y" {
		t.Fatalf("order changed the writer: %q vs %q", node.PickWriter(a, ""), node.PickWriter(b, ""))
	}
}

func TestValidState(t *testing.T) {
	for s, want := range map[string]bool{
		"Synced": true, "Donor/Desynced": true, "Joining: receiving State Transfer": true, "Unreachable": true,
		"Not Synced": false, "Synced\nserver x": false, "": false, "a\"b": false,
	} {
		if got := node.ValidState(s); got != want {
			t.Errorf("ValidState(%q) = %v, want %v", s, got, want)
		}
	}
}

// What a registrar encodes, the parser reads back as that one node, in
// both layouts.
func TestEncodeParses(t *testing.T) {
	r := node.Registration{ID: "db1", IP: "10.0.0.1", Port: 3307, Host: "db1.example", ServiceInstanceName: "galera@1.service", State: "Donor/Desynced", Index: 2}
	for _, layout := range []node.Layout{node.LayoutDir, node.LayoutJSON} {
		kvs := node.Encode("/components/galera", r, layout)
		nodes, problems := node.Parse("/components/galera", kvs)
		if len(problems) != 0 || len(nodes) != 1 {
			t.Fatalf("%s: %v %v", layout, nodes, problems)
		}
		n := nodes[0]
		if n.ID != r.ID || n.IP != r.IP || n.Port != r.Port || n.Host != r.Host || n.ServiceInstanceName != r.ServiceInstanceName ||
			n.State != r.State || n.Index != r.Index || n.Synced {
			t.Errorf("%s: read back %+v from %v", layout, n, kvs)
		}
	}
	if _, err := node.ParseLayout("yaml"); err == nil {
		t.Error("ParseLayout accepted yaml")
	}
}
