package render_test

import (
	"encoding/json"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haconfd/haconfd/render"
)

// TestKeysOnlyV2Directories renders a template written for confd with etcd
// v2 directories (lsdir, getv with printf) from flat etcd v3 keys, in the
// KeysOnly mode used for conf.d template resources, against a golden file.
func TestKeysOnlyV2Directories(t *testing.T) {
	dir := filepath.Join("testdata", "confd", "v2dirs")
	text, err := os.ReadFile(filepath.Join(dir, "template.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	var kvs map[string]string
	b, err := os.ReadFile(filepath.Join(dir, "kvs.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &kvs); err != nil {
		t.Fatal(err)
	}
	r, err := render.New(render.Options{
		KeysOnly:  true,
		Templates: []render.Template{{Name: "galera.cfg.tmpl", Text: string(text)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.Render(render.Input{Revision: 9, KVs: kvs})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Services) != 0 || len(out.Problems) != 0 {
		t.Errorf("KeysOnly parsed nodes: services %v problems %v", out.Services, out.Problems)
	}
	compareGolden(t, filepath.Join(dir, "want.cfg"), out.Config)
}

func TestKeysOnly(t *testing.T) {
	tests := []struct {
		name, text, want, err string
		prefixes              []string
	}{
		{"no prefixes needed", `{{ getv "/a" }}`, "1", "", nil},
		{"prefixes ignored, no node problems", `{{ getv "/a" }}`, "1", "", []string{"/"}},
		{"dot is nil as in confd", `{{ . }}`, "<no value>", "", nil},
		{"no Nodes (nil data, as confd)", `{{ .Nodes }}`, "<no value>", "", nil},
		{"missingkey default", `{{ $m := map "a" 1 }}{{ $m.b }}`, "<no value>", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := render.New(render.Options{KeysOnly: true, Prefixes: tc.prefixes,
				Templates: []render.Template{{Name: "t", Text: tc.text}}})
			if err != nil {
				t.Fatal(err)
			}
			out, err := r.Render(render.Input{KVs: map[string]string{"/a": "1", "/b": "x y"}})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(out.Config) != tc.want || len(out.Problems) != 0 {
				t.Errorf("got %q problems %v, want %q", out.Config, out.Problems, tc.want)
			}
		})
	}
}

func TestWarnOnce(t *testing.T) {
	var got []string
	r, err := render.New(render.Options{
		Prefixes:  []string{pfx},
		Templates: []render.Template{{Name: "t", Text: `{{ reverse (gets "/a/*") }}{{ reverse (gets "/b/*") }}`}},
		Warn:      func(m string) { got = append(got, m) },
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := r.Render(render.Input{KVs: map[string]string{"/a/x": "1"}}); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 1 || !strings.Contains(got[0], "reverse: the list from gets is left in key order") {
		t.Errorf("warnings %q, want one about reverse", got)
	}
	// No Warn: nothing happens.
	r, err = render.New(render.Options{Prefixes: []string{pfx}, Templates: []render.Template{{Name: "t", Text: `{{ reverse (gets "/a/*") }}`}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Render(render.Input{}); err != nil {
		t.Fatal(err)
	}
}

func TestGetsBadPatternEmptyStore(t *testing.T) {
	// confd's memkv only notices a bad pattern when it has a key to match.
	got, err := execOne(t, render.Options{}, nil, `{{ len (gets "/a/[") }}`)
	if err != nil || got != "0" {
		t.Errorf("got %q %v, want 0 and no error", got, err)
	}
	_, err = execOne(t, render.Options{}, map[string]string{"/x": "1"}, `{{ gets "/a/[" }}`)
	if err == nil || !errors.Is(err, path.ErrBadPattern) {
		t.Errorf("err = %v, want ErrBadPattern", err)
	}
}
