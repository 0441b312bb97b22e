package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/render"
	"github.com/haconfd/haconfd/watch"
)

// Renderer turns a snapshot into a config.
type Renderer interface {
	Render(in render.Input) (render.Output, error)
}

// Runtime is the runtime API of the running HAProxy (haproxy.Runtime).
type Runtime interface {
	ServersState() (haproxy.LiveState, error)
	Send(op haproxy.ServerOp) error
	FinishDrain(ctx context.Context, op haproxy.ServerOp, timeout time.Duration) error
}

// Reloader owns HAProxy's file and process (haproxy.Manager).
type Reloader interface {
	Apply(ctx context.Context, cfg []byte) (haproxy.Result, error)
	Write(ctx context.Context, cfg []byte) error
	Check(ctx context.Context, cfg []byte) error
	Live() ([]byte, bool, error)
	Process(ctx context.Context) haproxy.Process
	NeedsReload() bool
	Restarts() <-chan struct{}
	// Warnings are what haproxy -c warned about the live file.
	Warnings() []string
}

// ReloadSlot coordinates starts and reloads across the fleet (nil: none).
// Acquire may wait; release publishes the outcome and frees the slot.
type ReloadSlot interface {
	Acquire(ctx context.Context, action haproxy.Action, cfg []byte, in render.Input) (release func(ok bool, err error), err error)
}

// ErrHeld marks what a guard holds back.
var ErrHeld = errors.New("held by a guard")

// HAProxyOptions tune the HAProxy target.
type HAProxyOptions struct {
	Mode         string        // config.ApplyAuto (default), ApplyRuntime or ApplyReload
	DrainTimeout time.Duration // how long a removed server may keep its sessions
	Guards       GuardOptions
	SingleWriter bool // log writer changes at info (else debug)
	DryRun       bool // render and check, print to DryRunOut, apply nothing
	DryRunOut    io.Writer
	RetryMin     time.Duration // backoff of a failed start or reload that may succeed later
	RetryMax     time.Duration
	ResyncRetry  time.Duration // first retry of a failed read of HAProxy's live state, default 100ms
	Caps         haproxy.Caps  // what the running HAProxy's runtime API takes (Version.Caps)
	Logger       *slog.Logger
	Bus          *Bus
	Board        *Board
	Metrics      *Metrics

	// KeepWriterSessions leaves the sessions of a writer that handed the
	// writes over (--writer-failover-sessions keep); by default they are
	// shut down in the sections where it no longer takes connections.
	KeepWriterSessions bool
	// Writers records the writers for the fleet (nil: none recorded).
	Writers WriterStore
}

// HAProxyTarget keeps a running HAProxy in step with the rendered config,
// in two lanes:
//
//   - the fast lane, for each snapshot at once: servers that are added,
//     removed, moved, reweighted, enabled or disabled in sections that
//     HAProxy already has go through the runtime API, compared with
//     HAProxy's live state ("show servers state"), never queued behind
//     anything; removed servers drain in the background;
//   - the reload lane (Lanes jobs): what needs a reload waits for
//     quiescence and the fleet's reload slot, then takes the newest
//     render; a change the runtime API made is then written to the file
//     (haproxy -c first).
//
// Guards hold single servers (GuardOptions), never a whole render.
type HAProxyTarget struct {
	opts  HAProxyOptions
	rend  Renderer
	rt    Runtime // nil: no runtime API (no socket, or --apply reload)
	rl    Reloader
	slot  ReloadSlot
	log   *slog.Logger
	bus   *Bus
	board *Board
	lanes *Lanes
	ctx   context.Context

	// Loop goroutine only.
	snap      *watch.Snapshot
	in        render.Input
	out       *render.Output
	outRev    int64
	renderErr error
	writer    string
	galera    galeraState // writers and lag memory, writer handovers (galera.go)
	problems  map[string]bool
	live      []byte // the live file: the config HAProxy runs, as far as structure goes
	running   bool   // a healthy HAProxy serves live
	belief    haproxy.LiveState
	beliefOK  bool
	drains    map[string]*drain
	guards    *guardBook
	guardStop func()
	desired   []byte // the newest render with the servers the guards keep
	refused   map[string]bool
	// forceReload: the runtime API refused a change, or does not answer,
	// or a predecessor left HAProxy half reloaded: reload desired.
	forceReload bool
	// apiDown: forceReload only because the live state cannot be read. A
	// reload then carries server changes, but a render equal to the live
	// file needs none: reloading it would change nothing, and would repeat
	// at every failed resync for as long as the socket stays dead.
	apiDown       bool
	rejected      []byte // a server-only desired that haproxy -c refused
	failed        *failure
	startHeld     string
	job           *Job
	jobKind       string
	pendingAt     time.Time
	retryStop     func()
	resyncStop    func()
	resyncFails   int
	converged     bool
	fastClean     bool
	lastErr       error // of the first snapshot's work (--once)
	printed       []byte
	snapAt        time.Time      // when the newest snapshot arrived
	how           haproxy.Action // how the changes since the last convergence went live
	convergedOnce bool
	since         time.Time // when the newest render that is not live yet arrived
}

// failure is a reload that failed: it is not tried again for the same
// structural change until something structural changes, or (for a
// failure that may clear) the retry timer fires.
type failure struct {
	reasons []string
	err     error
	retry   bool // the timer fired
}

type drain struct {
	op     haproxy.ServerOp
	cancel context.CancelFunc
	since  time.Time
}

// NewHAProxyTarget returns the target. rt may be nil (no runtime API);
// slot may be nil (no fleet coordination).
func NewHAProxyTarget(rend Renderer, rl Reloader, rt Runtime, slot ReloadSlot, opts HAProxyOptions) *HAProxyTarget {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Board == nil {
		opts.Board = &Board{}
	}
	if opts.Mode == "" {
		opts.Mode = config.ApplyAuto
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 10 * time.Second
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = time.Second
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = 30 * time.Second
	}
	if opts.ResyncRetry <= 0 {
		opts.ResyncRetry = 100 * time.Millisecond
	}
	if opts.DryRunOut == nil {
		opts.DryRunOut = io.Discard
	}
	if opts.Mode == config.ApplyReload || opts.DryRun {
		rt = nil
	}
	return &HAProxyTarget{
		opts: opts, rend: rend, rl: rl, rt: rt, slot: slot,
		log: opts.Logger, bus: opts.Bus, board: opts.Board,
		problems: map[string]bool{}, drains: map[string]*drain{}, refused: map[string]bool{},
		guards: newGuardBook(opts.Guards),
	}
}

// setLive records cfg as the live file.
func (t *HAProxyTarget) setLive(cfg []byte) {
	t.live = cfg
	sha := ""
	if cfg != nil {
		sha = sha256Hex(cfg)
	}
	warnings := t.rl.Warnings()
	t.board.Update(func(s *Status) { s.ConfigSHA256, s.HAProxy.Warnings = sha, warnings })
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// SetRenderer hands the target a new renderer (templates reloaded): the
// newest snapshot is rendered with it at once. Safe from any goroutine
// once the loop runs.
func (t *HAProxyTarget) SetRenderer(r Renderer) {
	t.lanes.Post(func() {
		t.rend = r
		if t.snap != nil {
			t.renderSnapshot()
			t.reconcile()
		}
	})
}

// Start reads the live file and looks at the running HAProxy: a healthy
// one is adopted (its live state read), so a restarted haconfd converges
// without a reload when only servers differ.
func (t *HAProxyTarget) Start(ctx context.Context, l *Lanes) error {
	t.lanes, t.ctx = l, ctx
	if t.opts.DryRun {
		return nil
	}
	live, exists, err := t.rl.Live()
	if err != nil {
		return err
	}
	if exists {
		t.setLive(live)
	}
	p := t.rl.Process(ctx)
	t.running = exists && p.Healthy
	t.forceReload = t.rl.NeedsReload()
	t.board.Update(func(s *Status) { s.HAProxy.PID, s.HAProxy.Running = p.PID, p.Running })
	if t.running {
		t.log.Info("adopting the running HAProxy", "pid", p.PID, "config", "live file")
		t.resync()
	}
	if ch := t.rl.Restarts(); ch != nil {
		l.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-ch:
					l.Post(t.onRestart)
				}
			}
		})
	}
	return nil
}

// onRestart: HAProxy was started again on the live file behind our back
// (a supervised master that died): its servers are the file's again.
func (t *HAProxyTarget) onRestart() {
	t.log.Warn("HAProxy was restarted on the live file; reading its live state again")
	t.beliefOK = false
	t.resync()
}

// Snapshot renders s and reconciles at once (the fast lane).
func (t *HAProxyTarget) Snapshot(_ context.Context, s watch.Snapshot) {
	t.snapAt = time.Now()
	t.snap = &s
	t.renderSnapshot()
	t.reconcile()
}

// Resync compares HAProxy's live state (and the live file) with what
// haconfd believes, repairs differences, and restarts a HAProxy that died.
func (t *HAProxyTarget) Resync(ctx context.Context) {
	if t.opts.DryRun {
		return
	}
	if disk, exists, err := t.rl.Live(); err == nil && t.job == nil {
		if !bytes.Equal(disk, t.live) && (exists || t.live != nil) {
			t.log.Warn("the live file was changed outside haconfd; bringing it back in line", "file_bytes", len(disk))
			if exists {
				t.setLive(disk)
			} else {
				t.setLive(nil)
			}
		}
	}
	if t.job == nil && t.running {
		if p := t.rl.Process(ctx); !p.Healthy {
			t.log.Error("HAProxy is not running or not answering; starting it again on the live config", "pids", p.PIDs)
			t.running = false
			t.board.Update(func(s *Status) { s.HAProxy.Running = false })
		}
	}
	t.resync()
	if !t.running {
		t.reconcile()
	}
}

// Result is the outcome of the first snapshot's work (--once).
func (t *HAProxyTarget) Result() error {
	if t.renderErr != nil {
		return t.renderErr
	}
	if t.startHeld != "" {
		return fmt.Errorf("%w: %s", ErrHeld, t.startHeld)
	}
	return t.lastErr
}

// renderSnapshot renders the newest snapshot.
func (t *HAProxyTarget) renderSnapshot() {
	s := *t.snap
	start := time.Now()
	in := RenderInput(s)
	in.Writer = t.writer
	in.Memory = t.galera.memory
	out, err := t.rend.Render(in)
	took := time.Since(start)
	if m := t.opts.Metrics; m != nil {
		m.RenderDuration.Observe(took.Seconds())
	}
	t.board.Update(func(st *Status) { st.LastAttempt = start })
	if err != nil {
		t.renderErr = err
		t.fail(s.Revision, "render", "", err)
		return
	}
	t.renderErr = nil
	if t.out != nil && bytes.Equal(out.Config, t.out.Config) {
		t.log.Debug("rendered config unchanged", "rev", s.Revision)
	} else if t.since.IsZero() {
		t.since = start
	}
	t.in, t.out, t.outRev = in, &out, s.Revision
	t.galeraRendered(out)
	if out.Writer != t.writer {
		lvl := slog.LevelDebug
		if t.opts.SingleWriter {
			lvl = slog.LevelInfo
		}
		t.log.Log(t.ctx, lvl, "single writer", "rev", s.Revision, "writer", out.Writer, "previous", t.writer)
		t.writer = out.Writer
	}
	t.logProblems(out.Problems)
	t.bus.Publish(Event{Kind: EventRendered, Rev: s.Revision, Duration: took})
}

// reconcile brings HAProxy toward the newest render: guards, fast lane,
// then whatever the reload lane must do.
func (t *HAProxyTarget) reconcile() {
	if t.out == nil {
		return
	}
	rendered := t.out.Config
	renderedLines, err := haproxy.ServerLines(rendered)
	if err != nil {
		t.fail(t.outRev, "plan", "", fmt.Errorf("rendered config: %w", err))
		return
	}
	ref := t.desired
	if ref == nil {
		ref = t.live
	}
	configured, _ := haproxy.ServerLines(ref)
	g := t.guards.decide(t.lanes.Now(), renderedLines, configured)
	t.noteHolds(g)
	desired := haproxy.InsertServers(rendered, g.Extra)
	t.desired = desired

	if t.opts.DryRun {
		t.dryRun()
		return
	}
	var pending []string
	t.fastClean = true
	switch {
	case t.fastOK():
		target := desired
		if t.rejected != nil && bytes.Equal(desired, t.rejected) {
			target = t.live // haproxy -c refused it: back to the live file's servers
		}
		plan, err := haproxy.PlanServers(t.live, target, t.belief, t.busy, t.opts.Caps)
		if err != nil {
			t.fail(t.outRev, "plan", "fast", err)
			t.fastClean = false
			break
		}
		pending = plan.Pending
		t.execute(plan.Ops)
		t.handOver(desired)
	case t.running && t.rt != nil && !t.beliefOK:
		t.fastClean = false // HAProxy's live state is not known yet (resync pending)
	}
	t.planSlow(pending)
	t.publish()
}

// fastOK: the runtime API can act on the running HAProxy now.
func (t *HAProxyTarget) fastOK() bool {
	return t.rt != nil && t.running && t.beliefOK && t.live != nil
}

func (t *HAProxyTarget) busy(backend, server string) bool {
	return t.drains[backend+"/"+server] != nil
}

// execute sends the fast lane's operations, one round trip each.
func (t *HAProxyTarget) execute(ops []haproxy.ServerOp) {
	if len(ops) == 0 {
		return
	}
	start := time.Now()
	var sent, servers []string
	bad := 0
	for _, op := range ops {
		key := op.Backend + "/" + op.Server
		if d := t.drains[key]; d != nil {
			// Back before its drain ended: stop the drain first; it
			// reports, and the server is planned again.
			d.cancel()
			continue
		}
		line := op.NowLine()
		if t.refused[line] {
			bad++
			continue
		}
		if err := t.rt.Send(op); err != nil {
			bad++
			var re *haproxy.RuntimeError
			if errors.As(err, &re) {
				t.refused[line] = true
				t.forceReload = true
				t.log.Warn("runtime API refused a change; a reload makes it", "server", key, "err", err)
				t.fail(t.outRev, "runtime", "fast", err)
				t.scheduleResync(0)
			} else {
				t.log.Warn("runtime API unavailable; reading HAProxy's live state again", "server", key, "err", err)
				t.beliefOK = false
				t.scheduleResync(t.opts.ResyncRetry)
			}
			continue
		}
		sent = append(sent, line)
		servers = append(servers, key)
		if was, ok := t.belief.Get(op.Backend, op.Server); ok {
			t.log.Debug("runtime API", "command", line, "was", fmt.Sprintf("%s:%d %s weight %d admin %d op %d", was.Addr, was.Port, was.AdminWord(), was.Weight, was.Admin, was.Op))
		} else {
			t.log.Debug("runtime API", "command", line, "was", "absent")
		}
		t.believe(op)
		if op.Drains() {
			t.startDrain(op)
		}
	}
	if bad > 0 {
		t.fastClean = false
	}
	if len(sent) == 0 {
		return
	}
	took := time.Since(start)
	if t.how == "" || t.how == haproxy.ActionNone {
		t.how = haproxy.ActionRuntime
	}
	if m := t.opts.Metrics; m != nil {
		m.Applies.WithLabelValues("ok", string(haproxy.ActionRuntime)).Inc()
		m.ApplyDuration.WithLabelValues(string(haproxy.ActionRuntime)).Observe(took.Seconds())
	}
	t.log.Info("servers changed through the runtime API", "rev", t.outRev, "commands", len(sent), "servers", strings.Join(servers, " "),
		"duration", took.Round(time.Microsecond), "since_snapshot", time.Since(t.snapAt).Round(time.Microsecond))
	now := time.Now()
	t.board.Update(func(s *Status) {
		s.LastApply, s.LastAction = now, string(haproxy.ActionRuntime)
		s.Applies++
		if bad == 0 {
			s.RuntimeApplied = t.outRev
		}
	})
	t.bus.Publish(Event{Kind: EventRuntime, Lane: "fast", Rev: t.outRev, Action: string(haproxy.ActionRuntime), Servers: servers, Commands: sent, Duration: took})
}

// believe records what op did in the believed live state.
func (t *HAProxyTarget) believe(op haproxy.ServerOp) {
	s, _ := t.belief.Get(op.Backend, op.Server)
	s.Backend, s.Name = op.Backend, op.Server
	switch op.Kind {
	case haproxy.OpAdd:
		s = haproxy.ServerState{Backend: op.Backend, Name: op.Server, Addr: op.Addr, Port: op.Port, Weight: 1}
		if op.Weight != nil {
			s.Weight = *op.Weight
		}
		if op.Disabled {
			s.Admin = haproxy.AdminForcedMaint
		}
	case haproxy.OpUpdate, haproxy.OpFillSlot:
		if op.Addr != "" {
			s.Addr, s.Port = op.Addr, op.Port
		}
		if op.Weight != nil {
			s.Weight = *op.Weight
		}
		s.Admin &^= haproxy.AdminMaint | haproxy.AdminDrain
		if op.Disabled {
			s.Admin |= haproxy.AdminForcedMaint
		}
	case haproxy.OpRemove, haproxy.OpFreeSlot:
		s.Admin = s.Admin&^haproxy.AdminMaint | haproxy.AdminForcedDrain
	}
	t.belief.Set(s)
}

// startDrain finishes a removal (or a freed slot) in the background.
func (t *HAProxyTarget) startDrain(op haproxy.ServerOp) {
	key := op.Backend + "/" + op.Server
	ctx, cancel := context.WithCancel(t.ctx)
	d := &drain{op: op, cancel: cancel, since: time.Now()}
	t.drains[key] = d
	rt, timeout := t.rt, t.opts.DrainTimeout
	t.lanes.Go(func() {
		err := rt.FinishDrain(ctx, op, timeout)
		canceled := ctx.Err() != nil
		cancel()
		t.lanes.Post(func() { t.drainDone(d, err, canceled) })
	})
}

func (t *HAProxyTarget) drainDone(d *drain, err error, canceled bool) {
	op := d.op
	key := op.Backend + "/" + op.Server
	if t.drains[key] == d {
		delete(t.drains, key)
	}
	took := time.Since(d.since)
	switch {
	case canceled:
		if t.ctx.Err() != nil {
			return
		}
		t.log.Info("drain stopped: the server is wanted again", "server", key, "after", took.Round(time.Millisecond))
		t.beliefOK = false
		t.resync()
		return
	case err != nil:
		t.log.Warn("drain did not finish; reading HAProxy's live state again", "server", key, "err", err)
		t.bus.Publish(Event{Kind: EventFailed, Lane: "fast", Rev: t.outRev, Servers: []string{key}, Detail: "drain", Err: err.Error()})
		t.beliefOK = false
		t.resync()
		return
	}
	if op.Kind == haproxy.OpRemove {
		t.belief.Delete(op.Backend, op.Server)
	} else {
		s, _ := t.belief.Get(op.Backend, op.Server)
		s.Addr, s.Port, s.Admin = op.Addr, op.Port, haproxy.AdminForcedMaint
		if op.Weight != nil {
			s.Weight = *op.Weight
		}
		t.belief.Set(s)
	}
	t.log.Info("server drained and removed", "server", key, "drained_for", took.Round(time.Millisecond))
	t.bus.Publish(Event{Kind: EventDrained, Lane: "fast", Servers: []string{key}, Duration: took, Commands: op.AfterDrain()})
	t.reconcile()
}

// resync reads HAProxy's live state, reports how it differs from what
// haconfd believed (a change by hand, a restart), and reconciles.
func (t *HAProxyTarget) resync() {
	if t.rt == nil || !t.running {
		return
	}
	if t.resyncStop != nil {
		t.resyncStop()
		t.resyncStop = nil
	}
	st, err := t.rt.ServersState()
	if err != nil {
		t.resyncFails++
		t.beliefOK = false
		if t.resyncFails == 1 || t.resyncFails%10 == 0 {
			t.log.Warn("cannot read HAProxy's live state", "err", err, "failures", t.resyncFails)
		}
		if t.resyncFails >= 3 && !t.forceReload {
			if !t.apiDown {
				t.log.Warn("runtime API does not answer; server changes go through a reload until it does")
			}
			t.forceReload, t.apiDown = true, true
			t.reconcile()
		}
		t.scheduleResync(min(t.opts.ResyncRetry<<min(t.resyncFails, 8), 5*time.Second))
		return
	}
	t.resyncFails = 0
	if t.apiDown { // the socket answers again: server changes take it again
		t.apiDown, t.forceReload = false, false
	}
	if t.beliefOK {
		var drifts []haproxy.Drift
		for _, d := range haproxy.DiffLive(t.belief, st) {
			if !t.busy(d.Backend, d.Server) {
				drifts = append(drifts, d)
			}
		}
		if len(drifts) > 0 {
			var servers []string
			for _, d := range drifts {
				servers = append(servers, d.Backend+"/"+d.Server)
				t.log.Warn("HAProxy's live state differs from haconfd's; repairing", "server", d.Backend+"/"+d.Server,
					"expected", orNone(d.Was), "live", orNone(d.Now))
			}
			t.board.Update(func(s *Status) { s.Repairs += len(drifts) })
			t.bus.Publish(Event{Kind: EventRepaired, Lane: "fast", Servers: servers, Detail: fmt.Sprintf("%d server(s) differed from haconfd's view", len(drifts))})
		}
	}
	t.belief, t.beliefOK = st, true
	clear(t.refused)
	now := time.Now()
	t.board.Update(func(s *Status) { s.Resynced = now })
	t.reconcile()
}

func orNone(s string) string {
	if s == "" {
		return "(absent)"
	}
	return s
}

func (t *HAProxyTarget) scheduleResync(d time.Duration) {
	if t.resyncStop != nil {
		return
	}
	t.resyncStop = t.lanes.After(d, func() {
		t.resyncStop = nil
		t.resync()
	})
}

// planSlow decides what the reload lane must do for t.desired.
func (t *HAProxyTarget) planSlow(pending []string) {
	desired := t.desired
	switch {
	case !t.running:
		if held := t.firstStartHeld(); held != "" {
			t.holdStart(held)
			return
		}
		t.clearStartHold()
		t.want("start", []string{"no running HAProxy"})
	case t.rejected != nil && bytes.Equal(desired, t.rejected):
		t.cancelJob() // refused by haproxy -c: nothing to do until the render changes
	case bytes.Equal(desired, t.live) && (!t.forceReload || t.apiDown) && len(pending) == 0:
		t.cancelJob()
		if t.fastClean {
			t.markConverged()
		}
	default:
		reasons := pending
		reload := t.rt == nil || t.forceReload || len(pending) > 0
		p, err := haproxy.PlanChange(t.live, desired, t.opts.Caps)
		if err != nil {
			t.fail(t.outRev, "plan", "reload", err)
			return
		}
		if p.Reload {
			reload = true
			reasons = append(slices.Clone(p.Reasons), pending...)
		}
		if t.forceReload && len(reasons) == 0 {
			reasons = []string{"the runtime API refused a change or does not answer"}
		}
		if !reload {
			if !t.fastClean {
				t.log.Debug("file not written yet: the runtime API did not take every change", "rev", t.outRev)
				return // the live state is being read again: write once the servers are right
			}
			t.want("write", nil)
			return
		}
		if t.rt == nil && len(reasons) == 0 {
			reasons = p.Reasons
			if len(reasons) == 0 {
				reasons = []string{"servers changed (no runtime API)"}
			}
		}
		if f := t.failed; f != nil && !f.retry && slices.Equal(f.reasons, reasons) {
			return // the same structural change failed: wait for another one (or the retry)
		}
		t.want("reload", reasons)
	}
}

// firstStartHeld says why a first start must wait: the first prefix has
// fewer nodes than --min-servers (an empty section is never started).
func (t *HAProxyTarget) firstStartHeld() string {
	if t.opts.Guards.Force || t.opts.Guards.MinServers <= 0 || len(t.out.Services) == 0 || t.live != nil && t.running {
		return ""
	}
	svc := t.out.Services[0]
	if n := firstPrefixNodes(t.out.Services); n < t.opts.Guards.MinServers {
		return fmt.Sprintf("section %s (prefix %s) would have %d servers, fewer than --min-servers %d", svc.Name, svc.Prefix, n, t.opts.Guards.MinServers)
	}
	return ""
}

func (t *HAProxyTarget) holdStart(reason string) {
	t.cancelJob()
	if t.startHeld == reason {
		return
	}
	t.startHeld = reason
	now := time.Now()
	t.log.Warn("start held, nothing is applied", "rev", t.outRev, "guard", GuardMinServers, "reason", reason)
	if m := t.opts.Metrics; m != nil {
		m.GuardHolds.WithLabelValues(GuardMinServers).Inc()
	}
	t.board.Update(func(s *Status) { s.Held, s.HeldSince = reason, now; s.Holds++ })
	t.bus.Publish(Event{Kind: EventHeld, Rev: t.outRev, Detail: GuardMinServers + ": " + reason})
}

func (t *HAProxyTarget) clearStartHold() {
	if t.startHeld == "" {
		return
	}
	t.startHeld = ""
	t.board.Update(func(s *Status) { s.Held, s.HeldSince = "", time.Time{} })
}

// want makes sure the reload lane has a job of kind; it takes the newest
// desired config when it runs.
func (t *HAProxyTarget) want(kind string, reasons []string) {
	action := "reload"
	if kind == "start" {
		action = "start"
	}
	if t.job != nil && t.jobKind == kind {
		if !t.lanes.Running(t.job) && kind != "write" {
			t.lanes.Submit(t.job) // one more change of the burst: quiescence goes on
		}
		if kind != "write" {
			t.setPending(action, reasons, "")
		}
		return
	}
	if kind != "write" && t.opts.Mode == config.ApplyRuntime {
		t.log.Warn("structural change: reloading", "reasons", reasons)
	} else if kind != "write" {
		t.log.Info("reload needed", "rev", t.outRev, "action", action, "reasons", strings.Join(reasons, "; "))
	}
	j := &Job{Name: kind}
	r := &jobRun{}
	t.job, t.jobKind = j, kind
	switch kind {
	case "write":
		t.setPending("", nil, "")
		j.Run = func(ctx context.Context) error { return t.runWrite(ctx, j, r) }
		j.Done = func(err error) { t.writeDone(j, r, err) }
	default:
		j.Wait = true
		t.pendingAt = time.Now()
		t.setPending(action, reasons, "quiescence")
		j.Run = func(ctx context.Context) error { return t.runReload(ctx, j, r, action) }
		j.Done = func(err error) { t.reloadDone(j, r, action, err) }
	}
	t.lanes.Submit(j)
}

func (t *HAProxyTarget) cancelJob() {
	if t.job != nil {
		t.job = nil
		t.lanes.Cancel()
	}
	if t.retryStop != nil {
		t.retryStop()
		t.retryStop = nil
	}
	t.setPending("", nil, "")
}

func (t *HAProxyTarget) setPending(action string, reasons []string, waiting string) {
	t.board.Update(func(s *Status) {
		if action == "" {
			s.Pending = nil
			return
		}
		p := &PendingReload{Action: action, Reasons: slices.Clone(reasons), Since: t.pendingAt, Waiting: waiting}
		if s.Pending != nil && waiting == "" {
			p.Waiting = s.Pending.Waiting
		}
		// A step of the same job (fleet reload slot, reloading, retry)
		// keeps its reasons: reloadDone records them in t.failed, so
		// that the same structural change is not tried again.
		if s.Pending != nil && reasons == nil && s.Pending.Action == action {
			p.Reasons = s.Pending.Reasons
		}
		s.Pending = p
	})
}

// jobState is what a job takes from the loop when its turn comes.
type jobState struct {
	cfg  []byte
	in   render.Input
	rev  int64
	want bool // the job is still wanted
}

func (t *HAProxyTarget) take(ctx context.Context, j *Job) (jobState, error) {
	var js jobState
	err := t.lanes.Call(ctx, func() {
		js = jobState{cfg: t.desired, in: t.in, rev: t.outRev, want: t.job == j}
	})
	if err != nil {
		return js, err
	}
	if !js.want {
		return js, errSuperseded
	}
	return js, nil
}

// jobRun is what one job took and did: written by its Run (worker
// goroutine), read by its Done (loop goroutine, after Run returned).
type jobRun struct {
	st  jobState
	res haproxy.Result
	err error
}

func (t *HAProxyTarget) runWrite(ctx context.Context, j *Job, r *jobRun) error {
	js, err := t.take(ctx, j)
	if err != nil {
		return err
	}
	r.st = js
	return t.rl.Write(ctx, js.cfg)
}

func (t *HAProxyTarget) runReload(ctx context.Context, j *Job, r *jobRun, action string) error {
	if t.slot != nil {
		js, err := t.take(ctx, j)
		if err != nil {
			return err
		}
		_ = t.lanes.Call(ctx, func() { t.setPending(action, nil, "fleet reload slot") })
		release, err := t.slot.Acquire(ctx, haproxy.Action(action), js.cfg, js.in)
		if err != nil {
			return err
		}
		defer func() { release(r.err == nil, r.err) }()
	}
	js, err := t.take(ctx, j)
	if err != nil {
		r.err = err
		return err
	}
	r.st = js
	_ = t.lanes.Call(ctx, func() { t.setPending(action, nil, "reloading") })
	r.res, r.err = t.rl.Apply(ctx, js.cfg)
	return r.err
}

func (t *HAProxyTarget) writeDone(j *Job, r *jobRun, err error) {
	if t.job == j {
		t.job = nil
	}
	switch {
	case superseded(err) || errors.Is(err, context.Canceled) && t.ctx.Err() == nil:
		// A newer render replaced this write (its haproxy -c was cut
		// short): nothing failed, the newest one is written next.
		t.reconcile()
		return
	case errors.Is(err, context.Canceled):
		return // haconfd is stopping
	case err == nil:
		t.setLive(r.st.cfg)
		t.rejected = nil
		now := time.Now()
		t.board.Update(func(s *Status) { s.LastApply = now })
		t.bus.Publish(Event{Kind: EventWritten, Lane: "reload", Rev: r.st.rev, Action: string(haproxy.ActionWrite)})
		if m := t.opts.Metrics; m != nil {
			m.Applies.WithLabelValues("ok", string(haproxy.ActionWrite)).Inc()
		}
		t.log.Debug("live file written (servers already changed through the runtime API)", "rev", r.st.rev)
	case errors.Is(err, haproxy.ErrInvalidConfig):
		t.rejected = r.st.cfg
		t.fail(r.st.rev, "write", "reload", err)
		t.log.Error("haproxy -c refused the config; the runtime changes are undone and the live file stays", "rev", r.st.rev)
		t.lastErr = err
	default:
		t.fail(r.st.rev, "write", "reload", err)
		t.lastErr = err
		t.retryLater(err)
		return
	}
	t.reconcile()
}

func (t *HAProxyTarget) reloadDone(j *Job, r *jobRun, action string, err error) {
	if t.job == j {
		t.job = nil
	}
	res := r.res
	if res.RolledBack {
		t.board.Update(func(s *Status) { s.Rollbacks++ })
		if m := t.opts.Metrics; m != nil {
			m.Rollbacks.Inc()
		}
	}
	if (superseded(err) || errors.Is(err, context.Canceled)) && res.Action == haproxy.ActionNone && !res.RolledBack {
		if t.ctx.Err() == nil {
			t.reconcile()
		}
		return
	}
	if err == nil {
		t.setLive(r.st.cfg)
		t.running = true
		t.forceReload = false
		t.failed = nil
		t.rejected = nil
		clear(t.refused)
		if t.retryStop != nil {
			t.retryStop()
			t.retryStop = nil
		}
		now := time.Now()
		done := res.Action
		if done == haproxy.ActionNone {
			done = haproxy.Action(action)
		}
		t.board.Update(func(s *Status) {
			s.LastApply, s.LastAction = now, string(done)
			s.Applies++
			s.Reloads++
			s.HAProxy.PID, s.HAProxy.Running = res.PID, true
		})
		if m := t.opts.Metrics; m != nil {
			switch done {
			case haproxy.ActionReload:
				m.Reloads.Inc()
			case haproxy.ActionStart:
				m.Starts.Inc()
			}
			m.ApplyDuration.WithLabelValues(string(done)).Observe(res.Duration.Seconds())
			m.Applies.WithLabelValues("ok", string(done)).Inc()
		}
		t.how = done
		t.log.Info("haproxy "+map[haproxy.Action]string{haproxy.ActionStart: "started", haproxy.ActionReload: "reloaded"}[done], "rev", r.st.rev, "pid", res.PID, "duration", res.Duration.Round(time.Millisecond), "steps", strings.Join(res.Steps, "; "))
		t.bus.Publish(Event{Kind: EventReloaded, Lane: "reload", Rev: r.st.rev, Action: string(done), Steps: res.Steps, Duration: res.Duration, PID: res.PID})
		t.beliefOK = false
		t.resync()
		t.reconcile()
		return
	}
	reasons := []string(nil)
	if p := t.board.Get().Pending; p != nil {
		reasons = p.Reasons
	}
	if errors.Is(err, haproxy.ErrReloadHeld) {
		t.log.Warn("reload held by the fleet; the live config stays", "rev", r.st.rev, "err", err)
		t.board.Update(func(s *Status) { s.Held = err.Error() })
		t.bus.Publish(Event{Kind: EventHeld, Lane: "reload", Rev: r.st.rev, Detail: err.Error()})
		t.failed = &failure{reasons: reasons, err: err}
		t.retryLater(err)
		return
	}
	if res.RolledBack && res.PID > 0 {
		err = fmt.Errorf("%w; rolled back: pid %d serves the previous config", err, res.PID)
	}
	t.fail(r.st.rev, action, "reload", err)
	t.bus.Publish(Event{Kind: EventFailed, Lane: "reload", Rev: r.st.rev, Action: action, Steps: res.Steps, Err: err.Error(), Duration: res.Duration})
	t.lastErr = err
	t.failed = &failure{reasons: reasons, err: err}
	if p := t.rl.Process(t.ctx); !p.Healthy {
		t.running = false
	}
	if retryable(err) {
		t.retryLater(err)
	}
	t.publish()
}

// retryLater tries the failed change again after a backoff.
func (t *HAProxyTarget) retryLater(err error) {
	if t.retryStop != nil {
		return
	}
	d := t.opts.RetryMin
	if t.failed != nil && t.failed.retry {
		d = t.opts.RetryMax
	}
	t.log.Info("will retry", "in", d)
	t.setPending(pendingAction(t), nil, "retry in "+d.String())
	t.retryStop = t.lanes.After(d, func() {
		t.retryStop = nil
		if t.failed != nil {
			t.failed.retry = true
		}
		t.reconcile()
	})
}

func pendingAction(t *HAProxyTarget) string {
	if p := t.board.Get().Pending; p != nil {
		return p.Action
	}
	return "reload"
}

// retryable says whether the same change may succeed later: a start that
// failed, a bind address that was busy, a reload the fleet held.
func retryable(err error) bool {
	return errors.Is(err, haproxy.ErrStartFailed) || errors.Is(err, haproxy.ErrBindInUse) || errors.Is(err, haproxy.ErrReloadHeld)
}

func superseded(err error) bool { return errors.Is(err, errSuperseded) }

// markConverged records that everything the newest render asks for is
// live: every earlier error, hold and pending reload is over.
func (t *HAProxyTarget) markConverged() {
	t.failed = nil
	if t.retryStop != nil {
		t.retryStop()
		t.retryStop = nil
	}
	if t.renderErr != nil {
		return
	}
	rev := t.outRev
	servers := 0
	if lines, err := haproxy.ServerLines(t.live); err == nil {
		for _, m := range lines {
			servers += len(m)
		}
	}
	was := t.board.Get()
	t.board.Update(func(s *Status) {
		s.Applied = max(s.Applied, rev)
		s.RuntimeApplied = max(s.RuntimeApplied, rev)
		s.LastError = ""
		if len(s.HeldServers) == 0 {
			s.Held, s.HeldSince = "", time.Time{}
		}
		s.Pending = nil
		s.Servers = servers
	})
	if m := t.opts.Metrics; m != nil {
		m.AppliedRev.Set(float64(rev))
		m.Servers.Reset()
		for _, svc := range t.out.Services {
			for _, n := range svc.Nodes {
				state := n.State
				if state == "" {
					state = "unknown"
				}
				m.Servers.WithLabelValues(svc.Name, state).Inc()
			}
		}
	}
	if was.Applied < rev || was.LastError != "" || was.Pending != nil {
		how := t.how
		if how == "" {
			how = haproxy.ActionNone
		}
		var took time.Duration
		if !t.since.IsZero() {
			took = time.Since(t.since)
		}
		lvl := slog.LevelInfo
		if how == haproxy.ActionNone && t.convergedOnce {
			lvl = slog.LevelDebug // a revision that changed nothing here (a resync, another prefix)
		}
		t.convergedOnce = true
		t.log.Log(t.ctx, lvl, "config live", "rev", rev, "action", how, "servers", servers, "duration", took.Round(time.Microsecond))
		t.bus.Publish(Event{Kind: EventConverged, Rev: rev, Action: string(how), Duration: took})
		if how != haproxy.ActionNone {
			t.board.Update(func(s *Status) { s.LastAction = string(how) })
		}
	}
	t.how, t.since = "", time.Time{}
}

// noteHolds publishes the guards' decision.
func (t *HAProxyTarget) noteHolds(g guardResult) {
	for _, h := range g.NewHolds {
		t.log.Warn("server held, stays configured", "server", h.Section+"/"+h.Server, "guard", h.Guard, "reason", h.Reason, "until", untilText(h.Until))
		if m := t.opts.Metrics; m != nil {
			m.GuardHolds.WithLabelValues(h.Guard).Inc()
		}
		t.bus.Publish(Event{Kind: EventHeld, Rev: t.outRev, Servers: []string{h.Section + "/" + h.Server}, Detail: h.Guard + ": " + h.Reason})
	}
	for _, h := range g.Released {
		t.log.Info("held server released", "server", h.Section+"/"+h.Server, "guard", h.Guard, "held_for", time.Since(h.Since).Round(time.Millisecond))
		t.bus.Publish(Event{Kind: EventReleased, Rev: t.outRev, Servers: []string{h.Section + "/" + h.Server}, Detail: h.Guard})
	}
	if t.guardStop != nil {
		t.guardStop()
		t.guardStop = nil
	}
	if !g.Next.IsZero() {
		t.guardStop = t.lanes.After(max(g.Next.Sub(t.lanes.Now()), 0), func() {
			t.guardStop = nil
			t.reconcile()
		})
	}
	if m := t.opts.Metrics; m != nil {
		m.HeldServers.Reset()
		for _, h := range g.Held {
			m.HeldServers.WithLabelValues(h.Section, h.Guard).Inc()
		}
	}
	held := g.Held
	t.board.Update(func(s *Status) {
		s.HeldServers = held
		s.Holds += len(g.NewHolds)
		switch {
		case len(held) > 0:
			var parts []string
			for _, h := range held {
				parts = append(parts, h.String())
			}
			s.Held = "servers held: " + strings.Join(parts, ", ")
			if s.HeldSince.IsZero() {
				s.HeldSince = held[0].Since
			}
		case t.startHeld == "" && strings.HasPrefix(s.Held, "servers held: "):
			s.Held, s.HeldSince = "", time.Time{}
		}
	})
}

func untilText(t time.Time) string {
	if t.IsZero() {
		return "its node returns, other servers come back, or --force"
	}
	return t.UTC().Format(time.RFC3339)
}

// publish refreshes the status fields derived from the target's state.
func (t *HAProxyTarget) publish() {
	var draining []string
	for _, k := range slices.Sorted(maps.Keys(t.drains)) {
		draining = append(draining, k)
	}
	t.board.Update(func(s *Status) { s.Draining = draining })
	t.publishServers()
}

// publishServers refreshes the server views: every server of the desired
// config, plus the ones still draining.
func (t *HAProxyTarget) publishServers() {
	if t.desired == nil || t.out == nil {
		return
	}
	lines, err := haproxy.ServerLines(t.desired)
	if err != nil {
		return
	}
	nodes := map[string]render.Node{}
	for _, svc := range t.out.Services {
		for _, n := range svc.Nodes {
			if _, dup := nodes[n.Name]; !dup {
				nodes[n.Name] = n
			}
		}
	}
	held := map[string]HeldServer{}
	for _, h := range t.board.Get().HeldServers {
		held[h.Section+"/"+h.Server] = h
	}
	var views []ServerView
	for _, section := range slices.Sorted(maps.Keys(lines)) {
		for _, name := range slices.Sorted(maps.Keys(lines[section])) {
			v := ServerView{Section: section, Server: name}
			f := strings.Fields(lines[section][name])
			if len(f) > 2 {
				v.Addr = f[2]
			}
			v.Weight = 1
			for i := 3; i < len(f); i++ {
				switch f[i] {
				case "disabled":
					v.Disabled = true
				case "weight":
					if i+1 < len(f) {
						fmt.Sscan(f[i+1], &v.Weight)
					}
				}
			}
			v.InRotation = !v.Disabled && v.Weight > 0
			if n, ok := nodes[name]; ok {
				v.Node, v.State = n.ID, n.State
				nodeView(&v, n)
			}
			if v.Disabled && len(v.Reasons) == 0 {
				v.Reasons = append(v.Reasons, "disabled by the template")
			}
			if v.Weight == 0 && !v.Disabled && len(v.Reasons) == 0 {
				v.Reasons = append(v.Reasons, "weight 0 (drain) by the template")
			}
			if h, ok := held[section+"/"+name]; ok {
				v.Held = true
				v.Reasons = append(v.Reasons, fmt.Sprintf("node gone from etcd; held by %s: %s", h.Guard, h.Reason))
			}
			views = append(views, v)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(t.drains)) {
		d := t.drains[k]
		views = append(views, ServerView{Section: d.op.Backend, Server: d.op.Server, Addr: fmt.Sprintf("%s:%d", d.op.PrevAddr, d.op.PrevPort),
			Disabled: true, Draining: true, Reasons: []string{"node gone from etcd: draining since " + d.since.UTC().Format(time.RFC3339)}})
	}
	t.board.SetServers(views)
}

// fail records a failure of stage (render, plan, runtime, write, start,
// reload); the live config stays.
func (t *HAProxyTarget) fail(rev int64, stage, lane string, err error) {
	t.log.Error(stage+" failed, live config unchanged", "rev", rev, "err", err)
	t.board.Update(func(st *Status) {
		st.LastError = fmt.Sprintf("%s: %v", stage, err)
		st.Failures++
	})
	if m := t.opts.Metrics; m != nil {
		m.Applies.WithLabelValues("error", stage).Inc()
	}
	if stage != "reload" && stage != "start" {
		t.bus.Publish(Event{Kind: EventFailed, Lane: lane, Rev: rev, Detail: stage, Err: err.Error()})
	}
}

// logProblems logs each malformed node once, until it changes; a
// registration still arriving is logged at info.
func (t *HAProxyTarget) logProblems(ps []render.Problem) {
	seen := make(map[string]bool, len(ps))
	var skipped, incomplete []string
	for _, p := range ps {
		msg := p.Error()
		seen[msg] = true
		if p.Drained {
			if !t.problems[msg] {
				t.log.Warn("node signal unreadable, node out of rotation", "key", p.Key, "reason", p.Reason)
			}
			continue
		}
		if p.Incomplete {
			incomplete = append(incomplete, msg)
		} else {
			skipped = append(skipped, msg)
		}
		if t.problems[msg] {
			continue
		}
		if p.Incomplete {
			t.log.Info("node registration incomplete, not added yet", "key", p.Key, "reason", p.Reason)
		} else {
			t.log.Warn("node skipped", "key", p.Key, "reason", p.Reason)
		}
	}
	t.problems = seen
	if m := t.opts.Metrics; m != nil {
		m.SkippedNodes.Set(float64(len(skipped)))
	}
	t.board.Update(func(st *Status) { st.Skipped, st.Incomplete = skipped, incomplete })
}

// dryRun checks and prints the newest desired config when it changed.
func (t *HAProxyTarget) dryRun() {
	if bytes.Equal(t.desired, t.printed) {
		t.cancelJob()
		t.board.Update(func(s *Status) { s.Applied = max(s.Applied, t.outRev) })
		return
	}
	if t.job != nil {
		t.lanes.Submit(t.job)
		return
	}
	j := &Job{Name: "dry-run", Wait: true}
	r := &jobRun{}
	t.job = j
	j.Run = func(ctx context.Context) error {
		js, err := t.take(ctx, j)
		if err != nil {
			return err
		}
		r.st = js
		if err := t.rl.Check(ctx, js.cfg); err != nil {
			return err
		}
		if _, err := t.opts.DryRunOut.Write(js.cfg); err != nil {
			return fmt.Errorf("dry run output: %w", err)
		}
		return nil
	}
	j.Done = func(err error) {
		if t.job == j {
			t.job = nil
		}
		switch {
		case superseded(err):
			t.reconcile()
		case err != nil:
			t.fail(r.st.rev, "check", "reload", err)
			t.lastErr = err
		default:
			t.printed = r.st.cfg
			t.log.Info("dry run: config rendered and valid, not applied", "rev", r.st.rev)
			t.board.Update(func(s *Status) { s.Applied = max(s.Applied, r.st.rev); s.Applies++; s.LastError = "" })
			t.reconcile()
		}
	}
	t.lanes.Submit(j)
}

// RenderInput is a snapshot as the renderer takes it: its pairs sorted
// by key (nodes are parsed from them, and the template key functions build
// a map only if a template uses them).
func RenderInput(s watch.Snapshot) render.Input {
	// Snapshots are sorted by key; one that is not (hand-made) goes as a
	// map.
	if !slices.IsSortedFunc(s.KVs, func(a, b watch.KV) int { return strings.Compare(a.Key, b.Key) }) {
		return render.Input{Revision: s.Revision, KVs: s.Map()}
	}
	in := render.Input{Revision: s.Revision}
	in.Sorted = make([]render.KVPair, len(s.KVs))
	in.Revs = make([]int64, len(s.KVs))
	for i, kv := range s.KVs {
		in.Sorted[i] = render.KVPair{Key: kv.Key, Value: kv.Value}
		in.Revs[i] = kv.ModRevision
	}
	return in
}
