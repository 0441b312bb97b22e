package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/haconfd/haconfd/internal/app"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/internal/galera"
	"github.com/haconfd/haconfd/render/node"
)

// adminGroups are the settings of notify, drain and undrain: where etcd
// is and the prefix the node is registered under.
var adminGroups = []config.Group{config.GroupEtcd, config.GroupWatch, config.GroupLog}

// loadNode loads a node command's settings and checks its single --prefix
// and the node id (named by what in errors: "--id", "NODE").
func loadNode(cmd *cobra.Command, what, id string) (config.Config, string, error) {
	cfg, err := load(cmd)
	if err != nil {
		return cfg, "", err
	}
	if len(cfg.Prefixes) != 1 {
		return cfg, "", &exitError{code: 2, err: fmt.Errorf("--prefix: give the one prefix the node is registered under, got %d", len(cfg.Prefixes))}
	}
	if err := galera.CheckNodeID(id); err != nil {
		return cfg, "", &exitError{code: 2, err: fmt.Errorf("%s: %w", what, err)}
	}
	return cfg, cfg.Prefixes[0], nil
}

// etcdFor connects to etcd for a one-shot command bounded by timeout.
func etcdFor(cmd *cobra.Command, cfg config.Config, timeout time.Duration, stderr io.Writer) (*app.Etcd, context.Context, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	etcd, err := app.ConnectEtcd(ctx, cfg, newLogger(cfg, stderr))
	if err != nil {
		cancel()
		return nil, nil, nil, classify(err)
	}
	return etcd, ctx, cancel, nil
}

func newNotify(stdout, stderr io.Writer) *cobra.Command {
	var (
		id      string
		args    galera.NotifyArgs
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "notify",
		Short: "Galera's wsrep_notify_cmd: push this node's state and view to etcd at once",
		Long: `notify is meant for Galera's wsrep_notify_cmd (my.cnf only: it is read-only
at run time):

  [mysqld]
  wsrep_notify_cmd = '/usr/bin/haconfd notify --etcd-endpoints http://10.0.0.1:2379 --id db1'

Galera runs it on every status change (--status synced, donor, joiner,
joined, disconnecting, ...) and view change (--uuid --primary yes|no
--members uuid/name/address,... --index N). It writes the node's record
<prefix>/<id>/wsrep_notify on the lease of the node's registration (by
haconfd register, with the same --id and --prefix): haconfd takes the node
out at once when the record says it does not serve, and takes out the
members that the newest view of the Primary component no longer lists
(the survivors run it within ~50 ms of a clean leave). Galera waits for the
command: it gives up after --timeout. With no registration it writes
nothing and exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, prefix, err := loadNode(cmd, "--id", id)
			if err != nil {
				return err
			}
			if err := args.Check(); err != nil {
				return &exitError{code: 2, err: err}
			}
			if timeout <= 0 {
				return &exitError{code: 2, err: fmt.Errorf("--timeout: must be positive, got %s", timeout)}
			}
			etcd, ctx, cancel, err := etcdFor(cmd, cfg, timeout, stderr)
			if err != nil {
				return err
			}
			defer cancel()
			defer etcd.Close()
			res, err := galera.Notify(ctx, etcd.Client.Client, prefix, id, args, time.Now())
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("notify %s: %w", id, err)}
			}
			if !res.Wrote {
				_, err := fmt.Fprintf(stderr, "haconfd notify: node %s is not registered under %s: nothing written\n", id, node.TrimPrefix(prefix))
				return err
			}
			return nil
		},
	}
	fs := cmd.Flags()
	config.AddGroups(fs, nil, adminGroups...)
	host, _ := os.Hostname()
	fs.StringVar(&id, "id", host, "node id below the prefix, as haconfd register --id (default: the host name)")
	fs.StringVar(&args.Status, "status", "", "Galera: the node's new status")
	fs.StringVar(&args.UUID, "uuid", "", "Galera: the cluster state UUID")
	fs.StringVar(&args.Primary, "primary", "", "Galera: yes or no, the node is in a Primary component")
	fs.StringVar(&args.Members, "members", "", "Galera: the view's members, uuid/name/address,...")
	fs.StringVar(&args.Index, "index", "", "Galera: this node's place in --members")
	fs.DurationVar(&timeout, "timeout", 2*time.Second, "give up after this long (Galera waits for the command)")
	return cmd
}

// oneNode takes exactly one NODE argument; anything else is bad input
// (exit 2).
func oneNode(cmd *cobra.Command, args []string) error {
	if err := cobra.ExactArgs(1)(cmd, args); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("NODE: %w", err)}
	}
	return nil
}

// operator names who runs a command: $SUDO_USER or the user, at the host.
func operator() string {
	name := os.Getenv("SUDO_USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	host, _ := os.Hostname()
	if host != "" {
		name += "@" + host
	}
	return name
}

func newDrain(stdout, stderr io.Writer) *cobra.Command {
	var (
		by, reason string
		force      bool
	)
	cmd := &cobra.Command{
		Use:   "drain NODE",
		Short: "Take a node out of rotation by hand: no new connections, the open ones finish",
		Long: `drain writes <prefix>/<NODE>/drain with who (--by) and why (--reason). Every
haconfd sets the node's weight to 0 through HAProxy's runtime API at once:
it takes no new connections, the open ones finish, its health checks go on.
The drain wins over every health signal (also the last-resort rule) and
outlives restarts of the node, its registrar and haconfd, until
"haconfd undrain NODE". /servers, /status and "haconfd render --plan" show
who drained it and why.`,
		Args: oneNode,
		RunE: func(cmd *cobra.Command, a []string) error {
			cfg, prefix, err := loadNode(cmd, "NODE", a[0])
			if err != nil {
				return err
			}
			if strings.TrimSpace(reason) == "" {
				return &exitError{code: 2, err: errors.New("--reason: say why the node is drained (shown with the drain)")}
			}
			etcd, ctx, cancel, err := etcdFor(cmd, cfg, 10*time.Second, stderr)
			if err != nil {
				return err
			}
			defer cancel()
			defer etcd.Close()
			res, err := galera.Drain(ctx, etcd.Client.Client, prefix, a[0], by, reason, force, time.Now())
			if errors.Is(err, galera.ErrNotRegistered) {
				return &exitError{code: 2, err: err}
			}
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			what := "drained"
			if !res.Changed {
				what = "was already drained; drain updated"
			}
			_, err = fmt.Fprintf(stdout, "node %s %s (%s): it takes no new connections, the open ones finish; undo with: haconfd undrain %s\n",
				a[0], what, res.Drain.String(), a[0])
			return err
		},
	}
	fs := cmd.Flags()
	config.AddGroups(fs, nil, adminGroups...)
	fs.StringVar(&by, "by", operator(), "who drains it (default: $SUDO_USER or the user, @ the host)")
	fs.StringVarP(&reason, "reason", "r", "", "why it is drained (required)")
	fs.BoolVar(&force, "force", false, "drain a node that is not registered (yet)")
	return cmd
}

func newUndrain(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "undrain NODE",
		Short: "Undo haconfd drain: the node takes connections again when its health allows",
		Args:  oneNode,
		RunE: func(cmd *cobra.Command, a []string) error {
			cfg, prefix, err := loadNode(cmd, "NODE", a[0])
			if err != nil {
				return err
			}
			etcd, ctx, cancel, err := etcdFor(cmd, cfg, 10*time.Second, stderr)
			if err != nil {
				return err
			}
			defer cancel()
			defer etcd.Close()
			res, err := galera.Undrain(ctx, etcd.Client.Client, prefix, a[0])
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if !res.Changed {
				_, err = fmt.Fprintf(stdout, "node %s was not drained under %s: nothing to undo\n", a[0], node.TrimPrefix(prefix))
				return err
			}
			_, err = fmt.Fprintf(stdout, "node %s undrained (was drained %s): it takes connections again when its health allows\n", a[0], res.Drain.String())
			return err
		},
	}
	config.AddGroups(cmd.Flags(), nil, adminGroups...)
	return cmd
}
