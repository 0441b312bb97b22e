package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// composeProject starts a compose project on free 127.0.0.1 ports and
// remembers it for the cleanup.
func (e *env) composeProject(project, example, override string) (compose, string, string, error) {
	mp, err1 := freePort()
	sp, err2 := freePort()
	if err := errors.Join(err1, err2); err != nil {
		return compose{}, "", "", err
	}
	c := compose{
		project: project,
		files:   []string{example, override},
		env:     []string{"MYSQL_PORT=" + mp, "STATUS_PORT=" + sp},
	}
	e.mu.Lock()
	e.projects = append(e.projects, c)
	e.mu.Unlock()
	return c, "127.0.0.1:" + mp, "127.0.0.1:" + sp, nil
}

// composeDown takes the project down and checks that nothing of it is left.
func (e *env) composeDown(ctx context.Context, scn string, c compose) error {
	return e.step(scn, "docker-compose down -v: nothing of the project left", func() (string, error) {
		if _, err := c.run(ctx, 3*time.Minute, "down", "-v", "--remove-orphans", "-t", "20"); err != nil {
			return "", err
		}
		var left []string
		for _, q := range [][]string{{"ps", "-aq"}, {"network", "ls", "-q"}, {"volume", "ls", "-q"}} {
			out, err := docker(ctx, 30*time.Second, append(q, "--filter", "label=com.docker.compose.project="+c.project)...)
			if err != nil {
				return "", err
			}
			if n := len(strings.Fields(out)); n > 0 {
				left = append(left, fmt.Sprintf("%d (docker %s)", n, strings.Join(q[:len(q)-1], " ")))
			}
		}
		if len(left) > 0 {
			return "", fmt.Errorf("left after down: %s", strings.Join(left, ", "))
		}
		e.mu.Lock()
		for i, p := range e.projects {
			if p.project == c.project {
				e.projects = append(e.projects[:i], e.projects[i+1:]...)
				break
			}
		}
		e.mu.Unlock()
		return "no container, network or volume of the project left", nil
	})
}

// sidecar: examples/compose/haproxy-sidecar.yml, haconfd next to an HAProxy
// container, reloading it with --reload-cmd.
func (e *env) sidecar(ctx context.Context) error {
	const scn = "sidecar"
	c, front, status, err := e.composeProject("hc-e2e-sc", "examples/compose/haproxy-sidecar.yml", "e2e/docker/compose/sidecar.override.yml")
	if err != nil {
		return err
	}
	network := c.project + "_default"
	hc, hap := c.container("haconfd"), c.container("haproxy")
	name := func(s string) string { return "hc-e2e-sc-" + s }
	var l *load
	defer func() {
		if l != nil {
			l.stop()
		}
	}()

	if err := e.step(scn, "docker-compose up -d: etcd, haconfd, haproxy", func() (string, error) {
		_, err := c.run(ctx, 5*time.Minute, "up", "-d", "--no-build")
		return fmt.Sprintf("front %s, status %s", front, status), err
	}); err != nil {
		return err
	}

	if err := e.step(scn, "b1, b2 registered: HAProxy starts on haconfd's first config", func() (string, error) {
		t := time.Now()
		for _, b := range []string{"b1", "b2"} {
			if err := e.run(ctx, name(b), "--network", network, imgBackend, "-id", b); err != nil {
				return "", err
			}
			a, err := ip(ctx, name(b), network)
			if err != nil {
				return "", err
			}
			if err := e.startRegister(ctx, name("reg-"+b), name(b), b, a); err != nil {
				return "", err
			}
		}
		if err := waitReady(ctx, status, 90*time.Second); err != nil {
			return "", err
		}
		l = newLoad(ctx, 4, tcpAsk(front))
		for _, b := range []string{"b1", "b2"} {
			if _, err := l.waitServed(ctx, b, t, 60*time.Second); err != nil {
				return "", err
			}
		}
		return fmt.Sprintf("both served %s after registering", time.Since(t).Round(100*time.Millisecond)), nil
	}); err != nil {
		return err
	}

	if err := e.step(scn, "shared: uid 10001 in both containers, one PID namespace", func() (string, error) {
		a, err := checkUID(ctx, hap, "10001", "haproxy")
		if err != nil {
			return "", err
		}
		b, err := checkUID(ctx, hc, "10001", "haconfd")
		if err != nil {
			return "", err
		}
		// haconfd's reload command signals the master by its pid: the
		// haconfd container must see it.
		pid, err := docker(ctx, 20*time.Second, "exec", hc, "cat", "/run/haproxy/haproxy.pid")
		if err != nil {
			return "", err
		}
		comm, err := docker(ctx, 20*time.Second, "exec", hc, "cat", "/proc/"+strings.TrimSpace(pid)+"/comm")
		if err != nil {
			return "", fmt.Errorf("the haconfd container does not see HAProxy's master (pid %s): %w", pid, err)
		}
		if comm != "haproxy" {
			return "", fmt.Errorf("pid %s in the haconfd container is %q, not haproxy", pid, comm)
		}
		return fmt.Sprintf("%s; %s; master pid %s seen from haconfd", a, b, strings.TrimSpace(pid)), nil
	}); err != nil {
		return err
	}

	if err := e.phase(scn, "add b3 by host name: a reload by --reload-cmd (SIGUSR2)", l, true, func() (string, error) {
		m0, err := readMetrics(status)
		if err != nil {
			return "", err
		}
		pid0, err := docker(ctx, 20*time.Second, "exec", hc, "cat", "/run/haproxy/haproxy.pid")
		if err != nil {
			return "", err
		}
		t := time.Now()
		if err := e.run(ctx, name("b3"), "--network", network, imgBackend, "-id", "b3"); err != nil {
			return "", err
		}
		// A host name, not an IP: the runtime API cannot add it (add server
		// does not resolve names), so haconfd reloads HAProxy, which resolves
		// it through Docker's DNS.
		if err := e.startRegister(ctx, name("reg-b3"), name("b3"), "b3", name("b3")); err != nil {
			return "", err
		}
		d, err := l.waitServed(ctx, "b3", t, 60*time.Second)
		if err != nil {
			return "", err
		}
		m1, err := waitMetrics(ctx, status, 20*time.Second, func(m metrics) bool { return m.reloads >= m0.reloads+1 })
		if err != nil {
			return "", fmt.Errorf("b3 is served but haconfd counted no reload: %w", err)
		}
		pid1, err := docker(ctx, 20*time.Second, "exec", hc, "cat", "/run/haproxy/haproxy.pid")
		if err != nil {
			return "", err
		}
		if pid0 != pid1 {
			return "", fmt.Errorf("HAProxy's master changed (%s → %s): restarted, not reloaded", pid0, pid1)
		}
		e.note("sidecar: b3 (host name) register start to first answer", "%s", d.Round(10*time.Millisecond))
		return fmt.Sprintf("b3 served %s after register started; reloads +%v, master pid %s kept", d.Round(10*time.Millisecond), m1.reloads-m0.reloads, pid0), nil
	}); err != nil {
		return err
	}
	if err := e.phase(scn, "steady after the reload", l, true, func() (string, error) {
		return "", pause(ctx, 2*time.Second)
	}); err != nil {
		return err
	}

	if err := e.phase(scn, "docker stop haconfd: exit 0, HAProxy serves on", l, true, func() (string, error) {
		h, err := holdConn(ctx, front)
		if err != nil {
			return "", err
		}
		defer h.close()
		t := time.Now()
		if _, err := docker(ctx, stopTimeout+20*time.Second, "stop", "-t", "10", hc); err != nil {
			return "", err
		}
		took := time.Since(t)
		code, err := docker(ctx, 20*time.Second, "inspect", "-f", "{{.State.ExitCode}}", hc)
		if err != nil {
			return "", err
		}
		if err := pause(ctx, 3*time.Second); err != nil {
			return "", err
		}
		hapState, err := docker(ctx, 20*time.Second, "inspect", "-f", "{{.State.Status}}", hap)
		if err != nil {
			return "", err
		}
		end, _, lastReply := h.result()
		e.note("sidecar: docker stop haconfd", "%s, exit %s; haproxy container %s", took.Round(10*time.Millisecond), code, hapState)
		switch {
		case code != "0" || took >= stopTimeout:
			return "", fmt.Errorf("docker stop took %s, exit %s: want exit 0 within %s", took.Round(10*time.Millisecond), code, stopTimeout)
		case hapState != "running":
			return "", fmt.Errorf("the haproxy container is %s after haconfd stopped, want running", hapState)
		case end != "" || time.Since(lastReply) > time.Second:
			return "", fmt.Errorf("a connection held through HAProxy ended (%q) when haconfd stopped", end)
		}
		return fmt.Sprintf("exit 0 after %s; HAProxy still running, a held connection still served", took.Round(10*time.Millisecond)), nil
	}); err != nil {
		return err
	}

	if err := e.phase(scn, "docker start haconfd; remove b3: runtime API again", l, true, func() (string, error) {
		if _, err := docker(ctx, 30*time.Second, "start", hc); err != nil {
			return "", err
		}
		if err := waitReady(ctx, status, 60*time.Second); err != nil {
			return "", err
		}
		m0, err := readMetrics(status)
		if err != nil {
			return "", err
		}
		t := time.Now()
		if _, err := docker(ctx, 30*time.Second, "stop", name("reg-b3")); err != nil {
			return "", err
		}
		gone, err := l.waitGone(ctx, "b3", t, 2*time.Second, 30*time.Second)
		if err != nil {
			return "", err
		}
		m1, err := waitMetrics(ctx, status, 20*time.Second, func(m metrics) bool { return m.runtime >= m0.runtime+1 })
		if err != nil {
			return "", err
		}
		if m1.reloads != m0.reloads {
			return "", fmt.Errorf("want a runtime API apply and no reload: reloads %v → %v, runtime applies %v → %v", m0.reloads, m1.reloads, m0.runtime, m1.runtime)
		}
		return fmt.Sprintf("last answer from b3 %s after its register stopped; runtime applies +%v, reloads +0", gone.Round(10*time.Millisecond), m1.runtime-m0.runtime), nil
	}); err != nil {
		return err
	}
	l.stop()
	l = nil

	for _, b := range []string{"reg-b1", "reg-b2", "reg-b3", "b1", "b2", "b3"} {
		if _, err := docker(ctx, time.Minute, "rm", "-f", "-v", name(b)); err != nil {
			return err
		}
	}
	return e.composeDown(ctx, scn, c)
}
