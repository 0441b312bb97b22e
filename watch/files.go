package watch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Files watches a set of files (templates, the config file) and reports
// when the content of any of them changed. It watches their directories,
// not the files, so that an editor's rename-over and a Kubernetes
// ConfigMap's symlink swap are seen too; a change is reported only when
// a file's bytes differ from what was last seen.
type Files struct {
	paths    []string
	debounce time.Duration
	log      *slog.Logger
	seen     map[string][sha256.Size]byte
}

// NewFiles watches paths (empty ones are ignored); debounce is how long
// to wait after the last event before comparing (default 100ms).
func NewFiles(paths []string, debounce time.Duration, logger *slog.Logger) *Files {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if debounce <= 0 {
		debounce = 100 * time.Millisecond
	}
	f := &Files{debounce: debounce, log: logger, seen: map[string][sha256.Size]byte{}}
	for _, p := range paths {
		if p != "" {
			f.paths = append(f.paths, filepath.Clean(p))
		}
	}
	for _, p := range f.paths {
		f.seen[p] = digest(p)
	}
	return f
}

func digest(path string) [sha256.Size]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return [sha256.Size]byte{}
	}
	return sha256.Sum256(b)
}

// Run sends on changed after each change, until ctx ends.
func (f *Files) Run(ctx context.Context, changed chan<- []string) error {
	if len(f.paths) == 0 {
		<-ctx.Done()
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch files: %w", err)
	}
	defer w.Close()
	dirs := map[string]bool{}
	for _, p := range f.paths {
		d := filepath.Dir(p)
		if dirs[d] {
			continue
		}
		if err := w.Add(d); err != nil {
			return fmt.Errorf("watch %s: %w", d, err)
		}
		dirs[d] = true
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watch files: event channel closed")
			}
			_ = ev
			timer.Reset(f.debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watch files: error channel closed")
			}
			f.log.Warn("file watch", "err", err)
		case <-timer.C:
			var diff []string
			for _, p := range f.paths {
				if d := digest(p); !bytes.Equal(d[:], f.seenOf(p)) {
					f.seen[p] = d
					diff = append(diff, p)
				}
			}
			if len(diff) == 0 {
				continue
			}
			select {
			case changed <- diff:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

func (f *Files) seenOf(p string) []byte {
	d := f.seen[p]
	return d[:]
}
