package haproxy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestParseShowProc(t *testing.T) {
	out := `#<PID>          <type>          <reloads>       <uptime>        <version>
1162            master          5 [failed: 2]   0d00h02m07s     2.6.12
# workers
1271            worker          0               0d00h00m00s     2.6.12
# old workers
1233            worker          1               0d00h00m03s     2.6.12
# programs

`
	pi, err := parseShowProc(out)
	if err != nil {
		t.Fatal(err)
	}
	if pi.masterPID != 1162 || pi.reloads != 5 || pi.failed != 2 || !slices.Equal(pi.workers, []int{1271}) {
		t.Errorf("parseShowProc = %+v", pi)
	}
	if _, err := parseShowProc("Unknown command\n"); err == nil || !strings.Contains(err.Error(), "Unknown command") {
		t.Errorf("parseShowProc(garbage) = %v", err)
	}
}

func TestNewSuperviseOptions(t *testing.T) {
	requireHAProxy(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "h.cfg")
	for _, tt := range []struct {
		name string
		opts Options
		want string
	}{
		{"no master socket", Options{Bin: haproxyBin, ConfigPath: cfg, Supervise: true}, "option MasterSocket: required with Supervise"},
		{"master socket alone", Options{Bin: haproxyBin, ConfigPath: cfg, MasterSocket: filepath.Join(dir, "m.sock")}, "option MasterSocket: only with Supervise"},
		{"with reload cmd", Options{Bin: haproxyBin, ConfigPath: cfg, Supervise: true, MasterSocket: filepath.Join(dir, "m.sock"), ReloadCmd: "true"}, "option ReloadCmd: not with Supervise"},
		{"state file dir", Options{Bin: haproxyBin, ConfigPath: cfg, StateFile: "/nonexistent/state"}, "option StateFile"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("New = %v, want one line containing %q", err, tt.want)
			}
		})
	}
	m, err := New(Options{Bin: haproxyBin, ConfigPath: cfg})
	if err != nil || m.opts.Settle != 200*time.Millisecond || m.opts.StopGrace != 5*time.Second {
		t.Fatalf("defaults: %+v, %v", m, err)
	}
}

func TestSupervise(t *testing.T) {
	s := newRuntimeSite(t, func(o *Options) {
		o.Supervise = true
		o.MasterSocket = filepath.Join(filepath.Dir(o.ConfigPath), "m.sock")
	})
	a, b := startBackend(t, "a"), startBackend(t, "b")
	front := freePort(t)
	base := s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""})
	ctx := t.Context()

	res := mustApply(t, s, base, ActionStart)
	worker := res.PID
	if got, err := dial(front); err != nil || got != "a" {
		t.Fatalf("client = %q, %v", got, err)
	}
	masterPID := s.m.ctl.(*masterProc).masterPID()

	t.Run("runtime change keeps the worker", func(t *testing.T) {
		applyFast(t, s, s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""}, rtServer{"b", b.port, ""}), time.Second)
		if p := s.m.Process(t.Context()); p.PID != worker {
			t.Fatalf("process = %+v, want worker %d", p, worker)
		}
		seenWithin(t, front, "b", 5*time.Second)
	})

	t.Run("reload through the master", func(t *testing.T) {
		other := freePort(t)
		next := append(s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""}, rtServer{"b", b.port, ""}),
			fmt.Sprintf("listen extra\n    bind 127.0.0.1:%d\n    server e 127.0.0.1:%d\n", other, b.port)...)
		res := mustApply(t, s, next, ActionReload)
		if res.PID == worker || res.PID == 0 {
			t.Fatalf("result = %+v, want a new worker", res)
		}
		pi, err := s.m.ctl.(*masterProc).showProc(ctx)
		if err != nil || pi.masterPID != masterPID || !slices.Equal(pi.workers, []int{res.PID}) || pi.failed != 0 {
			t.Fatalf("show proc = %+v, %v; want master %d with worker %d", pi, err, masterPID, res.PID)
		}
		if got, err := dial(other); err != nil || got != "b" {
			t.Fatalf("extra: %q, %v", got, err)
		}
		worker = res.PID
		t.Logf("master reload in %v", res.Duration)
	})

	t.Run("dies after fork: rolled back", func(t *testing.T) {
		good := readFile(t, s.cfg)
		bad := bytes.Replace(good, []byte("global\n"), []byte("global\n    chroot /nonexistent-dir\n"), 1)
		res, err := s.m.Apply(ctx, bad)
		mustErrorIs(t, err, ErrStartFailed)
		if !res.RolledBack || !bytes.Equal(readFile(t, s.cfg), good) {
			t.Fatalf("result = %+v, want rolled back to the previous file", res)
		}
		eventually(t, 10*time.Second, "clients served again", func() bool {
			got, err := dial(front)
			return err == nil && (got == "a" || got == "b")
		})
		t.Logf("failed reload: %v; rolled back in %v", err, res.Duration)
	})

	// A reload that fails before the fork (a listener that cannot be
	// bound; haproxy -c does not bind): on 2.7+ the master's own answer
	// says so (Success=0 and its alert), on 2.6 the failure counter of
	// "show proc" does. Either way the previous file is back and the old
	// worker serves.
	t.Run("refused before fork: reported by the version's method", func(t *testing.T) {
		good := readFile(t, s.cfg)
		bad := append(bytes.Clone(good), fmt.Sprintf("listen unbindable\n    bind /nonexistent-dir/x.sock\n    server t 127.0.0.1:%d\n", b.port)...)
		res, err := s.m.Apply(ctx, bad)
		mustErrorIs(t, err, ErrStartFailed)
		want := "show proc: failed"
		if haproxyVersion.Caps().ReloadStatus {
			want = "Success=0: " // followed by the alert
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("HAProxy %s: error %q does not come from the method for this version (want %q in it)", haproxyVersion, err, want)
		}
		if !res.RolledBack || !bytes.Equal(readFile(t, s.cfg), good) {
			t.Fatalf("result = %+v, want rolled back to the previous file", res)
		}
		if got, err := dial(front); err != nil || (got != "a" && got != "b") {
			t.Fatalf("client after the refused reload = %q, %v", got, err)
		}
		t.Logf("HAProxy %s: %v", haproxyVersion, err)
	})

	t.Run("master killed: restarted", func(t *testing.T) {
		old := s.m.ctl.(*masterProc).masterPID()
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "a new master with a worker", func() bool {
			pi, err := s.m.ctl.(*masterProc).showProc(ctx)
			return err == nil && pi.masterPID != old && len(pi.workers) == 1
		})
		eventually(t, 10*time.Second, "clients served", func() bool {
			got, err := dial(front)
			return err == nil && (got == "a" || got == "b")
		})
		cur := readFile(t, s.cfg)
		next := bytes.Replace(cur, fmt.Appendf(nil, "    server b 127.0.0.1:%d \n", b.port), nil, 1)
		if bytes.Equal(next, cur) {
			t.Fatal("test setup: no server b line")
		}
		res := applyFast(t, s, next, time.Second)
		if res.commands == 0 {
			t.Errorf("plan = %+v", res.plan)
		}
	})

	t.Run("stop", func(t *testing.T) {
		if err := s.m.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := dial(front); err == nil {
			t.Error("haproxy still answers after Stop")
		}
	})
}

// TestSuperviseReloadUnderLoad: 32 clients through HAProxy while a listen
// section is added and removed (master CLI reloads): no failed connection.
func TestSuperviseReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	s := newRuntimeSite(t, func(o *Options) {
		o.Logger = nil
		o.Supervise = true
		o.MasterSocket = filepath.Join(filepath.Dir(o.ConfigPath), "m.sock")
	})
	a, b := startBackend(t, "a"), startBackend(t, "b")
	front, other := freePort(t), freePort(t)
	base := s.rtConfig(front, "roundrobin", rtServer{"a", a.port, "check"}, rtServer{"b", b.port, ""})
	extra := append(slices.Clone(base), fmt.Sprintf("listen extra\n    bind 127.0.0.1:%d\n    server e 127.0.0.1:%d\n", other, b.port)...)
	mustApply(t, s, base, ActionStart)

	var okCount, failCount atomic.Int64
	var firstErr atomic.Value
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := dial(front); err != nil {
					failCount.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				okCount.Add(1)
			}
		})
	}
	var applyErr error
	for i := range 6 {
		cfg := [][]byte{extra, base}[i%2]
		if res, err := s.m.Apply(ctx, cfg); err != nil || res.Action != ActionReload {
			applyErr = fmt.Errorf("reload %d: %+v, %w", i, res, err)
			break
		}
	}
	cancel()
	wg.Wait()
	if applyErr != nil {
		t.Fatal(applyErr)
	}
	t.Logf("6 master reloads, 32 clients: %d ok, %d failed connections", okCount.Load(), failCount.Load())
	if failCount.Load() != 0 {
		t.Errorf("%d connections failed, first: %v", failCount.Load(), firstErr.Load())
	}
}

// TestSuperviseTakesOverAKilledPredecessorsMaster: a haconfd killed with
// SIGKILL leaves its HAProxy master serving the live file. The next one
// used to fail every start on the binds that master holds ("bind address
// already in use") and never served a change again; it must take the
// listeners over (-x) with no client refused, and soft-stop the old master.
func TestSuperviseTakesOverAKilledPredecessorsMaster(t *testing.T) {
	s := newRuntimeSite(t, func(o *Options) {
		o.Supervise = true
		o.MasterSocket = filepath.Join(filepath.Dir(o.ConfigPath), "m.sock")
	})
	a := startBackend(t, "a")
	front := freePort(t)
	cfg := s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""})
	if err := os.WriteFile(s.cfg, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	// The predecessor's master, started as haconfd starts it.
	old := exec.Command(haproxyBin, "-W", "-S", s.m.opts.MasterSocket+",mode,660", "-f", s.cfg, "-p", s.pid)
	old.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	oldDone := make(chan struct{})
	go func() { _ = old.Wait(); close(oldDone) }()
	t.Cleanup(func() {
		_ = old.Process.Kill()
		<-oldDone
	})
	eventually(t, 10*time.Second, "the predecessor's master serves", func() bool {
		got, err := dial(front)
		return err == nil && got == "a"
	})

	var failed atomic.Int64
	var firstErr atomic.Value
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := dial(front); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	res, err := s.m.Apply(ctx, cfg)
	if err != nil || res.Action != ActionStart {
		cancel()
		wg.Wait()
		t.Fatalf("apply = %+v, %v; want a start that takes the predecessor's listeners over", res, err)
	}
	select {
	case <-oldDone:
	case <-time.After(10 * time.Second):
		t.Error("the predecessor's master still runs 10s after the takeover")
	}
	cancel()
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d connections failed during the takeover, first: %v", failed.Load(), firstErr.Load())
	}
	pi, err := s.m.ctl.(*masterProc).showProc(t.Context())
	if err != nil || pi.masterPID == old.Process.Pid || !slices.Equal(pi.workers, []int{res.PID}) {
		t.Fatalf("show proc = %+v, %v; want our master with worker %d", pi, err, res.PID)
	}
	if got, err := dial(front); err != nil || got != "a" {
		t.Fatalf("client after the takeover = %q, %v", got, err)
	}
}
