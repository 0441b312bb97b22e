// Package haproxy owns the HAProxy process and its configuration file. It
// has four parts, each with one job:
//
//   - a pure planner (PlanChange, PlanServers): which server changes the
//     runtime API can make, and what needs a reload;
//   - a runtime API client (Runtime) over the admin stats socket;
//   - one process controller per mode behind one small interface:
//     a daemon started with -D and reloaded with -x (listening sockets
//     handed over), master-worker mode supervised by haconfd, or an
//     operator's --reload-cmd;
//   - the Manager, which validates a candidate (haproxy -c), writes it
//     atomically, reloads through the controller, verifies that the new
//     process really serves, and rolls back when it does not.
//
// Which change goes where (runtime API now, or a reload later) is the
// caller's decision; nothing here calls back into the caller.
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
	"strings"
	"sync"
	"time"
)

// MaxSocketPath is the longest path a unix socket address can hold on Linux.
const MaxSocketPath = 107

// pollInterval is how often a verification re-checks the process and socket.
const pollInterval = 20 * time.Millisecond

// Options configure a Manager. Only ConfigPath is required for Check;
// Apply also needs PIDFile (or ReloadCmd, or Supervise), and reloads of a
// daemon need Socket.
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

	// StateFile is the server-state-file of the configuration (global
	// "server-state-file" + "load-server-state-from-file global"): before
	// every reload "show servers state" is written there atomically, so
	// that the new process keeps what the runtime API did (drain, maint,
	// health). Servers that the reload itself changes are left out of it.
	// It is emptied (no server) before a fresh start. Optional.
	StateFile string
	// Supervise runs HAProxy in master-worker mode as a child of this
	// process ("haproxy -W -S MasterSocket,mode,660 -f ConfigPath", in the
	// foreground), restarts it when it dies (backoff 100ms..5s) and
	// reloads it through the master CLI, confirmed with "show proc".
	Supervise    bool
	MasterSocket string // master CLI socket path, required with Supervise
	// Version is Bin's (BinaryVersion); its Caps choose how a supervised
	// reload is confirmed and how servers are deleted. The zero value
	// means 2.6's methods, which every supported version understands.
	Version Version
}

// Action says what Apply did.
type Action string

// Actions of Apply.
const (
	ActionNone   Action = "none"
	ActionStart  Action = "start"
	ActionReload Action = "reload"
	// ActionRuntime: the change went through the runtime API (no new
	// process). Apply never returns it; callers that use the runtime API
	// report it.
	ActionRuntime Action = "runtime"
	// ActionWrite: the file was rewritten, HAProxy untouched (Write).
	ActionWrite Action = "write"
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
	// Steps are what the apply did, in order, with how long each took:
	// "validate 41ms", "swap", "reload pid 1234", "verify 210ms",
	// "rollback: ...".
	Steps []string
}

// controller is one way of running HAProxy: a daemon reloaded with -x, a
// supervised master-worker, or an operator's reload command.
type controller interface {
	// state looks at the running HAProxy.
	state(ctx context.Context) procState
	// healthy: HAProxy serves from a current, non-stopping process.
	healthy(st procState) bool
	// running: a HAProxy runs (perhaps not healthy).
	running(st procState) bool
	// canReload says why a reload from st is impossible ("" if it is not).
	canReload(st procState) string
	// launch starts HAProxy, or reloads it, on the live file and verifies
	// the new process. It returns the new pid (when known) even on failure.
	launch(ctx context.Context, old procState) (int, error)
	// recover makes the previous file (already back in place; prevExists
	// false: there was none) served again after launch failed; it
	// returns the pid serving afterwards.
	recover(ctx context.Context, old procState, failedPID int, prevExists bool) (int, error)
	// adopt is called once before the first apply: it finishes what a
	// killed predecessor left half done, and reports whether the running
	// HAProxy must be reloaded onto the live file even if it is healthy.
	adopt() (forceReload bool)
	// stop ends HAProxy (the processes of this config only).
	stop(ctx context.Context) error
	// restarts is signaled when HAProxy was restarted behind the caller's
	// back (a supervised master that died); nil when it never is.
	restarts() <-chan struct{}
}

// procState is what we know about the running HAProxy.
type procState struct {
	pids      []int // alive pids (pidfile, or the master's current workers)
	answering bool  // the stats socket answered show info
	infoPID   int   // Pid reported by the socket
	stopping  bool  // the answering process is soft-stopping
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

// Manager applies configurations to one HAProxy. It is safe for concurrent
// use; Apply, Write and Stop calls are serialized.
type Manager struct {
	opts Options
	log  *slog.Logger
	ctl  controller

	mu          sync.Mutex
	adopted     bool // stale stage files swept and the predecessor's leftovers handled (first call)
	forceReload bool // the running HAProxy must be reloaded even onto the same bytes

	warnMu   sync.Mutex
	warnings []string // what haproxy -c warned about the live file
}

// Warnings are the [WARNING] lines `haproxy -c` printed for the config
// that went live last (Apply or Write), one line each ("file:line: msg").
func (m *Manager) Warnings() []string {
	m.warnMu.Lock()
	defer m.warnMu.Unlock()
	return slices.Clone(m.warnings)
}

// setWarnings records the warnings of the config that just went live and
// logs them when they differ from the previous ones (not at every write).
func (m *Manager) setWarnings(ws []ValidationError) {
	lines := make([]string, 0, len(ws))
	for _, w := range ws {
		lines = append(lines, w.String())
	}
	m.warnMu.Lock()
	changed := !slices.Equal(lines, m.warnings)
	m.warnings = lines
	m.warnMu.Unlock()
	if changed {
		for _, l := range lines {
			m.log.Warn("haproxy -c warns about the live config", "warning", l)
		}
	}
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
		if len(opts.Socket) > MaxSocketPath {
			return nil, fmt.Errorf("haproxy option Socket %q: path is %d bytes, a unix socket path holds at most %d", opts.Socket, len(opts.Socket), MaxSocketPath)
		}
		if err := dirExists("Socket", opts.Socket); err != nil {
			return nil, err
		}
	}
	if strings.TrimSpace(opts.ReloadCmd) == "" && opts.ReloadCmd != "" {
		return nil, errors.New("haproxy option ReloadCmd: only whitespace")
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
		case len(opts.MasterSocket) > MaxSocketPath:
			return nil, fmt.Errorf("haproxy option MasterSocket %q: path is %d bytes, a unix socket path holds at most %d", opts.MasterSocket, len(opts.MasterSocket), MaxSocketPath)
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
	log = log.With("component", "haproxy")
	m := &Manager{opts: opts, log: log}
	switch {
	case opts.ReloadCmd != "":
		m.ctl = &cmdProc{opts: opts, log: log}
	case opts.Supervise:
		m.ctl = newMasterProc(opts, log, &m.mu)
	default:
		m.ctl = &daemonProc{opts: opts, log: log}
	}
	return m, nil
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

// Check validates cfg with haproxy -c, staged next to ConfigPath (so that
// relative paths resolve as they will live); the live file is untouched.
// Alerts name ConfigPath as their file.
func (m *Manager) Check(ctx context.Context, cfg []byte) error {
	stage, err := stageFile(m.opts.ConfigPath, cfg)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer func() { _ = os.Remove(stage) }()
	_, err = m.validate(ctx, stage)
	return err
}

// validate runs haproxy -c on stage; alerts and warnings name ConfigPath.
func (m *Manager) validate(ctx context.Context, stage string) ([]ValidationError, error) {
	vctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	warnings, err := Validate(vctx, m.opts.Bin, stage)
	for i := range warnings {
		if warnings[i].File == stage {
			warnings[i].File = m.opts.ConfigPath
		}
		warnings[i].Msg = strings.ReplaceAll(warnings[i].Msg, stage, m.opts.ConfigPath)
	}
	var ice *InvalidConfigError
	if errors.As(err, &ice) {
		for i := range ice.Errors {
			if ice.Errors[i].File == stage {
				ice.Errors[i].File = m.opts.ConfigPath
			}
		}
		ice.Output = strings.ReplaceAll(ice.Output, stage, m.opts.ConfigPath)
		return nil, ice
	}
	return warnings, err
}

// Live returns the live file's bytes; exists is false when there is none.
func (m *Manager) Live() (data []byte, exists bool, err error) {
	return readLive(m.opts.ConfigPath)
}

// Process is what the Manager sees of the running HAProxy.
type Process struct {
	Running bool  // a HAProxy of this config runs
	Healthy bool  // it serves from a current, non-stopping process
	PID     int   // the process serving (0 if none)
	PIDs    []int // its current processes
}

// Process looks at the running HAProxy.
func (m *Manager) Process(ctx context.Context) Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.adoptOnce()
	st := m.ctl.state(ctx)
	return Process{Running: m.ctl.running(st), Healthy: m.ctl.healthy(st), PID: st.servingPID(), PIDs: st.pids}
}

// NeedsReload reports whether the running HAProxy must be reloaded onto
// the live file although it is healthy: a predecessor killed in the middle
// of a reload left processes that serve another config.
func (m *Manager) NeedsReload() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.adoptOnce()
	return m.forceReload
}

// Restarts is signaled when HAProxy was restarted outside of Apply (a
// supervised master that died and was started again on the live file):
// its runtime state is the file's again. nil when it never happens.
func (m *Manager) Restarts() <-chan struct{} { return m.ctl.restarts() }

func (m *Manager) adoptOnce() {
	if m.adopted {
		return
	}
	m.adopted = true
	if n := sweepStages(m.opts.ConfigPath, time.Minute); n > 0 {
		m.log.Info("removed stage files left by an earlier run", "files", n)
	}
	if m.ctl.adopt() {
		m.forceReload = true
	}
}

// Write makes next the live file without touching HAProxy (for a change
// the runtime API already made): stage it, validate it with haproxy -c,
// rename. A rejected next
// returns the *InvalidConfigError with the live file untouched.
func (m *Manager) Write(ctx context.Context, next []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.adoptOnce()
	live, liveExists, err := readLive(m.opts.ConfigPath)
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if liveExists && bytes.Equal(live, next) {
		return nil
	}
	stage, err := stageFile(m.opts.ConfigPath, next)
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	warnings, err := m.validate(ctx, stage)
	if err != nil {
		_ = os.Remove(stage)
		return err
	}
	if err := commitStage(stage, m.opts.ConfigPath); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	m.setWarnings(warnings)
	return nil
}

// Apply makes next the live configuration with a start or a reload:
//
//  1. same bytes as the live file and HAProxy healthy: ActionNone;
//  2. stage next beside ConfigPath and validate it (haproxy -c);
//  3. pre-check that bind addresses new to HAProxy are free;
//  4. save "show servers state" to StateFile (what the runtime API did);
//  5. rename the stage onto the live file (the previous bytes are kept in
//     memory for the rollback);
//  6. start HAProxy or reload it through the controller;
//  7. verify: the new process runs and answers, still so after Settle;
//  8. on failure restore the previous file and make sure it is served
//     (the old process, or a fresh start of it).
//
// A rejected candidate returns the *InvalidConfigError (alerts name
// ConfigPath, lines refer to next), a taken address ErrBindInUse, both with
// the live file untouched; a failed start returns ErrStartFailed with
// Result.RolledBack set. A ctx canceled before step 5 abandons the apply
// (the live file untouched); after it, verification and rollback finish
// on a bounded background context.
func (m *Manager) Apply(ctx context.Context, next []byte) (Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.adoptOnce()
	start := time.Now()
	res, err := m.apply(ctx, next)
	res.Duration = time.Since(start)
	return res, err
}

func (m *Manager) apply(ctx context.Context, next []byte) (Result, error) {
	res := Result{Action: ActionNone}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("apply: %w", err)
	}
	if m.opts.ReloadCmd == "" && m.opts.PIDFile == "" && !m.opts.Supervise {
		return res, errors.New("apply: option PIDFile is required to manage HAProxy (or set ReloadCmd or Supervise)")
	}
	cfgPath := m.opts.ConfigPath
	step := func(format string, a ...any) { res.Steps = append(res.Steps, fmt.Sprintf(format, a...)) }

	// 1. Compare with the live file and look at the running HAProxy.
	live, liveExists, err := readLive(cfgPath)
	if err != nil {
		return res, fmt.Errorf("apply: %w", err)
	}
	st := m.ctl.state(ctx)
	res.OldPIDs = st.pids
	same := liveExists && bytes.Equal(live, next)
	if same && m.ctl.healthy(st) && !m.forceReload {
		res.PID = st.servingPID()
		return res, nil
	}
	res.Action = ActionStart
	if m.ctl.running(st) {
		res.Action = ActionReload
		if why := m.ctl.canReload(st); why != "" {
			return Result{Action: ActionNone, OldPIDs: st.pids}, errors.New("apply: " + why)
		}
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
	t0 := time.Now()
	m.ensureStateFile()
	warnings, err := m.validate(ctx, stage)
	if err != nil {
		return Result{Action: ActionNone, OldPIDs: st.pids, Steps: res.Steps}, err
	}
	step("validate %s", time.Since(t0).Round(time.Millisecond))

	// 3. New bind addresses must be free (a taken one pauses every listener ~2 s).
	var held []byte
	if len(st.pids) > 0 || st.answering {
		held = live
	}
	if err := checkBinds(next, held); err != nil {
		return Result{Action: ActionNone, OldPIDs: st.pids, Steps: res.Steps}, fmt.Errorf("apply: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Result{Action: ActionNone, OldPIDs: st.pids, Steps: res.Steps}, fmt.Errorf("apply: abandoned before swap: %w", err)
	}

	// 4. Keep what the runtime API did across the reload.
	if res.Action == ActionReload {
		if n, err := m.saveState(live, next, st); err == nil && m.opts.StateFile != "" {
			step("server state saved (%d servers)", n)
		}
	} else {
		m.dropStateFile()
	}

	// 5. Swap (skipped when the live file already has these bytes).
	if !same {
		committed = true
		if err := commitStage(stage, cfgPath); err != nil {
			return Result{Action: ActionNone, OldPIDs: st.pids, Steps: res.Steps}, fmt.Errorf("apply: %w", err)
		}
		step("swap")
	}

	// From here on, finish even if ctx is canceled: never leave a broken state.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 4*(m.opts.Timeout+m.opts.Settle))
	defer cancel()

	// 6-7. Start or reload, then verify.
	t0 = time.Now()
	newPID, err := m.ctl.launch(bctx, st)
	if err == nil {
		res.PID = newPID
		step("%s pid %d verified %s", res.Action, newPID, time.Since(t0).Round(time.Millisecond))
		m.forceReload = false
		m.setWarnings(warnings)
		m.log.Debug("haproxy config applied", "action", res.Action, "pid", newPID, "old_pids", st.pids)
		return res, nil
	}
	step("%s failed after %s: %v", res.Action, time.Since(t0).Round(time.Millisecond), err)

	// 8. Roll back.
	res.RolledBack = true
	servingPID, rbErr := m.rollback(bctx, live, liveExists, st, newPID)
	res.PID = servingPID
	if rbErr != nil {
		err = fmt.Errorf("%w; rollback failed: %w", err, rbErr)
		step("rollback failed: %v", rbErr)
	} else {
		step("rolled back: previous config served by pid %d", servingPID)
	}
	// The caller reports the failure (once); the steps say what happened.
	m.log.Debug("haproxy config not applied, rolled back", "action", res.Action, "err", err, "pid", servingPID)
	return res, err
}

// rollback restores the previous live file and makes sure HAProxy serves
// it. It returns the pid serving afterwards.
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
	return m.ctl.recover(ctx, old, failedPID, prevExists)
}

// saveState dumps "show servers state" to StateFile (atomically) before a
// reload, without the servers that the reload from live to next changes.
// When it cannot, the file is removed: an old state is worse than none
// (HAProxy would restore old ports and weights from it). It returns how
// many servers' states were kept.
func (m *Manager) saveState(live, next []byte, st procState) (int, error) {
	if m.opts.StateFile == "" {
		return 0, nil
	}
	err := errors.New("stats socket does not answer")
	if m.opts.Socket != "" && st.answering {
		var rt *Runtime
		rt, err = NewRuntime(m.opts.Socket, m.log, m.opts.Version.Caps())
		if err == nil {
			var data []byte
			var kept int
			data, kept, err = rt.serversState(live, next)
			if err == nil {
				err = writeAtomic(m.opts.StateFile, data)
				if err == nil {
					m.log.Debug("server state saved before reload", "file", m.opts.StateFile, "servers", kept)
					return kept, nil
				}
			}
		}
	}
	m.log.Warn("cannot save server state before reload; reloading without it", "file", m.opts.StateFile, "err", err)
	m.dropStateFile()
	return 0, err
}

// dropStateFile removes StateFile (before a fresh start, or when it could
// not be refreshed).
// emptyState is a server-state file with no server: its version line.
// HAProxy 2.6 warns about a server-state-file that does not exist, so
// haconfd keeps this one there rather than none.
const emptyState = "1\n"

func (m *Manager) dropStateFile() {
	if m.opts.StateFile == "" {
		return
	}
	if err := writeAtomic(m.opts.StateFile, []byte(emptyState)); err != nil {
		m.log.Warn("empty server state file", "err", err)
	}
}

// ensureStateFile creates an empty StateFile where there is none, so
// that haproxy -c does not warn about it before the first start.
func (m *Manager) ensureStateFile() {
	if m.opts.StateFile == "" {
		return
	}
	if _, err := os.Stat(m.opts.StateFile); errors.Is(err, os.ErrNotExist) {
		m.dropStateFile()
	}
}

// Stop ends the HAProxy processes of this config: SIGUSR1 (soft stop),
// then SIGTERM after StopGrace, then SIGKILL. Not available with
// ReloadCmd (the operator owns the process).
func (m *Manager) Stop(ctx context.Context) error {
	return m.ctl.stop(ctx)
}

func alertSuffix(output string) string {
	if a := firstAlert(output); a != "" {
		return ": " + a
	}
	return ""
}
