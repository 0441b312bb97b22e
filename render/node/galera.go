package node

// Galera's state names, as wsrep_local_state_comment says them.
const (
	StateSynced  = "Synced"
	StateDonor   = "Donor/Desynced"
	StateJoining = "Joining"
	StateJoined  = "Joined"
	// StateUnreachable is not Galera's: a registrar publishes it while
	// its MySQL does not answer. Like every state but Synced, it takes
	// the node out of rotation.
	StateUnreachable = "Unreachable"
)

// ValidState reports whether s may be published as a node's state: a
// Galera wsrep_local_state_comment (some have spaces), or a token of
// [A-Za-z0-9_.:/-] of at most 253 bytes. Anything else (a newline, a
// quote...) makes the node a Problem, never part of a config.
func ValidState(s string) bool {
	return isKnownState(s) || isToken(s, "_.:/-") && len(s) <= maxTokenLen
}

// PickWriter returns the ID of the one node that should take writes, or ""
// when no node is Synced (Node.Synced: Synced, or no state published).
//
// It keeps current while current is present and Synced, so the writer only
// changes when it stops being Synced (a node that comes back does not take
// the writes back: no failback flapping). Otherwise it picks the Synced node
// with the lowest wsrep_local_index, as MaxScale's galeramon does; Galera
// gives every member of a primary component the same view of these
// indexes, so load balancers that start from no writer pick the same one.
// Nodes with an unknown index come after those with one; ties go to the
// smaller ID.
func PickWriter(nodes []Node, current string) string {
	best := -1
	for i, n := range nodes {
		if !n.Synced {
			continue
		}
		if current != "" && n.ID == current {
			return current
		}
		if best < 0 || writerBefore(n, nodes[best]) {
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	return nodes[best].ID
}

func writerBefore(a, b Node) bool {
	ak, bk := a.Index >= 0, b.Index >= 0
	switch {
	case ak != bk:
		return ak
	case ak && a.Index != b.Index:
		return a.Index < b.Index
	}
	return a.ID < b.ID
}
