// Package haproxy owns the HAProxy process and its configuration file:
// it validates a candidate (haproxy -c), writes it atomically, applies
// server-only changes through the runtime API without a reload (see
// PlanChange), and otherwise hot-reloads HAProxy: PID handoff with listener
// transfer (-x, -sf), or the master CLI in supervised master-worker mode.
// It verifies that the new process really serves, and rolls back to the
// last good configuration when it does not.
package haproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxSocketPath is the longest path a unix socket address can hold on Linux.
const maxSocketPath = 107

// pollInterval is how often a verification re-checks the process and socket.
const pollInterval = 20 * time.Millisecond

// Options configure a Manager. Only ConfigPath is required for Check; Apply
// also needs PIDFile (or ReloadCmd), and reloads need Socket (or ReloadCmd).
type Options struct {
	Bin        string        // haproxy binary, default "haproxy"
	ConfigPath string        // the live config file
	PIDFile    string        // pidfile written by haproxy -p
	Socket     string        // stats socket path (level admin, expose-fd listeners) used for -x and verification
	ReloadCmd  string        // optional operator command (sh -c, env HACONFD_CONFIG=<path>) that reloads a HAProxy we do not manage
	Settle     time.Duration // wait after a start/reload before the final liveness check, default 200ms
	Timeout    time.Duration // bound for haproxy -c, for a start and for each verification, default 30s
	StopGrace  time.Duration // how long Stop waits after SIGUSR1 before SIGTERM, default 5s
	Logger     *slog.Logger

	// Mode chooses how changes are applied: "auto" (default) applies
	// server-only changes through the runtime API on Socket and reloads for
	// anything else; "runtime" does the same and logs every structural
	// reload as a warning; "reload" always reloads.
	Mode string
	// DrainTimeout bounds how long a removed server keeps its sessions:
	// it is set to drain, and when sessions remain after DrainTimeout they
	// are ended with "shutdown sessions". Default 10s (0 means the
	// default; a removal blocks the next apply while it drains).
	DrainTimeout time.Duration
	// StateFile is the server-state-file of the configuration (global
	// "server-state-file" + "load-server-state-from-file global"): before
	// every reload "show servers state" is written there atomically, so
	// that the new process keeps what the runtime API did (drain, maint,
	// health). Servers that the reload itself changes are left out of it.
	// It is removed before a fresh start. Optional.
	StateFile string
	// Supervise runs HAProxy in master-worker mode as a child of this
	// process ("haproxy -W -S MasterSocket,mode,660 -f ConfigPath", in the
	// foreground), restarts it when it dies (backoff 100ms..5s) and
	// reloads it through the master CLI, confirmed with "show proc".
	Supervise    bool
	MasterSocket string // master CLI socket path, required with Supervise

	// BeforeReload, if set, is called right before HAProxy is started or
	// reloaded with a new configuration (action ActionStart or
	// ActionReload, also for a runtime change that fell back to a
	// reload), after cfg passed haproxy -c and the bind check; never for
	// a change applied through the runtime API, nor for a rollback. It
	// may block (e.g. to wait for its turn). An error aborts the apply
	// with the live file untouched: Apply returns an error that wraps
	// ErrReloadHeld and the hook's error. Otherwise done (may be nil) is
	// called once the attempt is over (verified, or failed and rolled
	// back) with its outcome, before Apply returns.
	BeforeReload func(ctx context.Context, action Action, cfg []byte) (done func(ok bool, err error), err error)
}

// Modes of Options.Mode.
const (
	ModeAuto    = "auto"
	ModeRuntime = "runtime"
	ModeReload  = "reload"
)

// DefaultDrainTimeout is Options.DrainTimeout when unset.
const DefaultDrainTimeout = 10 * time.Second

// Action says what Apply did.
type Action string

// Actions of Apply.
const (
	ActionNone   Action = "none"
	ActionStart  Action = "start"
	ActionReload Action = "reload"
	// ActionRuntime: the change went through the runtime API (no new
	// process) and the file was rewritten; Commands says how many commands.
	ActionRuntime Action = "runtime"
)

// Result describes one Apply. On a failed start Action is what was
// attempted, RolledBack is true and PID is the process serving afterwards
// (0 if none).
type Result struct {
	Action     Action
	PID        int
	OldPIDs    []int
	RolledBack bool
	Duration   time.Duration
	Commands   int // runtime API commands sent (ActionRuntime, or before a fallback)
	// RuntimeDuration (ActionRuntime): from the start of Apply until the
	// last runtime command was answered, i.e. until HAProxy did the change;
	// the rest of Duration is haproxy -c and the file write.
	RuntimeDuration time.Duration
	Fallback        string // why a runtime apply fell back to a reload ("" when it did not)
}

// Manager applies configurations to one HAProxy. It is safe for concurrent
// use; Apply and Stop calls are serialized.
type Manager struct {
	swept       bool // stale stage files of a killed predecessor removed (first Apply)
	forceReload bool // processes of an unfinished handoff were adopted: reload even on same bytes
	opts        Options
	log         *slog.Logger

	mu       sync.Mutex
	lastGood []byte
	known    map[int]struct{} // every HAProxy pid seen, so Stop also ends draining old ones

	// Supervised mode (guarded by mu, except closing).
	master       *masterProc
	restartDelay time.Duration
	closing      atomic.Bool // Stop is ending the master: do not restart it
	wg           sync.WaitGroup
	outMu        sync.Mutex
	lastAlert    string
}

// New checks opts and returns a Manager.
func New(opts Options) (*Manager, error) {
	if opts.Bin == "" {
		opts.Bin = "haproxy"
	}
	if _, err := exec.LookPath(opts.Bin); err != nil {
		return nil, fmt.Errorf("haproxy option Bin %q: not an executable: %w", opts.Bin, err)
	}
	if opts.ConfigPath == "" {
		return nil, errors.New("haproxy option ConfigPath: required")
	}
	if st, err := os.Stat(opts.ConfigPath); err == nil && st.IsDir() {
		return nil, fmt.Errorf("haproxy option ConfigPath %q: is a directory", opts.ConfigPath)
	}
	if err := dirExists("ConfigPath", opts.ConfigPath); err != nil {
		return nil, err
	}
	if opts.PIDFile != "" {
		if err := dirExists("PIDFile", opts.PIDFile); err != nil {
			return nil, err
		}
	}
	if opts.Socket != "" {
		if len(opts.Socket) > maxSocketPath {
			return nil, fmt.Errorf("haproxy option Socket %q: path is %d bytes, a unix socket path holds at most %d", opts.Socket, len(opts.Socket), maxSocketPath)
		}
		if err := dirExists("Socket", opts.Socket); err != nil {
			return nil, err
		}
	}
	if strings.TrimSpace(opts.ReloadCmd) == "" && opts.ReloadCmd != "" {
		return nil, errors.New("haproxy option ReloadCmd: only whitespace")
	}
	switch opts.Mode {
	case "":
		opts.Mode = ModeAuto
	case ModeAuto, ModeRuntime, ModeReload:
	default:
		return nil, fmt.Errorf("haproxy option Mode %q: must be auto, runtime or reload", opts.Mode)
	}
	switch {
	case opts.DrainTimeout < 0:
		return nil, fmt.Errorf("haproxy option DrainTimeout %v: must not be negative", opts.DrainTimeout)
	case opts.DrainTimeout == 0:
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.StateFile != "" {
		if err := dirExists("StateFile", opts.StateFile); err != nil {
			return nil, err
		}
	}
	if opts.Supervise {
		switch {
		case opts.MasterSocket == "":
			return nil, errors.New("haproxy option MasterSocket: required with Supervise")
		case opts.ReloadCmd != "":
			return nil, errors.New("haproxy option ReloadCmd: not with Supervise (haconfd reloads the master itself)")
		case len(opts.MasterSocket) > maxSocketPath:
			return nil, fmt.Errorf("haproxy option MasterSocket %q: path is %d bytes, a unix socket path holds at most %d", opts.MasterSocket, len(opts.MasterSocket), maxSocketPath)
		}
		if err := dirExists("MasterSocket", opts.MasterSocket); err != nil {
			return nil, err
		}
	} else if opts.MasterSocket != "" {
		return nil, errors.New("haproxy option MasterSocket: only with Supervise")
	}
	switch {
	case opts.Settle < 0:
		return nil, fmt.Errorf("haproxy option Settle %v: must not be negative", opts.Settle)
	case opts.Settle == 0:
		opts.Settle = 200 * time.Millisecond
	}
	switch {
	case opts.Timeout < 0:
		return nil, fmt.Errorf("haproxy option Timeout %v: must not be negative", opts.Timeout)
	case opts.Timeout == 0:
		opts.Timeout = 30 * time.Second
	}
	switch {
	case opts.StopGrace < 0:
		return nil, fmt.Errorf("haproxy option StopGrace %v: must not be negative", opts.StopGrace)
	case opts.StopGrace == 0:
		opts.StopGrace = 5 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		opts:  opts,
		log:   log.With("component", "haproxy"),
		known: make(map[int]struct{}),
	}, nil
}

func dirExists(option, path string) error {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("haproxy option %s %q: directory %s: %w", option, path, dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("haproxy option %s %q: %s is not a directory", option, path, dir)
	}
	return nil
}

// LastGood returns the last configuration that Apply made live and
// verified (nil before the first success).
func (m *Manager) LastGood() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.lastGood)
}

// Check validates cfg with haproxy -c, staged next to ConfigPath (so that
// relative paths resolve as they will live); the live file is untouched.
// Alerts name ConfigPath as their file.
func (m *Manager) Check(ctx context.Context, cfg []byte) error {
	stage, err := stageFile(m.opts.ConfigPath, cfg)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer func() { _ = os.Remove(stage) }()
	return m.validate(ctx, stage)
}

func (m *Manager) validate(ctx context.Context, stage string) error {
	vctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	err := Validate(vctx, m.opts.Bin, stage)
	var ice *InvalidConfigError
	if errors.As(err, &ice) {
		for i := range ice.Errors {
			if ice.Errors[i].File == stage {
				ice.Errors[i].File = m.opts.ConfigPath
			}
		}
		ice.Output = strings.ReplaceAll(ice.Output, stage, m.opts.ConfigPath)
		return ice
	}
	return err
}

// PIDs returns the pids in PIDFile that are alive.
func (m *Manager) PIDs() []int {
	if m.opts.PIDFile == "" {
		return nil
	}
	pids, err := readPIDFile(m.opts.PIDFile)
	if err != nil {
		m.log.Debug("read pidfile", "err", err)
		return nil
	}
	return alivePIDs(pids)
}

// procState is what we know about the running HAProxy.
type procState struct {
	pids      []int // alive pids from PIDFile
	answering bool  // the stats socket answered show info
	infoPID   int   // Pid reported by the socket
	stopping  bool  // the answering process is soft-stopping
}

func (m *Manager) state(ctx context.Context) procState {
	if m.opts.Supervise {
		return m.supervisedState(ctx)
	}
	st := procState{pids: m.PIDs()}
	if m.opts.Socket != "" {
		if info, err := ShowInfo(ctx, m.opts.Socket); err == nil {
			st.answering = true
			st.infoPID, _ = strconv.Atoi(info["Pid"])
			st.stopping = info["Stopping"] == "1"
		}
	}
	return st
}

// healthy: HAProxy runs and, when we have a socket, answers from a
// non-stopping process of the pidfile.
func (m *Manager) healthy(st procState) bool {
	if m.opts.ReloadCmd != "" {
		switch {
		case m.opts.Socket != "":
			return st.answering && !st.stopping
		case m.opts.PIDFile != "":
			return len(st.pids) > 0
		default:
			return true // nothing to look at: trust the operator's setup
		}
	}
	if len(st.pids) == 0 {
		return false
	}
	return m.opts.Socket == "" || (st.answering && !st.stopping && slices.Contains(st.pids, st.infoPID))
}

func (m *Manager) running(st procState) bool {
	if m.opts.Supervise {
		return m.master != nil && m.master.alive()
	}
	return len(st.pids) > 0 || (m.opts.ReloadCmd != "" && st.answering)
}

func (st procState) servingPID() int {
	if st.answering {
		return st.infoPID
	}
	if len(st.pids) > 0 {
		return st.pids[0]
	}
	return 0
}

// Apply makes next the live configuration:
//
//  1. same bytes as the live file and HAProxy healthy: ActionNone;
//  2. stage next beside ConfigPath and validate it (haproxy -c);
//  3. pre-check that bind addresses new to HAProxy are free;
//  4. back the live file up to ConfigPath+".bak", rename the stage onto it;
//  5. start HAProxy, or reload it with -x Socket -sf <old pids> (or run ReloadCmd);
//  6. verify: new pid in PIDFile, alive, answering "show info" with its
//     Pid, still so after Settle;
//  7. on failure restore the previous file and make sure it is served (the
//     old process, or a fresh start of it).
//
// A rejected candidate returns the *InvalidConfigError (alerts name
// ConfigPath, lines refer to next), a taken address ErrBindInUse, both with
// the live file untouched; a failed start returns ErrStartFailed with
// Result.RolledBack set. A ctx canceled before step 4 abandons the apply;
// after it, verification and rollback finish on a bounded background context.
func (m *Manager) Apply(ctx context.Context, next []byte) (Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.swept {
		m.swept = true
		if n := sweepStages(m.opts.ConfigPath, time.Minute); n > 0 {
			m.log.Info("removed stage files left by an earlier run", "files", n)
		}
		m.recoverHandoff()
	}
	start := time.Now()
	var done func(ok bool, err error)
	res, err := m.apply(ctx, next, start, &done)
	res.Duration = time.Since(start)
	if done != nil {
		done(err == nil, err)
	}
	return res, err
}

func (m *Manager) apply(ctx context.Context, next []byte, start time.Time, done *func(bool, error)) (Result, error) {
	res := Result{Action: ActionNone}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("apply: %w", err)
	}
	if m.opts.ReloadCmd == "" && m.opts.PIDFile == "" && !m.opts.Supervise {
		return res, errors.New("apply: option PIDFile is required to manage HAProxy (or set ReloadCmd or Supervise)")
	}
	cfgPath := m.opts.ConfigPath

	// 1. Compare with the live file and look at the running HAProxy.
	live, liveExists, err := readLive(cfgPath)
	if err != nil {
		return res, fmt.Errorf("apply: %w", err)
	}
	st := m.state(ctx)
	m.remember(st.pids...)
	res.OldPIDs = st.pids
	same := liveExists && bytes.Equal(live, next)
	if same && m.healthy(st) && !m.forceReload {
		m.lastGood = slices.Clone(next)
		res.PID = st.servingPID()
		return res, nil
	}
	// Server-only change: the runtime API, no reload.
	if !same && liveExists && m.opts.Mode != ModeReload && m.opts.Socket != "" && m.healthy(st) {
		rres, done, err := m.applyRuntime(ctx, live, next, st, start)
		if done {
			return rres, err
		}
		res.Commands, res.Fallback = rres.Commands, rres.Fallback
	}

	res.Action = ActionStart
	if m.running(st) {
		res.Action = ActionReload
	}
	if m.opts.ReloadCmd == "" && !m.opts.Supervise && res.Action == ActionReload && m.opts.Socket == "" {
		return Result{Action: ActionNone, OldPIDs: st.pids}, errors.New("apply: refusing to reload without option Socket: listening sockets must be passed with -x (set Socket, or ReloadCmd)")
	}

	// 2. Stage and validate.
	stage, err := stageFile(cfgPath, next)
	if err != nil {
		return Result{Action: ActionNone, OldPIDs: st.pids}, fmt.Errorf("apply: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = os.Remove(stage)
		}
	}()
	if err := m.validate(ctx, stage); err != nil {
		if res.Commands > 0 {
			// The runtime API already took part of next: undo it.
			ures, _, uerr := m.undoRuntime(context.WithoutCancel(ctx), res, live, next, st, err)
			return ures, uerr
		}
		return Result{Action: ActionNone, OldPIDs: st.pids}, err
	}

	// 3. New bind addresses must be free (a taken one pauses every listener ~2 s).
	var held []byte
	if len(st.pids) > 0 || st.answering {
		held = live
	}
	if err := checkBinds(next, held); err != nil {
		return Result{Action: ActionNone, OldPIDs: st.pids}, fmt.Errorf("apply: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Result{Action: ActionNone, OldPIDs: st.pids}, fmt.Errorf("apply: abandoned before swap: %w", err)
	}
	if hook := m.opts.BeforeReload; hook != nil {
		d, err := hook(ctx, res.Action, next)
		if err != nil {
			herr := fmt.Errorf("apply: %w: %w", ErrReloadHeld, err)
			if res.Commands > 0 {
				// The runtime API already took part of next: undo it.
				ures, _, uerr := m.undoRuntime(context.WithoutCancel(ctx), res, live, next, st, herr)
				return ures, uerr
			}
			return Result{Action: ActionNone, OldPIDs: st.pids}, herr
		}
		*done = d
	}

	// Keep what the runtime API did across the reload.
	if res.Action == ActionReload {
		m.saveState(live, next, st)
	} else {
		m.dropStateFile()
	}

	// 4. Swap (skipped when the live file already has these bytes).
	if !same {
		if liveExists {
			if err := writeAtomic(cfgPath+".bak", live); err != nil {
				return Result{Action: ActionNone, OldPIDs: st.pids}, fmt.Errorf("apply: backup: %w", err)
			}
		}
		committed = true
		if err := commitStage(stage, cfgPath); err != nil {
			return Result{Action: ActionNone, OldPIDs: st.pids}, fmt.Errorf("apply: %w", err)
		}
	}

	// From here on, finish even if ctx is canceled: never leave a broken state.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 4*(m.opts.Timeout+m.opts.Settle))
	defer cancel()

	// 5-6. Start or reload, then verify.
	newPID, err := m.launchAndVerify(bctx, st)
	if err == nil {
		m.lastGood = slices.Clone(next)
		res.PID = newPID
		m.log.Debug("haproxy config applied", "action", res.Action, "pid", newPID, "old_pids", st.pids)
		return res, nil
	}

	// 7. Roll back.
	res.RolledBack = true
	prev, prevExists := live, liveExists
	servingPID, rbErr := m.rollback(bctx, prev, prevExists, st, newPID)
	res.PID = servingPID
	if rbErr != nil {
		err = fmt.Errorf("%w; rollback failed: %w", err, rbErr)
	}
	m.log.Error("haproxy config not applied, rolled back", "action", res.Action, "err", err, "pid", servingPID)
	return res, err
}

func (m *Manager) remember(pids ...int) {
	for _, p := range pids {
		if p > 0 {
			m.known[p] = struct{}{}
		}
	}
}

// launchAndVerify starts or reloads HAProxy on the live file and verifies
// the new process. It returns the new pid (when known) even on failure.
func (m *Manager) launchAndVerify(ctx context.Context, old procState) (int, error) {
	if m.opts.ReloadCmd != "" {
		return m.runReloadCmd(ctx, old)
	}
	if m.opts.Supervise {
		return m.launchSupervised(ctx, old)
	}
	args := []string{"-D", "-p", m.opts.PIDFile, "-f", m.opts.ConfigPath}
	if len(old.pids) > 0 {
		if old.answering {
			args = append(args, "-x", m.opts.Socket)
		} else {
			// -x on a dead socket makes haproxy exit 1; the old process is unreachable anyway.
			m.log.Warn("stats socket does not answer, reloading without listener transfer", "socket", m.opts.Socket, "old_pids", old.pids)
		}
		// No -sf: the old process is told to stop only once the new one
		// has been verified (handOff). With -sf HAProxy stops it as soon as
		// the new one has bound, so a new process that dies after the
		// fork (a missing chroot, say) leaves nobody listening until a
		// rollback restart. Both share the listening sockets meanwhile.
	}
	if len(old.pids) > 0 {
		// Until handOff, old and new serve side by side: note the old pids
		// so that a haconfd killed in between has its successor stop them.
		if err := writeAtomic(m.handoffPath(), pidLines(old.pids)); err != nil {
			m.log.Warn("cannot note the pids being handed over", "file", m.handoffPath(), "err", err)
		}
		defer func() { _ = os.Remove(m.handoffPath()) }()
	}
	lctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	out, err := launch(lctx, m.opts.Bin, args, os.Environ())
	defer func() {
		if out != "" {
			_ = os.Remove(out)
		}
	}()
	if err != nil {
		return 0, fmt.Errorf("%w: %s %s: %v%s", ErrStartFailed, m.opts.Bin, strings.Join(args, " "), err, alertSuffix(readOutput(out)))
	}
	newPID, err := m.waitNewPID(ctx, old.pids, out)
	if err != nil {
		return 0, err
	}
	m.remember(newPID)
	if err := m.verify(ctx, newPID, out); err != nil {
		return newPID, err
	}
	if err := m.handOff(ctx, newPID, old.pids, out); err != nil {
		return newPID, err
	}
	m.forceReload = false
	return newPID, nil
}

func (m *Manager) handoffPath() string { return m.opts.PIDFile + ".handoff" }

func pidLines(pids []int) []byte {
	var b strings.Builder
	for _, p := range pids {
		b.WriteString(strconv.Itoa(p))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// recoverHandoff finishes a reload that a killed haconfd left half done:
// the old HAProxy processes were never told to stop. If the new process
// (in the pidfile) serves, they are soft-stopped; if it is gone too, they
// are adopted (pidfile) and the next Apply reloads them onto the file.
func (m *Manager) recoverHandoff() {
	if m.opts.PIDFile == "" || m.opts.Supervise || m.opts.ReloadCmd != "" {
		return
	}
	noted, err := readPIDFile(m.handoffPath())
	if err != nil || len(noted) == 0 {
		return
	}
	defer func() { _ = os.Remove(m.handoffPath()) }()
	cur, _ := readPIDFile(m.opts.PIDFile)
	cur = alivePIDs(cur)
	var orphans []int
	for _, p := range alivePIDs(noted) {
		if !slices.Contains(cur, p) && runsConfig(p, m.opts.ConfigPath) {
			orphans = append(orphans, p)
		}
	}
	if len(orphans) == 0 {
		return
	}
	m.remember(orphans...)
	if len(cur) > 0 {
		m.log.Warn("soft-stopping HAProxy processes left serving by an unfinished reload", "pids", orphans, "serving", cur)
		for _, p := range orphans {
			_ = syscall.Kill(p, syscall.SIGUSR1)
		}
		return
	}
	m.log.Warn("adopting HAProxy processes left by an unfinished reload; reloading them onto the live file", "pids", orphans)
	if err := m.restorePIDFile(orphans); err == nil {
		m.forceReload = true
	}
}

// runsConfig says whether pid is a haproxy started on config.
func runsConfig(pid int, config string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	return len(args) > 0 && strings.Contains(filepath.Base(args[0]), "haproxy") && slices.Contains(args, config)
}

// handOff soft-stops the old processes (SIGUSR1, what -sf sends: stop
// listening, finish the connections in progress, exit) once the new one
// is verified, then waits until the socket answers only with the new pid.
func (m *Manager) handOff(ctx context.Context, newPID int, old []int, out string) error {
	for _, p := range old {
		if p == newPID {
			continue
		}
		if err := syscall.Kill(p, syscall.SIGUSR1); err != nil && !errors.Is(err, syscall.ESRCH) {
			m.log.Warn("soft-stop old haproxy", "pid", p, "err", err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	return m.waitAnswer(wctx, newPID, out)
}

// waitNewPID polls PIDFile for a pid that is not one of old.
func (m *Manager) waitNewPID(ctx context.Context, old []int, out string) (int, error) {
	wctx, cancel := context.WithTimeout(ctx, min(m.opts.Timeout, 5*time.Second))
	defer cancel()
	for {
		pids, err := readPIDFile(m.opts.PIDFile)
		if err == nil {
			for _, p := range pids {
				if !slices.Contains(old, p) {
					return p, nil
				}
			}
		}
		if sleepCtx(wctx, pollInterval) != nil {
			return 0, fmt.Errorf("%w: no new pid in %s (old %v)%s", ErrStartFailed, m.opts.PIDFile, old, alertSuffix(readOutput(out)))
		}
	}
}

// verify: pid alive and answering on the socket with its own Pid, then
// after Settle still alive and answering.
func (m *Manager) verify(ctx context.Context, pid int, out string) error {
	vctx, cancel := context.WithTimeout(ctx, m.opts.Timeout+m.opts.Settle)
	defer cancel()
	died := func() error {
		return fmt.Errorf("%w: new process %d exited after start%s", ErrStartFailed, pid, alertSuffix(readOutput(out)))
	}
	if !alive(pid) {
		return died()
	}
	if err := m.waitAnswer(vctx, pid, out); err != nil {
		return err
	}
	if err := sleepCtx(vctx, m.opts.Settle); err != nil {
		return fmt.Errorf("%w: verifying process %d: %v", ErrStartFailed, pid, err)
	}
	if !alive(pid) {
		return died()
	}
	// Still answering after Settle. The old process may share the socket
	// until handOff, so poll until the new one is the one that answers.
	return m.waitAnswer(vctx, pid, out)
}

// waitAnswer polls the socket until it reports Pid == pid (any pid when
// pid is 0). Without a socket it returns at once.
func (m *Manager) waitAnswer(ctx context.Context, pid int, out string) error {
	if m.opts.Socket == "" {
		return nil
	}
	var last error
	for {
		if pid > 0 && !alive(pid) {
			return fmt.Errorf("%w: new process %d exited after start%s", ErrStartFailed, pid, alertSuffix(readOutput(out)))
		}
		info, err := ShowInfo(ctx, m.opts.Socket)
		switch {
		case err != nil:
			last = err
		case pid == 0 || info["Pid"] == strconv.Itoa(pid):
			return nil
		default:
			last = fmt.Errorf("socket answers with pid %s", info["Pid"])
		}
		if sleepCtx(ctx, pollInterval) != nil {
			return fmt.Errorf("%w: process %d did not answer on %s in time: %v", ErrStartFailed, pid, m.opts.Socket, last)
		}
	}
}

// runReloadCmd runs the operator's reload command and verifies through
// Socket (a new Pid answering) or PIDFile when they are set.
func (m *Manager) runReloadCmd(ctx context.Context, old procState) (int, error) {
	lctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	env := append(os.Environ(), "HACONFD_CONFIG="+m.opts.ConfigPath)
	out, err := launch(lctx, "sh", []string{"-c", m.opts.ReloadCmd}, env)
	defer func() {
		if out != "" {
			_ = os.Remove(out)
		}
	}()
	if err != nil {
		output := readOutput(out)
		reason := firstAlert(output)
		if reason == "" {
			reason = fallbackMessage(output, err)
		}
		return 0, fmt.Errorf("%w: reload command: %v: %s", ErrStartFailed, err, reason)
	}
	vctx, vcancel := context.WithTimeout(ctx, m.opts.Timeout+m.opts.Settle)
	defer vcancel()
	switch {
	case m.opts.Socket != "":
		pid, err := m.waitNewInfoPID(vctx, old.infoPID)
		if err != nil {
			return 0, err
		}
		m.remember(pid)
		if err := sleepCtx(vctx, m.opts.Settle); err != nil {
			return pid, fmt.Errorf("%w: verifying process %d: %v", ErrStartFailed, pid, err)
		}
		info, err := ShowInfo(vctx, m.opts.Socket)
		if err != nil {
			return pid, fmt.Errorf("%w: process %d stopped answering after reload: %v", ErrStartFailed, pid, err)
		}
		if info["Pid"] != strconv.Itoa(pid) || info["Stopping"] == "1" {
			return pid, fmt.Errorf("%w: after reload the socket answers with pid %s (stopping %s), expected %d serving", ErrStartFailed, info["Pid"], info["Stopping"], pid)
		}
		return pid, nil
	case m.opts.PIDFile != "":
		pid, err := m.waitNewPID(vctx, old.pids, out)
		if err != nil {
			return 0, err
		}
		m.remember(pid)
		if err := sleepCtx(vctx, m.opts.Settle); err != nil {
			return pid, fmt.Errorf("%w: verifying process %d: %v", ErrStartFailed, pid, err)
		}
		if !alive(pid) {
			return pid, fmt.Errorf("%w: process %d exited after reload", ErrStartFailed, pid)
		}
		return pid, nil
	default:
		return 0, nil
	}
}

// waitNewInfoPID polls the socket until a non-stopping process with a Pid
// other than old answers.
func (m *Manager) waitNewInfoPID(ctx context.Context, old int) (int, error) {
	var last error
	for {
		info, err := ShowInfo(ctx, m.opts.Socket)
		if err != nil {
			last = err
		} else {
			pid, _ := strconv.Atoi(info["Pid"])
			if pid > 0 && pid != old && info["Stopping"] != "1" {
				return pid, nil
			}
			last = fmt.Errorf("socket still answers with pid %s", info["Pid"])
		}
		if sleepCtx(ctx, pollInterval) != nil {
			return 0, fmt.Errorf("%w: no new process answered on %s after reload: %v", ErrStartFailed, m.opts.Socket, last)
		}
	}
}

// rollback restores the previous live file and makes sure HAProxy serves
// it: the old process if it still serves, else a fresh start of it. It
// returns the pid serving afterwards.
func (m *Manager) rollback(ctx context.Context, prev []byte, prevExists bool, old procState, failedPID int) (int, error) {
	var restoreErr error
	if prevExists {
		restoreErr = writeAtomic(m.opts.ConfigPath, prev)
	} else {
		restoreErr = removeDurable(m.opts.ConfigPath) // there was no good config before
	}
	if restoreErr != nil {
		return 0, fmt.Errorf("restore %s: %w", m.opts.ConfigPath, restoreErr)
	}

	if m.opts.ReloadCmd != "" {
		if !prevExists {
			return 0, nil
		}
		pid, err := m.runReloadCmd(ctx, m.state(ctx))
		if err != nil {
			return 0, fmt.Errorf("reload of the previous config: %w", err)
		}
		return pid, nil
	}

	// The failed process goes first: it may share the socket with the old
	// one and would answer in its place.
	m.terminate(ctx, failedPID, old.pids)
	// Does the old process still serve (answers with an old pid, not stopping)?
	if len(old.pids) > 0 && m.opts.Socket != "" {
		info, err := ShowInfo(ctx, m.opts.Socket)
		if err == nil {
			pid, _ := strconv.Atoi(info["Pid"])
			if slices.Contains(old.pids, pid) && info["Stopping"] != "1" && alive(pid) {
				if m.opts.Supervise {
					return pid, nil // a failed master reload keeps the old workers
				}
				m.terminate(ctx, failedPID, old.pids)
				if err := m.restorePIDFile(old.pids); err != nil {
					return pid, err
				}
				return pid, nil
			}
		}
	}
	if !prevExists {
		if m.opts.Supervise {
			m.closing.Store(true)
			return 0, m.stopSupervised(ctx, m.master)
		}
		m.terminate(ctx, failedPID, old.pids)
		return 0, nil
	}
	if m.opts.Supervise {
		pid, err := m.launchSupervised(ctx, m.state(ctx))
		if err != nil {
			return 0, fmt.Errorf("reload of the previous config: %w", err)
		}
		return pid, nil
	}

	// Start the last good config again, taking over from whatever is left.
	cur := m.state(ctx)
	cur.pids = alivePIDs(append(slices.Clone(cur.pids), append(slices.Clone(old.pids), failedPID)...))
	slices.Sort(cur.pids)
	cur.pids = slices.Compact(cur.pids)
	m.remember(cur.pids...)
	pid, err := m.launchAndVerify(ctx, cur)
	if err != nil {
		return 0, fmt.Errorf("restart with the previous config: %w", err)
	}
	return pid, nil
}

// restorePIDFile makes PIDFile list pids again if a failed start replaced
// them, so that the next Apply reloads the old process instead of starting
// a second HAProxy beside it.
func (m *Manager) restorePIDFile(pids []int) error {
	cur, err := readPIDFile(m.opts.PIDFile)
	if err == nil && slices.Equal(cur, pids) {
		return nil
	}
	var b strings.Builder
	for _, p := range pids {
		b.WriteString(strconv.Itoa(p))
		b.WriteByte('\n')
	}
	if err := writeAtomic(m.opts.PIDFile, []byte(b.String())); err != nil {
		return fmt.Errorf("restore pidfile: %w", err)
	}
	return nil
}

// terminate ends a process we started that failed verification, unless it
// is one of keep.
func (m *Manager) terminate(ctx context.Context, pid int, keep []int) {
	if pid <= 0 || slices.Contains(keep, pid) || !alive(pid) {
		return
	}
	m.signalAndWait(ctx, []int{pid}, syscall.SIGTERM, 2*time.Second)
	if alive(pid) {
		m.signalAndWait(ctx, []int{pid}, syscall.SIGKILL, time.Second)
	}
}

// signalAndWait sends sig to pids and waits up to d for them to exit. It
// returns those still alive.
func (m *Manager) signalAndWait(ctx context.Context, pids []int, sig syscall.Signal, d time.Duration) []int {
	for _, p := range pids {
		if err := syscall.Kill(p, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			m.log.Warn("signal haproxy", "pid", p, "signal", sig.String(), "err", err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		left := alivePIDs(pids)
		if len(left) == 0 || sleepCtx(wctx, pollInterval) != nil {
			return left
		}
	}
}

// Stop ends every HAProxy process this Manager knows of (the pidfile's and
// the older ones still draining): SIGUSR1 (soft stop), then SIGTERM after
// StopGrace, then SIGKILL. Not available with ReloadCmd (the operator owns
// the process).
func (m *Manager) Stop(ctx context.Context) error {
	var serr error
	if m.opts.Supervise {
		m.closing.Store(true)
		m.mu.Lock()
		serr = m.stopSupervised(ctx, m.master)
		m.mu.Unlock()
	}
	err := m.stopKnown(ctx)
	m.wg.Wait() // supervision goroutines; they need m.mu to see that they are done
	return errors.Join(serr, err)
}

func (m *Manager) stopKnown(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.opts.ReloadCmd != "" {
		return errors.New("stop haproxy: not managed by haconfd (ReloadCmd is set)")
	}
	m.remember(m.PIDs()...)
	var pids []int
	for p := range m.known {
		if alive(p) {
			pids = append(pids, p)
		} else {
			delete(m.known, p)
		}
	}
	if len(pids) == 0 {
		return nil
	}
	slices.Sort(pids)
	left := m.signalAndWait(ctx, pids, syscall.SIGUSR1, m.opts.StopGrace)
	if len(left) > 0 {
		left = m.signalAndWait(ctx, left, syscall.SIGTERM, 2*time.Second)
	}
	if len(left) > 0 {
		left = m.signalAndWait(context.WithoutCancel(ctx), left, syscall.SIGKILL, time.Second)
	}
	if len(left) > 0 {
		return fmt.Errorf("stop haproxy: pids %v still alive after SIGKILL", left)
	}
	for _, p := range pids {
		delete(m.known, p)
	}
	return nil
}

func alertSuffix(output string) string {
	if a := firstAlert(output); a != "" {
		return ": " + a
	}
	return ""
}
