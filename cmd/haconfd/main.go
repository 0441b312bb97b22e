// Command haconfd keeps a running HAProxy in step with the database nodes
// registered in etcd.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/app"
	"github.com/haconfd/haconfd/internal/confd"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/render"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries the process exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

func execute(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
		err = ee.err
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "haconfd: %s\n", line)
		}
	}
	return code
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "haconfd",
		Short: "Keep HAProxy in step with Galera nodes registered in etcd",
		Long: `haconfd watches etcd (default prefix /components/galera), renders HAProxy
listen sections from Go templates, validates them with haproxy -c and applies
them with a hitless reload, rolling back when a new process fails to start.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: 2, err: err}
	})
	root.AddCommand(newRun(stdout, stderr), newRender(stdout, stderr), newConfd(stdout, stderr),
		newRegister(stdout, stderr), newCheck(stdout, stderr), newStatus(stdout, stderr), newVersion(stdout),
		newNotify(stdout, stderr), newDrain(stdout, stderr), newUndrain(stdout, stderr))
	return root
}

// load reads the Config from the command's flags, the environment and
// --config; a bad setting exits 2.
func load(cmd *cobra.Command) (config.Config, error) {
	cfg, err := config.Load(cmd.Flags(), os.Environ())
	if err != nil {
		return cfg, &exitError{code: 2, err: err}
	}
	return cfg, nil
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	switch strings.ToLower(cfg.LogLevel) {
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// classify turns an error into an exit status: 2 for what the operator
// gave wrong, 1 for everything else.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var te *render.TemplateError
	if errors.Is(err, app.ErrConfig) || errors.As(err, &te) {
		return &exitError{code: 2, err: err}
	}
	return &exitError{code: 1, err: err}
}

func newRun(stdout, stderr io.Writer) *cobra.Command {
	var validateOnly bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Watch etcd and keep HAProxy's config live and in step (the daemon)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			logger := newLogger(cfg, stderr)
			if validateOnly {
				if err := app.ValidateConfig(cfg, logger); err != nil {
					return &exitError{code: 2, err: err}
				}
				_, err := fmt.Fprintf(stdout, "config OK: output %s, prefixes %v\n", cfg.Output, cfg.Prefixes)
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			out, _ := stdout.(*os.File)
			if out == nil {
				out = os.Stdout
			}
			reload := func() (config.Config, error) { return config.Load(cmd.Flags(), os.Environ()) }
			return classify(app.Run(ctx, cfg, logger, out, reload))
		},
	}
	config.AddFlags(cmd.Flags())
	cmd.Flags().BoolVar(&validateOnly, "validate-config", false, "check flags, environment, config file, templates and paths, print what is wrong, exit 0 (OK) or 2; starts nothing")
	return cmd
}

func newRender(stdout, stderr io.Writer) *cobra.Command {
	var (
		diff     bool
		plan     bool
		format   string
		fromFile string
		validate bool
	)
	cmd := &cobra.Command{
		Use:   "render",
		Short: "Dry run: render the config from etcd or a snapshot file, validate it, print it or a diff",
		Long: `render reads the nodes once (from etcd, or from --from-file), renders the
config, validates it with haproxy -c, and prints it. With --diff it prints a
unified diff against the live --output file instead, and exits like diff(1):
0 unchanged, 1 changed, 2 error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			if format != "text" && format != "json" {
				return &exitError{code: 2, err: fmt.Errorf("--format: %q must be text or json", format)}
			}
			logger := newLogger(cfg, stderr)
			if validate && !cmd.Flags().Changed("validate") && !haproxyFound(cfg.HAProxyBin) {
				logger.Warn("haproxy binary not found, config not validated", "haproxy-bin", cfg.HAProxyBin)
				validate = false
			}
			if cfg.Confdir != "" {
				return renderConfd(cmd, cfg, fromFile, diff, stdout, logger)
			}
			rev, err := app.RenderReview(cmd.Context(), cfg, fromFile, validate, diff, logger)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if plan {
				return printPlan(stdout, rev, format)
			}
			if !diff {
				_, err := stdout.Write(rev.Desired)
				return err
			}
			if !rev.Changed {
				return nil
			}
			if _, err := io.WriteString(stdout, rev.Diff); err != nil {
				return err
			}
			return &exitError{code: 1}
		},
	}
	config.AddFlags(cmd.Flags())
	cmd.Flags().BoolVar(&diff, "diff", false, "print a unified diff against --output; exit 0 unchanged, 1 changed, 2 error")
	cmd.Flags().BoolVar(&plan, "plan", false, "print what applying would do: the runtime API commands, or reload and why; exit 0 nothing to do, 1 changes, 2 error")
	cmd.Flags().StringVar(&format, "format", "text", "output of --plan: text or json")
	cmd.Flags().StringVar(&fromFile, "from-file", "", "render from a saved snapshot (JSON) instead of etcd")
	cmd.Flags().BoolVar(&validate, "validate", true, "validate the rendered config with haproxy -c (skipped with a warning when the binary is missing)")
	return cmd
}

func newVersion(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print haconfd's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(stdout, "haconfd %s\n", version)
			return err
		},
	}
}

func haproxyFound(bin string) bool {
	_, err := exec.LookPath(bin)
	return err == nil
}

// renderConfd is `render --confdir`: every resource rendered, printed (or
// diffed against its dest), nothing written, no command run.
func renderConfd(cmd *cobra.Command, cfg config.Config, fromFile string, diff bool, stdout io.Writer, logger *slog.Logger) error {
	reviews, err := app.RenderConfdReview(cmd.Context(), cfg, fromFile, logger)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	changed := false
	for _, r := range reviews {
		changed = changed || r.Changed
		if diff {
			if r.Changed {
				if _, err := io.WriteString(stdout, r.Diff); err != nil {
					return err
				}
			}
			continue
		}
		if _, err := fmt.Fprintf(stdout, "# resource %s -> %s\n%s", r.Name, r.Dest, r.Rendered); err != nil {
			return err
		}
	}
	if diff && changed {
		return &exitError{code: 1}
	}
	return nil
}

func newConfd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "confd [confd flags]",
		Short: "Run an existing confd setup unchanged, with confd's own flags (-backend etcdv3 -node ... -confdir ...)",
		Long: `confd takes confd's command-line flags and confd.toml, so a unit or
container that ran "confd ..." can run "haconfd confd ..." with the same
arguments: conf.d/*.toml template resources, templates, check_cmd and
reload_cmd, -onetime, -watch, -interval, -noop, -sync-only,
-keep-stage-file. Only the etcd backends are supported (etcd is read
through the v3 API, as confd 0.16 does). "haconfd confd -h" lists the flags.`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			g, err := confd.ParseFlags(args)
			if errors.Is(err, flag.ErrHelp) {
				confd.Usage(stdout)
				return nil
			}
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if g.PrintVersion {
				_, err := fmt.Fprintf(stdout, "haconfd %s (confd-compatible)\n", version)
				return err
			}
			level, err := g.SlogLevel()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return classify(app.Confd(ctx, g, logger))
		},
	}
}

// printPlan prints what applying the rendered config would do.
func printPlan(w io.Writer, rev app.Review, format string) error {
	var p haproxy.Plan
	if rev.Changed {
		var err error
		if p, err = haproxy.PlanChange(rev.Live, rev.Desired, rev.Caps); err != nil {
			return &exitError{code: 2, err: fmt.Errorf("plan: %w", err)}
		}
	}
	nodes := app.Decisions(rev.Output)
	nodeLines := ""
	for _, d := range nodes {
		nodeLines += d.String() + "\n"
	}
	if !rev.Changed {
		if format == "json" {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(struct {
				Changed bool               `json:"changed"`
				Nodes   []app.NodeDecision `json:"nodes,omitempty"`
			}{false, nodes})
		}
		_, err := io.WriteString(w, "nothing to do: the live config is the rendered one\n"+nodeLines)
		return err
	}
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Changed  bool  `json:"changed"`
			Revision int64 `json:"revision"`
			haproxy.Plan
			Held  []app.HeldServer   `json:"held,omitempty"`
			Nodes []app.NodeDecision `json:"nodes,omitempty"`
		}{true, rev.Revision, p, rev.Held, nodes}); err != nil {
			return err
		}
	} else {
		text := p.String()
		for _, h := range rev.Held {
			text += fmt.Sprintf("held: %s/%s stays configured (%s: %s)\n", h.Section, h.Server, h.Guard, h.Reason)
		}
		if _, err := io.WriteString(w, text+nodeLines+"\n"); err != nil {
			return err
		}
	}
	return &exitError{code: 1}
}
