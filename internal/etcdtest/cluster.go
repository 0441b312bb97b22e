package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/testbed"
	"go.uber.org/zap"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// peerConnsTimeout bounds the wait for etcd's peer connections to close
// after a cluster stopped: a little over etcd's 5s peer read timeout.
const peerConnsTimeout = 8 * time.Second

// Cluster is a multi-member etcd for fault-tolerance tests: members can be
// stopped and started again on the same data directory and URLs.
type Cluster struct {
	mu      sync.Mutex
	members []*clusterMember
}

type clusterMember struct {
	opts etcdserver.Options
	mc   etcdserver.Member
	srv  *etcdserver.Server // nil while stopped
}

// StartCluster starts an n-member etcd cluster (n >= 1) on 127.0.0.1 with
// data in t.TempDir(), waits until every member is ready, and stops it
// when the test ends. A start failure fails the test.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("start etcd cluster: %d members, want at least 1", n)
	}
	base := t.TempDir()
	c := &Cluster{}
	var peers []string
	for i := range n {
		cu, err := testbed.FreeURL()
		if err != nil {
			t.Fatalf("start etcd cluster: %v", err)
		}
		pu, err := testbed.FreeURL()
		if err != nil {
			t.Fatalf("start etcd cluster: %v", err)
		}
		name := fmt.Sprintf("m%d", i)
		peers = append(peers, name+"="+pu)
		c.members = append(c.members, &clusterMember{
			opts: etcdserver.Options{Dir: filepath.Join(base, name), ClientURL: cu},
			mc: etcdserver.Member{
				Name: name, PeerURL: pu, NoFsync: true,
				// A longer election timeout than a single member's: a
				// busy shared machine must not cause needless elections.
				TickMs: 50, ElectionMs: 1000,
			},
		})
	}
	initial := strings.Join(peers, ",")
	for _, m := range c.members {
		m.mc.InitialCluster = initial
	}
	t.Cleanup(c.Close)

	// Members only become ready together (they need a quorum).
	ctx, cancel := context.WithTimeout(context.Background(), testStartTimeout)
	defer cancel()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Go(func() {
			srv, err := etcdserver.StartMember(ctx, m.opts, m.mc)
			if err != nil {
				errs[i] = err
				cancel() // do not wait for the others in vain
				return
			}
			c.mu.Lock()
			m.srv = srv
			c.mu.Unlock()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start etcd cluster member m%d: %v", i, err)
		}
	}
	return c
}

// Endpoints returns the client URLs of all members, running or not.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.opts.ClientURL)
	}
	return eps
}

// Client returns a new client to all members; the caller closes it.
func (c *Cluster) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// Member returns member i, or nil while it is stopped.
func (c *Cluster) Member(i int) *etcdserver.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].srv
}

// LeaderIndex returns the index of the running member that is the raft
// leader, or -1 while there is none (during an election, or without a
// quorum). Tests poll it after stopping a leader.
func (c *Cluster) LeaderIndex() int {
	for i := range c.members {
		if srv := c.Member(i); srv != nil && srv.IsLeader() {
			return i
		}
	}
	return -1
}

// WaitLeader polls LeaderIndex until there is a leader or ctx is done.
func (c *Cluster) WaitLeader(ctx context.Context) (int, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if i := c.LeaderIndex(); i >= 0 {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("wait for an etcd leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Stop stops member i; stopping a stopped member does nothing.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	srv := c.members[i].srv
	c.members[i].srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Restart starts the stopped member i again on its data directory and
// URLs and waits until it is ready (which needs a quorum of members).
func (c *Cluster) Restart(ctx context.Context, i int) error {
	c.mu.Lock()
	m := c.members[i]
	running := m.srv != nil
	c.mu.Unlock()
	if running {
		return fmt.Errorf("restart etcd member m%d: still running", i)
	}
	srv, err := etcdserver.StartMember(ctx, m.opts, m.mc)
	if err != nil {
		return fmt.Errorf("restart etcd member m%d: %w", i, err)
	}
	c.mu.Lock()
	m.srv = srv
	c.mu.Unlock()
	return nil
}

// RestartStopped starts every stopped member again, all at once (a lone
// member of a cluster without quorum never becomes ready).
func (c *Cluster) RestartStopped(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.members))
	for i := range c.members {
		if c.Member(i) != nil {
			continue
		}
		wg.Go(func() { errs[i] = c.Restart(ctx, i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close stops every member. It is safe to call more than once.
func (c *Cluster) Close() {
	// The leader first, while its peers are up: it hands leadership over
	// quickly. Stopping all at once makes a leader wait for etcd's request
	// timeout (seconds) trying to hand over to a peer that is stopping.
	for i := range c.members {
		if srv := c.Member(i); srv != nil && srv.IsLeader() {
			c.Stop(i)
		}
	}
	var wg sync.WaitGroup
	for i := range c.members {
		wg.Go(func() { c.Stop(i) })
	}
	wg.Wait()
	waitPeerConnsClosed()
}

// waitPeerConnsClosed waits (bounded) until the HTTP connections between
// stopped members are gone. etcd leaves them to its 5s peer read timeout;
// without the wait, leak checks at the end of a test package report them.
func waitPeerConnsClosed() {
	deadline := time.Now().Add(peerConnsTimeout)
	buf := make([]byte, 1<<20)
	for time.Now().Before(deadline) {
		n := runtime.Stack(buf, true)
		if n == len(buf) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		stacks := string(buf[:n])
		if !strings.Contains(stacks, "soheilhy/cmux.(*MuxConn).Read") &&
			!strings.Contains(stacks, "net/http.(*persistConn).readLoop") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
