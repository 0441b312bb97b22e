package confd_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haconfd/haconfd/internal/confd"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// stageFiles lists the ".<base>*" stage files left in dir.
func stageFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, ".*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// lines returns the lines of a log file written by commands ("" if none).
func lines(t *testing.T, p string) []string {
	t.Helper()
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func TestApply(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	dest := filepath.Join(dir, "haproxy.cfg")
	r := confd.Resource{Name: "h.toml", Dest: dest, UID: -1, GID: -1,
		CheckCmd:  "grep -q good {{.src}} && echo check >> " + log,
		ReloadCmd: "echo reload:{{.dest}} >> " + log}
	a := confd.NewApplier(nil, confd.Global{})

	changed, err := a.Apply(ctx, r, []byte("good 1\n"))
	if err != nil || !changed {
		t.Fatalf("first apply: %v %v", changed, err)
	}
	if got := readFile(t, dest); got != "good 1\n" {
		t.Errorf("dest %q", got)
	}
	if st, _ := os.Stat(dest); st.Mode() != 0o644 {
		t.Errorf("mode %v, want confd's default 0644", st.Mode())
	}
	if got := lines(t, log); strings.Join(got, " ") != "check reload:"+dest {
		t.Errorf("commands %q", got)
	}

	// Same content: nothing runs.
	changed, err = a.Apply(ctx, r, []byte("good 1\n"))
	if err != nil || changed {
		t.Fatalf("same apply: %v %v", changed, err)
	}
	if got := lines(t, log); len(got) != 2 {
		t.Errorf("commands ran for an unchanged file: %q", got)
	}

	// A failing check leaves dest untouched and no stage file behind.
	changed, err = a.Apply(ctx, r, []byte("bad\n"))
	if !errors.Is(err, confd.ErrCheckFailed) || changed {
		t.Fatalf("failing check: %v %v", changed, err)
	}
	if !strings.Contains(err.Error(), "h.toml: config check failed: check_cmd") {
		t.Errorf("err %v", err)
	}
	if got := readFile(t, dest); got != "good 1\n" {
		t.Errorf("dest changed by a failed check: %q", got)
	}
	if s := stageFiles(t, dir); len(s) != 0 {
		t.Errorf("stage files left: %v", s)
	}

	// An existing dest's mode is kept when mode is not set.
	if err := os.Chmod(dest, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, r, []byte("good 2\n")); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dest); st.Mode() != 0o640 {
		t.Errorf("mode %v, want the existing 0640", st.Mode())
	}

	// A mode change alone is a change.
	r.Mode = "0600"
	changed, err = a.Apply(ctx, r, []byte("good 2\n"))
	if err != nil || !changed {
		t.Fatalf("mode change: %v %v", changed, err)
	}
	if st, _ := os.Stat(dest); st.Mode() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode())
	}
	if s := stageFiles(t, dir); len(s) != 0 {
		t.Errorf("stage files left: %v", s)
	}
}

func TestApplyModes(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		g         confd.Global
		content   string
		wantDest  string
		wantCmds  string
		wantStage int
		wantErr   error
	}{
		{"noop writes nothing but checks", confd.Global{Noop: true}, "good new\n", "old\n", "check", 0, nil},
		{"noop with a failing check", confd.Global{Noop: true}, "bad\n", "old\n", "", 0, confd.ErrCheckFailed},
		{"sync-only skips check and reload", confd.Global{SyncOnly: true}, "bad\n", "bad\n", "", 0, nil},
		{"keep-stage-file keeps a failed stage", confd.Global{KeepStageFile: true}, "bad\n", "old\n", "", 1, confd.ErrCheckFailed},
		{"keep-stage-file after success", confd.Global{KeepStageFile: true}, "good\n", "good\n", "check reload", 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			log := filepath.Join(dir, "log")
			dest := filepath.Join(dir, "out.cfg")
			writeFile(t, dest, "old\n")
			r := confd.Resource{Name: "r.toml", Dest: dest, UID: -1, GID: -1,
				CheckCmd: "grep -q good {{.src}} && echo check >> " + log, ReloadCmd: "echo reload >> " + log}
			changed, err := confd.NewApplier(nil, tc.g).Apply(ctx, r, []byte(tc.content))
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && !changed {
				t.Errorf("changed = false")
			}
			if got := readFile(t, dest); got != tc.wantDest {
				t.Errorf("dest %q, want %q", got, tc.wantDest)
			}
			if got := strings.Join(lines(t, log), " "); got != tc.wantCmds {
				t.Errorf("commands %q, want %q", got, tc.wantCmds)
			}
			if s := stageFiles(t, dir); len(s) != tc.wantStage {
				t.Errorf("stage files %v, want %d", s, tc.wantStage)
			}
		})
	}
}

func TestApplyOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	ctx := context.Background()
	dir := t.TempDir()
	tests := []struct {
		name     string
		r        confd.Resource
		uid, gid uint32
	}{
		{"uid gid", confd.Resource{UID: 65534, GID: 65533}, 65534, 65533},
		{"owner numeric with group", confd.Resource{UID: -1, GID: -1, Owner: "65532:65531"}, 65532, 65531},
		{"owner user name", confd.Resource{UID: -1, GID: -1, Owner: "root"}, 0, 0},
		{"uid wins over owner", confd.Resource{UID: 65530, GID: -1, Owner: "65532:65531"}, 65530, 65531},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.r.Name, tc.r.Dest = "o.toml", filepath.Join(dir, "f"+string(rune('a'+i)))
			tc.r.Mode = "0640"
			if _, err := confd.NewApplier(nil, confd.Global{}).Apply(ctx, tc.r, []byte("x")); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(tc.r.Dest)
			if err != nil {
				t.Fatal(err)
			}
			sys := st.Sys().(*syscall.Stat_t)
			if sys.Uid != tc.uid || sys.Gid != tc.gid || st.Mode() != 0o640 {
				t.Errorf("uid %d gid %d mode %v, want %d %d 0640", sys.Uid, sys.Gid, st.Mode(), tc.uid, tc.gid)
			}
			// An owner change alone is a change; the same owner is not.
			changed, err := confd.NewApplier(nil, confd.Global{}).Apply(ctx, tc.r, []byte("x"))
			if err != nil || changed {
				t.Errorf("second apply: %v %v", changed, err)
			}
		})
	}
}

func TestApplyBatchCoalescesReloads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	shared := "echo shared >> " + log
	mk := func(name, reload string) confd.Resource {
		return confd.Resource{Name: name, Dest: filepath.Join(dir, name+".cfg"), UID: -1, GID: -1, ReloadCmd: reload}
	}
	a := confd.NewApplier(nil, confd.Global{})
	jobs := []confd.Job{
		{Resource: mk("a", shared), Rendered: []byte("a")},
		{Resource: mk("b", shared), Rendered: []byte("b")},
		{Resource: mk("c", "echo own:{{.dest}} >> "+log), Rendered: []byte("c")},
		{Resource: mk("d", "exit 3"), Rendered: []byte("d")},
	}
	res, err := a.ApplyBatch(ctx, jobs)
	if len(res) != 4 {
		t.Fatalf("results %v", res)
	}
	if got := strings.Join(lines(t, log), " "); got != "shared own:"+filepath.Join(dir, "c.cfg") {
		t.Errorf("reloads %q, want the shared one once", got)
	}
	if !errors.Is(err, confd.ErrReloadFailed) || res[3].Err == nil || res[0].Err != nil || !strings.Contains(err.Error(), `d: reload failed: reload_cmd "exit 3": exit status 3`) {
		t.Errorf("err = %v; results %+v", err, res)
	}
	if _, err := os.Stat(filepath.Join(dir, "d.cfg")); !os.IsNotExist(err) {
		t.Errorf("a failed reload of a new file must remove it again: %v", err)
	}
	if !strings.Contains(res[3].Err.Error(), "previous file restored") {
		t.Errorf("the error does not say the file was restored: %v", res[3].Err)
	}
	// Only b changes now: the shared reload runs once for it alone.
	jobs[1].Rendered = []byte("b2")
	if _, err := a.ApplyBatch(ctx, jobs[:3]); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(lines(t, log), " "); !strings.HasSuffix(got, "shared") || strings.Count(got, "shared") != 2 {
		t.Errorf("reloads %q", got)
	}
}

// A reload_cmd that fails puts the destination back as it was before
// (content and mode), and says so; confd left the new file in place.
func TestFailedReloadRestoresDest(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(dest, []byte("good\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	r := confd.Resource{Name: "haproxy", Dest: dest, UID: -1, GID: -1, Mode: "0644", ReloadCmd: "echo nope >&2; exit 1"}
	changed, err := confd.NewApplier(nil, confd.Global{}).Apply(context.Background(), r, []byte("new\n"))
	if !errors.Is(err, confd.ErrReloadFailed) || !changed {
		t.Fatalf("Apply = %v, %v; want ErrReloadFailed", changed, err)
	}
	if got := readFile(t, dest); got != "good\n" {
		t.Fatalf("dest after a failed reload = %q, want the previous content", got)
	}
	if st, err := os.Stat(dest); err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("dest mode after restore = %v, %v; want 0640", st.Mode().Perm(), err)
	}
	if !strings.Contains(err.Error(), "previous file restored") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %q should say, on one line, that the previous file is back", err)
	}
}

// A run superseded (its context canceled) while reload_cmd runs lets the
// reload finish: the destination was already replaced, and a reload cut
// short would leave a file the service never loaded. A run canceled
// before the destination is replaced leaves it alone.
func TestCanceledRunFinishesItsReload(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "haproxy.cfg")
	marker := filepath.Join(dir, "reloaded")
	r := confd.Resource{Name: "haproxy", Dest: dest, UID: -1, GID: -1, Mode: "0644",
		ReloadCmd: "sleep 0.3; echo reload >> " + marker}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	changed, err := confd.NewApplier(nil, confd.Global{}).Apply(ctx, r, []byte("new\n"))
	if err != nil || !changed {
		t.Fatalf("Apply canceled during reload_cmd = %v, %v; want the reload to finish", changed, err)
	}
	if got := readFile(t, marker); got != "reload\n" {
		t.Fatalf("reload_cmd ran %q, want once, to its end", got)
	}
	if got := readFile(t, dest); got != "new\n" {
		t.Fatalf("dest = %q, want the new content", got)
	}

	r.ReloadCmd = "echo reload >> " + marker
	done, stop := context.WithCancel(context.Background())
	stop()
	if changed, err := confd.NewApplier(nil, confd.Global{}).Apply(done, r, []byte("newer\n")); !errors.Is(err, context.Canceled) || changed {
		t.Fatalf("Apply with a canceled context = %v, %v; want context.Canceled and nothing changed", changed, err)
	}
	if got := readFile(t, dest); got != "new\n" {
		t.Fatalf("dest after a canceled run = %q, want it left alone", got)
	}
}

func TestApplyErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := confd.NewApplier(nil, confd.Global{})
	if _, err := a.Apply(ctx, confd.Resource{Name: "x", Dest: filepath.Join(dir, "no/such/dir/f"), UID: -1, GID: -1}, []byte("x")); err == nil ||
		!strings.Contains(err.Error(), "x: create staged file") {
		t.Errorf("missing dir: %v", err)
	}
	if _, err := a.Apply(ctx, confd.Resource{Name: "x", Dest: filepath.Join(dir, "f"), Mode: "zz", UID: -1, GID: -1}, []byte("x")); err == nil ||
		!strings.Contains(err.Error(), `mode "zz": not a number`) {
		t.Errorf("bad mode: %v", err)
	}
	// A reload that leaves a background process holding its output does
	// not hang the run.
	pidFile := filepath.Join(dir, "bg.pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	r := confd.Resource{Name: "bg", Dest: filepath.Join(dir, "bg"), UID: -1, GID: -1, ReloadCmd: "sleep 30 & echo $! > " + pidFile + "; echo started"}
	if _, err := a.Apply(ctx, r, []byte("x")); err != nil {
		t.Errorf("background reload: %v", err)
	}
}
