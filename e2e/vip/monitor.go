package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// holding is one span during which a namespace had the virtual IP.
type holding struct {
	lb       string
	from, to time.Time // to is zero while it still holds it
}

// addrMonitor follows, with `ip -ts monitor address` in every load
// balancer namespace, when the virtual IP is added and removed: the
// kernel's own events, timestamped to the microsecond.
type addrMonitor struct {
	vip string

	mu    sync.Mutex
	spans []holding
	cmds  []*exec.Cmd
	wg    sync.WaitGroup
}

func newAddrMonitor(vip string) *addrMonitor { return &addrMonitor{vip: vip} }

// watch starts following namespace ns, named lb in the spans.
func (m *addrMonitor) watch(ns, lb string) error {
	cmd := exec.Command("ip", "-n", ns, "-ts", "monitor", "address")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("ip monitor in %s: %w", ns, err)
	}
	m.cmds = append(m.cmds, cmd)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.read(out, lb)
		_ = cmd.Wait()
	}()
	return nil
}

// read parses lines such as
//
//	[2026-11-30T02:19:28.566723] 350: eth0    inet 10.213.77.100/24 scope global secondary eth0
//	[2026-11-30T02:19:28.566842] Deleted 348: eth0    inet 10.213.77.100/24 ...
func (m *addrMonitor) read(r io.Reader, lb string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "[") || !strings.Contains(line, " inet "+m.vip+"/") {
			continue
		}
		end := strings.IndexByte(line, ']')
		if end < 0 {
			continue
		}
		ts, err := time.ParseInLocation("2006-01-02T15:04:05.999999", line[1:end], time.Local)
		if err != nil {
			continue
		}
		deleted := strings.HasPrefix(strings.TrimSpace(line[end+1:]), "Deleted ")
		m.mu.Lock()
		i := slices.IndexFunc(m.spans, func(h holding) bool { return h.lb == lb && h.to.IsZero() })
		switch {
		case deleted && i >= 0:
			m.spans[i].to = ts
		case !deleted && i < 0:
			m.spans = append(m.spans, holding{lb: lb, from: ts})
		}
		m.mu.Unlock()
	}
}

// holders are the load balancers holding the address now.
func (m *addrMonitor) holders() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, h := range m.spans {
		if h.to.IsZero() {
			out = append(out, h.lb)
		}
	}
	slices.Sort(out)
	return out
}

// addedAfter is when lb last got the address after t (zero if it did not).
func (m *addrMonitor) addedAfter(lb string, t time.Time) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	var at time.Time
	for _, h := range m.spans {
		if h.lb == lb && h.from.After(t) {
			at = h.from
		}
	}
	return at
}

// overlap is the longest time two load balancers held the address at
// once within [from, to], and who.
func (m *addrMonitor) overlap(from, to time.Time) (time.Duration, string) {
	m.mu.Lock()
	spans := slices.Clone(m.spans)
	m.mu.Unlock()
	var worst time.Duration
	var who string
	for i, a := range spans {
		for _, b := range spans[i+1:] {
			if a.lb == b.lb {
				continue
			}
			s := latest(a.from, b.from, from)
			e := earliest(endOr(a.to, to), endOr(b.to, to), to)
			if d := e.Sub(s); d > worst {
				worst, who = d, a.lb+"+"+b.lb
			}
		}
	}
	return worst, who
}

func endOr(t, def time.Time) time.Time {
	if t.IsZero() {
		return def
	}
	return t
}

func latest(ts ...time.Time) time.Time {
	out := ts[0]
	for _, t := range ts[1:] {
		if t.After(out) {
			out = t
		}
	}
	return out
}

func earliest(ts ...time.Time) time.Time {
	out := ts[0]
	for _, t := range ts[1:] {
		if t.Before(out) {
			out = t
		}
	}
	return out
}

// dump writes every span to path (kept with the logs).
func (m *addrMonitor) dump(path string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	for _, h := range m.spans {
		to := "still"
		if !h.to.IsZero() {
			to = h.to.Format("15:04:05.000000")
		}
		fmt.Fprintf(&b, "%s %s → %s\n", h.lb, h.from.Format("15:04:05.000000"), to)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// stop ends the monitors.
func (m *addrMonitor) stop() {
	for _, c := range m.cmds {
		if c.Process != nil {
			_ = c.Process.Kill()
		}
	}
	m.wg.Wait()
}
