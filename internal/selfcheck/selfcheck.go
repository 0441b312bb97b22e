// Package selfcheck judges, from this host only, whether its load balancer
// may hold a virtual IP: `haconfd status --self`, which keepalived runs as
// a track_script every second. It reads haconfd's /status on --listen and
// asks HAProxy's stats socket `show info`; it never talks to etcd, so it
// answers the same whether etcd is up or not.
//
// The rules (each is one Check):
//
//	haconfd   haconfd answers GET /status on --listen within --timeout
//	haproxy   a HAProxy process answers `show info` on the stats socket
//	          (a soft-stopping process has closed it: measured on 2.6)
//	running   haconfd says HAProxy runs (it saw it alive and answering)
//	apply     the last render or apply did not fail (a failed reload was
//	          rolled back: the last good config serves, but the instances
//	          that hold it on purpose are better places for the address)
//	etcd      etcd connected, or unreachable for less than --etcd-grace
//	config    the newest revision seen is live, or held on purpose (a
//	          guard, a stopped reload wave), or its reload has waited less
//	          than --lag-grace (quiescence, a fleet reload slot)
//
// With HAProxyOnly only the haproxy rule runs: it needs neither haconfd
// nor etcd (keepalived's hard check: an instance whose HAProxy does not
// answer must not hold the address, whatever else is true).
package selfcheck

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/haconfd/haconfd/internal/app"
)

// Options says where to look and how much to forgive.
type Options struct {
	// StatusURL is haconfd's /status, e.g. http://127.0.0.1:9480/status.
	StatusURL string
	// Socket is HAProxy's stats socket (the --runtime-socket).
	Socket string
	// Timeout bounds the whole check.
	Timeout time.Duration
	// EtcdGrace is how long an etcd outage still counts as healthy.
	EtcdGrace time.Duration
	// LagGrace is how long a pending reload still counts as healthy.
	LagGrace time.Duration
	// HAProxyOnly runs only the haproxy rule.
	HAProxyOnly bool
}

// Check is the outcome of one rule.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Report is every rule's outcome; Healthy when all passed.
type Report struct {
	Healthy bool    `json:"healthy"`
	Checks  []Check `json:"checks"`
}

// Failed lists the checks that failed.
func (r Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

func newReport(cs []Check) Report {
	r := Report{Healthy: len(cs) > 0, Checks: cs}
	for _, c := range cs {
		r.Healthy = r.Healthy && c.OK
	}
	return r
}

// Run asks haconfd and HAProxy (at the same time) and judges.
func Run(ctx context.Context, o Options) Report {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var (
		wg        sync.WaitGroup
		hap       Check
		st        app.Status
		statusErr error
	)
	wg.Go(func() { hap = HAProxy(ctx, o.Socket) })
	if !o.HAProxyOnly {
		wg.Go(func() { st, statusErr = fetchStatus(ctx, o.StatusURL) })
	}
	now := time.Now()
	wg.Wait()
	if o.HAProxyOnly {
		return newReport([]Check{hap})
	}
	if statusErr != nil {
		return newReport([]Check{{Name: "haconfd", Detail: statusErr.Error()}, hap})
	}
	cs := []Check{{Name: "haconfd", OK: true, Detail: "answers on " + o.StatusURL}, hap}
	return newReport(append(cs, Judge(st, now, o)...))
}

// fetchStatus reads haconfd's /status.
func fetchStatus(ctx context.Context, url string) (app.Status, error) {
	var st app.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, fmt.Errorf("haconfd's %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("haconfd does not answer: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("haconfd's %s answered %s", url, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("haconfd's %s: not haconfd's status JSON: %w", url, err)
	}
	return st, nil
}

// HAProxy asks the stats socket `show info`, within ctx's deadline. (The
// runtime API client haconfd uses waits up to 30 s for a reply; keepalived
// runs this every second.)
func HAProxy(ctx context.Context, socket string) Check {
	c := Check{Name: "haproxy"}
	info, err := showInfo(ctx, socket)
	switch {
	case err != nil:
		c.Detail = fmt.Sprintf("HAProxy does not answer on %s: %v", socket, err)
	default:
		c.OK = true
		c.Detail = fmt.Sprintf("pid %s answers on %s (up %ss)", info["Pid"], socket, info["Uptime_sec"])
	}
	return c
}

func showInfo(ctx context.Context, socket string) (map[string]string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return nil, err
		}
	}
	if _, err := io.WriteString(conn, "show info\n"); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(conn, 1<<20))
	if err != nil {
		return nil, err
	}
	info := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k != "" && !strings.ContainsAny(k, " \t") {
			info[k] = strings.TrimSpace(v)
		}
	}
	if _, err := strconv.Atoi(info["Pid"]); err != nil {
		return nil, fmt.Errorf("unexpected reply to show info: %q", firstLine(string(b)))
	}
	return info, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// Judge applies the rules on haconfd's status to st, at now.
func Judge(st app.Status, now time.Time, o Options) []Check {
	ago := func(t time.Time) string { return now.Sub(t).Round(100 * time.Millisecond).String() }
	var cs []Check

	run := Check{Name: "running", OK: st.HAProxy.Running}
	if run.OK {
		run.Detail = fmt.Sprintf("haconfd runs HAProxy pid %d", st.HAProxy.PID)
	} else {
		run.Detail = "haconfd says HAProxy is not running (no config started yet, or it died: haconfd starts it again)"
	}
	cs = append(cs, run)

	apply := Check{Name: "apply", OK: st.LastError == "", Detail: "no failed render or apply"}
	if !apply.OK {
		apply.Detail = "the last render or apply failed (the last good config serves): " + oneLine(st.LastError)
	}
	cs = append(cs, apply)

	etcd := Check{Name: "etcd"}
	switch {
	case st.EtcdConnected:
		etcd.OK, etcd.Detail = true, "connected since "+st.EtcdSince.UTC().Format(time.RFC3339)
	case st.EtcdSince.IsZero():
		etcd.Detail = "no snapshot from etcd yet"
	case now.Sub(st.EtcdSince) < o.EtcdGrace:
		etcd.OK = true
		etcd.Detail = fmt.Sprintf("unreachable for %s, within --etcd-grace %s: the last good config serves", ago(st.EtcdSince), o.EtcdGrace)
	default:
		etcd.Detail = fmt.Sprintf("unreachable for %s, longer than --etcd-grace %s", ago(st.EtcdSince), o.EtcdGrace)
	}
	if !st.EtcdConnected && st.EtcdError != "" {
		etcd.Detail += ": " + oneLine(st.EtcdError)
	}
	cs = append(cs, etcd)

	cfg := Check{Name: "config"}
	switch {
	case st.Applied == 0:
		cfg.Detail = "no config live yet"
	case st.Applied >= st.Revision:
		cfg.OK, cfg.Detail = true, fmt.Sprintf("revision %d live", st.Applied)
	case st.Held != "":
		cfg.OK = true
		cfg.Detail = fmt.Sprintf("revision %d live, %d held on purpose: %s", st.Applied, st.Revision, oneLine(st.Held))
	case st.Pending != nil && !st.Pending.Since.IsZero() && now.Sub(st.Pending.Since) < o.LagGrace:
		cfg.OK = true
		cfg.Detail = fmt.Sprintf("revision %d live, %d waits for a %s (%s) for %s, within --lag-grace %s",
			st.Applied, st.Revision, st.Pending.Action, st.Pending.Waiting, ago(st.Pending.Since), o.LagGrace)
	case st.Pending != nil && !st.Pending.Since.IsZero():
		cfg.Detail = fmt.Sprintf("lagging: revision %d live, %d has waited for a %s (%s) for %s, longer than --lag-grace %s",
			st.Applied, st.Revision, st.Pending.Action, st.Pending.Waiting, ago(st.Pending.Since), o.LagGrace)
	default:
		cfg.Detail = fmt.Sprintf("lagging: revision %d seen, %d live, nothing pending", st.Revision, st.Applied)
	}
	cs = append(cs, cfg)
	return cs
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// StatusURL is the /status URL of a haconfd listening on addr (--listen):
// a wildcard host is asked on the loopback address.
func StatusURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port", addr)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/status", nil
}
