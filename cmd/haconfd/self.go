package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/internal/selfcheck"
)

// selfFlags are `haconfd status --self`'s own flags.
type selfFlags struct {
	self        bool
	haproxyOnly bool
	timeout     time.Duration
	etcdGrace   time.Duration
	lagGrace    time.Duration
}

const selfHelp = `
With --self, status looks at this host only, as keepalived's track_script:
haconfd's /status on --listen and HAProxy's stats socket (--runtime-socket),
no etcd. Exit 0 when this instance may hold a virtual IP: HAProxy answers
on its socket, haconfd answers and runs it, the last apply did
not fail, etcd is connected (or unreachable for less than --etcd-grace: the
last good config keeps serving), and the newest revision is live, held on
purpose (a guard, a stopped reload wave) or waiting less than --lag-grace
for its reload. Exit 1 otherwise, 2 on bad input. --haproxy-only checks
only HAProxy's socket (needs neither haconfd nor etcd).`

func addSelfFlags(cmd *cobra.Command, f *selfFlags) {
	fs := cmd.Flags()
	fs.BoolVar(&f.self, "self", false, "check this instance only (haconfd's /status on --listen and HAProxy's socket, no etcd): exit 0 when it may hold a virtual IP, 1 when not (for keepalived's track_script)")
	fs.BoolVar(&f.haproxyOnly, "haproxy-only", false, "with --self: check only that HAProxy answers on --runtime-socket (needs neither haconfd nor etcd)")
	fs.DurationVar(&f.timeout, "timeout", time.Second, "with --self: bound on the whole check")
	fs.DurationVar(&f.etcdGrace, "etcd-grace", 10*time.Second, "with --self: an etcd outage this short still counts as healthy (0: none)")
	fs.DurationVar(&f.lagGrace, "lag-grace", 30*time.Second, "with --self: a reload waiting this long (quiescence, a fleet reload slot) still counts as healthy")
}

// checkSelfFlags refuses --self's flags without --self and bad values.
func checkSelfFlags(cmd *cobra.Command, f selfFlags) error {
	if !f.self {
		for _, name := range []string{"haproxy-only", "timeout", "etcd-grace", "lag-grace"} {
			if cmd.Flags().Changed(name) {
				return &exitError{code: 2, err: fmt.Errorf("--%s: only with --self", name)}
			}
		}
		return nil
	}
	switch {
	case f.timeout <= 0:
		return &exitError{code: 2, err: fmt.Errorf("--timeout %s: must be positive", f.timeout)}
	case f.etcdGrace < 0:
		return &exitError{code: 2, err: fmt.Errorf("--etcd-grace %s: must not be negative", f.etcdGrace)}
	case f.lagGrace < 0:
		return &exitError{code: 2, err: fmt.Errorf("--lag-grace %s: must not be negative", f.lagGrace)}
	}
	return nil
}

// runSelf is `haconfd status --self`.
func runSelf(cmd *cobra.Command, cfg config.Config, f selfFlags, format string, stdout io.Writer) error {
	o := selfcheck.Options{Socket: cfg.RuntimeSocket, Timeout: f.timeout, EtcdGrace: f.etcdGrace, LagGrace: f.lagGrace, HAProxyOnly: f.haproxyOnly}
	if o.Socket == "" {
		return &exitError{code: 2, err: fmt.Errorf("--runtime-socket: must not be empty for status --self")}
	}
	if !f.haproxyOnly {
		if cfg.Listen == "" {
			return &exitError{code: 2, err: fmt.Errorf("--listen: empty, but status --self reads haconfd's /status there (give haconfd run's --listen, or use --haproxy-only)")}
		}
		u, err := selfcheck.StatusURL(cfg.Listen)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("--listen: %w", err)}
		}
		o.StatusURL = u
	}
	r := selfcheck.Run(cmd.Context(), o)
	if format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else if err := printSelf(stdout, r); err != nil {
		return err
	}
	if !r.Healthy {
		return &exitError{code: 1}
	}
	return nil
}

func printSelf(w io.Writer, r selfcheck.Report) error {
	head := "healthy: this instance may hold the virtual IP"
	if !r.Healthy {
		head = "unhealthy:"
		for _, c := range r.Failed() {
			head += " " + c.Name
		}
	}
	if _, err := fmt.Fprintln(w, head); err != nil {
		return err
	}
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		if _, err := fmt.Fprintf(w, "  %s  %-8s %s\n", mark, c.Name, c.Detail); err != nil {
			return err
		}
	}
	return nil
}
