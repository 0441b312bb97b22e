package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// extendedSteps are the steps of issue 15: every signal, graceful
// maintenance, apply lag, writers by priority on two load balancers, the
// last resort, severalnines' layout.
func (e *env) extendedSteps(ctx context.Context, cl *client) []step {
	n1, n2, n3 := e.nodes[0], e.nodes[1], e.nodes[2]
	l1, l2, l3 := e.lbs[0], e.lbs[1], e.lbs[2]
	writers := []*lb{l1, l2}
	return []step{
		{name: "writers by priority on two load balancers", do: func() error {
			// node1 bootstrapped the cluster and was the writer while it
			// was alone (a writer keeps the writes while it stays in
			// rotation); the crash of node1 gave them to node3, priority
			// 1. node2 has priority 0: never a writer.
			if err := e.sameWriter(ctx, writers, "node3", 10*time.Second); err != nil {
				return err
			}
			for _, l := range writers {
				if err := e.neverWriter(l, "node2"); err != nil {
					return err
				}
			}
			e.note("writer on lb1 and lb2 (priorities node3=1 node1=2 node2=0)", "node3, node3")
			return pause(ctx, time.Second)
		}},
		{name: "reject queries on node1 (wsrep_reject_queries=ALL)", errorsOK: true, do: func() error {
			held, err := hold(ctx, l1.front, n1.name)
			if err != nil {
				return err
			}
			defer held.Close()
			e.event(n1.name, "reject")
			if _, err := n1.db.ExecContext(ctx, "SET GLOBAL wsrep_reject_queries=ALL"); err != nil {
				return fmt.Errorf("node1 reject queries: %w", err)
			}
			if err := e.waitReason(ctx, l1, n1.name, "wsrep_reject_queries ALL", 5*time.Second); err != nil {
				return err
			}
			if err := pause(ctx, 2*time.Second); err != nil {
				return err
			}
			t0 := e.event(n1.name, "unreject")
			if _, err := n1.db.ExecContext(ctx, "SET GLOBAL wsrep_reject_queries=NONE"); err != nil {
				return fmt.Errorf("node1 reject queries off: %w", err)
			}
			// HAProxy drained node1, it did not cut the connection.
			if err := held.PingContext(ctx); err != nil {
				return fmt.Errorf("the connection open on node1 did not survive its drain: %w", err)
			}
			e.note("reject queries: the connection open on node1", "still open after the drain")
			if err := cl.waitServed(ctx, n1.name, t0, 10*time.Second); err != nil {
				return err
			}
			return pause(ctx, time.Second)
		}},
		{name: "drain node2 (haconfd drain)", do: func() error {
			held, err := hold(ctx, l1.front, n2.name)
			if err != nil {
				return err
			}
			defer held.Close()
			e.event(n2.name, "drain")
			out, err := e.haconfdCmd(ctx, "drain", n2.name, "--reason", "e2e: planned maintenance", "--by", "e2e@test")
			if err != nil {
				return err
			}
			logf("haconfd drain: %s", strings.TrimSpace(out))
			if err := e.waitReason(ctx, l2, n2.name, "drained by an operator (by e2e@test", 5*time.Second); err != nil {
				return err
			}
			// Synced and drained: its open connection keeps working.
			for i := 0; i < 10; i++ {
				var name string
				if err := held.QueryRowContext(ctx, "SELECT @@wsrep_node_name").Scan(&name); err != nil || name != n2.name {
					return fmt.Errorf("the connection open on the drained node2 failed: %q %v", name, err)
				}
				if err := pause(ctx, 200*time.Millisecond); err != nil {
					return err
				}
			}
			e.note("drain: the connection open on node2", "10 queries answered while drained")
			return nil
		}},
		{name: "undrain node2", do: func() error {
			t0 := e.event(n2.name, "undrain")
			out, err := e.haconfdCmd(ctx, "undrain", n2.name)
			if err != nil {
				return err
			}
			logf("haconfd undrain: %s", strings.TrimSpace(out))
			if err := cl.waitServed(ctx, n2.name, t0, 10*time.Second); err != nil {
				return err
			}
			return pause(ctx, time.Second)
		}},
		{name: "lag: FLUSH TABLES WITH READ LOCK on node1", do: func() error {
			conn, err := n1.db.Conn(ctx)
			if err != nil {
				return err
			}
			defer conn.Close()
			e.event(n1.name, "ftwrl")
			if _, err := conn.ExecContext(ctx, "FLUSH TABLES WITH READ LOCK"); err != nil {
				return fmt.Errorf("node1 FTWRL: %w", err)
			}
			seen, reasons, err := e.waitLag(ctx, l1, n1, 20*time.Second)
			unlockAt := e.event(n1.name, "unlock")
			if _, uerr := conn.ExecContext(context.WithoutCancel(ctx), "UNLOCK TABLES"); uerr != nil && err == nil {
				err = fmt.Errorf("node1 UNLOCK TABLES: %w", uerr)
			}
			if err != nil {
				return err
			}
			e.note("lag: node1's recv queue under FTWRL (max seen)", "%d; reasons: %s", seen, reasons)
			if err := cl.waitServed(ctx, n1.name, unlockAt, 30*time.Second); err != nil {
				return err
			}
			e.note("lag: node1 serving again after UNLOCK TABLES", "%s", time.Since(unlockAt).Round(10*time.Millisecond))
			return pause(ctx, time.Second)
		}},
		{name: "stop the writer (node3)", errorsOK: true, do: func() error {
			var held []*sql.Conn
			for _, l := range writers {
				c, err := hold(ctx, l.writer, n3.name)
				if err != nil {
					return fmt.Errorf("%s writer port: %w", l.name, err)
				}
				defer c.Close()
				held = append(held, c)
			}
			t0 := e.signalNode(n3, syscall.SIGTERM)
			if err := e.sameWriter(ctx, writers, "node1", 10*time.Second); err != nil {
				return err
			}
			e.note("writer stopped: new writer on lb1 and lb2", "node1, node1 (%s after SIGTERM)", time.Since(t0).Round(10*time.Millisecond))
			n3.proc.wait(60 * time.Second)
			for i, c := range held {
				if err := c.PingContext(ctx); err == nil {
					return fmt.Errorf("%s: the session on the stopped writer is still open", writers[i].name)
				}
			}
			e.note("writer stopped: its sessions on lb1 and lb2", "ended")
			return pause(ctx, 2*time.Second)
		}},
		{name: "restart node3: the writer stays (no failback)", do: func() error {
			t0 := time.Now()
			if err := e.startNode(ctx, n3, false); err != nil {
				return err
			}
			if err := e.waitState(ctx, n3, "Synced", 90*time.Second); err != nil {
				return err
			}
			if err := cl.waitServed(ctx, n3.name, t0, 30*time.Second); err != nil {
				return err
			}
			if err := pause(ctx, time.Second); err != nil {
				return err
			}
			if err := e.sameWriter(ctx, writers, "node1", time.Second); err != nil {
				return err
			}
			e.note("node3 back, preferred: writer on lb1 and lb2", "node1, node1 (sticky)")
			return nil
		}},
		{name: "a load balancer started now (lb4) takes the fleet's writer", do: func() error {
			l4 := e.lbs[3]
			if err := e.startLB(3, l4); err != nil {
				return err
			}
			if err := e.waitUp(ctx, l4, 3, 30*time.Second); err != nil {
				return err
			}
			writers = append(writers, l4)
			if err := e.sameWriter(ctx, writers, "node1", 5*time.Second); err != nil {
				return err
			}
			e.note("lb4 started after the failover: writer", "node1 on lb1, lb2, lb4 (the fleet's; node3 is preferred)")
			return nil
		}},
		{name: "stop node1 and node2", errorsOK: true, do: func() error {
			for _, n := range []*node{n1, n2} {
				if err := e.stopNode(n, syscall.SIGTERM); err != nil {
					return err
				}
			}
			return pause(ctx, 3*time.Second)
		}},
		{name: "desync node3, the last node (last resort)", lastResort: true, do: func() error {
			if _, err := n3.db.ExecContext(ctx, "SET GLOBAL wsrep_desync=ON"); err != nil {
				return fmt.Errorf("desync node3: %w", err)
			}
			if err := e.waitState(ctx, n3, "Donor/Desynced", 30*time.Second); err != nil {
				return err
			}
			t0 := time.Now()
			if err := pause(ctx, 3*time.Second); err != nil {
				return err
			}
			if err := cl.waitServed(ctx, n3.name, t0, 5*time.Second); err != nil {
				return fmt.Errorf("the last node, Donor/Desynced, is not served: %w", err)
			}
			return e.sameWriter(ctx, writers, "node3", 5*time.Second)
		}},
		{name: "resync node3; restart node1 and node2", do: func() error {
			if _, err := n3.db.ExecContext(ctx, "SET GLOBAL wsrep_desync=OFF"); err != nil {
				return fmt.Errorf("resync node3: %w", err)
			}
			for _, n := range []*node{n1, n2} {
				t0 := time.Now()
				if err := e.startNode(ctx, n, false); err != nil {
					return err
				}
				if err := e.waitState(ctx, n, "Synced", 90*time.Second); err != nil {
					return err
				}
				if err := cl.waitServed(ctx, n.name, t0, 30*time.Second); err != nil {
					return err
				}
			}
			return pause(ctx, 2*time.Second)
		}},
		{name: "severalnines layout through lb3", do: func() error {
			if err := e.waitUp(ctx, l3, 3, 30*time.Second); err != nil {
				return err
			}
			seen := map[string]int{}
			for i := 0; i < 30; i++ {
				name, err := queryVia(ctx, l3.front)
				if err != nil {
					return fmt.Errorf("lb3 (/galera/%s/<ip>/...): %w", clusterName, err)
				}
				seen[name]++
			}
			if len(seen) < 2 {
				return fmt.Errorf("lb3 served by %v only", seen)
			}
			e.note("severalnines layout: 30 queries through lb3", "%s", fmtCounts(seen))
			return e.notifyRecords(ctx)
		}},
	}
}

// queryVia opens a new connection through addr and returns the node that
// answers.
func queryVia(ctx context.Context, addr string) (string, error) {
	c, err := hold(ctx, addr, "")
	if err != nil {
		return "", err
	}
	defer c.Close()
	var name string
	err = c.QueryRowContext(ctx, "SELECT @@wsrep_node_name").Scan(&name)
	return name, err
}

// hold opens connections through addr until one lands on node ("": any)
// and returns it, open.
func hold(ctx context.Context, addr, node string) (*sql.Conn, error) {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = appUser, appPassword, "tcp", addr, "e2e"
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 3*time.Second, 5*time.Second, 5*time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxIdleConns(-1)
	var last error
	for i := 0; i < 200; i++ {
		c, err := db.Conn(ctx)
		if err != nil {
			last = err
			_ = pause(ctx, 20*time.Millisecond)
			continue
		}
		var name string
		if err := c.QueryRowContext(ctx, "SELECT @@wsrep_node_name").Scan(&name); err != nil {
			last = err
			c.Close()
			continue
		}
		if node == "" || name == node {
			return c, nil // db stays open while c is (it is closed with the process)
		}
		last = fmt.Errorf("landed on %s", name)
		c.Close()
	}
	return nil, fmt.Errorf("no connection to %s through %s: %v", orAny(node), addr, last)
}

func orAny(s string) string {
	if s == "" {
		return "any node"
	}
	return s
}

// sameWriter waits until a new connection to every lb's writer port is
// answered by want.
func (e *env) sameWriter(ctx context.Context, lbs []*lb, want string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		var got []string
		ok := true
		for _, l := range lbs {
			name, err := queryVia(ctx, l.writer)
			if err != nil {
				name = "error: " + err.Error()
			}
			got = append(got, l.name+"="+name)
			ok = ok && name == want
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("writer ports answered by %v, want %s everywhere", got, want)
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// serverView is /servers' entry (internal/app.ServerView).
type serverView struct {
	Section    string            `json:"section"`
	Server     string            `json:"server"`
	Weight     int               `json:"weight"`
	InRotation bool              `json:"in_rotation"`
	Writer     bool              `json:"writer"`
	Reasons    []string          `json:"reasons"`
	Signals    map[string]string `json:"signals"`
}

func (e *env) servers(l *lb) ([]serverView, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + l.listen + "/servers")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var vs []serverView
	if err := json.Unmarshal(b, &vs); err != nil {
		return nil, fmt.Errorf("/servers: %w: %.200s", err, b)
	}
	return vs, nil
}

// neverWriter checks that node is not in rotation in l's writer section.
func (e *env) neverWriter(l *lb, node string) error {
	vs, err := e.servers(l)
	if err != nil {
		return err
	}
	for _, v := range vs {
		if v.Section == "galera-writer" && v.Server == node && (v.InRotation || v.Writer) {
			return fmt.Errorf("%s: %s (priority 0) takes writes: %+v", l.name, node, v)
		}
	}
	return nil
}

// waitReason waits until l's /servers gives node a reason containing part.
func (e *env) waitReason(ctx context.Context, l *lb, node, part string, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last []string
	for {
		vs, err := e.servers(l)
		if err == nil {
			for _, v := range vs {
				if v.Section == "galera" && v.Server == node {
					last = v.Reasons
					if strings.Contains(strings.Join(v.Reasons, "; "), part) {
						return nil
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s /servers: %s has no reason %q within %s (last %q, err %v)", l.name, node, part, d, last, err)
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitLag waits until l drains n for its recv queue, and returns the
// largest queue seen and the reasons then.
func (e *env) waitLag(ctx context.Context, l *lb, n *node, d time.Duration) (int, string, error) {
	deadline := time.Now().Add(d)
	maxQ := 0
	var last []string
	for {
		var name string
		var q int
		if err := n.db.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'wsrep_local_recv_queue'").Scan(&name, &q); err == nil {
			maxQ = max(maxQ, q)
		}
		vs, err := e.servers(l)
		if err == nil {
			for _, v := range vs {
				if v.Section == "galera" && v.Server == n.name {
					last = v.Reasons
					if strings.Contains(strings.Join(v.Reasons, "; "), "wsrep_local_recv_queue") && !v.InRotation {
						return maxQ, strings.Join(v.Reasons, "; "), nil
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return maxQ, "", fmt.Errorf("%s: %s not drained for its recv queue within %s (max queue seen %d, reasons %q)", l.name, n.name, d, maxQ, last)
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return maxQ, "", err
		}
	}
}

// haconfdCmd runs a one-shot haconfd command against the test's etcd.
func (e *env) haconfdCmd(ctx context.Context, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	args = append(args, "--etcd-endpoints", e.etcdURL)
	out, err := exec.CommandContext(cctx, e.haconfd, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("haconfd %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// severalnines writes n's state the way severalnines' etcd-based Galera
// image does: every second, /galera/<cluster>/<ip>/wsrep_local_state_comment
// and /wsrep_last_committed with a 10s TTL; nothing while MySQL is down.
func (e *env) severalnines(n *node) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{name: n.name + "-severalnines", done: make(chan struct{})}
	go func() {
		defer close(p.done)
		base := "/galera/" + clusterName + "/" + n.ip + "/"
		for ctx.Err() == nil {
			var name, comment, committed string
			q1 := n.db.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'wsrep_local_state_comment'").Scan(&name, &comment)
			q2 := n.db.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'wsrep_last_committed'").Scan(&name, &committed)
			if q1 == nil && q2 == nil {
				if l, err := e.etcd.Grant(ctx, 10); err == nil {
					_, _ = e.etcd.Txn(ctx).Then(
						clientv3.OpPut(base+"wsrep_local_state_comment", comment, clientv3.WithLease(l.ID)),
						clientv3.OpPut(base+"wsrep_last_committed", committed, clientv3.WithLease(l.ID))).Commit()
				}
			}
			_ = pause(ctx, time.Second)
		}
	}()
	p.stopFn = cancel
	e.procs = append(e.procs, p)
}

// notifyRecords checks that Galera ran haconfd notify on every node.
func (e *env) notifyRecords(ctx context.Context) error {
	var got []string
	for _, n := range e.nodes {
		resp, err := e.etcd.Get(ctx, "/components/galera/"+n.name+"/wsrep_notify")
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("no wsrep_notify record for %s: is wsrep_notify_cmd run? (see %s)", n.name, n.dir+"/error.log")
		}
		var rec struct {
			Status  string `json:"status"`
			Members []any  `json:"members"`
		}
		if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
			return err
		}
		got = append(got, fmt.Sprintf("%s=%s/%d members", n.name, rec.Status, len(rec.Members)))
	}
	slices.Sort(got)
	e.note("wsrep_notify records (status/view)", "%s", strings.Join(got, " "))
	return nil
}

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		return err
	}
	return os.Chmod(to, mode)
}
