package confd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/haconfd/haconfd/render"
)

// Set is a loaded confd directory: the global settings and every template
// resource, each rendered and applied independently.
type Set struct {
	Global    Global
	Resources []Resource
	logger    *slog.Logger
	tmplDir   string

	mu    sync.Mutex
	cache map[string]cachedRenderer // by template path
}

// cachedRenderer is a parsed template and the text it was parsed from, so
// that an unchanged template is not parsed (and warned about) again.
type cachedRenderer struct {
	text string
	r    *render.Renderer
}

// Load reads the template resources of g.ConfDir and parses every
// template once, so that a broken setup fails at start with the file and
// line. Any error of LoadResources is returned (haconfd does not start
// with half a confd directory). Warnings of g and of the resources are
// logged.
func Load(logger *slog.Logger, g Global) (*Set, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rs, err := LoadResources(g.ConfDir, g)
	if err != nil {
		return nil, err
	}
	s := &Set{Global: g, Resources: rs, logger: logger, tmplDir: g.TemplateDir(), cache: make(map[string]cachedRenderer)}
	for _, w := range g.Warnings {
		logger.Warn(w)
	}
	for _, r := range rs {
		for _, w := range r.Warnings {
			logger.Warn(w, "resource", r.Name)
		}
		if _, err := s.renderer(r); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// WatchPrefixes are the etcd prefixes to watch (and get) for every
// resource: the union of Resource.WatchPrefixes, without the ones inside
// another (by path: "/app" covers "/app/x", not "/application"), sorted.
func (s *Set) WatchPrefixes() []string {
	var all []string
	for _, r := range s.Resources {
		all = append(all, r.WatchPrefixes(s.Global)...)
	}
	sort.Strings(all)
	var out []string
	for _, p := range all {
		if underAny(p, out) {
			continue // equal to or below one already kept ("/app" keeps "/application" apart)
		}
		out = append(out, p)
	}
	return out
}

// renderer reads and parses r's template as confd does on every run, in
// confd's mode: KeysOnly, getenv from the environment, real lookups and
// fileExists. The template's name in errors is its path below the
// templates directory.
func (s *Set) renderer(r Resource) (*render.Renderer, error) {
	text, err := os.ReadFile(r.Src)
	if err != nil {
		return nil, fmt.Errorf("%s: missing template: %w", r.Name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.cache[r.Src]; ok && c.text == string(text) {
		return c.r, nil
	}
	name, err := filepath.Rel(s.tmplDir, r.Src)
	if err != nil || strings.HasPrefix(name, "..") {
		name = r.Src
	}
	rr, err := render.New(render.Options{
		KeysOnly:   true,
		Templates:  []render.Template{{Name: name, Text: string(text)}},
		Getenv:     os.Getenv,
		Lookup:     NetLookup{},
		FileExists: fileExists,
		Warn:       func(m string) { s.logger.Warn(m, "template", name) },
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Name, err)
	}
	s.cache[r.Src] = cachedRenderer{text: string(text), r: rr}
	return rr, nil
}

// fileExists is confd's util.IsFileExist: true unless stat says "does not
// exist".
func fileExists(p string) bool {
	_, err := os.Stat(p)
	return !errors.Is(err, fs.ErrNotExist)
}

// Render renders every resource from a snapshot of absolute etcd keys
// (at least every key under WatchPrefixes). The templates are read again
// each time, as confd does, so an edited template applies on the next run.
// A resource that fails to render is left out of the jobs and its error
// is returned joined with the others'.
func (s *Set) Render(all map[string]string) ([]Job, error) {
	var jobs []Job
	var errs []error
	for _, r := range s.Resources {
		rr, err := s.renderer(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out, err := rr.Render(render.Input{KVs: r.KeySpace(s.Global, all)})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Name, err))
			continue
		}
		jobs = append(jobs, Job{Resource: r, Rendered: out.Config})
	}
	return jobs, errors.Join(errs...)
}

// Process is one confd run over a snapshot: render every resource, apply
// the ones that rendered (reloads coalesced, see Applier), and return the
// results and every error joined. One resource failing does not stop the
// others.
func (s *Set) Process(ctx context.Context, a *Applier, all map[string]string) ([]Result, error) {
	jobs, rerr := s.Render(all)
	res, aerr := a.ApplyBatch(ctx, jobs)
	return res, errors.Join(rerr, aerr)
}

// NetLookup resolves names for lookupIP and lookupSRV with the system
// resolver, as confd does.
type NetLookup struct{}

// LookupIP is net.LookupIP.
func (NetLookup) LookupIP(name string) ([]net.IP, error) { return net.LookupIP(name) }

// LookupSRV is net.LookupSRV without the CNAME.
func (NetLookup) LookupSRV(service, proto, name string) ([]*net.SRV, error) {
	_, addrs, err := net.LookupSRV(service, proto, name)
	return addrs, err
}
