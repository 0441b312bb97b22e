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
	Checker          Checker // for DryRun; may be nil
	RetryMin         time.Duration
	RetryMax         time.Duration
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

	last     []byte          // bytes of the last config made live
	problems map[string]bool // last logged node problems, to log each once
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
	return &App{src: src, rend: r, apply: a, opts: opts, log: opts.Logger, problems: map[string]bool{}}
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
		case s := <-snaps:
			a.update(func(st *Status) { st.Revision = s.Revision })
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
			if err != nil && retryable(err) && ctx.Err() == nil {
				retry = min(max(2*retry, a.opts.RetryMin), a.opts.RetryMax)
				a.log.Info("will retry", "in", retry)
				arm(retry)
			}
		}
	}
}

// retryable says whether the same render may succeed later: a start
// that failed or a bind address that was busy may clear; a config
// HAProxy rejects or a guard hold will not until something changes.
func retryable(err error) bool {
	return errors.Is(err, haproxy.ErrStartFailed) || errors.Is(err, haproxy.ErrBindInUse)
}

// process renders one snapshot and makes it live if it differs.
func (a *App) process(ctx context.Context, s watch.Snapshot) error {
	start := time.Now()
	a.update(func(st *Status) { st.LastAttempt = start })
	out, err := a.rend.Render(render.Input{Revision: s.Revision, KVs: s.Map()})
	if err != nil {
		a.fail(s.Revision, "render", err)
		return err
	}
	a.logProblems(out.Problems)
	servers := 0
	for _, svc := range out.Services {
		servers += len(svc.Nodes)
	}
	for _, svc := range out.Services {
		if len(svc.Nodes) < a.opts.MinServers {
			reason := fmt.Sprintf("section %s would have %d servers, fewer than --min-servers %d", svc.Name, len(svc.Nodes), a.opts.MinServers)
			a.log.Warn("render held, live config unchanged", "rev", s.Revision, "reason", reason)
			a.update(func(st *Status) { st.Held = reason })
			return fmt.Errorf("%w: %s", ErrHeld, reason)
		}
	}
	a.update(func(st *Status) { st.Held = "" })
	if bytes.Equal(out.Config, a.last) {
		a.log.Debug("rendered config unchanged", "rev", s.Revision)
		a.update(func(st *Status) { st.Applied = s.Revision })
		return nil
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
		a.last = out.Config
		a.log.Info("dry run: config rendered and valid, not applied", "rev", s.Revision, "servers", servers)
		return nil
	}
	res, err := a.apply.Apply(ctx, out.Config)
	if err != nil {
		a.fail(s.Revision, "apply", err)
		return err
	}
	a.last = out.Config
	a.log.Info("config live", "rev", s.Revision, "action", string(res.Action), "servers", servers,
		"pid", res.PID, "duration", time.Since(start).Round(time.Microsecond))
	a.update(func(st *Status) {
		st.Applied = s.Revision
		st.LastApply = time.Now()
		st.LastAction = string(res.Action)
		st.LastError = ""
		st.Servers = servers
		st.Applies++
	})
	return nil
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
