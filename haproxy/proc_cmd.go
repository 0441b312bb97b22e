package haproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"
)

// cmdProc hands reloads to the operator's command (--reload-cmd, e.g.
// "systemctl reload haproxy", or a signal to a HAProxy in another
// container): haconfd writes the file and runs the command, and verifies
// the result through Socket (a new process answers) or PIDFile when they
// are set. It never starts or stops HAProxy itself.
type cmdProc struct {
	opts Options
	log  *slog.Logger
}

func (c *cmdProc) restarts() <-chan struct{} { return nil }
func (c *cmdProc) adopt() bool               { return false }
func (c *cmdProc) canReload(procState) string {
	return ""
}

func (c *cmdProc) state(ctx context.Context) procState {
	var st procState
	if c.opts.PIDFile != "" {
		if pids, err := readPIDFile(c.opts.PIDFile); err == nil {
			st.pids = alivePIDs(pids)
		}
	}
	if c.opts.Socket != "" {
		if info, err := ShowInfo(ctx, c.opts.Socket); err == nil {
			st.answering = true
			st.infoPID, _ = strconv.Atoi(info["Pid"])
			st.stopping = info["Stopping"] == "1"
		}
	}
	return st
}

func (c *cmdProc) healthy(st procState) bool {
	switch {
	case c.opts.Socket != "":
		return st.answering && !st.stopping
	case c.opts.PIDFile != "":
		return len(st.pids) > 0
	default:
		return true // nothing to look at: trust the operator's setup
	}
}

func (c *cmdProc) running(st procState) bool { return len(st.pids) > 0 || st.answering }

// launch runs the operator's reload command and verifies through Socket (a
// new Pid answering) or PIDFile when they are set.
func (c *cmdProc) launch(ctx context.Context, old procState) (int, error) {
	lctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	env := append(os.Environ(), "HACONFD_CONFIG="+c.opts.ConfigPath)
	out, err := launch(lctx, "sh", []string{"-c", c.opts.ReloadCmd}, env)
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
	vctx, vcancel := context.WithTimeout(ctx, c.opts.Timeout+c.opts.Settle)
	defer vcancel()
	switch {
	case c.opts.Socket != "":
		pid, err := c.waitNewInfoPID(vctx, old.infoPID)
		if err != nil {
			return 0, err
		}
		if err := sleepCtx(vctx, c.opts.Settle); err != nil {
			return pid, fmt.Errorf("%w: verifying process %d: %v", ErrStartFailed, pid, err)
		}
		info, err := ShowInfo(vctx, c.opts.Socket)
		if err != nil {
			return pid, fmt.Errorf("%w: process %d stopped answering after reload: %v", ErrStartFailed, pid, err)
		}
		if info["Pid"] != strconv.Itoa(pid) || info["Stopping"] == "1" {
			return pid, fmt.Errorf("%w: after reload the socket answers with pid %s (stopping %s), expected %d serving", ErrStartFailed, info["Pid"], info["Stopping"], pid)
		}
		return pid, nil
	case c.opts.PIDFile != "":
		pid, err := waitNewPID(vctx, c.opts.PIDFile, min(c.opts.Timeout, 5*time.Second), old.pids, out)
		if err != nil {
			return 0, err
		}
		if err := sleepCtx(vctx, c.opts.Settle); err != nil {
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
func (c *cmdProc) waitNewInfoPID(ctx context.Context, old int) (int, error) {
	var last error
	for {
		info, err := ShowInfo(ctx, c.opts.Socket)
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
			return 0, fmt.Errorf("%w: no new process answered on %s after reload: %v", ErrStartFailed, c.opts.Socket, last)
		}
	}
}

// recover runs the reload command again, on the previous file.
func (c *cmdProc) recover(ctx context.Context, _ procState, _ int, prevExists bool) (int, error) {
	if !prevExists {
		return 0, nil
	}
	pid, err := c.launch(ctx, c.state(ctx))
	if err != nil {
		return 0, fmt.Errorf("reload of the previous config: %w", err)
	}
	return pid, nil
}

func (c *cmdProc) stop(context.Context) error {
	return errors.New("stop haproxy: not managed by haconfd (ReloadCmd is set)")
}
