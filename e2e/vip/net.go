package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// topo is the test's network: a bridge in its own namespace (the
// "switch": the root namespace's firewall, e.g. Docker's FORWARD DROP
// with br_netfilter, never sees the bridged traffic), one namespace per
// host on it through a veth pair, and a veth from the root namespace,
// where this process serves etcd and the backends.
type topo struct {
	sfx    string
	net    string // first three octets of the /24, e.g. "10.213.7"
	sw     string // the switch namespace
	rootIf string // the root namespace's end of its veth
	hosts  []string
}

// Names: namespaces hcv-<sfx>-<host>, links hcv<sfx><x>: unique per run,
// and what run.sh's trap removes when this process could not.
func (t *topo) ns(host string) string { return "hcv-" + t.sfx + "-" + host }
func (t *topo) ip(n int) string       { return t.net + "." + strconv.Itoa(n) }

// ipCmd runs ip(8) and returns its error with its output.
func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// up builds the network: hosts[i] gets address .11+i (the client, last,
// gets .50); the root namespace gets .1.
func (t *topo) up(addrs map[string]int) error {
	if err := ipCmd("netns", "add", t.sw); err != nil {
		return err
	}
	steps := [][]string{
		{"-n", t.sw, "link", "set", "lo", "up"},
		{"-n", t.sw, "link", "add", "br0", "type", "bridge"},
		{"-n", t.sw, "link", "set", "br0", "up"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return err
		}
	}
	for i, h := range t.hosts {
		ns := t.ns(h)
		a, b := fmt.Sprintf("hcv%sa%d", t.sfx, i), fmt.Sprintf("hcv%sb%d", t.sfx, i)
		steps := [][]string{
			{"netns", "add", ns},
			{"link", "add", a, "type", "veth", "peer", "name", b},
			{"link", "set", a, "netns", t.sw},
			{"link", "set", b, "netns", ns},
			{"-n", ns, "link", "set", b, "name", "eth0"},
			{"-n", ns, "addr", "add", t.ip(addrs[h]) + "/24", "dev", "eth0"},
			{"-n", ns, "link", "set", "eth0", "up"},
			{"-n", ns, "link", "set", "lo", "up"},
			{"-n", t.sw, "link", "set", a, "master", "br0"},
			{"-n", t.sw, "link", "set", a, "up"},
		}
		for _, s := range steps {
			if err := ipCmd(s...); err != nil {
				return err
			}
		}
	}
	q := "hcv" + t.sfx + "q"
	steps = [][]string{
		{"link", "add", t.rootIf, "type", "veth", "peer", "name", q},
		{"link", "set", q, "netns", t.sw},
		{"-n", t.sw, "link", "set", q, "master", "br0"},
		{"-n", t.sw, "link", "set", q, "up"},
		{"addr", "add", t.ip(1) + "/24", "dev", t.rootIf},
		{"link", "set", t.rootIf, "up"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return err
		}
	}
	return nil
}

// down kills whatever still runs in the namespaces and removes them and
// the root namespace's veth; it reports what it could not remove.
func (t *topo) down() error {
	var errs []string
	for _, h := range append(append([]string{}, t.hosts...), "sw") {
		ns := t.ns(h)
		out, err := exec.Command("ip", "netns", "pids", ns).Output()
		if err != nil {
			continue // not created
		}
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if err := ipCmd("netns", "del", ns); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if exec.Command("ip", "link", "show", t.rootIf).Run() == nil {
		if err := ipCmd("link", "del", t.rootIf); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cleanup: %s", strings.Join(errs, "; "))
	}
	return nil
}
