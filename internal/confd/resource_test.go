package confd_test

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/haconfd/haconfd/internal/confd"
)

// confdDir writes a confd directory: files maps paths below it to content.
func confdDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, text := range files {
		writeFile(t, filepath.Join(dir, p), text)
	}
	return dir
}

func TestLoadResources(t *testing.T) {
	dir := confdDir(t, map[string]string{
		"conf.d/b.toml": `[template]
src = "b.tmpl"
dest = "/tmp/out/b.conf"
keys = ["/b"]
uid = 0
gid = 0
mode = "0600"
check_cmd = "test -s {{.src}}"
reload_cmd = "echo reload {{.dest}}"
`,
		"conf.d/sub/a.toml": `[template]
src = "sub/a.tmpl"
dest = "/tmp/out/a.conf"
keys = ["/a", "/a2/"]
prefix = "/production"
owner = "0:0"
`,
		"conf.d/README":        "not a resource",
		"templates/b.tmpl":     "b",
		"templates/sub/a.tmpl": "a",
	})
	rs, err := confd.LoadResources(dir, confd.Global{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d resources", len(rs))
	}
	want := confd.Resource{Name: "b.toml", File: filepath.Join(dir, "conf.d/b.toml"), Src: filepath.Join(dir, "templates/b.tmpl"),
		Dest: "/tmp/out/b.conf", Keys: []string{"/b"}, Mode: "0600", CheckCmd: "test -s {{.src}}", ReloadCmd: "echo reload {{.dest}}"}
	if !reflect.DeepEqual(rs[0], want) {
		t.Errorf("got  %+v\nwant %+v", rs[0], want)
	}
	if a := rs[1]; a.Name != "sub/a.toml" || a.UID != -1 || a.GID != -1 || a.Owner != "0:0" || a.Prefix != "/production" ||
		a.Src != filepath.Join(dir, "templates/sub/a.tmpl") {
		t.Errorf("%+v", a)
	}
}

func TestLoadResourcesErrors(t *testing.T) {
	tmpl := map[string]string{"templates/t.tmpl": "x"}
	tests := []struct {
		name, toml, want string
	}{
		{"no template table", `src = "t.tmpl"`, "[template]: missing"},
		{"template not a table", `template = 1`, "template: want a table, got an integer"},
		{"no src", "[template]\ndest = \"/tmp/x\"\nkeys = [\"/\"]", "src: missing"},
		{"no dest", "[template]\nsrc = \"t.tmpl\"\nkeys = [\"/\"]", "dest: missing"},
		{"dest is a directory", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/\"", `dest: "/tmp/" is a directory`},
		{"missing template", "[template]\nsrc = \"nope.tmpl\"\ndest = \"/tmp/x\"", "src: template "},
		{"uid string", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nuid = \"0\"", "uid: want an integer, got a string"},
		{"gid negative", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\ngid = -2", "gid: -2 is out of range"},
		{"keys not strings", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nkeys = [1]", "keys: element 1: want a string, got an integer"},
		{"keys not an array", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nkeys = \"/a\"", "keys: want an array of strings, got a string"},
		{"bad mode", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nmode = \"rw-r--r--\"", `mode: "rw-r--r--" is not a number`},
		{"bad owner", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nowner = \"no-such-user-xyz\"", `owner: user "no-such-user-xyz"`},
		{"bad check_cmd", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\ncheck_cmd = \"x {{.src\"", "check_cmd: template: cmd:1: unclosed action"},
		{"check_cmd unknown field", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\ncheck_cmd = \"x {{.nope}}\"", `check_cmd: template: cmd:1:4: executing "cmd" at <.nope>: map has no entry for key "nope"`},
		{"bad toml", "[template\n", "line 1 column"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"conf.d/r.toml": tc.toml, "conf.d/ok.toml": "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/y\"\nkeys = [\"/\"]"}
			for k, v := range tmpl {
				files[k] = v
			}
			dir := confdDir(t, files)
			rs, err := confd.LoadResources(dir, confd.Global{})
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || !errors.Is(err, confd.ErrInvalidResource) {
				t.Fatalf("err = %v, want one line containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, "conf.d/r.toml")) {
				t.Errorf("err %v does not name the file", err)
			}
			if len(rs) != 1 || rs[0].Name != "ok.toml" {
				t.Errorf("the good resource was not kept: %+v", rs)
			}
		})
	}
	if _, err := confd.LoadResources(t.TempDir(), confd.Global{}); err == nil || !strings.Contains(err.Error(), "conf.d") {
		t.Errorf("no conf.d: %v", err)
	}
	dir := confdDir(t, map[string]string{"conf.d/x.txt": ""})
	if _, err := confd.LoadResources(dir, confd.Global{}); err == nil || !strings.Contains(err.Error(), "no *.toml files in") {
		t.Errorf("empty conf.d: %v", err)
	}
}

func TestLoadResourcesWarnings(t *testing.T) {
	dir := confdDir(t, map[string]string{
		"templates/t.tmpl": "x",
		"conf.d/a.toml":    "[template]\nsrc = \"t.tmpl\"\ndest = \"/etc/haproxy/haproxy.cfg\"\nkeys = [\"/\"]\nmode = \"644\"\ncheck_cmd = \"haproxy -c -f /etc/haproxy/haproxy.cfg\"\nprefix = \"/mine\"\nextra = 1\n",
		"conf.d/b.toml":    "[template]\nsrc = \"t.tmpl\"\ndest = \"/etc/haproxy/haproxy.cfg\"\ncheck_cmd = \"true\"\n[other]\n",
	})
	rs, err := confd.LoadResources(dir, confd.Global{Prefix: "/global"})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		`mode "644" is read as the decimal number 644, i.e. file mode 0204, as confd reads it; write "0644" for octal`,
		"check_cmd checks the old file: it names the destination /etc/haproxy/haproxy.cfg instead of {{.src}}",
		`prefix "/mine" is replaced by the global prefix "/global"`,
		`unknown key "extra" in [template] ignored`,
	} {
		if !hasWarning(rs[0].Warnings, w) {
			t.Errorf("a.toml warnings %q lack %q", rs[0].Warnings, w)
		}
	}
	for _, w := range []string{
		"check_cmd does not use {{.src}}",
		"keys is empty",
		`unknown table or key "other" ignored`,
		"a.toml, b.toml are all written to /etc/haproxy/haproxy.cfg",
	} {
		if !hasWarning(rs[1].Warnings, w) {
			t.Errorf("b.toml warnings %q lack %q", rs[1].Warnings, w)
		}
	}
}

func TestKeySpace(t *testing.T) {
	all := map[string]string{
		"/components/galera/n1/ip":   "10.0.0.1",
		"/components/galera/n1/port": "3306",
		"/components/galera":         "dir-value",
		"/components/galeraX/n9":     "other",
		"/production/app/x":          "px",
		"/production/app":            "p",
		"/production/application/y":  "not app",
		"/production2/app/z":         "other prefix",
		"/app/x":                     "root app",
		"nolead":                     "v3 key without slash",
	}
	tests := []struct {
		name   string
		r      confd.Resource
		g      confd.Global
		watch  []string
		want   map[string]string
		prefix string
	}{
		{"default prefix keeps absolute keys", confd.Resource{Keys: []string{"/components/galera/"}}, confd.Global{},
			[]string{"/components/galera"},
			map[string]string{"/components/galera/n1/ip": "10.0.0.1", "/components/galera/n1/port": "3306", "/components/galera": "dir-value"}, "/"},
		{"resource prefix is stripped", confd.Resource{Prefix: "production", Keys: []string{"/app"}}, confd.Global{},
			[]string{"/production/app"}, map[string]string{"/app/x": "px", "/app": "p"}, "/production"},
		{"global prefix replaces the resource's", confd.Resource{Prefix: "/other", Keys: []string{"app"}}, confd.Global{Prefix: "/production"},
			[]string{"/production/app"}, map[string]string{"/app/x": "px", "/app": "p"}, "/production"},
		{"prefix with trailing slash", confd.Resource{Prefix: "/production/", Keys: []string{"/app/x"}}, confd.Global{},
			[]string{"/production/app/x"}, map[string]string{"/app/x": "px"}, "/production/"},
		{"key / takes every key with a leading slash", confd.Resource{Keys: []string{"/"}}, confd.Global{},
			[]string{"/"}, nil, "/"},
		{"several keys, duplicates", confd.Resource{Prefix: "/production", Keys: []string{"/app/x", "/app/x/", "/application"}}, confd.Global{},
			[]string{"/production/app/x", "/production/application"}, map[string]string{"/app/x": "px", "/application/y": "not app"}, "/production"},
		{"no keys", confd.Resource{}, confd.Global{}, []string{}, map[string]string{}, "/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if p := tc.r.KeyPrefix(tc.g); p != tc.prefix {
				t.Errorf("KeyPrefix = %q, want %q", p, tc.prefix)
			}
			if w := tc.r.WatchPrefixes(tc.g); !reflect.DeepEqual(w, tc.watch) {
				t.Errorf("WatchPrefixes = %q, want %q", w, tc.watch)
			}
			got := tc.r.KeySpace(tc.g, all)
			want := tc.want
			if want == nil { // everything with a leading slash
				want = map[string]string{}
				for k, v := range all {
					if strings.HasPrefix(k, "/") {
						want[k] = v
					}
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("KeySpace = %v\nwant %v", got, want)
			}
		})
	}
}
