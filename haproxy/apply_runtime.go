package haproxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// applyRuntime applies a server-only change through the runtime API.
// done is false when the change needs a reload (structural, or the runtime
// API refused a command: res.Fallback says which); the caller then reloads
// with next, which makes the final state right whatever was applied.
//
// Ordering and haproxy -c: a server-only plan changes nothing but server
// lines whose every token the planner has read (IP literal address, numeric
// port, options that client-native's parser understood), and HAProxy checks
// each runtime command itself (a refusal falls back to a validated reload).
// So the commands are sent first, for speed (an add reaches clients in a
// few ms, where haproxy -c alone costs ~40 ms), and the full file is then
// validated with haproxy -c before it is written: the file on disk is
// always one that haproxy -c accepted. Should -c refuse it anyway, the
// previous file (still live on disk) is reloaded, without the state of the
// servers that changed, which undoes the runtime commands.
func (m *Manager) applyRuntime(ctx context.Context, live, next []byte, st procState, applyStart time.Time) (res Result, done bool, err error) {
	plan, err := PlanChange(live, next)
	if err != nil {
		m.log.Warn("cannot plan a runtime change, reloading", "err", err)
		return Result{}, false, nil
	}
	if plan.Reload {
		if m.opts.Mode == ModeRuntime {
			m.log.Warn("structural change: reloading", "reasons", plan.Reasons)
		} else {
			m.log.Debug("structural change: reloading", "reasons", plan.Reasons)
		}
		return Result{}, false, nil
	}
	res = Result{Action: ActionRuntime, PID: st.servingPID(), OldPIDs: st.pids}
	api, err := newRuntimeAPI(m.opts.Socket, m.log)
	if err != nil {
		res.Fallback = err.Error()
		return res, false, nil
	}
	// Commands reach HAProxy from here on: finish even if ctx is canceled
	// (a canceled ctx only cuts drains short).
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 4*(m.opts.Timeout+m.opts.Settle)+m.opts.DrainTimeout)
	defer cancel()
	start := time.Now()
	n, err := api.runOps(ctx, plan.Ops, m.opts.DrainTimeout)
	res.Commands = n
	if err != nil {
		m.log.Warn("runtime API refused a change, falling back to a reload", "err", err, "commands", n)
		res.Fallback = err.Error()
		return res, false, nil
	}
	opsTook := time.Since(start)
	res.RuntimeDuration = time.Since(applyStart)

	stage, err := stageFile(m.opts.ConfigPath, next)
	if err != nil {
		return m.undoRuntime(bctx, res, live, next, st, fmt.Errorf("apply: %w", err))
	}
	if err := m.validate(bctx, stage); err != nil {
		_ = os.Remove(stage)
		return m.undoRuntime(bctx, res, live, next, st, err)
	}
	if err := writeAtomic(m.opts.ConfigPath+".bak", live); err != nil {
		_ = os.Remove(stage)
		return m.undoRuntime(bctx, res, live, next, st, fmt.Errorf("apply: backup: %w", err))
	}
	if err := commitStage(stage, m.opts.ConfigPath); err != nil {
		return m.undoRuntime(bctx, res, live, next, st, fmt.Errorf("apply: %w", err))
	}
	m.lastGood = slices.Clone(next)
	m.log.Debug("haproxy config applied through the runtime API", "ops", len(plan.Ops), "commands", n, "runtime_duration", opsTook)
	return res, true, nil
}

// undoRuntime reloads the previous (still live) file after runtime
// commands were sent for a next that cannot be written. The state of the
// servers that next changed is left out, so they come back as the previous
// file says.
func (m *Manager) undoRuntime(ctx context.Context, res Result, live, next []byte, st procState, cause error) (Result, bool, error) {
	m.log.Error("runtime change applied but its config cannot be written: reloading the previous config", "err", cause)
	res.Action, res.RolledBack = ActionReload, true
	m.saveState(live, next, st)
	pid, err := m.launchAndVerify(ctx, st)
	res.PID = pid
	if err != nil {
		return res, true, fmt.Errorf("%w; reload of the previous config failed: %w", cause, err)
	}
	return res, true, cause
}

// saveState dumps "show servers state" to StateFile (atomically) before a
// reload, without the servers that the reload from live to next changes.
// When it cannot, the file is removed: an old state is worse than none
// (HAProxy would restore old ports and weights from it).
func (m *Manager) saveState(live, next []byte, st procState) {
	if m.opts.StateFile == "" {
		return
	}
	err := errors.New("stats socket does not answer")
	if m.opts.Socket != "" && st.answering {
		var api *runtimeAPI
		api, err = newRuntimeAPI(m.opts.Socket, m.log)
		if err == nil {
			var data []byte
			var kept int
			data, kept, err = api.serversState(live, next)
			if err == nil {
				err = writeAtomic(m.opts.StateFile, data)
				if err == nil {
					m.log.Debug("server state saved before reload", "file", m.opts.StateFile, "servers", kept)
					return
				}
			}
		}
	}
	m.log.Warn("cannot save server state before reload; reloading without it", "file", m.opts.StateFile, "err", err)
	m.dropStateFile()
}

// dropStateFile removes StateFile (before a fresh start, or when it could
// not be refreshed).
func (m *Manager) dropStateFile() {
	if m.opts.StateFile == "" {
		return
	}
	if err := removeDurable(m.opts.StateFile); err != nil {
		m.log.Warn("remove server state file", "err", err)
	}
}
