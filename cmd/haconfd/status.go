package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/haconfd/haconfd/internal/app"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/internal/fleet"
)

// statusTimeout bounds `haconfd status` against an unreachable etcd.
const statusTimeout = 20 * time.Second

// statusGroups are the settings of `haconfd status` (--self reads
// haconfd's /status on --listen and HAProxy's --runtime-socket).
var statusGroups = []config.Group{config.GroupEtcd, config.GroupWatch, config.GroupFleet, config.GroupLog, config.GroupServe, config.GroupSocket}

func newStatus(stdout, stderr io.Writer) *cobra.Command {
	var (
		format       string
		validateOnly bool
		self         selfFlags
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every haconfd instance of the fleet: converged, lagging, failing or gone",
		Long: `status reads the statuses the instances publish under --status-prefix and
compares each instance's applied revision with the latest change (put or
delete) under its watched prefixes:

  converged  applied the latest change, last apply ok
  lagging    behind it (by how many revisions, since when), or held back
             (a guard, a stopped reload wave, waiting for a reload slot)
  failing    its last render or apply failed (the error)
  gone       its lease expired without a clean stop (last update)

Exit status: 0 when every instance is converged, 1 otherwise, 2 on error.` + selfHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "table" && format != "json" {
				return &exitError{code: 2, err: fmt.Errorf("--format: %q must be table or json", format)}
			}
			if err := checkSelfFlags(cmd, self); err != nil {
				return err
			}
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			if self.self && validateOnly {
				_, err := fmt.Fprintf(stdout, "config OK: self check of haconfd on %s and HAProxy on %s\n", cfg.Listen, cfg.RuntimeSocket)
				return err
			}
			if self.self {
				return runSelf(cmd, cfg, self, format, stdout)
			}
			if cfg.StatusPrefix == "" {
				return &exitError{code: 2, err: fmt.Errorf("--status-prefix: must not be empty for status")}
			}
			if validateOnly {
				_, err := fmt.Fprintf(stdout, "config OK: fleet under %s\n", cfg.StatusPrefix)
				return err
			}
			logger := newLogger(cfg, stderr)
			ctx, cancel := context.WithTimeout(cmd.Context(), statusTimeout)
			defer cancel()
			etcd, err := app.ConnectEtcd(ctx, cfg, logger)
			if err != nil {
				return classify(err)
			}
			defer etcd.Close()
			f, err := fleet.ReadAll(ctx, etcd.Client.Client, cfg.StatusPrefix, cfg.Prefixes)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if format == "json" {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(f); err != nil {
					return err
				}
			} else if err := printFleet(stdout, f); err != nil {
				return err
			}
			if len(f.Instances) == 0 || f.Counts()[fleet.Converged] != len(f.Instances) {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	config.AddGroups(cmd.Flags(), nil, statusGroups...)
	cmd.Flags().StringVar(&format, "format", "table", "output: table or json")
	cmd.Flags().BoolVar(&validateOnly, "validate-config", false, "check flags, environment and config file, print what is wrong, exit 0 (OK) or 2; connects to nothing")
	addSelfFlags(cmd, &self)
	return cmd
}

// printFleet prints one line per instance, then a summary.
func printFleet(w io.Writer, f fleet.Fleet) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tSTATE\tAPPLIED\tLATEST\tMETHOD\tLAST APPLY\tHAPROXY\tPID\tDETAIL")
	for _, in := range f.Instances {
		last := "-"
		if !in.LastApply.IsZero() {
			last = fmt.Sprintf("%s (%s ago)", in.LastApply.Format(time.RFC3339), f.Read.Sub(in.LastApply).Round(time.Second))
		}
		pid := "-"
		if in.HAProxyPID > 0 {
			pid = strconv.Itoa(in.HAProxyPID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", in.Instance, in.State, in.AppliedRevision, in.Latest,
			dash(in.Method), last, dash(in.HAProxyVersion), pid, dash(oneLineText(in.Detail)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	c := f.Counts()
	_, err := fmt.Fprintf(w, "%d instances: %d converged, %d lagging, %d failing, %d gone (etcd revision %d)\n",
		len(f.Instances), c[fleet.Converged], c[fleet.Lagging], c[fleet.Failing], c[fleet.Gone], f.Revision)
	for _, n := range f.Notes {
		if err == nil {
			_, err = fmt.Fprintf(w, "note: %s\n", n)
		}
	}
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLineText(s string) string { return strings.Join(strings.Fields(s), " ") }
