package haproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemonProc runs HAProxy as a daemon ("haproxy -D -p PIDFile -f
// ConfigPath") and reloads it with the listening sockets handed over
// ("-x Socket"). The old process is told to stop (SIGUSR1, what -sf
// sends) only once the new one is verified: both share the listening
// sockets meanwhile, so a new process that dies after its fork costs no
// connection.
type daemonProc struct {
	opts Options
	log  *slog.Logger
}

func (d *daemonProc) restarts() <-chan struct{} { return nil }

// pids returns the pids in PIDFile that are alive.
func (d *daemonProc) pids() []int {
	if d.opts.PIDFile == "" {
		return nil
	}
	pids, err := readPIDFile(d.opts.PIDFile)
	if err != nil {
		d.log.Debug("read pidfile", "err", err)
		return nil
	}
	return alivePIDs(pids)
}

func (d *daemonProc) state(ctx context.Context) procState {
	st := procState{pids: d.pids()}
	if d.opts.Socket != "" {
		if info, err := ShowInfo(ctx, d.opts.Socket); err == nil {
			st.answering = true
			st.infoPID, _ = strconv.Atoi(info["Pid"])
			st.stopping = info["Stopping"] == "1"
		}
	}
	return st
}

// healthy: HAProxy runs and, when we have a socket, answers from a
// non-stopping process of the pidfile.
func (d *daemonProc) healthy(st procState) bool {
	if len(st.pids) == 0 {
		return false
	}
	return d.opts.Socket == "" || (st.answering && !st.stopping && slices.Contains(st.pids, st.infoPID))
}

func (d *daemonProc) running(st procState) bool { return len(st.pids) > 0 }

func (d *daemonProc) canReload(procState) string {
	if d.opts.Socket == "" {
		return "refusing to reload without option Socket: listening sockets must be passed with -x (set Socket, or ReloadCmd)"
	}
	return ""
}

// launch starts or reloads the daemon on the live file and verifies it.
func (d *daemonProc) launch(ctx context.Context, old procState) (int, error) {
	args := []string{"-D", "-p", d.opts.PIDFile, "-f", d.opts.ConfigPath}
	if len(old.pids) > 0 {
		if old.answering {
			args = append(args, "-x", d.opts.Socket)
		} else {
			// -x on a dead socket makes haproxy exit 1; the old process is unreachable anyway.
			d.log.Warn("stats socket does not answer, reloading without listener transfer", "socket", d.opts.Socket, "old_pids", old.pids)
		}
		// No -sf: the old process is told to stop only once the new one
		// has been verified (handOff). With -sf HAProxy stops it as soon as
		// the new one has bound, so a new process that dies after the
		// fork (a missing chroot, say) leaves nobody listening until a
		// rollback restart. Both share the listening sockets meanwhile.
		//
		// Until handOff, old and new serve side by side: note the old pids
		// so that a haconfd killed in between has its successor stop them.
		if err := writeAtomic(d.handoffPath(), pidLines(old.pids)); err != nil {
			d.log.Warn("cannot note the pids being handed over", "file", d.handoffPath(), "err", err)
		}
		defer func() { _ = os.Remove(d.handoffPath()) }()
	}
	lctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	out, err := launch(lctx, d.opts.Bin, args, os.Environ())
	defer func() {
		if out != "" {
			_ = os.Remove(out)
		}
	}()
	if err != nil {
		return 0, fmt.Errorf("%w: %s %s: %v%s", ErrStartFailed, d.opts.Bin, strings.Join(args, " "), err, alertSuffix(readOutput(out)))
	}
	newPID, err := d.waitNewPID(ctx, old.pids, out)
	if err != nil {
		return 0, err
	}
	if err := d.verify(ctx, newPID, out); err != nil {
		return newPID, err
	}
	if err := d.handOff(ctx, newPID, old.pids, out); err != nil {
		return newPID, err
	}
	return newPID, nil
}

func (d *daemonProc) handoffPath() string { return d.opts.PIDFile + ".handoff" }

func pidLines(pids []int) []byte {
	var b strings.Builder
	for _, p := range pids {
		b.WriteString(strconv.Itoa(p))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// adopt finishes a reload that a killed haconfd left half done: the old
// HAProxy processes were never told to stop. If the new process (in the
// pidfile) serves, they are soft-stopped; if it is gone too, they are
// adopted (pidfile) and must be reloaded onto the file.
func (d *daemonProc) adopt() bool {
	if d.opts.PIDFile == "" {
		return false
	}
	noted, err := readPIDFile(d.handoffPath())
	if err != nil || len(noted) == 0 {
		return false
	}
	defer func() { _ = os.Remove(d.handoffPath()) }()
	cur := d.pids()
	var orphans []int
	for _, p := range alivePIDs(noted) {
		if !slices.Contains(cur, p) && runsConfig(p, d.opts.ConfigPath) {
			orphans = append(orphans, p)
		}
	}
	if len(orphans) == 0 {
		return false
	}
	if len(cur) > 0 {
		d.log.Warn("soft-stopping HAProxy processes left serving by an unfinished reload", "pids", orphans, "serving", cur)
		for _, p := range orphans {
			_ = syscall.Kill(p, syscall.SIGUSR1)
		}
		return false
	}
	d.log.Warn("adopting HAProxy processes left by an unfinished reload; reloading them onto the live file", "pids", orphans)
	return restorePIDFile(d.opts.PIDFile, orphans) == nil
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
func (d *daemonProc) handOff(ctx context.Context, newPID int, old []int, out string) error {
	for _, p := range old {
		if p == newPID || !runsConfig(p, d.opts.ConfigPath) {
			continue
		}
		if err := syscall.Kill(p, syscall.SIGUSR1); err != nil && !errors.Is(err, syscall.ESRCH) {
			d.log.Warn("soft-stop old haproxy", "pid", p, "err", err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	return waitAnswer(wctx, d.opts.Socket, newPID, out)
}

// waitNewPID polls PIDFile for a pid that is not one of old.
func (d *daemonProc) waitNewPID(ctx context.Context, old []int, out string) (int, error) {
	return waitNewPID(ctx, d.opts.PIDFile, min(d.opts.Timeout, 5*time.Second), old, out)
}

func waitNewPID(ctx context.Context, pidFile string, timeout time.Duration, old []int, out string) (int, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		pids, err := readPIDFile(pidFile)
		if err == nil {
			for _, p := range pids {
				if !slices.Contains(old, p) {
					return p, nil
				}
			}
		}
		if sleepCtx(wctx, pollInterval) != nil {
			return 0, fmt.Errorf("%w: no new pid in %s (old %v)%s", ErrStartFailed, pidFile, old, alertSuffix(readOutput(out)))
		}
	}
}

// verify: pid alive and answering on the socket with its own Pid, then
// after Settle still alive and answering.
func (d *daemonProc) verify(ctx context.Context, pid int, out string) error {
	vctx, cancel := context.WithTimeout(ctx, d.opts.Timeout+d.opts.Settle)
	defer cancel()
	died := func() error {
		return fmt.Errorf("%w: new process %d exited after start%s", ErrStartFailed, pid, alertSuffix(readOutput(out)))
	}
	if !alive(pid) {
		return died()
	}
	if err := waitAnswer(vctx, d.opts.Socket, pid, out); err != nil {
		return err
	}
	if err := sleepCtx(vctx, d.opts.Settle); err != nil {
		return fmt.Errorf("%w: verifying process %d: %v", ErrStartFailed, pid, err)
	}
	if !alive(pid) {
		return died()
	}
	// Still answering after Settle. The old process may share the socket
	// until handOff, so poll until the new one is the one that answers.
	return waitAnswer(vctx, d.opts.Socket, pid, out)
}

// waitAnswer polls the socket until it reports Pid == pid (any pid when
// pid is 0). Without a socket it returns at once.
func waitAnswer(ctx context.Context, socket string, pid int, out string) error {
	if socket == "" {
		return nil
	}
	var last error
	for {
		if pid > 0 && !alive(pid) {
			return fmt.Errorf("%w: new process %d exited after start%s", ErrStartFailed, pid, alertSuffix(readOutput(out)))
		}
		info, err := ShowInfo(ctx, socket)
		switch {
		case err != nil:
			last = err
		case pid == 0 || info["Pid"] == strconv.Itoa(pid):
			return nil
		default:
			last = fmt.Errorf("socket answers with pid %s", info["Pid"])
		}
		if sleepCtx(ctx, pollInterval) != nil {
			return fmt.Errorf("%w: process %d did not answer on %s in time: %v", ErrStartFailed, pid, socket, last)
		}
	}
}

// recover serves the previous file again after a failed launch: the old
// process if it still serves, else a fresh start of it.
func (d *daemonProc) recover(ctx context.Context, old procState, failedPID int, prevExists bool) (int, error) {
	// The failed process goes first: it may share the socket with the old
	// one and would answer in its place.
	d.terminate(ctx, failedPID, old.pids)
	// Does the old process still serve (answers with an old pid, not stopping)?
	if len(old.pids) > 0 && d.opts.Socket != "" {
		if info, err := ShowInfo(ctx, d.opts.Socket); err == nil {
			pid, _ := strconv.Atoi(info["Pid"])
			if slices.Contains(old.pids, pid) && info["Stopping"] != "1" && alive(pid) {
				if err := restorePIDFile(d.opts.PIDFile, old.pids); err != nil {
					return pid, err
				}
				return pid, nil
			}
		}
	}
	if !prevExists {
		return 0, nil
	}
	// Start the last good config again, taking over from whatever is left.
	cur := d.state(ctx)
	cur.pids = alivePIDs(append(slices.Clone(cur.pids), append(slices.Clone(old.pids), failedPID)...))
	slices.Sort(cur.pids)
	cur.pids = slices.Compact(cur.pids)
	pid, err := d.launch(ctx, cur)
	if err != nil {
		return 0, fmt.Errorf("restart with the previous config: %w", err)
	}
	return pid, nil
}

// restorePIDFile makes pidFile list pids again if a failed start replaced
// them, so that the next apply reloads the old process instead of starting
// a second HAProxy beside it.
func restorePIDFile(pidFile string, pids []int) error {
	cur, err := readPIDFile(pidFile)
	if err == nil && slices.Equal(cur, pids) {
		return nil
	}
	if err := writeAtomic(pidFile, pidLines(pids)); err != nil {
		return fmt.Errorf("restore pidfile: %w", err)
	}
	return nil
}

// terminate ends a process we started that failed verification, unless it
// is one of keep.
func (d *daemonProc) terminate(ctx context.Context, pid int, keep []int) {
	if pid <= 0 || slices.Contains(keep, pid) || !alive(pid) {
		return
	}
	signalAndWait(ctx, d.log, []int{pid}, syscall.SIGTERM, 2*time.Second)
	if alive(pid) {
		signalAndWait(ctx, d.log, []int{pid}, syscall.SIGKILL, time.Second)
	}
}

// signalAndWait sends sig to pids and waits up to dur for them to exit. It
// returns those still alive.
func signalAndWait(ctx context.Context, log *slog.Logger, pids []int, sig syscall.Signal, dur time.Duration) []int {
	for _, p := range pids {
		if err := syscall.Kill(p, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			log.Warn("signal haproxy", "pid", p, "signal", sig.String(), "err", err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	for {
		left := alivePIDs(pids)
		if len(left) == 0 || sleepCtx(wctx, pollInterval) != nil {
			return left
		}
	}
}

// stop ends the HAProxy processes of this config: the pidfile's and the
// older ones still finishing their connections. Only processes that are
// haproxy started on ConfigPath are signaled: a pid recycled by another
// program is left alone.
func (d *daemonProc) stop(ctx context.Context) error {
	return stopProcesses(ctx, d.log, d.opts, ourProcesses(d.opts.ConfigPath, d.pids()))
}

// ourProcesses returns the haproxy processes running config: pids (when
// they are such processes) and any other haproxy process on config (old
// processes still finishing their connections after a reload).
func ourProcesses(config string, pids []int) []int {
	var out []int
	for _, p := range pids {
		if alive(p) && runsConfig(p, config) {
			out = append(out, p)
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || slices.Contains(out, p) {
			continue
		}
		if runsConfig(p, config) && alive(p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func stopProcesses(ctx context.Context, log *slog.Logger, opts Options, pids []int) error {
	if len(pids) == 0 {
		return nil
	}
	left := signalAndWait(ctx, log, pids, syscall.SIGUSR1, opts.StopGrace)
	if len(left) > 0 {
		left = signalAndWait(ctx, log, left, syscall.SIGTERM, 2*time.Second)
	}
	if len(left) > 0 {
		left = signalAndWait(context.WithoutCancel(ctx), log, left, syscall.SIGKILL, time.Second)
	}
	if len(left) > 0 {
		return fmt.Errorf("stop haproxy: pids %v still alive after SIGKILL", left)
	}
	return nil
}
