package haproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Supervised (master-worker) mode: haconfd runs "haproxy -W -S <master
// socket> -f <config>" as its child in the foreground, restarts it when it
// dies, and reloads it with the master CLI "reload", confirmed by "show
// proc" (a new worker, no new failure).

// restartBackoff bounds the delay between restarts of a dying master.
const (
	restartBackoffMin = 100 * time.Millisecond
	restartBackoffMax = 5 * time.Second
	// stableRun: a master that ran this long resets the backoff.
	stableRun = 10 * time.Second
)

// masterChild is one HAProxy master process started by the supervisor.
type masterChild struct {
	cmd     *exec.Cmd
	pid     int
	started time.Time
	exited  chan struct{} // closed once the process has been reaped
	err     error         // Wait's result, set before exited is closed
}

func (p *masterChild) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// procInfo is the master's "show proc".
type procInfo struct {
	masterPID int
	reloads   int
	failed    int
	workers   []int // current workers (not the old ones still finishing)
}

// parseShowProc reads the master CLI "show proc" output of HAProxy 2.6:
//
//	#<PID>          <type>          <reloads>       <uptime>        <version>
//	1162            master          5 [failed: 0]   0d00h02m07s     2.6.12
//	# workers
//	1271            worker          0               0d00h00m00s     2.6.12
//	# old workers
//	1233            worker          1               0d00h00m03s     2.6.12
func parseShowProc(out string) (procInfo, error) {
	var pi procInfo
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			section = strings.TrimSpace(strings.TrimPrefix(line, "#"))
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		switch {
		case f[1] == "master":
			pi.masterPID = pid
			pi.reloads, _ = strconv.Atoi(f[2])
			if i := strings.Index(line, "[failed:"); i >= 0 {
				v := strings.TrimSpace(strings.TrimSuffix(strings.Fields(line[i+len("[failed:"):])[0], "]"))
				pi.failed, _ = strconv.Atoi(v)
			}
		case f[1] == "worker" && section == "workers":
			pi.workers = append(pi.workers, pid)
		}
	}
	if pi.masterPID == 0 {
		first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
		if first == "" {
			first = "empty reply"
		}
		return pi, fmt.Errorf("show proc: no master line in reply: %q", first)
	}
	return pi, nil
}

// masterCommand sends one command to the master CLI, which keeps the
// connection open unless told to "quit".
func masterCommand(ctx context.Context, socket, command string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return "", fmt.Errorf("master %s on %s: %w", command, socket, err)
	}
	defer func() { _ = conn.Close() }()
	deadline := time.Now().Add(socketTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return "", fmt.Errorf("master %s on %s: %w", command, socket, err)
	}
	if _, err := io.WriteString(conn, command+";quit\n"); err != nil {
		return "", fmt.Errorf("master %s on %s: %w", command, socket, err)
	}
	reply, err := io.ReadAll(io.LimitReader(conn, 1<<20))
	if err != nil {
		return "", fmt.Errorf("master %s on %s: %w", command, socket, err)
	}
	return string(reply), nil
}

func (m *masterProc) showProc(ctx context.Context) (procInfo, error) {
	out, err := masterCommand(ctx, m.opts.MasterSocket, "show proc")
	if err != nil {
		return procInfo{}, err
	}
	return parseShowProc(out)
}

// startMaster starts a new master on the live config file. Caller holds m.mu.
func (m *masterProc) startMaster() (*masterChild, error) {
	args := []string{"-W", "-S", m.opts.MasterSocket + ",mode,660", "-f", m.opts.ConfigPath}
	if m.opts.PIDFile != "" {
		args = append(args, "-p", m.opts.PIDFile)
	}
	if len(alivePIDs(m.orphans)) > 0 && m.opts.Socket != "" {
		// The listeners of the HAProxy a killed predecessor left: no
		// connection is refused while ours takes over.
		args = append(args, "-x", m.opts.Socket)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: output pipe: %v", ErrStartFailed, err)
	}
	cmd := exec.Command(m.opts.Bin, args...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // our terminal's Ctrl-C is for us, not for HAProxy
	err = cmd.Start()
	_ = w.Close() // the children hold it now
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("%w: %s %s: %v", ErrStartFailed, m.opts.Bin, strings.Join(args, " "), err)
	}
	p := &masterChild{cmd: cmd, pid: cmd.Process.Pid, started: time.Now(), exited: make(chan struct{})}
	m.master = p
	m.closing.Store(false)
	// Workers inherit the output pipe and may outlive the master briefly:
	// reading it and reaping the master are separate goroutines.
	m.wg.Go(func() {
		m.logOutput(p, r)
		_ = r.Close()
	})
	m.wg.Go(func() {
		p.err = cmd.Wait()
		close(p.exited)
		m.onMasterExit(p)
	})
	m.log.Info("haproxy master started", "pid", p.pid, "master_socket", m.opts.MasterSocket)
	return p, nil
}

// logOutput logs the master's output, one record per line, and keeps the
// last alert for error messages.
func (m *masterProc) logOutput(p *masterChild, r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "[ALERT]"):
			m.outMu.Lock()
			if m.lastAlert == "" { // the first alert since the last start/reload is the cause
				m.lastAlert = line
			}
			m.outMu.Unlock()
			m.log.Error("haproxy", "pid", p.pid, "line", line)
		case strings.HasPrefix(line, "[WARNING]"):
			m.log.Warn("haproxy", "pid", p.pid, "line", line)
		default:
			m.log.Debug("haproxy", "pid", p.pid, "line", line)
		}
	}
}

// lastAlertSuffix is ": <last alert>" of the master's output, or "".
func (m *masterProc) lastAlertSuffix() string {
	m.outMu.Lock()
	defer m.outMu.Unlock()
	return alertSuffix(m.lastAlert)
}

// onMasterExit restarts a master that died on its own, with a bounded
// backoff, unless Stop ended it or another process already replaced it.
// A restart takes m.mu, so it never races an Apply: after a failed
// reload, Apply has restored the previous file before a restart reads it.
func (m *masterProc) onMasterExit(p *masterChild) {
	m.mu.Lock()
	if m.closing.Load() || m.master != p {
		m.mu.Unlock()
		return
	}
	if time.Since(p.started) > stableRun || m.restartDelay == 0 {
		m.restartDelay = restartBackoffMin
	}
	m.mu.Unlock()
	for {
		delay := m.restartDelay
		m.log.Error("haproxy master exited, restarting", "pid", p.pid, "err", p.err, "backoff", delay)
		for end := time.Now().Add(delay); time.Now().Before(end); time.Sleep(pollInterval) {
			if m.closing.Load() {
				return
			}
		}
		m.mu.Lock()
		if m.closing.Load() || (m.master != p && m.master != nil && m.master.alive()) {
			m.mu.Unlock()
			return
		}
		m.restartDelay = min(2*delay, restartBackoffMax)
		m.dropStateFile() // a fresh start must not take an old state
		np, err := m.startMaster()
		m.mu.Unlock()
		if err == nil {
			m.log.Info("haproxy master restarted", "old_pid", p.pid, "pid", np.pid)
			select {
			case m.restartCh <- struct{}{}:
			default:
			}
			return
		}
		m.log.Error("haproxy master restart failed", "err", err)
	}
}

// supervisedState is procState in master-worker mode: pids are the
// current workers.
func (m *masterProc) state(ctx context.Context) procState {
	var st procState
	if m.master == nil || !m.master.alive() {
		// A predecessor's HAProxy still serving the live file holds its
		// binds: the start takes them over (-x), they are not taken.
		if len(alivePIDs(m.orphans)) > 0 && m.opts.Socket != "" {
			if _, err := ShowInfo(ctx, m.opts.Socket); err == nil {
				st.answering = true
			}
		}
		return st
	}
	if pi, err := m.showProc(ctx); err == nil {
		st.pids = pi.workers
	}
	if m.opts.Socket != "" {
		if info, err := ShowInfo(ctx, m.opts.Socket); err == nil {
			st.answering = true
			st.infoPID, _ = strconv.Atoi(info["Pid"])
			st.stopping = info["Stopping"] == "1"
		}
	} else if len(st.pids) > 0 {
		st.answering, st.infoPID = true, st.pids[0]
	}
	return st
}

// launchSupervised starts the master, or reloads it through the master
// CLI, then verifies the new worker. It returns the new worker's pid.
func (m *masterProc) launch(ctx context.Context, old procState) (int, error) {
	m.outMu.Lock()
	m.lastAlert = ""
	m.outMu.Unlock()
	if m.master == nil || !m.master.alive() {
		p, err := m.startMaster()
		if err != nil {
			return 0, err
		}
		pi, err := m.waitWorker(ctx, p, alivePIDs(m.orphans), -1)
		if err != nil {
			return 0, err
		}
		if err := m.verifySupervised(ctx, p, pi); err != nil {
			return pi, err
		}
		m.stopOrphans()
		return pi, nil
	}
	p := m.master
	before, err := m.showProc(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: before reload: %v", ErrStartFailed, err)
	}
	if m.opts.Version.Caps().ReloadStatus {
		pid, err := m.reloadWithStatus(ctx, before.workers)
		if err != nil {
			return 0, err
		}
		return pid, m.verifySupervised(ctx, p, pid)
	}
	// The master closes its socket while it re-executes: retry briefly.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		_, err = masterCommand(rctx, m.opts.MasterSocket, "reload")
		if err == nil || sleepCtx(rctx, pollInterval) != nil {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("%w: master reload: %v", ErrStartFailed, err)
	}
	pid, err := m.waitWorker(ctx, p, before.workers, before.failed)
	if err != nil {
		return 0, err
	}
	return pid, m.verifySupervised(ctx, p, pid)
}

// reloadWithStatus reloads through the master CLI of HAProxy 2.7+, which
// answers once the new worker is up or has failed: "Success=1" or
// "Success=0", "--", then the startup logs. A failure carries its
// [ALERT] lines; a success names the new worker ("New worker (PID)
// forked"), else one "show proc" finds it.
func (m *masterProc) reloadWithStatus(ctx context.Context, old []int) (int, error) {
	rctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	reply, err := masterCommand(rctx, m.opts.MasterSocket, "reload")
	if err != nil {
		return 0, fmt.Errorf("%w: master reload: %v", ErrStartFailed, err)
	}
	if strings.TrimSpace(reply) == "" {
		// The master closed the connection without a word: it exits
		// (its new worker died and exit-on-failure ends everything).
		return 0, fmt.Errorf("%w: master reload: no answer, the master is exiting%s", ErrStartFailed, m.lastAlertSuffix())
	}
	ok, logs, err := parseReloadStatus(reply)
	if err != nil {
		return 0, fmt.Errorf("%w: master reload: %v", ErrStartFailed, err)
	}
	m.log.Debug("master reload answered", "method", "reload status", "success", ok)
	if !ok {
		why := firstAlert(logs)
		if why == "" {
			why = "no [ALERT] in the startup logs"
		}
		return 0, fmt.Errorf("%w: master reload: Success=0: %s", ErrStartFailed, why)
	}
	if pid := newWorkerPID(logs); pid > 0 && !slices.Contains(old, pid) {
		return pid, nil
	}
	pi, err := m.showProc(rctx)
	if err != nil {
		return 0, fmt.Errorf("%w: after reload: %v", ErrStartFailed, err)
	}
	for _, w := range pi.workers {
		if !slices.Contains(old, w) {
			return w, nil
		}
	}
	return 0, fmt.Errorf("%w: master reload answered Success=1 but show proc lists no new worker (workers %v)", ErrStartFailed, pi.workers)
}

// parseReloadStatus reads the master CLI's answer to "reload" (2.7+):
// "Success=1" or "Success=0", a "--" line, then the startup logs.
func parseReloadStatus(reply string) (ok bool, logs string, err error) {
	first, rest, _ := strings.Cut(strings.TrimLeft(reply, "\r\n"), "\n")
	switch strings.TrimSpace(first) {
	case "Success=1":
		ok = true
	case "Success=0":
	default:
		return false, "", fmt.Errorf("answer %s is not Success=0 or Success=1", quoteStart(first))
	}
	rest = strings.TrimPrefix(strings.TrimLeft(rest, "\r\n"), "--")
	return ok, strings.TrimLeft(rest, "\r\n"), nil
}

// newWorkerPattern matches the master's "New worker (1234) forked".
var newWorkerPattern = regexp.MustCompile(`New worker \(([0-9]+)\) forked`)

// newWorkerPID is the pid the startup logs name as the new worker, or 0.
func newWorkerPID(logs string) int {
	m := newWorkerPattern.FindAllStringSubmatch(logs, -1)
	if len(m) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(m[len(m)-1][1])
	return pid
}

// waitWorker polls "show proc" until a worker that is not one of old
// runs. failedBefore >= 0 makes a grown failure count an error.
func (m *masterProc) waitWorker(ctx context.Context, p *masterChild, old []int, failedBefore int) (int, error) {
	wctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	var last error
	for {
		if !p.alive() {
			return 0, fmt.Errorf("%w: master %d exited%s", ErrStartFailed, p.pid, m.lastAlertSuffix())
		}
		pi, err := m.showProc(wctx)
		switch {
		case err != nil:
			last = err
		case pi.masterPID != p.pid:
			// The socket path is still a predecessor's master's until
			// ours has bound it.
			last = fmt.Errorf("master socket answered by master %d, not %d", pi.masterPID, p.pid)
		case failedBefore >= 0 && pi.failed > failedBefore:
			return 0, fmt.Errorf("%w: master reload failed (show proc: failed %d)%s", ErrStartFailed, pi.failed, m.lastAlertSuffix())
		default:
			for _, w := range pi.workers {
				if !slices.Contains(old, w) {
					return w, nil
				}
			}
			last = fmt.Errorf("no new worker yet (workers %v)", pi.workers)
		}
		if sleepCtx(wctx, pollInterval) != nil {
			return 0, fmt.Errorf("%w: no new worker: %v%s", ErrStartFailed, last, m.lastAlertSuffix())
		}
	}
}

// verifySupervised: the worker answers on the stats socket (when set) with
// its pid, and still runs after Settle.
func (m *masterProc) verifySupervised(ctx context.Context, p *masterChild, worker int) error {
	if err := waitAnswer(ctx, m.opts.Socket, worker, ""); err != nil {
		return err
	}
	if err := sleepCtx(ctx, m.opts.Settle); err != nil {
		return fmt.Errorf("%w: verifying worker %d: %v", ErrStartFailed, worker, err)
	}
	if !p.alive() {
		return fmt.Errorf("%w: master %d exited%s", ErrStartFailed, p.pid, m.lastAlertSuffix())
	}
	pi, err := m.showProc(ctx)
	if err != nil {
		return fmt.Errorf("%w: after reload: %v", ErrStartFailed, err)
	}
	if !slices.Contains(pi.workers, worker) {
		return fmt.Errorf("%w: worker %d exited after start%s", ErrStartFailed, worker, m.lastAlertSuffix())
	}
	return nil
}

// stopSupervised ends the master (SIGUSR1 soft stop, SIGTERM, SIGKILL)
// and waits for its goroutines. Caller does not hold m.mu.
func (m *masterProc) stopSupervised(ctx context.Context, p *masterChild) error {
	if p == nil {
		return nil
	}
	for _, step := range []struct {
		sig syscall.Signal
		d   time.Duration
	}{{syscall.SIGUSR1, m.opts.StopGrace}, {syscall.SIGTERM, 2 * time.Second}, {syscall.SIGKILL, time.Second}} {
		if !p.alive() {
			break
		}
		if err := p.cmd.Process.Signal(step.sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			m.log.Warn("signal haproxy master", "pid", p.pid, "signal", step.sig.String(), "err", err)
		}
		t := time.NewTimer(step.d)
		select {
		case <-p.exited:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	if p.alive() {
		return fmt.Errorf("stop haproxy: master %d still alive after SIGKILL", p.pid)
	}
	return nil
}

// masterProc supervises HAProxy in master-worker mode: the master is
// haconfd's child ("haproxy -W -S MasterSocket -f ConfigPath" in the
// foreground), restarted when it dies (backoff 100ms..5s), reloaded
// through the master CLI "reload" and confirmed by "show proc" (a new
// worker, no new failure).
type masterProc struct {
	opts Options
	log  *slog.Logger
	// mu is the Manager's: a restart never races an apply (after a failed
	// reload, the previous file is back before a restart reads it).
	mu *sync.Mutex

	master       *masterChild // guarded by mu
	restartDelay time.Duration
	closing      atomic.Bool // stop is ending the master: do not restart it
	wg           sync.WaitGroup
	outMu        sync.Mutex
	lastAlert    string
	restartCh    chan struct{}
	// orphans: HAProxy processes on the live file that are not ours (a
	// killed predecessor's), until ours serves; guarded by mu.
	orphans []int
}

func newMasterProc(opts Options, log *slog.Logger, mu *sync.Mutex) *masterProc {
	return &masterProc{opts: opts, log: log, mu: mu, restartCh: make(chan struct{}, 1)}
}

func (m *masterProc) restarts() <-chan struct{} { return m.restartCh }

// masterPID is the pid of the current master (0 if none).
func (m *masterProc) masterPID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.master == nil {
		return 0
	}
	return m.master.pid
}

// adopt notes the HAProxy processes that serve the live file without
// being ours: the master (and workers) of a haconfd that was killed
// (SIGKILL, OOM) and could not stop them. They keep serving until our
// master has taken their listeners over (-x) and serves, then they are
// soft-stopped. Without this the start failed on their binds for as long
// as they ran, serving a config nobody updated any more.
func (m *masterProc) adopt() bool {
	m.orphans = ourProcesses(m.opts.ConfigPath, nil)
	if len(m.orphans) > 0 {
		m.log.Warn("HAProxy processes left by an earlier haconfd serve the live file; taking their listeners over, then soft-stopping them",
			"pids", m.orphans)
	}
	return false
}

// stopOrphans soft-stops the predecessor's processes (SIGUSR1: a master
// passes it to its workers, which finish their connections; then it
// exits). Caller holds m.mu.
func (m *masterProc) stopOrphans() {
	for _, p := range alivePIDs(m.orphans) {
		if m.master != nil && p == m.master.pid {
			continue
		}
		if err := syscall.Kill(p, syscall.SIGUSR1); err != nil {
			m.log.Warn("soft-stop predecessor's haproxy", "pid", p, "err", err)
		}
	}
	if len(m.orphans) > 0 {
		m.log.Info("predecessor's HAProxy processes soft-stopped", "pids", m.orphans)
	}
	m.orphans = nil
}
func (m *masterProc) canReload(procState) string {
	return ""
}

func (m *masterProc) healthy(st procState) bool {
	if m.master == nil || !m.master.alive() || len(st.pids) == 0 {
		return false
	}
	return m.opts.Socket == "" || (st.answering && !st.stopping && slices.Contains(st.pids, st.infoPID))
}

func (m *masterProc) running(procState) bool { return m.master != nil && m.master.alive() }

// dropStateFile removes StateFile before a fresh start.
func (m *masterProc) dropStateFile() {
	if m.opts.StateFile == "" {
		return
	}
	if err := removeDurable(m.opts.StateFile); err != nil {
		m.log.Warn("remove server state file", "err", err)
	}
}

// recover after a failed master reload: the old workers keep serving
// when they still answer; otherwise the master is started again on the
// previous file (or stopped when there was none).
func (m *masterProc) recover(ctx context.Context, old procState, _ int, prevExists bool) (int, error) {
	if len(old.pids) > 0 && m.opts.Socket != "" {
		if info, err := ShowInfo(ctx, m.opts.Socket); err == nil {
			pid, _ := strconv.Atoi(info["Pid"])
			if slices.Contains(old.pids, pid) && info["Stopping"] != "1" && alive(pid) {
				return pid, nil
			}
		}
	}
	if !prevExists {
		m.closing.Store(true)
		return 0, m.stopSupervised(ctx, m.master)
	}
	pid, err := m.launch(ctx, m.state(ctx))
	if err != nil {
		return 0, fmt.Errorf("reload of the previous config: %w", err)
	}
	return pid, nil
}

// stop ends the master and its workers, then any older worker of this
// config still finishing its connections.
func (m *masterProc) stop(ctx context.Context) error {
	m.closing.Store(true)
	m.mu.Lock()
	p := m.master
	m.mu.Unlock()
	serr := m.stopSupervised(ctx, p)
	m.wg.Wait() // supervision goroutines
	err := stopProcesses(ctx, m.log, m.opts, ourProcesses(m.opts.ConfigPath, nil))
	return errors.Join(serr, err)
}
