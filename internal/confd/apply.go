package confd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrCheckFailed is wrapped by Apply when check_cmd rejects the new file;
// the destination is then untouched.
var ErrCheckFailed = errors.New("config check failed")

// ErrReloadFailed is wrapped by Apply when reload_cmd fails; the
// destination is then put back as it was before (confd left the new file
// in place, so that a later reload picked up a file that had failed).
var ErrReloadFailed = errors.New("reload failed")

// cmdWaitDelay bounds how long a finished command's output pipes are
// waited for: a reload_cmd that starts a daemon in the background must not
// hang the run (confd would hang).
const cmdWaitDelay = 2 * time.Second

// reloadTimeout bounds a reload_cmd, which a newer run or a shutdown does
// not interrupt (confd itself never times one out).
const reloadTimeout = 2 * time.Minute

// Job is one resource with its rendered content.
type Job struct {
	Resource Resource
	Rendered []byte
}

// Result is what happened to one Job.
type Result struct {
	Name    string // Resource.Name
	Dest    string
	Changed bool  // Dest was (or, with noop, would be) replaced
	Err     error // nil, or what went wrong for this resource
}

// Applier installs rendered files the way confd does: stage file in the
// destination's directory (".<base><random>"), mode and owner set on it,
// compared with the destination (content, mode, uid, gid), check_cmd on the
// staged file, rename over the destination, reload_cmd.
//
// Differences from confd 0.16, deliberate:
//   - With noop, check_cmd still runs on the staged file (unless
//     sync-only), so that a dry run also says whether the new file would
//     pass; confd skips it. Nothing is written either way.
//   - Reloads are coalesced per batch (ApplyBatch): every file of the batch
//     is installed first, then each distinct reload command (after
//     {{.src}}/{{.dest}} expansion) runs once, in the order of first use.
//     Two resources that share "service haproxy reload" cause one reload.
//     confd runs each resource's reload_cmd right after its own file.
//   - The staged file is fsynced before the rename and the directory after,
//     so a crash never leaves a half-written destination.
//   - A command that exits but leaves its output pipe open (a daemon started
//     in the background) is not waited for beyond a short delay.
type Applier struct {
	logger *slog.Logger
	g      Global
}

// NewApplier returns an Applier with confd's global settings (Noop,
// SyncOnly, KeepStageFile are used).
func NewApplier(logger *slog.Logger, g Global) *Applier {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Applier{logger: logger, g: g}
}

// Apply installs one resource's rendered content and runs its reload_cmd
// when the destination changed. changed reports whether the destination
// was (or, with noop, would be) replaced. A failing check_cmd leaves the
// destination untouched and returns an error wrapping ErrCheckFailed.
func (a *Applier) Apply(ctx context.Context, r Resource, rendered []byte) (changed bool, err error) {
	res, err := a.ApplyBatch(ctx, []Job{{Resource: r, Rendered: rendered}})
	if len(res) == 1 {
		return res[0].Changed, err
	}
	return false, err
}

// ApplyBatch applies every job independently (one failing does not stop
// the others), then runs the distinct reload commands of the changed ones
// once each. It returns one Result per job, in order, and the errors of
// all of them joined.
func (a *Applier) ApplyBatch(ctx context.Context, jobs []Job) ([]Result, error) {
	results := make([]Result, len(jobs))
	type reload struct {
		cmd  string
		jobs []int
	}
	var reloads []*reload
	byCmd := make(map[string]*reload)
	prevs := make([]*previous, len(jobs))
	for i, j := range jobs {
		results[i] = Result{Name: j.Resource.Name, Dest: j.Resource.Dest}
		changed, prev, err := a.install(ctx, j.Resource, j.Rendered)
		prevs[i] = prev
		results[i].Changed = changed
		if err != nil {
			results[i].Err = fmt.Errorf("%s: %w", j.Resource.Name, err)
			continue
		}
		if !changed || a.g.Noop || a.g.SyncOnly || j.Resource.ReloadCmd == "" {
			continue
		}
		cmd, err := expandCmd(j.Resource.ReloadCmd, j.Resource.Dest, j.Resource.Dest)
		if err != nil {
			results[i].Err = fmt.Errorf("%s: reload_cmd: %w", j.Resource.Name, err)
			continue
		}
		rl := byCmd[cmd]
		if rl == nil {
			rl = &reload{cmd: cmd}
			byCmd[cmd] = rl
			reloads = append(reloads, rl)
		}
		rl.jobs = append(rl.jobs, i)
	}
	for _, rl := range reloads {
		var names []string
		for _, i := range rl.jobs {
			names = append(names, jobs[i].Resource.Name)
		}
		a.logger.Info("running reload_cmd", "resources", names, "cmd", rl.cmd)
		// The destination is already replaced: a reload cut short by a
		// newer run or by shutdown would leave a new file that the
		// service never loaded (and the next run would find in sync). It
		// runs to its end, bounded by reloadTimeout only.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reloadTimeout)
		err := a.run(rctx, "reload_cmd", rl.cmd)
		cancel()
		if err != nil {
			for _, i := range rl.jobs {
				what := "the previous file restored"
				if rerr := prevs[i].restore(jobs[i].Resource.Dest); rerr != nil {
					what = "restoring the previous file failed: " + rerr.Error()
				}
				results[i].Err = fmt.Errorf("%s: %w: %w (%s)", jobs[i].Resource.Name, ErrReloadFailed, err, what)
			}
		}
	}
	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	return results, errors.Join(errs...)
}

// previous is a destination as it was before install replaced it.
type previous struct {
	existed  bool
	content  []byte
	mode     os.FileMode
	uid, gid int
}

// restore puts the destination back as it was (nil: nothing to do).
func (p *previous) restore(dest string) error {
	if p == nil {
		return nil
	}
	if !p.existed {
		if err := os.Remove(dest); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		syncDir(filepath.Dir(dest))
		return nil
	}
	stage, err := writeStage(dest, p.content)
	if err != nil {
		return err
	}
	if err := os.Chmod(stage, p.mode); err != nil {
		_ = os.Remove(stage)
		return err
	}
	_ = os.Chown(stage, p.uid, p.gid) // as install: the owner is best effort
	if err := os.Rename(stage, dest); err != nil {
		_ = os.Remove(stage)
		if errors.Is(err, syscall.EBUSY) { // a mount point: in place, as install
			return writeInPlace(dest, p.content, p.mode, p.uid, p.gid)
		}
		return err
	}
	syncDir(filepath.Dir(dest))
	return nil
}

// readPrevious reads dest before it is replaced.
func readPrevious(dest string) (*previous, error) {
	st, err := os.Stat(dest)
	if errors.Is(err, fs.ErrNotExist) {
		return &previous{}, nil
	}
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(dest)
	if err != nil {
		return nil, err
	}
	p := &previous{existed: true, content: b, mode: st.Mode().Perm(), uid: -1, gid: -1}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		p.uid, p.gid = int(sys.Uid), int(sys.Gid)
	}
	return p, nil
}

// install stages, compares, checks and renames one file; no reload. prev
// is the destination as it was, when it was replaced.
func (a *Applier) install(ctx context.Context, r Resource, rendered []byte) (changed bool, prev *previous, err error) {
	log := a.logger.With("resource", r.Name, "dest", r.Dest)
	mode, err := fileMode(r)
	if err != nil {
		return false, nil, err
	}
	uid, gid, err := owner(r)
	if err != nil {
		return false, nil, err
	}
	stage, err := writeStage(r.Dest, rendered)
	if err != nil {
		return false, nil, err
	}
	keep := a.g.KeepStageFile
	defer func() {
		if stage == "" {
			return // renamed into place
		}
		if keep {
			log.Info("keeping staged file", "stage", stage)
			return
		}
		if rmErr := os.Remove(stage); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
			log.Warn("cannot remove staged file", "stage", stage, "err", rmErr)
		}
	}()
	if err := os.Chmod(stage, mode); err != nil {
		return false, nil, fmt.Errorf("set mode of staged file: %w", err)
	}
	if err := os.Chown(stage, uid, gid); err != nil {
		// confd ignores this; the comparison below then sees the real owner.
		log.Warn("cannot set owner of staged file", "uid", uid, "gid", gid, "err", err)
	}

	same, why, err := sameFile(stage, r.Dest)
	if err != nil {
		return false, nil, err
	}
	if same {
		log.Debug("target config in sync")
		return false, nil, nil
	}
	log.Info("target config out of sync", "why", why)

	if r.CheckCmd != "" && !a.g.SyncOnly {
		cmd, err := expandCmd(r.CheckCmd, stage, r.Dest)
		if err != nil {
			return false, nil, fmt.Errorf("check_cmd: %w", err)
		}
		if err := a.run(ctx, "check_cmd", cmd); err != nil {
			return false, nil, fmt.Errorf("%w: %w", ErrCheckFailed, err)
		}
	}
	if a.g.Noop {
		log.Warn("noop mode: target config will not be modified")
		return true, nil, nil
	}
	if err := ctx.Err(); err != nil {
		return false, nil, err // superseded or stopping: leave the destination alone
	}
	prev, err = readPrevious(r.Dest)
	if err != nil {
		return false, nil, fmt.Errorf("read %s before replacing it: %w", r.Dest, err)
	}
	if err := os.Rename(stage, r.Dest); err != nil {
		if !errors.Is(err, syscall.EBUSY) {
			return false, nil, fmt.Errorf("install %s: %w", r.Dest, err)
		}
		// The destination is a mount point (a bind-mounted file in a
		// container): write it in place, as confd does.
		log.Debug("rename failed, target is likely a mount; writing in place")
		if err := writeInPlace(r.Dest, rendered, mode, uid, gid); err != nil {
			return false, nil, fmt.Errorf("install %s: %w", r.Dest, err)
		}
		return true, prev, nil
	}
	stage = ""
	syncDir(filepath.Dir(r.Dest))
	log.Info("target config has been updated")
	return true, prev, nil
}

// fileMode is confd's: mode parsed with base prefix, else the existing
// destination's mode, else 0644.
func fileMode(r Resource) (os.FileMode, error) {
	if r.Mode != "" {
		m, err := strconv.ParseUint(r.Mode, 0, 32)
		if err != nil {
			return 0, fmt.Errorf("mode %q: not a number", r.Mode)
		}
		return os.FileMode(m), nil
	}
	st, err := os.Stat(r.Dest)
	if errors.Is(err, fs.ErrNotExist) {
		return 0o644, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stat destination: %w", err)
	}
	return st.Mode(), nil
}

// owner is uid/gid when set, else from Owner, else the effective ids.
func owner(r Resource) (uid, gid int, err error) {
	uid, gid = r.UID, r.GID
	if r.Owner != "" && (uid == -1 || gid == -1) {
		ou, og, err := lookupOwner(r.Owner)
		if err != nil {
			return 0, 0, fmt.Errorf("owner %q: %w", r.Owner, err)
		}
		if uid == -1 {
			uid = ou
		}
		if gid == -1 {
			gid = og
		}
	}
	if uid == -1 {
		uid = os.Geteuid()
	}
	if gid == -1 {
		gid = os.Getegid()
	}
	return uid, gid, nil
}

// writeStage writes content to a new ".<base><random>" file next to dest.
func writeStage(dest string, content []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest))
	if err != nil {
		return "", fmt.Errorf("create staged file: %w", err)
	}
	_, err = f.Write(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", fmt.Errorf("write staged file: %w", err)
	}
	return f.Name(), nil
}

// sameFile compares like confd: content, mode, uid and gid. A missing
// destination differs.
func sameFile(stage, dest string) (bool, string, error) {
	ds, err := os.Stat(dest)
	if errors.Is(err, fs.ErrNotExist) {
		return false, "destination does not exist", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("stat destination: %w", err)
	}
	ss, err := os.Stat(stage)
	if err != nil {
		return false, "", fmt.Errorf("stat staged file: %w", err)
	}
	var why []string
	if ds.Mode() != ss.Mode() {
		why = append(why, fmt.Sprintf("mode %s should be %s", ds.Mode(), ss.Mode()))
	}
	if dsys, ok := ds.Sys().(*syscall.Stat_t); ok {
		if ssys, ok := ss.Sys().(*syscall.Stat_t); ok {
			if dsys.Uid != ssys.Uid {
				why = append(why, fmt.Sprintf("uid %d should be %d", dsys.Uid, ssys.Uid))
			}
			if dsys.Gid != ssys.Gid {
				why = append(why, fmt.Sprintf("gid %d should be %d", dsys.Gid, ssys.Gid))
			}
		}
	}
	if ds.Size() != ss.Size() {
		why = append(why, "content differs")
	} else {
		a, err := os.ReadFile(dest)
		if err != nil {
			return false, "", fmt.Errorf("read destination: %w", err)
		}
		b, err := os.ReadFile(stage)
		if err != nil {
			return false, "", fmt.Errorf("read staged file: %w", err)
		}
		if !bytes.Equal(a, b) {
			why = append(why, "content differs")
		}
	}
	return len(why) == 0, strings.Join(why, ", "), nil
}

func writeInPlace(dest string, content []byte, mode os.FileMode, uid, gid int) error {
	if err := os.WriteFile(dest, content, mode); err != nil {
		return err
	}
	_ = os.Chmod(dest, mode)
	_ = os.Chown(dest, uid, gid)
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// run runs cmd with /bin/sh -c, as confd does, logging its output.
func (a *Applier) run(ctx context.Context, what, cmd string) error {
	c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	var out bytes.Buffer
	c.Stdout = &out
	c.Stderr = &out
	c.WaitDelay = cmdWaitDelay
	err := c.Run()
	if errors.Is(err, exec.ErrWaitDelay) && c.ProcessState != nil && c.ProcessState.Success() {
		err = nil // exited 0; something it started still holds the output
	}
	output := strings.TrimSpace(out.String())
	if err != nil && ctx.Err() != nil {
		a.logger.Debug(what+" stopped: the run was superseded or haconfd is stopping", "cmd", cmd)
		return fmt.Errorf("%s %q: %w", what, cmd, ctx.Err())
	}
	if err != nil {
		// The caller reports the failure once; its whole output is here.
		a.logger.Debug(what+" failed", "cmd", cmd, "err", err, "output", output)
		if output != "" {
			return fmt.Errorf("%s %q: %w: %s", what, cmd, err, oneLine(lastLine(output)))
		}
		return fmt.Errorf("%s %q: %w", what, cmd, err)
	}
	a.logger.Debug(what+" ok", "cmd", cmd, "output", output)
	return nil
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
