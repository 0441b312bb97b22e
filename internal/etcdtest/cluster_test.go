package etcdtest

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCluster(t *testing.T) {
	c := StartCluster(t, 3)
	if eps := c.Endpoints(); len(eps) != 3 {
		t.Fatalf("Endpoints() = %v, want 3", eps)
	}
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/a", "1"); err != nil {
		t.Fatalf("put: %v", err)
	}

	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Stop(leader)
	c.Stop(leader) // no-op
	if c.Member(leader) != nil {
		t.Fatal("stopped member still listed")
	}
	next, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if next == leader {
		t.Fatalf("stopped member m%d is still the leader", leader)
	}
	// Two of three members keep a quorum.
	if _, err := cli.Put(ctx, "/a", "2"); err != nil {
		t.Fatalf("put with one member down: %v", err)
	}
	if err := c.RestartStopped(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx, leader); err == nil {
		t.Fatal("restart of a running member succeeded")
	}
	mcli, err := c.Member(leader).Client()
	if err != nil {
		t.Fatal(err)
	}
	defer mcli.Close()
	resp, err := mcli.Get(ctx, "/a")
	if err != nil {
		t.Fatalf("get from restarted member: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "2" {
		t.Fatalf("restarted member has /a = %v, want 2", resp.Kvs)
	}
}
