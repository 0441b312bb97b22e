package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// topo is the cut-off load balancer's network: a namespace joined to the
// root namespace by two veth pairs, one that carries etcd (the one a fault
// sets down) and one that carries the data (clients to its frontend, its
// HAProxy to the backends), so that cutting it off from etcd leaves it
// serving. Point-to-point /30s in one 10.213.X.0/24 that nothing else uses:
// etcd .1 (root) – .2 (namespace), data .5 (root) – .6 (namespace).
type topo struct {
	sfx string
	net string // first three octets, e.g. "10.213.7"
	ns  string
}

// Names: namespace hcc-<sfx>, links hcc<sfx>e (etcd) and hcc<sfx>d (data)
// on the root side: what run.sh's trap removes when this process could not.
func (t *topo) etcdLink() string { return "hcc" + t.sfx + "e" }
func (t *topo) dataLink() string { return "hcc" + t.sfx + "d" }
func (t *topo) ip(n int) string  { return t.net + "." + strconv.Itoa(n) }

// Addresses: etcd listens on etcdIP, the backends on dataIP, the cut-off
// load balancer's frontend on nsDataIP.
func (t *topo) etcdIP() string   { return t.ip(1) }
func (t *topo) nsEtcdIP() string { return t.ip(2) }
func (t *topo) dataIP() string   { return t.ip(5) }
func (t *topo) nsDataIP() string { return t.ip(6) }

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// notrack: the links' connections stay out of connection tracking (a
// Docker engine's conntrack table fills with the clients' TIME_WAITs, as
// on loopback: scripts/loopback-notrack.sh).
func (t *topo) notrack(op string) error {
	var errs []error
	for _, l := range []string{t.etcdLink(), t.dataLink()} {
		for _, r := range [][]string{{"PREROUTING", "-i"}, {"OUTPUT", "-o"}} {
			out, err := exec.Command("iptables", "-t", "raw", op, r[0], r[1], l, "-j", "NOTRACK").CombinedOutput()
			if err != nil {
				errs = append(errs, fmt.Errorf("iptables %s %s %s: %w: %s", op, r[0], l, err, bytes.TrimSpace(out)))
			}
		}
	}
	return errors.Join(errs...)
}

func (t *topo) up() error {
	if err := ipCmd("netns", "add", t.ns); err != nil {
		return err
	}
	steps := [][]string{{"-n", t.ns, "link", "set", "lo", "up"}}
	for _, l := range []struct{ root, inner, rootIP, nsIP string }{
		{t.etcdLink(), "etcd0", t.etcdIP(), t.nsEtcdIP()},
		{t.dataLink(), "data0", t.dataIP(), t.nsDataIP()},
	} {
		peer := l.root + "p"
		steps = append(steps,
			[]string{"link", "add", l.root, "type", "veth", "peer", "name", peer},
			[]string{"link", "set", peer, "netns", t.ns},
			[]string{"-n", t.ns, "link", "set", peer, "name", l.inner},
			[]string{"addr", "add", l.rootIP + "/30", "dev", l.root},
			[]string{"-n", t.ns, "addr", "add", l.nsIP + "/30", "dev", l.inner},
			[]string{"link", "set", l.root, "up"},
			[]string{"-n", t.ns, "link", "set", l.inner, "up"},
		)
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return err
		}
	}
	return t.notrack("-I")
}

// cut sets the etcd link down (or up again): the namespace's load
// balancer loses etcd and keeps its data link.
func (t *topo) cut(down bool) error {
	state := "up"
	if down {
		state = "down"
	}
	return ipCmd("link", "set", t.etcdLink(), state)
}

// down kills whatever still runs in the namespace and removes it, its
// links and the NOTRACK rules.
func (t *topo) down() error {
	var errs []error
	if out, err := exec.Command("ip", "netns", "pids", t.ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if err := ipCmd("netns", "del", t.ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, l := range []string{t.etcdLink(), t.dataLink()} {
		if exec.Command("ip", "link", "show", l).Run() == nil {
			if err := ipCmd("link", "del", l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := t.notrack("-D"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
