package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// label is on every container, network and named volume the test makes
// (compose ones through the override files), so that one sweep removes
// them all, also after a run that died. Runs are serialized by run.sh's lock.
const label = "org.haconfd.e2e"

// Image names. The haconfd image is built from the repository's
// Dockerfile; the others stand in for images a registry would give.
const (
	imgHaconfd = "haconfd-e2e/haconfd:latest"
	imgEtcd    = "haconfd-e2e/etcd:latest"
	imgHAProxy = "haconfd-e2e/haproxy:latest"
	imgMariaDB = "haconfd-e2e/mariadb:latest"
	imgBackend = "haconfd-e2e/backend:latest"
	// The Dockerfile's build stage, kept as the next build's cache.
	imgBuildStage = "haconfd-e2e/build-stage:latest"
)

// dockerEnv: the classic builder (no BuildKit frontend image to pull).
func dockerEnv(extra ...string) []string {
	return append(append(os.Environ(), "DOCKER_BUILDKIT=0", "COMPOSE_DOCKER_CLI_BUILD=0"), extra...)
}

// docker runs the docker CLI with a bound and returns its trimmed output.
func docker(ctx context.Context, bound time.Duration, args ...string) (string, error) {
	return command(ctx, bound, nil, "docker", args...)
}

func command(ctx context.Context, bound time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = dockerEnv(env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (bound %s)", ctx.Err(), bound)
		}
		return s, fmt.Errorf("%s %s: %w: %s", name, shortArgs(args), err, tail(s, 8))
	}
	return s, nil
}

// logged runs a command with its output in a log file (builds).
func logged(ctx context.Context, bound time.Duration, logPath, dir string, env []string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = dockerEnv(env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (bound %s)", ctx.Err(), bound)
		}
		b, _ := os.ReadFile(logPath)
		return fmt.Errorf("%s %s: %w (log %s):\n%s", name, shortArgs(args), err, logPath, tail(string(b), 15))
	}
	return nil
}

func shortArgs(args []string) string {
	if len(args) > 4 {
		return strings.Join(args[:4], " ") + " ..."
	}
	return strings.Join(args, " ")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run starts a detached container with the label the cleanup removes by.
func (e *env) run(ctx context.Context, name string, args ...string) error {
	a := append([]string{"run", "-d", "--name", name, "--label", label + "=1"}, args...)
	_, err := docker(ctx, time.Minute, a...)
	return err
}

// ip is the container's address on network.
func ip(ctx context.Context, container, network string) (string, error) {
	out, err := docker(ctx, 20*time.Second, "inspect", "-f",
		fmt.Sprintf(`{{ (index .NetworkSettings.Networks %q).IPAddress }}`, network), container)
	if err != nil {
		return "", err
	}
	if out == "" || out == "<no value>" {
		return "", fmt.Errorf("%s has no address on %s", container, network)
	}
	return out, nil
}

// hostAddr is where the container's port is published on the host.
func hostAddr(ctx context.Context, container, port string) (string, error) {
	out, err := docker(ctx, 20*time.Second, "port", container, port)
	if err != nil {
		return "", err
	}
	first, _, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(first, "127.0.0.1:") {
		return "", fmt.Errorf("%s %s is published on %q, not on 127.0.0.1", container, port, first)
	}
	return first, nil
}

// health is the container's HEALTHCHECK status.
func health(ctx context.Context, container string) (string, error) {
	return docker(ctx, 20*time.Second, "inspect", "-f", "{{ .State.Health.Status }}", container)
}

// waitHealth polls until the HEALTHCHECK status is want.
func waitHealth(ctx context.Context, container, want string, bound time.Duration) (time.Duration, error) {
	t0 := time.Now()
	last := ""
	err := poll(ctx, bound, 500*time.Millisecond, func() bool {
		s, err := health(ctx, container)
		if err == nil && s != last {
			logf("%s: health %s", container, s)
			last = s
		}
		return err == nil && s == want
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("%s: HEALTHCHECK not %s within %s (last %q)", container, want, bound, last)
	}
	return time.Since(t0), nil
}

// poll calls cond every interval until it is true or bound has passed.
func poll(ctx context.Context, bound, interval time.Duration, cond func() bool) error {
	deadline := time.Now().Add(bound)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", bound)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// compose runs docker-compose on a project with the example file and the
// test's override, and the published ports in the environment.
type compose struct {
	project string
	files   []string
	env     []string
}

func (c compose) run(ctx context.Context, bound time.Duration, args ...string) (string, error) {
	a := []string{"--no-ansi", "-p", c.project}
	for _, f := range c.files {
		a = append(a, "-f", f)
	}
	return command(ctx, bound, append(c.env, "COMPOSE_HTTP_TIMEOUT=120"), "docker-compose", append(a, args...)...)
}

// container is the name compose 1.x gives a service's first container.
func (c compose) container(service string) string { return c.project + "_" + service + "_1" }

// ---- haconfd's HTTP endpoints, through the published port ----

var httpc = &http.Client{Timeout: 3 * time.Second}

func httpGet(addr, path string) (int, string, error) {
	resp, err := httpc.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// waitReady polls /readyz until 200.
func waitReady(ctx context.Context, addr string, bound time.Duration) error {
	last := ""
	err := poll(ctx, bound, 300*time.Millisecond, func() bool {
		code, body, err := httpGet(addr, "/readyz")
		if err != nil {
			last = err.Error()
			return false
		}
		last = strings.TrimSpace(body)
		return code == 200
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("haconfd /readyz on %s not 200 within %s (last: %s)", addr, bound, last)
	}
	return nil
}

// metrics reads the counters the scenarios compare: reloads (and starts)
// of HAProxy, and configs applied through the runtime API.
type metrics struct {
	reloads, runtime float64
}

var metricLine = regexp.MustCompile(`^(haconfd_reloads_total|haconfd_applies_total\{method="runtime",result="ok"\}) ([0-9.e+]+)$`)

func readMetrics(addr string) (metrics, error) {
	code, body, err := httpGet(addr, "/metrics")
	if err != nil {
		return metrics{}, err
	}
	if code != 200 {
		return metrics{}, fmt.Errorf("/metrics: status %d", code)
	}
	var m metrics
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		f := metricLine.FindStringSubmatch(sc.Text())
		if f == nil {
			continue
		}
		v, _ := strconv.ParseFloat(f[2], 64)
		if f[1] == "haconfd_reloads_total" {
			m.reloads = v
		} else {
			m.runtime = v
		}
	}
	return m, nil
}

// waitMetrics polls /metrics until cond holds: an apply is counted when
// it is done (a runtime removal after its drain).
func waitMetrics(ctx context.Context, addr string, bound time.Duration, cond func(metrics) bool) (metrics, error) {
	var m metrics
	var err error
	if perr := poll(ctx, bound, 200*time.Millisecond, func() bool {
		m, err = readMetrics(addr)
		return err == nil && cond(m)
	}); perr != nil {
		if ctx.Err() != nil {
			return m, ctx.Err()
		}
		return m, fmt.Errorf("haconfd /metrics: %w (last %+v, err %v)", perr, m, err)
	}
	return m, nil
}

// processes is `docker top`: uid and command of every process of the
// container (host view).
func processes(ctx context.Context, container string) ([][2]string, error) {
	out, err := docker(ctx, 20*time.Second, "top", container, "-o", "pid,uid,comm")
	if err != nil {
		return nil, err
	}
	var ps [][2]string
	for i, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if i == 0 || len(f) < 3 {
			continue
		}
		ps = append(ps, [2]string{f[1], f[2]})
	}
	return ps, nil
}

// checkUID: every process of the container whose command is one of names
// runs as uid, and there is at least one.
func checkUID(ctx context.Context, container, uid string, names ...string) (string, error) {
	ps, err := processes(ctx, container)
	if err != nil {
		return "", err
	}
	var seen []string
	for _, p := range ps {
		for _, n := range names {
			if p[1] != n {
				continue
			}
			seen = append(seen, p[1]+"="+p[0])
			if p[0] != uid {
				return "", fmt.Errorf("%s: %s runs as uid %s, want %s", container, p[1], p[0], uid)
			}
		}
	}
	if len(seen) == 0 {
		return "", fmt.Errorf("%s: no %v process (docker top: %v)", container, names, ps)
	}
	return strings.Join(seen, " "), nil
}

// sweep removes every container, network and volume carrying the label
// (all runs: they are serialized) and says what it removed.
func sweep(ctx context.Context) (string, error) {
	var removed []string
	var errs []error
	ids := func(kind string) []string {
		args := []string{kind, "ls", "-q", "--filter", "label=" + label}
		if kind == "container" {
			args = []string{"ps", "-aq", "--filter", "label=" + label}
		}
		out, err := docker(ctx, 30*time.Second, args...)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		return strings.Fields(out)
	}
	if c := ids("container"); len(c) > 0 {
		// Containers joined to another's network go first.
		for _, id := range c {
			if _, err := docker(ctx, time.Minute, "rm", "-f", "-v", id); err != nil && !strings.Contains(err.Error(), "No such container") {
				errs = append(errs, err)
			}
		}
		removed = append(removed, fmt.Sprintf("%d containers", len(c)))
	}
	if n := ids("network"); len(n) > 0 {
		if _, err := docker(ctx, time.Minute, append([]string{"network", "rm"}, n...)...); err != nil {
			errs = append(errs, err)
		}
		removed = append(removed, fmt.Sprintf("%d networks", len(n)))
	}
	if v := ids("volume"); len(v) > 0 {
		if _, err := docker(ctx, time.Minute, append([]string{"volume", "rm", "-f"}, v...)...); err != nil {
			errs = append(errs, err)
		}
		removed = append(removed, fmt.Sprintf("%d volumes", len(v)))
	}
	return strings.Join(removed, ", "), errors.Join(errs...)
}

// leftovers counts what still carries the label.
func leftovers(ctx context.Context) (string, error) {
	var parts []string
	for _, q := range [][]string{
		{"ps", "-aq", "--filter", "label=" + label},
		{"network", "ls", "-q", "--filter", "label=" + label},
		{"volume", "ls", "-q", "--filter", "label=" + label},
	} {
		out, err := docker(ctx, 30*time.Second, q...)
		if err != nil {
			return "", err
		}
		if n := len(strings.Fields(out)); n > 0 {
			parts = append(parts, fmt.Sprintf("%d from docker %s", n, strings.Join(q[:2], " ")))
		}
	}
	return strings.Join(parts, ", "), nil
}

// saveLogs writes every labelled container's log into dir (on failure).
func saveLogs(ctx context.Context, dir string) {
	out, err := docker(ctx, 30*time.Second, "ps", "-a", "--filter", "label="+label, "--format", "{{.Names}}")
	if err != nil {
		return
	}
	for _, name := range strings.Fields(out) {
		logs, _ := docker(ctx, 30*time.Second, "logs", "--timestamps", name)
		_ = os.WriteFile(filepath.Join(dir, name+".log"), []byte(logs+"\n"), 0o644)
	}
}
