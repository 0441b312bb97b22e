package node

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Galera signals a registrar publishes next to a node's state (issue 15),
// each as <prefix>/<id>/<name> in the directory layout or as a field of
// the JSON value. A value that is not what its name says keeps the node
// configured but out of rotation (Node.Bad), with a warning naming the
// key: a node whose signals cannot be read never takes new connections,
// and is never removed because of them either.
const (
	SigReady               = "wsrep_ready"                     // ON / OFF
	SigClusterStatus       = "wsrep_cluster_status"            // Primary, non-Primary, Disconnected
	SigDesync              = "wsrep_desync"                    // ON / OFF
	SigRejectQueries       = "wsrep_reject_queries"            // NONE, ALL, ALL_KILL
	SigDonorRejectsQueries = "wsrep_sst_donor_rejects_queries" // ON / OFF
	SigReadOnly            = "read_only"                       // ON / OFF
	SigMaintMode           = "pxc_maint_mode"                  // DISABLED, SHUTDOWN, MAINTENANCE (Percona XtraDB Cluster)
	SigRecvQueue           = "wsrep_local_recv_queue"          // writesets received, not yet applied
	SigFlowControlPaused   = "wsrep_flow_control_paused"       // 0-1
	SigLastCommitted       = "wsrep_last_committed"            // seqno (severalnines' image publishes it)
	SigPriority            = "priority"                        // writer priority: lowest positive wins, <= 0 never a writer
	SigCheckPort           = "check_port"                      // the node's own health-check port
	SigDrain               = "drain"                           // an operator's drain: haconfd drain NODE
	SigNotify              = "wsrep_notify"                    // haconfd notify, Galera's wsrep_notify_cmd
)

// sig is the slot of a signal in nodeFields.sig.
type sig int

const (
	sigReady sig = iota
	sigClusterStatus
	sigDesync
	sigReject
	sigDonorRejects
	sigReadOnly
	sigMaint
	sigRecvQueue
	sigFlowPaused
	sigLastCommitted
	sigPriority
	sigCheckPort
	sigDrain
	sigNotify
	numSig
)

var sigNames = [numSig]string{
	SigReady, SigClusterStatus, SigDesync, SigRejectQueries, SigDonorRejectsQueries, SigReadOnly,
	SigMaintMode, SigRecvQueue, SigFlowControlPaused, SigLastCommitted, SigPriority, SigCheckPort,
	SigDrain, SigNotify,
}

// sigOf returns the slot of a signal field name.
func sigOf(name string) (sig, bool) {
	for i, n := range sigNames {
		if n == name {
			return sig(i), true
		}
	}
	return 0, false
}

// Cluster statuses and modes as Galera and Percona spell them.
const (
	ClusterPrimary   = "Primary"
	RejectNone       = "NONE"
	MaintDisabled    = "DISABLED"
	maxPriority      = 1 << 20
	maxRecvQueue     = 1 << 40
	maxMembers       = 256
	maxNotifyValue   = 64 << 10
	maxDrainValueLen = 4 << 10
)

// AdminDrain is an operator's drain of a node (`haconfd drain NODE`): the
// node takes no new connections until it is undone, whatever its health.
type AdminDrain struct {
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
	Since  string `json:"since,omitempty"` // RFC 3339
	// Unreadable is set when the key's value is not such a JSON object:
	// the node is drained all the same (the key exists), who and why are
	// unknown.
	Unreadable bool `json:"-"`
}

// String is "by B since S: R" for reasons and logs.
func (d AdminDrain) String() string {
	if d.Unreadable {
		return "drain key holds no readable who/why"
	}
	s := "by " + orUnknown(d.By)
	if d.Since != "" {
		s += " since " + d.Since
	}
	if d.Reason != "" {
		s += ": " + d.Reason
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

// Member is one member of a Galera view as wsrep_notify_cmd gets it
// (--members uuid/name/incoming_address,...).
type Member struct {
	UUID string `json:"uuid"`
	Name string `json:"name,omitempty"`
	Addr string `json:"addr,omitempty"`
}

// NotifyRecord is what `haconfd notify` (Galera's wsrep_notify_cmd) last
// wrote for a node: its own status and the view it is in.
type NotifyRecord struct {
	Status  string   `json:"status,omitempty"`  // Galera's --status, e.g. "synced", "donor", "joiner", "disconnecting"
	Primary *bool    `json:"primary,omitempty"` // --primary yes|no
	Cluster string   `json:"cluster,omitempty"` // --uuid: the cluster state UUID
	Index   *int     `json:"index,omitempty"`   // --index: this node's place in Members
	Members []Member `json:"members,omitempty"` // --members
	At      string   `json:"at,omitempty"`      // when it was written (RFC 3339), for people
	// Rev is the etcd revision the record was written at (0 when the
	// snapshot carries no revisions): ordering records by it is exact.
	Rev int64 `json:"-"`
}

// Self is this node's own member entry (its node UUID), false when the
// record has no view.
func (r NotifyRecord) Self() (Member, bool) {
	if r.Index == nil || *r.Index < 0 || *r.Index >= len(r.Members) {
		return Member{}, false
	}
	return r.Members[*r.Index], true
}

// HasMember reports whether uuid is in the record's view.
func (r NotifyRecord) HasMember(uuid string) bool {
	for _, m := range r.Members {
		if m.UUID == uuid {
			return true
		}
	}
	return false
}

// OutOfService is the Galera status names (as wsrep_notify_cmd gets
// them) under which a node serves nothing: every one but "synced" and
// "donor" (a donor is judged like a Donor/Desynced state).
func notifyStatusServes(s string) bool {
	switch strings.ToLower(s) {
	case "synced", "donor", "":
		return true
	}
	return false
}

// parseOnOff accepts ON/OFF and their usual spellings, case-insensitive,
// and returns "ON" or "OFF".
func parseOnOff(v string) (string, bool) {
	switch strings.ToUpper(v) {
	case "ON", "1", "YES", "TRUE":
		return "ON", true
	case "OFF", "0", "NO", "FALSE":
		return "OFF", true
	}
	return "", false
}

// parseEnum returns the member of allowed that v spells, case-insensitive.
func parseEnum(v string, allowed ...string) (string, bool) {
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a, true
		}
	}
	return "", false
}

// applySignals validates the signal fields of f into n. A malformed one is
// a reason in n.Bad (the node is kept, out of rotation).
func applySignals(n *Node, f *nodeFields) {
	bad := func(s sig, why string) {
		n.Bad = append(n.Bad, fmt.Sprintf("%s %s %s", sigNames[s], quote(f.sig[s]), why))
	}
	for s := sig(0); s < numSig; s++ {
		v := f.sig[s]
		if v == "" {
			continue
		}
		switch s {
		case sigReady, sigDesync, sigDonorRejects, sigReadOnly:
			b, ok := parseOnOff(v)
			if !ok {
				bad(s, "is not ON or OFF")
				continue
			}
			switch s {
			case sigReady:
				n.Ready = b
			case sigDesync:
				n.Desync = b
			case sigDonorRejects:
				n.DonorRejectsQueries = b
			case sigReadOnly:
				n.ReadOnly = b == "ON"
			}
		case sigClusterStatus:
			c, ok := parseEnum(v, ClusterPrimary, "non-Primary", "Disconnected")
			if !ok {
				bad(s, "is not Primary, non-Primary or Disconnected")
				continue
			}
			n.ClusterStatus = c
		case sigReject:
			c, ok := parseEnum(v, RejectNone, "ALL", "ALL_KILL")
			if !ok {
				bad(s, "is not NONE, ALL or ALL_KILL")
				continue
			}
			n.RejectQueries = c
		case sigMaint:
			c, ok := parseEnum(v, MaintDisabled, "SHUTDOWN", "MAINTENANCE")
			if !ok {
				bad(s, "is not DISABLED, SHUTDOWN or MAINTENANCE")
				continue
			}
			n.MaintMode = c
		case sigRecvQueue:
			q, err := strconv.ParseInt(v, 10, 64)
			if err != nil || q < 0 || q > maxRecvQueue || !isDigits(v) {
				bad(s, "is not a whole number")
				continue
			}
			n.RecvQueue, n.RecvQueueSet = q, true
		case sigFlowPaused:
			p, err := strconv.ParseFloat(v, 64)
			if err != nil || p < 0 || p > 1 || !isToken(v, ".eE+-") {
				bad(s, "is not a number 0-1")
				continue
			}
			n.FlowControlPaused = v
		case sigLastCommitted:
			if _, err := strconv.ParseInt(v, 10, 64); err != nil || !isToken(v, "-") {
				bad(s, "is not a whole number")
				continue
			}
			n.LastCommitted = v
		case sigPriority:
			p, err := strconv.Atoi(v)
			if err != nil || p < -maxPriority || p > maxPriority || !isToken(v, "-+") {
				bad(s, fmt.Sprintf("is not a whole number -%d..%d", maxPriority, maxPriority))
				continue
			}
			n.Priority, n.PrioritySet = p, true
		case sigCheckPort:
			p, ok := parseUint(v, 65535)
			if !ok || p < 1 {
				bad(s, "is not a port 1-65535")
				continue
			}
			n.CheckPort = p
		case sigDrain:
			n.Drain = parseDrain(v)
		case sigNotify:
			r, err := parseNotify(v)
			if err != nil {
				bad(s, err.Error())
				continue
			}
			n.Notify = r
		}
	}
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parseDrain reads a drain key's value: a JSON object {"by","reason",
// "since"}; anything else still drains (Unreadable).
func parseDrain(v string) *AdminDrain {
	var d AdminDrain
	if len(v) > maxDrainValueLen || json.Unmarshal([]byte(v), &d) != nil {
		return &AdminDrain{Unreadable: true}
	}
	d.By, d.Reason, d.Since = cleanText(d.By, 128), cleanText(d.Reason, 512), cleanText(d.Since, 64)
	return &d
}

// cleanText keeps s on one line (control characters escaped) and at most
// limit bytes: who and why are shown in logs, /servers and the page.
func cleanText(s string, limit int) string {
	s = OneLine(s)
	if len(s) > limit {
		s = s[:limit]
	}
	return s
}

// parseNotify reads a wsrep_notify record.
func parseNotify(v string) (*NotifyRecord, error) {
	if len(v) > maxNotifyValue {
		return nil, fmt.Errorf("is longer than %d bytes", maxNotifyValue)
	}
	var r NotifyRecord
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return nil, fmt.Errorf("is not a wsrep_notify record: %s", OneLine(err.Error()))
	}
	if r.Status != "" && !isToken(r.Status, "_-") {
		return nil, fmt.Errorf("has a status that is not a word")
	}
	if len(r.Members) > maxMembers {
		return nil, fmt.Errorf("lists more than %d members", maxMembers)
	}
	for _, m := range r.Members {
		if !isToken(m.UUID, "-") {
			return nil, fmt.Errorf("has a member whose uuid is not a UUID")
		}
	}
	r.At = cleanText(r.At, 64)
	return &r, nil
}

// scalar reads a JSON signal field: a string as is, a number as written,
// true/false as ON/OFF, an object (drain, wsrep_notify) as its JSON text.
func scalar(dst *string, raw json.RawMessage, name string) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	switch raw[0] {
	case '"':
		if err := json.Unmarshal(raw, dst); err != nil {
			return fmt.Errorf("JSON field %q is not a string", name)
		}
	case 't':
		*dst = "ON"
	case 'f':
		*dst = "OFF"
	case '{':
		*dst = string(raw)
	default:
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return fmt.Errorf("JSON field %q is not a number, string or boolean", name)
		}
		*dst = n.String()
	}
	return nil
}
