package etcdserver

import (
	"context"
	"testing"
	"time"
)

// testStartTimeout bounds a test server's start on a slow, shared machine.
const testStartTimeout = 60 * time.Second

// StartForTest starts a single-member etcd in t.TempDir() with fsync off and
// etcd's logging silenced. It is closed when the test ends; a start failure
// fails the test.
func StartForTest(t testing.TB) *Server {
	t.Helper()
	return StartForTestWith(t, Options{})
}

// StartForTestWith is StartForTest with options. An empty Dir is replaced
// by t.TempDir(). The server is closed when the test ends.
func StartForTestWith(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), testStartTimeout)
	defer cancel()
	s, err := start(ctx, opts, memberConfig{noFsync: true})
	if err != nil {
		t.Fatalf("start test etcd: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}
