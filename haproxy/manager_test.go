package haproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewOptions(t *testing.T) {
	requireHAProxy(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"minimal", Options{Bin: haproxyBin, ConfigPath: cfg}, ""},
		{"missing config path", Options{Bin: haproxyBin}, "option ConfigPath: required"},
		{"bad bin", Options{Bin: filepath.Join(dir, "nope"), ConfigPath: cfg}, "option Bin"},
		{"config dir missing", Options{Bin: haproxyBin, ConfigPath: filepath.Join(dir, "x", "h.cfg")}, "option ConfigPath"},
		{"config is a dir", Options{Bin: haproxyBin, ConfigPath: dir}, "is a directory"},
		{"pidfile dir missing", Options{Bin: haproxyBin, ConfigPath: cfg, PIDFile: "/nonexistent/h.pid"}, "option PIDFile"},
		{"socket too long", Options{Bin: haproxyBin, ConfigPath: cfg, Socket: "/" + strings.Repeat("s", 120)}, "option Socket"},
		{"negative settle", Options{Bin: haproxyBin, ConfigPath: cfg, Settle: -1}, "option Settle"},
		{"negative timeout", Options{Bin: haproxyBin, ConfigPath: cfg, Timeout: -time.Second}, "option Timeout"},
		{"negative stop grace", Options{Bin: haproxyBin, ConfigPath: cfg, StopGrace: -time.Second}, "option StopGrace"},
		{"blank reload cmd", Options{Bin: haproxyBin, ConfigPath: cfg, ReloadCmd: "  "}, "option ReloadCmd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New = %v", err)
				}
				if m.opts.Settle != 200*time.Millisecond || m.opts.Timeout != 30*time.Second {
					t.Errorf("defaults not applied: %+v", m.opts)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New = %v, want error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestApplyWithoutPIDFile(t *testing.T) {
	requireHAProxy(t)
	m, err := New(Options{Bin: haproxyBin, ConfigPath: filepath.Join(t.TempDir(), "h.cfg")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(t.Context(), []byte("global\n")); err == nil || !strings.Contains(err.Error(), "PIDFile") {
		t.Fatalf("Apply = %v, want an error naming PIDFile", err)
	}
}

func TestCheck(t *testing.T) {
	s := newSite(t, nil)
	be := startBackend(t, "a")
	good := s.config("", listenSpec{"db", freePort(t), []backend{be}})
	if err := s.m.Check(t.Context(), good); err != nil {
		t.Fatalf("Check(good) = %v", err)
	}
	bad := append(slices.Clone(good), "    nonsense here\n"...)
	err := s.m.Check(t.Context(), bad)
	var ice *InvalidConfigError
	if !errors.As(err, &ice) {
		t.Fatalf("Check(bad) = %v, want *InvalidConfigError", err)
	}
	wantLine := bytes.Count(bad, []byte("\n"))
	if e := ice.Errors[0]; e.File != s.cfg || e.Line != wantLine {
		t.Errorf("alert = %+v, want %s:%d", e, s.cfg, wantLine)
	}
	if left := stageLeftovers(t, s.dir); len(left) > 0 {
		t.Errorf("stage files left: %v", left)
	}
	if _, err := os.Stat(s.cfg); !os.IsNotExist(err) {
		t.Errorf("Check created the live file: %v", err)
	}
}

// Write (the file after runtime API changes) validates too: a config
// haproxy -c refuses never becomes the live file.
func TestWriteValidates(t *testing.T) {
	s := newSite(t, nil)
	be := startBackend(t, "a")
	good := s.config("", listenSpec{"db", freePort(t), []backend{be}})
	if err := s.m.Write(t.Context(), good); err != nil {
		t.Fatalf("Write(good) = %v", err)
	}
	bad := append(slices.Clone(good), "    nonsense here\n"...)
	err := s.m.Write(t.Context(), bad)
	var ice *InvalidConfigError
	if !errors.As(err, &ice) || !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Write(bad) = %v, want *InvalidConfigError", err)
	}
	if got := readFile(t, s.cfg); !bytes.Equal(got, good) {
		t.Fatalf("live file after a refused write:\n%s", got)
	}
	if left := stageLeftovers(t, s.dir); len(left) > 0 {
		t.Errorf("stage files left: %v", left)
	}
}

// TestApplyLifecycle runs one HAProxy through start, no-op, reload, and the
// failures that must leave it serving.
func TestApplyLifecycle(t *testing.T) {
	s := newSite(t, nil)
	beA, beB := startBackend(t, "a"), startBackend(t, "b")
	port := freePort(t)
	cfgA := s.config("", listenSpec{"db", port, []backend{beA}})
	cfgB := s.config("", listenSpec{"db", port, []backend{beB}})
	ctx := t.Context()
	var servingPID int

	mustServe := func(t *testing.T, want string) {
		t.Helper()
		got, err := dial(port)
		if err != nil || got != want {
			t.Fatalf("client through haproxy got %q, %v; want %q", got, err, want)
		}
	}

	t.Run("first start", func(t *testing.T) {
		res, err := s.m.Apply(ctx, cfgA)
		if err != nil {
			t.Fatalf("Apply = %v", err)
		}
		if res.Action != ActionStart || res.PID == 0 || res.RolledBack || len(res.OldPIDs) != 0 {
			t.Fatalf("result = %+v, want a start", res)
		}
		if pids := s.m.Process(t.Context()).PIDs; !slices.Equal(pids, []int{res.PID}) {
			t.Errorf("PIDs = %v, want [%d]", pids, res.PID)
		}
		info, err := ShowInfo(ctx, s.sock)
		if err != nil || info["Pid"] != strconv.Itoa(res.PID) {
			t.Fatalf("ShowInfo = %v, %v", info, err)
		}
		mustServe(t, "a")
		servingPID = res.PID
		t.Logf("started pid %d in %v", res.PID, res.Duration)
	})

	t.Run("same bytes", func(t *testing.T) {
		res, err := s.m.Apply(ctx, cfgA)
		if err != nil {
			t.Fatalf("Apply = %v", err)
		}
		if res.Action != ActionNone || res.PID != servingPID {
			t.Fatalf("result = %+v, want none with pid %d", res, servingPID)
		}
		if pids := s.m.Process(t.Context()).PIDs; !slices.Equal(pids, []int{servingPID}) {
			t.Errorf("PIDs = %v, want [%d]", pids, servingPID)
		}
	})

	t.Run("reload to a new backend", func(t *testing.T) {
		res, err := s.m.Apply(ctx, cfgB)
		if err != nil {
			t.Fatalf("Apply = %v", err)
		}
		if res.Action != ActionReload || res.PID == servingPID || !slices.Equal(res.OldPIDs, []int{servingPID}) {
			t.Fatalf("result = %+v, want a reload from %d", res, servingPID)
		}
		mustServe(t, "b")
		old := servingPID
		eventually(t, 15*time.Second, "old pid to exit", func() bool { return !alive(old) })
		servingPID = res.PID
		t.Logf("reloaded %d -> %d in %v", old, res.PID, res.Duration)
	})

	t.Run("invalid config", func(t *testing.T) {
		bad := append(slices.Clone(cfgA), "    frobnicate 1\n"...)
		res, err := s.m.Apply(ctx, bad)
		mustErrorIs(t, err, ErrInvalidConfig)
		var ice *InvalidConfigError
		if !errors.As(err, &ice) || ice.Errors[0].Line == 0 || !strings.Contains(ice.Errors[0].Msg, "frobnicate") {
			t.Fatalf("error = %v, want an alert on the frobnicate line", err)
		}
		if res.Action != ActionNone || res.RolledBack {
			t.Errorf("result = %+v", res)
		}
		if !bytes.Equal(readFile(t, s.cfg), cfgB) {
			t.Error("live file changed")
		}
		if pids := s.m.Process(t.Context()).PIDs; !slices.Equal(pids, []int{servingPID}) {
			t.Errorf("PIDs = %v, want [%d]", pids, servingPID)
		}
		if left := stageLeftovers(t, s.dir); len(left) > 0 {
			t.Errorf("stage files left: %v", left)
		}
		mustServe(t, "b")
	})

	t.Run("bind in use", func(t *testing.T) {
		squatter, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = squatter.Close() }()
		sqPort := squatter.Addr().(*net.TCPAddr).Port
		next := s.config("", listenSpec{"db", port, []backend{beB}}, listenSpec{"other", sqPort, []backend{beA}})

		var failed, ok atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := dial(port); err != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		})
		res, err := s.m.Apply(ctx, next)
		close(stop)
		wg.Wait()

		mustErrorIs(t, err, ErrBindInUse)
		if !strings.Contains(err.Error(), "127.0.0.1:"+strconv.Itoa(sqPort)) {
			t.Errorf("error %q does not name the address", err)
		}
		if res.Action != ActionNone || res.RolledBack {
			t.Errorf("result = %+v", res)
		}
		if !bytes.Equal(readFile(t, s.cfg), cfgB) {
			t.Error("live file changed")
		}
		if pids := s.m.Process(t.Context()).PIDs; !slices.Equal(pids, []int{servingPID}) {
			t.Errorf("PIDs = %v, want [%d]", pids, servingPID)
		}
		if failed.Load() != 0 {
			t.Errorf("%d client connections failed during the refused apply", failed.Load())
		}
		mustServe(t, "b")
		t.Logf("client during refused apply: ok=%d failed=%d", ok.Load(), failed.Load())
	})

	t.Run("dies after fork", func(t *testing.T) {
		next := s.config("chroot /nonexistent-dir", listenSpec{"db", port, []backend{beA}})
		if err := s.m.Check(ctx, next); err != nil {
			t.Fatalf("haproxy -c should pass a missing chroot dir: %v", err)
		}
		res, err := s.m.Apply(ctx, next)
		mustErrorIs(t, err, ErrStartFailed)
		if !strings.Contains(err.Error(), "chroot") {
			t.Errorf("error %q lacks haproxy's alert", err)
		}
		if !res.RolledBack || res.Action != ActionReload {
			t.Errorf("result = %+v, want a rolled back reload", res)
		}
		if !bytes.Equal(readFile(t, s.cfg), cfgB) {
			t.Error("live file is not the previous config")
		}
		if left := stageLeftovers(t, s.dir); len(left) > 0 {
			t.Errorf("stage files left: %v", left)
		}
		mustServe(t, "b")
		info, ierr := ShowInfo(ctx, s.sock)
		if ierr != nil || info["Pid"] != strconv.Itoa(res.PID) || info["Stopping"] == "1" {
			t.Fatalf("after rollback ShowInfo = %v, %v; want pid %d serving", info, ierr, res.PID)
		}
		if pids := s.m.Process(t.Context()).PIDs; !slices.Equal(pids, []int{res.PID}) {
			t.Errorf("PIDs after rollback = %v, want [%d]", pids, res.PID)
		}
		// The old process never stopped serving: it is told to stop only
		// once the new one is verified, so it still serves, not a restart.
		if res.PID != servingPID {
			t.Errorf("pid %d serves after the rollback, want the old pid %d (it was stopped before the new one was verified)", res.PID, servingPID)
		}
		t.Logf("rolled back in %v: old pid %d, serving pid %d: %v", res.Duration, servingPID, res.PID, err)
		servingPID = res.PID
	})

	t.Run("next good change applies", func(t *testing.T) {
		res, err := s.m.Apply(ctx, cfgA)
		if err != nil || res.Action != ActionReload {
			t.Fatalf("Apply = %+v, %v", res, err)
		}
		mustServe(t, "a")
	})

	t.Run("stop", func(t *testing.T) {
		if err := s.m.Stop(ctx); err != nil {
			t.Fatalf("Stop = %v", err)
		}
		if pids := s.m.Process(t.Context()).PIDs; len(pids) != 0 {
			t.Errorf("PIDs after Stop = %v", pids)
		}
		if _, err := dial(port); err == nil {
			t.Error("haproxy still answers after Stop")
		}
	})

	t.Run("same bytes but not running starts", func(t *testing.T) {
		res, err := s.m.Apply(ctx, cfgA)
		if err != nil || res.Action != ActionStart {
			t.Fatalf("Apply = %+v, %v; want a start", res, err)
		}
		mustServe(t, "a")
	})
}

func TestApplyFirstStartFailureRemovesFile(t *testing.T) {
	s := newSite(t, nil)
	be := startBackend(t, "a")
	next := s.config("chroot /nonexistent-dir", listenSpec{"db", freePort(t), []backend{be}})
	res, err := s.m.Apply(t.Context(), next)
	mustErrorIs(t, err, ErrStartFailed)
	if !res.RolledBack || res.PID != 0 {
		t.Errorf("result = %+v", res)
	}
	if _, err := os.Stat(s.cfg); !os.IsNotExist(err) {
		t.Errorf("a config that never ran is still live: %v", err)
	}
	if pids := s.m.Process(t.Context()).PIDs; len(pids) != 0 {
		t.Errorf("PIDs = %v", pids)
	}
}

func TestApplyCanceled(t *testing.T) {
	s := newSite(t, nil)
	be := startBackend(t, "a")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.m.Apply(ctx, s.config("", listenSpec{"db", freePort(t), []backend{be}}))
	mustErrorIs(t, err, context.Canceled)
	if _, err := os.Stat(s.cfg); !os.IsNotExist(err) {
		t.Errorf("canceled Apply wrote the live file: %v", err)
	}
	if left := stageLeftovers(t, s.dir); len(left) > 0 {
		t.Errorf("stage files left: %v", left)
	}
}

func TestApplyRefusesReloadWithoutSocket(t *testing.T) {
	s := newSite(t, func(o *Options) { o.Socket = "" })
	be := startBackend(t, "a")
	port := freePort(t)
	cfg := func(id string) []byte {
		return fmt.Appendf(nil, "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n# %s\nlisten db\n    bind 127.0.0.1:%d\n    server s 127.0.0.1:%d\n", id, port, be.port)
	}
	res, err := s.m.Apply(t.Context(), cfg("one"))
	if err != nil || res.Action != ActionStart {
		t.Fatalf("start without socket = %+v, %v", res, err)
	}
	_, err = s.m.Apply(t.Context(), cfg("two"))
	if err == nil || !strings.Contains(err.Error(), "Socket") {
		t.Fatalf("reload without socket = %v, want a refusal naming Socket", err)
	}
	if !bytes.Equal(readFile(t, s.cfg), cfg("one")) {
		t.Error("live file changed")
	}
}

// TestApplyReloadCmd: the operator's command reloads HAProxy; we only verify.
func TestApplyReloadCmd(t *testing.T) {
	requireHAProxy(t)
	dir := shortDir(t)
	pidFile, sock := filepath.Join(dir, "h.pid"), filepath.Join(dir, "s.sock")
	helper := newSite(t, func(o *Options) {
		o.ConfigPath = filepath.Join(dir, "h.cfg")
		o.PIDFile, o.Socket = pidFile, sock
	}) // owns the process for cleanup and the first start
	helper.sock = sock
	be := startBackend(t, "a")
	port := freePort(t)
	first := helper.config("", listenSpec{"db", port, []backend{be}})
	if _, err := helper.m.Apply(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	cmd := fmt.Sprintf(`exec %s -D -p %s -f "$HACONFD_CONFIG" -x %s -sf $(cat %s)`, haproxyBin, pidFile, sock, pidFile)
	m, err := New(Options{Bin: haproxyBin, ConfigPath: filepath.Join(dir, "h.cfg"), Socket: sock, ReloadCmd: cmd, Settle: 50 * time.Millisecond, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	oldPID := helper.m.Process(t.Context()).PIDs[0]
	res, err := m.Apply(t.Context(), append(slices.Clone(first), "# changed\n"...))
	if err != nil || res.Action != ActionReload || res.PID == oldPID || res.PID == 0 {
		t.Fatalf("Apply via ReloadCmd = %+v, %v", res, err)
	}
	if got, err := dial(port); err != nil || got != "a" {
		t.Fatalf("client = %q, %v", got, err)
	}

	// A failing reload command: rolled back, the file restored.
	bad, err := New(Options{Bin: haproxyBin, ConfigPath: filepath.Join(dir, "h.cfg"), Socket: sock, ReloadCmd: "echo '[ALERT]    (1) : reload broke' >&2; exit 3", Settle: 50 * time.Millisecond, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	before := readFile(t, filepath.Join(dir, "h.cfg"))
	res, err = bad.Apply(t.Context(), append(slices.Clone(first), "# changed again\n"...))
	mustErrorIs(t, err, ErrStartFailed)
	if !strings.Contains(err.Error(), "reload broke") || !res.RolledBack {
		t.Errorf("Apply = %+v, %v", res, err)
	}
	if !bytes.Equal(readFile(t, filepath.Join(dir, "h.cfg")), before) {
		t.Error("live file not restored")
	}
	if err := bad.Stop(t.Context()); err == nil {
		t.Error("Stop with ReloadCmd should refuse")
	}
}

// TestReloadUnderLoad: 4 clients connect in a loop through HAProxy while it
// is reloaded 10 times; no connection may fail.
func TestReloadUnderLoad(t *testing.T) {
	s := newSite(t, func(o *Options) { o.Logger = nil })
	beA, beB := startBackend(t, "a"), startBackend(t, "b")
	port := freePort(t)
	cfg := func(i int) []byte {
		be := []backend{beA, beB}[i%2]
		return append(s.config("", listenSpec{"db", port, []backend{be}}), fmt.Sprintf("# generation %d\n", i)...)
	}
	ctx := t.Context()
	if _, err := s.m.Apply(ctx, cfg(0)); err != nil {
		t.Fatal(err)
	}

	const clients, perClientCap, reloads = 4, 50000, 10
	var okCount, failCount atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range perClientCap {
				select {
				case <-stop:
					return
				default:
				}
				id, err := dial(port)
				if err == nil && id != "a" && id != "b" {
					err = fmt.Errorf("unexpected id %q", id)
				}
				if err != nil {
					failCount.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				okCount.Add(1)
			}
		})
	}
	start := time.Now()
	var applyErr error
	pids := make(map[int]bool)
	for i := 1; i <= reloads; i++ {
		res, err := s.m.Apply(ctx, cfg(i))
		if err != nil || res.Action != ActionReload {
			applyErr = fmt.Errorf("reload %d: %+v, %w", i, res, err)
			break
		}
		pids[res.PID] = true
	}
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if applyErr != nil {
		t.Fatal(applyErr)
	}
	t.Logf("%d reloads in %v (%d distinct pids), %d clients: %d ok, %d failed connections", reloads, elapsed, len(pids), clients, okCount.Load(), failCount.Load())
	if failCount.Load() != 0 {
		t.Errorf("%d connections failed, first: %v", failCount.Load(), firstErr.Load())
	}
	if okCount.Load() == 0 {
		t.Error("no connection succeeded")
	}
}

// TestRollbackKeepsServingOld: when the old process still serves after a
// failed start, it is kept, the failed process is ended and the pidfile
// lists the old pid again.
func TestRollbackKeepsServingOld(t *testing.T) {
	s := newSite(t, nil)
	be := startBackend(t, "a")
	port := freePort(t)
	good := s.config("", listenSpec{"db", port, []backend{be}})
	res, err := s.m.Apply(t.Context(), good)
	if err != nil {
		t.Fatal(err)
	}
	oldPID := res.PID
	old := s.m.ctl.state(t.Context())

	// A stray process standing for a failed new HAProxy, listed in the pidfile.
	stray := exec.Command("sleep", "60")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	waitDone := make(chan error, 1)
	go func() { waitDone <- stray.Wait() }()
	t.Cleanup(func() {
		_ = stray.Process.Kill()
		<-waitDone
	})
	if err := os.WriteFile(s.pid, []byte(strconv.Itoa(stray.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.cfg, []byte("broken"), 0o644); err != nil {
		t.Fatal(err)
	}

	pid, err := s.m.rollback(t.Context(), good, true, old, stray.Process.Pid)
	if err != nil || pid != oldPID {
		t.Fatalf("rollback = %d, %v; want old pid %d kept", pid, err, oldPID)
	}
	select {
	case <-waitDone:
		waitDone <- nil
	case <-time.After(5 * time.Second):
		t.Error("failed process not terminated")
	}
	if pids := s.m.Process(t.Context()).PIDs; !slices.Equal(pids, []int{oldPID}) {
		t.Errorf("PIDs = %v, want [%d]", pids, oldPID)
	}
	if !bytes.Equal(readFile(t, s.cfg), good) {
		t.Error("live file not restored")
	}
	if got, err := dial(port); err != nil || got != "a" {
		t.Errorf("client = %q, %v", got, err)
	}
}

// Stop signals only haproxy processes running this config: a pid in the
// pidfile that now belongs to another program (a recycled pid) is left
// alone.
func TestStopLeavesRecycledPID(t *testing.T) {
	s := newSite(t, nil)
	be := startBackend(t, "a")
	res, err := s.m.Apply(t.Context(), s.config("", listenSpec{"db", freePort(t), []backend{be}}))
	if err != nil {
		t.Fatal(err)
	}
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- other.Wait() }()
	t.Cleanup(func() {
		_ = other.Process.Kill()
		<-done
	})
	// The pidfile now also names the other program, as after a reboot
	// that recycled the pid.
	if err := os.WriteFile(s.pid, []byte(fmt.Sprintf("%d\n%d\n", res.PID, other.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.m.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		t.Fatalf("Stop killed pid %d, which is not HAProxy: %v", other.Process.Pid, err)
	default:
	}
	if alive(res.PID) {
		t.Fatalf("HAProxy pid %d still alive after Stop", res.PID)
	}
}
