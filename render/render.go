// Package render turns a snapshot of etcd keys and Go text/templates into an
// HAProxy configuration. It is pure: no network, no disk, no environment;
// everything it needs (templates as text, getenv, clock, name lookups,
// fileExists) is passed in through Options, so the same Input always gives
// the same bytes.
//
// Node values come from any database host that can write to etcd, so they
// are untrusted: ParseNodes validates every field and skips a node with a
// Problem rather than let a newline, a space or a '#' reach the output.
package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/haconfd/haconfd/render/node"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"
)

// ErrInvalidOptions is wrapped by New for unusable Options.
var ErrInvalidOptions = errors.New("invalid render options")

// Input is one consistent snapshot: every key under the watched prefixes.
type Input struct {
	Revision int64
	KVs      map[string]string
	// Writer is the single writer chosen by the previous render ("" at
	// first): kept while it stays eligible, so the writer does not flap.
	// Memory, when set, wins for the services it names.
	Writer string
	// Memory is what the previous render decided per service (Output.Memory):
	// writers kept while eligible, nodes drained for apply lag.
	Memory map[string]node.Memory
	// Sorted, when set, holds the pairs sorted by key: nodes are then
	// parsed from it (node.ParseSorted), which is faster, and KVs may be
	// nil (the key functions then build their map only when used).
	Sorted []KVPair
	// Revs, when set, holds the etcd mod revision of each pair of Sorted
	// (same index): it orders a node's state and its wsrep_notify record.
	Revs []int64
}

// Map returns the pairs as a map: KVs, or one built from Sorted.
func (in Input) Map() map[string]string {
	if in.KVs != nil || in.Sorted == nil {
		return in.KVs
	}
	m := make(map[string]string, len(in.Sorted))
	for _, p := range in.Sorted {
		m[p.Key] = p.Value
	}
	return m
}

// Template is one template text; Name (the file name) is used in errors.
type Template struct {
	Name string
	Text string
}

// TemplateError is a template parse or execution error at File:Line.
type TemplateError struct {
	File string
	Line int
	Msg  string
	err  error // the text/template error, for errors.Is/As
}

// Unwrap returns the underlying text/template error, which wraps the error
// of a failing template function (e.g. ErrKeyNotExist).
func (e *TemplateError) Unwrap() error { return e.err }

// Error returns "<file>:<line>: <msg>" on one line.
func (e *TemplateError) Error() string {
	return node.OneLine(e.File) + ":" + strconv.Itoa(e.Line) + ": " + node.OneLine(e.Msg)
}

// Options configure a Renderer.
type Options struct {
	// Templates are rendered in order with the same data and their outputs
	// concatenated. At least one.
	Templates []Template
	// Base is prepended verbatim (may be nil); a newline is ensured between
	// Base and the rendered templates.
	Base []byte
	// Prefixes are the watched prefixes (at least one unless KeysOnly); the
	// first is .Prefix and gives .Nodes.
	Prefixes []string
	// KeysOnly renders the way confd does for a conf.d template resource:
	// no node parsing (Prefixes are ignored and may be empty, Output has no
	// Services or Problems), the templates get nil as "." exactly like
	// confd's tmpl.Execute(w, nil), and only the key functions see the KVs
	// (which are then usually the resource's prefix-stripped key space).
	// Without "missingkey=zero", as in confd.
	KeysOnly bool
	// Vars are settings exposed to templates as .Vars (e.g. "bind",
	// "runtime_socket", "state_file", "check_port"). A missing var is "".
	Vars map[string]string
	// Getenv backs the getenv function; nil means every variable is "".
	Getenv func(string) string
	// Now backs the datetime function; nil means time.Now.
	Now func() time.Time
	// Lookup backs lookupIP/lookupIPV4/lookupIPV6/lookupSRV; nil makes
	// them return an error ("lookupIP disabled").
	Lookup Lookup
	// FileExists backs confd's fileExists function; nil makes it return an
	// error ("fileExists disabled").
	FileExists func(path string) bool
	// Galera is the rotation policy of every service (node.Decide).
	Galera node.Policy
	// DefaultPort is the port of a node that publishes none (3306 when 0).
	DefaultPort int
	// WriterKeys, when set, is the etcd prefix under which the load
	// balancers keep each service's writers (<WriterKeys>/<service> =
	// {"writers":[...]}; the snapshot must include it): a render keeps
	// the writers found there while they stay eligible, so every load
	// balancer serves the same writers whatever the order in which it saw
	// the changes, and one started later adopts them. Output.WriterUpdates
	// says what to write there.
	WriterKeys string
	// ClusterBinds are the addresses of the clusters found under a prefix
	// above them (<prefix>/<cluster>/<node>/<field>), by cluster name:
	// only a cluster named here gets a section (Service.Bind), never one
	// derived from the order of clusters.
	ClusterBinds map[string]string
	// Warn receives, once per Renderer and message, notes on template
	// constructs that render as confd renders them but probably not as the
	// author meant (e.g. reverse on a gets list, which confd leaves as is).
	// nil drops them.
	Warn func(msg string)
}

// Data is what templates see as ".".
type Data struct {
	Nodes    []Node            // valid nodes of the first prefix, sorted by ID
	Prefix   string            // the first prefix, as configured
	Revision int64             // etcd revision of the snapshot
	Services []Service         // one per prefix, in Options.Prefixes order
	Vars     map[string]string // Options.Vars
	Writer   string            // ID of the single writer among .Nodes ("" if none is eligible)
	// Clusters are the services found under a prefix above clusters
	// (Service.Cluster set), in Services too.
	Clusters []Service
}

// Service is the set of valid nodes under one watched prefix, or under one
// cluster of a prefix above clusters.
type Service struct {
	Name   string // HAProxy-safe last path element of Prefix, e.g. "galera"
	Prefix string
	Nodes  []node.Node
	// Cluster is the cluster's name when the service is a cluster found
	// under a watched prefix ("" for the prefix itself).
	Cluster string
	// Bind is the cluster's address from Options.ClusterBinds ("" for a
	// prefix, or a cluster nobody bound: not served).
	Bind string
	// Writers are the IDs of the writers chosen among Nodes.
	Writers []string
}

// Node is a node as templates see it (node.Node).
type Node = node.Node

// Problem is a node that was skipped (node.Problem).
type Problem = node.Problem

// Output is the result of one Render.
type Output struct {
	Config   []byte
	Problems []Problem // skipped nodes of all prefixes, sorted by key
	Services []Service // one per prefix, in Options.Prefixes order, each followed by its clusters
	Writer   string    // the single writer chosen (pass it back as Input.Writer)
	// Memory is what to pass back as Input.Memory.
	Memory map[string]node.Memory
	// Notes say what a prefix's keys did not give: a prefix whose keys
	// yield no node, a cluster nobody bound. One line each.
	Notes []string
	// WriterUpdates are the writers to record under Options.WriterKeys:
	// the services whose writers differ from the recorded ones.
	WriterUpdates []WriterUpdate
	// Handovers are the writers that lost the writes in this render while
	// still configured, and not for a graceful maintenance (an operator's
	// drain, pxc_maint_mode, wsrep_reject_queries): their sessions on the
	// writer sections may be shut down (--writer-failover-sessions).
	Handovers []Handover
}

// WriterUpdate is a service's writers to record in etcd, with a compare:
// the key's revision as the render saw it (0: the key did not exist).
type WriterUpdate struct {
	Key     string
	Writers []string
	PrevRev int64
	Prev    []string // the writers recorded before
}

// WriterRecord is the value of a writers key.
type WriterRecord struct {
	Writers []string `json:"writers"`
}

// Handover is a writer that lost the writes.
type Handover struct {
	Service string // Service.Name
	Node    string // node ID
	Server  string // its server name (Node.Name)
	To      []string
	Why     string
}

// Renderer renders snapshots with fixed templates and options. It is safe
// for concurrent use.
type Renderer struct {
	opts     Options
	names    []string // service name per prefix
	parsed   []*template.Template
	fileName []string
	warned   sync.Map // message -> struct{}, for Options.Warn
}

// warn passes msg to Options.Warn the first time it is seen.
func (r *Renderer) warn(msg string) {
	if r.opts.Warn == nil {
		return
	}
	if _, seen := r.warned.LoadOrStore(msg, struct{}{}); !seen {
		r.opts.Warn(msg)
	}
}

// New checks opts and parses every template. A parse error is returned as
// a *TemplateError with the file and line.
func New(opts Options) (*Renderer, error) {
	if len(opts.Templates) == 0 {
		return nil, fmt.Errorf("%w: no templates", ErrInvalidOptions)
	}
	if len(opts.Prefixes) == 0 && !opts.KeysOnly {
		return nil, fmt.Errorf("%w: no prefixes", ErrInvalidOptions)
	}
	if opts.KeysOnly {
		opts.Prefixes = nil
	}
	r := &Renderer{opts: opts}
	r.opts.Prefixes = append([]string(nil), opts.Prefixes...)
	r.opts.Base = append([]byte(nil), opts.Base...)
	r.opts.Vars = make(map[string]string, len(opts.Vars))
	for k, v := range opts.Vars {
		r.opts.Vars[k] = v
	}
	byName := make(map[string]string)
	for _, p := range r.opts.Prefixes {
		if node.TrimPrefix(p) == "" && p != "/" {
			return nil, fmt.Errorf("%w: prefix %q is empty", ErrInvalidOptions, p)
		}
		name := node.ServiceName(p)
		if other, dup := byName[name]; dup {
			return nil, fmt.Errorf("%w: prefixes %q and %q give the same service name %q", ErrInvalidOptions, other, p, name)
		}
		byName[name] = p
		r.names = append(r.names, name)
	}
	for i, t := range opts.Templates {
		name := t.Name
		if name == "" {
			name = fmt.Sprintf("template[%d]", i)
		}
		tmpl := template.New(name)
		if !opts.KeysOnly {
			tmpl = tmpl.Option("missingkey=zero")
		}
		tmpl, err := tmpl.Funcs(funcMap(nil, &r.opts, r.warn)).Parse(t.Text)
		if err != nil {
			return nil, templateError(name, err)
		}
		r.parsed = append(r.parsed, tmpl)
		r.fileName = append(r.fileName, name)
	}
	return r, nil
}

// Render parses the nodes of every prefix and executes the templates. An
// execution error is returned as a *TemplateError with the file and line.
// Invalid nodes are not errors: they are left out and listed in Problems.
func (r *Renderer) Render(in Input) (Output, error) {
	if r.opts.KeysOnly {
		cfg, err := r.execute(newKVStore(in.KVs), nil)
		return Output{Config: cfg}, err
	}
	var out Output
	sorted, revs := in.Sorted, in.Revs
	if sorted == nil {
		sorted = sortedPairs(in.KVs)
		revs = nil
	}
	popts := node.Options{DefaultPort: r.opts.DefaultPort}
	taken := map[string]bool{}
	for _, n := range r.names {
		taken[n] = true
	}
	for i, p := range r.opts.Prefixes {
		parsed := node.ParsePrefix(p, sorted, revs, popts)
		nodes, problems := parsed.Nodes, parsed.Problems
		out.Services = append(out.Services, Service{Name: r.names[i], Prefix: p, Nodes: nodes})
		out.Problems = append(out.Problems, problems...)
		clustered := 0
		var clusters []string
		if parsed.Deep {
			clusters = node.Clusters(p, sorted)
		}
		for _, c := range clusters {
			cp := node.TrimPrefix(p) + "/" + c
			cn, cprobs := node.ParseSortedWith(cp, sorted, revs, popts)
			out.Problems = append(out.Problems, cprobs...)
			clustered += len(cn)
			name := node.ClusterServiceName(c)
			bind := r.opts.ClusterBinds[c]
			if taken[name] {
				out.Notes = append(out.Notes, fmt.Sprintf("cluster %q under prefix %s: its name %q is taken by another section; not served", c, node.TrimPrefix(p), name))
				continue
			}
			taken[name] = true
			if bind == "" {
				out.Notes = append(out.Notes, fmt.Sprintf("cluster %q under prefix %s has %d node(s) and no --cluster-bind %s=ADDR: not served", c, node.TrimPrefix(p), len(cn), c))
			}
			out.Services = append(out.Services, Service{Name: name, Prefix: cp, Nodes: cn, Cluster: c, Bind: bind})
		}
		if len(nodes) == 0 && clustered == 0 {
			out.Notes = append(out.Notes, node.EmptyPrefixNote(p, sorted, problems))
		}
	}
	node.SortProblems(out.Problems)
	out.Memory = make(map[string]node.Memory, len(out.Services))
	for i := range out.Services {
		svc := &out.Services[i]
		prev, ok := in.Memory[svc.Name]
		if !ok && i == 0 && in.Writer != "" {
			prev = node.Memory{Writers: []string{in.Writer}}
		}
		local := prev.Writers
		var rec *recorded
		if r.opts.WriterKeys != "" {
			rec = recordedWriters(r.opts.WriterKeys+"/"+svc.Name, sorted, revs)
			if rec.found && !r.opts.Galera.WriterFailback {
				prev.Writers = rec.writers // the fleet's writers win over this one's memory
			}
		}
		m := node.Decide(svc.Nodes, prev, r.opts.Galera)
		svc.Writers = m.Writers
		out.Memory[svc.Name] = m
		out.Handovers = append(out.Handovers, handovers(svc, local)...)
		if rec != nil && !r.opts.Galera.WriterFailback && len(m.Writers) > 0 && !slices.Equal(m.Writers, rec.writers) && (rec.rev > 0 || !rec.found) {
			out.WriterUpdates = append(out.WriterUpdates, WriterUpdate{Key: rec.key, Writers: m.Writers, PrevRev: rec.rev, Prev: rec.writers})
		}
	}
	if w := out.Services[0].Writers; len(w) > 0 {
		out.Writer = w[0]
	}

	// Templates get their own copies so that nothing they do (reverse on a
	// node list, say) can change Output.Services.
	data := Data{
		Prefix:   r.opts.Prefixes[0],
		Revision: in.Revision,
		Vars:     r.opts.Vars,
	}
	for _, s := range out.Services {
		s.Nodes = append([]Node(nil), s.Nodes...)
		data.Services = append(data.Services, s)
		if s.Cluster != "" {
			data.Clusters = append(data.Clusters, s)
		}
	}
	data.Nodes = append([]Node(nil), out.Services[0].Nodes...)
	data.Writer = out.Writer

	store := newKVStore(in.KVs)
	if in.KVs == nil && in.Sorted != nil {
		store = newKVStoreSorted(in.Sorted)
	}
	cfg, err := r.execute(store, data)
	if err != nil {
		return Output{}, err
	}
	out.Config = cfg
	return out, nil
}

// recorded is a writers key as the snapshot has it.
type recorded struct {
	key     string
	found   bool
	rev     int64
	writers []string
}

// recordedWriters reads key from the sorted pairs; an unreadable value
// counts as found with no writers (it is overwritten).
func recordedWriters(key string, sorted []KVPair, revs []int64) *recorded {
	r := &recorded{key: key}
	i, ok := slices.BinarySearchFunc(sorted, key, func(kv KVPair, k string) int { return strings.Compare(kv.Key, k) })
	if !ok {
		return r
	}
	r.found = true
	if len(revs) == len(sorted) {
		r.rev = revs[i]
	}
	var v WriterRecord
	if json.Unmarshal([]byte(sorted[i].Value), &v) == nil {
		for _, w := range v.Writers {
			if w != "" && !slices.Contains(r.writers, w) {
				r.writers = append(r.writers, w)
			}
		}
	}
	return r
}

// handovers lists the previous writers of svc that are no longer writers
// but still configured, except those drained for a graceful maintenance.
func handovers(svc *Service, prev []string) []Handover {
	var out []Handover
	for _, id := range prev {
		if slices.Contains(svc.Writers, id) {
			continue
		}
		i := slices.IndexFunc(svc.Nodes, func(n Node) bool { return n.ID == id })
		if i < 0 {
			continue
		}
		n := &svc.Nodes[i]
		if !n.InRotation && n.GracefulOut() {
			continue
		}
		why := "a preferred writer took over"
		if !n.InRotation {
			why = "it left rotation: " + strings.Join(n.Reasons, "; ")
		}
		out = append(out, Handover{Service: svc.Name, Node: id, Server: n.Name, To: slices.Clone(svc.Writers), Why: why})
	}
	return out
}

// sortedPairs returns the pairs of m sorted by key.
func sortedPairs(m map[string]string) []KVPair {
	out := make([]KVPair, 0, len(m))
	for k, v := range m {
		out = append(out, KVPair{Key: k, Value: v})
	}
	slices.SortFunc(out, func(a, b KVPair) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// execute runs every template over store with data as "." after Base.
func (r *Renderer) execute(store *kvStore, data any) ([]byte, error) {
	var buf bytes.Buffer
	if len(r.opts.Base) > 0 {
		buf.Write(r.opts.Base)
		if r.opts.Base[len(r.opts.Base)-1] != '\n' {
			buf.WriteByte('\n')
		}
	}
	funcs := funcMap(store, &r.opts, r.warn)
	for i, t := range r.parsed {
		c, err := t.Clone()
		if err != nil {
			return nil, &TemplateError{File: r.fileName[i], Msg: "clone: " + err.Error()}
		}
		if err := c.Funcs(funcs).Execute(&buf, data); err != nil {
			return nil, templateError(r.fileName[i], err)
		}
	}
	return buf.Bytes(), nil
}

// templateError turns a text/template error ("template: NAME:LINE[:COL]:
// MSG") into a *TemplateError.
func templateError(name string, err error) *TemplateError {
	msg := err.Error()
	var ee template.ExecError
	if errors.As(err, &ee) && ee.Err != nil {
		msg = ee.Err.Error()
	}
	te := &TemplateError{File: name, Msg: node.OneLine(msg), err: err}
	rest, ok := strings.CutPrefix(msg, "template: "+name+":")
	if !ok {
		return te
	}
	lineStr, after, ok := strings.Cut(rest, ":")
	line, err2 := strconv.Atoi(lineStr)
	if !ok || err2 != nil {
		return te
	}
	te.Line = line
	// Execution errors carry a column too: "LINE:COL: executing ...".
	if col, after2, ok := strings.Cut(after, ":"); ok {
		if _, err := strconv.Atoi(col); err == nil {
			after = after2
		}
	}
	after = strings.TrimPrefix(after, " ")
	after = strings.TrimPrefix(after, "executing "+strconv.Quote(name)+" ")
	te.Msg = node.OneLine(after)
	return te
}
