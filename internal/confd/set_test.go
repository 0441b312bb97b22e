package confd_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/haconfd/haconfd/internal/confd"
	"github.com/haconfd/haconfd/render"
)

// copyConfDir copies testdata/<name> to a temp dir, pointing OUT at out.
func copyConfDir(t *testing.T, name, out string) string {
	t.Helper()
	dst := t.TempDir()
	src := filepath.Join("testdata", name)
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		writeFile(t, filepath.Join(dst, rel), strings.ReplaceAll(string(b), "OUT/", out+"/"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestProcessV2TemplateOnV3Keys renders a confd directory whose template
// was written for etcd v2 directories from flat v3 keys under a global
// prefix, and checks both destinations against golden files.
func TestProcessV2TemplateOnV3Keys(t *testing.T) {
	ctx := context.Background()
	out := t.TempDir()
	dir := copyConfDir(t, "galera-v2", out)
	g, err := confd.ParseFlagsEnv([]string{"-config-file", filepath.Join(dir, "none.toml"), "-backend", "etcdv3",
		"-confdir", dir, "-prefix", "/production", "-onetime"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	s, err := confd.Load(slog.New(slog.DiscardHandler), g)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.WatchPrefixes(), []string{"/production/components/galera", "/production/config"}; !reflect.DeepEqual(got, want) {
		t.Errorf("WatchPrefixes = %q, want %q", got, want)
	}
	kvs := map[string]string{
		"/production/components/galera/node-2/ip":   "10.0.0.2",
		"/production/components/galera/node-2/port": "3307",
		"/production/components/galera/node-2/host": "db2",
		"/production/components/galera/node-1/ip":   "10.0.0.1",
		"/production/components/galera/node-1/host": "db1",
		"/production/config/bind":                   "127.0.0.1:3306",
		"/production/configx/bind":                  "not this",
		"/staging/components/galera/node-9/ip":      "10.9.9.9",
	}
	a := confd.NewApplier(nil, g)
	res, err := s.Process(ctx, a, kvs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || !res[0].Changed || !res[1].Changed {
		t.Errorf("results %+v", res)
	}
	for _, f := range []struct{ got, want string }{{"haproxy.cfg", "want-haproxy.cfg"}, {"servers.txt", "want-servers.txt"}} {
		if got, want := readFile(t, filepath.Join(out, f.got)), readFile(t, filepath.Join("testdata", "galera-v2", f.want)); got != want {
			t.Errorf("%s:\n%s\nwant:\n%s", f.got, got, want)
		}
	}
	// Both resources share the reload command: it ran once.
	if got := lines(t, filepath.Join(out, "reload.log")); len(got) != 1 {
		t.Errorf("reloads %q, want one", got)
	}
	// A node's lease expires: its keys are gone, only haproxy.cfg and
	// servers.txt change, one reload.
	for k := range kvs {
		if strings.Contains(k, "node-2") {
			delete(kvs, k)
		}
	}
	if _, err := s.Process(ctx, a, kvs); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(out, "haproxy.cfg")); strings.Contains(got, "node-2") || !strings.Contains(got, "node-1") {
		t.Errorf("after expiry:\n%s", got)
	}
	if got := lines(t, filepath.Join(out, "reload.log")); len(got) != 2 {
		t.Errorf("reloads %q, want two", got)
	}
	// Nothing changed: no reload.
	if _, err := s.Process(ctx, a, kvs); err != nil {
		t.Fatal(err)
	}
	if got := lines(t, filepath.Join(out, "reload.log")); len(got) != 2 {
		t.Errorf("reloads %q, want still two", got)
	}
}

func TestProcessIndependentResources(t *testing.T) {
	ctx := context.Background()
	out := t.TempDir()
	dir := confdDir(t, map[string]string{
		"conf.d/good.toml":    "[template]\nsrc = \"good.tmpl\"\ndest = \"" + out + "/good\"\nkeys = [\"/a\"]\n",
		"conf.d/bad.toml":     "[template]\nsrc = \"bad.tmpl\"\ndest = \"" + out + "/bad\"\nkeys = [\"/a\"]\n",
		"templates/good.tmpl": `{{ getv "/a/x" }}`,
		"templates/bad.tmpl":  "line1\n{{ getv \"/a/missing\" }}",
	})
	g := confd.DefaultGlobal()
	g.ConfDir = dir
	s, err := confd.Load(nil, g)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Process(ctx, confd.NewApplier(nil, g), map[string]string{"/a/x": "1"})
	var te *render.TemplateError
	if !errors.As(err, &te) || te.File != "bad.tmpl" || te.Line != 2 || !errors.Is(err, render.ErrKeyNotExist) {
		t.Fatalf("err = %v, want bad.tmpl:2 key does not exist", err)
	}
	if len(res) != 1 || res[0].Name != "good.toml" || !res[0].Changed {
		t.Errorf("results %+v", res)
	}
	if got := readFile(t, filepath.Join(out, "good")); got != "1" {
		t.Errorf("good = %q", got)
	}
	if _, err := os.Stat(filepath.Join(out, "bad")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bad was written: %v", err)
	}
	// An edited template is read again on the next run.
	writeFile(t, filepath.Join(dir, "templates/good.tmpl"), `v={{ getv "/a/x" }}`)
	if _, err := s.Process(ctx, confd.NewApplier(nil, g), map[string]string{"/a/x": "2"}); err == nil {
		t.Fatal("bad.tmpl should still fail")
	}
	if got := readFile(t, filepath.Join(out, "good")); got != "v=2" {
		t.Errorf("good = %q", got)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := confdDir(t, map[string]string{
		"conf.d/r.toml":    "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nkeys = [\"/\"]\n",
		"templates/t.tmpl": "ok\n{{ nosuch }}\n",
	})
	g := confd.DefaultGlobal()
	g.ConfDir = dir
	_, err := confd.Load(nil, g)
	var te *render.TemplateError
	if !errors.As(err, &te) || te.File != "t.tmpl" || te.Line != 2 || !strings.Contains(err.Error(), `r.toml: t.tmpl:2: function "nosuch" not defined`) {
		t.Errorf("err = %v", err)
	}
	g.ConfDir = t.TempDir()
	if _, err := confd.Load(nil, g); err == nil {
		t.Error("empty confdir loaded")
	}
}

func TestRenderedFunctions(t *testing.T) {
	// confd functions that need the outside world, wired by Load:
	// getenv from the environment, fileExists on disk.
	t.Setenv("HACONFD_CONFD_TEST", "from-env")
	out := t.TempDir()
	dir := confdDir(t, map[string]string{
		"conf.d/r.toml":    "[template]\nsrc = \"t.tmpl\"\ndest = \"" + out + "/r\"\nkeys = [\"/\"]\n",
		"templates/t.tmpl": `{{ getenv "HACONFD_CONFD_TEST" }} {{ getenv "HACONFD_CONFD_UNSET" "dflt" }} {{ fileExists "` + out + `" }} {{ fileExists "/no/such" }} {{ len (lookupIP "localhost") | printf "%d" | len }}`,
	})
	g := confd.DefaultGlobal()
	g.ConfDir = dir
	s, err := confd.Load(nil, g)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := s.Render(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(jobs[0].Rendered); !bytes.HasPrefix(jobs[0].Rendered, []byte("from-env dflt true false ")) {
		t.Errorf("rendered %q", got)
	}
}
