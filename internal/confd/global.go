// Package confd runs existing confd setups unchanged: confd's global
// settings (confd.toml and confd's own command-line flags), its conf.d
// template resources, the key space each resource's template sees, and the
// way confd stages, checks, installs and reloads a destination file.
//
// It reads files and runs check_cmd/reload_cmd, but never talks to etcd:
// the caller watches the prefixes (Set.WatchPrefixes) and hands every new
// snapshot to Set.Process.
//
// Where confd has a quirk that a working setup may rely on, this package
// keeps it and says so in a warning (Global.Warnings, Resource.Warnings or
// the logger) rather than change the output. Deliberate differences from
// confd 0.16 are documented on ParseFlags and Applier.
//
// Use: g := ParseFlags(args) (or LoadGlobal / DefaultGlobal); s := Load(
// logger, g); watch s.WatchPrefixes(); on every snapshot call
// s.Process(ctx, NewApplier(logger, g), kvs).
package confd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Defaults of confd's settings.
const (
	DefaultConfDir    = "/etc/confd"
	DefaultConfigFile = "/etc/confd/confd.toml"
	DefaultInterval   = 600 // seconds
	DefaultBackend    = "etcd"
)

// ErrUnsupportedBackend is wrapped by ParseFlags and LoadGlobal for any
// backend but etcd and etcdv3.
var ErrUnsupportedBackend = errors.New("haconfd supports only etcdv3 (and etcd, treated as v3)")

// ErrInvalidSetting is wrapped by ParseFlags, LoadGlobal and LoadResources
// for a value that cannot be used.
var ErrInvalidSetting = errors.New("invalid setting")

// Global is confd's global configuration: confd.toml merged with confd's
// flags. Only the settings that apply to an etcd backend are used; the
// others are accepted (so that a confd command line still parses) and
// named in Warnings.
type Global struct {
	Backend        string   // "etcd" or "etcdv3"; both use the etcd v3 API, as confd ≥ 0.16 does
	Nodes          []string // etcd endpoints, as confd takes them: "host:port" or "http(s)://host:port"
	Prefix         string   // when set, replaces every resource's prefix (confd semantics)
	ClientCert     string
	ClientKey      string
	ClientCaKeys   string // CA certificate file
	ClientInsecure bool   // accepted; confd's etcd client ignores it, and so does haconfd
	BasicAuth      bool   // Username/Password are used only with BasicAuth, as in confd
	Username       string
	Password       string
	Scheme         string // for nodes found by SRV with backend "etcd"
	SRVDomain      string
	SRVRecord      string
	Interval       int // polling interval in seconds when not Watch
	Watch          bool
	OneTime        bool
	Noop           bool
	SyncOnly       bool
	KeepStageFile  bool
	LogLevel       string
	ConfDir        string
	ConfigFile     string // the confd.toml that was read ("" if none)
	PrintVersion   bool   // -version

	// Warnings are notes for the operator (ignored settings, confd quirks
	// kept as they are). Log them at start.
	Warnings []string
}

// DefaultGlobal returns confd's defaults, with no nodes yet (ParseFlags
// and LoadGlobal fill in the backend's default nodes).
func DefaultGlobal() Global {
	return Global{
		Backend:  DefaultBackend,
		Scheme:   "http",
		Interval: DefaultInterval,
		ConfDir:  DefaultConfDir,
	}
}

// ConfigDir is ConfDir/conf.d, where the template resources are.
func (g Global) ConfigDir() string { return filepath.Join(g.ConfDir, "conf.d") }

// TemplateDir is ConfDir/templates, where the templates are.
func (g Global) TemplateDir() string { return filepath.Join(g.ConfDir, "templates") }

// EtcdAuth returns the user name and password for etcd: empty unless
// BasicAuth is set, as confd's etcd client does.
func (g Global) EtcdAuth() (user, password string) {
	if !g.BasicAuth {
		return "", ""
	}
	return g.Username, g.Password
}

// SlogLevel maps confd's (logrus) log level to slog; "" is info.
func (g Global) SlogLevel() (slog.Level, error) {
	return parseLogLevel(g.LogLevel)
}

func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug", "trace":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "fatal", "panic":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%w: log-level %q: want debug, info, warning or error", ErrInvalidSetting, s)
}

// setting is one confd setting: its flag name, its confd.toml key and how
// to set it from a string (flag) or a TOML value (file).
type setting struct {
	flag    string // "" if confd has no flag for it
	key     string // confd.toml key, lower case; "" if none
	usage   string
	ignored bool // accepted but without effect for etcd
	boolean bool
	set     func(g *Global, v any) error // v is a flagArg, or the decoded TOML value
}

// flagArg is a value given on the command line (a TOML string is a plain
// string, so a string where the file needs a number is still an error).
type flagArg string

func strSetting(flagName, key, usage string, field func(*Global) *string) setting {
	return setting{flag: flagName, key: key, usage: usage, set: func(g *Global, v any) error {
		switch s := v.(type) {
		case string:
			*field(g) = s
		case flagArg:
			*field(g) = string(s)
		default:
			return fmt.Errorf("want a string, got %s", tomlType(v))
		}
		return nil
	}}
}

func boolSetting(flagName, key, usage string, field func(*Global) *bool) setting {
	return setting{flag: flagName, key: key, usage: usage, boolean: true, set: func(g *Global, v any) error {
		switch b := v.(type) {
		case bool:
			*field(g) = b
		case flagArg:
			p, err := strconv.ParseBool(string(b))
			if err != nil {
				return fmt.Errorf("want true or false, got %q", b)
			}
			*field(g) = p
		default:
			return fmt.Errorf("want true or false, got %s", tomlType(v))
		}
		return nil
	}}
}

func ignoredSetting(flagName, key, usage string, boolean bool) setting {
	return setting{flag: flagName, key: key, usage: usage + " (not used by haconfd)", ignored: true, boolean: boolean,
		set: func(*Global, any) error { return nil }}
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

// settings lists every confd setting, in confd's -h order.
func settings() []setting {
	return []setting{
		ignoredSetting("app-id", "app_id", "Vault app-id (vault backend only)", false),
		ignoredSetting("auth-token", "auth_token", "Auth bearer token", false),
		ignoredSetting("auth-type", "auth_type", "Vault auth backend type (vault backend only)", false),
		strSetting("backend", "backend", "backend to use: etcdv3 (etcd is treated as etcdv3)", func(g *Global) *string { return &g.Backend }),
		boolSetting("basic-auth", "basic_auth", "use -username and -password for etcd", func(g *Global) *bool { return &g.BasicAuth }),
		strSetting("client-ca-keys", "client_cakeys", "client ca keys (the CA certificate of etcd)", func(g *Global) *string { return &g.ClientCaKeys }),
		strSetting("client-cert", "client_cert", "the client cert", func(g *Global) *string { return &g.ClientCert }),
		strSetting("client-key", "client_key", "the client key", func(g *Global) *string { return &g.ClientKey }),
		boolSetting("client-insecure", "client_insecure", "accepted; ignored for etcd as in confd", func(g *Global) *bool { return &g.ClientInsecure }),
		strSetting("confdir", "confdir", "confd conf directory", func(g *Global) *string { return &g.ConfDir }),
		{flag: "config-file", usage: "the confd config file"}, // handled by ParseFlags
		ignoredSetting("file", "file", "YAML file (file backend only)", false),
		ignoredSetting("filter", "filter", "files filter (file backend only)", false),
		{flag: "interval", key: "interval", usage: "backend polling interval in seconds", set: func(g *Global, v any) error {
			switch n := v.(type) {
			case int64:
				g.Interval = int(n)
			case flagArg:
				i, err := strconv.Atoi(string(n))
				if err != nil {
					return fmt.Errorf("want a whole number of seconds, got %q", n)
				}
				g.Interval = i
			default:
				return fmt.Errorf("want an integer, got %s", tomlType(v))
			}
			return nil
		}},
		boolSetting("keep-stage-file", "keepstagefile", "keep staged files", func(g *Global) *bool { return &g.KeepStageFile }),
		strSetting("log-level", "log-level", "level which confd should log messages", func(g *Global) *string { return &g.LogLevel }),
		{flag: "node", key: "nodes", usage: "list of backend nodes (repeatable)", set: func(g *Global, v any) error {
			switch n := v.(type) {
			case flagArg:
				g.Nodes = append(g.Nodes, string(n))
			case []any:
				g.Nodes = nil
				for _, e := range n {
					s, ok := e.(string)
					if !ok {
						return fmt.Errorf("want an array of strings, got an element that is %s", tomlType(e))
					}
					g.Nodes = append(g.Nodes, s)
				}
			default:
				return fmt.Errorf("want an array of strings, got %s", tomlType(v))
			}
			return nil
		}},
		boolSetting("noop", "noop", "only show pending changes", func(g *Global) *bool { return &g.Noop }),
		boolSetting("onetime", "onetime", "run once and exit", func(g *Global) *bool { return &g.OneTime }),
		strSetting("password", "password", "the password to authenticate with (with -basic-auth)", func(g *Global) *string { return &g.Password }),
		ignoredSetting("path", "path", "Vault mount path (vault backend only)", false),
		strSetting("prefix", "prefix", "key path prefix (replaces the prefix of every template resource)", func(g *Global) *string { return &g.Prefix }),
		ignoredSetting("role-id", "role_id", "Vault role-id (vault backend only)", false),
		strSetting("scheme", "scheme", "the URI scheme for nodes retrieved from DNS SRV records (http or https)", func(g *Global) *string { return &g.Scheme }),
		ignoredSetting("secret-id", "secret_id", "Vault secret-id (vault backend only)", false),
		ignoredSetting("secret-keyring", "secret_keyring", "armored PGP secret keyring (crypt functions)", false),
		ignoredSetting("separator", "separator", "key separator (redis backend only)", false),
		strSetting("srv-domain", "srv_domain", "the name of the resource record", func(g *Global) *string { return &g.SRVDomain }),
		strSetting("srv-record", "srv_record", "the SRV record to search for backend nodes", func(g *Global) *string { return &g.SRVRecord }),
		boolSetting("sync-only", "sync-only", "sync without check_cmd and reload_cmd", func(g *Global) *bool { return &g.SyncOnly }),
		ignoredSetting("table", "table", "DynamoDB table (dynamodb backend only)", false),
		ignoredSetting("user-id", "user_id", "Vault user-id (vault backend only)", false),
		strSetting("username", "username", "the username to authenticate as (with -basic-auth)", func(g *Global) *string { return &g.Username }),
		boolSetting("version", "", "print version and exit", func(g *Global) *bool { return &g.PrintVersion }),
		boolSetting("watch", "watch", "enable watch support", func(g *Global) *bool { return &g.Watch }),
		ignoredSetting("", "role", "", false),
	}
}

// LoadGlobal reads a confd.toml over confd's defaults. Unknown keys and
// settings of other backends are accepted (confd ignores them) and named
// in Warnings; a value of the wrong type or an unsupported backend is an
// error naming the file and the key.
func LoadGlobal(path string) (Global, error) {
	g := DefaultGlobal()
	if err := g.loadFile(path); err != nil {
		return Global{}, err
	}
	if err := g.finish(os.Getenv); err != nil {
		return Global{}, fmt.Errorf("%s: %w", path, err)
	}
	return g, nil
}

func (g *Global) loadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read confd config: %w", err)
	}
	var m map[string]any
	if err := toml.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%s: %w", path, tomlError(err))
	}
	byKey := make(map[string]setting)
	for _, s := range settings() {
		if s.key != "" {
			byKey[s.key] = s
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		// BurntSushi/toml, which confd uses, matches keys case-insensitively.
		s, ok := byKey[strings.ToLower(k)]
		switch {
		case !ok:
			g.Warnings = append(g.Warnings, fmt.Sprintf("%s: unknown key %q ignored", path, k))
			continue
		case s.ignored:
			g.Warnings = append(g.Warnings, fmt.Sprintf("%s: %s is not used by haconfd (it is for another confd backend)", path, k))
			continue
		}
		if err := s.set(g, m[k]); err != nil {
			return fmt.Errorf("%w: %s: %s: %v", ErrInvalidSetting, path, k, err)
		}
	}
	g.ConfigFile = path
	return nil
}

// tomlError puts a go-toml decode error on one line with its position.
func tomlError(err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("line %d column %d: %s", row, col, de.Error())
	}
	return err
}

// finish applies confd's environment fallbacks and defaults and checks
// the settings that can be wrong.
func (g *Global) finish(getenv func(string) string) error {
	// confd's processEnv: only when not set otherwise.
	for _, e := range []struct {
		name  string
		field *string
	}{{"CONFD_CLIENT_CAKEYS", &g.ClientCaKeys}, {"CONFD_CLIENT_CERT", &g.ClientCert}, {"CONFD_CLIENT_KEY", &g.ClientKey}} {
		if v := getenv(e.name); v != "" && *e.field == "" {
			*e.field = v
		}
	}
	switch g.Backend {
	case "etcdv3":
	case "etcd":
		g.Warnings = append(g.Warnings, "backend etcd: read through the etcd v3 API, as confd 0.16 does; "+
			"v2 directories are key paths in v3 and ls/lsdir list them the same way")
	default:
		return fmt.Errorf("backend %s: %w", g.Backend, ErrUnsupportedBackend)
	}
	if g.LogLevel != "" {
		if _, err := parseLogLevel(g.LogLevel); err != nil {
			return err
		}
	}
	if g.Interval < 1 && !g.Watch && !g.OneTime {
		return fmt.Errorf("%w: interval %d: must be at least 1 second", ErrInvalidSetting, g.Interval)
	}
	if g.Scheme != "http" && g.Scheme != "https" {
		return fmt.Errorf("%w: scheme %q: want http or https", ErrInvalidSetting, g.Scheme)
	}
	if g.ConfDir == "" {
		return fmt.Errorf("%w: confdir is empty", ErrInvalidSetting)
	}
	if (g.ClientCert == "") != (g.ClientKey == "") {
		// confd silently uses no client certificate then.
		g.Warnings = append(g.Warnings, "client_cert and client_key must be set together: without both no client certificate is used (as in confd)")
	}
	if !g.BasicAuth && (g.Username != "" || g.Password != "") {
		g.Warnings = append(g.Warnings, "username/password are ignored without basic_auth (-basic-auth), as in confd")
	}
	if g.ClientInsecure {
		g.Warnings = append(g.Warnings, "client_insecure is ignored for etcd, as in confd: server certificates are verified")
	}
	if g.SRVDomain != "" && g.SRVRecord == "" {
		g.SRVRecord = fmt.Sprintf("_%s._tcp.%s.", g.Backend, g.SRVDomain)
	}
	for i, n := range g.Nodes {
		if n == "" || strings.ContainsAny(n, " \t\r\n") {
			return fmt.Errorf("%w: node %d %q: not an address", ErrInvalidSetting, i+1, n)
		}
	}
	if len(g.Nodes) == 0 && g.SRVRecord == "" {
		switch g.Backend {
		case "etcd":
			if peers := getenv("ETCDCTL_PEERS"); peers != "" {
				g.Nodes = strings.Split(peers, ",")
			} else {
				g.Nodes = []string{"http://127.0.0.1:4001"}
				g.Warnings = append(g.Warnings, "backend etcd without nodes: using confd's default http://127.0.0.1:4001; "+
					"etcd 3 listens on :2379 unless told otherwise, so pass -node")
			}
		case "etcdv3":
			g.Nodes = []string{"127.0.0.1:2379"}
		}
	}
	return nil
}

// ResolveNodes replaces Nodes with the targets of SRVRecord, as confd does
// at start (with Scheme prepended for backend etcd). Without SRVRecord it
// does nothing. lookup is net.LookupSRV or a stand-in.
func (g *Global) ResolveNodes(lookup func(service, proto, name string) (string, []*net.SRV, error)) error {
	if g.SRVRecord == "" {
		return nil
	}
	_, addrs, err := lookup("", "", g.SRVRecord)
	if err != nil {
		return fmt.Errorf("get nodes from SRV record %s: %w", g.SRVRecord, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("get nodes from SRV record %s: no targets", g.SRVRecord)
	}
	g.Nodes = g.Nodes[:0:0]
	for _, srv := range addrs {
		n := net.JoinHostPort(strings.TrimRight(srv.Target, "."), strconv.Itoa(int(srv.Port)))
		if g.Backend == "etcd" {
			n = g.Scheme + "://" + n
		}
		g.Nodes = append(g.Nodes, n)
	}
	return nil
}

// ParseFlags parses confd's own command line (Go flag syntax: -backend
// etcdv3 -node http://127.0.0.1:2379 -onetime ...) over the config file
// named by -config-file (default /etc/confd/confd.toml, skipped when it
// does not exist, as in confd) and the CONFD_CLIENT_* and ETCDCTL_PEERS
// environment variables, which it reads with os.Getenv.
//
// Precedence is defaults < file < environment < flags given on the
// command line, as confd's documentation says ("Command line flags
// override the confd configuration file"). confd 0.16's code actually lets
// the file win over flags; haconfd follows the documentation.
//
// -backend etcd is accepted and read through the etcd v3 API, as confd
// 0.16 itself does; any other backend is an error wrapping
// ErrUnsupportedBackend ("-backend consul: haconfd supports only etcdv3
// (and etcd, treated as v3)"). -h returns an error wrapping flag.ErrHelp;
// print Usage then.
func ParseFlags(args []string) (Global, error) {
	return ParseFlagsEnv(args, os.Getenv)
}

// ParseFlagsEnv is ParseFlags with the environment read through getenv.
func ParseFlagsEnv(args []string, getenv func(string) string) (Global, error) {
	fset := flag.NewFlagSet("confd", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	all := settings()
	values := make(map[string]*flagValue)
	for _, s := range all {
		if s.flag == "" {
			continue
		}
		v := &flagValue{boolean: s.boolean}
		values[s.flag] = v
		fset.Var(v, s.flag, s.usage)
	}
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Global{}, fmt.Errorf("confd flags: %w", err)
		}
		return Global{}, fmt.Errorf("%w: %s", ErrInvalidSetting, oneLine(err.Error()))
	}
	if fset.NArg() > 0 {
		return Global{}, fmt.Errorf("%w: unexpected argument %q (confd takes only flags)", ErrInvalidSetting, fset.Arg(0))
	}

	g := DefaultGlobal()
	configFile := DefaultConfigFile
	cf := values["config-file"]
	if cf.set {
		configFile = cf.vals[len(cf.vals)-1]
	}
	switch _, err := os.Stat(configFile); {
	case errors.Is(err, fs.ErrNotExist):
		if cf.set {
			g.Warnings = append(g.Warnings, fmt.Sprintf("-config-file %s does not exist: skipped, as confd does", configFile))
		}
	case err != nil:
		return Global{}, fmt.Errorf("confd config file: %w", err)
	default:
		if err := g.loadFile(configFile); err != nil {
			return Global{}, err
		}
	}

	// Flags given on the command line, in confd's order.
	for _, s := range all {
		v := values[s.flag]
		if s.flag == "" || s.flag == "config-file" || !v.set {
			continue
		}
		if s.ignored {
			g.Warnings = append(g.Warnings, fmt.Sprintf("-%s is not used by haconfd (it is for another confd backend)", s.flag))
			continue
		}
		if s.flag == "node" {
			g.Nodes = nil // flags replace the file's nodes
		}
		for _, val := range v.vals {
			if err := s.set(&g, flagArg(val)); err != nil {
				return Global{}, fmt.Errorf("%w: -%s: %v", ErrInvalidSetting, s.flag, err)
			}
		}
	}
	if err := g.finish(getenv); err != nil {
		if errors.Is(err, ErrUnsupportedBackend) && values["backend"].set {
			return Global{}, fmt.Errorf("-backend %s: %w", g.Backend, ErrUnsupportedBackend)
		}
		if g.ConfigFile != "" {
			return Global{}, fmt.Errorf("%s: %w", g.ConfigFile, err)
		}
		return Global{}, err
	}
	return g, nil
}

// flagValue records every value a flag was given.
type flagValue struct {
	boolean bool
	set     bool
	vals    []string
}

func (v *flagValue) String() string {
	if v == nil || len(v.vals) == 0 {
		return ""
	}
	return v.vals[len(v.vals)-1]
}

func (v *flagValue) Set(s string) error {
	if v.boolean {
		if _, err := strconv.ParseBool(s); err != nil {
			return fmt.Errorf("want true or false")
		}
	}
	v.set = true
	v.vals = append(v.vals, s)
	return nil
}

func (v *flagValue) IsBoolFlag() bool { return v.boolean }

// Usage writes confd's flags, as `haconfd confd -h` shows them.
func Usage(w io.Writer) {
	fmt.Fprintln(w, "Usage of haconfd confd (confd's flags; backend etcdv3 only):")
	for _, s := range settings() {
		if s.flag == "" {
			continue
		}
		kind := " string"
		switch {
		case s.boolean:
			kind = ""
		case s.flag == "interval":
			kind = " int"
		case s.flag == "node":
			kind = " value"
		}
		fmt.Fprintf(w, "  -%s%s\n    \t%s\n", s.flag, kind, s.usage)
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
