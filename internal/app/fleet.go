package app

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/internal/fleet"
	"github.com/haconfd/haconfd/render"
)

// fleetPoll is how often the loop's status is looked at for publishing.
const fleetPoll = 100 * time.Millisecond

// fleetGlue joins the loop, the HAProxy manager and internal/fleet: it
// publishes the instance status whenever the loop's status changes, and
// coordinates starts and reloads (haproxy.Options.BeforeReload).
type fleetGlue struct {
	cfg config.Config
	log *slog.Logger
	pub *fleet.Publisher
	stg *fleet.Stagger // nil: --max-concurrent-reloads 0

	input atomic.Pointer[render.Input] // the watched keys of the render being applied

	mu      sync.Mutex
	sha     string // of the live config
	method  string
	pid     int
	held    string // why the last apply was held (wave stopped)
	version string // haproxy -v
	poke    chan struct{}
}

// newFleetGlue returns nil when publishing is off (--status-prefix "",
// --once, --dry-run).
func newFleetGlue(cfg config.Config, logger *slog.Logger) *fleetGlue {
	if cfg.StatusPrefix == "" || cfg.Once || cfg.DryRun {
		return nil
	}
	return &fleetGlue{cfg: cfg, log: logger.With("component", "fleet"), poke: make(chan struct{}, 1)}
}

// instanceName is --instance, or the host name.
func instanceName(cfg config.Config) (string, error) {
	if cfg.Instance != "" {
		return cfg.Instance, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", configErr(errors.New("--instance: not set and the host name is unknown: " + err.Error()))
	}
	if err := fleet.CheckInstance(h); err != nil {
		return "", configErr(errors.New("--instance: the host name cannot name this instance, set --instance: " + err.Error()))
	}
	return h, nil
}

// attach creates the publisher and stagger on cli.
func (g *fleetGlue) attach(cli *clientv3.Client) error {
	name, err := instanceName(g.cfg)
	if err != nil {
		return err
	}
	pub, err := fleet.NewPublisher(cli, fleet.Options{Prefix: g.cfg.StatusPrefix, Instance: name, TTL: g.cfg.StatusTTL, Logger: g.log})
	if err != nil {
		return configErr(err)
	}
	g.pub = pub
	if g.cfg.MaxConcurrentReloads > 0 {
		stg, err := fleet.NewStagger(pub, fleet.StaggerOptions{Slots: g.cfg.MaxConcurrentReloads, Logger: g.log})
		if err != nil {
			return configErr(err)
		}
		g.stg = stg
	}
	return nil
}

// beforeReload is haproxy.Options.BeforeReload.
func (g *fleetGlue) beforeReload(ctx context.Context, action haproxy.Action, cfg []byte) (func(bool, error), error) {
	if g.stg == nil {
		return nil, nil
	}
	change := ""
	if in := g.input.Load(); in != nil {
		change = fleet.Digest(in.Map())
	}
	rel, err := g.stg.Acquire(ctx, fleet.Attempt{
		Action:       string(action),
		Change:       change,
		ConfigSHA256: fleet.SHA256(cfg),
		Coordinate:   action == haproxy.ActionReload,
	})
	if err != nil {
		return nil, err
	}
	return rel, nil
}

// renderer wraps r to remember the input of each render (the change a
// following reload applies).
func (g *fleetGlue) renderer(r Renderer) Renderer {
	if g == nil {
		return r
	}
	return inputRenderer{r, g}
}

type inputRenderer struct {
	Renderer
	g *fleetGlue
}

func (r inputRenderer) Render(in render.Input) (render.Output, error) {
	r.g.input.Store(&in)
	return r.Renderer.Render(in)
}

// applier wraps a to record what each apply did.
func (g *fleetGlue) applier(a Applier) Applier {
	if g == nil {
		return a
	}
	return recordingApplier{a, g}
}

type recordingApplier struct {
	Applier
	g *fleetGlue
}

func (a recordingApplier) Apply(ctx context.Context, cfg []byte) (haproxy.Result, error) {
	res, err := a.Applier.Apply(ctx, cfg)
	g := a.g
	g.mu.Lock()
	switch {
	case err == nil:
		g.sha, g.held = fleet.SHA256(cfg), ""
		if res.Action != haproxy.ActionNone {
			g.method = string(res.Action)
		}
	case errors.Is(err, haproxy.ErrReloadHeld):
		g.held = err.Error()
		if we := new(fleet.WaveStoppedError); errors.As(err, &we) {
			g.held = we.Error()
		}
	default:
		g.held = ""
	}
	if res.PID > 0 {
		g.pid = res.PID
	}
	g.mu.Unlock()
	select {
	case g.poke <- struct{}{}:
	default:
	}
	return res, err
}

// run publishes until ctx ends: the publisher's lease, and the loop's
// status whenever it changes.
func (g *fleetGlue) run(ctx context.Context, loop *App) {
	g.version = haproxyVersion(ctx, g.cfg.HAProxyBin)
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.pub.Run(ctx) })
	defer wg.Wait()
	t := time.NewTicker(fleetPoll)
	defer t.Stop()
	var last fleet.Status
	var behindSince time.Time
	first := true
	for {
		s := loop.Status()
		switch {
		case s.Revision <= s.Applied:
			behindSince = time.Time{}
		case behindSince.IsZero():
			behindSince = time.Now()
		}
		g.mu.Lock()
		next := fleet.Status{
			Prefixes:        g.cfg.Prefixes,
			AppliedRevision: s.Applied,
			SeenRevision:    s.Revision,
			BehindSince:     behindSince,
			ConfigSHA256:    g.sha,
			LastError:       s.LastError,
			Held:            s.Held,
			Method:          g.method,
			LastApply:       s.LastApply,
			HAProxyVersion:  g.version,
			HAProxyPID:      g.pid,
		}
		waveHeld := g.held
		g.mu.Unlock()
		switch {
		case waveHeld != "":
			next.LastResult, next.Held = fleet.ResultHeld, waveHeld
		case s.Held != "":
			next.LastResult = fleet.ResultHeld
		case s.LastError != "":
			next.LastResult = fleet.ResultError
		case s.Applies > 0 || s.Applied > 0:
			next.LastResult = fleet.ResultOK
		}
		if first || !sameLoopFields(last, next) {
			first = false
			last = next
			if err := g.pub.Update(ctx, func(st *fleet.Status) { copyLoopFields(st, next) }); err != nil && ctx.Err() == nil {
				g.log.Debug("publish status", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.poke:
		}
	}
}

func copyLoopFields(st *fleet.Status, n fleet.Status) {
	st.Prefixes = n.Prefixes
	st.AppliedRevision, st.SeenRevision, st.BehindSince = n.AppliedRevision, n.SeenRevision, n.BehindSince
	st.ConfigSHA256, st.LastResult, st.LastError, st.Held = n.ConfigSHA256, n.LastResult, n.LastError, n.Held
	st.Method, st.LastApply = n.Method, n.LastApply
	st.HAProxyVersion, st.HAProxyPID = n.HAProxyVersion, n.HAProxyPID
}

func sameLoopFields(a, b fleet.Status) bool {
	return a.AppliedRevision == b.AppliedRevision && a.SeenRevision == b.SeenRevision && a.BehindSince.Equal(b.BehindSince) &&
		a.ConfigSHA256 == b.ConfigSHA256 && a.LastResult == b.LastResult && a.LastError == b.LastError && a.Held == b.Held &&
		a.Method == b.Method && a.LastApply.Equal(b.LastApply) && a.HAProxyVersion == b.HAProxyVersion && a.HAProxyPID == b.HAProxyPID
}

// haproxyVersion is the version `haproxy -v` prints ("" when it cannot).
func haproxyVersion(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-v").Output()
	if err != nil {
		return ""
	}
	// "HAProxy version 2.6.12-1 2023/03/20 - https://haproxy.org/"
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "version" {
			return f[i+1]
		}
	}
	return ""
}
