package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Layout is how a registrar writes a node under the prefix. Parse reads
// both, and a node value ("ip:port", "ip") too.
type Layout string

// Layouts a registrar writes.
const (
	// LayoutDir is the original fleet discovery unit's layout: one key per
	// field, <prefix>/<id>/ip, /port, /host, /service_instance_name, plus
	// /wsrep_local_state_comment and /wsrep_local_index with a state.
	LayoutDir Layout = "dir"
	// LayoutJSON is one key, <prefix>/<id>, holding a JSON object
	// {"ip","port","host","service_instance_name","state","index"}.
	LayoutJSON Layout = "json"
)

// ErrLayout is wrapped by ParseLayout's error.
var ErrLayout = errors.New("unknown layout")

// ParseLayout accepts "dir" and "json".
func ParseLayout(s string) (Layout, error) {
	switch Layout(s) {
	case LayoutDir, LayoutJSON:
		return Layout(s), nil
	}
	return "", fmt.Errorf("layout %q: %w: want dir or json", s, ErrLayout)
}

// Registration is what a registrar publishes about its node.
type Registration struct {
	ID                  string
	IP                  string
	Port                int
	Host                string // optional
	ServiceInstanceName string // optional
	State               string // optional Galera state
	Index               int    // wsrep_local_index, negative when unknown
	// Signals are the other Galera signals, as published ("" each: not
	// published): ON/OFF, enum names, numbers in decimal.
	Signals Signals
	// Priority is the writer priority ("" not published).
	Priority string
	// CheckPort is the node's own health-check port (0 not published).
	CheckPort int
}

// Signals are the Galera signals a registrar publishes besides the state
// and index (signals.go has their names), each "" when not published.
type Signals struct {
	Ready               string // wsrep_ready ON/OFF
	ClusterStatus       string // wsrep_cluster_status
	Desync              string // wsrep_desync ON/OFF
	RejectQueries       string // wsrep_reject_queries
	DonorRejectsQueries string // wsrep_sst_donor_rejects_queries ON/OFF
	ReadOnly            string // read_only ON/OFF
	MaintMode           string // pxc_maint_mode ("" on MariaDB: it has none)
	RecvQueue           string // wsrep_local_recv_queue
	FlowControlPaused   string // wsrep_flow_control_paused
}

// fields lists the published signals by name, in a fixed order.
func (s Signals) fields() [][2]string {
	all := [][2]string{
		{SigReady, s.Ready}, {SigClusterStatus, s.ClusterStatus}, {SigDesync, s.Desync},
		{SigRejectQueries, s.RejectQueries}, {SigDonorRejectsQueries, s.DonorRejectsQueries},
		{SigReadOnly, s.ReadOnly}, {SigMaintMode, s.MaintMode}, {SigRecvQueue, s.RecvQueue},
		{SigFlowControlPaused, s.FlowControlPaused},
	}
	out := all[:0]
	for _, f := range all {
		if f[1] != "" {
			out = append(out, f)
		}
	}
	return out
}

// Encode returns the keys and values that register r under prefix in
// layout. Parse reads them back as one node (the registrar checks it).
func Encode(prefix string, r Registration, layout Layout) map[string]string {
	base := TrimPrefix(prefix) + "/" + r.ID
	if layout == LayoutJSON {
		v := struct {
			IP    string `json:"ip"`
			Port  int    `json:"port"`
			Host  string `json:"host,omitempty"`
			SIN   string `json:"service_instance_name,omitempty"`
			State string `json:"state,omitempty"`
			Index *int   `json:"index,omitempty"`
		}{IP: r.IP, Port: r.Port, Host: r.Host, SIN: r.ServiceInstanceName, State: r.State}
		if r.Index >= 0 {
			i := r.Index
			v.Index = &i
		}
		b, _ := json.Marshal(v) // strings and ints only: cannot fail
		if extra := r.extraFields(); len(extra) > 0 {
			// Signals go as more string fields of the same object.
			var m map[string]any
			_ = json.Unmarshal(b, &m)
			for _, f := range extra {
				m[f[0]] = f[1]
			}
			b, _ = json.Marshal(m)
		}
		return map[string]string{base: string(b)}
	}
	kvs := map[string]string{
		base + "/" + fieldIP:   r.IP,
		base + "/" + fieldPort: strconv.Itoa(r.Port),
	}
	if r.Host != "" {
		kvs[base+"/"+fieldHost] = r.Host
	}
	if r.ServiceInstanceName != "" {
		kvs[base+"/"+fieldSIN] = r.ServiceInstanceName
	}
	if r.State != "" {
		kvs[base+"/"+fieldWsrepSC] = r.State
	}
	if r.Index >= 0 {
		kvs[base+"/"+fieldWsrepIdx] = strconv.Itoa(r.Index)
	}
	for _, f := range r.extraFields() {
		kvs[base+"/"+f[0]] = f[1]
	}
	return kvs
}

// extraFields are the signals, priority and check port to publish.
func (r Registration) extraFields() [][2]string {
	out := r.Signals.fields()
	if r.Priority != "" {
		out = append(out, [2]string{SigPriority, r.Priority})
	}
	if r.CheckPort > 0 {
		out = append(out, [2]string{SigCheckPort, strconv.Itoa(r.CheckPort)})
	}
	return out
}

// Normalized returns s with each signal spelled as Parse reads it back
// (ON/OFF, Galera's enum names, numbers), and the names of the signals
// dropped because Parse would not read them (a registrar never publishes
// a value that would drain its node).
func (s Signals) Normalized() (Signals, []string) {
	var dropped []string
	onOff := func(name string, v *string) {
		if *v == "" {
			return
		}
		b, ok := parseOnOff(*v)
		if !ok {
			dropped = append(dropped, name)
		}
		*v = b
	}
	enum := func(name string, v *string, allowed ...string) {
		if *v == "" {
			return
		}
		e, ok := parseEnum(*v, allowed...)
		if !ok {
			dropped = append(dropped, name)
		}
		*v = e
	}
	onOff(SigReady, &s.Ready)
	onOff(SigDesync, &s.Desync)
	onOff(SigDonorRejectsQueries, &s.DonorRejectsQueries)
	onOff(SigReadOnly, &s.ReadOnly)
	enum(SigClusterStatus, &s.ClusterStatus, ClusterPrimary, "non-Primary", "Disconnected")
	enum(SigRejectQueries, &s.RejectQueries, RejectNone, "ALL", "ALL_KILL")
	enum(SigMaintMode, &s.MaintMode, MaintDisabled, "SHUTDOWN", "MAINTENANCE")
	if s.RecvQueue != "" {
		if q, err := strconv.ParseInt(s.RecvQueue, 10, 64); err != nil || q < 0 || q > maxRecvQueue {
			dropped = append(dropped, SigRecvQueue)
			s.RecvQueue = ""
		} else {
			s.RecvQueue = strconv.FormatInt(q, 10)
		}
	}
	if s.FlowControlPaused != "" {
		if f, err := strconv.ParseFloat(s.FlowControlPaused, 64); err != nil || f < 0 || f > 1 {
			dropped = append(dropped, SigFlowControlPaused)
			s.FlowControlPaused = ""
		} else {
			s.FlowControlPaused = strconv.FormatFloat(f, 'f', 2, 64)
		}
	}
	return s, dropped
}
