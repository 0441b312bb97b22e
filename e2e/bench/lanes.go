package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/haconfd/haconfd/internal/testbed"
)

// The two-lanes rows (issue "urgent server changes never wait"), with the
// default settings (--wait 100ms:2s): how soon a server change reaches
// clients, also while another server drains, while a reload waits for
// the fleet's lock, and while removals are held by --max-remove; and how
// many HAProxy processes a storm starts.

// watcher runs n clients through front and remembers, per backend, the
// first and last time it answered.
type watcher struct {
	front string
	mu    sync.Mutex
	first map[string]time.Time
	last  map[string]time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
	fails int
}

func watchClients(front string, n int) *watcher {
	w := &watcher{front: front, first: map[string]time.Time{}, last: map[string]time.Time{}, stop: make(chan struct{})}
	for range n {
		w.wg.Go(func() {
			for {
				select {
				case <-w.stop:
					return
				default:
				}
				id, err := testbed.Ask(front, 2*time.Second)
				now := time.Now()
				w.mu.Lock()
				if err != nil {
					w.fails++
				} else {
					if _, ok := w.first[id]; !ok {
						w.first[id] = now
					}
					w.last[id] = now
				}
				w.mu.Unlock()
			}
		})
	}
	return w
}

func (w *watcher) close() int {
	close(w.stop)
	w.wg.Wait()
	return w.fails
}

// reset forgets id's first sighting.
func (w *watcher) reset(id string) {
	w.mu.Lock()
	delete(w.first, id)
	w.mu.Unlock()
}

// firstAfter waits until id answers after t0 and returns how long after.
func (w *watcher) firstAfter(id string, t0 time.Time) (time.Duration, error) {
	var d time.Duration
	err := testbed.Poll(30*time.Second, time.Millisecond, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		f, ok := w.first[id]
		if ok && f.After(t0) {
			d = f.Sub(t0)
			return true
		}
		return false
	})
	return d, err
}

// lastAfter waits until id has not answered for quiet, and returns how
// long after t0 it last answered (0 if never).
func (w *watcher) lastAfter(id string, t0 time.Time, quiet time.Duration) (time.Duration, error) {
	var d time.Duration
	err := testbed.Poll(30*time.Second, 5*time.Millisecond, func() bool {
		w.mu.Lock()
		l := w.last[id]
		w.mu.Unlock()
		if time.Since(l) < quiet || time.Since(t0) < quiet {
			return false
		}
		d = max(l.Sub(t0), 0)
		return true
	})
	return d, err
}

func (w *world) putJSON(id string, port int, state string) error {
	_, err := w.cli.Put(context.Background(), prefix+"/"+id, fmt.Sprintf(`{"ip":"127.0.0.1","port":%d,"state":%q}`, port, state))
	return err
}

func (w *world) holdingBackend(id string) (*testbed.Backend, error) {
	b, err := testbed.StartHoldingBackend(id)
	if err == nil {
		w.backends = append(w.backends, b)
	}
	return b, err
}

// reloads counts the HAProxy starts and reloads haconfd logged.
func (w *world) reloads() int {
	return strings.Count(w.logText(), `msg="haproxy reloaded"`) + strings.Count(w.logText(), `msg="haproxy started"`)
}

func lanesBench() ([]string, error) {
	var rows []string
	for _, f := range []func() ([]string, error){lanesAddRemove, lanesUrgentDuringDrain, lanesUrgentDuringLock, lanesAddWhileHeld, lanesStorms} {
		r, err := f()
		if err != nil {
			return nil, err
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

// lanesAddRemove: Put → first connection to the new node, Delete → last
// connection to it, with the default --wait.
func lanesAddRemove() ([]string, error) {
	w, err := start(noCheck, "--wait", "100ms:2s", "--max-remove", "1") // the removals here are not a guard's business
	defer w.stop()
	if err != nil {
		return nil, err
	}
	cl := watchClients(w.front, 4)
	defer cl.close()
	var add, remove, put sample
	for i := range *reps {
		id := fmt.Sprintf("l%d", i)
		b, err := w.backend(id)
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := w.putNode(id, b.Port); err != nil {
			return nil, err
		}
		put = append(put, time.Since(t0))
		d, err := cl.firstAfter(id, t0)
		if err != nil {
			return nil, fmt.Errorf("add %s never served", id)
		}
		add = append(add, d)
		t0 = time.Now()
		if _, err := w.cli.Delete(context.Background(), prefix+"/"+id); err != nil {
			return nil, err
		}
		d, err = cl.lastAfter(id, t0, 300*time.Millisecond)
		if err != nil {
			return nil, err
		}
		remove = append(remove, d)
		fmt.Fprint(os.Stderr, ".")
	}
	if os.Getenv("BENCH_LOG") != "" {
		fmt.Fprintln(os.Stderr, w.logText())
	}
	return []string{
		add.row("add: etcd Put → first connection to the new node", "runtime, --wait 100ms:2s", "p50 ≤ 5 ms"),
		remove.row("remove: etcd Delete → last connection to the node", "runtime, --wait 100ms:2s", "p50 ≤ 5 ms"),
		put.row("(for reference: the etcd Put itself, until etcd acknowledged it)", "-", "-"),
	}, nil
}

// lanesUrgentDuringDrain: a session held on d1, d1 removed (it drains,
// --drain-timeout 20s); 200 ms later d2 turns Donor/Desynced: its last
// new connection after the change.
func lanesUrgentDuringDrain() ([]string, error) {
	w, err := start(noCheck, "--wait", "100ms:2s", "--drain-timeout", "20s", "--max-remove", "1")
	defer w.stop()
	if err != nil {
		return nil, err
	}
	var s sample
	for i := range max(*reps/4, 3) {
		d1, err := w.holdingBackend(fmt.Sprintf("h%d", i))
		if err != nil {
			return nil, err
		}
		d2, err := w.backend(fmt.Sprintf("u%d", i))
		if err != nil {
			return nil, err
		}
		if err := w.putJSON(d1.ID, d1.Port, "Synced"); err != nil {
			return nil, err
		}
		if err := w.putJSON(d2.ID, d2.Port, "Synced"); err != nil {
			return nil, err
		}
		cl := watchClients(w.front, 4)
		if _, err := cl.firstAfter(d2.ID, time.Time{}); err != nil {
			cl.close()
			return nil, fmt.Errorf("%s never served", d2.ID)
		}
		session, err := testbed.Hold(w.front, d1.ID, 100)
		if err != nil {
			cl.close()
			return nil, err
		}
		if _, err := w.cli.Delete(context.Background(), prefix+"/"+d1.ID); err != nil {
			cl.close()
			return nil, err
		}
		time.Sleep(200 * time.Millisecond) // d2 changes 200 ms into d1's drain
		t0 := time.Now()
		if err := w.putJSON(d2.ID, d2.Port, "Donor/Desynced"); err != nil {
			cl.close()
			return nil, err
		}
		d, err := cl.lastAfter(d2.ID, t0, 300*time.Millisecond)
		cl.close()
		if err != nil {
			return nil, err
		}
		if d1.Open() != 1 {
			return nil, fmt.Errorf("the drain of %s ended before the measurement: the rows did not overlap", d1.ID)
		}
		s = append(s, d)
		_ = session.Close()
		if _, err := w.cli.Delete(context.Background(), prefix+"/"+d2.ID); err != nil {
			return nil, err
		}
		fmt.Fprint(os.Stderr, ".")
	}
	return []string{s.row("urgent: node leaves Synced while another server drains → its last new connection", "runtime", "max ≤ 50 ms")}, nil
}

// lanesUrgentDuringLock: another holder has the fleet's reload lock, a
// reload is pending; a node turns Donor/Desynced: its last new
// connection after the change.
func lanesUrgentDuringLock() ([]string, error) {
	tmpl := noCheck + "{{ if exists \"/lbtest/extra\" }}\nlisten extra\n    bind {{ getv \"/lbtest/extra\" }}\n{{ end }}"
	w, err := start(tmpl, "--wait", "100ms:2s", "--prefix", prefix+",/lbtest", "--max-remove", "1")
	defer w.stop()
	if err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(w.cli, concurrency.WithTTL(30))
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	var s sample
	for i := range max(*reps/4, 3) {
		d2, err := w.backend(fmt.Sprintf("k%d", i))
		if err != nil {
			return nil, err
		}
		if err := w.putJSON(d2.ID, d2.Port, "Synced"); err != nil {
			return nil, err
		}
		cl := watchClients(w.front, 4)
		if _, err := cl.firstAfter(d2.ID, time.Time{}); err != nil {
			cl.close()
			return nil, fmt.Errorf("%s never served", d2.ID)
		}
		lock := concurrency.NewMutex(sess, "/haconfd/instances.reload-lock/0")
		if err := lock.Lock(context.Background()); err != nil {
			cl.close()
			return nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			cl.close()
			return nil, err
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		before := w.reloads()
		if _, err := w.cli.Put(context.Background(), "/lbtest/extra", addr); err != nil {
			cl.close()
			return nil, err
		}
		time.Sleep(300 * time.Millisecond) // the reload is pending on the lock by now (quiescence 100 ms)
		t0 := time.Now()
		if err := w.putJSON(d2.ID, d2.Port, "Donor/Desynced"); err != nil {
			cl.close()
			return nil, err
		}
		d, err := cl.lastAfter(d2.ID, t0, 300*time.Millisecond)
		cl.close()
		if err != nil {
			return nil, err
		}
		if w.reloads() != before {
			return nil, fmt.Errorf("reloaded while the lock was held elsewhere")
		}
		s = append(s, d)
		if err := lock.Unlock(context.Background()); err != nil {
			return nil, err
		}
		if err := testbed.Poll(30*time.Second, 10*time.Millisecond, func() bool { return w.reloads() > before }); err != nil {
			return nil, fmt.Errorf("the pending reload never ran once the lock was free")
		}
		if _, err := w.cli.Delete(context.Background(), "/lbtest/extra"); err != nil {
			return nil, err
		}
		if _, err := w.cli.Delete(context.Background(), prefix+"/"+d2.ID); err != nil {
			return nil, err
		}
		fmt.Fprint(os.Stderr, ".")
	}
	return []string{s.row("urgent: node leaves Synced while a reload waits for the fleet lock → its last new connection", "runtime", "max ≤ 50 ms")}, nil
}

// lanesAddWhileHeld: 6 servers, 4 removed at once (one held by
// --max-remove 0.5); then an add: Put → first connection.
func lanesAddWhileHeld() ([]string, error) {
	var s sample
	for range max(*reps/4, 3) {
		w, err := start(noCheck, "--wait", "100ms:2s", "--max-remove", "0.5", "--guard-hold", "1m")
		if err != nil {
			w.stop()
			return nil, err
		}
		var ids []string
		for k := range 5 { // with the anchor: 6 servers
			b, err := w.backend(fmt.Sprintf("g%d", k))
			if err != nil {
				w.stop()
				return nil, err
			}
			if err := w.putNode(b.ID, b.Port); err != nil {
				w.stop()
				return nil, err
			}
			ids = append(ids, b.ID)
		}
		cl := watchClients(w.front, 4)
		for _, id := range ids {
			if _, err := cl.firstAfter(id, time.Time{}); err != nil {
				cl.close()
				w.stop()
				return nil, fmt.Errorf("%s never served", id)
			}
		}
		txn := w.cli.Txn(context.Background())
		var ops []clientv3.Op
		for _, id := range ids[1:] {
			ops = append(ops, clientv3.OpDelete(prefix+"/"+id))
		}
		if _, err := txn.Then(ops...).Commit(); err != nil {
			cl.close()
			w.stop()
			return nil, err
		}
		if err := testbed.Poll(10*time.Second, 5*time.Millisecond, func() bool { return strings.Contains(w.logText(), "server held") }); err != nil {
			cl.close()
			w.stop()
			return nil, fmt.Errorf("no server held")
		}
		b, err := w.backend("added")
		if err != nil {
			cl.close()
			w.stop()
			return nil, err
		}
		t0 := time.Now()
		if err := w.putNode(b.ID, b.Port); err != nil {
			cl.close()
			w.stop()
			return nil, err
		}
		d, err := cl.firstAfter(b.ID, t0)
		cl.close()
		w.stop()
		if err != nil {
			return nil, fmt.Errorf("the add was not served during the hold")
		}
		s = append(s, d)
		fmt.Fprint(os.Stderr, ".")
	}
	return []string{s.row("add while removals are held (--max-remove 0.5): Put → first connection", "runtime", "≤ 50 ms")}, nil
}

// lanesStorms: 200 server changes, then 200 structural changes, written
// back to back: HAProxy processes started.
func lanesStorms() ([]string, error) {
	tmpl := strings.Replace(noCheck, "    timeout client 30s\n", "    timeout client {{ getv \"/lbtest/tc\" \"30s\" }}\n", 1)
	w, err := start(tmpl, "--wait", "100ms:2s", "--prefix", prefix+",/lbtest")
	defer w.stop()
	if err != nil {
		return nil, err
	}
	before := w.reloads()
	for i := range 200 {
		if _, err := w.cli.Put(context.Background(), fmt.Sprintf("%s/s%03d", prefix, i%20), fmt.Sprintf("127.0.0.1:%d", 20000+i)); err != nil {
			return nil, err
		}
	}
	if err := testbed.Poll(60*time.Second, 5*time.Millisecond, func() bool {
		b, _ := os.ReadFile(w.cfgPath)
		return strings.Contains(string(b), "server s019 127.0.0.1:20199")
	}); err != nil {
		return nil, fmt.Errorf("server storm never converged")
	}
	time.Sleep(2500 * time.Millisecond) // the longest quiescence: count any reload that follows
	serverStarts := w.reloads() - before
	before = w.reloads()
	for i := range 200 {
		if _, err := w.cli.Put(context.Background(), "/lbtest/tc", strconv.Itoa(30+i)+"s"); err != nil {
			return nil, err
		}
	}
	if err := testbed.Poll(60*time.Second, 5*time.Millisecond, func() bool {
		b, _ := os.ReadFile(w.cfgPath)
		return strings.Contains(string(b), "timeout client 229s")
	}); err != nil {
		return nil, fmt.Errorf("structural storm never converged")
	}
	time.Sleep(2500 * time.Millisecond)
	structStarts := w.reloads() - before
	return []string{
		one("storm of 200 server changes: HAProxy processes started", "runtime", strconv.Itoa(serverStarts), "0"),
		one("storm of 200 structural changes: HAProxy processes started", "reload", strconv.Itoa(structStarts), "≤ 2"),
	}, nil
}
