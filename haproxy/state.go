package haproxy

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Admin state flags of "show servers state" (srv_admin_state), as HAProxy
// defines them (enum srv_admin). A server "disabled" in the config has
// AdminConfigMaint|AdminForcedMaint; "set server X state ready" clears
// the forced maintenance but leaves AdminConfigMaint as a marker, so
// maintenance is tested with the mask AdminMaint, never ==.
const (
	AdminForcedMaint    = 0x01 // set server X state maint, or "disabled" in the config
	AdminInheritedMaint = 0x02 // maintenance inherited from a tracked server
	AdminConfigMaint    = 0x04 // "disabled" in the config (a marker, not itself maintenance)
	AdminForcedDrain    = 0x08 // set server X state drain
	AdminInheritedDrain = 0x10
	AdminResolveMaint   = 0x20 // address resolution failed
	AdminMaint          = AdminForcedMaint | AdminInheritedMaint | AdminResolveMaint
	AdminDrain          = AdminForcedDrain | AdminInheritedDrain
)

// Operational states of "show servers state" (srv_op_state).
const (
	OpStopped  = 0
	OpStarting = 1
	OpRunning  = 2
	OpStopping = 3
)

// ServerState is one server as the running HAProxy has it, from "show
// servers state".
type ServerState struct {
	Backend string `json:"backend"`
	Name    string `json:"name"`
	Addr    string `json:"addr"` // IP (or name) as HAProxy reports it
	Port    int    `json:"port"`
	Op      int    `json:"op_state"`    // OpStopped..OpStopping
	Admin   int    `json:"admin_state"` // Admin* flags
	Weight  int    `json:"weight"`      // user weight (srv_uweight)
	// CheckActive: health checks run (srv_check_state enabled, not
	// paused), so the server's operational state follows them.
	CheckActive bool `json:"check_active"`
}

// Maint reports whether the server is in maintenance (takes no traffic).
func (s ServerState) Maint() bool { return s.Admin&AdminMaint != 0 }

// Drain reports whether the server is draining (no new connections).
func (s ServerState) Drain() bool { return s.Admin&AdminDrain != 0 }

// AdminWord is "maint", "drain" or "ready".
func (s ServerState) AdminWord() string {
	switch {
	case s.Maint():
		return "maint"
	case s.Drain():
		return "drain"
	default:
		return "ready"
	}
}

// OpWord is "down", "starting", "up" or "stopping".
func (s ServerState) OpWord() string {
	switch s.Op {
	case OpStopped:
		return "down"
	case OpStarting:
		return "starting"
	case OpRunning:
		return "up"
	case OpStopping:
		return "stopping"
	}
	return strconv.Itoa(s.Op)
}

// LiveState is every server of the running HAProxy, by backend then by
// server name.
type LiveState map[string]map[string]ServerState

// Get returns backend/server and whether HAProxy has it.
func (l LiveState) Get(backend, server string) (ServerState, bool) {
	s, ok := l[backend][server]
	return s, ok
}

// Set records s.
func (l LiveState) Set(s ServerState) {
	m := l[s.Backend]
	if m == nil {
		m = make(map[string]ServerState)
		l[s.Backend] = m
	}
	m[s.Name] = s
}

// Delete forgets backend/server.
func (l LiveState) Delete(backend, server string) {
	delete(l[backend], server)
}

// Clone returns a deep copy.
func (l LiveState) Clone() LiveState {
	out := make(LiveState, len(l))
	for b, m := range l {
		c := make(map[string]ServerState, len(m))
		for k, v := range m {
			c[k] = v
		}
		out[b] = c
	}
	return out
}

// Count is the number of servers.
func (l LiveState) Count() int {
	n := 0
	for _, m := range l {
		n += len(m)
	}
	return n
}

// Sorted returns every server sorted by backend then name.
func (l LiveState) Sorted() []ServerState {
	out := make([]ServerState, 0, l.Count())
	for _, m := range l {
		for _, s := range m {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Backend != out[j].Backend {
			return out[i].Backend < out[j].Backend
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Drift is a server whose live state differs from what was expected.
type Drift struct {
	Backend, Server string
	Was, Now        string // "" when absent
}

// DiffLive lists the servers whose admin state, address, port or weight
// differ between want and got, and the servers only one of them has.
func DiffLive(want, got LiveState) []Drift {
	var out []Drift
	desc := func(s ServerState, ok bool) string {
		if !ok {
			return ""
		}
		return fmt.Sprintf("%s:%d %s weight %d", s.Addr, s.Port, s.AdminWord(), s.Weight)
	}
	for _, w := range want.Sorted() {
		g, ok := got.Get(w.Backend, w.Name)
		if !ok || g.Addr != w.Addr || g.Port != w.Port || g.Weight != w.Weight || g.Maint() != w.Maint() || g.Drain() != w.Drain() {
			out = append(out, Drift{Backend: w.Backend, Server: w.Name, Was: desc(w, true), Now: desc(g, ok)})
		}
	}
	for _, g := range got.Sorted() {
		if _, ok := want.Get(g.Backend, g.Name); !ok {
			out = append(out, Drift{Backend: g.Backend, Server: g.Name, Now: desc(g, true)})
		}
	}
	return out
}

// ParseServersState reads the reply of "show servers state": a version
// line ("1"), a "# be_id be_name srv_id srv_name srv_addr ..." header
// naming the columns, then one line per server. Columns are found by name,
// so newer HAProxy versions with more columns read the same.
func ParseServersState(reply string) (LiveState, error) {
	out := make(LiveState)
	col := map[string]int{}
	lines := strings.Split(strings.TrimSpace(reply), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) == "" {
		return nil, fmt.Errorf("show servers state: empty reply")
	}
	if v := strings.TrimSpace(lines[0]); v != "1" {
		return nil, fmt.Errorf("show servers state: unknown format version %q", firstLine(v))
	}
	for _, line := range lines[1:] {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if h, ok := strings.CutPrefix(line, "#"); ok {
			for i, name := range strings.Fields(h) {
				col[name] = i
			}
			continue
		}
		f := strings.Fields(line)
		get := func(name string) (string, bool) {
			i, ok := col[name]
			if !ok || i >= len(f) {
				return "", false
			}
			return f[i], true
		}
		num := func(name string) (int, error) {
			v, ok := get(name)
			if !ok {
				return 0, fmt.Errorf("show servers state: no %s column in %q", name, line)
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("show servers state: %s %q is not a number", name, v)
			}
			return n, nil
		}
		be, ok1 := get("be_name")
		name, ok2 := get("srv_name")
		addr, ok3 := get("srv_addr")
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("show servers state: short line %q", line)
		}
		s := ServerState{Backend: be, Name: name, Addr: addr}
		var err error
		if s.Port, err = num("srv_port"); err != nil {
			return nil, err
		}
		if s.Op, err = num("srv_op_state"); err != nil {
			return nil, err
		}
		if s.Admin, err = num("srv_admin_state"); err != nil {
			return nil, err
		}
		if s.Weight, err = num("srv_uweight"); err != nil {
			return nil, err
		}
		if cs, err := num("srv_check_state"); err == nil {
			s.CheckActive = cs&0x04 != 0 && cs&0x08 == 0 // CHK_ST_ENABLED, not CHK_ST_PAUSED
		}
		out.Set(s)
	}
	return out, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
