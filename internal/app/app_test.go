package app

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/testbed"
	"github.com/haconfd/haconfd/render"
	"github.com/haconfd/haconfd/watch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// chanSource forwards snapshots the test sends.
type chanSource chan watch.Snapshot

func (c chanSource) Run(ctx context.Context, out chan<- watch.Snapshot) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-c:
			select {
			case out <- s:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// kvRenderer renders one "server" line per key; "bad" as a key fails.
type kvRenderer struct{}

func (kvRenderer) Render(in render.Input) (render.Output, error) {
	kvs := in.Map()
	keys := make([]string, 0, len(kvs))
	for k := range kvs {
		if k == "bad" {
			return render.Output{}, &render.TemplateError{File: "t.tmpl", Line: 3, Msg: "boom"}
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	svc := render.Service{Name: "galera"}
	for _, k := range keys {
		fmt.Fprintf(&b, "server %s %s\n", k, kvs[k])
		svc.Nodes = append(svc.Nodes, render.Node{ID: k})
	}
	return render.Output{Config: []byte(b.String()), Services: []render.Service{svc}}, nil
}

// recApplier records applies; failures are injected by content.
type recApplier struct {
	mu      sync.Mutex
	applied []string
	fail    error
}

func (r *recApplier) Apply(_ context.Context, cfg []byte) (haproxy.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return haproxy.Result{}, r.fail
	}
	r.applied = append(r.applied, string(cfg))
	return haproxy.Result{Action: haproxy.ActionReload}, nil
}

func (r *recApplier) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.applied...)
}

func snap(rev int64, kv ...string) watch.Snapshot {
	s := watch.Snapshot{Revision: rev}
	for i := 0; i+1 < len(kv); i += 2 {
		s.KVs = append(s.KVs, watch.KV{Key: kv[i], Value: kv[i+1]})
	}
	return s
}

func startLoop(t *testing.T, opts Options) (chanSource, *recApplier, *App, func()) {
	t.Helper()
	src := make(chanSource)
	ap := &recApplier{}
	a := New(src, kvRenderer{}, ap, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return src, ap, a, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if err := testbed.Poll(10*time.Second, 5*time.Millisecond, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// A burst of snapshots inside the quiescence window is one apply of the
// newest one.
func TestBurstCoalesces(t *testing.T) {
	src, ap, a, stop := startLoop(t, Options{WaitMin: 200 * time.Millisecond, WaitMax: 5 * time.Second})
	defer stop()
	for i := 1; i <= 200; i++ {
		src <- snap(int64(i), "a", fmt.Sprint(i))
	}
	waitFor(t, "apply", func() bool { return len(ap.list()) >= 1 })
	waitFor(t, "revision 200 applied", func() bool { return a.Status().Applied == 200 })
	if got := ap.list(); len(got) > 2 || got[len(got)-1] != "server a 200\n" {
		t.Fatalf("applies: %q", got)
	}
}

// Same bytes again: nothing applied.
func TestUnchangedIsNoop(t *testing.T) {
	src, ap, a, stop := startLoop(t, Options{})
	defer stop()
	src <- snap(1, "a", "1")
	waitFor(t, "first apply", func() bool { return a.Status().Applied == 1 })
	src <- snap(2, "a", "1")
	waitFor(t, "second render", func() bool { return a.Status().Applied == 2 })
	if n := len(ap.list()); n != 1 {
		t.Fatalf("applied %d times, want 1", n)
	}
}

// A failed render or a guard hold applies nothing; the next good
// snapshot applies normally.
func TestFailuresApplyNothing(t *testing.T) {
	src, ap, a, stop := startLoop(t, Options{MinServers: 2})
	defer stop()
	src <- snap(1, "a", "1", "b", "2")
	waitFor(t, "apply", func() bool { return a.Status().Applied == 1 })

	src <- snap(2, "a", "1")
	waitFor(t, "held", func() bool { return a.Status().Held != "" })
	if !strings.Contains(a.Status().Held, "fewer than --min-servers 2") {
		t.Fatalf("held reason: %q", a.Status().Held)
	}
	src <- snap(3, "a", "1", "bad", "x")
	waitFor(t, "render error", func() bool { return strings.Contains(a.Status().LastError, "t.tmpl:3") })
	src <- snap(4, "a", "1", "c", "3")
	waitFor(t, "good again", func() bool { return a.Status().Applied == 4 })
	got := ap.list()
	if len(got) != 2 || got[1] != "server a 1\nserver c 3\n" {
		t.Fatalf("applies: %q", got)
	}
	if st := a.Status(); st.Held != "" || st.LastError != "" || st.Failures != 1 {
		t.Fatalf("status after recovery: %+v", st)
	}
}

// A start failure is retried with backoff; a rejected config is not.
func TestRetryOnlyWhatMayClear(t *testing.T) {
	src, ap, a, stop := startLoop(t, Options{RetryMin: 20 * time.Millisecond, RetryMax: 40 * time.Millisecond})
	defer stop()
	ap.mu.Lock()
	ap.fail = fmt.Errorf("%w: bind busy", haproxy.ErrStartFailed)
	ap.mu.Unlock()
	src <- snap(1, "a", "1")
	waitFor(t, "retried", func() bool { return a.Status().Failures >= 3 })
	ap.mu.Lock()
	ap.fail = nil
	ap.mu.Unlock()
	waitFor(t, "retry succeeds", func() bool { return a.Status().Applied == 1 })

	ap.mu.Lock()
	ap.fail = fmt.Errorf("%w: line 3", haproxy.ErrInvalidConfig)
	ap.mu.Unlock()
	src <- snap(2, "a", "2")
	waitFor(t, "rejected", func() bool { return a.Status().Failures >= 4 })
	n := a.Status().Failures
	time.Sleep(150 * time.Millisecond) // no retry expected in this window
	if a.Status().Failures != n {
		t.Fatalf("a rejected config was retried")
	}
}

func TestOnceReturnsApplyResult(t *testing.T) {
	src := make(chanSource, 1)
	ap := &recApplier{fail: errors.New("nope")}
	a := New(src, kvRenderer{}, ap, Options{Once: true})
	src <- snap(1, "a", "1")
	if err := a.Run(context.Background()); err == nil || err.Error() != "nope" {
		t.Fatalf("Once: %v", err)
	}
	ap.fail = nil
	src <- snap(1, "a", "1")
	if err := New(src, kvRenderer{}, ap, Options{Once: true}).Run(context.Background()); err != nil {
		t.Fatalf("Once: %v", err)
	}
}
