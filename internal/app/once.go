package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/pmezard/go-difflib/difflib"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/confd"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/render"
	"github.com/haconfd/haconfd/watch"
)

// Review is the result of a dry-run render (`haconfd render`).
type Review struct {
	Output render.Output
	// Desired is Output.Config with the servers the guards would keep
	// (Held) against the live file: what haconfd would make live.
	Desired  []byte
	Held     []HeldServer
	Revision int64
	Live     []byte // the current --output file, nil if absent
	Changed  bool   // Output.Config differs from Live
	Diff     string // unified diff Live → rendered
	// Caps are those of --haproxy-bin (2.6's when it cannot be run):
	// what a plan may do through the runtime API.
	Caps haproxy.Caps
}

// RenderReview renders once, from fromFile (a saved snapshot) or from a
// single consistent read of etcd, validates the result with `haproxy -c`
// when validate is set, and compares it with the live --output file; the
// unified diff (Review.Diff) is computed only when diff is set: at 10,000
// servers it costs more time and memory than the render.
func RenderReview(ctx context.Context, cfg config.Config, fromFile string, validate, diff bool, logger *slog.Logger) (Review, error) {
	rend, err := NewRenderer(cfg)
	if err != nil {
		return Review{}, err
	}
	var snap watch.Snapshot
	if fromFile != "" {
		snap, err = watch.ReadSnapshotFile(fromFile)
		if err != nil {
			return Review{}, configErr(fmt.Errorf("--from-file: %w", err))
		}
	} else {
		snap, err = readEtcdOnce(ctx, cfg, logger)
		if err != nil {
			return Review{}, err
		}
	}
	in := RenderInput(snap)
	out, err := rend.Render(in)
	if err != nil {
		return Review{}, err
	}
	for _, p := range out.Problems {
		if p.Drained {
			logger.Warn("node signal unreadable, node out of rotation", "key", p.Key, "reason", p.Reason)
			continue
		}
		logger.Warn("node skipped", "key", p.Key, "reason", p.Reason)
	}
	for _, n := range out.Notes {
		logger.Warn(n)
	}
	if validate {
		if err := validateTemp(ctx, cfg.HAProxyBin, out.Config, logger); err != nil {
			return Review{}, err
		}
	}
	r := Review{Output: out, Desired: out.Config, Revision: snap.Revision}
	if v, err := haproxy.BinaryVersion(ctx, cfg.HAProxyBin); err == nil {
		r.Caps = v.Caps()
	}
	live, err := os.ReadFile(cfg.Output)
	switch {
	case err == nil:
		r.Live = live
	case errors.Is(err, os.ErrNotExist):
	default:
		return Review{}, fmt.Errorf("--output: %w", err)
	}
	if r.Live != nil {
		r.Desired, r.Held = guardAgainst(cfg, r.Live, out.Config)
	}
	r.Changed = !bytes.Equal(live, r.Desired)
	if r.Changed && diff {
		r.Diff, err = unifiedDiff(live, r.Desired, cfg.Output, fmt.Sprintf("%s (rendered at revision %d)", cfg.Output, snap.Revision))
		if err != nil {
			return Review{}, err
		}
	}
	return r, nil
}

// guardAgainst applies the per-server guards of cfg to rendered, as if
// live were what HAProxy runs now (no earlier removals in the window):
// what would be made live, and the servers that would be held.
func guardAgainst(cfg config.Config, live, rendered []byte) ([]byte, []HeldServer) {
	lr, err1 := haproxy.ServerLines(rendered)
	ll, err2 := haproxy.ServerLines(live)
	if err1 != nil || err2 != nil {
		return rendered, nil
	}
	g := newGuardBook(GuardOptions{MinServers: cfg.MinServers, MaxRemove: cfg.MaxRemove, Hold: cfg.GuardHold, Force: cfg.Force})
	res := g.decide(time.Now(), lr, ll)
	return haproxy.InsertServers(rendered, res.Extra), res.Held
}

// validateTemp runs `haproxy -c` on cfg written to a private temp dir.
func validateTemp(ctx context.Context, bin string, cfg []byte, logger *slog.Logger) error {
	dir, err := os.MkdirTemp("", "haconfd-render-")
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	warnings, err := haproxy.Validate(ctx, bin, path)
	for _, w := range warnings {
		logger.Warn("haproxy -c warns about the rendered config", "warning", w.String())
	}
	return err
}

// readEtcdOnce takes one consistent snapshot of the prefixes.
func readEtcdOnce(ctx context.Context, cfg config.Config, logger *slog.Logger) (watch.Snapshot, error) {
	etcd, err := ConnectEtcd(ctx, cfg, logger)
	if err != nil {
		return watch.Snapshot{}, err
	}
	defer etcd.Close()
	w, err := NewWatcher(etcd, cfg, logger)
	if err != nil {
		return watch.Snapshot{}, err
	}
	wait := 2 * cfg.EtcdDialTimeout
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	out := make(chan watch.Snapshot, 1)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()
	defer func() { cancel(); <-done }()
	select {
	case s := <-out:
		return s, nil
	case <-ctx.Done():
		return watch.Snapshot{}, fmt.Errorf("etcd %v: no snapshot within %s (unreachable?)", cfg.EtcdEndpoints, wait.Round(time.Second))
	}
}

// ConfdReview is the dry run of one confd template resource.
type ConfdReview struct {
	Name, Dest string
	Rendered   []byte
	Changed    bool
	Diff       string
}

// RenderConfdReview renders every resource of cfg.Confdir once, from
// fromFile or one consistent read of etcd, and compares each with its
// destination. Nothing is written and no command is run.
func RenderConfdReview(ctx context.Context, cfg config.Config, fromFile string, logger *slog.Logger) ([]ConfdReview, error) {
	g, err := ConfdGlobal(cfg)
	if err != nil {
		return nil, err
	}
	set, err := confd.Load(logger.With("component", "confd"), g)
	if err != nil {
		return nil, configErr(err)
	}
	var snap watch.Snapshot
	if fromFile != "" {
		if snap, err = watch.ReadSnapshotFile(fromFile); err != nil {
			return nil, configErr(fmt.Errorf("--from-file: %w", err))
		}
	} else {
		c := cfg
		c.Prefixes = set.WatchPrefixes()
		if snap, err = readEtcdOnce(ctx, c, logger); err != nil {
			return nil, err
		}
	}
	jobs, err := set.Render(snap.Map())
	if err != nil {
		return nil, err
	}
	out := make([]ConfdReview, 0, len(jobs))
	for _, j := range jobs {
		r := ConfdReview{Name: j.Resource.Name, Dest: j.Resource.Dest, Rendered: j.Rendered}
		live, err := os.ReadFile(j.Resource.Dest)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: dest: %w", j.Resource.Name, err)
		}
		r.Changed = !bytes.Equal(live, j.Rendered)
		if r.Changed {
			r.Diff, err = unifiedDiff(live, j.Rendered, j.Resource.Dest, fmt.Sprintf("%s (rendered at revision %d)", j.Resource.Dest, snap.Revision))
			if err != nil {
				return nil, err
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func unifiedDiff(a, b []byte, from, to string) (string, error) {
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(a)), B: difflib.SplitLines(string(b)),
		FromFile: from, ToFile: to, Context: 3,
	})
	if err != nil {
		return "", fmt.Errorf("diff: %w", err)
	}
	return d, nil
}
