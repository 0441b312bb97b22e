package render_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haconfd/haconfd/internal/testhaproxy"
	"github.com/haconfd/haconfd/render"
	"github.com/haconfd/haconfd/render/node"
	"github.com/haconfd/haconfd/templates"
)

var update = flag.Bool("update", false, "rewrite render/testdata/*/want.* from the current output")

// snapshotFile is the format of testdata/<case>/snapshot.json.
type snapshotFile struct {
	Revision int64 `json:"revision"`
	KVs      []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"kvs"`
}

// defaultVars are used when a case has no vars.json.
func defaultVars() map[string]string {
	return map[string]string{
		"bind":           "127.0.0.1:3306",
		"runtime_socket": "/run/haconfd/admin.sock",
	}
}

func readJSON(t *testing.T, file string, v any) bool {
	t.Helper()
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return true
}

func defaultTemplates(t testing.TB) []render.Template {
	t.Helper()
	var out []render.Template
	for _, name := range []string{templates.Base, templates.Galera} {
		text, err := templates.File(name)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, render.Template{Name: name, Text: text})
	}
	return out
}

// goldenCase renders testdata/<dir> and returns the config and problems.
func goldenCase(t *testing.T, dir string) (cfg []byte, problems string, custom bool) {
	t.Helper()
	var snap snapshotFile
	if !readJSON(t, filepath.Join(dir, "snapshot.json"), &snap) {
		t.Fatalf("%s: no snapshot.json", dir)
	}
	kvs := make(map[string]string, len(snap.KVs))
	for _, kv := range snap.KVs {
		kvs[kv.Key] = kv.Value
	}
	vars := defaultVars()
	readJSON(t, filepath.Join(dir, "vars.json"), &vars)
	prefixes := []string{"/components/galera"}
	readJSON(t, filepath.Join(dir, "prefixes.json"), &prefixes)
	var opts struct {
		ClusterBinds   map[string]string `json:"cluster_binds"`
		DefaultPort    int               `json:"default_port"`
		MaxRecvQueue   int64             `json:"max_recv_queue"`
		MaxWriters     int               `json:"max_writers"`
		WriterFailback bool              `json:"writer_failback"`
		WriterNotRead  bool              `json:"writers_not_readers"`
	}
	readJSON(t, filepath.Join(dir, "options.json"), &opts)
	tmpls := defaultTemplates(t)
	if b, err := os.ReadFile(filepath.Join(dir, "template.tmpl")); err == nil {
		tmpls = []render.Template{{Name: "template.tmpl", Text: string(b)}}
		custom = true
	}
	r, err := render.New(render.Options{
		Templates: tmpls,
		Prefixes:  prefixes,
		Vars:      vars,
		Getenv:    func(k string) string { return map[string]string{"HACONFD_TEST": "from-env"}[k] },
		Now:       func() time.Time { return time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC) },
		Galera: node.Policy{MaxRecvQueue: opts.MaxRecvQueue, MaxWriters: opts.MaxWriters,
			WriterFailback: opts.WriterFailback, WritersNotReaders: opts.WriterNotRead},
		DefaultPort:  opts.DefaultPort,
		ClusterBinds: opts.ClusterBinds,
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.Render(render.Input{Revision: snap.Revision, KVs: kvs})
	if err != nil {
		t.Fatal(err)
	}
	var pb strings.Builder
	for _, p := range out.Problems {
		pb.WriteString(p.Error() + "\n")
	}
	for _, n := range out.Notes {
		pb.WriteString("note: " + n + "\n")
	}
	// Determinism: a second render gives the same bytes.
	again, err := r.Render(render.Input{Revision: snap.Revision, KVs: kvs})
	if err != nil || !bytes.Equal(again.Config, out.Config) {
		t.Fatalf("second render differs (err %v)", err)
	}
	return out.Config, pb.String(), custom
}

func compareGolden(t *testing.T, file string, got []byte) {
	t.Helper()
	if *update {
		if len(got) == 0 && strings.HasSuffix(file, ".problems") {
			if err := os.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			return
		}
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) && len(got) == 0 {
		return
	}
	if err != nil {
		t.Fatalf("%v (run go test ./render -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test ./render -update to accept)\n--- got ---\n%s\n--- want ---\n%s", file, got, want)
	}
}

// TestGolden renders every testdata case and compares want.cfg and
// want.problems (the skipped nodes, one line each).
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*/snapshot.json")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, snap := range dirs {
		dir := filepath.Dir(snap)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			cfg, problems, _ := goldenCase(t, dir)
			compareGolden(t, filepath.Join(dir, "want.cfg"), cfg)
			compareGolden(t, filepath.Join(dir, "want.problems"), []byte(problems))
		})
	}
}

// TestGoldenHAProxyAccepts runs the real "haproxy -c" on every golden
// config made from the default templates: HAProxy accepts it and prints
// no warning (on each version `make test` runs against).
func TestGoldenHAProxyAccepts(t *testing.T) {
	bin := testhaproxy.Require(t).Path
	dirs, _ := filepath.Glob("testdata/*/snapshot.json")
	for _, snap := range dirs {
		dir := filepath.Dir(snap)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			cfg, _, custom := goldenCase(t, dir)
			if custom {
				t.Skip("custom template")
			}
			tmp := t.TempDir()
			// A server-state-file that does not exist yet is a warning
			// on 2.6 (a notice on 3.0); haconfd writes it before each
			// reload, so -c sees one here too.
			state := filepath.Join(tmp, "server-state")
			if err := os.WriteFile(state, []byte("1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg = regexp.MustCompile(`(?m)^(\s*server-state-file) .*$`).ReplaceAll(cfg, []byte("${1} "+state))
			file := filepath.Join(tmp, "haproxy.cfg")
			if err := os.WriteFile(file, cfg, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "-c", "-f", file).CombinedOutput()
			if err != nil {
				t.Fatalf("haproxy -c: %v\n%s\n--- config ---\n%s", err, out, cfg)
			}
			if bytes.Contains(out, []byte("[WARNING]")) || bytes.Contains(out, []byte("Warnings were found")) {
				t.Fatalf("haproxy -c warns:\n%s\n--- config ---\n%s", out, cfg)
			}
		})
	}
}
