package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/etcdtest"
	"github.com/haconfd/haconfd/internal/testbed"
)

// logSince returns the part of haconfd's log after the last occurrence of
// marker ("" if marker was not logged).
func (p *proc) logSince(marker string) string {
	l := p.Log()
	i := strings.LastIndex(l, marker)
	if i < 0 {
		return ""
	}
	return l[i+len(marker):]
}

// waitLogAfter polls until substr is logged after the last marker.
func (p *proc) waitLogAfter(marker, substr string) {
	p.t.Helper()
	if err := testbed.Poll(30*time.Second, 20*time.Millisecond, func() bool {
		return strings.Contains(p.logSince(marker), substr)
	}); err != nil {
		p.t.Fatalf("haconfd never logged %q after %q", substr, marker)
	}
}

// stopEtcd stops the test's etcd and returns its data dir and URL.
func (e *env) stopEtcd() (dir, url string) {
	dir, url = e.etcd.Dir(), e.etcd.Endpoints()[0]
	e.etcd.Close()
	return dir, url
}

// restartEtcd starts etcd again on dir and url; e.cli reconnects.
func (e *env) restartEtcd(dir, url string) {
	e.etcd = etcdtest.StartWith(e.t, etcdserver.Options{Dir: dir, ClientURL: url})
}

// An etcd outage with nothing changed: HAProxy serves throughout, the
// live file and the HAProxy processes stay as they are, during the
// outage and after the resync on etcd's return (nothing to apply). A node
// added after the return is applied.
func TestEtcdOutageKeepsServing(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 3)
	e.putNode("db1", bs[0])
	e.putNode("db2", bs[1])
	p := e.run()
	e.eventually("db1 and db2 serve", func(m map[string]int) bool { return m["db1"] > 0 && m["db2"] > 0 && m["error"] == 0 })
	p.waitLog("config live")
	cfg, pids := e.live(), e.haproxyPIDs()
	applies := countApplies(p.Log())

	load := startLoad(e.front, 4)
	down := time.Now()
	dir, url := e.stopEtcd()
	p.waitLog("etcd watch broken")
	noticed := time.Since(down)
	// Stay down until haconfd retried a full read and failed.
	p.waitLogAfter("etcd watch broken", "etcd read failed")
	if e.live() != cfg {
		t.Fatalf("live config changed while etcd was down:\n%s", e.live())
	}
	if got := e.haproxyPIDs(); !slices.Equal(got, pids) {
		t.Fatalf("haproxy pids %v while etcd was down, were %v", got, pids)
	}
	outage := time.Since(down)

	back := time.Now()
	e.restartEtcd(dir, url)
	p.waitLog("etcd reachable again")
	resync := time.Since(back)
	// The resync snapshot went through the loop: same bytes, nothing done.
	p.waitLogAfter("etcd reachable again", "rendered config unchanged")
	ok, failed, errs := load.finish()
	t.Logf("outage %v (noticed after %v), resync %v after etcd returned; clients: %d ok, %d failed %v",
		outage.Round(time.Millisecond), noticed.Round(time.Millisecond), resync.Round(time.Millisecond), ok, failed, errs)
	if failed > 0 {
		t.Fatalf("%d client connections failed during the etcd outage", failed)
	}
	if ok == 0 {
		t.Fatal("no client connection went through during the outage")
	}
	if got := e.haproxyPIDs(); !slices.Equal(got, pids) {
		t.Fatalf("haproxy pids %v after a resync with no difference, were %v", got, pids)
	}
	if n := countApplies(p.Log()); n != applies || e.live() != cfg {
		t.Fatalf("a resync with no difference applied a config (%d applies, were %d)", n, applies)
	}

	e.putNode("db3", bs[2])
	e.eventually("db3 joins after etcd returned", func(m map[string]int) bool { return m["db3"] > 0 && m["error"] == 0 })
}

// Changes made while haconfd could not see etcd (written to the same data
// directory through another URL, then compacted) are found by the resync
// on return and applied once, as one difference.
func TestChangesWhileAwayAreResynced(t *testing.T) {
	e := newEnv(t)
	bs := backends(t, "db", 3)
	e.putNode("db1", bs[0])
	e.putNode("db2", bs[1])
	p := e.run()
	e.eventually("db1 and db2 serve", func(m map[string]int) bool { return m["db1"] > 0 && m["db2"] > 0 && m["error"] == 0 })
	p.waitLog("config live")
	cfg := e.live()

	load := startLoad(e.front, 4)
	dir, url := e.stopEtcd()
	p.waitLog("etcd watch broken")

	// The same data on a URL haconfd does not know: db1 leaves, db3 joins,
	// and the history haconfd watched from is compacted away.
	side := etcdtest.StartWith(t, etcdserver.Options{Dir: dir})
	scli := e.client(side.Endpoints())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := scli.Delete(ctx, prefix+"/db1/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	var last int64
	for k, v := range map[string]string{"ip": "127.0.0.1", "port": strconv.Itoa(bs[2].Port), "host": "db3"} {
		resp, err := scli.Put(ctx, prefix+"/db3/"+k, v)
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	if _, err := scli.Compact(ctx, last, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	scli.Close()
	side.Close()
	if e.live() != cfg {
		t.Fatalf("live config changed while etcd was away")
	}
	ok, failed, errs := load.finish()
	t.Logf("clients during the outage: %d ok, %d failed %v", ok, failed, errs)
	if failed > 0 {
		t.Fatalf("%d client connections failed during the etcd outage", failed)
	}

	applies := countApplies(p.Log())
	load = startLoad(e.front, 4)
	back := time.Now()
	e.restartEtcd(dir, url)
	e.eventually("db3 in, db1 out after the resync", func(m map[string]int) bool {
		return m["db3"] > 0 && m["db2"] > 0 && m["db1"] == 0 && m["error"] == 0
	})
	applied := time.Since(back)
	ok, failed, errs = load.finish()
	t.Logf("changes applied %v after etcd returned; clients during the resync: %d ok, %d failed %v",
		applied.Round(time.Millisecond), ok, failed, errs)
	// The file follows the runtime API (written in the background).
	waitFile(t, e.cfgPath, "server db3 ")
	waitFileLacks(t, e.cfgPath, "server db1 ")
	// "config live" is logged once the file is written.
	_ = testbed.Poll(30*time.Second, 20*time.Millisecond, func() bool { return countApplies(p.Log()) > applies })
	if n := countApplies(p.Log()) - applies; n != 1 {
		t.Errorf("the resync applied %d times, want once", n)
	}
	if failed > 0 {
		t.Fatalf("%d client connections failed while the resync was applied", failed)
	}
}

// addNode registers b under id through cli, retrying while the cluster
// has no leader; a put whose outcome is unknown is simply done again.
func addNode(t *testing.T, cli *clientv3.Client, id string, b *testbed.Backend) error {
	t.Helper()
	base := prefix + "/" + id
	var err error
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = cli.Txn(ctx).Then(
			clientv3.OpPut(base+"/ip", "127.0.0.1"),
			clientv3.OpPut(base+"/port", strconv.Itoa(b.Port)),
			clientv3.OpPut(base+"/host", id),
		).Commit()
		cancel()
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("add %s: %w", id, err)
}

// The leader of a 3-member etcd is stopped while nodes are being added:
// every node added ends up in the live config and HAProxy serves
// throughout.
func TestLeaderKilledWhileAddingNodes(t *testing.T) {
	e := newEnv(t)
	c := etcdtest.StartCluster(t, 3)
	e.cli = e.client(c.Endpoints())
	const n = 10
	bs := backends(t, "db", n)
	for i := range 2 {
		if err := addNode(t, e.cli, fmt.Sprintf("db%d", i+1), bs[i]); err != nil {
			t.Fatal(err)
		}
	}
	p := e.start(append([]string{"run"}, e.argsWith(strings.Join(c.Endpoints(), ","))...)...)
	e.eventually("db1 and db2 serve", func(m map[string]int) bool { return m["db1"] > 0 && m["db2"] > 0 && m["error"] == 0 })

	load := startLoad(e.front, 4)
	var wg sync.WaitGroup
	var addErr error
	added := make(chan int, n)
	wg.Go(func() {
		for i := 2; i < n; i++ {
			if addErr = addNode(t, e.cli, fmt.Sprintf("db%d", i+1), bs[i]); addErr != nil {
				return
			}
			added <- i + 1
		}
	})
	for i := range added {
		if i == 4 {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	c.Stop(leader)
	wg.Wait()
	if addErr != nil {
		t.Fatal(addErr)
	}
	next, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = testbed.Poll(30*time.Second, 50*time.Millisecond, func() bool {
		live := e.live()
		for i := 1; i <= n; i++ {
			if !strings.Contains(live, fmt.Sprintf(" db%d ", i)) {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("not every node added reached the live config:\n%s", e.live())
	}
	inConfig := time.Since(stopped)
	ok, failed, errs := load.finish()
	t.Logf("leader m%d stopped, m%d leads; all %d nodes in the live config %v after the stop; clients: %d ok, %d failed %v",
		leader, next, n, inConfig.Round(time.Millisecond), ok, failed, errs)
	if failed > 0 {
		t.Fatalf("%d client connections failed while the leader was replaced", failed)
	}
	// In the file is not enough: every node must take connections.
	seen := map[string]int{}
	err = testbed.Poll(30*time.Second, 50*time.Millisecond, func() bool {
		for id, c := range e.round(3 * n) {
			seen[id] += c
		}
		for i := 1; i <= n; i++ {
			if seen[fmt.Sprintf("db%d", i)] == 0 {
				return false
			}
		}
		return true
	})
	if err != nil || seen["error"] > 0 {
		t.Fatalf("not every node added serves (connections seen %v); live config:\n%s", seen, e.live())
	}
	_ = p
}
