// Package node is haconfd's one model of a database node registered in
// etcd: the key layouts (directory, value, JSON), the Node type, Galera's
// state names and when a state takes traffic, parsing with validation
// (a value that is not what it claims to be never reaches a config),
// the keys a registrar writes for a node (Encode), and the single-writer
// choice. It is pure: no I/O. render, the Galera tools (register,
// check) and the loop import it.
package node

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultPort is the port of a node that publishes no port.
const DefaultPort = 3306

// DefaultWeight is HAProxy's default server weight.
const DefaultWeight = 1

// MaxWeight is the largest weight HAProxy accepts.
const MaxWeight = 256

// maxIDLen is the longest node id accepted (the length of a DNS name).
const maxIDLen = 253

// maxTokenLen bounds service_instance_name and state values.
const maxTokenLen = 253

// Node is one validated database node found under a prefix.
type Node struct {
	ID                  string // the etcd id segment below the prefix
	Name                string // stable HAProxy-safe server name derived from ID, unique within a prefix
	Key                 string // prefix + "/" + id
	IP                  string // IP literal (canonical form) or RFC 1123 host name
	Port                int    // 1-65535, DefaultPort when absent
	Addr                string // ip:port, IPv6 bracketed
	Host                string // optional RFC 1123 host name (or IP literal)
	ServiceInstanceName string // optional token [A-Za-z0-9_.:@-]
	Weight              int    // 0-256, DefaultWeight when absent
	State               string // "" if unpublished, else the Galera state comment ("Synced", "Donor/Desynced", ...)
	Index               int    // wsrep_local_index, -1 when unknown

	// Derived fields, so that a template can test them without a function
	// call (at 10,000 nodes each call per node costs ~5 ms of a render):
	// {{ if .Weighted }} weight {{ .Weight }}{{ end }}.
	Synced   bool // may take traffic: no state published (nothing says otherwise) or State is "Synced"
	Weighted bool // Weight is not DefaultWeight, so a server line needs "weight N"
	IsWriter bool // one of the writers (Data.Writer is the first); set by Decide

	// Rotation, set by Decide for the nodes of one section (service).
	// These and the fields above come first: text/template finds a field
	// by a linear search of the struct's fields, for every node.
	InRotation bool     // takes new connections (reads; writes too in multi-writer sections unless ReadOnly)
	Writable   bool     // InRotation and not read-only: may take writes
	Reader     bool     // takes connections in the reader section (--reader-bind)
	LastResort bool     // in rotation only because no Synced node is left (a Donor/Desynced node)
	Lagging    bool     // drained for apply lag (--max-recv-queue)
	CheckPort  int      // the node's own health-check port (0: the section's)
	Reasons    []string // why it is out of rotation (or in by exception), for /servers, --plan and logs

	// Galera signals (signals.go), "" / false / unset when unpublished.
	Ready               string // wsrep_ready: ON or OFF
	ClusterStatus       string // wsrep_cluster_status: Primary, non-Primary, Disconnected
	Desync              string // wsrep_desync: ON or OFF
	RejectQueries       string // wsrep_reject_queries: NONE, ALL, ALL_KILL
	DonorRejectsQueries string // wsrep_sst_donor_rejects_queries: ON or OFF
	ReadOnly            bool   // read_only is ON
	MaintMode           string // pxc_maint_mode: DISABLED, SHUTDOWN, MAINTENANCE
	RecvQueue           int64  // wsrep_local_recv_queue, when RecvQueueSet
	RecvQueueSet        bool
	FlowControlPaused   string // wsrep_flow_control_paused as published
	LastCommitted       string // wsrep_last_committed as published
	Priority            int    // writer priority, when PrioritySet: lowest positive wins, <= 0 never a writer
	PrioritySet         bool
	Drain               *AdminDrain   // an operator's drain (nil: none)
	Notify              *NotifyRecord // the node's last wsrep_notify record (nil: none)
	StateRev            int64         // etcd revision of the state key (0 unknown)
	// Bad lists the signals that could not be read: the node stays
	// configured, out of rotation.
	Bad []string
}

// KV is one etcd key and its value.
type KV struct {
	Key, Value string
}

// Problem is a node that was skipped (or a key that could not be used), with
// the reason. It is an error so that callers can log or join it.
type Problem struct {
	Key    string
	Reason string
	// Incomplete: the node's registration is still arriving (a
	// directory-style node has its ip but not yet its port): it is left
	// out until it is complete, rather than added with a guessed value.
	Incomplete bool
	// Drained: the node is kept, out of rotation, because one of its
	// Galera signals could not be read (Node.Bad); it is not skipped.
	Drained bool
}

// errIncomplete marks a registration that is still arriving.
var errIncomplete = errors.New("registration incomplete")

// Error returns "node <Key>: <Reason>" on one line; a key with odd characters
// is quoted.
func (p Problem) Error() string {
	return "node " + quoteIfOdd(p.Key) + ": " + OneLine(p.Reason)
}

// Directory-style fields, as written by the original fleet discovery unit
// (plus the optional state/weight/index ones).
const (
	fieldIP       = "ip"
	fieldPort     = "port"
	fieldHost     = "host"
	fieldSIN      = "service_instance_name"
	fieldWeight   = "weight"
	fieldState    = "state"
	fieldWsrepSC  = "wsrep_local_state_comment"
	fieldIndex    = "index"
	fieldWsrepIdx = "wsrep_local_index"
)

// dirField is the slot of a known directory field in rawNode.dir.
type dirField int

const (
	dirIP dirField = iota
	dirPort
	dirHost
	dirSIN
	dirWeight
	dirState
	dirWsrepSC
	dirIndex
	dirWsrepIdx
	dirSig       // first of the numSig signal fields (signals.go)
	numDirFields = dirSig + dirField(numSig)
)

// dirFieldOf returns the slot of a directory field name, false for a field
// haconfd does not read (ignored, like deeper keys).
func dirFieldOf(name string) (dirField, bool) {
	switch name {
	case fieldIP:
		return dirIP, true
	case fieldPort:
		return dirPort, true
	case fieldHost:
		return dirHost, true
	case fieldSIN:
		return dirSIN, true
	case fieldWeight:
		return dirWeight, true
	case fieldState:
		return dirState, true
	case fieldWsrepSC:
		return dirWsrepSC, true
	case fieldIndex:
		return dirIndex, true
	case fieldWsrepIdx:
		return dirWsrepIdx, true
	}
	if g, ok := sigOf(name); ok {
		return dirSig + dirField(g), true
	}
	return 0, false
}

// isKnownState reports whether s is a Galera wsrep_local_state_comment
// value; those, including the ones with spaces, are accepted verbatim. Any
// other state must be a token of [A-Za-z0-9_.:/-].
func isKnownState(s string) bool {
	switch s {
	case "Synced",
		"Donor/Desynced",
		"Donor",
		"Desynced",
		"Joining",
		"Joined",
		"Initialized",
		"Destroyed",
		"Error",
		"Inconsistent",
		"Waiting on SST",
		"Waiting for SST",
		"Joining: preparing for State Transfer",
		"Joining: requested State Transfer",
		"Joining: receiving State Transfer",
		"Joining: State Transfer request failed",
		"Joining: State Transfer failed":
		return true
	}
	return false
}

// rawNode gathers the raw etcd values found for one id before validation.
type rawNode struct {
	id    string
	key   string // <prefix>/<id>, cut from an etcd key
	value string // value style: <prefix>/<id> = value ("" when absent)
	dir   int32  // index of its dirFields, -1 when it has none
	rev   int64  // etcd revision of the value (0 unknown)
}

// adminOnly are the fields that do not make a registration: keys an
// operator or Galera's notify command put next to a node's own.
const adminOnly = 1<<(dirSig+dirField(sigDrain)) | 1<<(dirSig+dirField(sigNotify))

// dirFields are the directory-style values of one node, <prefix>/<id>/<field>
// = value, for the fields haconfd reads: fixed slots, not a map per node.
type dirFields struct {
	v   [dirSig]string // the registration's own fields
	has uint32         // bit f set: field f was given (v, or sig for the signals)
	// sig holds the signal fields (signals.go), allocated at the first
	// one: a node without signals costs no more than it did before them.
	sig *[numSig]string
	// etcd revisions of the state and wsrep_notify keys (0 unknown).
	stateRev, notifyRev int64
}

// set records field f = v.
func (d *dirFields) set(f dirField, v string) {
	if f >= dirSig {
		if d.sig == nil {
			d.sig = new([numSig]string)
		}
		d.sig[f-dirSig] = v
	} else {
		d.v[f] = v
	}
	d.has |= 1 << f
}

// get returns field f.
func (d *dirFields) get(f dirField) string {
	if f >= dirSig {
		if d.sig == nil {
			return ""
		}
		return d.sig[f-dirSig]
	}
	return d.v[f]
}

// dirSlab holds dirFields in fixed chunks: growing it never copies, and at
// 10,000 directory-style nodes a growing slice allocated 5 times the final
// size.
type dirSlab struct {
	chunks []*[256]dirFields
	n      int
}

func (s *dirSlab) add() int32 {
	if s.n%256 == 0 {
		s.chunks = append(s.chunks, new([256]dirFields))
	}
	s.n++
	return int32(s.n - 1)
}

func (s *dirSlab) at(i int32) *dirFields { return &s.chunks[i/256][i%256] }

// fields of a node after merging both styles, still unvalidated.
type nodeFields struct {
	ip, port, host, sin, weight, state, index string
	sig                                       [numSig]string
}

// Parse returns the valid nodes under prefix, sorted by ID, and one
// Problem per id that was skipped. Keys that are not below prefix+"/", the
// prefix key itself and keys more than one level below an id are ignored.
//
// Both layouts are accepted, also mixed within one prefix and for one id:
// when an id has a value (<prefix>/<id>) and directory fields
// (<prefix>/<id>/ip, ...), each directory field wins over the same field
// from the value, because the directory layout is the one the fleet
// discovery unit writes and keeps alive field by field with TTLs, while a
// stale value is the more likely leftover.
//
// A directory with no ip key whose name is an IP address is a node at that
// address (severalnines' etcd-based Galera image writes
// <prefix>/<node IP>/wsrep_local_state_comment and nothing else).
func Parse(prefix string, kvs map[string]string) ([]Node, []Problem) {
	return ParseWith(prefix, kvs, Options{})
}

// Options tune parsing.
type Options struct {
	// DefaultPort is the port of a node that publishes none (DefaultPort
	// when 0).
	DefaultPort int
}

func (o Options) port() int {
	if o.DefaultPort > 0 {
		return o.DefaultPort
	}
	return DefaultPort
}

// ParseWith is Parse with options.
func ParseWith(prefix string, kvs map[string]string, o Options) ([]Node, []Problem) {
	nodes, problems, _ := parseNodes(prefix, len(kvs), maps.All(kvs), nil, o)
	return nodes, problems
}

// ParseSorted is Parse over key/value pairs sorted by key (as
// etcd returns them): it reads only the pairs under prefix, found by
// binary search, and keys of one node follow each other, so at thousands
// of nodes it is several times faster than going through a map.
func ParseSorted(prefix string, kvs []KV) ([]Node, []Problem) {
	return ParseSortedWith(prefix, kvs, nil, Options{})
}

// ParseSortedWith is ParseSorted with options; revs, when not nil, holds
// the etcd mod revision of each pair of kvs (same index), which orders a
// node's state and wsrep_notify keys (Node.StateRev, NotifyRecord.Rev).
func ParseSortedWith(prefix string, kvs []KV, revs []int64, o Options) ([]Node, []Problem) {
	r := ParsePrefix(prefix, kvs, revs, o)
	return r.Nodes, r.Problems
}

// Parsed is what ParsePrefix found under a prefix.
type Parsed struct {
	Nodes    []Node
	Problems []Problem
	// Deep: some keys are more than two levels below the prefix (they
	// may be clusters' nodes: Clusters says).
	Deep bool
}

// ParsePrefix is ParseSortedWith, also saying whether deeper keys exist.
func ParsePrefix(prefix string, kvs []KV, revs []int64, o Options) Parsed {
	lo, hi := SortedRange(prefix, kvs)
	sub := kvs[lo:hi]
	var rev func(int) int64
	if len(revs) == len(kvs) {
		subRevs := revs[lo:hi]
		rev = func(i int) int64 { return subRevs[i] }
	}
	var out Parsed
	out.Nodes, out.Problems, out.Deep = parseNodes(prefix, len(sub), func(yield func(string, string) bool) {
		for _, kv := range sub {
			if !yield(kv.Key, kv.Value) {
				return
			}
		}
	}, rev, o)
	return out
}

// SortedRange returns the bounds of the pairs of kvs (sorted by key) that
// are below prefix+"/".
func SortedRange(prefix string, kvs []KV) (lo, hi int) {
	under := TrimPrefix(prefix) + "/"
	lo, _ = slices.BinarySearchFunc(kvs, under, func(kv KV, k string) int { return strings.Compare(kv.Key, k) })
	hi = lo
	for hi < len(kvs) && strings.HasPrefix(kvs[hi].Key, under) {
		hi++
	}
	return lo, hi
}

// parseNodes is Parse over n key/value pairs from kvs; rev (may be nil)
// gives the revision of the i-th pair.
func parseNodes(prefix string, n int, kvs iter.Seq2[string, string], rev func(int) int64, o Options) (_ []Node, _ []Problem, deepKeys bool) {
	p := TrimPrefix(prefix)
	under := p + "/"
	// Nodes are gathered in a slice indexed through a map, not a map of
	// pointers: at 10,000 nodes this is a third of Parse' time. The
	// node of the previous key is tried first: in key order, a node's keys
	// follow each other.
	index := make(map[string]int, n)
	raws := make([]rawNode, 0, n)
	var dirs dirSlab
	lastID, last := "", -1
	pos := -1
	for k, v := range kvs {
		pos++
		if !strings.HasPrefix(k, under) {
			continue
		}
		rest := k[len(under):]
		if rest == "" {
			continue // "<prefix>/" itself
		}
		id, field, deep := strings.Cut(rest, "/")
		if deep && (field == "" || strings.Contains(field, "/")) {
			deepKeys = true
			continue // deeper keys are ignored
		}
		i, ok := last, last >= 0 && id == lastID
		if !ok {
			i, ok = index[id]
		}
		if !ok {
			i = len(raws)
			index[id] = i
			raws = append(raws, rawNode{id: id, key: k[:len(under)+len(id)], dir: -1})
		}
		lastID, last = id, i
		r := &raws[i]
		if !deep {
			r.value = v
			if rev != nil {
				r.rev = rev(pos)
			}
			continue
		}
		f, known := dirFieldOf(field)
		if !known {
			continue // a field haconfd does not read
		}
		if r.dir < 0 {
			r.dir = dirs.add()
		}
		d := dirs.at(r.dir)
		d.set(f, v)
		if rev != nil {
			switch f {
			case dirState, dirWsrepSC:
				d.stateRev = max(d.stateRev, rev(pos))
			case dirSig + dirField(sigNotify):
				d.notifyRev = rev(pos)
			}
		}
	}
	// Sorting indices moves 4 bytes per swap instead of a rawNode.
	order := make([]int32, len(raws))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int { return strings.Compare(raws[a].id, raws[b].id) })

	nodes := make([]Node, 0, len(raws))
	var problems []Problem
	for _, i := range order {
		r := &raws[i]
		var d *dirFields
		if r.dir >= 0 {
			d = dirs.at(r.dir)
		}
		if r.value == "" && d != nil && d.has&^adminOnly == 0 {
			// Only an operator's drain (or a wsrep_notify record) left
			// behind by a node that is gone: not a node.
			continue
		}
		n, err := buildNode(r, d, o)
		if err != nil {
			problems = append(problems, Problem{Key: r.key, Reason: err.Error(), Incomplete: errors.Is(err, errIncomplete)})
			continue
		}
		n.Key = r.key
		for _, b := range n.Bad {
			problems = append(problems, Problem{Key: r.key, Reason: b, Drained: true})
		}
		nodes = append(nodes, n)
	}
	nodes, dup := assignNames(nodes)
	problems = append(problems, dup...)
	SortProblems(problems)
	return nodes, problems, deepKeys
}

// SortProblems sorts problems by key, then reason.
func SortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Key != ps[j].Key {
			return ps[i].Key < ps[j].Key
		}
		return ps[i].Reason < ps[j].Reason
	})
}

// trimPrefix removes trailing slashes: "/components/galera/" and
// "/components/galera" watch the same keys.
func TrimPrefix(prefix string) string { return strings.TrimRight(prefix, "/") }

func buildNode(r *rawNode, d *dirFields, o Options) (Node, error) {
	if err := validateID(r.id); err != nil {
		return Node{}, err
	}
	var f nodeFields
	// An empty value counts as no value: an etcd v2 directory migrated to
	// v3 (or a placeholder) must not hide the directory fields below it.
	if r.value != "" {
		vf, err := parseValue(r.value)
		if err != nil {
			return Node{}, err
		}
		f = vf
	}
	// Directory fields win over value fields (see Parse).
	if d == nil {
		n, err := validateNode(r.id, f, o)
		if f.state != "" {
			n.StateRev = r.rev
		}
		return n, err
	}
	set := func(dst *string, fields ...dirField) {
		for _, i := range fields {
			if d.has&(1<<i) != 0 {
				*dst = d.get(i)
				return
			}
		}
	}
	set(&f.ip, dirIP)
	set(&f.port, dirPort)
	// A directory-style registration is complete once it has its port
	// (here or in the node's value): the fleet discovery unit writes ip,
	// port, host, ... one key at a time, and a node seen between the ip
	// and the port must not be served on a guessed port.
	incomplete := d.has&(1<<dirPort) == 0 && f.port == "" && (f.ip != "" || d.has&(1<<dirIP) != 0)
	set(&f.host, dirHost)
	set(&f.sin, dirSIN)
	set(&f.weight, dirWeight)
	set(&f.state, dirState, dirWsrepSC)
	set(&f.index, dirWsrepIdx, dirIndex)
	if d.sig != nil {
		for g := sig(0); g < numSig; g++ {
			set(&f.sig[g], dirSig+dirField(g))
		}
	}
	// severalnines' layout: the directory is named after the node's IP
	// and has no ip key (nor a value).
	if f.ip == "" && d.has&(1<<dirIP) == 0 {
		if a, err := netip.ParseAddr(r.id); err == nil && a.Zone() == "" {
			f.ip = r.id
		}
	}
	n, err := validateNode(r.id, f, o)
	if err == nil && incomplete {
		return Node{}, fmt.Errorf("%w: it has an ip but no port key yet", errIncomplete)
	}
	if err == nil {
		n.StateRev = d.stateRev
		if d.has&(1<<dirState|1<<dirWsrepSC) == 0 && f.state != "" {
			n.StateRev = r.rev // the state came with the value
		}
		if n.Notify != nil {
			n.Notify.Rev = d.notifyRev
		}
	}
	return n, err
}

// validateNode checks every field. Empty optional fields count as absent.
func validateNode(id string, f nodeFields, o Options) (Node, error) {
	n := Node{ID: id, Port: o.port(), Weight: DefaultWeight, Index: -1, Synced: true}
	if f.ip == "" {
		return Node{}, fmt.Errorf("missing ip")
	}
	ip, err := validateHostOrIP(f.ip)
	if err != nil {
		return Node{}, fmt.Errorf("ip %s is not an IP address or host name", quote(f.ip))
	}
	n.IP = ip
	if f.port != "" {
		p, ok := parseUint(f.port, 65535)
		if !ok || p < 1 {
			return Node{}, fmt.Errorf("port %s is not a number 1-65535", quote(f.port))
		}
		n.Port = p
	}
	if strings.IndexByte(n.IP, ':') >= 0 {
		n.Addr = "[" + n.IP + "]:" + strconv.Itoa(n.Port)
	} else {
		n.Addr = n.IP + ":" + strconv.Itoa(n.Port)
	}
	if f.host != "" {
		h, err := validateHostOrIP(f.host)
		if err != nil {
			return Node{}, fmt.Errorf("host %s is not a host name", quote(f.host))
		}
		n.Host = h
	}
	if f.sin != "" {
		if !isToken(f.sin, "_.:@-") || len(f.sin) > maxTokenLen {
			return Node{}, fmt.Errorf("service_instance_name %s is not a token of [A-Za-z0-9_.:@-]", quote(f.sin))
		}
		n.ServiceInstanceName = f.sin
	}
	if f.weight != "" {
		w, ok := parseUint(f.weight, MaxWeight)
		if !ok {
			return Node{}, fmt.Errorf("weight %s is not a number 0-%d", quote(f.weight), MaxWeight)
		}
		n.Weight = w
		n.Weighted = w != DefaultWeight
	}
	if f.state != "" {
		if !ValidState(f.state) {
			return Node{}, fmt.Errorf("state %s is not a Galera state", quote(f.state))
		}
		n.State = f.state
		n.Synced = f.state == StateSynced
	}
	if f.index != "" {
		i, ok := parseUint(f.index, 1<<16)
		if !ok {
			return Node{}, fmt.Errorf("wsrep_local_index %s is not a number 0-%d", quote(f.index), 1<<16)
		}
		n.Index = i
	}
	applySignals(&n, &f)
	return n, nil
}

// parseValue reads a value-style node: "ip", "ip:port", "[ipv6]:port",
// "[ipv6]", a bare IPv6 literal, or a JSON object.
func parseValue(v string) (nodeFields, error) {
	if strings.HasPrefix(v, "{") {
		return parseJSONValue(v)
	}
	var f nodeFields
	switch {
	case strings.HasPrefix(v, "["):
		end := strings.IndexByte(v, ']')
		if end < 0 {
			return f, fmt.Errorf("value %s has no closing ']'", quote(v))
		}
		f.ip = v[1:end]
		rest := v[end+1:]
		switch {
		case rest == "":
		case strings.HasPrefix(rest, ":"):
			f.port = rest[1:]
			if f.port == "" {
				return f, fmt.Errorf("value %s has an empty port", quote(v))
			}
		default:
			return f, fmt.Errorf("value %s is not [ip]:port", quote(v))
		}
		if _, err := netip.ParseAddr(f.ip); err != nil || !strings.Contains(f.ip, ":") {
			return f, fmt.Errorf("value %s: %s in brackets is not an IPv6 address", quote(v), quote(f.ip))
		}
	case strings.Count(v, ":") == 1:
		f.ip, f.port, _ = strings.Cut(v, ":")
		if f.port == "" {
			return f, fmt.Errorf("value %s has an empty port", quote(v))
		}
	default: // bare IPv4, host name or IPv6 literal
		f.ip = v
	}
	if f.ip == "" {
		return f, fmt.Errorf("value %s has no ip", quote(v))
	}
	return f, nil
}

// parseJSONValue reads {"ip":..,"port":..,...}. String fields must be JSON
// strings; port, weight and index may be numbers or strings of digits.
// Unknown fields are ignored.
func parseJSONValue(v string) (nodeFields, error) {
	var f nodeFields
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(v), &m); err != nil {
		return f, fmt.Errorf("value is not a JSON object: %s", OneLine(err.Error()))
	}
	str := func(dst *string, name string) error {
		raw, ok := m[name]
		if !ok || string(raw) == "null" {
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return fmt.Errorf("JSON field %q is not a string", name)
		}
		return nil
	}
	num := func(dst *string, name string) error {
		raw, ok := m[name]
		if !ok || string(raw) == "null" {
			return nil
		}
		if err := json.Unmarshal(raw, dst); err == nil {
			return nil
		}
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return fmt.Errorf("JSON field %q is not a number or string", name)
		}
		*dst = n.String()
		return nil
	}
	steps := []error{
		str(&f.ip, fieldIP),
		num(&f.port, fieldPort),
		str(&f.host, fieldHost),
		str(&f.sin, fieldSIN),
		num(&f.weight, fieldWeight),
	}
	if _, ok := m[fieldState]; ok {
		steps = append(steps, str(&f.state, fieldState))
	} else {
		steps = append(steps, str(&f.state, fieldWsrepSC))
	}
	if _, ok := m[fieldIndex]; ok {
		steps = append(steps, num(&f.index, fieldIndex))
	} else {
		steps = append(steps, num(&f.index, fieldWsrepIdx))
	}
	for g := sig(0); g < numSig; g++ {
		steps = append(steps, scalar(&f.sig[g], m[sigNames[g]], sigNames[g]))
	}
	for _, err := range steps {
		if err != nil {
			return f, err
		}
	}
	return f, nil
}

// validateHostOrIP accepts a zone-less IP literal (returned in canonical
// form) or an RFC 1123 host name.
func validateHostOrIP(s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return "", fmt.Errorf("IP address %s has a zone", quote(s))
		}
		if a.Is4() {
			return s, nil // ParseAddr takes only the canonical dotted quad
		}
		return a.String(), nil
	}
	if isHostName(s) {
		return s, nil
	}
	return "", fmt.Errorf("%s is not an IP address or host name", quote(s))
}

// isHostName reports whether s is an RFC 1123 host name: dot-separated
// labels of 1-63 letters, digits and hyphens, not starting or ending with a
// hyphen, at most 253 characters, and (RFC 3696) a last label that is not
// all digits, so that "10.0.0.256" is not taken for a name.
func isHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	var last string
	for rest := s; ; {
		l, more, found := strings.Cut(rest, ".")
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !isAlnum(c) && c != '-' {
				return false
			}
		}
		if !found {
			last = l
			break
		}
		rest = more
	}
	return strings.Trim(last, "0123456789") != ""
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// isToken reports whether s is non-empty and made of ASCII letters, digits
// and the given punctuation only.
func isToken(s, punct string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && strings.IndexByte(punct, s[i]) < 0 {
			return false
		}
	}
	return true
}

// parseUint accepts decimal digits only (no sign, no spaces), value <= limit.
func parseUint(s string, limit int) (int, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n > limit {
		return 0, false
	}
	return n, true
}

// validateID: non-empty, valid UTF-8, no control characters, no whitespace,
// no '/', at most 253 bytes.
func validateID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("empty id")
	case len(id) > maxIDLen:
		return fmt.Errorf("id is longer than %d bytes", maxIDLen)
	case !utf8.ValidString(id):
		return fmt.Errorf("id %s is not valid UTF-8", quote(id))
	}
	ascii := true
	for i := 0; i < len(id); i++ {
		if c := id[i]; c >= utf8.RuneSelf {
			ascii = false
			break
		} else if c <= ' ' || c == '/' || c == 0x7f {
			return fmt.Errorf("id %s contains a control character or whitespace", quote(id))
		}
	}
	if ascii {
		return nil
	}
	for _, r := range id {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == '/' || !unicode.IsPrint(r) {
			return fmt.Errorf("id %s contains a control character or whitespace", quote(id))
		}
	}
	return nil
}

// safeName maps every character outside [A-Za-z0-9_.:-] to '_'.
func safeName(s string) string {
	if isToken(s, "_.:-") {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r < utf8.RuneSelf && (isAlnum(byte(r)) || strings.IndexByte("_.:-", byte(r)) >= 0) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

// assignNames sets Node.Name: the id made HAProxy-safe, with "-" and 8 hex
// digits of sha256(id) appended when the id had to be changed or its name
// collides with another node's. Names are unique: a node whose name still
// collides (only possible with a crafted id) is dropped with a Problem.
func assignNames(nodes []Node) ([]Node, []Problem) {
	// The usual case: every id is already a safe name, so names are the
	// (distinct) ids and cannot collide.
	safe := true
	for i := range nodes {
		if !isToken(nodes[i].ID, "_.:-") {
			safe = false
			break
		}
	}
	if safe {
		for i := range nodes {
			nodes[i].Name = nodes[i].ID
		}
		if len(nodes) == 0 {
			return nil, nil
		}
		return nodes, nil
	}
	count := make(map[string]int, len(nodes))
	for i := range nodes {
		n := &nodes[i]
		n.Name = safeName(n.ID)
		if n.Name != n.ID {
			n.Name += "-" + shortHash(n.ID)
		}
		count[n.Name]++
	}
	for i := range nodes {
		n := &nodes[i]
		if count[n.Name] > 1 && n.Name == n.ID {
			n.Name += "-" + shortHash(n.ID)
		}
	}
	seen := make(map[string]bool, len(nodes))
	out := nodes[:0]
	var problems []Problem
	for _, n := range nodes {
		if seen[n.Name] {
			problems = append(problems, Problem{Key: n.Key, Reason: fmt.Sprintf("server name %q collides with another node's", n.Name)})
			continue
		}
		seen[n.Name] = true
		out = append(out, n)
	}
	if len(out) == 0 {
		out = nil
	}
	return out, problems
}

// ServiceName is the HAProxy-safe last path element of a prefix.
func ServiceName(prefix string) string {
	p := TrimPrefix(prefix)
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	if p == "" {
		return "default"
	}
	return safeName(p)
}

// quote formats a raw value for an error message: Go-quoted (so control
// characters show as escapes) and cut after 64 bytes.
func quote(s string) string {
	const limit = 64
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}

// quoteIfOdd quotes s when it holds anything but printable non-space
// characters.
func quoteIfOdd(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' {
			return strconv.Quote(s)
		}
	}
	return s
}

// OneLine returns s with control characters (newlines, ...) escaped, so
// that a message that quotes a value stays on one line.
func OneLine(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' }) < 0 {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}
