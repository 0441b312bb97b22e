package watch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/internal/etcdclient"
	"github.com/haconfd/haconfd/internal/testbed"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait for an effect on this slow, shared machine.
const waitTimeout = 30 * time.Second

func newClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// syncBuffer is a log sink the Run goroutine writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// run starts e.Run and stops it when the test ends, checking it returns nil.
func run(t *testing.T, e *EtcdSource) <-chan Snapshot {
	t.Helper()
	out := make(chan Snapshot)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return after cancel")
		}
	})
	return out
}

// waitSnapshot reads snapshots until ok accepts one.
func waitSnapshot(t *testing.T, out <-chan Snapshot, what string, ok func(Snapshot) bool) Snapshot {
	t.Helper()
	deadline := time.After(waitTimeout)
	var last Snapshot
	for {
		select {
		case s := <-out:
			if ok(s) {
				return s
			}
			last = s
		case <-deadline:
			t.Fatalf("no snapshot with %s; last: %+v", what, last)
		}
	}
}

func hasKV(key, value string) func(Snapshot) bool {
	return func(s Snapshot) bool {
		v, ok := s.Get(key)
		return ok && v == value
	}
}

func put(t *testing.T, cli *clientv3.Client, kvs ...string) int64 {
	t.Helper()
	var rev int64
	for i := 0; i+1 < len(kvs); i += 2 {
		resp, err := cli.Put(ctxT(t), kvs[i], kvs[i+1])
		if err != nil {
			t.Fatalf("put %s: %v", kvs[i], err)
		}
		rev = resp.Header.Revision
	}
	return rev
}

func newEtcd(t *testing.T, cli *clientv3.Client, opts Options) *EtcdSource {
	t.Helper()
	e, err := NewEtcdSource(cli, opts)
	if err != nil {
		t.Fatalf("NewEtcd: %v", err)
	}
	return e
}

func TestInitialSnapshotAndChanges(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	rev := put(t, cli,
		"/components/galera/n1/ip", "10.0.0.1",
		"/components/galera/n2/ip", "10.0.0.2",
		"/other/x", "y")

	e := newEtcd(t, cli, Options{Prefixes: []string{"/components/galera"}})
	out := run(t, e)

	first := <-out
	want := Snapshot{Revision: rev, KVs: []KV{
		{Key: "/components/galera/n1/ip", Value: "10.0.0.1"},
		{Key: "/components/galera/n2/ip", Value: "10.0.0.2"},
	}}
	if got := stripMeta(first); !reflect.DeepEqual(got, want) {
		t.Fatalf("first snapshot = %+v, want %+v", got, want)
	}
	for _, kv := range first.KVs {
		if kv.ModRevision == 0 {
			t.Errorf("key %s has no mod revision", kv.Key)
		}
	}

	prev := first.Revision
	rev = put(t, cli, "/components/galera/n3/ip", "10.0.0.3")
	s := waitSnapshot(t, out, "n3 added", hasKV("/components/galera/n3/ip", "10.0.0.3"))
	if s.Revision != rev || s.Revision <= prev {
		t.Errorf("snapshot after put: revision %d, want %d", s.Revision, rev)
	}
	if len(s.KVs) != 3 {
		t.Errorf("snapshot after put has %d keys, want 3: %+v", len(s.KVs), s.KVs)
	}

	resp, err := cli.Delete(ctxT(t), "/components/galera/n1/ip")
	if err != nil {
		t.Fatal(err)
	}
	s = waitSnapshot(t, out, "n1 deleted", func(s Snapshot) bool {
		_, ok := s.Get("/components/galera/n1/ip")
		return !ok
	})
	if s.Revision != resp.Header.Revision {
		t.Errorf("snapshot after delete: revision %d, want %d", s.Revision, resp.Header.Revision)
	}
	if got := s.Map(); !reflect.DeepEqual(got, map[string]string{
		"/components/galera/n2/ip": "10.0.0.2",
		"/components/galera/n3/ip": "10.0.0.3",
	}) {
		t.Errorf("snapshot after delete = %v", got)
	}
}

func stripMeta(s Snapshot) Snapshot {
	out := Snapshot{Revision: s.Revision, KVs: make([]KV, len(s.KVs))}
	for i, kv := range s.KVs {
		out.KVs[i] = KV{Key: kv.Key, Value: kv.Value}
	}
	return out
}

func TestPrefixIsolation(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	keys := []string{
		"/components/galera",
		"/components/galera/n1",
		"/components/galera/n1/ip",
		"/components/galera2/n1",
		"/components/galera-old/n1",
		"/components/galera.bak",
		"/components/galer",
		"/components/mysql/n1",
		"/components/mysql",
		"/components/mysqlx",
		"/zzz",
	}
	tests := []struct {
		name     string
		prefixes []string
		want     []string
	}{
		{"plain prefix", []string{"/components/galera"},
			[]string{"/components/galera", "/components/galera/n1", "/components/galera/n1/ip"}},
		{"trailing slash", []string{"/components/galera/"},
			[]string{"/components/galera/n1", "/components/galera/n1/ip"}},
		{"two prefixes", []string{"/components/mysql", "/components/galera"},
			[]string{"/components/galera", "/components/galera/n1", "/components/galera/n1/ip",
				"/components/mysql", "/components/mysql/n1"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each case gets its own namespace: half the keys written
			// before Run (read path), half after (watch path).
			ns := fmt.Sprintf("/case%d", i)
			var prefixes []string
			for _, p := range tt.prefixes {
				prefixes = append(prefixes, ns+p)
			}
			// Even keys before Run, odd ones after.
			for i := 0; i < len(keys); i += 2 {
				put(t, cli, ns+keys[i], "v")
			}
			inWant := func(s Snapshot) {
				for _, kv := range s.KVs {
					if !slicesContains(tt.want, strings.TrimPrefix(kv.Key, ns)) {
						t.Fatalf("snapshot at revision %d has key %q outside %q", s.Revision, kv.Key, prefixes)
					}
				}
			}
			e := newEtcd(t, cli, Options{Prefixes: prefixes})
			out := run(t, e)
			inWant(<-out)
			for i := 1; i < len(keys); i += 2 {
				put(t, cli, ns+keys[i], "v")
			}
			// Watch path: snapshots never leave the prefixes and end
			// with exactly the wanted keys.
			waitSnapshot(t, out, fmt.Sprintf("keys %q", tt.want), func(s Snapshot) bool {
				inWant(s)
				return len(s.KVs) == len(tt.want)
			})
			// Read path: a fresh read finds the same.
			s := readOnce(t, cli, prefixes)
			var got []string
			for _, kv := range s.KVs {
				got = append(got, strings.TrimPrefix(kv.Key, ns))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("keys = %q, want %q", got, tt.want)
			}
		})
	}
}

// readOnce returns the first snapshot of a fresh Run over prefixes.
func readOnce(t *testing.T, cli *clientv3.Client, prefixes []string) Snapshot {
	t.Helper()
	e := newEtcd(t, cli, Options{Prefixes: prefixes})
	out := make(chan Snapshot, 1)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, out) }()
	s := <-out
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	return s
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestTxnAcrossPrefixesIsOneSnapshot(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	e := newEtcd(t, cli, Options{Prefixes: []string{"/a", "/b"}})
	out := run(t, e)
	<-out
	for i := range 5 {
		v := fmt.Sprint(i)
		_, err := cli.Txn(ctxT(t)).Then(
			clientv3.OpPut("/a/x", v), clientv3.OpPut("/b/x", v)).Commit()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Every snapshot must show both keys at the same value.
	waitSnapshot(t, out, "both at 4", func(s Snapshot) bool {
		a, _ := s.Get("/a/x")
		b, _ := s.Get("/b/x")
		if a != b {
			t.Fatalf("snapshot at revision %d has /a/x=%q but /b/x=%q", s.Revision, a, b)
		}
		return a == "4"
	})
}

func TestLeaseExpiryRemovesKey(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	e := newEtcd(t, cli, Options{Prefixes: []string{"/p"}})
	out := run(t, e)
	<-out

	lease, err := cli.Grant(ctxT(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctxT(t), "/p/n1/ip", "10.0.0.1", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	put(t, cli, "/p/n2/ip", "10.0.0.2")
	s := waitSnapshot(t, out, "leased key", hasKV("/p/n1/ip", "10.0.0.1"))
	for _, kv := range s.KVs {
		if kv.Key == "/p/n1/ip" && kv.Lease != int64(lease.ID) {
			t.Errorf("leased key has lease %d, want %d", kv.Lease, lease.ID)
		}
	}
	s = waitSnapshot(t, out, "leased key expired", func(s Snapshot) bool {
		_, ok := s.Get("/p/n1/ip")
		return !ok
	})
	if got := s.Map(); !reflect.DeepEqual(got, map[string]string{"/p/n2/ip": "10.0.0.2"}) {
		t.Errorf("after expiry = %v", got)
	}
}

func TestCompactedWatchResyncs(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	put(t, cli, "/p/old", "1", "/p/keep", "k")

	var logs syncBuffer
	e := newEtcd(t, cli, Options{Prefixes: []string{"/p"}, Logger: testLogger(&logs), MinBackoff: time.Millisecond})
	var watches atomic.Int32
	// Before the first watch starts, change the keys and compact past the
	// revision the watch will ask for, so etcd answers ErrCompacted.
	e.hookBeforeWatch = func(rev int64) {
		if watches.Add(1) != 1 {
			return
		}
		ctx := context.Background()
		if _, err := cli.Delete(ctx, "/p/old"); err != nil {
			t.Errorf("delete: %v", err)
		}
		resp, err := cli.Put(ctx, "/p/new", "2")
		if err != nil {
			t.Errorf("put: %v", err)
			return
		}
		if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Errorf("compact: %v", err)
		}
	}
	var statuses []ConnState
	var mu sync.Mutex
	e.onStatus = func(s ConnState) { mu.Lock(); statuses = append(statuses, s); mu.Unlock() }
	out := run(t, e)

	first := <-out
	if got := first.Map(); !reflect.DeepEqual(got, map[string]string{"/p/old": "1", "/p/keep": "k"}) {
		t.Fatalf("first snapshot = %v", got)
	}
	s := waitSnapshot(t, out, "/p/new", hasKV("/p/new", "2"))
	if got := s.Map(); !reflect.DeepEqual(got, map[string]string{"/p/new": "2", "/p/keep": "k"}) {
		t.Fatalf("snapshot after resync = %v", got)
	}
	if n := watches.Load(); n != 2 {
		t.Errorf("watch started %d times, want 2", n)
	}
	if n := strings.Count(logs.String(), "etcd watch compacted"); n != 1 {
		t.Errorf("compaction logged %d times, want 1; logs:\n%s", n, logs.String())
	}
	// The change must still flow after the resync.
	put(t, cli, "/p/after", "3")
	waitSnapshot(t, out, "/p/after", hasKV("/p/after", "3"))
	mu.Lock()
	defer mu.Unlock()
	if len(statuses) != 1 || !statuses[0].Connected {
		t.Errorf("statuses = %+v, want one Connected (compaction is not a disconnect)", statuses)
	}
}

func TestPagingIsOneRevision(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	want := map[string]string{"/p": "root"}
	for i := range 40 {
		k := fmt.Sprintf("/p/n%02d", i)
		want[k] = fmt.Sprint(i)
	}
	// Write all keys in one transaction to keep the test fast.
	var ops []clientv3.Op
	for k, v := range want {
		ops = append(ops, clientv3.OpPut(k, v))
	}
	if _, err := cli.Txn(ctxT(t)).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}
	put(t, cli, "/p2/n1", "not mine")

	e := newEtcd(t, cli, Options{Prefixes: []string{"/p"}, PageSize: 7})
	var pages atomic.Int32
	// While the pages are read, change keys on later pages: the snapshot
	// must not see that.
	e.hookAfterPage = func(rev int64) {
		if pages.Add(1) != 1 {
			return
		}
		ctx := context.Background()
		if _, err := cli.Put(ctx, "/p/n39", "changed"); err != nil {
			t.Errorf("put: %v", err)
		}
		if _, err := cli.Put(ctx, "/p/zz", "new"); err != nil {
			t.Errorf("put: %v", err)
		}
	}
	out := run(t, e)
	first := <-out
	if got := first.Map(); !reflect.DeepEqual(got, want) {
		t.Fatalf("first snapshot (%d keys) = %v, want %d keys %v", len(got), got, len(want), want)
	}
	if n := pages.Load(); n < 41/7 {
		t.Errorf("read %d pages, want at least %d", n, 41/7)
	}
	// Then the watch delivers the changes made during the read.
	waitSnapshot(t, out, "changes made while paging", func(s Snapshot) bool {
		a, _ := s.Get("/p/n39")
		b, _ := s.Get("/p/zz")
		return a == "changed" && b == "new"
	})
}

// statusRecorder collects OnStatus calls for polling.
type statusRecorder struct {
	mu sync.Mutex
	ss []ConnState
}

func (r *statusRecorder) record(s ConnState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ss = append(r.ss, s)
}

func (r *statusRecorder) waitFor(t *testing.T, connected bool) ConnState {
	t.Helper()
	var last ConnState
	testbed.Eventually(t, waitTimeout, fmt.Sprintf("a status Connected=%v", connected), func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if n := len(r.ss); n > 0 {
			last = r.ss[n-1]
			return last.Connected == connected
		}
		return false
	})
	return last
}

func freeURL(t *testing.T) string {
	t.Helper()
	u, err := testbed.FreeURL()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestEtcdDownAtStart(t *testing.T) {
	url := freeURL(t)
	// haconfd's own client, whose diagnosis names the refused connection.
	ec, err := etcdclient.Connect(t.Context(), config.Etcd{EtcdEndpoints: []string{url}, EtcdDialTimeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ec.Close() })
	cli := ec.Client
	var logs syncBuffer
	var rec statusRecorder
	e := newEtcd(t, cli, Options{
		Prefixes:   []string{"/p"},
		Diagnose:   ec.Diagnose,
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
		Logger:     testLogger(&logs),
		OnStatus:   rec.record,
	})
	e.requestTimeout = 200 * time.Millisecond
	out := run(t, e)

	st := rec.waitFor(t, false)
	if st.Err == nil || st.Since.IsZero() {
		t.Errorf("disconnected status = %+v, want an error and a since time", st)
	}
	select {
	case s := <-out:
		t.Fatalf("got snapshot %+v while etcd is down", s)
	default:
	}

	srv := etcdtest.StartWith(t, etcdserver.Options{ClientURL: url})
	scli := newClient(t, srv.Endpoints())
	put(t, scli, "/p/n1", "10.0.0.1:3306")
	waitSnapshot(t, out, "/p/n1 after etcd started", hasKV("/p/n1", "10.0.0.1:3306"))
	rec.waitFor(t, true)

	warns := strings.Count(logs.String(), "etcd read failed")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if warns == 0 || !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("no warning with the endpoint error logged for the failed reads; logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "etcd reachable again") {
		t.Errorf("recovery not logged; logs:\n%s", logs.String())
	}
	// Transitions only: down once, then up once.
	if len(rec.ss) != 2 {
		t.Errorf("statuses = %+v, want down then up", rec.ss)
	}
}

// etcd restarted under a running watch: the outage is reported with its
// reason and the watch resumes when etcd is back. With the probe out of
// the way (an hour apart) the lost connection still ends the watch by
// itself, and the reason names the connection state.
func TestEtcdRestartMidRun(t *testing.T) {
	for _, tc := range []struct {
		name   string
		probe  time.Duration
		reason string // in the disconnected status's error
	}{
		{"probing", 100 * time.Millisecond, ""},
		{"connection state only", time.Hour, "connection transient_failure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			srv := etcdtest.StartWith(t, etcdserver.Options{Dir: dir})
			url := srv.Endpoints()[0]
			cli := newClient(t, []string{url})
			put(t, cli, "/p/n1", "a")

			var rec statusRecorder
			var logs syncBuffer
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("logs:\n%s", logs.String())
				}
			})
			e := newEtcd(t, cli, Options{
				Prefixes:   []string{"/p"},
				MinBackoff: 10 * time.Millisecond,
				MaxBackoff: 100 * time.Millisecond,
				OnStatus:   rec.record,
				Logger:     testLogger(&logs),
			})
			e.requestTimeout = 300 * time.Millisecond
			e.probeInterval = tc.probe
			out := run(t, e)
			waitSnapshot(t, out, "/p/n1", hasKV("/p/n1", "a"))
			rec.waitFor(t, true)

			srv.Close()
			st := rec.waitFor(t, false)
			if st.Err == nil || !strings.Contains(st.Err.Error(), tc.reason) {
				t.Errorf("disconnected status = %+v, want an error naming %q", st, tc.reason)
			}

			etcdtest.StartWith(t, etcdserver.Options{Dir: dir, ClientURL: url})
			put(t, cli, "/p/n2", "b")
			s := waitSnapshot(t, out, "/p/n2 after restart", hasKV("/p/n2", "b"))
			if got := s.Map(); !reflect.DeepEqual(got, map[string]string{"/p/n1": "a", "/p/n2": "b"}) {
				t.Errorf("after restart = %v", got)
			}
			rec.waitFor(t, true)
		})
	}
}

func TestRunStopsWhileSending(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	e := newEtcd(t, cli, Options{Prefixes: []string{"/p"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, make(chan Snapshot)) }() // nobody reads
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
	}
	if err := e.Run(context.Background(), nil); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("Run with nil channel = %v, want ErrInvalidOptions", err)
	}
}

func TestNewEtcdOptions(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	tests := []struct {
		name string
		cli  *clientv3.Client
		opts Options
		want string // "" means valid
	}{
		{"valid", cli, Options{Prefixes: []string{"/a", "/b/"}}, ""},
		{"similar names", cli, Options{Prefixes: []string{"/a", "/ab", "/a-b"}}, ""},
		{"nil client", nil, Options{Prefixes: []string{"/a"}}, "etcd client"},
		{"no prefixes", cli, Options{}, "need at least one"},
		{"empty prefix", cli, Options{Prefixes: []string{"/a", ""}}, "prefix #2"},
		{"duplicate", cli, Options{Prefixes: []string{"/a", "/a"}}, "given twice"},
		{"nested", cli, Options{Prefixes: []string{"/a", "/a/b"}}, "covers keys"},
		{"nested slash", cli, Options{Prefixes: []string{"/a/", "/a"}}, "covers keys"},
		{"negative page", cli, Options{Prefixes: []string{"/a"}, PageSize: -1}, "page size -1"},
		{"negative backoff", cli, Options{Prefixes: []string{"/a"}, MinBackoff: -1}, "must not be negative"},
		{"min over max", cli, Options{Prefixes: []string{"/a"}, MinBackoff: 2 * time.Second, MaxBackoff: time.Second}, "min backoff is more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := NewEtcdSource(tt.cli, tt.opts)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("NewEtcd: %v", err)
				}
				if e.pageSize != defaultPageSize || e.minBackoff != defaultMinBackoff || e.maxBackoff != defaultMaxBackoff {
					t.Errorf("defaults not applied: page %d backoff %v..%v", e.pageSize, e.minBackoff, e.maxBackoff)
				}
				return
			}
			if err == nil {
				t.Fatalf("NewEtcd succeeded, want error containing %q", tt.want)
			}
			if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewEtcd error = %q, want ErrInvalidOptions containing %q", err, tt.want)
			}
		})
	}
}

func TestCoveringRange(t *testing.T) {
	e := newEtcd(t, &clientv3.Client{}, Options{Prefixes: []string{"/b", "/a/"}})
	if got, want := e.watchRange, (keyRange{"/a/", "/b0"}); got != want {
		t.Errorf("watch range = %q, want %q", got, want)
	}
	if got, want := coveringRange([]keyRange{{"/a", ""}, {"\xff", "\x00"}}), (keyRange{"/a", "\x00"}); got != want {
		t.Errorf("covering range = %q, want %q", got, want)
	}
}
