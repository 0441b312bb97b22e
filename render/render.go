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
	"errors"
	"fmt"
	"github.com/haconfd/haconfd/render/node"
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
	Writer string
	// Sorted, when set, holds the pairs sorted by key: nodes are then
	// parsed from it (node.ParseSorted), which is faster, and KVs may be
	// nil (the key functions then build their map only when used).
	Sorted []KVPair
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
}

// Service is the set of valid nodes under one watched prefix.
type Service struct {
	Name   string // HAProxy-safe last path element of Prefix, e.g. "galera"
	Prefix string
	Nodes  []node.Node
}

// Node is a node as templates see it (node.Node).
type Node = node.Node

// Problem is a node that was skipped (node.Problem).
type Problem = node.Problem

// Output is the result of one Render.
type Output struct {
	Config   []byte
	Problems []Problem // skipped nodes of all prefixes, sorted by key
	Services []Service // one per prefix, in Options.Prefixes order
	Writer   string    // the single writer chosen (pass it back as Input.Writer)
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
	for i, p := range r.opts.Prefixes {
		var nodes []node.Node
		var problems []node.Problem
		if in.Sorted != nil {
			nodes, problems = node.ParseSorted(p, in.Sorted)
		} else {
			nodes, problems = node.Parse(p, in.KVs)
		}
		out.Services = append(out.Services, Service{Name: r.names[i], Prefix: p, Nodes: nodes})
		out.Problems = append(out.Problems, problems...)
	}
	node.SortProblems(out.Problems)
	out.Writer = node.PickWriter(out.Services[0].Nodes, in.Writer)
	if out.Writer != "" {
		for i := range out.Services[0].Nodes {
			n := &out.Services[0].Nodes[i]
			n.IsWriter = n.ID == out.Writer
		}
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
