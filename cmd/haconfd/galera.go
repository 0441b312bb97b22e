package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/haconfd/haconfd/internal/app"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/internal/galera"
	"github.com/haconfd/haconfd/render/node"
)

// galeraGroups are the settings of `haconfd register`.
var registerGroups = []config.Group{config.GroupEtcd, config.GroupWatch, config.GroupNode, config.GroupHealth, config.GroupMySQL, config.GroupLog}

// checkGroups are the settings of `haconfd check` (--listen defaults to
// :9200, clustercheck's port).
var checkGroups = []config.Group{config.GroupServe, config.GroupMySQL, config.GroupCheck, config.GroupLog}

func newRegister(stdout, stderr io.Writer) *cobra.Command {
	var validateOnly bool
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register this Galera node in etcd and keep it registered (the node-side sidecar)",
		Long: `register writes this node under --prefix, all keys on one lease (--ttl)
kept alive: in the fleet discovery unit's layout (<prefix>/<id>/ip, /port,
/host, /service_instance_name) or as one JSON value (--layout json). It
registers again when the lease is lost (etcd restarted or restored, lease
revoked) and restores its keys when someone deletes them. With --mysql-dsn it
also publishes the node's wsrep_local_state_comment, wsrep_local_index and
the signals haconfd routes on (wsrep_ready, wsrep_cluster_status,
wsrep_desync, wsrep_reject_queries, wsrep_sst_donor_rejects_queries,
read_only, pxc_maint_mode, wsrep_local_recv_queue,
wsrep_flow_control_paused), read on a new connection every --state-poll,
so haconfd drains a node that cannot serve within ~100 ms; while MySQL does
not answer (a refused connection included), the state published is
"Unreachable". --priority and --check-port publish the node's writer
priority and its own health-check port.
On SIGTERM/SIGINT it deletes only its own keys and revokes its lease.
Every flag can also be set as HACONFD_<FLAG> (e.g. HACONFD_MYSQL_DSN) or in
a --config file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			logger := newLogger(cfg, stderr)
			layout, _ := node.ParseLayout(cfg.Layout) // validated by load
			opts := galera.Options{
				Prefix: cfg.Prefixes[0], ID: cfg.NodeID, IP: cfg.IP, Port: cfg.Port, Host: cfg.Host,
				ServiceInstanceName: cfg.ServiceInstanceName, Layout: layout, TTL: cfg.TTL,
				StatePoll: cfg.StatePoll, QueryTimeout: cfg.QueryTimeout, Priority: cfg.Priority,
				Logger: logger.With("component", "register"),
			}
			if cfg.CheckPort != "" && cfg.CheckPort != "none" {
				opts.CheckPort, _ = strconv.Atoi(cfg.CheckPort) // validated by load
			}
			if cfg.MySQLDSN != "" {
				reader, err := galera.NewMySQLReader(cfg.MySQLDSN, cfg.QueryTimeout, logger)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("--mysql-dsn: %w", err)}
				}
				defer reader.Close()
				opts.Wsrep = reader
			}
			if _, err := galera.New(nil, opts); err != nil {
				return &exitError{code: 2, err: err}
			}
			if validateOnly {
				_, err := fmt.Fprintf(stdout, "config OK: node %s at %s:%d under %s\n", cfg.NodeID, cfg.IP, cfg.Port, cfg.Prefixes[0])
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			etcd, err := app.ConnectEtcd(ctx, cfg, logger)
			if err != nil {
				return classify(err)
			}
			defer etcd.Close()
			r, err := galera.New(etcd.Client.Client, opts)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if err := r.Run(ctx); err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
	config.AddGroups(cmd.Flags(), func(d *config.Config) { d.CheckPort = "" }, registerGroups...)
	cmd.Flags().BoolVar(&validateOnly, "validate-config", false, "check flags, environment and config file, print what is wrong, exit 0 (OK) or 2; connects to nothing")
	return cmd
}

func newCheck(stdout, stderr io.Writer) *cobra.Command {
	var validateOnly bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Serve a clustercheck-compatible HTTP health check for this Galera node (for HAProxy's httpchk)",
		Long: `check answers every HTTP request (HAProxy's "option httpchk" OPTIONS, GET,
HEAD) like Percona's clustercheck: 200 "Percona XtraDB Cluster Node is
synced." when wsrep_local_state is 4 (Synced), or 2 (Donor/Desynced) with
--available-when-donor; 503 otherwise, also when read_only is ON unless
--available-when-readonly, when MySQL does not answer within
--query-timeout, or while --disabled-file exists. The second line of the
body says why. Every flag can also be set as HACONFD_<FLAG> (e.g.
HACONFD_MYSQL_DSN) or in a --config file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			logger := newLogger(cfg, stderr)
			reader, err := galera.NewMySQLReader(cfg.MySQLDSN, cfg.QueryTimeout, logger)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--mysql-dsn: %w", err)}
			}
			defer reader.Close()
			if validateOnly {
				_, err := fmt.Fprintf(stdout, "config OK: health check on %s\n", cfg.Listen)
				return err
			}
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--listen %s: %w", cfg.Listen, err)}
			}
			logger = logger.With("component", "check")
			opts := galera.CheckOptions{
				AvailableWhenDonor: cfg.AvailableWhenDonor, AvailableWhenReadOnly: cfg.AvailableWhenReadOnly,
				Timeout: cfg.QueryTimeout, DisabledFile: cfg.DisabledFile,
			}
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
				return &exitError{code: 1, err: fmt.Errorf("serve %s: %w", cfg.Listen, err)}
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				return &exitError{code: 1, err: fmt.Errorf("stop serving %s: %w", cfg.Listen, err)}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	config.AddGroups(fs, func(d *config.Config) { d.Listen = ":9200" }, checkGroups...)
	// --timeout was check's name for --query-timeout (kept for existing units).
	fs.Duration("timeout", 0, "deprecated: --query-timeout")
	_ = fs.MarkDeprecated("timeout", "use --query-timeout")
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		if f := fs.Lookup("timeout"); f.Changed {
			if fs.Lookup("query-timeout").Changed {
				return &exitError{code: 2, err: errors.New("--timeout: give --query-timeout only (--timeout is its old name)")}
			}
			return fs.Set("query-timeout", f.Value.String())
		}
		return nil
	}
	fs.BoolVar(&validateOnly, "validate-config", false, "check flags, environment and config file, print what is wrong, exit 0 (OK) or 2; serves nothing")
	return cmd
}
