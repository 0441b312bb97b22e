package node

import (
	"fmt"
	"slices"
	"strings"
)

// Policy is how the nodes of one section (one service: a prefix or a
// cluster under it) are put in rotation and how writers are chosen.
type Policy struct {
	// MaxRecvQueue drains a node whose published wsrep_local_recv_queue
	// is above it, until it is below half of it (hysteresis); 0: off.
	MaxRecvQueue int64
	// MaxWriters is how many nodes take writes in single-writer sections
	// (1 when 0).
	MaxWriters int
	// WriterFailback gives the writes back to the preferred node when it
	// is back; without it a writer keeps them while it stays in rotation.
	WriterFailback bool
	// WritersNotReaders keeps writers out of the reader section
	// (--writer-is-reader=false), unless no other reader is left.
	WritersNotReaders bool
}

func (p Policy) maxWriters() int {
	if p.MaxWriters > 0 {
		return p.MaxWriters
	}
	return 1
}

// Memory is what the decision for a section remembers for the next one:
// its writers (kept while they stay eligible, unless WriterFailback) and
// the nodes drained for apply lag (hysteresis). It holds node IDs only.
type Memory struct {
	Writers []string `json:"writers,omitempty"`
	Lagging []string `json:"lagging,omitempty"`
}

// Decide sets the rotation fields (InRotation, Writable, Reader,
// LastResort, Lagging, IsWriter, Reasons) of nodes, the valid nodes of one
// section, and returns what the next decision for that section must
// remember. It is pure: the same nodes, memory and policy give the same
// result on every load balancer.
//
// A node is in rotation when it is Synced (or publishes no state), ready,
// in the Primary component, not rejecting queries, not in maintenance, not
// drained by an operator, every signal it publishes is readable, and
// Galera's own wsrep_notify record (when newer than its published state)
// does not say otherwise. A Donor/Desynced node (a donor, or desynced)
// takes traffic only when no other node of the section can: the last
// resort. A node whose recv queue stays above MaxRecvQueue is drained
// while another node of the section is in rotation.
func Decide(nodes []Node, prev Memory, p Policy) Memory {
	view := newestPrimaryView(nodes)
	type cand struct {
		donor bool // fit but for being Donor/Desynced
	}
	cands := make([]cand, len(nodes))
	anyFit := false
	for i := range nodes {
		n := &nodes[i]
		n.InRotation, n.Writable, n.Reader, n.LastResort, n.Lagging, n.IsWriter = false, false, false, false, false, false
		n.Reasons = nil
		state, via := n.effectiveState()
		donor := false
		switch {
		case state == "" || state == StateSynced:
			if n.Desync == "ON" {
				donor = true
			}
		case isDonorState(state):
			donor = true
		default:
			n.Reasons = append(n.Reasons, fmt.Sprintf("Galera state %q%s is not Synced", state, via))
		}
		if donor && n.DonorRejectsQueries == "ON" {
			n.Reasons = append(n.Reasons, "Donor/Desynced with wsrep_sst_donor_rejects_queries ON")
			donor = false
		}
		if n.Ready == "OFF" {
			n.Reasons = append(n.Reasons, "wsrep_ready OFF")
		}
		if n.ClusterStatus != "" && n.ClusterStatus != ClusterPrimary {
			n.Reasons = append(n.Reasons, fmt.Sprintf("wsrep_cluster_status %s: not in the Primary component", n.ClusterStatus))
		}
		if r := n.Notify; r != nil && r.Primary != nil && !*r.Primary && r.Rev >= n.StateRev {
			n.Reasons = append(n.Reasons, "not in the Primary component (wsrep_notify --primary no)")
		}
		if n.RejectQueries != "" && n.RejectQueries != RejectNone {
			n.Reasons = append(n.Reasons, "wsrep_reject_queries "+n.RejectQueries)
		}
		if n.MaintMode != "" && n.MaintMode != MaintDisabled {
			n.Reasons = append(n.Reasons, "pxc_maint_mode "+n.MaintMode)
		}
		if why := view.excludes(n); why != "" {
			n.Reasons = append(n.Reasons, why)
		}
		for _, b := range n.Bad {
			n.Reasons = append(n.Reasons, "unreadable signal: "+b)
		}
		// An operator's drain wins over everything, last resort included.
		if n.Drain != nil {
			n.Reasons = append(n.Reasons, "drained by an operator ("+n.Drain.String()+")")
		}
		if len(n.Reasons) == 0 {
			if donor {
				cands[i].donor = true
				n.Reasons = append(n.Reasons, fmt.Sprintf("Galera state %q%s is not Synced: a Donor/Desynced node takes traffic only when no Synced node is left", donorName(state), via))
			} else {
				n.InRotation = true
				anyFit = true
			}
		}
	}

	// Apply lag, with hysteresis, never emptying the section. A node out
	// for another reason (a Donor: FLUSH TABLES WITH READ LOCK desyncs)
	// is marked lagging too, so that it stays out once Synced again
	// until its queue is below half the limit.
	var lagging []string
	if p.MaxRecvQueue > 0 {
		was := map[string]bool{}
		for _, id := range prev.Lagging {
			was[id] = true
		}
		half := p.MaxRecvQueue / 2
		var lag []int
		for i := range nodes {
			n := &nodes[i]
			if !n.RecvQueueSet {
				continue
			}
			if n.RecvQueue > p.MaxRecvQueue || was[n.ID] && n.RecvQueue >= half {
				lag = append(lag, i)
			}
		}
		others := 0
		for i := range nodes {
			if nodes[i].InRotation && !slices.Contains(lag, i) {
				others++
			}
		}
		for _, i := range lag {
			n := &nodes[i]
			n.Lagging = true
			lagging = append(lagging, n.ID)
			why := fmt.Sprintf("wsrep_local_recv_queue %d above --max-recv-queue %d (back below %d)", n.RecvQueue, p.MaxRecvQueue, half)
			switch {
			case n.InRotation && others == 0:
				n.Reasons = append(n.Reasons, why+"; kept: every node of the section lags")
			case n.InRotation:
				n.InRotation = false
				n.Reasons = append(n.Reasons, why)
			default:
				n.Reasons = append(n.Reasons, why)
			}
		}
	}

	// The last resort: no node is in rotation, so the Donor/Desynced ones
	// that are otherwise fit take the traffic.
	if !anyFit {
		for i := range nodes {
			if cands[i].donor {
				n := &nodes[i]
				n.InRotation, n.LastResort = true, true
				n.Reasons = []string{"Donor/Desynced, in rotation as the last resort: no Synced node is left in the section"}
			}
		}
	}
	for i := range nodes {
		n := &nodes[i]
		n.Writable = n.InRotation && !n.ReadOnly
		if n.InRotation && n.ReadOnly {
			n.Reasons = append(n.Reasons, "read_only ON: takes reads only (reader section)")
		}
	}

	writers := pickWriters(nodes, prev.Writers, p.maxWriters(), p.WriterFailback)
	if len(writers) == 0 {
		// No node in rotation may write (the Synced ones are read-only or
		// have priority <= 0): the writer sections' last resort is a
		// Donor/Desynced node that may.
		var donors []Node
		for i := range nodes {
			if cands[i].donor && !nodes[i].InRotation && !nodes[i].ReadOnly {
				d := nodes[i]
				d.Writable = true
				donors = append(donors, d)
			}
		}
		writers = pickWriters(donors, prev.Writers, p.maxWriters(), p.WriterFailback)
		for i := range nodes {
			if slices.Contains(writers, nodes[i].ID) {
				nodes[i].LastResort = true
				nodes[i].Reasons = append(nodes[i].Reasons, "Donor/Desynced, a writer as the last resort: no node in rotation may take writes")
			}
		}
	}
	isWriter := map[string]bool{}
	for _, id := range writers {
		isWriter[id] = true
	}
	readers := 0
	for i := range nodes {
		n := &nodes[i]
		n.IsWriter = isWriter[n.ID]
		n.Reader = n.InRotation && !(p.WritersNotReaders && n.IsWriter)
		if n.Reader {
			readers++
		}
	}
	if readers == 0 && p.WritersNotReaders {
		for i := range nodes {
			n := &nodes[i]
			if n.InRotation {
				n.Reader = true
				n.Reasons = append(n.Reasons, "writer takes reads too: no other node is in rotation (--writer-is-reader=false)")
			}
		}
	}
	slices.Sort(lagging)
	return Memory{Writers: writers, Lagging: lagging}
}

// GracefulOut reports whether the node is out for a graceful
// maintenance: an operator's drain, pxc_maint_mode, wsrep_reject_queries.
// Its sessions are left to finish, also when it was a writer.
func (n *Node) GracefulOut() bool {
	return n.Drain != nil || n.MaintMode != "" && n.MaintMode != MaintDisabled || n.RejectQueries != "" && n.RejectQueries != RejectNone
}

// isDonorState: Galera's names for a donor or a desynced node.
func isDonorState(s string) bool {
	switch s {
	case StateDonor, "Donor", "Desynced":
		return true
	}
	return false
}

func donorName(state string) string {
	if state == "" || state == StateSynced {
		return "Synced, wsrep_desync ON"
	}
	return state
}

// effectiveState is the node's Galera state: the published one, or what
// its wsrep_notify record says when that is newer (Galera pushes it at
// once; the registrar polls). via names where it came from.
func (n *Node) effectiveState() (state, via string) {
	state = n.State
	if r := n.Notify; r != nil && r.Status != "" && r.Rev > n.StateRev {
		if s := notifyState(r.Status); s != "" {
			return s, " (wsrep_notify)"
		}
	}
	return state, ""
}

// notifyState maps wsrep_notify_cmd's --status to a state comment ("" for
// a status that says nothing about serving, e.g. "connected" before the
// node has joined: judged like Initialized).
func notifyState(status string) string {
	switch strings.ToLower(status) {
	case "synced":
		return StateSynced
	case "donor":
		return StateDonor
	case "joiner":
		return StateJoining
	case "joined":
		return StateJoined
	case "":
		return ""
	}
	return strings.ToUpper(status[:1]) + strings.ToLower(status[1:])
}

// primaryView is the newest view of a Primary component that a node of
// the section reported through wsrep_notify.
type primaryView struct {
	owner string // node ID that reported it
	rec   *NotifyRecord
}

func newestPrimaryView(nodes []Node) primaryView {
	var v primaryView
	for i := range nodes {
		r := nodes[i].Notify
		if r == nil || r.Primary == nil || !*r.Primary || len(r.Members) == 0 || r.Rev == 0 {
			continue
		}
		if v.rec == nil || r.Rev > v.rec.Rev {
			v = primaryView{owner: nodes[i].ID, rec: r}
		}
	}
	return v
}

// excludes says why n is not in the newest Primary view ("" when it is, or
// when nothing can be said: n has no record of its own, or its record is
// newer than the view).
func (v primaryView) excludes(n *Node) string {
	if v.rec == nil || v.owner == n.ID || n.Notify == nil || n.Notify.Rev >= v.rec.Rev {
		return ""
	}
	self, ok := n.Notify.Self()
	if !ok || v.rec.HasMember(self.UUID) {
		return ""
	}
	return fmt.Sprintf("not a member of the Primary component: %s reported a view of %d members without it (wsrep_notify)", v.owner, len(v.rec.Members))
}

// pickWriters returns up to max writers among the writable nodes with a
// priority that allows it (unset, or positive): the previous writers that
// are still eligible first (unless failback), then the best by rank.
func pickWriters(nodes []Node, prev []string, max int, failback bool) []string {
	var elig []int
	for i := range nodes {
		n := &nodes[i]
		if n.Writable && (!n.PrioritySet || n.Priority > 0) {
			elig = append(elig, i)
		}
	}
	if max == 1 && len(elig) > 1 {
		// One writer (the usual case): the best one, in one pass instead
		// of a sort of every node (at 10,000 nodes, milliseconds).
		best := elig[0]
		for _, i := range elig[1:] {
			if writerRank(nodes[i], nodes[best]) < 0 {
				best = i
			}
		}
		if !failback {
			for _, id := range prev {
				for _, i := range elig {
					if nodes[i].ID == id {
						return []string{id}
					}
				}
			}
		}
		return []string{nodes[best].ID}
	}
	slices.SortFunc(elig, func(a, b int) int { return writerRank(nodes[a], nodes[b]) })
	var out []string
	if !failback {
		for _, id := range prev {
			if len(out) == max {
				break
			}
			if slices.ContainsFunc(elig, func(i int) bool { return nodes[i].ID == id }) && !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	for _, i := range elig {
		if len(out) == max {
			break
		}
		if !slices.Contains(out, nodes[i].ID) {
			out = append(out, nodes[i].ID)
		}
	}
	return out
}

// writerRank orders writer candidates: a positive priority before none,
// lower priority first; then the lower wsrep_local_index (known before
// unknown), as MaxScale's galeramon does, then the ID. Every input is
// published in etcd, so load balancers that see the same keys rank the
// same.
func writerRank(a, b Node) int {
	if a.PrioritySet != b.PrioritySet {
		if a.PrioritySet {
			return -1
		}
		return 1
	}
	if a.PrioritySet && a.Priority != b.Priority {
		return a.Priority - b.Priority
	}
	ak, bk := a.Index >= 0, b.Index >= 0
	switch {
	case ak != bk:
		if ak {
			return -1
		}
		return 1
	case ak && a.Index != b.Index:
		return a.Index - b.Index
	}
	return strings.Compare(a.ID, b.ID)
}
