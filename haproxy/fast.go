package haproxy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ServerPlan is what the runtime API can do at once to bring the servers
// of the running HAProxy to those of a desired config, and what only a
// reload can do.
type ServerPlan struct {
	Ops []ServerOp `json:"ops,omitempty"`
	// Pending are the server changes the runtime API cannot make (options
	// changed, a hostname address, a backend whose balance algorithm
	// refuses dynamic servers...), one reason each: they wait for a reload.
	Pending []string `json:"pending,omitempty"`
}

// Commands are the command lines the plan sends at once, one per op.
func (p ServerPlan) Commands() []string {
	out := make([]string, 0, len(p.Ops))
	for _, op := range p.Ops {
		if l := op.NowLine(); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// PlanServers compares the servers of desired with the servers HAProxy
// has now (live, from "show servers state"), section by section, for
// every backend or listen section that both running (the config HAProxy
// was started with) and desired have; sections only one of them has are
// a reload's business. It is pure.
//
// The runtime options of an added server are its own options over the
// running section's default-server (what HAProxy applies now); whether a
// backend accepts added or deleted servers is the running section's
// balance algorithm. A server whose options other than weight and
// disabled differ from its running line is reported Pending (a reload
// changes it) and still has its address, weight and admin state brought
// in line at once.
//
// busy reports servers the caller is draining for removal: they are left
// alone while they are not desired, and brought back (ready) when they are
// desired again. busy may be nil. caps are the running HAProxy's (a
// server with a cookie is added at runtime only where "add server" takes
// one).
func PlanServers(running, desired []byte, live LiveState, busy func(backend, server string) bool, caps Caps) (ServerPlan, error) {
	if busy == nil {
		busy = func(string, string) bool { return false }
	}
	cache := make(map[string]*server)
	rc, err := parseConfig(running, cache)
	if err != nil {
		return ServerPlan{}, fmt.Errorf("plan servers: running config: %w", err)
	}
	dc, err := parseConfig(desired, cache)
	if err != nil {
		return ServerPlan{}, fmt.Errorf("plan servers: desired config: %w", err)
	}
	var p ServerPlan
	var adds, updates, removes []ServerOp
	for _, ds := range dc.sections {
		if !ds.isProxy() {
			continue
		}
		rs := rc.byKey[ds.key]
		if rs == nil || rs.kind != ds.kind {
			continue // a new section: a reload adds it
		}
		a, u, r, pending := planSection(rs, ds, live[ds.name], busy, caps)
		adds, updates, removes = append(adds, a...), append(updates, u...), append(removes, r...)
		p.Pending = append(p.Pending, pending...)
	}
	// Removals go last: a server that replaces another one is in first.
	p.Ops = slices.Concat(adds, updates, removes)
	return p, nil
}

func planSection(rs, ds *section, live map[string]ServerState, busy func(string, string) bool, caps Caps) (adds, updates, removes []ServerOp, pending []string) {
	where := ds.label()
	backend := ds.name
	dynamic, algo := rs.dynamicBalance()
	for _, d := range ds.dupNames {
		pending = append(pending, fmt.Sprintf("server %q defined twice in %s", d, where))
	}
	for _, srv := range ds.servers {
		ls, ok := live[srv.name]
		e := rs.effectiveOf(srv)
		if !ok {
			if busy(backend, srv.name) {
				continue // its removal is ending: planned again once it has
			}
			op, why := addOp(rs, srv, e, dynamic, algo, caps)
			if why != "" {
				pending = append(pending, why)
				continue
			}
			adds = append(adds, op)
			continue
		}
		if old := rs.byName[srv.name]; old != nil && old.line != srv.line &&
			otherOptions(old.options()) != otherOptions(srv.options()) {
			pending = append(pending, fmt.Sprintf("server %q options changed in %s", srv.name, where))
		}
		op := ServerOp{
			Kind: OpUpdate, Backend: backend, Server: srv.name,
			Addr: addrString(srv), Port: srv.port, PrevAddr: ls.Addr, PrevPort: ls.Port,
			Disabled: e.disabled, PrevDisabled: ls.Maint(), PrevDrain: ls.Drain() && !ls.Maint(),
			Check: e.check, Line: srv.line,
		}
		moved := false
		if srv.addrErr != "" {
			// A name or an odd address: the runtime API cannot set it.
			// Unchanged since the running line: nothing to do for it.
			if old := rs.byName[srv.name]; old == nil || old.addr != srv.addr {
				pending = append(pending, fmt.Sprintf("server %q in %s: %s", srv.name, where, srv.addrErr))
			}
			op.Addr, op.Port = ls.Addr, ls.Port
		} else {
			moved = op.Addr != ls.Addr || op.Port != ls.Port
		}
		if e.weight != ls.Weight {
			w := e.weight
			op.Weight = &w
		}
		if !dynamic && moved {
			switch {
			case !ls.Maint() && e.disabled:
				op.Kind = OpFreeSlot
			case ls.Maint() && !e.disabled:
				op.Kind = OpFillSlot
			}
		}
		stateChange := e.disabled != ls.Maint() || (!e.disabled && ls.Drain())
		if !moved && op.Weight == nil && !stateChange {
			continue
		}
		if busy(backend, srv.name) && e.disabled && !moved && op.Weight == nil {
			continue // draining for removal, and desired disabled: the drain ends it
		}
		updates = append(updates, op)
	}
	for _, name := range sortedNames(live) {
		if ds.byName[name] != nil || busy(backend, name) {
			continue
		}
		ls := live[name]
		if !dynamic {
			pending = append(pending, fmt.Sprintf("server %q removed from %s: balance %s refuses dynamic servers (render fixed slots instead)", name, where, algo))
			continue
		}
		removes = append(removes, ServerOp{Kind: OpRemove, Backend: backend, Server: name, PrevAddr: ls.Addr, PrevPort: ls.Port,
			PrevDisabled: ls.Maint(), Line: runningLine(rs, name)})
	}
	return adds, updates, removes, pending
}

// effectiveOf is srv's options over the default-server of s (srv may be
// from another config: the desired server in the running section).
func (s *section) effectiveOf(srv *server) effective { return s.effective(srv) }

func runningLine(s *section, name string) string {
	if srv := s.byName[name]; srv != nil {
		return srv.line
	}
	return ""
}

func sortedNames(m map[string]ServerState) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ServerLines returns the server lines of each backend or listen section
// of cfg, by section name then server name (for guards and display).
func ServerLines(cfg []byte) (map[string]map[string]string, error) {
	c, err := parseConfig(cfg, nil)
	if err != nil {
		return nil, err
	}
	out := make(map[string]map[string]string)
	for _, s := range c.sections {
		if !s.isProxy() {
			continue
		}
		m := out[s.name]
		if m == nil {
			m = make(map[string]string, len(s.servers))
			out[s.name] = m
		}
		for _, srv := range s.servers {
			m[srv.name] = srv.line
		}
	}
	return out, nil
}

// InsertServers returns cfg with extra server lines added to the end of
// their backend or listen section (after its last server line, or after
// its last line), indented like the section's other lines. Sections cfg
// does not have are ignored; names a section already has are skipped.
func InsertServers(cfg []byte, extra map[string][]string) []byte {
	if len(extra) == 0 {
		return cfg
	}
	lines := strings.SplitAfter(string(cfg), "\n")
	type place struct {
		lastServer, lastLine int
		indent               string
		names                map[string]bool
	}
	where := map[string]*place{}
	var cur *place
	for i, raw := range lines {
		norm := normalize(stripComment(strings.TrimRight(raw, "\r\n")))
		if norm == "" {
			continue
		}
		first, rest, _ := strings.Cut(norm, " ")
		if isSectionKind(first) {
			cur = nil
			name, _, _ := strings.Cut(rest, " ")
			if _, seen := where[name]; !seen && (first == "listen" || first == "backend") && name != "" {
				cur = &place{lastServer: -1, lastLine: i, indent: "    ", names: map[string]bool{}}
				where[name] = cur
			}
			continue
		}
		if cur == nil {
			continue
		}
		cur.lastLine = i
		cur.indent = raw[:len(raw)-len(strings.TrimLeft(raw, " \t"))]
		if first == "server" {
			n, _, _ := strings.Cut(rest, " ")
			cur.names[n] = true
			cur.lastServer = i
		}
	}
	inserts := map[int][]string{}
	for _, name := range slices.Sorted(maps.Keys(extra)) {
		p := where[name]
		if p == nil {
			continue
		}
		at := p.lastLine + 1
		if p.lastServer >= 0 {
			at = p.lastServer + 1
		}
		for _, l := range extra[name] {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != "server" || p.names[f[1]] {
				continue
			}
			p.names[f[1]] = true
			inserts[at] = append(inserts[at], p.indent+strings.Join(f, " ")+"\n")
		}
	}
	if len(inserts) == 0 {
		return cfg
	}
	var b strings.Builder
	b.Grow(len(cfg) + 256)
	for i, raw := range lines {
		for _, l := range inserts[i] {
			b.WriteString(l)
		}
		b.WriteString(raw)
		if i == len(lines)-1 && !strings.HasSuffix(raw, "\n") && len(inserts[i+1]) > 0 {
			b.WriteString("\n")
		}
	}
	for _, l := range inserts[len(lines)] {
		b.WriteString(l)
	}
	return []byte(b.String())
}
