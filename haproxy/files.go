package haproxy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

const stagePattern = ".haconfd-stage-*"

// stageFile writes data to a new temp file next to dst (same directory, so
// a rename is atomic), with dst's mode (0644 when dst does not exist), and
// fsyncs it. The caller removes or renames it.
func stageFile(dst string, data []byte) (string, error) {
	mode := fs.FileMode(0o644)
	if st, err := os.Stat(dst); err == nil {
		mode = st.Mode().Perm()
	}
	f, err := os.CreateTemp(filepath.Dir(dst), stagePattern)
	if err != nil {
		return "", fmt.Errorf("stage %s: %w", dst, err)
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		_ = f.Close()
		_ = os.Remove(name)
		return "", fmt.Errorf("stage %s: %w", dst, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(name)
		return "", fmt.Errorf("stage %s: %w", dst, err)
	}
	return name, nil
}

// commitStage renames a staged file onto dst and fsyncs the directory.
func commitStage(stage, dst string) error {
	if err := os.Rename(stage, dst); err != nil {
		_ = os.Remove(stage)
		return fmt.Errorf("rename %s onto %s: %w", filepath.Base(stage), dst, err)
	}
	return syncDir(filepath.Dir(dst))
}

// writeAtomic replaces dst with data: temp file, fsync, rename, fsync dir.
func writeAtomic(dst string, data []byte) error {
	stage, err := stageFile(dst, data)
	if err != nil {
		return err
	}
	return commitStage(stage, dst)
}

// removeDurable removes path (absent is fine) and fsyncs its directory.
func removeDurable(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, serr)
	}
	if cerr != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, cerr)
	}
	return nil
}

// readLive returns the live file's bytes; exists is false when there is none.
func readLive(path string) (data []byte, exists bool, err error) {
	data, err = os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read live config: %w", err)
	}
	return data, true, nil
}

// sweepStages removes the stage files next to dst that are older than
// age: left behind when haconfd was killed mid-apply (never the live
// file, which only changes by rename). Younger ones may belong to another
// haconfd writing next to this one and are left alone.
func sweepStages(dst string, age time.Duration) int {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), stagePattern))
	n := 0
	for _, p := range matches {
		if st, err := os.Stat(p); err == nil && time.Since(st.ModTime()) > age && os.Remove(p) == nil {
			n++
		}
	}
	return n
}
