package galera

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/haconfd/haconfd/internal/testbed"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/etcdtest"
	"github.com/haconfd/haconfd/render/node"
)

const testPrefix = "/components/galera"

func newClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// tWriter sends a logger's lines to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// running is a Registrar's Run in a goroutine.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs a Registrar until stopped or until the test ends.
func start(t *testing.T, cli *clientv3.Client, opts Options) *running {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	r, err := New(cli, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rr := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { rr.done <- r.Run(ctx) }()
	t.Cleanup(func() { rr.stop(t) })
	return rr
}

// stop cancels Run and returns its result (nil when already stopped).
func (rr *running) stop(t *testing.T) error {
	t.Helper()
	rr.cancel()
	select {
	case err, ok := <-rr.done:
		if !ok {
			return nil
		}
		close(rr.done)
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("registrar did not stop within 30s")
		return nil
	}
}

// waitFor polls cond until it holds or 15 s pass.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	var got string
	if err := testbed.Poll(15*time.Second, 20*time.Millisecond, func() (ok bool) { ok, got = cond(); return ok }); err != nil {
		t.Fatalf("timed out waiting for %s; last: %s", what, got)
	}
}

// holds polls cond for d and fails the test the first time it does not hold.
func holds(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if ok, got := cond(); !ok {
			t.Fatalf("%s: no longer holds: %s", what, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kvs returns every key under prefix with its value and lease.
func kvs(t *testing.T, cli *clientv3.Client, prefix string) (map[string]string, map[string]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, nil
	}
	vals, leases := map[string]string{}, map[string]int64{}
	for _, kv := range resp.Kvs {
		vals[string(kv.Key)] = string(kv.Value)
		leases[string(kv.Key)] = kv.Lease
	}
	return vals, leases
}

// registered reports whether exactly want is under base, all on one live
// lease, and returns that lease.
func registered(t *testing.T, cli *clientv3.Client, base string, want map[string]string) (bool, string, int64) {
	vals, leases := kvs(t, cli, base)
	if fmt.Sprint(vals) != fmt.Sprint(want) {
		return false, fmt.Sprint(vals), 0
	}
	var lease int64
	for _, l := range leases {
		if l == 0 || lease != 0 && l != lease {
			return false, fmt.Sprintf("leases %v", leases), 0
		}
		lease = l
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(lease))
	// TTL is whole seconds left, so a live 2s lease between keepalives
	// can read 0; -1 is a lease that no longer exists.
	if err != nil || ttl.TTL < 0 {
		return false, fmt.Sprintf("lease %x: ttl %v err %v", lease, ttl, err), 0
	}
	return true, "", lease
}

func dirOpts(id, ip string) Options {
	return Options{Prefix: testPrefix, ID: id, IP: ip, Port: 3307, Host: id + ".example", ServiceInstanceName: "galera@" + id, TTL: 2 * time.Second}
}

func dirKeys(id, ip string) map[string]string {
	b := testPrefix + "/" + id
	return map[string]string{b + "/ip": ip, b + "/port": "3307", b + "/host": id + ".example", b + "/service_instance_name": "galera@" + id}
}

func TestRegisterLayouts(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	tests := []struct {
		name   string
		layout Layout
		want   map[string]string
	}{
		{"dir", LayoutDir, dirKeys("db1", "10.0.0.1")},
		{"json", LayoutJSON, map[string]string{testPrefix + "/db1": `{"ip":"10.0.0.1","port":3307,"host":"db1.example","service_instance_name":"galera@db1"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := dirOpts("db1", "10.0.0.1")
			opts.Layout = tt.layout
			rr := start(t, cli, opts)
			waitFor(t, "registration", func() (bool, string) {
				ok, got, _ := registered(t, cli, testPrefix+"/db1", tt.want)
				return ok, got
			})
			vals, _ := kvs(t, cli, testPrefix)
			nodes, problems := node.Parse(testPrefix, vals)
			if len(problems) > 0 || len(nodes) != 1 || nodes[0].IP != "10.0.0.1" || nodes[0].Port != 3307 ||
				nodes[0].Host != "db1.example" || nodes[0].ServiceInstanceName != "galera@db1" {
				t.Fatalf("haconfd reads %+v, problems %v", nodes, problems)
			}
			if err := rr.stop(t); err != nil {
				t.Fatalf("stop: %v", err)
			}
			if vals, _ := kvs(t, cli, testPrefix); len(vals) != 0 {
				t.Fatalf("keys left after stop: %v", vals)
			}
		})
	}
}

// TestRegisterLost: the registration comes back after each way of losing it.
func TestRegisterLost(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	start(t, cli, dirOpts("db1", "10.0.0.1"))
	want := dirKeys("db1", "10.0.0.1")
	var lease int64
	waitFor(t, "registration", func() (ok bool, got string) {
		ok, got, lease = registered(t, cli, testPrefix+"/db1", want)
		return ok, got
	})

	t.Run("lease revoked from outside", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := cli.Revoke(ctx, clientv3.LeaseID(lease)); err != nil {
			t.Fatal(err)
		}
		old := lease
		waitFor(t, "registration on a new lease", func() (ok bool, got string) {
			ok, got, lease = registered(t, cli, testPrefix+"/db1", want)
			return ok && lease != old, got
		})
	})

	t.Run("keys deleted from outside", func(t *testing.T) {
		// What the original fleet unit's ExecStop did to every node.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := cli.Delete(ctx, testPrefix, clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "keys restored", func() (ok bool, got string) {
			ok, got, lease = registered(t, cli, testPrefix+"/db1", want)
			return ok, got
		})
	})
}

func TestRegisterEtcdRestart(t *testing.T) {
	tests := []struct {
		name     string
		keepData bool // restart on the same data dir, or on an empty one (etcd restored without our lease)
	}{
		{"same data dir", true},
		{"empty data dir", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			srv := etcdtest.StartWith(t, etcdserver.Options{Dir: dir})
			url := srv.Endpoints()[0]
			cli := newClient(t, srv.Endpoints())
			opts := dirOpts("db1", "10.0.0.1")
			rr := start(t, cli, opts)
			want := dirKeys("db1", "10.0.0.1")
			waitFor(t, "registration", func() (bool, string) {
				ok, got, _ := registered(t, cli, testPrefix+"/db1", want)
				return ok, got
			})
			closing := time.Now()
			srv.Close()
			t.Logf("etcd closed in %s", time.Since(closing).Round(time.Millisecond))
			if !tt.keepData {
				dir = t.TempDir()
			}
			etcdtest.StartWith(t, etcdserver.Options{Dir: dir, ClientURL: url})
			restarted := time.Now()
			var lease int64
			waitFor(t, "registration after restart", func() (ok bool, got string) {
				ok, got, lease = registered(t, cli, testPrefix+"/db1", want)
				return ok, got
			})
			t.Logf("registered again %s after the restart", time.Since(restarted).Round(time.Millisecond))
			// Kept alive: still registered on that lease after twice its TTL.
			holds(t, "registration kept alive", 2*opts.TTL, func() (bool, string) {
				ok, got, l := registered(t, cli, testPrefix+"/db1", want)
				return ok && l == lease, got
			})
			if err := rr.stop(t); err != nil {
				t.Fatalf("stop: %v", err)
			}
		})
	}
}

// TestRegisterStopOnlyOwnKeys: stopping one node leaves every other key
// under the prefix alone, and revokes the lease.
func TestRegisterStopOnlyOwnKeys(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Somebody else's keys under the prefix and under our id.
	others := map[string]string{testPrefix + "/manual": "10.0.0.9:3306", testPrefix + "/db1/weight": "5"}
	for k, v := range others {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	r1 := start(t, cli, dirOpts("db1", "10.0.0.1"))
	start(t, cli, dirOpts("db2", "10.0.0.2"))
	var lease int64
	waitFor(t, "db1 registered", func() (ok bool, got string) {
		vals, leases := kvs(t, cli, testPrefix+"/db1/")
		delete(vals, testPrefix+"/db1/weight")
		ok = fmt.Sprint(vals) == fmt.Sprint(dirKeys("db1", "10.0.0.1"))
		lease = leases[testPrefix+"/db1/ip"]
		return ok, fmt.Sprint(vals)
	})
	waitFor(t, "db2 registered", func() (bool, string) {
		ok, got, _ := registered(t, cli, testPrefix+"/db2", dirKeys("db2", "10.0.0.2"))
		return ok, got
	})
	if err := r1.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	vals, _ := kvs(t, cli, testPrefix)
	want := dirKeys("db2", "10.0.0.2")
	for k, v := range others {
		want[k] = v
	}
	if fmt.Sprint(vals) != fmt.Sprint(want) {
		t.Fatalf("after stopping db1:\n got %v\nwant %v", vals, want)
	}
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(lease))
	if err != nil || ttl.TTL != -1 {
		t.Fatalf("db1's lease %x not revoked: %+v %v", lease, ttl, err)
	}
}

// TestRegisterStopSparesNewerOwner: a key of ours that someone else has
// written since (another registrar with the same id) is not deleted.
func TestRegisterStopSparesNewerOwner(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	rr := start(t, cli, dirOpts("db1", "10.0.0.1"))
	waitFor(t, "registration", func() (bool, string) {
		ok, got, _ := registered(t, cli, testPrefix+"/db1", dirKeys("db1", "10.0.0.1"))
		return ok, got
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, testPrefix+"/db1/ip", "10.0.0.7"); err != nil {
		t.Fatal(err)
	}
	if err := rr.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	vals, _ := kvs(t, cli, testPrefix)
	if want := map[string]string{testPrefix + "/db1/ip": "10.0.0.7"}; fmt.Sprint(vals) != fmt.Sprint(want) {
		t.Fatalf("after stop: got %v, want %v", vals, want)
	}
}

// TestRegisterState: with a WsrepReader the Galera state and index are
// published with the registration and each time they change.
func TestRegisterState(t *testing.T) {
	for _, layout := range []Layout{LayoutDir, LayoutJSON} {
		t.Run(string(layout), func(t *testing.T) {
			srv := etcdtest.Start(t)
			cli := newClient(t, srv.Endpoints())
			fake := &fakeStatus{}
			fake.set(Wsrep{State: 4, Comment: "Synced", Index: 2}, nil)
			opts := dirOpts("db1", "10.0.0.1")
			opts.Layout = layout
			opts.Wsrep = fake
			opts.StatePoll = 50 * time.Millisecond
			start(t, cli, opts)
			read := func() (node.Node, string) {
				vals, _ := kvs(t, cli, testPrefix)
				nodes, problems := node.Parse(testPrefix, vals)
				if len(problems) > 0 || len(nodes) != 1 {
					return node.Node{}, fmt.Sprintf("%v %v", vals, problems)
				}
				return nodes[0], fmt.Sprintf("%+v", nodes[0])
			}
			steps := []struct {
				name      string
				st        Wsrep
				err       error
				wantState string
				wantIndex int
			}{
				{"synced", Wsrep{State: 4, Comment: "Synced", Index: 2}, nil, "Synced", 2},
				{"desynced", Wsrep{State: 2, Comment: "Donor/Desynced", Index: 2}, nil, "Donor/Desynced", 2},
				{"mysql down keeps index", Wsrep{}, errors.New("connection refused"), StateUnreachable, 2},
				{"rejoined with new index", Wsrep{State: 4, Comment: "Synced", Index: 0}, nil, "Synced", 0},
				{"odd comment falls back to the state's name", Wsrep{State: 3, Comment: "Joined\n oops", Index: 0}, nil, "Joined", 0},
			}
			for _, s := range steps {
				fake.set(s.st, s.err)
				began := time.Now()
				waitFor(t, s.name, func() (bool, string) {
					n, got := read()
					return n.State == s.wantState && n.Index == s.wantIndex, got
				})
				t.Logf("%s: published after %s", s.name, time.Since(began).Round(time.Millisecond))
			}
			if layout == LayoutJSON {
				vals, _ := kvs(t, cli, testPrefix)
				var m map[string]any
				if err := json.Unmarshal([]byte(vals[testPrefix+"/db1"]), &m); err != nil || m["state"] != "Joined" {
					t.Fatalf("JSON value %q: %v", vals[testPrefix+"/db1"], err)
				}
			}
		})
	}
}

// TestRegisterFirstStateWithRegistration: a node never appears without
// its state (no state reads as Synced), even when MySQL is down at start.
func TestRegisterFirstStateWithRegistration(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := newClient(t, srv.Endpoints())
	fake := &fakeStatus{}
	fake.set(Wsrep{}, errors.New("connection refused"))
	opts := dirOpts("db1", "10.0.0.1")
	opts.Wsrep = fake
	w := cli.Watch(context.Background(), testPrefix, clientv3.WithPrefix())
	start(t, cli, opts)
	select {
	case wr := <-w:
		keys := map[string]string{}
		for _, ev := range wr.Events {
			keys[string(ev.Kv.Key)] = string(ev.Kv.Value)
		}
		if keys[testPrefix+"/db1/wsrep_local_state_comment"] != StateUnreachable || keys[testPrefix+"/db1/ip"] == "" {
			t.Fatalf("first write %v: want ip and state %s together", keys, StateUnreachable)
		}
		if _, ok := keys[testPrefix+"/db1/wsrep_local_index"]; ok {
			t.Fatalf("first write %v: an unknown index must not be published", keys)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("nothing registered within 15s")
	}
	cli.Watcher.Close()
}

func TestNewInvalid(t *testing.T) {
	ok := dirOpts("db1", "10.0.0.1")
	tests := []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"no id", func(o *Options) { o.ID = "" }, "id: required"},
		{"id with slash", func(o *Options) { o.ID = "a/b" }, `id "a/b": must not contain /`},
		{"id with space", func(o *Options) { o.ID = "a b" }, "control character or whitespace"},
		{"no ip", func(o *Options) { o.IP = "" }, "ip: required"},
		{"bad ip", func(o *Options) { o.IP = "10.0.0.256" }, "is not an IP address or host name"},
		{"ip with newline", func(o *Options) { o.IP = "10.0.0.1\nserver x" }, "is not an IP address or host name"},
		{"port", func(o *Options) { o.Port = 70000 }, "port 70000: not 1-65535"},
		{"host", func(o *Options) { o.Host = "db 1" }, "host"},
		{"service instance name", func(o *Options) { o.ServiceInstanceName = "a b" }, "service_instance_name"},
		{"layout", func(o *Options) { o.Layout = "xml" }, `layout "xml"`},
		{"ttl fraction", func(o *Options) { o.TTL = 1500 * time.Millisecond }, "ttl 1.5s: must be whole seconds"},
		{"prefix", func(o *Options) { o.Prefix = "components" }, `prefix "components"`},
		{"state poll", func(o *Options) { o.StatePoll = time.Millisecond }, "state poll 1ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.mod(&o)
			_, err := New(nil, o)
			if err == nil || !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want ErrInvalidOptions saying %q", err, tt.want)
			}
			if strings.Count(err.Error(), "\n") != 0 {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}
