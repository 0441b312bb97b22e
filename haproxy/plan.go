package haproxy

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	parser "github.com/haproxytech/client-native/v5/config-parser"
	"github.com/haproxytech/client-native/v5/config-parser/params"
)

// OpKind names one runtime operation on one server.
type OpKind string

// Kinds of ServerOp.
const (
	OpAdd    OpKind = "add"    // add server, enable health, leave MAINT without taking traffic before checks pass
	OpRemove OpKind = "remove" // drain, wait for sessions to end (bounded), maint, del server
	OpUpdate OpKind = "update" // address/port, weight, enabled/disabled of an existing server
	// OpFillSlot: a disabled slot of a backend whose balance algorithm
	// refuses dynamic servers gets a node (address, then ready).
	OpFillSlot OpKind = "fill-slot"
	// OpFreeSlot: a slot that served a node goes back to its placeholder
	// (drain like a removal, maint, placeholder address).
	OpFreeSlot OpKind = "free-slot"
	// OpShutdownSessions ends the sessions of a server that stays
	// configured (a writer that handed the writes over).
	OpShutdownSessions OpKind = "shutdown-sessions"
)

// ServerOp is one server change that the runtime API can apply.
type ServerOp struct {
	Kind     OpKind `json:"kind"`
	Backend  string `json:"backend"`
	Server   string `json:"server"`
	Addr     string `json:"addr,omitempty"`      // new IP (add, address change, slots)
	Port     int    `json:"port,omitempty"`      // new port
	PrevAddr string `json:"prev_addr,omitempty"` // IP before the change (update, slots)
	PrevPort int    `json:"prev_port,omitempty"`
	Weight   *int   `json:"weight,omitempty"` // weight to set (add: the effective weight; update: only when it changes)
	Disabled bool   `json:"disabled"`         // the server is disabled (MAINT) after the op
	// PrevDisabled: the server was disabled before (update, slots).
	PrevDisabled bool `json:"prev_disabled,omitempty"`
	// PrevDrain: the server was draining (set by hand, or a removal that
	// is undone); an enabled server leaves drain.
	PrevDrain bool `json:"prev_drain,omitempty"`
	Check     bool `json:"check"` // the server has health checks
	// Line is the rendered server line; for OpAdd, AddArgs is what follows
	// "add server B/S": the address and the server's options with the
	// section's and the defaults' default-server options expanded (dynamic
	// servers do not inherit default-server).
	Line    string `json:"line"`
	AddArgs string `json:"add_args,omitempty"`
}

// Plan is how a change from one rendered configuration to the next is
// applied: a reload, or runtime API operations.
type Plan struct {
	Reload   bool       `json:"reload"`             // a reload is needed
	Reasons  []string   `json:"reasons,omitempty"`  // why: the structural differences, one per line
	Ops      []ServerOp `json:"ops,omitempty"`      // runtime operations, when !Reload
	Commands []string   `json:"commands,omitempty"` // what Ops send, in order; "#" lines are waits, not commands
}

// String is the plan for humans: "runtime: N commands" and the commands,
// or "reload:" and the reasons.
func (p Plan) String() string {
	var b strings.Builder
	if p.Reload {
		b.WriteString("reload:\n")
		for _, r := range p.Reasons {
			b.WriteString("  " + r + "\n")
		}
		return b.String()
	}
	n := 0
	for _, c := range p.Commands {
		if !strings.HasPrefix(c, "#") {
			n++
		}
	}
	if n == 0 {
		b.WriteString("runtime: no server change (the file is rewritten, HAProxy is untouched)\n")
		return b.String()
	}
	fmt.Fprintf(&b, "runtime: %d commands\n", n)
	for _, c := range p.Commands {
		b.WriteString("  " + c + "\n")
	}
	return b.String()
}

// waitPrefix marks a command list entry that waits for a server to drain
// instead of sending a command.
const waitPrefix = "# wait until "

// refusedByAdd are server keywords that "add server" refuses and that
// change what the server does: a server that needs one is not added at
// runtime (reload instead). HAProxy 3.0 takes "cookie" (Caps.AddCookie).
var refusedByAdd = []string{"cookie", "redir", "namespace", "socks4", "stick", "non-stick", "tcp-ut", "log-proto"}

// droppedForAdd are keywords that "add server" refuses but that only
// matter for name resolution: harmless to drop for an IP address.
var droppedForAdd = []string{"init-addr", "resolvers", "resolve-prefer", "resolve-net", "resolve-opts"}

// Slots: a backend whose balance algorithm refuses dynamic servers
// (static-rr, map-based hashing such as "balance source" without
// "hash-type consistent", uri, ...) cannot add or delete servers at
// runtime. Its template must render a fixed set of server names, e.g.
//
//	server slot1 10.0.0.1:3306 check
//	server slot2 127.0.0.1:1 check disabled   # free slot: placeholder address, disabled
//
// A slot going from disabled to enabled with a new address is OpFillSlot
// (set addr, then ready); enabled to disabled with a new address is
// OpFreeSlot (drain, maint, placeholder address). Adding or removing a
// server line in such a backend plans a reload.
//
// PlanChange compares the previous and the next rendered configuration and
// says how to apply next: runtime operations when only servers of
// backend/listen sections changed (added, removed, address, port, weight,
// disabled), otherwise a reload with the reasons. prev nil (nothing runs
// yet) plans a reload with reason "no running config". Comment and
// blank-line differences change nothing. An error means a config could not
// be read at all (haproxy -c is the judge of validity, not this). caps are
// those of the HAProxy that runs prev (Version.Caps).
func PlanChange(prev, next []byte, caps Caps) (Plan, error) {
	if prev == nil {
		return Plan{Reload: true, Reasons: []string{"no running config"}}, nil
	}
	// Server lines that are the same in both configs (nearly all of them)
	// are parsed once.
	cache := make(map[string]*server, bytes.Count(prev, []byte("\n")))
	pc, err := parseConfig(prev, cache)
	if err != nil {
		return Plan{}, fmt.Errorf("plan: previous config: %w", err)
	}
	nc, err := parseConfig(next, cache)
	if err != nil {
		return Plan{}, fmt.Errorf("plan: next config: %w", err)
	}
	var p Plan
	p.Reasons = structuralDiff(pc, nc)
	var adds, updates, removes []ServerOp
	for _, ns := range nc.sections {
		if !ns.isProxy() {
			continue
		}
		ps := pc.byKey[ns.key]
		if ps == nil {
			continue // a new section: already a reason
		}
		a, u, r, reasons := diffServers(ps, ns, caps)
		adds, updates, removes = append(adds, a...), append(updates, u...), append(removes, r...)
		p.Reasons = append(p.Reasons, reasons...)
	}
	if len(p.Reasons) > 0 {
		p.Reload = true
		return p, nil
	}
	p.Ops = slices.Concat(adds, updates, removes)
	for _, op := range p.Ops {
		p.Commands = append(p.Commands, op.steps()...)
	}
	return p, nil
}

// steps are the runtime command lines of op in order. A line may hold
// several commands joined with ';' (HAProxy runs them in order, in one
// round trip); a waitPrefix line is a drain wait.
func (op ServerOp) steps() []string {
	now, wait, after := op.split()
	if !wait {
		return now
	}
	id := op.Backend + "/" + op.Server
	out := append(now, waitPrefix+id+" has no sessions (at most the drain timeout, then: shutdown sessions server "+id+")")
	return append(out, after...)
}

// Line is what the fast lane sends at once for op: its commands up to a
// drain wait, joined with ';' into one round trip ("" when none).
func (op ServerOp) NowLine() string {
	now, _, _ := op.split()
	return strings.Join(now, ";")
}

// Drains reports whether op waits for the server's sessions to end
// (removals and freed slots); the rest (AfterDrain) then runs in the
// background.
func (op ServerOp) Drains() bool {
	_, wait, _ := op.split()
	return wait
}

// AfterDrain are the commands sent once a draining server has no
// sessions left (or the drain timeout ended them): maint, then del
// server or the slot's placeholder address.
func (op ServerOp) AfterDrain() []string {
	_, _, after := op.split()
	return after
}

// split returns the commands sent at once, whether a drain wait follows,
// and the commands after it.
func (op ServerOp) split() (now []string, wait bool, after []string) {
	id := op.Backend + "/" + op.Server
	addr := fmt.Sprintf("set server %s addr %s port %d", id, op.Addr, op.Port)
	weight := func() []string {
		if op.Weight == nil {
			return nil
		}
		return []string{fmt.Sprintf("set server %s weight %d", id, *op.Weight)}
	}
	switch op.Kind {
	case OpAdd:
		now = append(now, "add server "+id+" "+op.AddArgs)
		if op.Check {
			now = append(now, "enable health "+id)
		}
		if !op.Disabled {
			now = append(now, op.readyLine(id, true))
		}
	case OpRemove:
		now = []string{"set server " + id + " state drain"}
		return now, true, []string{"set server " + id + " state maint", "del server " + id}
	case OpFreeSlot:
		now = []string{"set server " + id + " state drain"}
		after = append([]string{"set server " + id + " state maint", addr}, weight()...)
		return now, true, after
	case OpFillSlot:
		now = append(append([]string{addr}, weight()...), op.readyLine(id, true))
	case OpShutdownSessions:
		now = []string{"shutdown sessions server " + id}
	case OpUpdate:
		moved := op.Addr != op.PrevAddr || op.Port != op.PrevPort
		wasDisabled := op.PrevDisabled
		switch {
		case moved && !wasDisabled:
			now = append(now, "set server "+id+" state maint", addr)
		case moved:
			now = append(now, addr)
		case !wasDisabled && op.Disabled:
			now = append(now, "set server "+id+" state maint")
		}
		now = append(now, weight()...)
		if !op.Disabled && (moved || wasDisabled || op.PrevDrain) {
			now = append(now, op.readyLine(id, moved || wasDisabled))
		}
	}
	return now, false, nil
}

// readyLine takes a server out of maintenance or drain. Leaving MAINT, a
// server takes traffic at once, before any check: with checks (and
// fromMaint) forcing it DOWN in the same line keeps it out until rise
// checks pass.
func (op ServerOp) readyLine(id string, fromMaint bool) string {
	line := "set server " + id + " state ready"
	if op.Check && fromMaint {
		line += ";set server " + id + " health down"
	}
	return line
}

// ---- config model ----

type config struct {
	sections []*section
	byKey    map[string]*section
}

type section struct {
	kind, name string
	key        string   // "listen galera", "defaults", "defaults (2)"
	header     string   // normalized header line
	from       string   // "from <defaults>" of a proxy header
	lines      []string // normalized non-server lines, in order
	servers    []*server
	byName     map[string]*server
	defaults   *section // the defaults section a proxy uses (nil if none)
	dupNames   []string // server names seen twice

	dflt     []params.ServerOption // defaultServer, once computed
	dfltDone bool
}

type server struct {
	name string
	line string // normalized line

	// The rest is parsed on first use (parse): only the lines that changed
	// need it, and a 10,000-server config has few of those.
	parsed   bool
	addr     string // as written
	ip       netip.Addr
	port     int
	addrErr  string   // why addr is not a runtime-usable IP:port ("" if it is)
	rest     []string // the words after the address
	quoteErr string   // a word with a quote, '\' or '$' ("" if none)
	opts     []params.ServerOption
	optErr   string // an option the parser did not understand ("" if none)
}

// options returns the parsed server options.
func (s *server) options() []params.ServerOption {
	s.parse()
	return s.opts
}

// optionError names an option the parser did not understand ("" if none).
func (s *server) optionError() string {
	s.parse()
	return s.optErr
}

func (s *server) parse() {
	if s.parsed {
		return
	}
	s.parsed = true
	fields := strings.Fields(s.line) // "server NAME ADDR [OPTION...]", at least 3
	s.addr, s.rest = fields[2], fields[3:]
	for _, f := range fields {
		if strings.ContainsAny(f, `"'\$`) {
			s.quoteErr = f
		}
	}
	ap, err := netip.ParseAddrPort(s.addr)
	switch {
	case err != nil:
		s.addrErr = fmt.Sprintf("address %q is not IP:port (add server does not resolve names)", s.addr)
	case ap.Port() == 0:
		s.addrErr = fmt.Sprintf("address %q has port 0", s.addr)
	default:
		s.ip, s.port = ap.Addr().Unmap(), int(ap.Port())
	}
	s.opts = params.ParseServerOptions(s.rest)
	if got := strings.Fields(params.ServerOptionsString(s.opts)); !slices.Equal(got, s.rest) {
		s.optErr = firstUnparsed(s.rest, got)
	}
	if s.quoteErr != "" {
		s.optErr = s.quoteErr
	}
}

func (s *section) isProxy() bool {
	return s.kind == string(parser.Backends) || s.kind == string(parser.Listen)
}

func (s *section) label() string { return strings.TrimSpace(s.kind + " " + s.name) }

// sectionKinds are the keywords that open a section.
var sectionKinds = []parser.Section{
	parser.Global, parser.Defaults, parser.Frontends, parser.Backends, parser.Listen,
	parser.Resolvers, parser.UserList, parser.Peers, parser.Mailers, parser.Cache,
	parser.Program, parser.HTTPErrors, parser.Ring, parser.LogForward, parser.FCGIApp,
}

func isSectionKind(w string) bool {
	for _, k := range sectionKinds {
		if string(k) == w {
			return true
		}
	}
	return false
}

// parseConfig splits a config into sections of normalized lines (comments
// and blank lines dropped, fields single-spaced), with the server lines of
// proxies parsed by client-native's config-parser option parsers.
func parseConfig(data []byte, cache map[string]*server) (*config, error) {
	c := &config{byKey: make(map[string]*section)}
	var cur *section
	var lastDefaults *section
	namedDefaults := make(map[string]*section)
	seen := make(map[string]int)
	// One string for the whole file: lines are substrings of it, and a
	// line that is already normalized (nearly all) is kept without a copy.
	rest := string(data)
	lineNo := 0
	for rest != "" {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		lineNo++
		norm := normalize(stripComment(line))
		if norm == "" {
			continue
		}
		first, _, _ := strings.Cut(norm, " ")
		if isSectionKind(first) {
			cur.indexServers()
			fields := strings.Fields(norm)
			cur = &section{kind: fields[0], header: norm}
			if len(fields) > 1 && fields[1] != "from" {
				cur.name = fields[1]
			}
			if i := slices.Index(fields, "from"); i > 0 && i+1 < len(fields) {
				cur.from = fields[i+1]
			}
			key := cur.label()
			seen[key]++
			if n := seen[key]; n > 1 {
				key = fmt.Sprintf("%s (%d)", key, n)
			}
			cur.key = key
			switch {
			case cur.kind == string(parser.Defaults):
				lastDefaults = cur
				if cur.name != "" {
					namedDefaults[cur.name] = cur
				}
			case cur.from != "":
				cur.defaults = namedDefaults[cur.from]
			default:
				cur.defaults = lastDefaults
			}
			c.sections = append(c.sections, cur)
			c.byKey[key] = cur
			continue
		}
		if cur == nil {
			cur = &section{kind: "", key: "(before any section)"}
			c.sections = append(c.sections, cur)
			c.byKey[cur.key] = cur
		}
		if first == "server" && cur.isProxy() {
			// Servers are immutable once parsed (parse is deterministic),
			// so both configs share the entry of a line they both have.
			s := cache[norm]
			if s == nil {
				_, args, _ := strings.Cut(norm, " ")
				name, addr, _ := strings.Cut(args, " ")
				if name == "" || addr == "" {
					return nil, fmt.Errorf("line %d: server line needs a name and an address: %q", lineNo, norm)
				}
				s = &server{name: name, line: norm}
				if cache != nil {
					cache[norm] = s
				}
			}
			cur.servers = append(cur.servers, s)
			continue
		}
		cur.lines = append(cur.lines, norm)
	}
	cur.indexServers()
	return c, nil
}

// indexServers fills byName and dupNames once the section's servers are
// all known (so that the map is sized once). s may be nil.
func (s *section) indexServers() {
	if s == nil {
		return
	}
	s.byName = make(map[string]*server, len(s.servers))
	for _, srv := range s.servers {
		if _, dup := s.byName[srv.name]; dup {
			s.dupNames = append(s.dupNames, srv.name)
		}
		s.byName[srv.name] = srv
	}
}

// normalize returns line's words joined by single spaces. A line that is
// already so (leading indentation aside) is returned as a substring.
func normalize(line string) string {
	t := strings.TrimLeft(line, " \t")
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c > ' ' && c < 0x7f {
			continue
		}
		if c == ' ' && i+1 < len(t) && t[i+1] > ' ' && t[i+1] < 0x7f {
			continue
		}
		return strings.Join(strings.Fields(t), " ")
	}
	return t
}

// stripComment cuts line at the first '#' outside quotes and not escaped.
func stripComment(line string) string {
	var quote byte
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\\':
			i++
		case quote != 0:
			if ch == quote {
				quote = 0
			}
		case ch == '"' || ch == '\'':
			quote = ch
		case ch == '#':
			return line[:i]
		}
	}
	return line
}

// firstUnparsed returns the first token of want that got lacks.
func firstUnparsed(want, got []string) string {
	for i, w := range want {
		if i >= len(got) || got[i] != w {
			return w
		}
	}
	return strings.Join(want, " ")
}

// ---- structural diff ----

func structuralDiff(pc, nc *config) []string {
	var reasons []string
	var common []string
	for _, s := range pc.sections {
		if nc.byKey[s.key] == nil {
			reasons = append(reasons, fmt.Sprintf("section %q removed", s.key))
		} else {
			common = append(common, s.key)
		}
	}
	var nextOrder []string
	for _, s := range nc.sections {
		if pc.byKey[s.key] == nil {
			reasons = append(reasons, fmt.Sprintf("section %q added", s.key))
		} else {
			nextOrder = append(nextOrder, s.key)
		}
	}
	if !slices.Equal(common, nextOrder) {
		reasons = append(reasons, "sections reordered")
	}
	for _, key := range nextOrder {
		ps, ns := pc.byKey[key], nc.byKey[key]
		if ps.header != ns.header {
			reasons = append(reasons, fmt.Sprintf("section header changed: %q → %q", ps.header, ns.header))
		}
		reasons = append(reasons, lineDiff(ps, ns)...)
	}
	return reasons
}

// keyword names a line in a reason: its first word, or two for families.
func keyword(line string) string {
	f := strings.Fields(line)
	if len(f) > 1 {
		switch f[0] {
		case "option", "no", "timeout", "stats", "http-check", "tcp-check", "http-request",
			"http-response", "tcp-request", "tcp-response", "http-after-response":
			return f[0] + " " + f[1]
		}
	}
	if len(f) > 0 {
		return f[0]
	}
	return ""
}

// lineDiff reports the non-server lines that differ between two versions
// of a section, by keyword.
func lineDiff(ps, ns *section) []string {
	if slices.Equal(ps.lines, ns.lines) {
		return nil
	}
	count := make(map[string]int)
	for _, l := range ps.lines {
		count[l]++
	}
	for _, l := range ns.lines {
		count[l]--
	}
	removed, added := make(map[string]bool), make(map[string]bool)
	var order []string
	note := func(k string) {
		if !slices.Contains(order, k) {
			order = append(order, k)
		}
	}
	for _, l := range ps.lines {
		if count[l] > 0 {
			k := keyword(l)
			removed[k] = true
			note(k)
		}
	}
	for _, l := range ns.lines {
		if count[l] < 0 {
			k := keyword(l)
			added[k] = true
			note(k)
		}
	}
	where := ns.label()
	if where == "" {
		where = ns.key
	}
	if len(order) == 0 {
		return []string{fmt.Sprintf("order of lines changed in %s", where)}
	}
	var out []string
	for _, k := range order {
		switch {
		case removed[k] && added[k]:
			out = append(out, fmt.Sprintf("%q changed in %s", k, where))
		case added[k]:
			out = append(out, fmt.Sprintf("%q added to %s", k, where))
		default:
			out = append(out, fmt.Sprintf("%q removed from %s", k, where))
		}
	}
	return out
}

// ---- servers ----

// lastLine returns the fields of the last line of s (then of its defaults)
// whose keyword is kw, nil when none.
func (s *section) lastLine(kw string) []string {
	for sec := s; sec != nil; sec = sec.defaults {
		for i := len(sec.lines) - 1; i >= 0; i-- {
			f := strings.Fields(sec.lines[i])
			if f[0] == kw {
				return f
			}
		}
		if sec.kind == string(parser.Defaults) {
			break
		}
	}
	return nil
}

// dynamicBalance reports whether the section's balance algorithm accepts
// dynamic servers, and names the algorithm.
func (s *section) dynamicBalance() (bool, string) {
	algo := "roundrobin"
	if f := s.lastLine("balance"); len(f) > 1 {
		algo = f[1]
	}
	base, _, _ := strings.Cut(algo, "(")
	switch base {
	case "roundrobin", "leastconn", "first", "random":
		return true, algo
	case "static-rr":
		return false, algo
	}
	// Hash-based: only consistent hashing supports dynamic servers.
	if f := s.lastLine("hash-type"); len(f) > 1 && f[1] == "consistent" {
		return true, algo + " (hash-type consistent)"
	}
	return false, algo + " (map-based hash)"
}

// defaultServer returns the default-server options in effect in s: its
// defaults section's, overridden by its own lines in order.
func (s *section) defaultServer() []params.ServerOption {
	if !s.dfltDone {
		s.dflt, s.dfltDone = s.computeDefaultServer(), true
	}
	return s.dflt
}

func (s *section) computeDefaultServer() []params.ServerOption {
	var out []params.ServerOption
	var chain []*section
	for sec := s; sec != nil; sec = sec.defaults {
		chain = append(chain, sec)
		if sec.kind == string(parser.Defaults) {
			break
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		for _, l := range chain[i].lines {
			f := strings.Fields(l)
			if f[0] == "default-server" {
				out = mergeOptions(out, params.ParseServerOptions(f[1:]))
			}
		}
	}
	return out
}

func optName(o params.ServerOption) string {
	switch v := o.(type) {
	case *params.ServerOptionWord:
		return v.Name
	case *params.ServerOptionValue:
		return v.Name
	case *params.ServerOptionDoubleWord:
		return v.Name
	case *params.ServerOptionIDValue:
		return v.Name + "(" + v.ID + ")"
	}
	f := strings.Fields(o.String())
	if len(f) > 0 {
		return f[0]
	}
	return ""
}

// mergeOptions returns base overridden by over: an option of over replaces
// the one of base with the same name, "no-X" removes X and X removes "no-X".
func mergeOptions(base, over []params.ServerOption) []params.ServerOption {
	out := slices.Clone(base)
	for _, o := range over {
		n := optName(o)
		out = slices.DeleteFunc(out, func(b params.ServerOption) bool {
			bn := optName(b)
			return bn == n || bn == "no-"+n || "no-"+bn == n
		})
		out = append(out, o)
	}
	return out
}

func optValue(opts []params.ServerOption, name string) (string, bool) {
	for _, o := range opts {
		if optName(o) != name {
			continue
		}
		if v, ok := o.(*params.ServerOptionValue); ok {
			return v.Value, true
		}
		return "", true
	}
	return "", false
}

// effective is what a server line means once default-server is applied.
type effective struct {
	opts     []params.ServerOption
	weight   int
	disabled bool
	check    bool
}

func (s *section) effective(srv *server) effective {
	e := effective{opts: mergeOptions(s.defaultServer(), srv.options()), weight: 1}
	if v, ok := optValue(e.opts, "weight"); ok {
		if w, err := strconv.Atoi(v); err == nil {
			e.weight = w
		}
	}
	_, e.disabled = optValue(e.opts, "disabled")
	_, e.check = optValue(e.opts, "check")
	return e
}

// stateless are the options that the runtime API sets on an existing
// server: a server line that differs only in them is updated in place.
var stateless = []string{"weight", "disabled", "enabled"}

func otherOptions(opts []params.ServerOption) string {
	var keep []params.ServerOption
	for _, o := range opts {
		if !slices.Contains(stateless, optName(o)) {
			keep = append(keep, o)
		}
	}
	return params.ServerOptionsString(keep)
}

// diffServers compares the servers of one proxy section.
func diffServers(ps, ns *section, caps Caps) (adds, updates, removes []ServerOp, reasons []string) {
	where := ns.label()
	for _, d := range ns.dupNames {
		reasons = append(reasons, fmt.Sprintf("server %q defined twice in %s", d, where))
	}
	dynamic, algo := ns.dynamicBalance()
	for _, srv := range ps.servers {
		if ns.byName[srv.name] != nil {
			continue
		}
		if !dynamic {
			reasons = append(reasons, fmt.Sprintf("server %q removed from %s: balance %s refuses dynamic servers (render fixed slots instead)", srv.name, where, algo))
			continue
		}
		e := ps.effective(srv)
		removes = append(removes, ServerOp{Kind: OpRemove, Backend: ns.name, Server: srv.name, PrevAddr: addrString(srv), PrevPort: srv.port, Check: e.check, Line: srv.line})
	}
	for _, srv := range ns.servers {
		old := ps.byName[srv.name]
		if old != nil && old.line == srv.line {
			continue // default-server changes are line changes of the section
		}
		e := ns.effective(srv)
		if old == nil {
			op, why := addOp(ns, srv, e, dynamic, algo, caps)
			if why != "" {
				reasons = append(reasons, why)
				continue
			}
			adds = append(adds, op)
			continue
		}
		if old.line == srv.line {
			continue // default-server changes are line changes of the section
		}
		if otherOptions(old.options()) != otherOptions(srv.options()) {
			reasons = append(reasons, fmt.Sprintf("server %q options changed in %s", srv.name, where))
			continue
		}
		oe := ps.effective(old)
		moved := old.addr != srv.addr
		if moved && srv.addrErr != "" {
			reasons = append(reasons, fmt.Sprintf("server %q in %s: %s", srv.name, where, srv.addrErr))
			continue
		}
		if moved && old.addrErr != "" {
			reasons = append(reasons, fmt.Sprintf("server %q in %s: previous %s", srv.name, where, old.addrErr))
			continue
		}
		op := ServerOp{
			Kind: OpUpdate, Backend: ns.name, Server: srv.name,
			Addr: addrString(srv), Port: srv.port, PrevAddr: addrString(old), PrevPort: old.port,
			Disabled: e.disabled, Check: e.check, Line: srv.line, PrevDisabled: oe.disabled,
		}
		if e.weight != oe.weight {
			w := e.weight
			op.Weight = &w
		}
		if !dynamic && moved {
			switch {
			case oe.disabled && !e.disabled:
				op.Kind = OpFillSlot
			case !oe.disabled && e.disabled:
				op.Kind = OpFreeSlot
			}
		}
		if op.Kind == OpUpdate && !moved && op.Weight == nil && oe.disabled == e.disabled {
			continue // only the spelling changed (e.g. "enabled" added)
		}
		updates = append(updates, op)
	}
	return adds, updates, removes, reasons
}

func addrString(s *server) string {
	if s.ip.IsValid() {
		return s.ip.String()
	}
	return ""
}

func addOp(ns *section, srv *server, e effective, dynamic bool, algo string, caps Caps) (ServerOp, string) {
	where := ns.label()
	switch {
	case !dynamic:
		return ServerOp{}, fmt.Sprintf("server %q added to %s: balance %s refuses dynamic servers (render fixed slots instead)", srv.name, where, algo)
	case srv.addrErr != "":
		return ServerOp{}, fmt.Sprintf("server %q added to %s: %s", srv.name, where, srv.addrErr)
	case srv.optionError() != "":
		return ServerOp{}, fmt.Sprintf("server %q added to %s: option %q not understood for add server", srv.name, where, srv.optionError())
	}
	var args []params.ServerOption
	for _, o := range e.opts {
		n := optName(o)
		switch {
		case n == "cookie" && caps.AddCookie:
		case slices.Contains(refusedByAdd, n):
			return ServerOp{}, fmt.Sprintf("server %q added to %s needs %q, which add server refuses", srv.name, where, n)
		case slices.Contains(droppedForAdd, n), n == "disabled", n == "enabled":
			continue
		}
		args = append(args, o)
	}
	ap := netip.AddrPortFrom(srv.ip, uint16(srv.port)).String()
	addArgs := ap
	if s := params.ServerOptionsString(args); s != "" {
		addArgs += " " + s
	}
	w := e.weight
	return ServerOp{
		Kind: OpAdd, Backend: ns.name, Server: srv.name, Addr: srv.ip.String(), Port: srv.port,
		Weight: &w, Disabled: e.disabled, Check: e.check, Line: srv.line, AddArgs: addArgs,
	}, ""
}
