package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/internal/testbed"
)

// member is one etcd process of the cluster: killed, paused and started
// again on its data directory and URLs.
type member struct {
	name      string
	clientURL string
	peerURL   string
	dir       string
	proc      *proc
	paused    bool
}

// startEtcd starts the three members (they become ready together) and the
// harness's client.
func (e *env) startEtcd(ctx context.Context) error {
	var peers []string
	for i := range 3 {
		cp, err := testbed.FreePort()
		if err != nil {
			return err
		}
		pp, err := testbed.FreePort()
		if err != nil {
			return err
		}
		m := &member{
			name:      fmt.Sprintf("m%d", i+1),
			clientURL: "http://" + net.JoinHostPort(e.top.etcdIP(), strconv.Itoa(cp)),
			peerURL:   "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(pp)),
			dir:       filepath.Join(e.dir, fmt.Sprintf("etcd-m%d", i+1)),
		}
		peers = append(peers, m.name+"="+m.peerURL)
		e.members = append(e.members, m)
	}
	initial := strings.Join(peers, ",")
	for _, m := range e.members {
		if err := e.startMember(m, initial); err != nil {
			return err
		}
	}
	var eps []string
	for _, m := range e.members {
		eps = append(eps, m.clientURL)
	}
	e.endpoints = eps
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second,
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: time.Second, Logger: quietLogger()})
	if err != nil {
		return err
	}
	e.cli = cli
	return testbed.WaitFor(ctx, 60*time.Second, func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := cli.Put(c, "/chaos-ready", "1")
		return err == nil
	})
}

func (e *env) startMember(m *member, initial string) error {
	p, err := e.start("etcd "+m.name, filepath.Join(e.dir, "etcd-"+m.name+".log"), e.f.etcd,
		"--name", m.name, "--data-dir", m.dir,
		"--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
		"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
		"--initial-cluster", initial, "--initial-cluster-state", "new",
		// A busy shared machine must not cause needless elections.
		"--heartbeat-interval", "100", "--election-timeout", "1000",
		"--unsafe-no-fsync", "--log-level", "warn")
	m.proc = p
	return err
}

func (e *env) initialCluster() string {
	var peers []string
	for _, m := range e.members {
		peers = append(peers, m.name+"="+m.peerURL)
	}
	return strings.Join(peers, ",")
}

// leader is the index of the member that says it leads (-1: none answers so).
func (e *env) leader(ctx context.Context) int {
	for i, m := range e.members {
		if m.paused || m.proc.exited() {
			continue
		}
		c, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		st, err := e.cli.Status(c, m.clientURL)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return i
		}
	}
	return -1
}

func (e *env) killMember(i int) error {
	m := e.members[i]
	if err := m.proc.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-m.proc.done
	return nil
}

func (e *env) restartMember(i int) error {
	m := e.members[i]
	if !m.proc.exited() {
		return errors.New(m.name + " still runs")
	}
	return e.startMember(m, e.initialCluster())
}

func (e *env) pauseMember(i int, pause bool) error {
	m := e.members[i]
	sig := syscall.SIGCONT
	if pause {
		sig = syscall.SIGSTOP
	}
	if err := m.proc.signal(sig); err != nil {
		return err
	}
	m.paused = pause
	return nil
}
