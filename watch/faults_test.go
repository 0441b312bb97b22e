package watch

import (
	"context"
	"errors"
	"fmt"
	"github.com/haconfd/haconfd/internal/testbed"
	"maps"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haconfd/haconfd/internal/etcdtest"
)

// collector keeps every snapshot Run sends and checks that revisions
// never go backwards.
type collector struct {
	mu    sync.Mutex
	snaps []Snapshot
	back  []string // revisions that went backwards
	done  chan struct{}
}

func collect(out <-chan Snapshot) *collector {
	c := &collector{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for s := range out {
			c.mu.Lock()
			if n := len(c.snaps); n > 0 && s.Revision < c.snaps[n-1].Revision {
				c.back = append(c.back, fmt.Sprintf("%d after %d", s.Revision, c.snaps[n-1].Revision))
			}
			c.snaps = append(c.snaps, s)
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) last() Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.snaps) == 0 {
		return Snapshot{}
	}
	return c.snaps[len(c.snaps)-1]
}

// waitRev polls until a snapshot at rev or later arrived.
func (c *collector) waitRev(t *testing.T, rev int64) Snapshot {
	t.Helper()
	testbed.Eventually(t, waitTimeout, fmt.Sprintf("a snapshot at revision %d", rev), func() bool { return c.last().Revision >= rev })
	return c.last()
}

// runCollected is run with the snapshots going to a collector; the channel
// is closed once Run returned, so the collector ends with the test.
func runCollected(t *testing.T, e *EtcdSource) *collector {
	t.Helper()
	out := make(chan Snapshot)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, out) }()
	c := collect(out)
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
		close(out)
		<-c.done
	})
	return c
}

// writer puts /p/kNNNNN keys one after another, paced, until stopped, and
// records the revision of every acknowledged put.
type writer struct {
	mu    sync.Mutex
	acked map[string]int64
	fails int
	stop  chan struct{}
	done  chan struct{}
}

func startWriter(cli *clientv3.Client, every time.Duration) *writer {
	w := &writer{acked: map[string]int64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			key := fmt.Sprintf("/p/k%05d", i)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := cli.Put(ctx, key, fmt.Sprint(i))
			cancel()
			w.mu.Lock()
			if err == nil {
				w.acked[key] = resp.Header.Revision
			} else {
				w.fails++
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *writer) finish() (map[string]int64, int) {
	close(w.stop)
	<-w.done
	return w.acked, w.fails
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testbed.Eventually(t, waitTimeout, what, cond)
}

// The leader of a 3-member cluster is stopped while keys are written and
// while the watch stream is on it: the watch moves to another member and
// no event is missed. Every snapshot equals etcd's content at its
// revision, revisions never go backwards, and the last snapshot holds
// every acknowledged put.
func TestLeaderStoppedNoMissedEvent(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	ctx := ctxT(t)
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The watcher's client knows only the leader at first, so that its
	// watch stream is on the member about to be stopped; then it learns
	// the others, as a client given all endpoints would have them.
	wcli := newClient(t, []string{c.Endpoints()[leader]})
	var logs syncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	var rec statusRecorder
	e := newEtcd(t, wcli, Options{
		Prefixes:   []string{"/p"},
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
		Logger:     testLogger(&logs),
		OnStatus:   rec.record,
	})
	e.requestTimeout = time.Second
	e.probeInterval = 200 * time.Millisecond
	col := runCollected(t, e)
	rec.waitFor(t, true)
	wcli.SetEndpoints(c.Endpoints()...)

	wr := newClient(t, c.Endpoints())
	w := startWriter(wr, 10*time.Millisecond)
	waitFor(t, "100 puts before the stop", func() bool { return w.count() >= 100 })
	stopped := time.Now()
	c.Stop(leader)
	next, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := w.count()
	waitFor(t, "100 puts after the stop", func() bool { return w.count() >= before+100 })
	acked, fails := w.finish()

	resp, err := wr.Get(ctx, "/p", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	final := col.waitRev(t, resp.Header.Revision)
	t.Logf("leader m%d stopped, m%d leads; %d puts acknowledged, %d failed; last snapshot at rev %d with %d keys %v after the stop",
		leader, next, len(acked), fails, final.Revision, len(final.KVs), time.Since(stopped).Round(time.Millisecond))

	for k, rev := range acked {
		if _, ok := final.Get(k); !ok {
			t.Errorf("acknowledged put %s (rev %d) missing from the last snapshot", k, rev)
		}
	}
	col.mu.Lock()
	snaps, back := col.snaps, col.back
	col.mu.Unlock()
	if len(back) > 0 {
		t.Errorf("snapshot revisions went backwards: %v", back)
	}
	// Each snapshot is exactly etcd's content at its revision.
	for _, s := range snaps {
		resp, err := wr.Get(ctx, "/p", clientv3.WithPrefix(), clientv3.WithRev(s.Revision))
		if err != nil {
			t.Fatalf("get at %d: %v", s.Revision, err)
		}
		want := map[string]string{}
		for _, kv := range resp.Kvs {
			want[string(kv.Key)] = string(kv.Value)
		}
		if got := s.Map(); !maps.Equal(got, want) {
			t.Fatalf("snapshot at rev %d has %d keys, etcd had %d", s.Revision, len(got), len(want))
		}
	}
	t.Logf("%d snapshots checked; watch breaks logged: %q", len(snaps), firstLine(logs.String(), "etcd watch broken"))
}

// With every member down the source says so, with the time it began;
// when the members return it reads again and reports connected.
func TestClusterDownStatus(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	ctx := ctxT(t)
	cli := newClient(t, c.Endpoints())
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
		MaxBackoff: 200 * time.Millisecond,
		Logger:     testLogger(&logs),
		OnStatus:   rec.record,
	})
	e.requestTimeout = 500 * time.Millisecond
	e.probeInterval = 100 * time.Millisecond
	col := runCollected(t, e)
	up := rec.waitFor(t, true)
	put(t, cli, "/p/n1", "a")
	col.waitRev(t, 2)

	down := time.Now()
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Stop(leader)
	for i := range c.Endpoints() {
		c.Stop(i)
	}
	st := rec.waitFor(t, false)
	if st.Err == nil || st.Since.Before(down) || !st.Since.After(up.Since) {
		t.Errorf("down status = %+v, want an error and since after %v", st, down)
	}
	t.Logf("disconnect noticed after %v: %v", st.Since.Sub(down).Round(time.Millisecond), st.Err)

	if err := c.RestartStopped(ctx); err != nil {
		t.Fatal(err)
	}
	returned := time.Now()
	rev := put(t, cli, "/p/n2", "b")
	s := col.waitRev(t, rev)
	if got := s.Map(); !maps.Equal(got, map[string]string{"/p/n1": "a", "/p/n2": "b"}) {
		t.Errorf("after return = %v", got)
	}
	again := rec.waitFor(t, true)
	if !again.Since.After(st.Since) {
		t.Errorf("reconnected status %+v, want since after %v", again, st.Since)
	}
	t.Logf("resync %v after the members returned", again.Since.Sub(returned).Round(time.Millisecond))
	if !strings.Contains(logs.String(), "etcd reachable again") {
		t.Errorf("recovery not logged")
	}
}

// When etcd does not answer, the reason Options.Diagnose finds (a TLS
// problem, a refused connection) is logged with the failure.
func TestDiagnosisIsLogged(t *testing.T) {
	cfg := clientv3.Config{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: 100 * time.Millisecond, Logger: zap.NewNop()}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	var logs syncBuffer
	var rec statusRecorder
	asked := make(chan struct{}, 100)
	e := newEtcd(t, cli, Options{Prefixes: []string{"/p"}, MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond, Logger: testLogger(&logs), OnStatus: rec.record,
		Diagnose: func(context.Context, error) error {
			asked <- struct{}{}
			return errors.New("because of a test reason")
		}})
	e.requestTimeout = 300 * time.Millisecond
	run(t, e)
	rec.waitFor(t, false)
	waitFor(t, "a warning", func() bool { return strings.Contains(logs.String(), "etcd read failed") })
	line := firstLine(logs.String(), "etcd read failed")
	if !strings.Contains(line, `endpoint_error="because of a test reason"`) {
		t.Errorf("warning does not carry the diagnosis:\n%s", line)
	}
}

func firstLine(s, substr string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

// A member that stops answering (SIGSTOP: a frozen VM, a stuck disk) keeps
// its TCP connections, so gRPC still calls the connection READY and its
// keepalive takes 15 s or more; the probe's Get may go to another member.
// The watch stream itself must notice (its progress requests go
// unanswered) and end, so that the next read goes elsewhere. The probe is
// off here: only the stream can tell.
func TestPausedMemberEndsWatch(t *testing.T) {
	p := etcdtest.StartProcess(t)
	cli := newClient(t, p.Endpoints())
	var rec statusRecorder
	e := newEtcd(t, cli, Options{
		Prefixes:   []string{"/p"},
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
		OnStatus:   rec.record,
	})
	e.requestTimeout = time.Second
	e.probeInterval = time.Hour
	runCollected(t, e)
	rec.waitFor(t, true)
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Signal(syscall.SIGCONT) })
	st := rec.waitFor(t, false)
	if st.Err == nil || !strings.Contains(st.Err.Error(), "stalled") {
		t.Fatalf("status %+v: want the stalled watch as the reason", st)
	}
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, true)
}

// A member that lost its leader (its peers are gone) ends the watch on it
// (WithRequireLeader), even though it still answers and its connection
// stays up: the probe is slowed down here so that only etcd's "no
// leader" can end it.
func TestWatchEndsWhenMemberLosesLeader(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	ctx := ctxT(t)
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	follower := (leader + 1) % 3
	cli := newClient(t, []string{c.Endpoints()[follower]})
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
		MaxBackoff: 200 * time.Millisecond,
		Logger:     testLogger(&logs),
		OnStatus:   rec.record,
	})
	e.probeInterval = time.Hour
	col := runCollected(t, e)
	rec.waitFor(t, true)
	put(t, newClient(t, c.Endpoints()), "/p/n1", "a")
	col.waitRev(t, 2)

	for i := range c.Endpoints() {
		if i != follower {
			c.Stop(i)
		}
	}
	st := rec.waitFor(t, false)
	if st.Err == nil || !strings.Contains(st.Err.Error(), "leader") {
		t.Fatalf("status = %+v, want the watch ended for want of a leader", st)
	}
	t.Logf("watch on m%d ended: %v", follower, st.Err)
	if err := c.RestartStopped(ctx); err != nil {
		t.Fatal(err)
	}
}
