package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Promises of the Dockerfile and the README that the supervise scenario
// holds the image to.
const (
	// HEALTHCHECK --interval=10s --retries=3 --timeout=5s: unhealthy 20-30 s
	// after etcd is gone, plus a probe's timeout.
	unhealthyBound = 35 * time.Second
	// Docker's default stop timeout; haconfd soft-stops HAProxy (5 s for
	// open connections) and exits 0 before it.
	stopTimeout = 10 * time.Second
	// A soft stop keeps open connections served at least this long after
	// `docker stop` (a killed HAProxy ends them at once).
	softStopMin = 2 * time.Second
	registerTTL = "5s"
)

// haconfdStatus is the part of /status the scenarios read.
type haconfdStatus struct {
	Revision int64  `json:"revision"`
	Applied  int64  `json:"applied"`
	Servers  int    `json:"servers"`
	Held     string `json:"held"`
}

func readStatus(addr string) (haconfdStatus, error) {
	var s haconfdStatus
	code, body, err := httpGet(addr, "/status")
	if err != nil {
		return s, err
	}
	if code != 200 {
		return s, fmt.Errorf("/status: %d", code)
	}
	return s, json.Unmarshal([]byte(body), &s)
}

// waitStatus polls /status until cond holds.
func waitStatus(ctx context.Context, addr string, bound time.Duration, what string, cond func(haconfdStatus) bool) error {
	var last haconfdStatus
	var lastErr error
	if err := poll(ctx, bound, 200*time.Millisecond, func() bool {
		last, lastErr = readStatus(addr)
		return lastErr == nil && cond(last)
	}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("haconfd /status: not %s within %s (last %+v, err %v)", what, bound, last, lastErr)
	}
	return nil
}

// startRegister runs `haconfd register` for a backend, in the backend's
// network namespace (like the compose example's sidecars): it goes when
// the backend's network goes.
func (e *env) startRegister(ctx context.Context, name, backend, id, addr string) error {
	return e.run(ctx, name, "--no-healthcheck", "--network", "container:"+backend,
		"--entrypoint", "/usr/bin/tini", imgHaconfd, "--", "/usr/local/bin/haconfd", "register",
		"--etcd-endpoints", "http://etcd:2379", "--id", id, "--ip", addr, "--port", "3306", "--ttl", registerTTL)
}

// supervise: the image's default mode, haconfd running HAProxy inside.
func (e *env) supervise(ctx context.Context) error {
	const scn = "supervise"
	const network = "hc-e2e-sup"
	name := func(s string) string { return "hc-e2e-sup-" + s }
	hc := name("haconfd")
	var front, status string
	var l *load
	defer func() {
		if l != nil {
			l.stop()
		}
	}()
	ips := map[string]string{}
	var hcStarted time.Time

	err := e.step(scn, "up: network, etcd, 3 backends, register b1, haconfd; /readyz 200", func() (string, error) {
		mp, err1 := freePort()
		sp, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			return "", err
		}
		front, status = "127.0.0.1:"+mp, "127.0.0.1:"+sp
		if _, err := docker(ctx, time.Minute, "network", "create", "--label", label+"=1", network); err != nil {
			return "", err
		}
		if err := e.run(ctx, name("etcd"), "--network", network, "--network-alias", "etcd", imgEtcd,
			"etcd", "--name", "etcd", "--data-dir", "/var/lib/etcd-e2e",
			"--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://etcd:2379"); err != nil {
			return "", err
		}
		for _, b := range []string{"b1", "b2", "b3"} {
			if err := e.run(ctx, name(b), "--network", network, imgBackend, "-id", b, "-check", ""); err != nil {
				return "", err
			}
			a, err := ip(ctx, name(b), network)
			if err != nil {
				return "", err
			}
			ips[b] = a
		}
		if err := e.startRegister(ctx, name("reg-b1"), name("b1"), "b1", ips["b1"]); err != nil {
			return "", err
		}
		// The image's ENTRYPOINT and ENV; only what this deployment needs.
		hcStarted = time.Now()
		if err := e.run(ctx, hc, "--network", network, "-p", front+":3306", "-p", status+":9480", imgHaconfd,
			"--etcd-endpoints", "http://etcd:2379", "--check-port", "none", "--wait", "100ms:1s"); err != nil {
			return "", err
		}
		if err := waitReady(ctx, status, 90*time.Second); err != nil {
			return "", err
		}
		return fmt.Sprintf("front %s, status %s", front, status), nil
	})
	if err != nil {
		return err
	}

	if err := e.step(scn, "image: tini is PID 1, haconfd and HAProxy run as uid 10001", func() (string, error) {
		pid1, err := docker(ctx, 20*time.Second, "exec", hc, "cat", "/proc/1/comm")
		if err != nil {
			return "", err
		}
		if pid1 != "tini" {
			return "", fmt.Errorf("PID 1 is %q, want tini", pid1)
		}
		who, err := checkUID(ctx, hc, "10001", "tini", "haconfd", "haproxy")
		if err != nil {
			return "", err
		}
		return "PID 1 tini; " + who, nil
	}); err != nil {
		return err
	}

	if err := e.step(scn, "HEALTHCHECK healthy", func() (string, error) {
		if _, err := waitHealth(ctx, hc, "healthy", 60*time.Second); err != nil {
			return "", err
		}
		d := time.Since(hcStarted)
		e.note("supervise: healthy after the container started", "%s", d.Round(100*time.Millisecond))
		return fmt.Sprintf("healthy %s after start", d.Round(100*time.Millisecond)), nil
	}); err != nil {
		return err
	}

	l = newLoad(ctx, 4, tcpAsk(front))
	if _, err := l.waitServed(ctx, "b1", time.Now(), 15*time.Second); err != nil {
		return err
	}

	if err := e.phase(scn, "add b2, b3 (register): live through the runtime API", l, true, func() (string, error) {
		m0, err := readMetrics(status)
		if err != nil {
			return "", err
		}
		var notes []string
		for _, b := range []string{"b2", "b3"} {
			t := time.Now()
			if err := e.startRegister(ctx, name("reg-"+b), name(b), b, ips[b]); err != nil {
				return "", err
			}
			d, err := l.waitServed(ctx, b, t, 30*time.Second)
			if err != nil {
				return "", err
			}
			notes = append(notes, fmt.Sprintf("%s serving %s after register started", b, d.Round(10*time.Millisecond)))
			e.note("supervise: "+b+" added, register start to first answer", "%s", d.Round(10*time.Millisecond))
		}
		m1, err := waitMetrics(ctx, status, 20*time.Second, func(m metrics) bool { return m.runtime >= m0.runtime+1 })
		if err != nil {
			return "", err
		}
		if m1.reloads != m0.reloads {
			return "", fmt.Errorf("want runtime API applies and no reload: reloads %v → %v, runtime applies %v → %v", m0.reloads, m1.reloads, m0.runtime, m1.runtime)
		}
		return strings.Join(notes, "; ") + fmt.Sprintf("; runtime applies +%v, reloads +0", m1.runtime-m0.runtime), nil
	}); err != nil {
		return err
	}

	if err := e.phase(scn, "remove b3 (docker stop its register), add it back: runtime API", l, true, func() (string, error) {
		m0, err := readMetrics(status)
		if err != nil {
			return "", err
		}
		t := time.Now()
		if _, err := docker(ctx, 30*time.Second, "stop", name("reg-b3")); err != nil {
			return "", err
		}
		if err := waitStatus(ctx, status, 20*time.Second, "2 servers", func(s haconfdStatus) bool { return s.Servers == 2 }); err != nil {
			return "", err
		}
		gone, err := l.waitGone(ctx, "b3", t, 2*time.Second, 30*time.Second)
		if err != nil {
			return "", err
		}
		t2 := time.Now()
		if _, err := docker(ctx, 30*time.Second, "start", name("reg-b3")); err != nil {
			return "", err
		}
		back, err := l.waitServed(ctx, "b3", t2, 30*time.Second)
		if err != nil {
			return "", err
		}
		m1, err := waitMetrics(ctx, status, 20*time.Second, func(m metrics) bool { return m.runtime >= m0.runtime+2 })
		if err != nil {
			return "", err
		}
		if m1.reloads != m0.reloads {
			return "", fmt.Errorf("want runtime API applies and no reload: reloads %v → %v, runtime applies %v → %v", m0.reloads, m1.reloads, m0.runtime, m1.runtime)
		}
		e.note("supervise: b3 removed, register stop to its last answer", "%s", gone.Round(10*time.Millisecond))
		e.note("supervise: b3 back, register start to first answer", "%s", back.Round(10*time.Millisecond))
		return fmt.Sprintf("last answer from b3 %s after the stop, back %s after the start; runtime applies +%v, reloads +0",
			gone.Round(10*time.Millisecond), back.Round(10*time.Millisecond), m1.runtime-m0.runtime), nil
	}); err != nil {
		return err
	}

	if err := e.phase(scn, "etcd stopped: HAProxy serves on, HEALTHCHECK unhealthy", l, true, func() (string, error) {
		t := time.Now()
		if _, err := docker(ctx, 30*time.Second, "stop", "-t", "5", name("etcd")); err != nil {
			return "", err
		}
		d, err := waitHealth(ctx, hc, "unhealthy", unhealthyBound)
		if err != nil {
			return "", err
		}
		d = time.Since(t)
		for _, b := range []string{"b1", "b2", "b3"} {
			if !l.servedSince(b, t.Add(d/2)) {
				return "", fmt.Errorf("%s not served while etcd was away", b)
			}
		}
		e.note("supervise: unhealthy after etcd stopped (Dockerfile: 20-30 s)", "%s", d.Round(100*time.Millisecond))
		return fmt.Sprintf("unhealthy %s after etcd stopped; b1-b3 served throughout", d.Round(100*time.Millisecond)), nil
	}); err != nil {
		return err
	}

	if err := e.phase(scn, "etcd started again: /readyz 200, HEALTHCHECK healthy", l, true, func() (string, error) {
		t := time.Now()
		if _, err := docker(ctx, 30*time.Second, "start", name("etcd")); err != nil {
			return "", err
		}
		if err := waitReady(ctx, status, 60*time.Second); err != nil {
			return "", err
		}
		ready := time.Since(t)
		if _, err := waitHealth(ctx, hc, "healthy", 30*time.Second); err != nil {
			return "", err
		}
		if err := waitStatus(ctx, status, 30*time.Second, "3 servers", func(s haconfdStatus) bool { return s.Servers == 3 }); err != nil {
			return "", err
		}
		return fmt.Sprintf("ready %s, healthy %s after etcd started", ready.Round(100*time.Millisecond), time.Since(t).Round(100*time.Millisecond)), nil
	}); err != nil {
		return err
	}

	if err := e.phase(scn, "docker stop haconfd: exit 0, HAProxy soft-stopped", l, false, func() (string, error) {
		return e.stopHaconfd(ctx, hc, front)
	}); err != nil {
		return err
	}

	if err := e.phase(scn, "docker start haconfd: serving b1-b3 again", l, false, func() (string, error) {
		t := time.Now()
		if _, err := docker(ctx, 30*time.Second, "start", hc); err != nil {
			return "", err
		}
		if err := waitReady(ctx, status, 60*time.Second); err != nil {
			return "", err
		}
		for _, b := range []string{"b1", "b2", "b3"} {
			if _, err := l.waitServed(ctx, b, t, 30*time.Second); err != nil {
				return "", err
			}
		}
		e.note("supervise: docker start to b1-b3 served", "%s", time.Since(t).Round(100*time.Millisecond))
		return fmt.Sprintf("all three served %s after docker start", time.Since(t).Round(100*time.Millisecond)), nil
	}); err != nil {
		return err
	}
	if err := e.phase(scn, "steady after the restart", l, true, func() (string, error) {
		return "", pause(ctx, 2*time.Second)
	}); err != nil {
		return err
	}

	for i, b := range []string{"b1", "b2", "b3"} {
		last := i == 2
		if err := e.phase(scn, "docker kill "+b, l, false, func() (string, error) {
			t := time.Now()
			if _, err := docker(ctx, 30*time.Second, "kill", name(b)); err != nil {
				return "", err
			}
			want := 2 - i
			if last {
				// The last node: the min-servers guard keeps it in the
				// config (HAProxy has it DOWN) and holds the render.
				if err := waitStatus(ctx, status, 30*time.Second, "held (no node left)", func(s haconfdStatus) bool { return s.Held != "" }); err != nil {
					return "", err
				}
				st, _ := readStatus(status)
				return fmt.Sprintf("render held %s after the kill: %s", time.Since(t).Round(100*time.Millisecond), st.Held), nil
			}
			gone, err := l.waitGone(ctx, b, t, 3*time.Second, 30*time.Second)
			if err != nil {
				return "", err
			}
			if i == 1 {
				// b1 left less than a minute ago: losing b2 as well would take
				// 2 of 3 servers away within --max-remove-window, so the guard
				// keeps b2 configured (HAProxy's check has it DOWN, as waitGone
				// just saw) and says so in /status.
				if err := waitStatus(ctx, status, 30*time.Second, "b2 held by max_remove", func(s haconfdStatus) bool {
					return s.Servers == 2 && strings.Contains(s.Held, "galera/b2") && strings.Contains(s.Held, "max_remove")
				}); err != nil {
					return "", err
				}
				st, _ := readStatus(status)
				e.note("supervise: docker kill b2: last answer / held by max_remove", "%s / %s",
					gone.Round(10*time.Millisecond), time.Since(t).Round(100*time.Millisecond))
				return fmt.Sprintf("last answer from b2 %s after the kill; kept configured: %s", gone.Round(10*time.Millisecond), st.Held), nil
			}
			if err := waitStatus(ctx, status, 30*time.Second, strconv.Itoa(want)+" servers", func(s haconfdStatus) bool { return s.Servers == want }); err != nil {
				return "", err
			}
			removed := time.Since(t)
			e.note("supervise: docker kill "+b+": last answer / removed from the config", "%s / %s",
				gone.Round(10*time.Millisecond), removed.Round(100*time.Millisecond))
			return fmt.Sprintf("last answer from %s %s after the kill; out of the config after %s (lease TTL %s)",
				b, gone.Round(10*time.Millisecond), removed.Round(100*time.Millisecond), registerTTL), nil
		}); err != nil {
			return err
		}
		if !last {
			if err := e.phase(scn, "steady after killing "+b, l, true, func() (string, error) {
				return "", pause(ctx, 2*time.Second)
			}); err != nil {
				return err
			}
		}
	}
	l.stop()
	l = nil
	return nil
}

// stopHaconfd stops the haconfd container while connections are held open
// through HAProxy: the container must exit 0 within Docker's stop timeout,
// and HAProxy must soft-stop (held connections served on for a while, then
// closed, not reset).
func (e *env) stopHaconfd(ctx context.Context, hc, front string) (string, error) {
	var hs []*held
	for range 4 {
		h, err := holdConn(ctx, front)
		if err != nil {
			return "", err
		}
		hs = append(hs, h)
	}
	defer func() {
		for _, h := range hs {
			h.close()
		}
	}()
	t := time.Now()
	if _, err := docker(ctx, stopTimeout+20*time.Second, "stop", "-t", strconv.Itoa(int(stopTimeout/time.Second)), hc); err != nil {
		return "", err
	}
	took := time.Since(t)
	code, err := docker(ctx, 20*time.Second, "inspect", "-f", "{{.State.ExitCode}}", hc)
	if err != nil {
		return "", err
	}
	var errs []error
	if code != "0" {
		errs = append(errs, fmt.Errorf("exit code %s, want 0", code))
	}
	if took >= stopTimeout {
		errs = append(errs, fmt.Errorf("docker stop took %s: not within the %s stop timeout", took.Round(10*time.Millisecond), stopTimeout))
	}
	var served []string
	for i, h := range hs {
		select {
		case <-h.done:
		case <-time.After(15 * time.Second):
			errs = append(errs, fmt.Errorf("held connection %d still open 15s after the container stopped", i))
			continue
		}
		end, endAt, lastReply := h.result()
		kept := lastReply.Sub(t)
		served = append(served, kept.Round(100*time.Millisecond).String())
		if end != "eof" {
			errs = append(errs, fmt.Errorf("held connection %d ended with %q, want a clean close (EOF)", i, end))
		}
		if kept < softStopMin {
			errs = append(errs, fmt.Errorf("held connection %d served only %s after docker stop (ended %s after it): HAProxy was not soft-stopped",
				i, kept.Round(10*time.Millisecond), endAt.Sub(t).Round(10*time.Millisecond)))
		}
	}
	e.note("supervise: docker stop haconfd (timeout 10 s)", "%s, exit %s", took.Round(10*time.Millisecond), code)
	e.note("supervise: held connections served after docker stop", "%s, then EOF", strings.Join(served, ", "))
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	return fmt.Sprintf("exit 0 after %s; 4 held connections served %s after SIGTERM, then closed (EOF)",
		took.Round(10*time.Millisecond), strings.Join(served, "/")), nil
}
