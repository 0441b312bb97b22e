package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func load(t *testing.T, args []string, env ...string) (Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return Load(fs, env)
}

func TestDefaultsAreValid(t *testing.T) {
	c, err := load(t, []string{"--output", filepath.Join(t.TempDir(), "haproxy.cfg")})
	if err != nil {
		t.Fatal(err)
	}
	if c.Prefixes[0] != "/components/galera" || c.WaitMin != 100*time.Millisecond || c.WaitMax != 2*time.Second || c.MinServers != 1 {
		t.Fatalf("unexpected defaults: %+v", c)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "haproxy.cfg")
	yaml := filepath.Join(dir, "c.yaml")
	os.WriteFile(yaml, []byte("prefix: [/from/file]\nmin-servers: 3\nbind: 127.0.0.1:1000\nwait: 1s\noutput: "+out+"\nvar:\n  a: b\n"), 0o644)
	toml := filepath.Join(dir, "c.toml")
	os.WriteFile(toml, []byte("prefix = [\"/from/toml\"]\nmin-servers = 4\noutput = \""+out+"\"\n"), 0o644)

	c, err := load(t, []string{"--config", yaml, "--min-servers", "5"}, "HACONFD_BIND=127.0.0.1:2000", "HACONFD_MIN_SERVERS=9", "HACONFD_WAIT=50ms:1s")
	if err != nil {
		t.Fatal(err)
	}
	if c.Prefixes[0] != "/from/file" || c.MinServers != 5 || c.Bind != "127.0.0.1:2000" || c.WaitMin != 50*time.Millisecond || c.Vars["a"] != "b" {
		t.Fatalf("precedence wrong: %+v", c)
	}
	c, err = load(t, nil, "HACONFD_CONFIG="+toml, "HACONFD_PREFIX=/a,/b")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Prefixes) != 2 || c.Prefixes[1] != "/b" || c.MinServers != 4 {
		t.Fatalf("toml+env wrong: %+v", c)
	}
}

// Every bad setting gets one line naming it and the reason.
func TestBadSettings(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "haproxy.cfg")
	unknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknown, []byte("prefixx: /x\n"), 0o644)
	existing := filepath.Join(dir, "exists.pem") // readable: only the pairing rule can complain
	os.WriteFile(existing, []byte("x"), 0o644)
	broken := filepath.Join(dir, "broken.yaml")
	os.WriteFile(broken, []byte("prefix: [\n"), 0o644)
	cases := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"endpoint not a URL", []string{"--etcd-endpoints", "localhost"}, nil, "--etcd-endpoints: \"localhost\""},
		{"endpoint without port", []string{"--etcd-endpoints", "http://a"}, nil, "--etcd-endpoints"},
		{"prefix without slash", []string{"--prefix", "components"}, nil, "--prefix: \"components\""},
		{"prefix trailing slash", []string{"--prefix", "/components/"}, nil, "--prefix"},
		{"bad wait", []string{"--wait", "soon"}, nil, "--wait: \"soon\""},
		{"wait max below min", []string{"--wait", "2s:1s"}, nil, "--wait"},
		{"bad apply", []string{"--apply", "magic"}, nil, "--apply: \"magic\""},
		{"bind without port", []string{"--bind", "127.0.0.1"}, nil, "--bind"},
		{"bind port out of range", []string{"--bind", ":70000"}, nil, "--bind"},
		{"check port", []string{"--check-port", "x"}, nil, "--check-port"},
		{"check port out of range", []string{"--check-port", "70000"}, nil, "--check-port"},
		{"check port zero", []string{"--check-port", "0"}, nil, "--check-port"},
		{"status ttl below a second", []string{"--status-ttl", "500ms"}, nil, "--status-ttl: must be at least 1s"},
		{"supervise with reload-cmd", []string{"--supervise", "--reload-cmd", "true"}, nil, "--supervise: --supervise and --reload-cmd exclude each other"},
		{"negative min servers", []string{"--min-servers", "-1"}, nil, "--min-servers"},
		{"missing template", []string{"--template", "/nonexistent/t.tmpl"}, nil, "--template: /nonexistent/t.tmpl does not exist"},
		{"missing base", []string{"--base", "/nonexistent/b.cfg"}, nil, "--base"},
		{"output dir missing", []string{"--output", "/nonexistent/dir/haproxy.cfg"}, nil, "--output: directory /nonexistent/dir does not exist"},
		{"user without password", []string{"--etcd-username", "u"}, nil, "--etcd-username"},
		{"cert without key", []string{"--etcd-cert", existing}, nil, "--etcd-cert: --etcd-cert and --etcd-key go together"},
		{"key without cert", []string{"--etcd-key", existing}, nil, "--etcd-cert: --etcd-cert and --etcd-key go together"},
		{"log format", []string{"--log-format", "xml"}, nil, "--log-format"},
		{"max remove zero", []string{"--max-remove", "0"}, nil, "--max-remove"},
		{"max remove above one", []string{"--max-remove", "1.5"}, nil, "--max-remove"},
		{"env max remove not a number", nil, []string{"HACONFD_MAX_REMOVE=half"}, "HACONFD_MAX_REMOVE: \"half\" is not a number"},
		{"negative guard hold", []string{"--guard-hold", "-1s"}, nil, "--guard-hold"},
		{"listen without port", []string{"--listen", "localhost"}, nil, "--listen"},
		{"socket too long", []string{"--runtime-socket", "/" + strings.Repeat("s", 120)}, nil, "--runtime-socket"},
		{"env not a number", nil, []string{"HACONFD_MIN_SERVERS=many"}, "HACONFD_MIN_SERVERS: \"many\" is not a whole number"},
		{"env bad duration", nil, []string{"HACONFD_SETTLE=long"}, "HACONFD_SETTLE"},
		{"unknown key in file", []string{"--config", unknown}, nil, "prefixx"},
		{"broken file", []string{"--config", broken}, nil, "--config " + broken},
		{"missing file", []string{"--config", "/nonexistent.yaml"}, nil, "--config /nonexistent.yaml"},
		{"reader bind without port", []string{"--reader-bind", "127.0.0.1"}, nil, "--reader-bind: \"127.0.0.1\": not host:port"},
		{"reader bind is the bind", []string{"--bind", "127.0.0.1:3306", "--reader-bind", "127.0.0.1:3306"}, nil, "--reader-bind: \"127.0.0.1:3306\" is already --bind or --writer-bind"},
		{"max writers zero", []string{"--max-writers", "0"}, nil, "--max-writers: must be 1-64, got 0"},
		{"negative max recv queue", []string{"--max-recv-queue", "-5"}, nil, "--max-recv-queue: must not be negative"},
		{"default port", []string{"--default-port", "70000"}, nil, "--default-port: 70000: not 1-65535"},
		{"writer failover sessions", []string{"--writer-failover-sessions", "kill"}, nil, "--writer-failover-sessions: \"kill\" must be shutdown or keep"},
		{"cluster bind without address", []string{"--cluster-bind", "c1=nowhere"}, nil, "--cluster-bind: \"c1\"=\"nowhere\": not host:port"},
		{"cluster bind reserved name", []string{"--cluster-bind", "galera-writer=127.0.0.1:4000"}, nil, "--cluster-bind: \"galera-writer\": the default template already has a section of that name"},
		{"cluster bind on the bind", []string{"--bind", "127.0.0.1:3306", "--cluster-bind", "c1=127.0.0.1:3306"}, nil, "the address is already bound by another section"},
		{"cluster bind twice", []string{"--cluster-bind", "c1=127.0.0.1:4000,c2=127.0.0.1:4000"}, nil, "the address is already cluster \"c1\"'s"},
		{"cluster bind with slash", []string{"--cluster-bind", "a/b=127.0.0.1:4000"}, nil, "a cluster name is one path element"},
		{"env max writers", nil, []string{"HACONFD_MAX_WRITERS=two"}, "HACONFD_MAX_WRITERS: \"two\" is not a whole number"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if !strings.Contains(strings.Join(args, " "), "--output") {
				args = append(args, "--output", out)
			}
			_, err := load(t, args, tc.env...)
			if err == nil {
				t.Fatalf("no error for %v %v", tc.args, tc.env)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if line == "" {
					t.Fatalf("empty line in error %q", err)
				}
			}
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	_, err := load(t, []string{"--wait", "x", "--apply", "y", "--output", filepath.Join(t.TempDir(), "h.cfg")})
	if err == nil || strings.Count(err.Error(), "\n") != 1 {
		t.Fatalf("want two lines, got %v", err)
	}
}

func TestParseWait(t *testing.T) {
	cases := []struct {
		in       string
		min, max time.Duration
		bad      bool
	}{
		{"0", 0, 0, false},
		{"100ms", 100 * time.Millisecond, 400 * time.Millisecond, false},
		{"100ms:2s", 100 * time.Millisecond, 2 * time.Second, false},
		{"0:1s", 0, time.Second, false},
		{"1s:100ms", 0, 0, true},
		{"-1s", 0, 0, true},
		{"-1s:1s", 0, 0, true},
		{"", 0, 0, true},
		{"1s:", 0, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			min, max, err := ParseWait(tc.in)
			if (err != nil) != tc.bad || (!tc.bad && (min != tc.min || max != tc.max)) {
				t.Fatalf("ParseWait(%q) = %v, %v, %v", tc.in, min, max, err)
			}
		})
	}
}

// A command registers only its groups: a shared config file may hold
// keys of other commands' groups (read and ignored), never a key of no
// group; the groups' rules apply only to the registered ones.
func TestGroups(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "shared.yaml")
	os.WriteFile(file, []byte("ip: 10.0.0.9\noutput: /nonexistent/dir/haproxy.cfg\nwait: soon\n"), 0o644)
	fs := pflag.NewFlagSet("register", pflag.ContinueOnError)
	AddGroups(fs, nil, GroupEtcd, GroupWatch, GroupNode, GroupLog)
	if fs.Lookup("output") != nil || fs.Lookup("ip") == nil || fs.Lookup("config") == nil {
		t.Fatal("flags of other groups registered, or own ones missing")
	}
	if err := fs.Parse([]string{"--config", file}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(fs, nil)
	if err != nil {
		t.Fatalf("a run setting in the file failed register: %v", err)
	}
	if c.IP != "10.0.0.9" || len(c.Groups) != 4 {
		t.Fatalf("loaded %+v", c)
	}
	// A default changed for one command.
	fs = pflag.NewFlagSet("check", pflag.ContinueOnError)
	AddGroups(fs, func(d *Config) { d.Listen = ":9200" }, GroupServe, GroupMySQL, GroupCheck, GroupLog)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	c, err = Load(fs, []string{"HACONFD_MYSQL_DSN=u:p@tcp(127.0.0.1:1)/"})
	if err != nil || c.Listen != ":9200" {
		t.Fatalf("check defaults: %v %q", err, c.Listen)
	}
}

// Each group's own rules look at no file: they hold for paths that do
// not exist; the files are checked apart.
func TestGroupRulesArePure(t *testing.T) {
	r := Render{Bind: ":3306", Template: "/nonexistent/t.tmpl"}
	var p problems
	r.validate(&p)
	if len(p) != 0 {
		t.Fatalf("pure rules looked at the disk: %v", p)
	}
	c := Defaults()
	c.Template = "/nonexistent/t.tmpl"
	if errs := c.files(); len(errs) == 0 {
		t.Fatal("files() did not report the missing template")
	}
}
