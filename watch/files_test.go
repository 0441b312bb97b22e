package watch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFilesReportsContentChanges(t *testing.T) {
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "t.tmpl")
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(tmpl, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := NewFiles([]string{tmpl, ""}, 20*time.Millisecond, nil)
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan []string, 1)
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, changed) }()
	defer func() { cancel(); <-done }()

	expect := func(what string) {
		t.Helper()
		select {
		case got := <-changed:
			if len(got) != 1 || got[0] != tmpl {
				t.Fatalf("%s: changed %v", what, got)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no change reported", what)
		}
	}
	// The watcher may start after the first write below; retry until seen.
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		if err := os.WriteFile(tmpl, []byte{'b', byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		select {
		case <-changed:
		case <-time.After(200 * time.Millisecond):
			if time.Now().Before(deadline) {
				continue
			}
			t.Fatal("in-place write never reported")
		}
		break
	}
	// Rename over (editors, ConfigMaps).
	if err := os.WriteFile(tmpl+".new", []byte("c"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmpl+".new", tmpl); err != nil {
		t.Fatal(err)
	}
	expect("rename over")
	// Same bytes again, and another file in the directory: nothing.
	if err := os.WriteFile(tmpl, []byte("c"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-changed:
		t.Fatalf("reported %v for unchanged content", got)
	case <-time.After(300 * time.Millisecond):
	}
}
