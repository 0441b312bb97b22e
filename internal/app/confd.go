package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/internal/confd"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/watch"
)

// ConfdOptions tune the confd-compatible loop.
type ConfdOptions struct {
	// Wait is the quiescence after a change before a run (0: at once).
	Wait time.Duration
	// Interval re-runs every resource on the newest snapshot this often
	// (0: never), as confd's polling mode does: templates edited on disk
	// and files changed by hand are brought back in line.
	Interval time.Duration
	// Once: one run on the first snapshot, then return its error.
	Once   bool
	Logger *slog.Logger
}

// ConfdTarget runs a confd directory on the loop: every snapshot is one
// confd run over every template resource (each rendered and applied on
// its own, reloads of a shared reload_cmd coalesced), on the reload lane;
// confd's -interval is the loop's resync.
type ConfdTarget struct {
	set   *confd.Set
	ap    *confd.Applier
	log   *slog.Logger
	lanes *Lanes

	latest *watch.Snapshot
	job    *Job
	err    error
}

// NewConfdTarget returns the target for set, applied with ap.
func NewConfdTarget(set *confd.Set, ap *confd.Applier, logger *slog.Logger) *ConfdTarget {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &ConfdTarget{set: set, ap: ap, log: logger}
}

// Start is Target.Start.
func (c *ConfdTarget) Start(_ context.Context, l *Lanes) error {
	c.lanes = l
	return nil
}

// Snapshot is Target.Start: a run once the changes settle (--wait).
func (c *ConfdTarget) Snapshot(_ context.Context, s watch.Snapshot) {
	c.latest = &s
	c.submit(true)
}

// Resync re-runs every resource on the newest snapshot (confd -interval).
func (c *ConfdTarget) Resync(context.Context) {
	if c.latest != nil && c.job == nil {
		c.submit(false)
	}
}

// Result is the first run's error (-onetime).
func (c *ConfdTarget) Result() error { return c.err }

func (c *ConfdTarget) submit(wait bool) {
	if c.job != nil {
		if !c.lanes.Running(c.job) {
			c.lanes.Submit(c.job)
			return
		}
	}
	j := &Job{Name: "confd run", Wait: wait}
	c.job = j
	var snap watch.Snapshot
	j.Run = func(ctx context.Context) error {
		if err := c.lanes.Call(ctx, func() { snap = *c.latest }); err != nil {
			return err
		}
		start := time.Now()
		results, err := c.set.Process(ctx, c.ap, snap.Map())
		for _, r := range results {
			switch {
			case r.Err != nil:
			case r.Changed:
				c.log.Info("resource updated", "resource", r.Name, "dest", r.Dest, "rev", snap.Revision)
			default:
				c.log.Debug("resource in sync", "resource", r.Name, "dest", r.Dest, "rev", snap.Revision)
			}
		}
		if err != nil && ctx.Err() != nil {
			c.log.Info("confd run superseded by a newer change", "rev", snap.Revision)
		} else if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				c.log.Error("confd run failed, destination left as it was", "rev", snap.Revision, "err", line)
			}
		}
		c.log.Debug("confd run done", "rev", snap.Revision, "duration", time.Since(start).Round(time.Microsecond))
		return err
	}
	j.Done = func(err error) {
		if c.job == j {
			c.job = nil
		}
		c.err = err
	}
	c.lanes.Submit(j)
}

// RunConfd is the loop for a confd directory (see ConfdTarget).
func RunConfd(ctx context.Context, set *confd.Set, ap *confd.Applier, src Source, opts ConfdOptions) error {
	t := NewConfdTarget(set, ap, opts.Logger)
	return NewLoop(src, t, LoopOptions{
		WaitMin: opts.Wait, WaitMax: 4 * opts.Wait,
		Resync: opts.Interval, Once: opts.Once, Logger: opts.Logger,
	}).Run(ctx)
}

// confdEtcd is confd's etcd settings as haconfd's (one etcd client for
// every command).
func confdEtcd(g confd.Global) config.Etcd {
	user, pass := g.EtcdAuth()
	return config.Etcd{
		EtcdEndpoints: g.Nodes, EtcdDialTimeout: 5 * time.Second,
		EtcdUsername: user, EtcdPassword: pass,
		EtcdCA: g.ClientCaKeys, EtcdCert: g.ClientCert, EtcdKey: g.ClientKey,
	}
}

// Confd is `haconfd confd` (confd's own flags, translated into haconfd's
// settings): etcd through the same client as every command, then
// RunConfdDir.
func Confd(ctx context.Context, g confd.Global, logger *slog.Logger) error {
	if err := g.ResolveNodes(net.LookupSRV); err != nil {
		return configErr(err)
	}
	if len(g.Nodes) == 0 {
		return configErr(errors.New("-node: no etcd endpoints"))
	}
	cfg := config.Defaults()
	cfg.Etcd = confdEtcd(g)
	etcd, err := ConnectEtcd(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer etcd.Close()
	return RunConfdDir(ctx, g, etcd.Client.Client, 0, logger)
}

// ConfdGlobal is the confd setting for `haconfd run --confdir`: the
// directory's confd.toml when there is one (its prefix, noop, ...), with
// haconfd's own flags for etcd, --once and --dry-run.
func ConfdGlobal(cfg config.Config) (confd.Global, error) {
	g := confd.DefaultGlobal()
	if file := filepath.Join(cfg.Confdir, "confd.toml"); fileExists(file) {
		var err error
		if g, err = confd.LoadGlobal(file); err != nil {
			return g, configErr(err)
		}
	}
	g.ConfDir = cfg.Confdir
	g.Backend = "etcdv3"
	g.Nodes = cfg.EtcdEndpoints
	g.Watch = true
	g.OneTime = g.OneTime || cfg.Once
	g.Noop = g.Noop || cfg.DryRun
	return g, nil
}

// RunConfdDir loads the confd directory of g, watches the keys its
// resources use, and runs every resource on each change.
func RunConfdDir(ctx context.Context, g confd.Global, cli *clientv3.Client, wait time.Duration, logger *slog.Logger) error {
	set, err := confd.Load(logger.With("component", "confd"), g)
	if err != nil {
		return configErr(err)
	}
	if len(set.Resources) == 0 {
		return configErr(fmt.Errorf("confdir %s: no template resources in %s", g.ConfDir, g.ConfigDir()))
	}
	src, err := watch.NewEtcdSource(cli, watch.Options{Prefixes: set.WatchPrefixes(), Logger: logger.With("component", "watch")})
	if err != nil {
		return configErr(err)
	}
	opts := ConfdOptions{Wait: wait, Once: g.OneTime, Logger: logger.With("component", "confd")}
	if !g.Watch && !g.OneTime && g.Interval > 0 {
		// confd polls every -interval seconds; haconfd watches anyway (a
		// change applies at once) and keeps the interval as a resync.
		opts.Interval = time.Duration(g.Interval) * time.Second
		logger.Info("watching etcd; -interval kept as a periodic resync", "interval", opts.Interval)
	}
	if opts.Once {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, onceTimeout)
		defer cancel()
	}
	logger.Info("haconfd confd running", "confdir", g.ConfDir, "resources", len(set.Resources),
		"prefixes", set.WatchPrefixes(), "onetime", g.OneTime, "noop", g.Noop)
	return RunConfd(ctx, set, confd.NewApplier(logger.With("component", "confd"), g), src, opts)
}

// onceTimeout bounds a one-shot run waiting for etcd.
const onceTimeout = 60 * time.Second

// ErrNoSnapshot is returned by a one-shot run that never got a snapshot.
var ErrNoSnapshot = errors.New("no snapshot from etcd (unreachable?)")

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
