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
	return kvs
}
