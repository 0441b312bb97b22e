// Package etcdtest has the test fixtures around etcd: a single in-process
// member closed when the test ends, a multi-member cluster whose members
// can be stopped and restarted, and throwaway certificates. Only tests,
// benchmarks and test programs import it; the daemon never does.
package etcdtest

import (
	"context"
	"github.com/haconfd/haconfd/internal/etcdserver"
	"testing"
	"time"
)

// testStartTimeout bounds a test server's start on a slow, shared machine.
const testStartTimeout = 60 * time.Second

// Start starts a single-member etcd in t.TempDir() with fsync off and
// etcd's logging silenced. It is closed when the test ends; a start failure
// fails the test.
func Start(t testing.TB) *etcdserver.Server {
	t.Helper()
	return StartWith(t, etcdserver.Options{})
}

// StartWith is Start with options. An empty Dir is replaced
// by t.TempDir(). The server is closed when the test ends.
func StartWith(t testing.TB, opts etcdserver.Options) *etcdserver.Server {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), testStartTimeout)
	defer cancel()
	s, err := etcdserver.StartMember(ctx, opts, etcdserver.Member{NoFsync: true})
	if err != nil {
		t.Fatalf("start test etcd: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}
