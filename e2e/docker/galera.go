package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// The example's credentials and addresses (examples/compose/docker-compose.yml).
const (
	galeraRootPassword = "galera-root"
	appUser            = "app"
	appPassword        = "app-secret"
	appDB              = "app"
)

var galeraNodes = []struct{ service, addr string }{
	{"galera1", "172.28.0.11"}, {"galera2", "172.28.0.12"}, {"galera3", "172.28.0.13"},
}

// wsrep reads a node's wsrep status through docker exec (the host does not
// reach the nodes: only HAProxy's published port).
func wsrep(ctx context.Context, container string) (state, size string, err error) {
	out, err := docker(ctx, 20*time.Second, "exec", container, "mariadb", "-uroot", "-p"+galeraRootPassword, "-N", "-B", "-e",
		"SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state_comment', 'wsrep_cluster_size')")
	if err != nil {
		return "", "", err
	}
	for _, l := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(l, "\t")
		switch k {
		case "wsrep_local_state_comment":
			state = v
		case "wsrep_cluster_size":
			size = v
		}
	}
	return state, size, nil
}

// compose: examples/compose/docker-compose.yml with three real MariaDB
// Galera nodes.
func (e *env) compose(ctx context.Context) error {
	const scn = "compose"
	c, front, status, err := e.composeProject("hc-e2e-gal", "examples/compose/docker-compose.yml", "e2e/docker/compose/galera.override.yml")
	if err != nil {
		return err
	}
	var l *load
	var pool *sql.DB
	defer func() {
		if l != nil {
			l.stop()
		}
		if pool != nil {
			pool.Close()
		}
	}()

	if err := e.step(scn, "docker-compose up -d: etcd, haconfd, galera1 healthy, the rest", func() (string, error) {
		_, err := c.run(ctx, 8*time.Minute, "up", "-d", "--no-build")
		return fmt.Sprintf("front %s, status %s", front, status), err
	}); err != nil {
		return err
	}

	if err := e.step(scn, "3 Galera nodes Synced (two joined by SST)", func() (string, error) {
		last := map[string]string{}
		err := poll(ctx, 6*time.Minute, time.Second, func() bool {
			all := true
			for _, n := range galeraNodes {
				st, size, err := wsrep(ctx, c.container(n.service))
				s := st + "/" + size
				if err != nil {
					s = "down"
				}
				if s != last[n.service] {
					logf("%s: %s (cluster size %s)", n.service, st, size)
					last[n.service] = s
				}
				all = all && st == "Synced" && size == "3"
			}
			return all
		})
		if err != nil {
			return "", fmt.Errorf("cluster not Synced with 3 nodes: %v (last %v)", err, last)
		}
		return "", nil
	}); err != nil {
		return err
	}

	if err := e.step(scn, "SQL through HAProxy answered by each node", func() (string, error) {
		t := time.Now()
		if err := waitStatus(ctx, status, 2*time.Minute, "3 servers live", func(s haconfdStatus) bool {
			return s.Servers == 3 && s.Applied >= s.Revision && s.Held == ""
		}); err != nil {
			return "", err
		}
		op, p, err := sqlAsk(front, appUser, appPassword, appDB)
		if err != nil {
			return "", err
		}
		pool = p // the load's, closed after it
		if err := poll(ctx, time.Minute, time.Second, func() bool {
			_, err := pool.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS e2e (id BIGINT AUTO_INCREMENT PRIMARY KEY, node VARCHAR(32), at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))")
			if err != nil {
				logf("create table through HAProxy: %v", err)
			}
			return err == nil
		}); err != nil {
			return "", fmt.Errorf("create table through HAProxy: %w", err)
		}
		l = newLoad(ctx, 3, op)
		for _, n := range galeraNodes {
			if _, err := l.waitServed(ctx, n.addr, t, time.Minute); err != nil {
				return "", fmt.Errorf("%s: %w", n.service, err)
			}
		}
		return fmt.Sprintf("every node answered %s after the cluster was Synced", time.Since(t).Round(100*time.Millisecond)), nil
	}); err != nil {
		return err
	}

	if err := e.phase(scn, "SQL through HAProxy, 3 nodes", l, true, func() (string, error) {
		return "", pause(ctx, 3*time.Second)
	}); err != nil {
		return err
	}

	if err := e.phase(scn, "docker-compose stop galera3: drained from HAProxy", l, false, func() (string, error) {
		t := time.Now()
		if _, err := c.run(ctx, 2*time.Minute, "stop", "galera3"); err != nil {
			return "", err
		}
		stopped := time.Since(t)
		gone, err := l.waitGone(ctx, "172.28.0.13", t, 3*time.Second, time.Minute)
		if err != nil {
			return "", err
		}
		if err := waitStatus(ctx, status, time.Minute, "galera3 out (2 servers, or disabled)", func(s haconfdStatus) bool {
			return s.Applied >= s.Revision
		}); err != nil {
			return "", err
		}
		e.note("compose: stop galera3: docker-compose stop took / last answer", "%s / %s", stopped.Round(100*time.Millisecond), gone.Round(10*time.Millisecond))
		return fmt.Sprintf("stop took %s; last answer from galera3 %s after it began", stopped.Round(100*time.Millisecond), gone.Round(10*time.Millisecond)), nil
	}); err != nil {
		return err
	}
	if err := e.phase(scn, "SQL through HAProxy, 2 nodes", l, true, func() (string, error) {
		t := time.Now()
		if err := pause(ctx, 3*time.Second); err != nil {
			return "", err
		}
		if l.servedSince("172.28.0.13", t) {
			return "", fmt.Errorf("galera3 answered after it was stopped")
		}
		return "", nil
	}); err != nil {
		return err
	}
	l.stop()
	if err := e.step(scn, "rows written through HAProxy are all there", func() (string, error) {
		var n int
		if err := pool.QueryRowContext(ctx, "SELECT COUNT(*) FROM e2e").Scan(&n); err != nil {
			return "", err
		}
		ok := l.counts().ok
		if n < ok {
			return "", fmt.Errorf("%d rows, but %d inserts succeeded", n, ok)
		}
		return fmt.Sprintf("%d rows for %d acknowledged inserts (%s)", n, ok, l.served()), nil
	}); err != nil {
		return err
	}
	l = nil
	return e.composeDown(ctx, scn, c)
}
