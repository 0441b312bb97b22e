package e2e

// Every deployment file in examples/ and the Dockerfile ships tested:
//
//   - every haconfd command line (unit ExecStart/ExecStartPre, docker run in
//     fleet units, compose entrypoint+command, Kubernetes command+args, with
//     the image's ENTRYPOINT and ENV from the Dockerfile) runs through
//     `haconfd <cmd> --validate-config` with its config files, after the
//     paths the deployment owns (/etc/haproxy, /run/haproxy, /etc/haconfd,
//     the binaries) are mapped into a temp dir (exRewrites);
//   - `systemd-analyze verify` on every unit file, when the tool is there;
//   - the Dockerfile: COPY sources exist, the `go build` line is the
//     Makefile's, .dockerignore keeps every file the build needs, the
//     HEALTHCHECK probe (/readyz) works against a real HTTP server;
//   - compose and Kubernetes references (services, volumes, ports, labels,
//     ConfigMaps) point at things that exist, and a config file the image's
//     ENV would silently override agrees with it.
//
// The image itself is built and run by `make e2e-docker` (e2e/docker/),
// which needs a Docker engine and root; these checks need neither.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"github.com/haconfd/haconfd/internal/testbed"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/haconfd/haconfd/internal/config"
)

const (
	exRoot  = ".."
	exImage = "haconfd/haconfd"
)

// ---- the world a command line is validated in ----

// exWorld maps the paths a deployment owns into a temp dir, so that a
// command line written for /etc/haproxy runs here unchanged otherwise.
type exWorld struct {
	dir string
	rw  *strings.Replacer
}

// exRewrites is the substitution table: deployment path -> test path.
// One pass (strings.Replacer), so a test path is never rewritten again.
func newExWorld(t *testing.T) *exWorld {
	t.Helper()
	dir, err := os.MkdirTemp("", "hcx") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"etc/haproxy", "run/haproxy", "etc/haconfd", "run/mysqld"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rw := strings.NewReplacer(
		"/usr/local/bin/haconfd", haconfdBin,
		"/usr/sbin/haproxy", haproxyBin,
		"/etc/haproxy", filepath.Join(dir, "etc/haproxy"),
		"/run/haproxy", filepath.Join(dir, "run/haproxy"),
		"/etc/haconfd", filepath.Join(dir, "etc/haconfd"),
		"/run/mysqld", filepath.Join(dir, "run/mysqld"),
	)
	return &exWorld{dir: dir, rw: rw}
}

// install writes content (rewritten) as the deployment file at path
// (/etc/haconfd/...).
func (w *exWorld) install(t *testing.T, path string, content []byte) {
	t.Helper()
	dst := w.rw.Replace(path)
	if dst == path {
		t.Fatalf("%s is outside the paths the test maps", path)
	}
	if err := os.WriteFile(dst, []byte(w.rw.Replace(string(content))), 0o644); err != nil {
		t.Fatal(err)
	}
}

// exCmd is one haconfd command line found in an example.
type exCmd struct {
	where string            // file and place, for messages
	argv  []string          // argv[0] is the haconfd binary (deployment path)
	env   map[string]string // HACONFD_* and others the process gets
}

// validate runs the command line with --validate-config and wants "OK".
// Subcommands that do not (yet) take --validate-config get their flags
// checked against the command's --help instead, and the test says so.
func (w *exWorld) validate(t *testing.T, c exCmd) {
	t.Helper()
	if len(c.argv) < 2 || c.argv[0] != "/usr/local/bin/haconfd" && c.argv[0] != "haconfd" {
		t.Fatalf("%s: not a haconfd command line: %q", c.where, c.argv)
	}
	sub := c.argv[1]
	args := make([]string, 0, len(c.argv))
	for _, a := range c.argv[1:] {
		args = append(args, w.rw.Replace(a))
	}
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + w.dir}
	for k, v := range c.env {
		environ = append(environ, k+"="+w.rw.Replace(v))
	}
	if sub == "run" {
		environ = append(environ, w.pathDefaults(t, args, c.env)...)
	}
	help := exRun(t, environ, sub, "--help")
	if !strings.Contains(help.out, "--validate-config") {
		known := exHelpFlags(help.out)
		for _, a := range args[1:] {
			if name, ok := exFlagName(a); ok && !known[name] {
				t.Errorf("%s: haconfd %s has no flag --%s", c.where, sub, name)
			}
		}
		t.Logf("%s: haconfd %s has no --validate-config yet: only its flag names were checked", c.where, sub)
		return
	}
	res := exRun(t, environ, append(args, "--validate-config")...)
	if res.code != 0 {
		t.Errorf("%s: haconfd %s --validate-config exit %d:\n%s\ncommand: %q", c.where, sub, res.code, res.out, args)
		return
	}
	t.Logf("%s: %s", c.where, strings.TrimSpace(res.out))
}

// pathDefaults pins the path settings the command line leaves at
// haconfd's defaults (/etc/haproxy/..., /run/haproxy/...) to their
// rewritten places, so that validation never looks at this host's own
// /etc/haproxy. A setting given by flag, environment or --config file is
// left alone.
func (w *exWorld) pathDefaults(t *testing.T, args []string, env map[string]string) []string {
	t.Helper()
	d := config.Defaults()
	defaults := map[string]string{"output": d.Output, "pidfile": d.PIDFile, "runtime-socket": d.RuntimeSocket, "master-socket": d.MasterSocket}
	var fromFile map[string]any
	for i, a := range args {
		path, ok := strings.CutPrefix(a, "--config=")
		if a == "--config" && i+1 < len(args) {
			path, ok = args[i+1], true
		}
		if ok {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("--config %s: %v", path, err)
			}
			if err := yaml.Unmarshal(b, &fromFile); err != nil {
				t.Fatalf("--config %s: %v", path, err)
			}
		}
	}
	var out []string
	for key, def := range defaults {
		envKey := config.EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, "-", "_"))
		_, inEnv := env[envKey]
		_, inFile := fromFile[key]
		inArgs := slices.ContainsFunc(args, func(a string) bool { return a == "--"+key || strings.HasPrefix(a, "--"+key+"=") })
		if inEnv || inFile || inArgs {
			continue
		}
		if rw := w.rw.Replace(def); rw != def {
			out = append(out, envKey+"="+rw)
		}
	}
	return out
}

// renderChecked renders the example's templates for three nodes (one not
// Synced) with `haconfd render --from-file`, which validates the result
// with haproxy -c.
func (w *exWorld) renderChecked(t *testing.T, c exCmd) {
	t.Helper()
	snap := filepath.Join(w.dir, "snapshot.json")
	nodes := `{"/components/galera/db1": "10.0.0.1:3306", "/components/galera/db2": "10.0.0.2:3306",
		"/components/galera/db3": "{\"ip\":\"10.0.0.3\",\"port\":3306,\"state\":\"Joining\"}"}`
	if err := os.WriteFile(snap, []byte(nodes), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"render", "--from-file", snap, "--validate"}
	for _, a := range c.argv[2:] {
		args = append(args, w.rw.Replace(a))
	}
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + w.dir}
	for k, v := range c.env {
		environ = append(environ, k+"="+w.rw.Replace(v))
	}
	res := exRun(t, environ, args...)
	if res.code != 0 || strings.Count(res.out, "    server ") != 3 {
		t.Fatalf("%s: haconfd render exit %d, want 0 and 3 servers:\n%s", c.where, res.code, res.out)
	}
}

type exResult struct {
	code int
	out  string
}

func exRun(t *testing.T, environ []string, args ...string) exResult {
	t.Helper()
	cmd := exec.Command(haconfdBin, args...)
	cmd.Env = environ
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return exResult{0, out.String()}
	case errors.As(err, &ee):
		return exResult{ee.ExitCode(), out.String()}
	default:
		t.Fatalf("haconfd %q: %v", args, err)
		return exResult{}
	}
}

var exFlagRE = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`)

func exHelpFlags(help string) map[string]bool {
	m := map[string]bool{}
	for _, sm := range exFlagRE.FindAllStringSubmatch(help, -1) {
		m[sm[1]] = true
	}
	return m
}

func exFlagName(arg string) (string, bool) {
	if !strings.HasPrefix(arg, "--") || len(arg) == 2 {
		return "", false
	}
	name, _, _ := strings.Cut(arg[2:], "=")
	return name, true
}

// ---- the Dockerfile ----

type exDockerfile struct {
	entrypoint []string
	env        map[string]string
	copies     [][]string // sources of COPY/ADD from the build context
	runs       []string
	health     []string // HEALTHCHECK CMD, exec form
	args       map[string]string
}

// exParseDockerfile reads the instructions this repo's Dockerfile uses.
func exParseDockerfile(t *testing.T, path string) exDockerfile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	df := exDockerfile{env: map[string]string{}, args: map[string]string{}}
	var lines []string
	cur := ""
	for _, l := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "#") && cur == "" || trimmed == "" && cur == "" {
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		lines = append(lines, cur+l)
		cur = ""
	}
	for _, l := range lines {
		instr, rest, _ := strings.Cut(strings.TrimSpace(l), " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "ENTRYPOINT":
			df.entrypoint = exJSONArray(t, rest)
		case "ENV":
			for _, kv := range exShellWords(t, rest) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("Dockerfile: ENV %q: only the key=value form is understood", rest)
				}
				df.env[k] = v
			}
		case "ARG":
			k, v, _ := strings.Cut(rest, "=")
			df.args[k] = v
		case "COPY", "ADD":
			words := exShellWords(t, rest)
			if len(words) > 0 && strings.HasPrefix(words[0], "--from=") {
				continue
			}
			var srcs []string
			for _, w := range words[:len(words)-1] {
				if !strings.HasPrefix(w, "--") {
					srcs = append(srcs, w)
				}
			}
			df.copies = append(df.copies, srcs)
		case "RUN":
			df.runs = append(df.runs, rest)
		case "HEALTHCHECK":
			_, cmd, ok := strings.Cut(rest, " CMD ")
			if !ok {
				t.Fatalf("Dockerfile: HEALTHCHECK without CMD: %q", rest)
			}
			df.health = exJSONArray(t, strings.TrimSpace(cmd))
		}
	}
	return df
}

func exJSONArray(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	if err := yaml.Unmarshal([]byte(s), &out); err != nil || !strings.HasPrefix(s, "[") {
		t.Fatalf("not an exec-form JSON array: %q (%v)", s, err)
	}
	return out
}

// exShellWords splits s like sh does for plain words, "double" and
// 'single' quotes (no expansion).
func exShellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	in := false
	var quote rune
	for i := 0; i < len(s); i++ {
		c := rune(s[i])
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote == '"' && c == '\\' && i+1 < len(s) && strings.ContainsRune(`"\$`, rune(s[i+1])):
			i++
			cur.WriteByte(s[i])
		case quote != 0:
			cur.WriteRune(c)
		case c == '"' || c == '\'':
			quote, in = c, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			in = true
		case c == ' ' || c == '\t' || c == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(c)
			in = true
		}
	}
	if quote != 0 {
		t.Fatalf("unterminated quote in %q", s)
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

// imageCmd is the command line the image runs for a container given an
// entrypoint override (nil: the Dockerfile's) and arguments, with tini
// taken off the front.
func (df exDockerfile) imageCmd(t *testing.T, where string, entrypoint, args []string, env map[string]string) exCmd {
	t.Helper()
	argv := slices.Clone(df.entrypoint)
	if entrypoint != nil {
		argv = slices.Clone(entrypoint)
	}
	argv = append(argv, args...)
	if len(argv) > 0 && filepath.Base(argv[0]) == "tini" {
		i := slices.Index(argv, "--")
		if i < 0 {
			t.Fatalf("%s: tini without --: %q", where, argv)
		}
		argv = argv[i+1:]
	}
	e := map[string]string{}
	for k, v := range df.env {
		e[k] = v
	}
	for k, v := range env {
		e[k] = v
	}
	return exCmd{where: where, argv: argv, env: e}
}

func TestExampleDockerfile(t *testing.T) {
	df := exParseDockerfile(t, filepath.Join(exRoot, "Dockerfile"))

	t.Run("COPY sources exist", func(t *testing.T) {
		if len(df.copies) == 0 {
			t.Fatal("no COPY from the build context")
		}
		ignored := exDockerignore(t)
		for _, srcs := range df.copies {
			for _, s := range srcs {
				if _, err := os.Stat(filepath.Join(exRoot, s)); err != nil {
					t.Errorf("COPY %s: %v", s, err)
				}
				if s != "." && ignored(s) {
					t.Errorf("COPY %s: excluded by .dockerignore", s)
				}
			}
		}
	})

	t.Run("build line is the Makefile's", func(t *testing.T) {
		var docker string
		for _, r := range df.runs {
			if strings.Contains(r, "go build") {
				docker = r
			}
		}
		if docker == "" {
			t.Fatal("Dockerfile has no RUN go build")
		}
		got := exBuildCmd(t, docker)
		want := exBuildCmd(t, exMakeBuildLine(t))
		if !slices.Equal(got, want) {
			t.Fatalf("Dockerfile builds with\n  %q\nthe Makefile with\n  %q", got, want)
		}
	})

	t.Run("dockerignore keeps what the build needs", func(t *testing.T) {
		ignored := exDockerignore(t)
		out, err := exec.Command("go", "list", "-deps", "-f",
			`{{if not .Standard}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}`,
			"../cmd/haconfd").Output()
		if err != nil {
			t.Fatalf("go list: %v", err)
		}
		root, err := filepath.Abs(exRoot)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, f := range strings.Fields(string(out)) {
			rel, err := filepath.Rel(root, f)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue // a module dependency, downloaded in the image
			}
			n++
			if ignored(rel) {
				t.Errorf("%s is needed by go build ./cmd/haconfd but excluded by .dockerignore", rel)
			}
		}
		for _, f := range []string{"go.mod", "go.sum"} {
			if ignored(f) {
				t.Errorf("%s excluded by .dockerignore", f)
			}
		}
		if n == 0 {
			t.Fatal("go list named no files of this module")
		}
	})

	t.Run("entrypoint runs the installed binaries", func(t *testing.T) {
		// --stop-haproxy-on-exit: without it `docker stop` kills HAProxy
		// with the container instead of soft-stopping it (e2e/docker
		// measures it).
		if len(df.entrypoint) < 4 || df.entrypoint[0] != "/usr/bin/tini" || df.entrypoint[2] != "/usr/local/bin/haconfd" ||
			!slices.Equal(df.entrypoint[3:], []string{"run", "--supervise", "--stop-haproxy-on-exit"}) {
			t.Fatalf("ENTRYPOINT %q: want tini -- haconfd run --supervise --stop-haproxy-on-exit", df.entrypoint)
		}
		var installs bool
		for _, r := range df.runs {
			installs = installs || strings.Contains(r, "install -y --no-install-recommends haproxy ca-certificates tini")
		}
		if !installs {
			t.Error("the runtime stage does not install haproxy, ca-certificates and tini")
		}
	})

	t.Run("HEALTHCHECK probe", func(t *testing.T) {
		testbed.NeedTool(t, "bash", "the probe is a bash /dev/tcp one-liner")
		if len(df.health) < 1 || df.health[0] != "/bin/bash" {
			t.Fatalf("HEALTHCHECK %q: want an exec-form bash probe", df.health)
		}
		for _, tt := range []struct {
			name   string
			status int
			wantOK bool
		}{{"healthy", 200, true}, {"unhealthy", 503, false}} {
			t.Run(tt.name, func(t *testing.T) {
				addr := exHTTP(t, tt.status)
				cmd := exec.Command(df.health[0], df.health[1:]...)
				cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HACONFD_LISTEN=0.0.0.0:" + addr[strings.LastIndex(addr, ":")+1:]}
				out, err := cmd.CombinedOutput()
				if (err == nil) != tt.wantOK {
					t.Fatalf("probe against /readyz %d: err %v (want ok=%v), output %q", tt.status, err, tt.wantOK, out)
				}
			})
		}
	})
}

// exHTTP serves /readyz with status on 127.0.0.1 until the test ends (and
// /healthz with 200: a probe of /healthz would pass when it should not).
func exHTTP(t *testing.T, status int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.WriteHeader(status)
		case "/healthz":
		default:
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "ok\n")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// exMakeBuildLine is the Makefile's build recipe with its variables
// expanded (VERSION stays a name: both files get it from outside).
func exMakeBuildLine(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(exRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	varRE := regexp.MustCompile(`^([A-Z_]+)\s*(?::=|\?=|=)\s*(.*)$`)
	var recipe string
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if m := varRE.FindStringSubmatch(l); m != nil {
			vars[m[1]] = strings.TrimSpace(m[2])
		}
		if strings.HasPrefix(l, "build:") && i+1 < len(lines) {
			recipe = strings.TrimSpace(lines[i+1])
		}
	}
	if !strings.Contains(recipe, "build") {
		t.Fatalf("Makefile: no build target recipe (got %q)", recipe)
	}
	ref := regexp.MustCompile(`\$\(([A-Z_]+)\)`)
	for range 5 {
		recipe = ref.ReplaceAllStringFunc(recipe, func(m string) string {
			name := m[2 : len(m)-1]
			if name == "VERSION" {
				return m
			}
			if v, ok := vars[name]; ok {
				return v
			}
			return m
		})
	}
	return recipe
}

// exBuildCmd is the `go build` command in line, without its -o (where
// the binary goes differs by design), with the version variable named
// alike: $(VERSION) (make) and ${VERSION} (Dockerfile) become VERSION.
func exBuildCmd(t *testing.T, line string) []string {
	t.Helper()
	line = strings.NewReplacer("$(VERSION)", "VERSION", "${VERSION}", "VERSION", "$VERSION", "VERSION").Replace(line)
	words := exShellWords(t, line)
	i := slices.Index(words, "build")
	if i < 1 || filepath.Base(words[i-1]) != "go" {
		t.Fatalf("no `go build` in %q", line)
	}
	var out []string
	for j := i - 1; j < len(words); j++ {
		if words[j] == "&&" || words[j] == ";" {
			break
		}
		if words[j] == "-o" {
			j++
			continue
		}
		out = append(out, words[j])
	}
	out[0] = "go"
	return out
}

// exDockerignore returns whether a context path is excluded. It knows the
// forms this repo's .dockerignore uses: "dir", "*.ext", "**/pattern".
func exDockerignore(t *testing.T) func(string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(exRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var pats []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "!") {
			t.Fatalf(".dockerignore: exceptions (%q) are not understood by this test", l)
		}
		pats = append(pats, strings.TrimPrefix(l, "/"))
	}
	return func(rel string) bool {
		rel = filepath.ToSlash(filepath.Clean(rel))
		for _, p := range pats {
			if base, ok := strings.CutPrefix(p, "**/"); ok {
				if m, _ := filepath.Match(base, filepath.Base(rel)); m {
					return true
				}
				continue
			}
			// The path itself or any directory above it.
			for cur := rel; cur != "." && cur != "/"; cur = filepath.Dir(cur) {
				if m, _ := filepath.Match(p, cur); m {
					return true
				}
			}
		}
		return false
	}
}

// ---- systemd and fleet units ----

type exUnit struct {
	path     string
	instance string            // for templates (name@.service)
	files    map[string]string // deployment path -> example file installed there
	env      map[string]string // what the host provides (fleet's /etc/environment)
}

func exUnits() []exUnit {
	coreos := map[string]string{"COREOS_PRIVATE_IPV4": "127.0.0.1", "COREOS_PUBLIC_IPV4": "127.0.0.1"}
	sd := "../examples/systemd/"
	files := map[string]string{
		"/etc/haconfd/haconfd.yaml": sd + "haconfd.yaml",
		"/etc/haconfd/register.env": sd + "register.env",
	}
	return []exUnit{
		{path: sd + "haconfd.service", files: files},
		{path: sd + "haconfd-register@.service", instance: "mariadb", files: files},
		{path: sd + "haconfd-check.service", files: files},
		{path: "../examples/fleet/haconfd@.service", instance: "galera", env: coreos},
		{path: "../examples/fleet/galera-discovery@.service", instance: "1", env: coreos},
	}
}

// exUnitFile is a parsed unit: section -> key -> values in order.
type exUnitFile map[string]map[string][]string

func exParseUnit(t *testing.T, path string) exUnitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := exUnitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	cur := ""
	for sc.Scan() {
		l := sc.Text()
		if cur == "" && (strings.HasPrefix(strings.TrimSpace(l), "#") || strings.HasPrefix(strings.TrimSpace(l), ";")) {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		l = strings.TrimSpace(cur + l)
		cur = ""
		if l == "" {
			continue
		}
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			section = l[1 : len(l)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok || section == "" {
			t.Fatalf("%s: not key=value in a section: %q", path, l)
		}
		u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// exSpecifiers expands the unit specifiers the examples use.
func exSpecifiers(t *testing.T, s string, u exUnit) string {
	t.Helper()
	name := filepath.Base(u.path)
	if u.instance != "" {
		name = strings.Replace(name, "@.", "@"+u.instance+".", 1)
	}
	prefix, _, _ := strings.Cut(strings.TrimSuffix(name, ".service"), "@")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'i', 'I':
			b.WriteString(u.instance)
		case 'n':
			b.WriteString(name)
		case 'N':
			b.WriteString(strings.TrimSuffix(name, ".service"))
		case 'p', 'P':
			b.WriteString(prefix)
		case 'H', 'l':
			b.WriteString("lb1")
		case 'm':
			b.WriteString("0123456789abcdef0123456789abcdef")
		case '%':
			b.WriteByte('%')
		default:
			t.Fatalf("%s: specifier %%%c is not in the test's table", u.path, s[i])
		}
	}
	return b.String()
}

var exVarRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// exUnitCommands returns the unit's ExecStartPre/ExecStart lines that run
// haconfd (directly, or in the haconfd image through docker run).
func exUnitCommands(t *testing.T, w *exWorld, df exDockerfile, u exUnit) []exCmd {
	t.Helper()
	uf := exParseUnit(t, u.path)
	svc := uf["Service"]
	env := map[string]string{}
	for k, v := range u.env {
		env[k] = v
	}
	for _, ef := range svc["EnvironmentFile"] {
		ef = exSpecifiers(t, ef, u)
		optional := strings.HasPrefix(ef, "-")
		ef = strings.TrimPrefix(ef, "-")
		src, ok := u.files[ef]
		if !ok {
			if optional || ef == "/etc/environment" {
				continue // the host's, stood in for by u.env
			}
			t.Fatalf("%s: EnvironmentFile %s is not shipped with the example", u.path, ef)
		}
		for k, v := range exEnvFile(t, src) {
			env[k] = v
		}
	}
	for _, e := range svc["Environment"] {
		for _, kv := range exShellWords(t, exSpecifiers(t, e, u)) {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
	}
	for dst, src := range u.files {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		w.install(t, dst, b)
	}
	var cmds []exCmd
	for _, key := range []string{"ExecStartPre", "ExecStart"} {
		for i, line := range svc[key] {
			where := fmt.Sprintf("%s %s[%d]", filepath.Base(u.path), key, i)
			line = strings.TrimLeft(exSpecifiers(t, line, u), "-@:+!")
			words := exShellWords(t, line)
			// systemd: ${VAR} is one word, $VAR splits on whitespace.
			var argv []string
			for _, word := range words {
				expanded := exVarRE.ReplaceAllStringFunc(word, func(m string) string {
					name := strings.Trim(m, "${}")
					v, ok := env[name]
					if !ok {
						t.Fatalf("%s: $%s is set neither by the unit nor by the test's host table", where, name)
					}
					return v
				})
				if strings.Contains(word, "$") && !strings.Contains(word, "${") {
					argv = append(argv, strings.Fields(expanded)...)
				} else {
					argv = append(argv, expanded)
				}
			}
			switch filepath.Base(argv[0]) {
			case "haconfd":
				cmds = append(cmds, exCmd{where: where, argv: argv, env: env})
			case "docker":
				if c, ok := exDockerRun(t, df, where, argv, env); ok {
					cmds = append(cmds, c)
				}
			}
		}
	}
	return cmds
}

// exDockerRun reads `docker run [options] IMAGE [args]` of the haconfd
// image; other docker commands are not haconfd's.
func exDockerRun(t *testing.T, df exDockerfile, where string, argv []string, hostEnv map[string]string) (exCmd, bool) {
	t.Helper()
	if len(argv) < 2 || argv[1] != "run" {
		return exCmd{}, false
	}
	withValue := map[string]bool{"--name": true, "--net": true, "--network": true, "-e": true, "--env": true,
		"--entrypoint": true, "-v": true, "--volume": true, "-p": true, "--publish": true, "--user": true, "-u": true,
		"--pid": true, "--restart": true, "--env-file": true}
	env := map[string]string{}
	var entrypoint []string
	for i := 2; i < len(argv); i++ {
		a := argv[i]
		if !strings.HasPrefix(a, "-") {
			if !strings.HasPrefix(a, exImage) {
				return exCmd{}, false
			}
			return df.imageCmd(t, where, entrypoint, argv[i+1:], env), true
		}
		opt, val, hasVal := strings.Cut(a, "=")
		if withValue[opt] && !hasVal {
			i++
			if i == len(argv) {
				t.Fatalf("%s: docker run %s without a value", where, opt)
			}
			val = argv[i]
		}
		switch opt {
		case "-e", "--env":
			k, v, ok := strings.Cut(val, "=")
			if !ok {
				v, ok = hostEnv[k]
				if !ok {
					continue // unset on the host: docker passes nothing
				}
			}
			env[k] = v
		case "--entrypoint":
			entrypoint = []string{val}
		case "--env-file":
			t.Fatalf("%s: docker run --env-file is not in the test's table", where)
		}
	}
	t.Fatalf("%s: docker run without an image", where)
	return exCmd{}, false
}

// exEnvFile reads a systemd EnvironmentFile (KEY=value lines).
func exEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: not KEY=value: %q", path, l)
		}
		m[k] = strings.Trim(v, `"`)
	}
	return m
}

func TestExampleUnits(t *testing.T) {
	df := exParseDockerfile(t, filepath.Join(exRoot, "Dockerfile"))
	for _, u := range exUnits() {
		t.Run(filepath.Base(u.path), func(t *testing.T) {
			w := newExWorld(t)
			cmds := exUnitCommands(t, w, df, u)
			if len(cmds) == 0 {
				t.Fatal("no haconfd command line found")
			}
			for _, c := range cmds {
				w.validate(t, c)
			}
		})
	}
}

func TestExampleSystemdHardening(t *testing.T) {
	uf := exParseUnit(t, "../examples/systemd/haconfd.service")
	want := map[string]string{
		"Type": "notify", "Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
		"ReadWritePaths": "/etc/haproxy /run/haproxy", "KillMode": "process",
		"ExecStartPre": "/usr/local/bin/haconfd run --validate-config --config /etc/haconfd/haconfd.yaml",
	}
	for k, v := range want {
		if got := uf["Service"][k]; len(got) != 1 || got[0] != v {
			t.Errorf("haconfd.service %s=%q, want %q", k, got, v)
		}
	}
	if len(uf["Service"]["WatchdogSec"]) != 1 {
		t.Error("haconfd.service has no WatchdogSec")
	}
	// The config file the unit runs with sets the paths it may write.
	b, err := os.ReadFile("../examples/systemd/haconfd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"output", "pidfile", "runtime-socket"} {
		p, _ := cfg[k].(string)
		if !strings.HasPrefix(p, "/etc/haproxy/") && !strings.HasPrefix(p, "/run/haproxy/") {
			t.Errorf("haconfd.yaml %s: %q is outside ReadWritePaths", k, p)
		}
	}
}

func TestExampleSystemdAnalyzeVerify(t *testing.T) {
	sa := testbed.NeedTool(t, "systemd-analyze", "apt-get install systemd")
	dir := t.TempDir()
	// Units the examples depend on but do not ship.
	for _, stub := range []string{"docker.service", "etcd2.service", "galera@.service", "mariadb.service"} {
		if err := os.WriteFile(filepath.Join(dir, stub), []byte("[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	docker := strings.NewReplacer("/usr/local/bin/haconfd", haconfdBin, "/usr/bin/docker", "/bin/true")
	for _, u := range exUnits() {
		b, err := os.ReadFile(u.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(u.path)), []byte(docker.Replace(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range exUnits() {
		name := filepath.Base(u.path)
		if u.instance != "" {
			name = strings.Replace(name, "@.", "@"+u.instance+".", 1)
		}
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(sa, "verify", "--man=no", "./"+name)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":", "SYSTEMD_LOG_COLOR=0")
			out, err := cmd.CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Fatalf("systemd-analyze verify %s: %v\n%s", name, err, out)
			}
		})
	}
}

// ---- compose ----

type exCompose struct {
	Services map[string]map[string]any `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
	Networks map[string]any            `yaml:"networks"`
}

func TestExampleCompose(t *testing.T) {
	df := exParseDockerfile(t, filepath.Join(exRoot, "Dockerfile"))
	files, err := filepath.Glob("../examples/compose/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no compose files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var c exCompose
			if err := yaml.Unmarshal(b, &c); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if len(c.Services) == 0 {
				t.Fatal("no services")
			}
			names := make([]string, 0, len(c.Services))
			for n := range c.Services {
				names = append(names, n)
			}
			sort.Strings(names)
			validated := 0
			for _, name := range names {
				svc := c.Services[name]
				exComposeRefs(t, file, name, svc, c)
				if !exIsHaconfdImage(t, file, svc) {
					continue
				}
				where := fmt.Sprintf("%s service %s", filepath.Base(file), name)
				var entrypoint []string
				if ep, ok := svc["entrypoint"]; ok {
					entrypoint = exComposeList(t, where, ep)
				}
				args := exComposeList(t, where, svc["command"])
				// A one-shot helper of the image that runs no haconfd (the
				// sidecar example's volume initializer) has nothing to
				// validate; a haconfd service with a broken entrypoint
				// still fails below, since it has a command.
				if entrypoint != nil && !slices.ContainsFunc(entrypoint, func(a string) bool { return filepath.Base(a) == "haconfd" }) && len(args) == 0 {
					t.Logf("%s: runs %q, no haconfd: not validated", where, entrypoint)
					continue
				}
				cmd := df.imageCmd(t, where, entrypoint, args, exComposeEnv(t, where, svc["environment"]))
				w := newExWorld(t)
				w.validate(t, cmd)
				validated++
			}
			if validated == 0 {
				t.Fatal("no haconfd service found")
			}
		})
	}
}

// exIsHaconfdImage: the service runs the image the Dockerfile builds.
func exIsHaconfdImage(t *testing.T, file string, svc map[string]any) bool {
	t.Helper()
	if bld, ok := svc["build"]; ok {
		ctx := ""
		switch v := bld.(type) {
		case string:
			ctx = v
		case map[string]any:
			ctx, _ = v["context"].(string)
		}
		abs, _ := filepath.Abs(filepath.Join(filepath.Dir(file), ctx))
		root, _ := filepath.Abs(exRoot)
		if abs != root {
			t.Errorf("%s: build context %s is not the repository root", file, ctx)
		}
		return true
	}
	img, _ := svc["image"].(string)
	return strings.HasPrefix(img, exImage)
}

// exComposeRefs checks that what a service names exists in the file.
func exComposeRefs(t *testing.T, file, name string, svc map[string]any, c exCompose) {
	t.Helper()
	for _, key := range []string{"network_mode", "pid"} {
		if v, ok := svc[key].(string); ok && strings.HasPrefix(v, "service:") {
			if _, ok := c.Services[strings.TrimPrefix(v, "service:")]; !ok {
				t.Errorf("%s service %s: %s %q names no service", file, name, key, v)
			}
		}
	}
	var deps []string
	switch d := svc["depends_on"].(type) {
	case []any:
		for _, x := range d {
			deps = append(deps, fmt.Sprint(x))
		}
	case map[string]any:
		for k := range d {
			deps = append(deps, k)
		}
	}
	for _, d := range deps {
		if _, ok := c.Services[d]; !ok {
			t.Errorf("%s service %s: depends_on %q names no service", file, name, d)
		}
	}
	if vols, ok := svc["volumes"].([]any); ok {
		for _, v := range vols {
			src, _, _ := strings.Cut(fmt.Sprint(v), ":")
			if !strings.HasPrefix(src, "/") && !strings.HasPrefix(src, ".") {
				if _, ok := c.Volumes[src]; !ok {
					t.Errorf("%s service %s: volume %q is not declared", file, name, src)
				}
			}
		}
	}
	if nets, ok := svc["networks"].(map[string]any); ok {
		for n := range nets {
			if _, ok := c.Networks[n]; !ok {
				t.Errorf("%s service %s: network %q is not declared", file, name, n)
			}
		}
	}
}

// exComposeList is a compose command/entrypoint: a list, or a string split
// like a shell would. "$$" is compose's escaped "$".
func exComposeList(t *testing.T, where string, v any) []string {
	t.Helper()
	var out []string
	switch x := v.(type) {
	case nil:
	case string:
		out = exShellWords(t, x)
	case []any:
		for _, a := range x {
			out = append(out, fmt.Sprint(a))
		}
	default:
		t.Fatalf("%s: command %T is neither a string nor a list", where, v)
	}
	for i, a := range out {
		if strings.Contains(strings.ReplaceAll(a, "$$", ""), "$") {
			t.Errorf("%s: %q has a $ compose would interpolate (write $$)", where, a)
		}
		out[i] = strings.ReplaceAll(a, "$$", "$")
	}
	return out
}

func exComposeEnv(t *testing.T, where string, v any) map[string]string {
	t.Helper()
	m := map[string]string{}
	switch x := v.(type) {
	case nil:
	case map[string]any:
		for k, val := range x {
			m[k] = fmt.Sprint(val)
		}
	case []any:
		for _, kv := range x {
			k, val, _ := strings.Cut(fmt.Sprint(kv), "=")
			m[k] = val
		}
	default:
		t.Fatalf("%s: environment %T", where, v)
	}
	return m
}

// ---- Kubernetes ----

type exK8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Selector exK8sSelector `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				ShareProcessNamespace bool             `yaml:"shareProcessNamespace"`
				Containers            []exK8sContainer `yaml:"containers"`
				Volumes               []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// exK8sSelector is a Deployment's {matchLabels: ...} or a Service's map.
type exK8sSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
	Plain       map[string]string `yaml:"-"`
}

func (s *exK8sSelector) UnmarshalYAML(n *yaml.Node) error {
	var m map[string]any
	if err := n.Decode(&m); err != nil {
		return err
	}
	if ml, ok := m["matchLabels"]; ok {
		s.MatchLabels = map[string]string{}
		for k, v := range ml.(map[string]any) {
			s.MatchLabels[k] = fmt.Sprint(v)
		}
		return nil
	}
	s.Plain = map[string]string{}
	for k, v := range m {
		s.Plain[k] = fmt.Sprint(v)
	}
	return nil
}

type exK8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port any `yaml:"port"`
	} `yaml:"tcpSocket"`
}

type exK8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	StartupProbe   *exK8sProbe `yaml:"startupProbe"`
	ReadinessProbe *exK8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *exK8sProbe `yaml:"livenessProbe"`
}

func TestExampleKubernetes(t *testing.T) {
	df := exParseDockerfile(t, filepath.Join(exRoot, "Dockerfile"))
	files, err := filepath.Glob("../examples/kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Kubernetes files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var objs []exK8sObject
			dec := yaml.NewDecoder(f)
			for {
				var o exK8sObject
				if err := dec.Decode(&o); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					t.Fatalf("%s: %v", file, err)
				}
				objs = append(objs, o)
			}
			configMaps := map[string]map[string]string{}
			for _, o := range objs {
				if o.Kind == "ConfigMap" {
					configMaps[o.Metadata.Name] = o.Data
				}
			}
			validated := 0
			for _, o := range objs {
				if o.Kind != "Deployment" {
					continue
				}
				pod := o.Spec.Template.Spec
				labels := o.Spec.Template.Metadata.Labels
				for k, v := range o.Spec.Selector.MatchLabels {
					if labels[k] != v {
						t.Errorf("Deployment %s: selector %s=%s does not match the pod labels", o.Metadata.Name, k, v)
					}
				}
				for _, svc := range objs {
					if svc.Kind != "Service" {
						continue
					}
					match := true
					for k, v := range svc.Spec.Selector.Plain {
						match = match && labels[k] == v
					}
					if !match {
						continue
					}
					for _, p := range svc.Spec.Ports {
						if name, ok := p.TargetPort.(string); ok && !exK8sHasPort(pod.Containers, name) {
							t.Errorf("Service %s: targetPort %q is no container port", svc.Metadata.Name, name)
						}
					}
				}
				volumes := map[string]string{} // name -> ConfigMap name ("" for others)
				for _, v := range pod.Volumes {
					volumes[v.Name] = ""
					if v.ConfigMap != nil {
						if _, ok := configMaps[v.ConfigMap.Name]; !ok {
							t.Errorf("volume %s: ConfigMap %q is not in %s", v.Name, v.ConfigMap.Name, file)
						}
						volumes[v.Name] = v.ConfigMap.Name
					}
				}
				for _, c := range pod.Containers {
					for _, m := range c.VolumeMounts {
						if _, ok := volumes[m.Name]; !ok {
							t.Errorf("container %s: volumeMount %q names no volume", c.Name, m.Name)
						}
					}
					for _, p := range []*exK8sProbe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
						if p == nil {
							continue
						}
						var port any
						if p.HTTPGet != nil {
							port = p.HTTPGet.Port
						} else if p.TCPSocket != nil {
							port = p.TCPSocket.Port
						}
						if name, ok := port.(string); ok && !exK8sHasPort([]exK8sContainer{c}, name) {
							t.Errorf("container %s: probe port %q is not one of its ports", c.Name, name)
						}
					}
					if !strings.HasPrefix(c.Image, exImage) {
						continue
					}
					if !pod.ShareProcessNamespace {
						t.Errorf("Deployment %s: the haconfd sidecar needs shareProcessNamespace to reload HAProxy", o.Metadata.Name)
					}
					where := fmt.Sprintf("%s container %s", filepath.Base(file), c.Name)
					w := newExWorld(t)
					// The ConfigMaps as mounted.
					for _, m := range c.VolumeMounts {
						if cm := volumes[m.Name]; cm != "" {
							for key, content := range configMaps[cm] {
								w.install(t, m.MountPath+"/"+key, []byte(content))
							}
						}
					}
					env := map[string]string{}
					for _, e := range c.Env {
						env[e.Name] = e.Value
					}
					var entrypoint []string
					if c.Command != nil {
						entrypoint = c.Command
					}
					cmd := df.imageCmd(t, where, entrypoint, c.Args, env)
					exConfigAgreesWithImage(t, where, df, cmd, configMaps, volumes, c)
					w.validate(t, cmd)
					w.renderChecked(t, cmd)
					validated++
				}
			}
			if validated == 0 {
				t.Fatal("no haconfd container found")
			}
		})
	}
}

func exK8sHasPort(cs []exK8sContainer, name string) bool {
	for _, c := range cs {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

// exConfigAgreesWithImage: a setting in the --config file that the
// image's ENV also sets is overridden by the ENV; they must agree, or the
// file's value would be silently ignored.
func exConfigAgreesWithImage(t *testing.T, where string, df exDockerfile, cmd exCmd, configMaps map[string]map[string]string, volumes map[string]string, c exK8sContainer) {
	t.Helper()
	i := slices.Index(cmd.argv, "--config")
	if i < 0 || i+1 == len(cmd.argv) {
		return
	}
	path := cmd.argv[i+1]
	var content string
	for _, m := range c.VolumeMounts {
		if key, ok := strings.CutPrefix(path, m.MountPath+"/"); ok && volumes[m.Name] != "" {
			content = configMaps[volumes[m.Name]][key]
		}
	}
	if content == "" {
		t.Fatalf("%s: --config %s is not in a mounted ConfigMap", where, path)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(content), &cfg); err != nil {
		t.Fatalf("%s: %s: %v", where, path, err)
	}
	for k, v := range df.env {
		key := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, "HACONFD_"), "_", "-"))
		if fv, ok := cfg[key]; ok && fmt.Sprint(fv) != v {
			t.Errorf("%s: %s sets %s: %v, but the image's ENV %s=%s overrides it", where, path, key, fv, k, v)
		}
	}
}
