package render_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/haconfd/haconfd/render"
)

func TestNewErrors(t *testing.T) {
	one := []render.Template{{Name: "a.tmpl", Text: "x"}}
	tests := []struct {
		name string
		opts render.Options
		want string
	}{
		{"no templates", render.Options{Prefixes: []string{pfx}}, "invalid render options: no templates"},
		{"no prefixes", render.Options{Templates: one}, "invalid render options: no prefixes"},
		{"empty prefix", render.Options{Templates: one, Prefixes: []string{""}}, `invalid render options: prefix "" is empty`},
		{"same service name", render.Options{Templates: one, Prefixes: []string{"/a/galera", "/b/galera/"}},
			`invalid render options: prefixes "/a/galera" and "/b/galera/" give the same service name "galera"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render.New(tc.opts)
			if err == nil || err.Error() != tc.want || !errors.Is(err, render.ErrInvalidOptions) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestTemplateErrors(t *testing.T) {
	tests := []struct {
		name, text string
		line       int
		msg        string // substring of Msg
		exec       bool
	}{
		{"parse unclosed action", "a\nb\n{{ if .Nodes }}\nc", 4, "unexpected EOF", false},
		{"parse unknown function", "a\n{{ nosuch 1 }}\n", 2, `function "nosuch" not defined`, false},
		{"parse bad syntax", "{{ .Nodes\n}}x{{ ) }}", 2, "unexpected", false},
		{"exec getv missing", "line1\nline2\n  {{ getv \"/missing/key\" }}\n", 3, "error calling getv: key does not exist: /missing/key", true},
		{"exec bad field", "\n{{ .Nope }}", 2, "can't evaluate field Nope", true},
		{"exec div zero", "{{ div 1 0 }}", 1, "integer divide by zero", true},
		{"exec newline in key stays one line", "{{ getv \"/a\\nb\" }}", 1, `key does not exist: /a\nb`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := render.New(render.Options{
				Templates: []render.Template{{Name: "ok.tmpl", Text: "fine\n"}, {Name: "bad.cfg.tmpl", Text: tc.text}},
				Prefixes:  []string{pfx},
			})
			if !tc.exec {
				checkTemplateError(t, err, tc.line, tc.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.Render(render.Input{})
			checkTemplateError(t, err, tc.line, tc.msg)
		})
	}
}

func checkTemplateError(t *testing.T, err error, line int, msg string) {
	t.Helper()
	var te *render.TemplateError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v (%T), want *TemplateError", err, err)
	}
	if te.File != "bad.cfg.tmpl" || te.Line != line || !strings.Contains(te.Msg, msg) {
		t.Errorf("got File=%q Line=%d Msg=%q; want bad.cfg.tmpl:%d containing %q", te.File, te.Line, te.Msg, line, msg)
	}
	if s := te.Error(); strings.Contains(s, "\n") || !strings.HasPrefix(s, "bad.cfg.tmpl:") {
		t.Errorf("Error() = %q: want one line starting with file:line", s)
	}
}

func TestExecErrorUnwraps(t *testing.T) {
	r, err := render.New(render.Options{Templates: []render.Template{{Name: "t", Text: `{{ getv "/x" }}`}}, Prefixes: []string{pfx}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Render(render.Input{})
	if !errors.Is(err, render.ErrKeyNotExist) {
		t.Errorf("errors.Is(%v, ErrKeyNotExist) = false", err)
	}
	if got, want := err.Error(), `t:1: at <getv "/x">: error calling getv: key does not exist: /x`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestBaseAndConcatenation(t *testing.T) {
	tmpls := []render.Template{{Name: "1", Text: "one\n"}, {Name: "2", Text: "two"}, {Name: "3", Text: "three\n"}}
	tests := []struct {
		name string
		base []byte
		want string
	}{
		{"nil base", nil, "one\ntwothree\n"},
		{"base with newline", []byte("global\n"), "global\none\ntwothree\n"},
		{"base without newline", []byte("global"), "global\none\ntwothree\n"},
		{"base kept verbatim", []byte("# x\r\n\n"), "# x\r\n\none\ntwothree\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := render.New(render.Options{Templates: tmpls, Base: tc.base, Prefixes: []string{pfx}})
			if err != nil {
				t.Fatal(err)
			}
			out, err := r.Render(render.Input{})
			if err != nil {
				t.Fatal(err)
			}
			if string(out.Config) != tc.want {
				t.Errorf("got %q want %q", out.Config, tc.want)
			}
		})
	}
}

func TestOutputServicesAndProblems(t *testing.T) {
	r, err := render.New(render.Options{
		// The template reverses its node list: Output must not change.
		Templates: []render.Template{{Name: "t", Text: `{{ range reverse .Nodes }}{{ .ID }}{{ end }}`}},
		Prefixes:  []string{pfx, "/components/maxscale/"},
	})
	if err != nil {
		t.Fatal(err)
	}
	kvs := map[string]string{
		pfx + "/b": "10.0.0.2", pfx + "/a": "10.0.0.1", pfx + "/bad": "x y",
		"/components/maxscale/m1": "10.0.1.1:4006", "/components/maxscale/m0/port": "1",
	}
	out, err := r.Render(render.Input{Revision: 3, KVs: kvs})
	if err != nil {
		t.Fatal(err)
	}
	if string(out.Config) != "ba" {
		t.Errorf("config %q", out.Config)
	}
	if len(out.Services) != 2 || out.Services[0].Name != "galera" || out.Services[1].Name != "maxscale" ||
		out.Services[1].Prefix != "/components/maxscale/" || len(out.Services[1].Nodes) != 1 {
		t.Fatalf("services %+v", out.Services)
	}
	if n := out.Services[0].Nodes; len(n) != 2 || n[0].ID != "a" || n[1].ID != "b" {
		t.Errorf("nodes changed by the template: %+v", n)
	}
	want := []string{
		`node /components/galera/bad: ip "x y" is not an IP address or host name`,
		`node /components/maxscale/m0: missing ip`,
	}
	if len(out.Problems) != len(want) {
		t.Fatalf("problems %v", out.Problems)
	}
	for i, p := range out.Problems {
		if p.Error() != want[i] {
			t.Errorf("problem %d = %q, want %q", i, p.Error(), want[i])
		}
	}
}

func TestRenderConcurrent(t *testing.T) {
	r, err := render.New(render.Options{Templates: defaultTemplates(t), Prefixes: []string{pfx}, Vars: defaultVars()})
	if err != nil {
		t.Fatal(err)
	}
	first, err := r.Render(render.Input{KVs: map[string]string{pfx + "/a": "10.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := r.Render(render.Input{KVs: map[string]string{pfx + "/a": "10.0.0.1"}})
			if err != nil || string(out.Config) != string(first.Config) {
				t.Errorf("concurrent render differs: %v", err)
			}
		}()
	}
	wg.Wait()
}

// A snapshot given only as sorted pairs renders exactly as the same
// snapshot given as a map, key functions included (their map is built on
// first use).
func TestSortedInputRendersLikeMap(t *testing.T) {
	text := `{{ range .Nodes }}{{ .Name }} {{ .Addr }}{{ if .Weighted }} w{{ .Weight }}{{ end }}
{{ end }}{{ getv "/components/galera/db2/ip" }} {{ getv "/nope" "dflt" }} {{ exists "/components/galera/db1" }}
{{ range gets "/components/galera/db2/*" }}{{ .Key }}={{ .Value }} {{ end }}
{{ range ls "/components/galera" }}{{ . }} {{ end }}{{ range lsdir "/components/galera" }}[{{ . }}]{{ end }}
`
	r, err := render.New(render.Options{Templates: []render.Template{{Name: "t", Text: text}}, Prefixes: []string{"/components/galera"}})
	if err != nil {
		t.Fatal(err)
	}
	kvs := map[string]string{
		"/components/galera/db1": "10.0.0.1:3306", "/components/galera/db2/ip": "10.0.0.2", "/components/galera/db2/port": "3306", "/components/galera/db2/weight": "3",
		"/components/galera/db2-old": "10.0.0.9", "/elsewhere/x": "y",
	}
	sorted := sortedPairs(kvs)
	fromMap, err := r.Render(render.Input{KVs: kvs})
	if err != nil {
		t.Fatal(err)
	}
	fromSorted, err := r.Render(render.Input{Sorted: sorted})
	if err != nil {
		t.Fatal(err)
	}
	if string(fromSorted.Config) != string(fromMap.Config) || !strings.Contains(string(fromMap.Config), "db2 10.0.0.2:3306 w3") ||
		!strings.Contains(string(fromMap.Config), "10.0.0.2 dflt true") {
		t.Errorf("from sorted pairs:\n%s\nfrom the map:\n%s", fromSorted.Config, fromMap.Config)
	}
}
