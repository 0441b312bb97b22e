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

// PickWriter returns the ID of the one node that should take writes among
// nodes judged by Synced alone (Node.Synced: Synced, or no state
// published), or "" when none is. Decide is the full policy (every
// signal, priorities, several writers); PickWriter is it for one writer
// over the Synced field, kept for callers that have nothing else.
//
// It keeps current while current is present and Synced, so the writer only
// changes when it stops being Synced. Otherwise it picks by writerRank:
// priority, then the lowest wsrep_local_index, as MaxScale's galeramon
// does, then the ID.
func PickWriter(nodes []Node, current string) string {
	c := make([]Node, len(nodes))
	for i, n := range nodes {
		c[i] = Node{ID: n.ID, Index: n.Index, Priority: n.Priority, PrioritySet: n.PrioritySet, Writable: n.Synced}
	}
	var prev []string
	if current != "" {
		prev = []string{current}
	}
	if w := pickWriters(c, prev, 1, false); len(w) > 0 {
		return w[0]
	}
	return ""
}
