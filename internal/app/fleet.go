package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/internal/fleet"
	"github.com/haconfd/haconfd/render"
)

// fleetSettle is how long the fleet status waits after an event before it
// is published (events of one change arrive within it).
const fleetSettle = 50 * time.Millisecond

// fleetGlue joins the loop and internal/fleet: it publishes the instance
// status whenever the loop reports an event, and gives the reload lane
// its fleet-wide reload slot (ReloadSlot).
type fleetGlue struct {
	cfg config.Config
	log *slog.Logger
	pub *fleet.Publisher
	stg *fleet.Stagger // nil: --max-concurrent-reloads 0

	mu   sync.Mutex
	held string // why the last reload attempt was held by the fleet (wave stopped)
}

// newFleetGlue returns nil when publishing is off (--status-prefix "",
// --once, --dry-run).
func newFleetGlue(cfg config.Config, logger *slog.Logger) *fleetGlue {
	if cfg.StatusPrefix == "" || cfg.Once || cfg.DryRun {
		return nil
	}
	return &fleetGlue{cfg: cfg, log: logger.With("component", "fleet")}
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

// slot returns the fleet's reload coordination, nil when off.
func (g *fleetGlue) slot() ReloadSlot {
	if g == nil || g.stg == nil {
		return nil
	}
	return g
}

// Acquire is ReloadSlot: the wave check and, for a reload, one of
// --max-concurrent-reloads etcd locks. A refusal wraps
// haproxy.ErrReloadHeld.
func (g *fleetGlue) Acquire(ctx context.Context, action haproxy.Action, cfg []byte, in render.Input) (func(bool, error), error) {
	rel, err := g.stg.Acquire(ctx, fleet.Attempt{
		Action:       string(action),
		Change:       fleet.Digest(in.Map()),
		ConfigSHA256: fleet.SHA256(cfg),
		Coordinate:   action == haproxy.ActionReload,
	})
	g.mu.Lock()
	g.held = ""
	if err != nil && ctx.Err() == nil {
		g.held = err.Error()
	}
	g.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", haproxy.ErrReloadHeld, err)
	}
	return rel, nil
}

// run publishes until ctx ends: the publisher's lease, and the loop's
// status after every event.
func (g *fleetGlue) run(ctx context.Context, board *Board, bus *Bus) {
	events, unsubscribe := bus.Subscribe(64)
	defer unsubscribe()
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.pub.Run(ctx) })
	defer wg.Wait()
	// A slow tick only refreshes "behind since" for an instance that stays
	// behind without events.
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	var last fleet.Report
	var behindSince time.Time
	first := true
	for {
		s := board.Get()
		switch {
		case s.Revision <= s.Applied:
			behindSince = time.Time{}
		case behindSince.IsZero():
			behindSince = time.Now()
		}
		g.mu.Lock()
		waveHeld := g.held
		g.mu.Unlock()
		next := fleet.Report{
			Prefixes:        g.cfg.Prefixes,
			AppliedRevision: s.Applied,
			SeenRevision:    s.Revision,
			BehindSince:     behindSince,
			ConfigSHA256:    s.ConfigSHA256,
			LastError:       s.LastError,
			Held:            s.Held,
			Method:          s.LastAction,
			LastApply:       s.LastApply,
			HAProxyVersion:  s.HAProxy.Version,
			HAProxyPID:      s.HAProxy.PID,
		}
		switch {
		case waveHeld != "" && s.Applied < s.Revision:
			next.LastResult, next.Held = fleet.ResultHeld, waveHeld
		case s.Held != "" && s.Applied < s.Revision:
			next.LastResult = fleet.ResultHeld
		case s.LastError != "":
			next.LastResult = fleet.ResultError
		case s.Applies > 0 || s.Applied > 0:
			next.LastResult = fleet.ResultOK
		}
		if first || !sameLoopFields(last, next) {
			first = false
			last = next
			if err := g.pub.Update(ctx, func(st *fleet.Report) { copyLoopFields(st, next) }); err != nil && ctx.Err() == nil {
				g.log.Debug("publish status", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-events:
			// Coalesce a burst of events into one update, a little later:
			// the status write must not compete with the fast lane.
			settle := time.NewTimer(fleetSettle)
			for waiting := true; waiting; {
				select {
				case <-events:
				case <-settle.C:
					waiting = false
				case <-ctx.Done():
					settle.Stop()
					return
				}
			}
		}
	}
}

func copyLoopFields(st *fleet.Report, n fleet.Report) {
	st.Prefixes = n.Prefixes
	st.AppliedRevision, st.SeenRevision, st.BehindSince = n.AppliedRevision, n.SeenRevision, n.BehindSince
	st.ConfigSHA256, st.LastResult, st.LastError, st.Held = n.ConfigSHA256, n.LastResult, n.LastError, n.Held
	st.Method, st.LastApply = n.Method, n.LastApply
	st.HAProxyVersion, st.HAProxyPID = n.HAProxyVersion, n.HAProxyPID
}

func sameLoopFields(a, b fleet.Report) bool {
	return a.AppliedRevision == b.AppliedRevision && a.SeenRevision == b.SeenRevision && a.BehindSince.Equal(b.BehindSince) &&
		a.ConfigSHA256 == b.ConfigSHA256 && a.LastResult == b.LastResult && a.LastError == b.LastError && a.Held == b.Held &&
		a.Method == b.Method && a.LastApply.Equal(b.LastApply) && a.HAProxyVersion == b.HAProxyVersion && a.HAProxyPID == b.HAProxyPID
}
