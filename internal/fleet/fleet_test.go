package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/haconfd/haconfd/internal/testbed"
	"strings"
	"sync"
	"syscall"
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

const pfx = "/haconfd/instances"

func newClient(t *testing.T, srv *etcdserver.Server) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// startPublisher runs a publisher for name until the test ends (or stop).
func startPublisher(t *testing.T, cli *clientv3.Client, name string, ttl time.Duration) (*Publisher, func()) {
	t.Helper()
	p, err := NewPublisher(cli, Options{Prefix: pfx, Instance: name, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Run(ctx)
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return p, stop
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testbed.Eventually(t, 20*time.Second, what, cond)
}

func getStatus(t *testing.T, cli *clientv3.Client, key string) (Report, int64, bool) {
	t.Helper()
	resp, err := cli.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return Report{}, 0, false
	}
	var st Report
	if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
		t.Fatal(err)
	}
	return st, resp.Kvs[0].Lease, true
}

func TestFleetPublisherLifecycle(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv)
	p, stop := startPublisher(t, cli, "lb1", 2*time.Second)

	poll(t, "status published on a lease", func() bool {
		_, lease, ok := getStatus(t, cli, pfx+"/lb1")
		return ok && lease != 0
	})
	if err := p.Update(t.Context(), func(s *Report) { s.AppliedRevision, s.LastResult = 42, ResultOK }); err != nil {
		t.Fatal(err)
	}
	st, _, _ := getStatus(t, cli, pfx+"/lb1")
	seen, lease, ok := getStatus(t, cli, pfx+".last-seen/lb1")
	if st.AppliedRevision != 42 || !ok || seen.AppliedRevision != 42 || lease != 0 {
		t.Fatalf("status %+v, last-seen %+v (lease %x)", st, seen, lease)
	}
	stop()
	for _, k := range []string{pfx + "/lb1", pfx + ".last-seen/lb1"} {
		if _, _, ok := getStatus(t, cli, k); ok {
			t.Errorf("%s left after a clean stop", k)
		}
	}
}

// An instance that stops without a clean exit is gone after its TTL.
func TestFleetReadAllGone(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv)
	dying := newClient(t, srv)
	_, _ = startPublisher(t, dying, "lb9", time.Second)
	poll(t, "published", func() bool { _, _, ok := getStatus(t, cli, pfx+"/lb9"); return ok })
	_ = dying.Close() // no keepalive, no clean stop

	poll(t, "gone after the TTL", func() bool {
		f, err := ReadAll(t.Context(), cli, pfx, []string{"/db"})
		return err == nil && len(f.Instances) == 1 && f.Instances[0].State == Gone
	})
}

func TestFleetReadAllStates(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv)
	ctx := t.Context()
	put := func(k, v string) int64 {
		t.Helper()
		r, err := cli.Put(ctx, k, v)
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	r1 := put("/db/n1", "10.0.0.1:3306")
	r2 := put("/db/n2", "10.0.0.2:3306")
	put("/other/x", "1") // not watched: not a change
	publish := func(st Report) {
		t.Helper()
		b, _ := json.Marshal(st)
		put(pfx+"/"+st.Instance, string(b))
	}
	now := time.Now()
	publish(Report{Instance: "ok", Prefixes: []string{"/db"}, AppliedRevision: r2, SeenRevision: r2, LastResult: ResultOK})
	publish(Report{Instance: "behind", Prefixes: []string{"/db"}, AppliedRevision: r1, SeenRevision: r2, BehindSince: now.Add(-3 * time.Second), LastResult: ResultOK})
	publish(Report{Instance: "held", AppliedRevision: r1, SeenRevision: r2, LastResult: ResultHeld, Held: "wave stopped: instance x failed"})
	publish(Report{Instance: "broken", Prefixes: []string{"/db"}, AppliedRevision: r1, LastResult: ResultError, LastError: "apply: haproxy failed to start"})

	want := map[string]State{"ok": Converged, "behind": Lagging, "held": Lagging, "broken": Failing}
	f, err := ReadAll(ctx, cli, pfx, []string{"/db"})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range f.Instances {
		if in.State != want[in.Instance] || in.Latest != r2 {
			t.Errorf("%s: %s latest %d (%s), want %s latest %d", in.Instance, in.State, in.Latest, in.Detail, want[in.Instance], r2)
		}
	}
	if len(f.Instances) != 4 {
		t.Fatalf("instances %+v", f.Instances)
	}
	if d := f.Instances[0].Detail; f.Instances[0].Instance != "behind" || !strings.Contains(d, "1 revisions behind for 3") {
		t.Errorf("behind detail %q", d)
	}

	// A deletion is a change too, though no key carries its revision.
	dr, err := cli.Delete(ctx, "/db/n1")
	if err != nil {
		t.Fatal(err)
	}
	put("/other/y", "2")
	l, note, err := LatestChange(ctx, cli, []string{"/db"})
	if err != nil || l != dr.Header.Revision || note != "" {
		t.Fatalf("LatestChange = %d %q %v, want the delete at %d", l, note, err, dr.Header.Revision)
	}
	f, err = ReadAll(ctx, cli, pfx, []string{"/db"})
	if err != nil {
		t.Fatal(err)
	}
	if f.Instances[3].Instance != "ok" || f.Instances[3].State != Lagging {
		t.Errorf("after a delete %+v should lag", f.Instances[3])
	}
}

// Slots 1: the second instance reloads only after the first published
// its outcome; a failure stops the wave for that change until the failed
// instance succeeds.
func TestFleetStagger(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv)
	pa, _ := startPublisher(t, newClient(t, srv), "a", 2*time.Second)
	pb, _ := startPublisher(t, newClient(t, srv), "b", 2*time.Second)
	sa, err := NewStagger(pa, StaggerOptions{Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := NewStagger(pb, StaggerOptions{Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	att := Attempt{Action: "reload", Change: "c1", ConfigSHA256: "s1", Coordinate: true}

	relA, err := sa.Acquire(ctx, att)
	if err != nil {
		t.Fatal(err)
	}
	type acq struct {
		rel func(bool, error)
		err error
	}
	got := make(chan acq, 1)
	go func() {
		r, err := sb.Acquire(ctx, att)
		got <- acq{r, err}
	}()
	poll(t, "b waiting for the slot", func() bool {
		st, _, _ := getStatus(t, cli, pfx+"/b")
		return st.Waiting != ""
	})
	relA(true, nil)
	b := <-got
	if b.err != nil {
		t.Fatal(b.err)
	}
	b.rel(true, nil)
	ra, rb := pa.Report().Reloads[0], pb.Report().Reloads[0]
	if !ra.OK || !rb.OK || !rb.Started.After(ra.Finished) || !ra.Coordinated {
		t.Errorf("reloads overlap or not recorded: a %+v b %+v", ra, rb)
	}

	// a fails change c2: b refuses it.
	att.Change = "c2"
	relA, err = sa.Acquire(ctx, att)
	if err != nil {
		t.Fatal(err)
	}
	relA(false, errors.New("haproxy failed to start: chroot"))
	_, err = sb.Acquire(ctx, att)
	var ws *WaveStoppedError
	if !errors.As(err, &ws) || !errors.Is(err, ErrWaveStopped) || ws.Instance != "a" || !strings.Contains(err.Error(), "chroot") {
		t.Fatalf("b's Acquire = %v, want wave stopped by a", err)
	}
	// A start (not coordinated) of the same change is refused too;
	// another change goes ahead.
	if _, err := sb.Acquire(ctx, Attempt{Action: "start", Change: "c2"}); !errors.Is(err, ErrWaveStopped) {
		t.Errorf("start of a failed change = %v", err)
	}
	rel, err := sb.Acquire(ctx, Attempt{Action: "reload", Change: "c3", Coordinate: true})
	if err != nil {
		t.Fatal(err)
	}
	rel(true, nil)
	// a succeeds on retry: the wave goes on.
	relA, err = sa.Acquire(ctx, att)
	if err != nil {
		t.Fatal(err)
	}
	relA(true, nil)
	rel, err = sb.Acquire(ctx, att)
	if err != nil {
		t.Fatalf("after a's success: %v", err)
	}
	rel(true, nil)
}

func TestFleetBadOptions(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv)
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no prefix", Options{Instance: "a"}, "fleet option Prefix"},
		{"relative prefix", Options{Prefix: "x", Instance: "a"}, "must start with /"},
		{"trailing slash", Options{Prefix: "/x/", Instance: "a"}, "no trailing /"},
		{"no instance", Options{Prefix: pfx}, "fleet option Instance: must not be empty"},
		{"slash in instance", Options{Prefix: pfx, Instance: "a/b"}, "no slashes"},
		{"space in instance", Options{Prefix: pfx, Instance: "a b"}, "no slashes, spaces"},
		{"short ttl", Options{Prefix: pfx, Instance: "a", TTL: 500 * time.Millisecond}, "at least 1s"},
		{"negative ttl", Options{Prefix: pfx, Instance: "a", TTL: -time.Second}, "must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewPublisher(cli, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewPublisher = %v, want %q", err, tc.want)
			}
		})
	}
	p, err := NewPublisher(cli, Options{Prefix: pfx, Instance: "a"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts StaggerOptions
		want string
	}{
		{"no slots", StaggerOptions{}, "Slots 0: must be at least 1"},
		{"negative wait", StaggerOptions{Slots: 1, LockWait: -1}, "LockWait -1ns: must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewStagger(p, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewStagger = %v, want %q", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		p, w string
		want bool
	}{
		{"/haconfd/instances", "/components/galera", false},
		{"/haconfd/instances", "/haconfd", true},
		{"/haconfd/instances", "/haconfd/instances", true},
		{"/haconfd/instances", "/haconfd/instances.last-seen", true},
		{"/haconfd/instances", "/haconfd/instances/x", true},
		{"/haconfd/instances", "/haconfd/inst", false},
	} {
		if got := Overlaps(tc.p, tc.w); got != tc.want {
			t.Errorf("Overlaps(%s, %s) = %v", tc.p, tc.w, got)
		}
	}
}

// LatestChange sees the newest deletion under the prefixes, also on etcd
// 3.4.23 (Debian 12's), whose progress notification can come before a
// fresh watch has delivered past events (etcd-io/etcd#15220): trusting it
// called an instance converged that had not applied a recent delete.
func TestLatestChangeSeesDeletesOnEtcd34(t *testing.T) {
	p := etcdtest.StartProcess(t)
	t.Logf("%s", etcdtest.Version(etcdtest.Binary(t)))
	cli, err := clientv3.New(clientv3.Config{Endpoints: p.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := t.Context()
	for i := range 20 {
		node := fmt.Sprintf("/components/galera/n%d", i)
		if _, err := cli.Put(ctx, node, "10.0.0.1:3306"); err != nil {
			t.Fatal(err)
		}
		// Other keys change after it, as instances' statuses do.
		for k := range 20 {
			if _, err := cli.Put(ctx, fmt.Sprintf("/haconfd/instances/lb%d", k), fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
		}
		del, err := cli.Delete(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		for k := range 5 {
			if _, err := cli.Put(ctx, fmt.Sprintf("/haconfd/instances/lb%d", k), "x"); err != nil {
				t.Fatal(err)
			}
		}
		got, note, err := LatestChange(ctx, cli, []string{"/components/galera"})
		if err != nil {
			t.Fatal(err)
		}
		if got != del.Header.Revision {
			t.Fatalf("round %d: latest change %d (%s), want the delete at %d", i, got, note, del.Header.Revision)
		}
	}
}

// A release that etcd does not take (its member stops answering for a
// while) left the slot's key on the holder's lease, which the publisher
// keeps alive: every other instance waited LockWait (2 minutes by
// default) for a slot nobody used. The delete is retried until etcd
// takes it, so the next instance gets the slot once etcd answers again.
func TestFleetSlotFreedAfterAFailedRelease(t *testing.T) {
	p := etcdtest.StartProcess(t)
	newCli := func() *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: p.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cli.Close() })
		return cli
	}
	// A TTL longer than the pause: the holder's lease outlives it.
	pa, _ := startPublisher(t, newCli(), "a", time.Minute)
	pb, _ := startPublisher(t, newCli(), "b", time.Minute)
	opts := StaggerOptions{Slots: 1, LockWait: time.Hour}
	sa, err := NewStagger(pa, opts)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := NewStagger(pb, opts)
	if err != nil {
		t.Fatal(err)
	}
	att := Attempt{Action: "reload", Change: "c1", Coordinate: true}
	relA, err := sa.Acquire(t.Context(), att)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Signal(syscall.SIGCONT) })
	relA(true, nil) // its publish and its delete time out
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		rel, err := sb.Acquire(t.Context(), att)
		if err == nil {
			rel(true, nil)
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("b still waits for the slot a released while etcd did not answer")
	}
	if rb := pb.Report().Reloads; len(rb) != 1 || !rb[0].Coordinated {
		t.Errorf("b's reloads %+v: want one, coordinated", rb)
	}
}

// An instance whose last result is "held" is lagging even when its
// applied revision is the latest: it holds a render on purpose (a guard,
// a stopped wave), so the newest revision is not entirely live.
func TestClassifyHeldIsNotConverged(t *testing.T) {
	in := Instance{Report: Report{Instance: "lb1", AppliedRevision: 10, SeenRevision: 10, LastResult: ResultHeld, Held: "wave stopped: instance lb2 failed"}, Latest: 10}
	classify(&in, time.Now())
	if in.State != Lagging || !strings.Contains(in.Detail, "held: wave stopped") {
		t.Fatalf("state %s, detail %q; want lagging, held", in.State, in.Detail)
	}
	in = Instance{Report: Report{Instance: "lb1", AppliedRevision: 10, SeenRevision: 10, LastResult: ResultOK}, Latest: 10}
	classify(&in, time.Now())
	if in.State != Converged {
		t.Fatalf("state %s, want converged", in.State)
	}
}

// An instance that waited for the reload slot while the holder failed
// the same change refuses it once it gets the slot (the wave is checked
// again after the wait).
func TestFleetWaveCheckedAfterWaitingForSlot(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv)
	pa, _ := startPublisher(t, newClient(t, srv), "a", 2*time.Second)
	pb, _ := startPublisher(t, newClient(t, srv), "b", 2*time.Second)
	sa, err := NewStagger(pa, StaggerOptions{Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := NewStagger(pb, StaggerOptions{Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	att := Attempt{Action: "reload", Change: "c1", ConfigSHA256: "s1", Coordinate: true}
	relA, err := sa.Acquire(ctx, att)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		rel, err := sb.Acquire(ctx, att)
		if rel != nil {
			rel(true, nil)
		}
		got <- err
	}()
	poll(t, "b waiting for the slot", func() bool {
		st, _, _ := getStatus(t, cli, pfx+"/b")
		return st.Waiting != ""
	})
	relA(false, errors.New("haproxy failed to start: chroot"))
	if err := <-got; !errors.Is(err, ErrWaveStopped) {
		t.Fatalf("b's Acquire after waiting = %v, want wave stopped by a", err)
	}
}
