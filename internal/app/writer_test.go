package app

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/render"
)

// --single-writer / --writer-bind with the default template: one Synced
// writer (lowest wsrep_local_index), the others weight 0; the writer stays
// while it is Synced (no failback), and moves only when it stops being.
func TestSingleWriter(t *testing.T) {
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	config.AddFlags(fs)
	out := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := fs.Parse([]string{"--output", out, "--single-writer", "--writer-bind", "127.0.0.1:3307", "--bind", "127.0.0.1:3306"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(fs, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRenderer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	node := func(id, state, index string) map[string]string {
		p := "/components/galera/" + id
		return map[string]string{p + "/ip": "10.0.0." + id[1:], p + "/port": "3306", p + "/wsrep_local_state_comment": state, p + "/wsrep_local_index": index}
	}
	kvs := func(ns ...map[string]string) map[string]string {
		m := map[string]string{}
		for _, n := range ns {
			for k, v := range n {
				m[k] = v
			}
		}
		return m
	}
	writer := ""
	step := func(name, wantWriter string, in map[string]string) string {
		t.Helper()
		o, err := r.Render(render.Input{Revision: 1, KVs: in, Writer: writer})
		if err != nil {
			t.Fatal(err)
		}
		if o.Writer != wantWriter {
			t.Fatalf("%s: writer %q, want %q", name, o.Writer, wantWriter)
		}
		writer = o.Writer
		cfg := string(o.Config)
		for _, section := range []string{"listen galera  # haconfd:writers\n", "listen galera-writer  # haconfd:writers\n"} {
			i := strings.Index(cfg, section)
			if i < 0 {
				t.Fatalf("%s: no %q in\n%s", name, section, cfg)
			}
			body := cfg[i:]
			if j := strings.Index(body[1:], "\nlisten "); j >= 0 {
				body = body[:j+1]
			}
			active := regexp.MustCompile(`(?m)^    server (\S+) [^\n]*check$`).FindAllStringSubmatch(body, -1)
			if len(active) != 1 || active[0][1] != wantWriter {
				t.Fatalf("%s: %s: servers taking traffic %v, want only %s:\n%s", name, strings.TrimSpace(section), active, wantWriter, body)
			}
		}
		return cfg
	}
	step("start: lowest index", "n2", kvs(node("n1", "Synced", "1"), node("n2", "Synced", "0"), node("n3", "Synced", "2")))
	live := step("writer desyncs: next lowest", "n1", kvs(node("n1", "Synced", "1"), node("n2", "Donor/Desynced", "0"), node("n3", "Synced", "2")))
	if !strings.Contains(live, "server n2 10.0.0.2:3306 check weight 0") {
		t.Fatalf("the desynced node is not drained:\n%s", live)
	}
	step("old writer back with a lower index: no failback", "n1", kvs(node("n1", "Synced", "2"), node("n2", "Synced", "0"), node("n3", "Synced", "1")))
	step("writer gone", "n2", kvs(node("n2", "Synced", "0"), node("n3", "Synced", "1")))
}
