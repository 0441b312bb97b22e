// Package config is haconfd's one typed configuration: defaults, loading
// from flags, HACONFD_* environment variables and a YAML or TOML file
// (precedence: defaults < file < env < flags), and validation that names
// every wrong setting and why.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/haconfd/haconfd/internal/fleet"
)

// EnvPrefix is the prefix of every environment variable haconfd reads:
// --etcd-endpoints is HACONFD_ETCD_ENDPOINTS.
const EnvPrefix = "HACONFD"

// Apply modes.
const (
	ApplyAuto    = "auto"
	ApplyRuntime = "runtime"
	ApplyReload  = "reload"
)

// Config is every setting of `haconfd run` and `haconfd render`.
type Config struct {
	// etcd
	EtcdEndpoints   []string      `mapstructure:"etcd-endpoints"`
	EtcdDialTimeout time.Duration `mapstructure:"etcd-dial-timeout"`
	EtcdUsername    string        `mapstructure:"etcd-username"`
	EtcdPassword    string        `mapstructure:"etcd-password"`
	EtcdCA          string        `mapstructure:"etcd-ca"`
	EtcdCert        string        `mapstructure:"etcd-cert"`
	EtcdKey         string        `mapstructure:"etcd-key"`
	EmbeddedEtcd    string        `mapstructure:"embedded-etcd"`
	EmbeddedEtcdURL string        `mapstructure:"embedded-etcd-url"`
	Prefixes        []string      `mapstructure:"prefix"`
	Confdir         string        `mapstructure:"confdir"`

	// rendering
	Template     string            `mapstructure:"template"`
	Base         string            `mapstructure:"base"`
	Bind         string            `mapstructure:"bind"`
	SingleWriter bool              `mapstructure:"single-writer"`
	WriterBind   string            `mapstructure:"writer-bind"`
	CheckPort    string            `mapstructure:"check-port"`
	Vars         map[string]string `mapstructure:"var"`

	// HAProxy
	Output            string        `mapstructure:"output"`
	HAProxyBin        string        `mapstructure:"haproxy-bin"`
	PIDFile           string        `mapstructure:"pidfile"`
	RuntimeSocket     string        `mapstructure:"runtime-socket"`
	ReloadCmd         string        `mapstructure:"reload-cmd"`
	Apply             string        `mapstructure:"apply"`
	Settle            time.Duration `mapstructure:"settle"`
	DrainTimeout      time.Duration `mapstructure:"drain-timeout"`
	Resync            time.Duration `mapstructure:"resync"`
	StateFile         string        `mapstructure:"state-file"`
	Supervise         bool          `mapstructure:"supervise"`
	MasterSocket      string        `mapstructure:"master-socket"`
	StopHAProxyOnExit bool          `mapstructure:"stop-haproxy-on-exit"`

	// loop
	Wait       string        `mapstructure:"wait"`
	MinServers int           `mapstructure:"min-servers"`
	MaxRemove  float64       `mapstructure:"max-remove"`
	GuardHold  time.Duration `mapstructure:"guard-hold"`
	Force      bool          `mapstructure:"force"`
	Once       bool          `mapstructure:"once"`
	DryRun     bool          `mapstructure:"dry-run"`

	// observability
	Listen string `mapstructure:"listen"`

	// fleet: many haconfd instances on one etcd
	Instance             string        `mapstructure:"instance"`
	StatusPrefix         string        `mapstructure:"status-prefix"`
	StatusTTL            time.Duration `mapstructure:"status-ttl"`
	MaxConcurrentReloads int           `mapstructure:"max-concurrent-reloads"`

	// logging
	LogFormat string `mapstructure:"log-format"`
	LogLevel  string `mapstructure:"log-level"`

	// ConfigFile is the --config file Load read ("" if none).
	ConfigFile string `mapstructure:"-"`
	// Derived by Load from Wait; not settable directly.
	WaitMin time.Duration `mapstructure:"-"`
	WaitMax time.Duration `mapstructure:"-"`
}

// Defaults returns the configuration used when nothing is set.
func Defaults() Config {
	return Config{
		EtcdEndpoints:   []string{"http://127.0.0.1:2379"},
		EtcdDialTimeout: 5 * time.Second,
		EmbeddedEtcdURL: "http://127.0.0.1:2379",
		Prefixes:        []string{"/components/galera"},
		Bind:            ":3306",
		CheckPort:       "9200",
		Vars:            map[string]string{},
		Output:          "/etc/haproxy/haproxy.cfg",
		HAProxyBin:      "haproxy",
		PIDFile:         "/run/haproxy.pid",
		RuntimeSocket:   "/run/haproxy/admin.sock",
		Apply:           ApplyAuto,
		Settle:          200 * time.Millisecond,
		DrainTimeout:    10 * time.Second,
		Resync:          30 * time.Second,
		MasterSocket:    "/run/haproxy/master.sock",
		Wait:            "100ms:2s",
		MinServers:      1,
		MaxRemove:       0.5,
		GuardHold:       time.Minute,
		Listen:          "127.0.0.1:9480",
		StatusPrefix:    "/haconfd/instances",
		StatusTTL:       10 * time.Second,

		MaxConcurrentReloads: 1,
		LogFormat:            "text",
		LogLevel:             "info",
	}
}

// flagHelp documents every setting; the flag name is the mapstructure tag.
var flagHelp = map[string]string{
	"etcd-endpoints":         "etcd v3 client URLs, comma-separated",
	"etcd-dial-timeout":      "how long to wait for an etcd connection before retrying",
	"etcd-username":          "etcd user name (with --etcd-password)",
	"etcd-password":          "etcd password (prefer HACONFD_ETCD_PASSWORD or the config file; never logged)",
	"etcd-ca":                "CA certificate file that signed etcd's server certificate",
	"etcd-cert":              "client certificate file for etcd TLS authentication",
	"etcd-key":               "client key file for etcd TLS authentication",
	"embedded-etcd":          "run an in-process single-node etcd with its data in this directory (for trying haconfd out)",
	"embedded-etcd-url":      "client URL the embedded etcd listens on",
	"prefix":                 "etcd key prefix(es) where nodes register, comma-separated",
	"confdir":                "run an existing confd directory (conf.d/*.toml + templates/) instead of --template; etcd settings come from haconfd's flags",
	"template":               "Go template file to render (default: the embedded galera.cfg.tmpl on top of the embedded base)",
	"base":                   "static file (global/defaults) put before the rendered sections",
	"bind":                   "address the default template's listen section binds (template variable .Vars.bind)",
	"single-writer":          "default template: only one Synced node (lowest wsrep_local_index, kept while Synced) takes traffic in listen galera, the others are backup",
	"writer-bind":            "default template: also render a single-writer section \"listen galera-writer\" on this address",
	"check-port":             "port of the node health check for the default template's httpchk, or \"none\" for a plain TCP check",
	"var":                    "extra template variables as key=value (template: .Vars.key), repeatable",
	"output":                 "the live HAProxy config file haconfd writes",
	"haproxy-bin":            "HAProxy binary",
	"pidfile":                "HAProxy pidfile (haproxy -p)",
	"runtime-socket":         "HAProxy stats socket (level admin, expose-fd listeners) used for hitless reloads and verification",
	"reload-cmd":             "command that reloads a HAProxy managed by someone else (e.g. \"systemctl reload haproxy\"); run with sh -c, the config path in $HACONFD_CONFIG",
	"apply":                  "how changes reach HAProxy: auto, runtime or reload",
	"settle":                 "how long a new HAProxy process must stay alive and answering before a reload counts as done",
	"drain-timeout":          "how long a removed server may keep its sessions before they are shut down (runtime API; the drain runs in the background)",
	"resync":                 "how often HAProxy's live server state is compared with etcd's and repaired (a change typed on the socket, a HAProxy restarted by someone else); 0: only after reloads and reconnects",
	"state-file":             "server-state-file dumped before every reload so runtime changes survive it (default: <output>.state)",
	"supervise":              "run HAProxy as haconfd's child in master-worker mode (-W -S --master-socket), restart it if it dies, reload through the master",
	"master-socket":          "master CLI socket for --supervise",
	"stop-haproxy-on-exit":   "stop HAProxy when haconfd exits (default: leave it serving)",
	"wait":                   "quiescence MIN[:MAX]: apply MIN after the last change, but never later than MAX after the first",
	"min-servers":            "keep the last servers of a section configured when fewer than this would remain (until others return, or --force); a first start waits for this many nodes",
	"max-remove":             "hold the removals beyond this share (0-1) of a section's servers within --guard-hold (held servers stay configured); 1: off",
	"guard-hold":             "a server held by --max-remove is released after this long; removals within it count together (0: held until its node returns or --force, removals counted over 1m)",
	"force":                  "hold nothing the guards would hold (--min-servers, --max-remove)",
	"listen":                 "address for /metrics, /healthz, /readyz and /status (empty: off)",
	"once":                   "render and apply once, then exit (exit 1 if that failed)",
	"dry-run":                "render and validate, print what would be applied, change nothing",
	"instance":               "this instance's name in the fleet status (default: the host name)",
	"status-prefix":          "etcd prefix where each instance publishes its status on a lease (<prefix>/<instance>; empty: publish nothing, no reload coordination)",
	"status-ttl":             "lease TTL of the published status: an instance that dies is shown gone after this long (whole seconds, at least 1s)",
	"max-concurrent-reloads": "how many instances of the fleet may reload HAProxy at once (an etcd semaphore; runtime API changes never wait); 0: no coordination",
	"log-format":             "log format: text or json",
	"log-level":              "log level: debug, info, warn or error",
}

// AddFlags registers one flag per setting on fs, with the defaults of
// Defaults().
func AddFlags(fs *pflag.FlagSet) {
	d := Defaults()
	v := reflect.ValueOf(d)
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name := t.Field(i).Tag.Get("mapstructure")
		if name == "-" {
			continue
		}
		help := flagHelp[name]
		switch f := v.Field(i).Interface().(type) {
		case string:
			fs.String(name, f, help)
		case bool:
			fs.Bool(name, f, help)
		case int:
			fs.Int(name, f, help)
		case float64:
			fs.Float64(name, f, help)
		case time.Duration:
			fs.Duration(name, f, help)
		case []string:
			fs.StringSlice(name, f, help)
		case map[string]string:
			fs.StringToString(name, f, help)
		default:
			panic(fmt.Sprintf("config: no flag type for %s", name))
		}
	}
	fs.String("config", "", "config file (YAML or TOML) with the same keys as the flags")
}

// Load builds the Config from defaults, the --config file, HACONFD_*
// environment variables (from environ) and the flags set on fs, in that
// order of precedence, then validates it. Every problem is returned,
// joined, each as one line naming the setting.
func Load(fs *pflag.FlagSet, environ []string) (Config, error) {
	v := viper.New()
	d := Defaults()
	dv := reflect.ValueOf(d)
	for i := 0; i < dv.NumField(); i++ {
		name := dv.Type().Field(i).Tag.Get("mapstructure")
		if name != "-" {
			v.SetDefault(name, dv.Field(i).Interface())
		}
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
	// Environment: only the variables that name a known setting.
	known := map[string]bool{}
	for i := 0; i < dv.NumField(); i++ {
		name := dv.Type().Field(i).Tag.Get("mapstructure")
		if name == "-" {
			continue
		}
		known[name] = true
		key := EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if val, ok := env[key]; ok {
			parsed, err := parseEnv(dv.Field(i).Interface(), val)
			if err != nil {
				return Config{}, fmt.Errorf("%s: %w", key, err)
			}
			v.Set(name, parsed)
		}
	}
	// Flags last: they win over the file and the environment.
	var flagErrs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if !known[f.Name] || !f.Changed {
			return // not a setting of Config (e.g. render's --diff)
		}
		val, err := flagValue(fs, f.Name)
		if err != nil {
			flagErrs = append(flagErrs, fmt.Errorf("--%s: %w", f.Name, err))
			return
		}
		v.Set(f.Name, val)
	})
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

// Validate checks every setting and returns all problems joined, each one
// line naming the setting.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flag, format string, a ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, a...)))
	}
	if c.EmbeddedEtcd == "" {
		if len(c.EtcdEndpoints) == 0 {
			bad("etcd-endpoints", "at least one endpoint is needed")
		}
		for _, e := range c.EtcdEndpoints {
			if err := checkURL(e); err != nil {
				bad("etcd-endpoints", "%q: %v", e, err)
			}
		}
	} else if err := checkURL(c.EmbeddedEtcdURL); err != nil {
		bad("embedded-etcd-url", "%q: %v", c.EmbeddedEtcdURL, err)
	}
	if c.EtcdDialTimeout <= 0 {
		bad("etcd-dial-timeout", "must be positive, got %s", c.EtcdDialTimeout)
	}
	if (c.EtcdUsername == "") != (c.EtcdPassword == "") {
		bad("etcd-username", "--etcd-username and --etcd-password go together")
	}
	if (c.EtcdCert == "") != (c.EtcdKey == "") {
		bad("etcd-cert", "--etcd-cert and --etcd-key go together")
	}
	if c.Confdir != "" {
		if st, err := os.Stat(filepath.Join(c.Confdir, "conf.d")); err != nil || !st.IsDir() {
			bad("confdir", "%s has no conf.d directory", c.Confdir)
		}
	}
	for flag, p := range map[string]string{"etcd-ca": c.EtcdCA, "etcd-cert": c.EtcdCert, "etcd-key": c.EtcdKey, "template": c.Template, "base": c.Base} {
		if p == "" {
			continue
		}
		if err := readable(p); err != nil {
			bad(flag, "%v", err)
		}
	}
	if len(c.Prefixes) == 0 {
		bad("prefix", "at least one prefix is needed")
	}
	for _, p := range c.Prefixes {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, " \t\r\n") || (len(p) > 1 && strings.HasSuffix(p, "/")) {
			bad("prefix", "%q must start with / and have no trailing / or spaces", p)
		}
	}
	if c.Bind == "" {
		bad("bind", "must not be empty")
	} else if _, port, err := net.SplitHostPort(c.Bind); err != nil {
		bad("bind", "%q is not host:port", c.Bind)
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		bad("bind", "%q: port must be 1-65535", c.Bind)
	}
	if c.WriterBind != "" {
		if _, port, err := net.SplitHostPort(c.WriterBind); err != nil {
			bad("writer-bind", "%q is not host:port", c.WriterBind)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			bad("writer-bind", "%q: port must be 1-65535", c.WriterBind)
		}
	}
	if c.CheckPort != "none" {
		if n, err := strconv.Atoi(c.CheckPort); err != nil || n < 1 || n > 65535 {
			bad("check-port", "%q must be a port 1-65535 or \"none\"", c.CheckPort)
		}
	}
	for k, v := range c.Vars {
		if k == "" || strings.ContainsAny(k+v, "\r\n") {
			bad("var", "%q=%q: keys must be non-empty and values single-line", k, v)
		}
	}
	if c.Output == "" {
		bad("output", "must not be empty")
	} else if !c.DryRun {
		if st, err := os.Stat(filepath.Dir(c.Output)); err != nil || !st.IsDir() {
			bad("output", "directory %s does not exist", filepath.Dir(c.Output))
		}
	}
	if c.PIDFile == "" && c.ReloadCmd == "" {
		bad("pidfile", "must not be empty")
	}
	if len(c.RuntimeSocket) > 107 {
		bad("runtime-socket", "path is %d bytes; unix socket paths are limited to 107", len(c.RuntimeSocket))
	}
	switch c.Apply {
	case ApplyAuto, ApplyRuntime, ApplyReload:
	default:
		bad("apply", "%q must be auto, runtime or reload", c.Apply)
	}
	if c.DrainTimeout < 0 {
		bad("drain-timeout", "must not be negative")
	}
	if c.Resync < 0 {
		bad("resync", "must not be negative (0 turns the periodic comparison off)")
	}
	if c.Supervise {
		if c.ReloadCmd != "" {
			bad("supervise", "--supervise and --reload-cmd exclude each other: haconfd either runs HAProxy or asks someone else to reload it")
		}
		if c.MasterSocket == "" || len(c.MasterSocket) > 107 {
			bad("master-socket", "%q must be a unix socket path of at most 107 bytes", c.MasterSocket)
		}
	}
	if c.Settle < 0 {
		bad("settle", "must not be negative")
	}
	if min, max, err := ParseWait(c.Wait); err != nil {
		bad("wait", "%v", err)
	} else {
		c.WaitMin, c.WaitMax = min, max
	}
	if c.MaxRemove <= 0 || c.MaxRemove > 1 {
		bad("max-remove", "must be a share above 0 and at most 1, got %g", c.MaxRemove)
	}
	if c.GuardHold < 0 {
		bad("guard-hold", "must not be negative")
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			bad("listen", "%q is not host:port", c.Listen)
		}
	}
	if c.Instance != "" {
		if err := fleet.CheckInstance(c.Instance); err != nil {
			bad("instance", "%v", err)
		}
	}
	if c.StatusPrefix != "" {
		if err := fleet.CheckPrefix(c.StatusPrefix); err != nil {
			bad("status-prefix", "%v", err)
		}
		for _, p := range c.Prefixes {
			if fleet.Overlaps(c.StatusPrefix, p) {
				bad("status-prefix", "%q overlaps the watched --prefix %q: every status update would trigger a render", c.StatusPrefix, p)
			}
		}
	}
	if c.StatusTTL < time.Second {
		bad("status-ttl", "must be at least 1s (etcd leases count whole seconds), got %s", c.StatusTTL)
	}
	if c.MaxConcurrentReloads < 0 {
		bad("max-concurrent-reloads", "must not be negative (0 turns coordination off), got %d", c.MaxConcurrentReloads)
	}
	if c.MinServers < 0 {
		bad("min-servers", "must not be negative, got %d", c.MinServers)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log-format", "%q must be text or json", c.LogFormat)
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "warning", "error":
	default:
		bad("log-level", "%q must be debug, info, warn or error", c.LogLevel)
	}
	return errors.Join(errs...)
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
