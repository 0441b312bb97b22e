// Package app is haconfd's reconcile loop: the only package that joins
// watch, render and haproxy. One goroutine owns the state: coalesce
// snapshots, wait for quiescence, render, compare with what is live,
// validate and apply, and keep the last good config live on any failure.
package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/render"
	"github.com/haconfd/haconfd/watch"
)

// Source emits consistent snapshots of the watched keys until ctx ends.
type Source interface {
	Run(ctx context.Context, out chan<- watch.Snapshot) error
}

// Renderer turns a snapshot into a config.
type Renderer interface {
	Render(in render.Input) (render.Output, error)
}

// Applier makes a config live in HAProxy.
type Applier interface {
	Apply(ctx context.Context, cfg []byte) (haproxy.Result, error)
}

// Checker validates a config without applying it (dry runs).
type Checker interface {
	Check(ctx context.Context, cfg []byte) error
}

// ErrHeld is returned when a guard holds a render back.
var ErrHeld = errors.New("render held by a guard")

// Options tune the loop.
type Options struct {
	WaitMin, WaitMax time.Duration // quiescence
	MinServers       int           // guard: fewest servers a section may have
	Once             bool          // apply one snapshot, then return
	DryRun           bool          // render and check, print to DryRunOut, apply nothing
	DryRunOut        io.Writer
	Checker          Checker       // for DryRun; may be nil
	MaxRemove        float64       // guard: largest share of a section's servers removed at once (0-1; 1 = off)
	GuardHold        time.Duration // a max-remove hold is released once the same render held this long (0 = never)
	Force            bool          // apply despite the guards
	RetryMin         time.Duration
	RetryMax         time.Duration
	Metrics          *Metrics // may be nil
	Logger           *slog.Logger
}

// Status is what the loop has done, for health output.
type Status struct {
	Revision     int64     `json:"revision"`      // newest revision seen
	Applied      int64     `json:"applied"`       // revision of the live config
	LastApply    time.Time `json:"last_apply"`    // when a config last went live
	LastAction   string    `json:"last_action"`   // start, reload, none, ...
	LastError    string    `json:"last_error"`    // empty after a success
	Held         string    `json:"held"`          // why the newest render is held back
	Servers      int       `json:"servers"`       // servers in the live config
	Applies      int       `json:"applies"`       // configs made live
	Failures     int       `json:"failures"`      // renders or applies that failed
	LastAttempt  time.Time `json:"last_attempt"`  // when the loop last rendered
	SkippedNodes []string  `json:"skipped_nodes"` // malformed nodes left out
	HeldSince    time.Time `json:"held_since"`    // when the held render was first held
	Holds        int       `json:"holds"`         // renders held by a guard
	Rollbacks    int       `json:"rollbacks"`     // applies rolled back

	EtcdConnected bool      `json:"etcd_connected"`
	EtcdSince     time.Time `json:"etcd_since"` // since when connected or disconnected
	EtcdError     string    `json:"etcd_error"`
}

// App is the reconcile loop.
type App struct {
	src   Source
	rend  Renderer
	apply Applier
	opts  Options
	log   *slog.Logger

	mu     sync.Mutex
	status Status

	renderers chan Renderer // a new renderer (template hot reload) for the loop to take

	last      []byte              // bytes of the last config made live
	lastNodes map[string][]string // service name → node IDs of the last config made live
	problems  map[string]bool     // last logged node problems, to log each once
	held      []byte              // the render a guard holds back
	heldSince time.Time
	writer    string // single writer of the live config, kept while it stays Synced
}

// New returns a loop joining src, r and a.
func New(src Source, r Renderer, a Applier, opts Options) *App {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = time.Second
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = 30 * time.Second
	}
	if opts.DryRunOut == nil {
		opts.DryRunOut = io.Discard
	}
	if opts.MaxRemove <= 0 {
		opts.MaxRemove = 1
	}
	return &App{src: src, rend: r, apply: a, opts: opts, log: opts.Logger, problems: map[string]bool{},
		renderers: make(chan Renderer, 1)}
}

// SetRenderer hands the loop a new renderer (templates reloaded); the
// newest snapshot is rendered with it at once.
func (a *App) SetRenderer(r Renderer) {
	select {
	case <-a.renderers:
	default:
	}
	a.renderers <- r
}

// EtcdStatus records the state of the etcd connection (watch.Options.OnStatus).
func (a *App) EtcdStatus(st watch.Status) {
	a.update(func(s *Status) {
		s.EtcdConnected = st.Connected
		s.EtcdSince = st.Since
		s.EtcdError = ""
		if st.Err != nil {
			s.EtcdError = st.Err.Error()
		}
	})
	if m := a.opts.Metrics; m != nil {
		m.EtcdConnected.Set(b2f(st.Connected))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Status returns a copy of the loop's status.
func (a *App) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.status
	s.SkippedNodes = append([]string(nil), s.SkippedNodes...)
	return s
}

func (a *App) update(f func(*Status)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(&a.status)
}

// Run drives the loop until ctx ends (returns nil) or, with Once, until
// the first snapshot has been applied (returns that apply's error).
func (a *App) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	snaps := make(chan watch.Snapshot, 1)
	srcDone := make(chan error, 1)
	go func() { srcDone <- a.src.Run(ctx, snaps) }()
	defer func() {
		cancel()
		<-srcDone
	}()

	var (
		pending    *watch.Snapshot
		burstStart time.Time
		timer      = time.NewTimer(time.Hour)
		retry      time.Duration
	)
	timer.Stop()
	defer timer.Stop()
	arm := func(d time.Duration) {
		timer.Stop()
		select {
		case <-timer.C:
		default:
		}
		timer.Reset(d)
	}

	for {
		select {
		case <-ctx.Done():
			if a.opts.Once {
				return fmt.Errorf("--once: %w", ErrNoSnapshot)
			}
			return nil
		case err := <-srcDone:
			srcDone <- err // for the deferred wait
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch: %w", err)
		case r := <-a.renderers:
			a.rend = r
			if pending != nil {
				retry = 0
				arm(0)
			}
		case s := <-snaps:
			a.update(func(st *Status) {
				st.Revision = s.Revision
				if !st.EtcdConnected {
					st.EtcdConnected, st.EtcdSince = true, time.Now()
				}
			})
			if m := a.opts.Metrics; m != nil {
				m.SeenRev.Set(float64(s.Revision))
			}
			pending = &s
			now := time.Now()
			if burstStart.IsZero() {
				burstStart = now
			}
			delay := a.opts.WaitMin
			if deadline := burstStart.Add(a.opts.WaitMax); now.Add(delay).After(deadline) {
				delay = max(deadline.Sub(now), 0)
			}
			retry = 0
			arm(delay)
		case <-timer.C:
			if pending == nil {
				continue
			}
			burstStart = time.Time{}
			err := a.process(ctx, *pending)
			if a.opts.Once {
				return err
			}
			var hold *HoldError
			switch {
			case errors.As(err, &hold) && hold.Remaining > 0:
				arm(hold.Remaining)
			case err != nil && retryable(err) && ctx.Err() == nil:
				retry = min(max(2*retry, a.opts.RetryMin), a.opts.RetryMax)
				a.log.Info("will retry", "in", retry)
				arm(retry)
			}
		}
	}
}

// retryable says whether the same render may succeed later: a start
// that failed, a bind address that was busy or a reload held by the fleet
// (a stopped wave resumes when the failed instance succeeds) may clear; a config
// HAProxy rejects or a guard hold will not until something changes.
func retryable(err error) bool {
	return errors.Is(err, haproxy.ErrStartFailed) || errors.Is(err, haproxy.ErrBindInUse) || errors.Is(err, haproxy.ErrReloadHeld)
}

// HoldError is returned when a guard holds a render back; Remaining is
// how long until the hold would be released (0: not by time).
type HoldError struct {
	Guard     string // min_servers or max_remove
	Reason    string
	Remaining time.Duration
}

func (e *HoldError) Error() string { return ErrHeld.Error() + ": " + e.Reason }

// Is makes errors.Is(err, ErrHeld) true.
func (e *HoldError) Is(target error) bool { return target == ErrHeld }

// process renders one snapshot and makes it live if it differs.
func (a *App) process(ctx context.Context, s watch.Snapshot) error {
	start := time.Now()
	a.update(func(st *Status) { st.LastAttempt = start })
	in := renderInput(s)
	in.Writer = a.writer
	out, err := a.rend.Render(in)
	if m := a.opts.Metrics; m != nil {
		m.RenderDuration.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		a.fail(s.Revision, "render", err)
		a.count("error", "none")
		return err
	}
	a.logProblems(out.Problems)
	servers := 0
	for _, svc := range out.Services {
		servers += len(svc.Nodes)
	}
	if bytes.Equal(out.Config, a.last) {
		a.log.Debug("rendered config unchanged", "rev", s.Revision)
		a.release()
		a.update(func(st *Status) { st.Applied = s.Revision })
		a.setRev(s.Revision)
		a.count("unchanged", "none")
		return nil
	}
	if err := a.guard(s.Revision, out); err != nil {
		return err
	}
	if a.opts.DryRun {
		if a.opts.Checker != nil {
			if err := a.opts.Checker.Check(ctx, out.Config); err != nil {
				a.fail(s.Revision, "check", err)
				return err
			}
		}
		if _, err := a.opts.DryRunOut.Write(out.Config); err != nil {
			return fmt.Errorf("dry run output: %w", err)
		}
		a.commit(s.Revision, out, "dry-run")
		a.log.Info("dry run: config rendered and valid, not applied", "rev", s.Revision, "servers", servers)
		return nil
	}
	applyStart := time.Now()
	res, err := a.apply.Apply(ctx, out.Config)
	method := string(res.Action)
	if m := a.opts.Metrics; m != nil {
		m.ApplyDuration.WithLabelValues(method).Observe(time.Since(applyStart).Seconds())
		if res.Action == haproxy.ActionStart || res.Action == haproxy.ActionReload {
			m.Reloads.Inc()
		}
		if res.RolledBack {
			m.Rollbacks.Inc()
		}
	}
	if res.RolledBack {
		a.update(func(st *Status) { st.Rollbacks++ })
	}
	if err != nil {
		a.fail(s.Revision, "apply", err)
		a.count("error", method)
		return err
	}
	a.commit(s.Revision, out, method)
	a.log.Info("config live", "rev", s.Revision, "action", method, "servers", servers,
		"pid", res.PID, "duration", time.Since(start).Round(time.Microsecond))
	return nil
}

// commit records out as the live config.
func (a *App) commit(rev int64, out render.Output, method string) {
	a.last = out.Config
	a.lastNodes = nodeIDs(out.Services)
	if out.Writer != a.writer {
		a.log.Info("single writer", "rev", rev, "writer", out.Writer, "previous", a.writer)
		a.writer = out.Writer
	}
	a.release()
	a.count("ok", method)
	servers := 0
	for _, svc := range out.Services {
		servers += len(svc.Nodes)
	}
	a.update(func(st *Status) {
		st.Applied = rev
		st.LastApply = time.Now()
		st.LastAction = method
		st.LastError = ""
		st.Servers = servers
		st.Applies++
	})
	a.setRev(rev)
	if m := a.opts.Metrics; m != nil {
		m.Servers.Reset()
		for _, svc := range out.Services {
			for _, n := range svc.Nodes {
				state := n.State
				if state == "" {
					state = "unknown"
				}
				m.Servers.WithLabelValues(svc.Name, state).Inc()
			}
		}
	}
}

func (a *App) setRev(rev int64) {
	if m := a.opts.Metrics; m != nil {
		m.AppliedRev.Set(float64(rev))
	}
}

func (a *App) count(result, method string) {
	if m := a.opts.Metrics; m != nil {
		m.Applies.WithLabelValues(result, method).Inc()
	}
}

func nodeIDs(svcs []render.Service) map[string][]string {
	m := make(map[string][]string, len(svcs))
	for _, svc := range svcs {
		ids := make([]string, 0, len(svc.Nodes))
		for _, n := range svc.Nodes {
			ids = append(ids, n.ID)
		}
		m[svc.Name] = ids
	}
	return m
}

// guard holds back a render in which a section has fewer than
// MinServers servers (until the servers come back, or Force), or that
// removes more than MaxRemove of a section's servers at once (until the
// same render has been held for GuardHold, or Force).
func (a *App) guard(rev int64, out render.Output) error {
	if a.opts.Force {
		return nil
	}
	for i, svc := range out.Services {
		// The first prefix holds the servers; another one counts once it
		// has had nodes (a prefix of settings never has any).
		if i > 0 && len(a.lastNodes[svc.Name]) == 0 {
			continue
		}
		if len(svc.Nodes) < a.opts.MinServers {
			return a.hold(rev, out.Config, "min_servers", fmt.Sprintf("section %s would have %d servers, fewer than --min-servers %d",
				svc.Name, len(svc.Nodes), a.opts.MinServers), false)
		}
	}
	if a.last == nil || a.opts.MaxRemove >= 1 {
		return nil
	}
	for _, svc := range out.Services {
		prev := a.lastNodes[svc.Name]
		if len(prev) == 0 {
			continue
		}
		now := make(map[string]bool, len(svc.Nodes))
		for _, n := range svc.Nodes {
			now[n.ID] = true
		}
		removed := 0
		for _, id := range prev {
			if !now[id] {
				removed++
			}
		}
		if share := float64(removed) / float64(len(prev)); share > a.opts.MaxRemove {
			return a.hold(rev, out.Config, "max_remove", fmt.Sprintf("section %s would lose %d of its %d servers at once, more than --max-remove %g",
				svc.Name, removed, len(prev), a.opts.MaxRemove), a.opts.GuardHold > 0)
		}
	}
	return nil
}

// hold records a held render; the same render held for GuardHold is
// released when timed is set.
func (a *App) hold(rev int64, cfg []byte, guard, reason string, timed bool) error {
	now := time.Now()
	if !bytes.Equal(cfg, a.held) {
		a.held, a.heldSince = cfg, now
		a.log.Warn("render held, live config unchanged", "rev", rev, "guard", guard, "reason", reason)
		if m := a.opts.Metrics; m != nil {
			m.GuardHolds.WithLabelValues(guard).Inc()
		}
		a.update(func(st *Status) { st.Holds++ })
	}
	a.count("held", "none")
	a.update(func(st *Status) { st.Held, st.HeldSince = reason, a.heldSince })
	if !timed {
		return &HoldError{Guard: guard, Reason: reason}
	}
	if left := a.heldSince.Add(a.opts.GuardHold).Sub(now); left > 0 {
		return &HoldError{Guard: guard, Reason: reason, Remaining: left}
	}
	a.log.Warn("held render released: unchanged for --guard-hold", "rev", rev, "guard", guard, "held_for", now.Sub(a.heldSince).Round(time.Millisecond))
	return nil
}

// release forgets a held render.
func (a *App) release() {
	a.held, a.heldSince = nil, time.Time{}
	a.update(func(st *Status) { st.Held, st.HeldSince = "", time.Time{} })
}

func (a *App) fail(rev int64, stage string, err error) {
	a.log.Error(stage+" failed, live config unchanged", "rev", rev, "err", err)
	a.update(func(st *Status) {
		st.LastError = fmt.Sprintf("%s: %v", stage, err)
		st.Failures++
	})
}

// logProblems logs each malformed node once, until it changes.
func (a *App) logProblems(ps []render.Problem) {
	seen := make(map[string]bool, len(ps))
	names := make([]string, 0, len(ps))
	for _, p := range ps {
		msg := p.Error()
		seen[msg] = true
		names = append(names, msg)
		if !a.problems[msg] {
			a.log.Warn("node skipped", "key", p.Key, "reason", p.Reason)
		}
	}
	a.problems = seen
	a.update(func(st *Status) { st.SkippedNodes = names })
}

// renderInput is a snapshot as the renderer takes it: its pairs sorted
// by key (nodes are parsed from them, and the template key functions build
// a map only if a template uses them).
func renderInput(s watch.Snapshot) render.Input {
	// Snapshots are sorted by key; one that is not (hand-made) goes as a
	// map.
	if !slices.IsSortedFunc(s.KVs, func(a, b watch.KV) int { return strings.Compare(a.Key, b.Key) }) {
		return render.Input{Revision: s.Revision, KVs: s.Map()}
	}
	in := render.Input{Revision: s.Revision}
	in.Sorted = make([]render.KVPair, len(s.KVs))
	for i, kv := range s.KVs {
		in.Sorted[i] = render.KVPair{Key: kv.Key, Value: kv.Value}
	}
	return in
}
