// Package templates holds haconfd's default templates, embedded in the
// binary. It depends on nothing but the standard library: callers turn the
// texts into render.Template values themselves.
package templates

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
)

// Names of the embedded templates.
const (
	// Base renders the global and defaults sections.
	Base = "base.cfg.tmpl"
	// Galera renders the "listen galera" section with one server per node.
	Galera = "galera.cfg.tmpl"
)

// ErrNotFound is returned by File for a name that is not embedded.
var ErrNotFound = fs.ErrNotExist

//go:embed *.tmpl
var files embed.FS

// File returns the text of the embedded template name.
func File(name string) (string, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("embedded template %q: %w", name, ErrNotFound)
	}
	return string(b), nil
}

// Names lists the embedded templates, sorted.
func Names() []string {
	entries, err := files.ReadDir(".")
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}
