package galera

// Candidate is one node as the single-writer choice sees it.
type Candidate struct {
	ID    string
	State string // published wsrep_local_state_comment; "" when unpublished
	Index int    // wsrep_local_index, negative when unknown
}

// synced: a node takes traffic when it says Synced, or says nothing (a
// registration without a state is not known to be anything else; this is
// render.Node.Synced's rule).
func (c Candidate) synced() bool { return c.State == "" || c.State == stateComment4 }

// PickWriter returns the ID of the one node that should take writes, or ""
// when no node is Synced.
//
// It keeps current while current is present and Synced, so the writer only
// changes when it stops being Synced (a node that comes back does not take
// the writes back: no failback flapping). Otherwise it picks the Synced node
// with the lowest wsrep_local_index, as MaxScale's galeramon does; Galera
// gives every member of a primary component the same view of these
// indexes, so load balancers that start from no writer pick the same one.
// Nodes with an unknown index come after those with one; ties go to the
// smaller ID.
func PickWriter(nodes []Candidate, current string) string {
	best := -1
	for i, n := range nodes {
		if !n.synced() {
			continue
		}
		if current != "" && n.ID == current {
			return current
		}
		if best < 0 || less(n, nodes[best]) {
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	return nodes[best].ID
}

func less(a, b Candidate) bool {
	ak, bk := a.Index >= 0, b.Index >= 0
	switch {
	case ak != bk:
		return ak
	case ak && a.Index != b.Index:
		return a.Index < b.Index
	}
	return a.ID < b.ID
}
