package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/internal/galera"
)

// etcdFlags are the etcd client settings of `register`.
type etcdFlags struct {
	endpoints   []string
	dialTimeout time.Duration
	username    string
	password    string
	ca          string
	cert        string
	key         string
}

func (e *etcdFlags) add(fs *pflag.FlagSet) {
	fs.StringSliceVar(&e.endpoints, "etcd-endpoints", []string{"http://127.0.0.1:2379"}, "etcd v3 client URLs, comma-separated")
	fs.DurationVar(&e.dialTimeout, "etcd-dial-timeout", 5*time.Second, "how long to wait for an etcd connection before retrying")
	fs.StringVar(&e.username, "etcd-username", "", "etcd user name (with --etcd-password)")
	fs.StringVar(&e.password, "etcd-password", "", "etcd password (prefer HACONFD_ETCD_PASSWORD; never logged)")
	fs.StringVar(&e.ca, "etcd-ca", "", "CA certificate file that signed etcd's server certificate")
	fs.StringVar(&e.cert, "etcd-cert", "", "client certificate file for etcd TLS authentication")
	fs.StringVar(&e.key, "etcd-key", "", "client key file for etcd TLS authentication")
}

func (e *etcdFlags) client() (*clientv3.Client, error) {
	var tlsCfg *tls.Config
	if e.ca != "" || e.cert != "" {
		info := transport.TLSInfo{TrustedCAFile: e.ca, CertFile: e.cert, KeyFile: e.key}
		c, err := info.ClientConfig()
		if err != nil {
			return nil, &exitError{code: 2, err: fmt.Errorf("etcd TLS: %w", err)}
		}
		tlsCfg = c
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            e.endpoints,
		DialTimeout:          e.dialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Username:             e.username,
		Password:             e.password,
		TLS:                  tlsCfg,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--etcd-endpoints %s: %w", strings.Join(e.endpoints, ","), err)}
	}
	return cli, nil
}

// logFlags are --log-level and --log-format.
type logFlags struct{ level, format string }

func (l *logFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	switch strings.ToLower(l.level) {
	case "debug", "info", "warn", "warning", "error":
	default:
		return nil, &exitError{code: 2, err: fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)}
	}
	if l.format != "text" && l.format != "json" {
		return nil, &exitError{code: 2, err: fmt.Errorf("--log-format %q: want text or json", l.format)}
	}
	return newLogger(config.Config{LogLevel: l.level, LogFormat: l.format}, w), nil
}

// applyEnv sets every flag the command line did not set from its
// HACONFD_<FLAG> environment variable (--mysql-dsn: HACONFD_MYSQL_DSN).
func applyEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" {
			return
		}
		name := config.EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		val, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, val); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	})
	if len(errs) > 0 {
		return &exitError{code: 2, err: errors.Join(errs...)}
	}
	return nil
}

func newRegister(stdout, stderr io.Writer) *cobra.Command {
	var (
		ef                       etcdFlags
		lf                       logFlags
		opts                     galera.Options
		layout, dsn              string
		queryTimeout             time.Duration
		defaultID, defaultHostNm string
	)
	if h, err := os.Hostname(); err == nil {
		defaultID, defaultHostNm = h, h
	}
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register this Galera node in etcd and keep it registered (the node-side sidecar)",
		Long: `register writes this node under --prefix, all keys on one lease (--ttl)
kept alive: in the fleet discovery unit's layout (<prefix>/<id>/ip, /port,
/host, /service_instance_name) or as one JSON value (--layout json). It
registers again when the lease is lost (etcd restarted or restored, lease
revoked) and restores its keys when someone deletes them. With --mysql-dsn it
also publishes the node's wsrep_local_state_comment and wsrep_local_index
(polled every --state-poll), so haconfd drains a node that is not Synced;
while MySQL does not answer, the state published is "Unreachable".
On SIGTERM/SIGINT it deletes only its own keys and revokes its lease.
Every flag can also be set as HACONFD_<FLAG>, e.g. HACONFD_MYSQL_DSN.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			logger, err := lf.logger(stderr)
			if err != nil {
				return err
			}
			l, err := galera.ParseLayout(layout)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--layout: %w", err)}
			}
			opts.Layout = l
			if opts.Port < 1 || opts.Port > 65535 {
				return &exitError{code: 2, err: fmt.Errorf("--port %d: not 1-65535", opts.Port)}
			}
			if queryTimeout <= 0 {
				return &exitError{code: 2, err: fmt.Errorf("--query-timeout %s: must be positive", queryTimeout)}
			}
			opts.QueryTimeout = queryTimeout
			opts.Logger = logger.With("component", "register")
			if dsn != "" {
				reader, err := galera.NewMySQLReader(dsn, queryTimeout)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("--mysql-dsn: %w", err)}
				}
				defer reader.Close()
				opts.Status = reader
			}
			if _, err := galera.New(nil, opts); err != nil {
				return &exitError{code: 2, err: err}
			}
			cli, err := ef.client()
			if err != nil {
				return err
			}
			defer cli.Close()
			r, err := galera.New(cli, opts)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if err := r.Run(ctx); err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	ef.add(fs)
	fs.StringVar(&opts.Prefix, "prefix", galera.DefaultPrefix, "etcd key prefix the node registers under")
	fs.StringVar(&opts.ID, "id", defaultID, "node id below the prefix (default: the host name)")
	fs.StringVar(&opts.IP, "ip", "", "the node's address clients reach MySQL on: IP or host name (required)")
	fs.IntVar(&opts.Port, "port", 3306, "the node's MySQL port")
	fs.StringVar(&opts.Host, "host", defaultHostNm, "host name published as <id>/host (default: the host name)")
	fs.StringVar(&opts.ServiceInstanceName, "service-instance-name", "", "published as <id>/service_instance_name, e.g. the unit name")
	fs.StringVar(&layout, "layout", string(galera.LayoutDir), "dir (one key per field) or json (one JSON value)")
	fs.DurationVar(&opts.TTL, "ttl", galera.DefaultTTL, "lease TTL, whole seconds: the node disappears this long after the registrar dies")
	fs.StringVar(&dsn, "mysql-dsn", "", `publish the node's Galera state read from this MySQL, e.g. "user:pass@tcp(127.0.0.1:3306)/" (prefer HACONFD_MYSQL_DSN)`)
	fs.DurationVar(&opts.StatePoll, "state-poll", galera.DefaultStatePoll, "how often the Galera state is read with --mysql-dsn")
	fs.DurationVar(&queryTimeout, "query-timeout", galera.DefaultCheckTimeout, "bound on one MySQL status read")
	lf.add(fs)
	_ = stdout
	return cmd
}

func newCheck(stdout, stderr io.Writer) *cobra.Command {
	var (
		lf     logFlags
		opts   galera.CheckOptions
		listen string
		dsn    string
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Serve a clustercheck-compatible HTTP health check for this Galera node (for HAProxy's httpchk)",
		Long: `check answers every HTTP request (HAProxy's "option httpchk" OPTIONS, GET,
HEAD) like Percona's clustercheck: 200 "Percona XtraDB Cluster Node is
synced." when wsrep_local_state is 4 (Synced), or 2 (Donor/Desynced) with
--available-when-donor; 503 otherwise, also when read_only is ON unless
--available-when-readonly, when MySQL does not answer within --timeout, or
while --disabled-file exists. The second line of the body says why.
Every flag can also be set as HACONFD_<FLAG>, e.g. HACONFD_MYSQL_DSN.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			logger, err := lf.logger(stderr)
			if err != nil {
				return err
			}
			if dsn == "" {
				return &exitError{code: 2, err: errors.New("--mysql-dsn: required")}
			}
			if opts.Timeout <= 0 {
				return &exitError{code: 2, err: fmt.Errorf("--timeout %s: must be positive", opts.Timeout)}
			}
			reader, err := galera.NewMySQLReader(dsn, opts.Timeout)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--mysql-dsn: %w", err)}
			}
			defer reader.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--listen %s: %w", listen, err)}
			}
			logger = logger.With("component", "check")
			srv := &http.Server{
				Handler:           galera.NewCheck(reader, opts, logger),
				ReadHeaderTimeout: 5 * time.Second,
				WriteTimeout:      opts.Timeout + 5*time.Second,
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			logger.Info("health check listening", "listen", ln.Addr().String())
			select {
			case err := <-errc:
				return &exitError{code: 1, err: fmt.Errorf("serve %s: %w", listen, err)}
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				return &exitError{code: 1, err: fmt.Errorf("stop serving %s: %w", listen, err)}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&listen, "listen", ":9200", "address the health check listens on")
	fs.StringVar(&dsn, "mysql-dsn", "", `MySQL to check, e.g. "user:pass@tcp(127.0.0.1:3306)/" or "user:pass@unix(/run/mysqld/mysqld.sock)/" (required; prefer HACONFD_MYSQL_DSN)`)
	fs.BoolVar(&opts.AvailableWhenDonor, "available-when-donor", false, "answer 200 while the node is Donor/Desynced (wsrep_local_state 2)")
	fs.BoolVar(&opts.AvailableWhenReadOnly, "available-when-readonly", false, "answer 200 while read_only is ON")
	fs.DurationVar(&opts.Timeout, "timeout", galera.DefaultCheckTimeout, "bound on one check's MySQL queries; past it the answer is 503")
	fs.StringVar(&opts.DisabledFile, "disabled-file", "", "while this file exists, answer 503 (take the node out by hand)")
	lf.add(fs)
	_ = stdout
	return cmd
}
