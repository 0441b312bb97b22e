package galera

import "testing"

func TestPickWriter(t *testing.T) {
	synced := func(id string, idx int) Candidate { return Candidate{ID: id, State: "Synced", Index: idx} }
	tests := []struct {
		name    string
		nodes   []Candidate
		current string
		want    string
	}{
		{"none", nil, "", ""},
		{"lowest index wins", []Candidate{synced("a", 2), synced("b", 0), synced("c", 1)}, "", "b"},
		{"not synced skipped", []Candidate{{ID: "b", State: "Donor/Desynced", Index: 0}, synced("a", 2), synced("c", 1)}, "", "c"},
		{"sticky while synced", []Candidate{synced("a", 0), synced("b", 1)}, "b", "b"},
		{"writer not synced moves", []Candidate{synced("a", 1), {ID: "b", State: "Joined", Index: 0}, synced("c", 2)}, "b", "a"},
		{"writer gone moves", []Candidate{synced("a", 1), synced("c", 0)}, "b", "c"},
		{"returning node does not take back", []Candidate{synced("a", 0), synced("c", 1)}, "c", "c"},
		{"none synced", []Candidate{{ID: "a", State: "Joining", Index: 0}, {ID: "b", State: "Unreachable", Index: 1}}, "a", ""},
		{"unknown index after known", []Candidate{synced("a", -1), synced("b", 5)}, "", "b"},
		{"ties by id", []Candidate{synced("b", -1), synced("a", -1)}, "", "a"},
		{"no state counts as synced", []Candidate{{ID: "a", Index: -1}}, "", "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PickWriter(tt.nodes, tt.current); got != tt.want {
				t.Fatalf("PickWriter = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestPickWriterAgrees: load balancers that see the same nodes in any order
// and start without a writer pick the same one.
func TestPickWriterAgrees(t *testing.T) {
	a := []Candidate{{ID: "x", State: "Synced", Index: 2}, {ID: "y", State: "Synced", Index: 1}, {ID: "z", State: "Donor/Desynced", Index: 0}}
	b := []Candidate{a[2], a[0], a[1]}
	if PickWriter(a, "") != PickWriter(b, "") || PickWriter(a, "") != "y" {
		t.Fatalf("order changed the writer: %q vs %q", PickWriter(a, ""), PickWriter(b, ""))
	}
}
