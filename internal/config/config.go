// Package config is haconfd's one typed configuration: settings grouped by
// concern (etcd, watch, rendering, HAProxy, loop, serving, fleet, logging,
// the Galera node tools), defaults, loading from flags, HACONFD_*
// environment variables and a YAML or TOML file (precedence: defaults <
// file < env < flags), and validation that names every wrong setting and
// why. Each command registers only the groups it uses (AddGroups); every
// command reads flags, the environment and --config the same way.
package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/fleet"
	"github.com/haconfd/haconfd/render/node"
)

// EnvPrefix is the prefix of every environment variable haconfd reads:
// --etcd-endpoints is HACONFD_ETCD_ENDPOINTS.
const EnvPrefix = "HACONFD"

// Apply modes (--apply).
const (
	ApplyAuto    = "auto"    // runtime API for server changes, reload for the rest
	ApplyRuntime = "runtime" // the same, and every reload logged as a warning
	ApplyReload  = "reload"  // every change is a reload
)

// Etcd is how to reach etcd.
type Etcd struct {
	EtcdEndpoints   []string      `mapstructure:"etcd-endpoints"`
	EtcdDialTimeout time.Duration `mapstructure:"etcd-dial-timeout"`
	EtcdUsername    string        `mapstructure:"etcd-username"`
	EtcdPassword    string        `mapstructure:"etcd-password"`
	EtcdCA          string        `mapstructure:"etcd-ca"`
	EtcdCert        string        `mapstructure:"etcd-cert"`
	EtcdKey         string        `mapstructure:"etcd-key"`
}

// Embedded is the in-process etcd for trying haconfd out.
type Embedded struct {
	EmbeddedEtcd    string `mapstructure:"embedded-etcd"`
	EmbeddedEtcdURL string `mapstructure:"embedded-etcd-url"`
}

// Watch is what is watched in etcd.
type Watch struct {
	Prefixes []string `mapstructure:"prefix"`
	Confdir  string   `mapstructure:"confdir"`
}

// Render is how the config is rendered.
type Render struct {
	Template     string            `mapstructure:"template"`
	Base         string            `mapstructure:"base"`
	Bind         string            `mapstructure:"bind"`
	SingleWriter bool              `mapstructure:"single-writer"`
	WriterBind   string            `mapstructure:"writer-bind"`
	Vars         map[string]string `mapstructure:"var"`
}

// Galera is how the nodes of a section are routed (issue 15): rotation
// rules, writers, reader and cluster sections.
type Galera struct {
	ReaderBind     string            `mapstructure:"reader-bind"`
	WriterIsReader bool              `mapstructure:"writer-is-reader"`
	MaxWriters     int               `mapstructure:"max-writers"`
	WriterFailback bool              `mapstructure:"writer-failback"`
	MaxRecvQueue   int               `mapstructure:"max-recv-queue"`
	DefaultPort    int               `mapstructure:"default-port"`
	ClusterBinds   map[string]string `mapstructure:"cluster-bind"`
	// WriterFailoverSessions: "shutdown" (default) or "keep" the sessions
	// of a writer that handed the writes over.
	WriterFailoverSessions string `mapstructure:"writer-failover-sessions"`
}

// Health is the nodes' health-check port: for run and render the
// port the default template checks (or "none"), for register the port
// this node publishes as its own ("" or "none": publish none).
type Health struct {
	CheckPort string `mapstructure:"check-port"`
}

// HAProxy is the HAProxy haconfd keeps in step, and how.
type HAProxy struct {
	Output            string        `mapstructure:"output"`
	HAProxyBin        string        `mapstructure:"haproxy-bin"`
	PIDFile           string        `mapstructure:"pidfile"`
	ReloadCmd         string        `mapstructure:"reload-cmd"`
	Apply             string        `mapstructure:"apply"`
	Settle            time.Duration `mapstructure:"settle"`
	DrainTimeout      time.Duration `mapstructure:"drain-timeout"`
	Resync            time.Duration `mapstructure:"resync"`
	StateFile         string        `mapstructure:"state-file"`
	Supervise         bool          `mapstructure:"supervise"`
	MasterSocket      string        `mapstructure:"master-socket"`
	StopHAProxyOnExit bool          `mapstructure:"stop-haproxy-on-exit"`
}

// Socket is HAProxy's admin stats socket (runtime API), on its own: `run`
// drives HAProxy through it, `status --self` only asks it.
type Socket struct {
	RuntimeSocket string `mapstructure:"runtime-socket"`
}

// Loop is when and whether changes are applied.
type Loop struct {
	Wait       string        `mapstructure:"wait"`
	MinServers int           `mapstructure:"min-servers"`
	MaxRemove  float64       `mapstructure:"max-remove"`
	GuardHold  time.Duration `mapstructure:"guard-hold"`
	Force      bool          `mapstructure:"force"`
	Once       bool          `mapstructure:"once"`
	DryRun     bool          `mapstructure:"dry-run"`
	// Derived by Validate from Wait; not settable directly.
	WaitMin time.Duration `mapstructure:"-"`
	WaitMax time.Duration `mapstructure:"-"`
}

// Serve is the HTTP address a command serves on (run: /metrics, /readyz,
// ...; check: the health check).
type Serve struct {
	Listen string `mapstructure:"listen"`
}

// Fleet is this instance among many on one etcd.
type Fleet struct {
	Instance             string        `mapstructure:"instance"`
	StatusPrefix         string        `mapstructure:"status-prefix"`
	StatusTTL            time.Duration `mapstructure:"status-ttl"`
	MaxConcurrentReloads int           `mapstructure:"max-concurrent-reloads"`
}

// Log is logging.
type Log struct {
	LogFormat string `mapstructure:"log-format"`
	LogLevel  string `mapstructure:"log-level"`
}

// Node is the database node `haconfd register` registers.
type Node struct {
	NodeID              string        `mapstructure:"id"`
	IP                  string        `mapstructure:"ip"`
	Port                int           `mapstructure:"port"`
	Host                string        `mapstructure:"host"`
	ServiceInstanceName string        `mapstructure:"service-instance-name"`
	Layout              string        `mapstructure:"layout"`
	TTL                 time.Duration `mapstructure:"ttl"`
	StatePoll           time.Duration `mapstructure:"state-poll"`
	// Priority is the writer priority the node publishes ("" none).
	Priority string `mapstructure:"priority"`
}

// MySQL is the local database the Galera tools read.
type MySQL struct {
	MySQLDSN     string        `mapstructure:"mysql-dsn"`
	QueryTimeout time.Duration `mapstructure:"query-timeout"`
}

// Check is how `haconfd check` answers.
type Check struct {
	AvailableWhenDonor    bool   `mapstructure:"available-when-donor"`
	AvailableWhenReadOnly bool   `mapstructure:"available-when-readonly"`
	DisabledFile          string `mapstructure:"disabled-file"`
}

// Config is every setting of every command, in groups. A command uses
// the groups it registered; the others keep their defaults.
type Config struct {
	Etcd     `mapstructure:",squash"`
	Embedded `mapstructure:",squash"`
	Watch    `mapstructure:",squash"`
	Render   `mapstructure:",squash"`
	Galera   `mapstructure:",squash"`
	Health   `mapstructure:",squash"`
	HAProxy  `mapstructure:",squash"`
	Socket   `mapstructure:",squash"`
	Loop     `mapstructure:",squash"`
	Serve    `mapstructure:",squash"`
	Fleet    `mapstructure:",squash"`
	Log      `mapstructure:",squash"`
	Node     `mapstructure:",squash"`
	MySQL    `mapstructure:",squash"`
	Check    `mapstructure:",squash"`

	// ConfigFile is the --config file Load read ("" if none).
	ConfigFile string `mapstructure:"-"`
	// Groups are the groups the command registered (set by Load).
	Groups []Group `mapstructure:"-"`
}

// Group names a group of settings (the name of its type).
type Group string

// The groups.
const (
	GroupEtcd     Group = "Etcd"
	GroupEmbedded Group = "Embedded"
	GroupWatch    Group = "Watch"
	GroupRender   Group = "Render"
	GroupGalera   Group = "Galera"
	GroupHealth   Group = "Health"
	GroupHAProxy  Group = "HAProxy"
	GroupSocket   Group = "Socket"
	GroupLoop     Group = "Loop"
	GroupServe    Group = "Serve"
	GroupFleet    Group = "Fleet"
	GroupLog      Group = "Log"
	GroupNode     Group = "Node"
	GroupMySQL    Group = "MySQL"
	GroupCheck    Group = "Check"
)

// DaemonGroups are the groups of `haconfd run` (and `render`, its dry run).
var DaemonGroups = []Group{GroupEtcd, GroupEmbedded, GroupWatch, GroupRender, GroupGalera, GroupHealth, GroupHAProxy, GroupSocket, GroupLoop, GroupServe, GroupFleet, GroupLog}

// Defaults returns the configuration used when nothing is set.
func Defaults() Config {
	host, _ := os.Hostname()
	return Config{
		Etcd:     Etcd{EtcdEndpoints: []string{"http://127.0.0.1:2379"}, EtcdDialTimeout: 5 * time.Second},
		Embedded: Embedded{EmbeddedEtcdURL: "http://127.0.0.1:2379"},
		Watch:    Watch{Prefixes: []string{"/components/galera"}},
		Render:   Render{Bind: ":3306", Vars: map[string]string{}},
		Galera: Galera{WriterIsReader: true, MaxWriters: 1, DefaultPort: node.DefaultPort,
			ClusterBinds: map[string]string{}, WriterFailoverSessions: WriterSessionsShutdown},
		Health: Health{CheckPort: "9200"},
		HAProxy: HAProxy{
			Output:       "/etc/haproxy/haproxy.cfg",
			HAProxyBin:   "haproxy",
			PIDFile:      "/run/haproxy.pid",
			Apply:        ApplyAuto,
			Settle:       200 * time.Millisecond,
			DrainTimeout: 10 * time.Second,
			Resync:       30 * time.Second,
			MasterSocket: "/run/haproxy/master.sock",
		},
		Socket: Socket{RuntimeSocket: "/run/haproxy/admin.sock"},
		Loop:   Loop{Wait: "100ms:2s", MinServers: 1, MaxRemove: 0.5, GuardHold: time.Minute},
		Serve:  Serve{Listen: "127.0.0.1:9480"},
		Fleet:  Fleet{StatusPrefix: "/haconfd/instances", StatusTTL: 10 * time.Second, MaxConcurrentReloads: 1},
		Log:    Log{LogFormat: "text", LogLevel: "info"},
		Node: Node{NodeID: host, Port: node.DefaultPort, Host: host, Layout: string(node.LayoutDir),
			TTL: 10 * time.Second, StatePoll: 50 * time.Millisecond},
		MySQL: MySQL{QueryTimeout: 2 * time.Second},
	}
}

// flagHelp documents every setting; the flag name is the mapstructure tag.
var flagHelp = map[string]string{
	"etcd-endpoints":          "etcd v3 client URLs, comma-separated",
	"etcd-dial-timeout":       "how long to wait for an etcd connection before retrying",
	"etcd-username":           "etcd user name (with --etcd-password)",
	"etcd-password":           "etcd password (prefer HACONFD_ETCD_PASSWORD or the config file; never logged)",
	"etcd-ca":                 "CA certificate file that signed etcd's server certificate",
	"etcd-cert":               "client certificate file for etcd TLS authentication",
	"etcd-key":                "client key file for etcd TLS authentication",
	"embedded-etcd":           "run an in-process single-node etcd with its data in this directory (for trying haconfd out)",
	"embedded-etcd-url":       "client URL the embedded etcd listens on",
	"prefix":                  "etcd key prefix(es) where nodes register, comma-separated",
	"confdir":                 "run an existing confd directory (conf.d/*.toml + templates/) instead of --template; etcd settings come from haconfd's flags",
	"template":                "Go template file to render (default: the embedded galera.cfg.tmpl on top of the embedded base)",
	"base":                    "static file (global/defaults) put before the rendered sections",
	"bind":                    "address the default template's listen section binds (template variable .Vars.bind)",
	"single-writer":           "default template: only the writers (--max-writers nodes in rotation, by priority) take traffic in listen galera, the others get weight 0",
	"writer-bind":             "default template: also render a section \"listen galera-writer\" on this address that only the writers serve",
	"check-port":              "port of the node health check for the default template's httpchk, or \"none\" for a plain TCP check (register: this node's own check port, published as <id>/check_port and used by the default template)",
	"var":                     "extra template variables as key=value (template: .Vars.key), repeatable",
	"output":                  "the live HAProxy config file haconfd writes",
	"haproxy-bin":             "HAProxy binary",
	"pidfile":                 "HAProxy pidfile (haproxy -p)",
	"runtime-socket":          "HAProxy stats socket (level admin, expose-fd listeners) used for hitless reloads and verification",
	"reload-cmd":              "command that reloads a HAProxy managed by someone else (e.g. \"systemctl reload haproxy\"); run with sh -c, the config path in $HACONFD_CONFIG",
	"apply":                   "how changes reach HAProxy: auto, runtime or reload",
	"settle":                  "how long a new HAProxy process must stay alive and answering before a reload counts as done",
	"drain-timeout":           "how long a removed server may keep its sessions before they are shut down (runtime API; the drain runs in the background)",
	"resync":                  "how often HAProxy's live server state is compared with etcd's and repaired (a change typed on the socket, a HAProxy restarted by someone else); 0: only after reloads and reconnects",
	"state-file":              "server-state-file dumped before every reload so runtime changes survive it (default: <output>.state)",
	"supervise":               "run HAProxy as haconfd's child in master-worker mode (-W -S --master-socket), restart it if it dies, reload through the master",
	"master-socket":           "master CLI socket for --supervise",
	"stop-haproxy-on-exit":    "stop HAProxy when haconfd exits (default: leave it serving)",
	"wait":                    "quiescence MIN[:MAX] of the reload lane: reload MIN after the last change, but never later than MAX after the first (server changes never wait)",
	"min-servers":             "keep the last servers of a section configured when fewer than this would remain (until others return, or --force); a first start waits for this many nodes",
	"max-remove":              "hold the removals beyond this share (0-1) of a section's servers within --guard-hold (held servers stay configured); 1: off",
	"guard-hold":              "a server held by --max-remove is released after this long; removals within it count together (0: held until its node returns or --force, removals counted over 1m)",
	"force":                   "hold nothing the guards would hold (--min-servers, --max-remove)",
	"listen":                  "address to serve HTTP on (run: /, /metrics, /healthz, /readyz, /status, /events, /servers; empty: off)",
	"once":                    "render and apply once, then exit (exit 1 if that failed)",
	"dry-run":                 "render and validate, print what would be applied, change nothing",
	"instance":                "this instance's name in the fleet status (default: the host name)",
	"status-prefix":           "etcd prefix where each instance publishes its status on a lease (<prefix>/<instance>; empty: publish nothing, no reload coordination)",
	"status-ttl":              "lease TTL of the published status: an instance that dies is shown gone after this long (whole seconds, at least 1s)",
	"max-concurrent-reloads":  "how many instances of the fleet may reload HAProxy at once (an etcd semaphore; runtime API changes never wait); 0: no coordination",
	"log-format":              "log format: text or json",
	"log-level":               "log level: debug, info, warn or error",
	"id":                      "node id below the prefix (default: the host name)",
	"ip":                      "the node's address clients reach MySQL on: IP or host name (required)",
	"port":                    "the node's MySQL port",
	"host":                    "host name published as <id>/host (default: the host name)",
	"service-instance-name":   "published as <id>/service_instance_name, e.g. the unit name",
	"layout":                  "dir (one key per field) or json (one JSON value)",
	"ttl":                     "lease TTL, whole seconds: the node disappears this long after the registrar dies",
	"state-poll":              "how often the Galera state is read with --mysql-dsn (a new connection each time: a stopped MySQL is seen at the next poll)",
	"mysql-dsn":               `MySQL to read, e.g. "user:pass@tcp(127.0.0.1:3306)/" or "user:pass@unix(/run/mysqld/mysqld.sock)/" (prefer HACONFD_MYSQL_DSN)`,
	"query-timeout":           "bound on one read of MySQL's status; past it the node counts as not answering",
	"available-when-donor":    "answer 200 while the node is Donor/Desynced (wsrep_local_state 2)",
	"available-when-readonly": "answer 200 while read_only is ON",
	"disabled-file":           "while this file exists, answer 503 (take the node out by hand)",
}

// galeraHelp documents the Galera routing settings (issue 15).
var galeraHelp = map[string]string{
	"reader-bind":              "default template: also render a section \"listen galera-reader\" on this address served by every node in rotation (read-only nodes too)",
	"writer-is-reader":         "the writers also take reads in the reader section (false: only when no other node is in rotation)",
	"max-writers":              "how many nodes take writes in the writer sections (--single-writer, --writer-bind): the best by priority (lowest positive; <= 0 never), then wsrep_local_index",
	"writer-failback":          "give the writes back to the preferred node when it is back in rotation (default: a writer keeps them while it stays in rotation)",
	"writer-failover-sessions": "when the writes move to another node: shutdown (end the old writer's sessions in the writer sections) or keep",
	"max-recv-queue":           "drain a node whose wsrep_local_recv_queue (the smallest over the last second, as register publishes it) is above this, until it is below half of it; 0: off",
	"default-port":             "MySQL port of a node that publishes none (e.g. severalnines' /galera/<cluster>/<ip>/ layout)",
	"cluster-bind":             "address of each cluster found under a prefix above clusters (/galera/<cluster>/<node>/...), as cluster=addr, repeatable; a cluster not named here gets no section",
	"priority":                 "writer priority published as <id>/priority: the lowest positive takes the writes, <= 0 never a writer (empty: none published)",
}

// groupAnnotation marks a flag with its group.
const groupAnnotation = "haconfd-group"

// field is one setting: its key, group and place in Config.
type field struct {
	key   string
	group Group
	index []int // reflect field index path from Config
}

// fields lists every setting of Config, in declaration order.
func fields() []field {
	var out []field
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		g := t.Field(i)
		if !g.Anonymous {
			continue
		}
		for j := 0; j < g.Type.NumField(); j++ {
			f := g.Type.Field(j)
			key := f.Tag.Get("mapstructure")
			if key == "-" || key == "" {
				continue
			}
			out = append(out, field{key: key, group: Group(g.Type.Name()), index: []int{i, j}})
		}
	}
	return out
}

// AddFlags registers the flags of `haconfd run` (DaemonGroups) and --config.
func AddFlags(fs *pflag.FlagSet) { AddGroups(fs, nil, DaemonGroups...) }

// AddGroups registers one flag per setting of groups on fs, with the
// defaults of Defaults() changed by override (may be nil; e.g. check's
// --listen default), and --config.
func AddGroups(fs *pflag.FlagSet, override func(*Config), groups ...Group) {
	d := Defaults()
	if override != nil {
		override(&d)
	}
	v := reflect.ValueOf(d)
	for _, f := range fields() {
		if !slices.Contains(groups, f.group) {
			continue
		}
		help := flagHelp[f.key]
		if help == "" {
			help = galeraHelp[f.key]
		}
		switch val := v.FieldByIndex(f.index).Interface().(type) {
		case string:
			fs.String(f.key, val, help)
		case bool:
			fs.Bool(f.key, val, help)
		case int:
			fs.Int(f.key, val, help)
		case float64:
			fs.Float64(f.key, val, help)
		case time.Duration:
			fs.Duration(f.key, val, help)
		case []string:
			fs.StringSlice(f.key, val, help)
		case map[string]string:
			fs.StringToString(f.key, val, help)
		default:
			panic(fmt.Sprintf("config: no flag type for %s", f.key))
		}
		_ = fs.SetAnnotation(f.key, groupAnnotation, []string{string(f.group)})
	}
	if fs.Lookup("config") == nil {
		fs.String("config", "", "config file (YAML or TOML) with the same keys as the flags")
	}
}

// registered returns the groups whose flags are on fs.
func registered(fs *pflag.FlagSet) []Group {
	var out []Group
	fs.VisitAll(func(f *pflag.Flag) {
		if g := f.Annotations[groupAnnotation]; len(g) == 1 && !slices.Contains(out, Group(g[0])) {
			out = append(out, Group(g[0]))
		}
	})
	return out
}

// Load builds the Config from defaults, the --config file, HACONFD_*
// environment variables (from environ) and the flags set on fs, in that
// order of precedence, for the groups registered on fs, then validates
// those groups. Keys of the file that belong to other groups are read
// and ignored (one file may serve several commands); a key of no group is
// an error. Every problem is returned, joined, each as one line naming
// the setting.
func Load(fs *pflag.FlagSet, environ []string) (Config, error) {
	groups := registered(fs)
	all := fields()
	v := viper.New()
	d := Defaults()
	dv := reflect.ValueOf(d)
	for _, f := range all {
		def := dv.FieldByIndex(f.index).Interface()
		// A command may change a default (check's --listen): the flag's
		// value when it was not set is that default.
		if fl := fs.Lookup(f.key); fl != nil && !fl.Changed && slices.Contains(groups, f.group) {
			if val, err := flagValue(fs, f.key); err == nil {
				def = val
			}
		}
		v.SetDefault(f.key, def)
	}
	env := envMap(environ)
	path := env[EnvPrefix+"_CONFIG"]
	if f := fs.Lookup("config"); f != nil && f.Changed {
		path = f.Value.String()
	}
	if path != "" {
		v.SetConfigFile(path)
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("--config %s: %w", path, oneLine(err))
		}
	}
	// Environment: only the variables of the registered groups.
	for _, f := range all {
		if !slices.Contains(groups, f.group) {
			continue
		}
		key := EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(f.key, "-", "_"))
		if val, ok := env[key]; ok {
			parsed, err := parseEnv(dv.FieldByIndex(f.index).Interface(), val)
			if err != nil {
				return Config{}, fmt.Errorf("%s: %w", key, err)
			}
			v.Set(f.key, parsed)
		}
	}
	// Flags last: they win over the file and the environment.
	var flagErrs []error
	for _, f := range all {
		fl := fs.Lookup(f.key)
		if fl == nil || !fl.Changed || !slices.Contains(groups, f.group) {
			continue
		}
		val, err := flagValue(fs, f.key)
		if err != nil {
			flagErrs = append(flagErrs, fmt.Errorf("--%s: %w", f.key, err))
			continue
		}
		v.Set(f.key, val)
	}
	if len(flagErrs) > 0 {
		return Config{}, errors.Join(flagErrs...)
	}
	var c Config
	err := v.UnmarshalExact(&c, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)))
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", oneLine(err))
	}
	if c.Vars == nil {
		c.Vars = map[string]string{}
	}
	c.ConfigFile = path
	c.Groups = groups
	if c.StateFile == "" && c.Output != "" {
		c.StateFile = c.Output + ".state"
	}
	return c, c.Validate()
}

func flagValue(fs *pflag.FlagSet, name string) (any, error) {
	switch fs.Lookup(name).Value.Type() {
	case "bool":
		return fs.GetBool(name)
	case "int":
		return fs.GetInt(name)
	case "float64":
		return fs.GetFloat64(name)
	case "duration":
		return fs.GetDuration(name)
	case "stringSlice":
		return fs.GetStringSlice(name)
	case "stringToString":
		return fs.GetStringToString(name)
	default:
		return fs.GetString(name)
	}
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix+"_") {
			m[k] = val
		}
	}
	return m
}

func parseEnv(def any, val string) (any, error) {
	switch def.(type) {
	case bool:
		b, err := strconv.ParseBool(val)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", val)
		}
		return b, nil
	case int:
		n, err := strconv.Atoi(val)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", val)
		}
		return n, nil
	case float64:
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", val)
		}
		return f, nil
	case time.Duration:
		d, err := time.ParseDuration(val)
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration such as 500ms or 2s", val)
		}
		return d, nil
	case []string:
		return splitList(val), nil
	case map[string]string:
		m := map[string]string{}
		for _, kv := range splitList(val) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("%q is not key=value", kv)
			}
			m[k] = v
		}
		return m, nil
	default:
		return val, nil
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// oneLine folds a multi-line library error into one line.
func oneLine(err error) error {
	s := strings.Join(strings.Fields(err.Error()), " ")
	return errors.New(s)
}

// ParseWait parses --wait: "MIN" or "MIN:MAX" (MAX defaults to 4×MIN,
// and "0" disables waiting).
func ParseWait(s string) (min, max time.Duration, err error) {
	lo, hi, hasMax := strings.Cut(strings.TrimSpace(s), ":")
	if min, err = parseDur(lo); err != nil {
		return 0, 0, err
	}
	max = 4 * min
	if hasMax {
		if max, err = parseDur(hi); err != nil {
			return 0, 0, err
		}
	}
	if min < 0 || max < 0 {
		return 0, 0, fmt.Errorf("%q: durations must not be negative", s)
	}
	if max < min {
		return 0, 0, fmt.Errorf("%q: MAX must not be less than MIN", s)
	}
	return min, max, nil
}

func parseDur(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 100ms or 2s", s)
	}
	return d, nil
}

// problems collects one line per wrong setting.
type problems []error

func (p *problems) bad(flag, format string, a ...any) {
	*p = append(*p, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, a...)))
}

// Validate checks the settings of the registered groups (all groups when
// none is registered) and returns every problem, joined, one line each:
// first each group's own rules (no disk access), then the files and
// directories they name (Files).
func (c *Config) Validate() error {
	var p problems
	has := func(g Group) bool { return len(c.Groups) == 0 || slices.Contains(c.Groups, g) }
	if has(GroupEtcd) && !(has(GroupEmbedded) && c.EmbeddedEtcd != "") {
		c.Etcd.validate(&p)
	} else if has(GroupEtcd) {
		c.Etcd.validateAuth(&p)
	}
	if has(GroupEmbedded) && c.EmbeddedEtcd != "" {
		if err := checkURL(c.EmbeddedEtcdURL); err != nil {
			p.bad("embedded-etcd-url", "%q: %v", c.EmbeddedEtcdURL, err)
		}
	}
	if has(GroupWatch) {
		c.Watch.validate(&p)
	}
	if has(GroupRender) {
		c.Render.validate(&p)
	}
	if has(GroupGalera) {
		c.Galera.validate(&p, c.Bind, c.WriterBind)
	}
	if has(GroupHealth) {
		c.Health.validate(&p, has(GroupRender))
	}
	if has(GroupHAProxy) {
		c.HAProxy.validate(&p)
	}
	if has(GroupSocket) && len(c.RuntimeSocket) > haproxy.MaxSocketPath {
		p.bad("runtime-socket", "path is %d bytes; unix socket paths are limited to %d", len(c.RuntimeSocket), haproxy.MaxSocketPath)
	}
	if has(GroupLoop) {
		c.Loop.validate(&p)
	}
	if has(GroupServe) && c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			p.bad("listen", "%q is not host:port", c.Listen)
		}
	}
	if has(GroupFleet) {
		c.Fleet.validate(&p, c.Prefixes)
	}
	if has(GroupLog) {
		c.Log.validate(&p)
	}
	if has(GroupNode) {
		c.Node.validate(&p)
		if has(GroupWatch) && len(c.Prefixes) != 1 {
			p.bad("prefix", "a node registers under one prefix, got %d", len(c.Prefixes))
		}
	}
	if has(GroupMySQL) && c.QueryTimeout <= 0 {
		p.bad("query-timeout", "must be positive, got %s", c.QueryTimeout)
	}
	if has(GroupCheck) && c.MySQLDSN == "" {
		p.bad("mysql-dsn", "required: the MySQL to check")
	}
	p = append(p, c.files()...)
	return errors.Join(p...)
}

func (e *Etcd) validate(p *problems) {
	if len(e.EtcdEndpoints) == 0 {
		p.bad("etcd-endpoints", "at least one endpoint is needed")
	}
	for _, ep := range e.EtcdEndpoints {
		if err := checkURL(ep); err != nil {
			p.bad("etcd-endpoints", "%q: %v", ep, err)
		}
	}
	e.validateAuth(p)
}

func (e *Etcd) validateAuth(p *problems) {
	if e.EtcdDialTimeout <= 0 {
		p.bad("etcd-dial-timeout", "must be positive, got %s", e.EtcdDialTimeout)
	}
	if (e.EtcdUsername == "") != (e.EtcdPassword == "") {
		p.bad("etcd-username", "--etcd-username and --etcd-password go together")
	}
	if (e.EtcdCert == "") != (e.EtcdKey == "") {
		p.bad("etcd-cert", "--etcd-cert and --etcd-key go together")
	}
}

func (w *Watch) validate(p *problems) {
	if len(w.Prefixes) == 0 {
		p.bad("prefix", "at least one prefix is needed")
	}
	for _, pr := range w.Prefixes {
		if !strings.HasPrefix(pr, "/") || strings.ContainsAny(pr, " \t\r\n") || (len(pr) > 1 && strings.HasSuffix(pr, "/")) {
			p.bad("prefix", "%q must start with / and have no trailing / or spaces", pr)
		}
	}
}

func (r *Render) validate(p *problems) {
	if r.Bind == "" {
		p.bad("bind", "must not be empty")
	} else if err := checkHostPort(r.Bind); err != nil {
		p.bad("bind", "%q: %v", r.Bind, err)
	}
	if r.WriterBind != "" {
		if err := checkHostPort(r.WriterBind); err != nil {
			p.bad("writer-bind", "%q: %v", r.WriterBind, err)
		}
	}
	for k, v := range r.Vars {
		if k == "" || strings.ContainsAny(k+v, "\r\n") {
			p.bad("var", "%q=%q: keys must be non-empty and values single-line", k, v)
		}
	}
}

// Writer session policies (--writer-failover-sessions).
const (
	WriterSessionsShutdown = "shutdown"
	WriterSessionsKeep     = "keep"
)

// reservedSections are the sections the default template renders: a
// cluster may not be named like one.
var reservedSections = []string{"galera", "galera-writer", "galera-reader"}

func (g *Galera) validate(p *problems, bind, writerBind string) {
	if g.ReaderBind != "" {
		if err := checkHostPort(g.ReaderBind); err != nil {
			p.bad("reader-bind", "%q: %v", g.ReaderBind, err)
		} else if g.ReaderBind == bind || g.ReaderBind == writerBind {
			p.bad("reader-bind", "%q is already --bind or --writer-bind", g.ReaderBind)
		}
	}
	if g.MaxWriters < 1 || g.MaxWriters > 64 {
		p.bad("max-writers", "must be 1-64, got %d", g.MaxWriters)
	}
	if g.MaxRecvQueue < 0 {
		p.bad("max-recv-queue", "must not be negative (0 turns it off), got %d", g.MaxRecvQueue)
	}
	if g.DefaultPort < 1 || g.DefaultPort > 65535 {
		p.bad("default-port", "%d: not 1-65535", g.DefaultPort)
	}
	switch g.WriterFailoverSessions {
	case WriterSessionsShutdown, WriterSessionsKeep:
	default:
		p.bad("writer-failover-sessions", "%q must be shutdown or keep", g.WriterFailoverSessions)
	}
	binds := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(g.ClusterBinds)) {
		addr := g.ClusterBinds[name]
		switch {
		case name == "" || strings.ContainsAny(name, "/ \t\r\n"):
			p.bad("cluster-bind", "%q=%q: a cluster name is one path element, without / or spaces", name, addr)
		case slices.Contains(reservedSections, node.ClusterServiceName(name)):
			p.bad("cluster-bind", "%q: the default template already has a section of that name", name)
		case checkHostPort(addr) != nil:
			p.bad("cluster-bind", "%q=%q: %v", name, addr, checkHostPort(addr))
		case addr == bind || addr == writerBind || addr == g.ReaderBind:
			p.bad("cluster-bind", "%q=%q: the address is already bound by another section", name, addr)
		case binds[addr] != "":
			p.bad("cluster-bind", "%q=%q: the address is already cluster %q's", name, addr, binds[addr])
		default:
			binds[addr] = name
		}
	}
}

func (h *Health) validate(p *problems, daemon bool) {
	if h.CheckPort == "none" || h.CheckPort == "" && !daemon {
		return
	}
	if n, err := strconv.Atoi(h.CheckPort); err != nil || n < 1 || n > 65535 {
		p.bad("check-port", "%q must be a port 1-65535 or \"none\"", h.CheckPort)
	}
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("not host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return errors.New("port must be 1-65535")
	}
	return nil
}

func (h *HAProxy) validate(p *problems) {
	if h.Output == "" {
		p.bad("output", "must not be empty")
	}
	if h.PIDFile == "" && h.ReloadCmd == "" {
		p.bad("pidfile", "must not be empty")
	}
	switch h.Apply {
	case ApplyAuto, ApplyRuntime, ApplyReload:
	default:
		p.bad("apply", "%q must be auto, runtime or reload", h.Apply)
	}
	if h.DrainTimeout < 0 {
		p.bad("drain-timeout", "must not be negative")
	}
	if h.Resync < 0 {
		p.bad("resync", "must not be negative (0 turns the periodic comparison off)")
	}
	if h.Supervise {
		if h.ReloadCmd != "" {
			p.bad("supervise", "--supervise and --reload-cmd exclude each other: haconfd either runs HAProxy or asks someone else to reload it")
		}
		if h.MasterSocket == "" || len(h.MasterSocket) > haproxy.MaxSocketPath {
			p.bad("master-socket", "%q must be a unix socket path of at most %d bytes", h.MasterSocket, haproxy.MaxSocketPath)
		}
	}
	if h.Settle < 0 {
		p.bad("settle", "must not be negative")
	}
}

func (l *Loop) validate(p *problems) {
	if min, max, err := ParseWait(l.Wait); err != nil {
		p.bad("wait", "%v", err)
	} else {
		l.WaitMin, l.WaitMax = min, max
	}
	if l.MaxRemove <= 0 || l.MaxRemove > 1 {
		p.bad("max-remove", "must be a share above 0 and at most 1, got %g", l.MaxRemove)
	}
	if l.GuardHold < 0 {
		p.bad("guard-hold", "must not be negative")
	}
	if l.MinServers < 0 {
		p.bad("min-servers", "must not be negative, got %d", l.MinServers)
	}
}

func (f *Fleet) validate(p *problems, prefixes []string) {
	if f.Instance != "" {
		if err := fleet.CheckInstance(f.Instance); err != nil {
			p.bad("instance", "%v", err)
		}
	}
	if f.StatusPrefix != "" {
		if err := fleet.CheckPrefix(f.StatusPrefix); err != nil {
			p.bad("status-prefix", "%v", err)
		}
		for _, pr := range prefixes {
			if fleet.Overlaps(f.StatusPrefix, pr) {
				p.bad("status-prefix", "%q overlaps the watched --prefix %q: every status update would trigger a render", f.StatusPrefix, pr)
			}
		}
	}
	if f.StatusTTL < time.Second {
		p.bad("status-ttl", "must be at least 1s (etcd leases count whole seconds), got %s", f.StatusTTL)
	}
	if f.MaxConcurrentReloads < 0 {
		p.bad("max-concurrent-reloads", "must not be negative (0 turns coordination off), got %d", f.MaxConcurrentReloads)
	}
}

func (l *Log) validate(p *problems) {
	switch l.LogFormat {
	case "text", "json":
	default:
		p.bad("log-format", "%q must be text or json", l.LogFormat)
	}
	switch strings.ToLower(l.LogLevel) {
	case "debug", "info", "warn", "warning", "error":
	default:
		p.bad("log-level", "%q must be debug, info, warn or error", l.LogLevel)
	}
}

func (n *Node) validate(p *problems) {
	if n.NodeID == "" {
		p.bad("id", "must not be empty (the host name is unknown: set --id)")
	}
	if n.IP == "" {
		p.bad("ip", "required: the address clients reach this node's MySQL on")
	}
	if n.Port < 1 || n.Port > 65535 {
		p.bad("port", "%d: not 1-65535", n.Port)
	}
	if _, err := node.ParseLayout(n.Layout); err != nil {
		p.bad("layout", "%q: want dir or json", n.Layout)
	}
	if n.TTL < time.Second {
		p.bad("ttl", "must be at least 1s (etcd leases count whole seconds), got %s", n.TTL)
	}
	if n.StatePoll <= 0 {
		p.bad("state-poll", "must be positive, got %s", n.StatePoll)
	}
	if n.Priority != "" {
		if v, err := strconv.Atoi(n.Priority); err != nil || v < -1<<20 || v > 1<<20 {
			p.bad("priority", "%q must be a whole number (lowest positive wins, <= 0 never a writer)", n.Priority)
		}
	}
}

// files checks the files and directories the registered groups name: the
// part of validation that looks at the disk.
func (c *Config) files() []error {
	var p problems
	has := func(g Group) bool { return len(c.Groups) == 0 || slices.Contains(c.Groups, g) }
	named := map[string]string{}
	if has(GroupEtcd) {
		named["etcd-ca"], named["etcd-cert"], named["etcd-key"] = c.EtcdCA, c.EtcdCert, c.EtcdKey
	}
	if has(GroupRender) {
		named["template"], named["base"] = c.Template, c.Base
	}
	for _, flag := range slices.Sorted(maps.Keys(named)) {
		if path := named[flag]; path != "" {
			if err := readable(path); err != nil {
				p.bad(flag, "%v", err)
			}
		}
	}
	if has(GroupWatch) && c.Confdir != "" {
		if st, err := os.Stat(filepath.Join(c.Confdir, "conf.d")); err != nil || !st.IsDir() {
			p.bad("confdir", "%s has no conf.d directory", c.Confdir)
		}
	}
	if has(GroupHAProxy) && c.Output != "" && !(has(GroupLoop) && c.DryRun) {
		if st, err := os.Stat(filepath.Dir(c.Output)); err != nil || !st.IsDir() {
			p.bad("output", "directory %s does not exist", filepath.Dir(c.Output))
		}
	}
	return p
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("not an http:// or https:// URL")
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
		return errors.New("URL needs a host:port")
	}
	return nil
}

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s does not exist", path)
		}
		return fmt.Errorf("%s cannot be read: %v", path, errors.Unwrap(err))
	}
	return f.Close()
}
