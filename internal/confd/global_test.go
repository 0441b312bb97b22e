package confd_test

import (
	"errors"
	"flag"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/haconfd/haconfd/internal/confd"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func hasWarning(ws []string, sub string) bool {
	for _, w := range ws {
		if strings.Contains(w, sub) {
			return true
		}
	}
	return false
}

func TestParseFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "confd.toml"), `
backend = "etcdv3"
nodes = ["10.0.0.1:2379", "10.0.0.2:2379"]
prefix = "/production"
interval = 10
Log-Level = "debug"
keepstagefile = true
srv_domain_typo = "x"
table = "t"
`)
	missing := filepath.Join(dir, "nope.toml")
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }

	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, g confd.Global)
		warn  string
	}{
		{"defaults without a file", []string{"-config-file", missing, "-backend", "etcdv3"}, nil, func(t *testing.T, g confd.Global) {
			if g.Backend != "etcdv3" || !reflect.DeepEqual(g.Nodes, []string{"127.0.0.1:2379"}) || g.Interval != 600 ||
				g.ConfDir != "/etc/confd" || g.Prefix != "" || g.ConfigFile != "" || g.Watch || g.OneTime {
				t.Errorf("%+v", g)
			}
		}, "does not exist: skipped"},
		{"confd command line", []string{"-config-file", missing, "-backend=etcdv3", "-node", "http://a:2379", "-node", "http://b:2379",
			"-prefix", "/p", "-confdir", "/c", "-onetime", "-watch", "-interval", "5", "-noop", "-sync-only", "-keep-stage-file",
			"-log-level", "warn", "-client-cert", "c.pem", "-client-key", "k.pem", "-client-ca-keys", "ca.pem",
			"-basic-auth", "-username", "u", "-password", "pw"}, nil, func(t *testing.T, g confd.Global) {
			want := confd.Global{Backend: "etcdv3", Nodes: []string{"http://a:2379", "http://b:2379"}, Prefix: "/p", ConfDir: "/c",
				OneTime: true, Watch: true, Interval: 5, Noop: true, SyncOnly: true, KeepStageFile: true, LogLevel: "warn",
				ClientCert: "c.pem", ClientKey: "k.pem", ClientCaKeys: "ca.pem", BasicAuth: true, Username: "u", Password: "pw", Scheme: "http"}
			g.Warnings = nil
			if !reflect.DeepEqual(g, want) {
				t.Errorf("got  %+v\nwant %+v", g, want)
			}
			if u, p := g.EtcdAuth(); u != "u" || p != "pw" {
				t.Errorf("auth %q %q", u, p)
			}
			if lvl, err := g.SlogLevel(); err != nil || lvl != slog.LevelWarn {
				t.Errorf("level %v %v", lvl, err)
			}
		}, "-config-file"},
		{"file", []string{"-config-file", cfg}, nil, func(t *testing.T, g confd.Global) {
			if g.Backend != "etcdv3" || len(g.Nodes) != 2 || g.Prefix != "/production" || g.Interval != 10 ||
				g.LogLevel != "debug" || !g.KeepStageFile || g.ConfigFile != cfg {
				t.Errorf("%+v", g)
			}
			if !hasWarning(g.Warnings, `unknown key "srv_domain_typo"`) || !hasWarning(g.Warnings, "table is not used") {
				t.Errorf("warnings %q", g.Warnings)
			}
		}, ""},
		{"flags override the file", []string{"-config-file", cfg, "-node", "10.9.9.9:2379", "-prefix", "/other", "-interval", "20"}, nil,
			func(t *testing.T, g confd.Global) {
				if !reflect.DeepEqual(g.Nodes, []string{"10.9.9.9:2379"}) || g.Prefix != "/other" || g.Interval != 20 {
					t.Errorf("%+v", g)
				}
			}, ""},
		{"backend etcd is v3 with confd's default node", []string{"-config-file", missing}, nil, func(t *testing.T, g confd.Global) {
			if g.Backend != "etcd" || !reflect.DeepEqual(g.Nodes, []string{"http://127.0.0.1:4001"}) {
				t.Errorf("%+v", g)
			}
		}, "etcd 3 listens on :2379"},
		{"ETCDCTL_PEERS for backend etcd", []string{"-config-file", missing}, map[string]string{"ETCDCTL_PEERS": "http://x:1,http://y:2"},
			func(t *testing.T, g confd.Global) {
				if !reflect.DeepEqual(g.Nodes, []string{"http://x:1", "http://y:2"}) {
					t.Errorf("%+v", g.Nodes)
				}
			}, "read through the etcd v3 API"},
		{"CONFD_CLIENT_* environment", []string{"-config-file", missing, "-backend", "etcdv3", "-client-key", "flag.key"},
			map[string]string{"CONFD_CLIENT_CERT": "env.crt", "CONFD_CLIENT_KEY": "env.key", "CONFD_CLIENT_CAKEYS": "env.ca"},
			func(t *testing.T, g confd.Global) {
				if g.ClientCert != "env.crt" || g.ClientKey != "flag.key" || g.ClientCaKeys != "env.ca" {
					t.Errorf("%+v", g)
				}
			}, ""},
		{"username without basic auth is ignored", []string{"-config-file", missing, "-backend", "etcdv3", "-username", "u"}, nil,
			func(t *testing.T, g confd.Global) {
				if u, p := g.EtcdAuth(); u != "" || p != "" {
					t.Errorf("auth %q %q", u, p)
				}
			}, "ignored without basic_auth"},
		{"other backends' flags are accepted", []string{"-config-file", missing, "-backend", "etcdv3", "-table", "x", "-app-id", "y"}, nil,
			func(t *testing.T, g confd.Global) {}, "-table is not used by haconfd"},
		{"srv domain", []string{"-config-file", missing, "-backend", "etcdv3", "-srv-domain", "example.com"}, nil,
			func(t *testing.T, g confd.Global) {
				if g.SRVRecord != "_etcdv3._tcp.example.com." || len(g.Nodes) != 0 {
					t.Errorf("%+v", g)
				}
			}, ""},
		{"double dash works too", []string{"--config-file", missing, "--backend", "etcdv3", "--onetime"}, nil,
			func(t *testing.T, g confd.Global) {
				if !g.OneTime {
					t.Errorf("%+v", g)
				}
			}, ""},
		{"version", []string{"-config-file", missing, "-backend", "etcdv3", "-version"}, nil,
			func(t *testing.T, g confd.Global) {
				if !g.PrintVersion {
					t.Errorf("%+v", g)
				}
			}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env = tc.env
			g, err := confd.ParseFlagsEnv(tc.args, getenv)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, g)
			if tc.warn != "" && !hasWarning(g.Warnings, tc.warn) {
				t.Errorf("warnings %q, want one containing %q", g.Warnings, tc.warn)
			}
		})
	}
}

func TestParseFlagsErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.toml")
	badType := writeFile(t, filepath.Join(dir, "type.toml"), "interval = \"ten\"\n")
	badSyntax := writeFile(t, filepath.Join(dir, "syntax.toml"), "backend = \n")
	fileBackend := writeFile(t, filepath.Join(dir, "backend.toml"), "backend = \"redis\"\n")
	tests := []struct {
		name string
		args []string
		want string
		is   error
	}{
		{"unsupported backend", []string{"-config-file", missing, "-backend", "consul"},
			"-backend consul: haconfd supports only etcdv3 (and etcd, treated as v3)", confd.ErrUnsupportedBackend},
		{"unsupported backend in the file", []string{"-config-file", fileBackend},
			fileBackend + ": backend redis: haconfd supports only etcdv3 (and etcd, treated as v3)", confd.ErrUnsupportedBackend},
		{"unknown flag", []string{"-config-file", missing, "-bogus"}, "invalid setting: flag provided but not defined: -bogus", confd.ErrInvalidSetting},
		{"bad interval", []string{"-config-file", missing, "-interval", "soon"}, `-interval: want a whole number of seconds, got "soon"`, confd.ErrInvalidSetting},
		{"zero interval", []string{"-config-file", missing, "-backend", "etcdv3", "-interval", "0"}, "interval 0: must be at least 1 second", confd.ErrInvalidSetting},
		{"bad log level", []string{"-config-file", missing, "-backend", "etcdv3", "-log-level", "loud"}, `log-level "loud": want debug, info, warning or error`, confd.ErrInvalidSetting},
		{"bad scheme", []string{"-config-file", missing, "-backend", "etcdv3", "-scheme", "ftp"}, `scheme "ftp": want http or https`, confd.ErrInvalidSetting},
		{"stray argument", []string{"-config-file", missing, "etcdv3"}, `unexpected argument "etcdv3"`, confd.ErrInvalidSetting},
		{"file value of the wrong type", []string{"-config-file", badType}, badType + `: interval: want an integer, got a string`, confd.ErrInvalidSetting},
		{"file syntax", []string{"-config-file", badSyntax}, badSyntax + ": line 1 column", nil},
		{"empty node", []string{"-config-file", missing, "-backend", "etcdv3", "-node", ""}, `node 1 "": not an address`, confd.ErrInvalidSetting},
		{"help", []string{"-h"}, "confd flags: flag: help requested", flag.ErrHelp},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := confd.ParseFlagsEnv(tc.args, func(string) string { return "" })
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
		})
	}
}

func TestLoadGlobal(t *testing.T) {
	dir := t.TempDir()
	if _, err := confd.LoadGlobal(filepath.Join(dir, "nope.toml")); err == nil || !strings.Contains(err.Error(), "read confd config") {
		t.Errorf("missing file: %v", err)
	}
	p := writeFile(t, filepath.Join(dir, "confd.toml"), "backend = \"etcdv3\"\nnodes = [\"127.0.0.1:1\"]\nwatch = true\nnoop = 1\n")
	if _, err := confd.LoadGlobal(p); err == nil || !strings.Contains(err.Error(), "noop: want true or false, got an integer") {
		t.Errorf("bad noop: %v", err)
	}
	p = writeFile(t, filepath.Join(dir, "confd.toml"), "backend = \"etcdv3\"\nnodes = [\"127.0.0.1:1\"]\nwatch = true\nconfdir = \"/x\"\n")
	g, err := confd.LoadGlobal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !g.Watch || g.ConfDir != "/x" || g.ConfigDir() != "/x/conf.d" || g.TemplateDir() != "/x/templates" {
		t.Errorf("%+v", g)
	}
	var b strings.Builder
	confd.Usage(&b)
	for _, f := range []string{"-backend string", "-onetime\n", "-node value", "-interval int", "-client-ca-keys"} {
		if !strings.Contains(b.String(), f) {
			t.Errorf("usage lacks %q:\n%s", f, b.String())
		}
	}
}

func TestResolveNodes(t *testing.T) {
	lookup := func(service, proto, name string) (string, []*net.SRV, error) {
		if name != "_etcd._tcp.example.com." {
			return "", nil, errors.New("no such host")
		}
		return "", []*net.SRV{{Target: "e1.example.com.", Port: 2379}, {Target: "e2.example.com.", Port: 2379}}, nil
	}
	g := confd.Global{Backend: "etcd", Scheme: "https", SRVRecord: "_etcd._tcp.example.com."}
	if err := g.ResolveNodes(lookup); err != nil {
		t.Fatal(err)
	}
	if want := []string{"https://e1.example.com:2379", "https://e2.example.com:2379"}; !reflect.DeepEqual(g.Nodes, want) {
		t.Errorf("nodes %v", g.Nodes)
	}
	g = confd.Global{Backend: "etcdv3", SRVRecord: "_x._tcp.nope."}
	if err := g.ResolveNodes(lookup); err == nil || !strings.Contains(err.Error(), "get nodes from SRV record _x._tcp.nope.: no such host") {
		t.Errorf("err = %v", err)
	}
	g = confd.Global{Nodes: []string{"a:1"}}
	if err := g.ResolveNodes(lookup); err != nil || g.Nodes[0] != "a:1" {
		t.Errorf("no SRV record: %v %v", g.Nodes, err)
	}
}
