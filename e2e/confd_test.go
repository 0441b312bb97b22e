package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/internal/testbed"
)

// confdDir copies testdata/confd into a temp dir with OUT replaced by the
// dir itself, as an operator's /etc/confd would be.
func (e *env) confdDir() string {
	e.t.Helper()
	dir := filepath.Join(e.dir, "confd")
	src := "testdata/confd"
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), []byte(strings.ReplaceAll(string(b), "OUT", e.dir)), 0o644)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return dir
}

// putV2Node writes a node the way the fleet discovery unit wrote etcd v2
// directories, on a lease (v2's TTL).
func (e *env) putV2Node(id, ip, port string) clientv3.LeaseID {
	e.t.Helper()
	ctx := context.Background()
	l, err := e.cli.Grant(ctx, 30)
	if err != nil {
		e.t.Fatal(err)
	}
	ops := []clientv3.Op{clientv3.OpPut(prefix+"/"+id+"/ip", ip, clientv3.WithLease(l.ID))}
	if port != "" {
		ops = append(ops, clientv3.OpPut(prefix+"/"+id+"/port", port, clientv3.WithLease(l.ID)))
	}
	if _, err := e.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		e.t.Fatal(err)
	}
	return l.ID
}

func (e *env) confdArgs(confdir string, extra ...string) []string {
	return append([]string{"confd", "-backend", "etcdv3", "-node", e.etcd.Endpoints()[0],
		"-confdir", confdir, "-log-level", "debug"}, extra...)
}

// A confd directory whose template was written for etcd v2 directories
// renders from etcd v3 keys with leases, byte for byte as expected, with
// confd's own command line.
func TestConfdOnetimeGolden(t *testing.T) {
	e := newEnv(t)
	confdir := e.confdDir()
	e.putV2Node("9a8b7c6d", "10.0.0.12", "3307")
	e.putV2Node("6f1c2d3e", "10.0.0.11", "")
	q := e.start(e.confdArgs(confdir, "-onetime")...)
	if code := q.exited(60 * time.Second); code != 0 {
		t.Fatalf("haconfd confd -onetime: exit %d\n%s", code, q.Log())
	}
	want, _ := os.ReadFile("testdata/confd/want-haproxy.cfg")
	got, err := os.ReadFile(filepath.Join(e.dir, "haproxy.cfg"))
	if err != nil || string(got) != string(want) {
		t.Fatalf("dest differs from the golden file (err %v):\n%s", err, got)
	}
	if st, _ := os.Stat(filepath.Join(e.dir, "haproxy.cfg")); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644", st.Mode().Perm())
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, "reload.log")); string(b) != "reload\n" {
		t.Fatalf("reload_cmd ran %q, want once", b)
	}

	// The same directory through `render --confdir` prints the same bytes
	// and changes nothing; a second -onetime finds nothing to do.
	r := e.start(append([]string{"render", "--confdir", confdir}, e.baseArgs()...)...)
	if code := r.exited(30 * time.Second); code != 0 || !strings.Contains(r.Log(), string(want)) {
		t.Fatalf("render --confdir: exit %d\n%s", code, r.Log())
	}
	q = e.start(e.confdArgs(confdir, "-onetime")...)
	if code := q.exited(60 * time.Second); code != 0 {
		t.Fatalf("second -onetime: exit %d\n%s", code, q.Log())
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, "reload.log")); string(b) != "reload\n" {
		t.Fatalf("reload_cmd ran again without a change: %q", b)
	}
}

// -watch: changes apply as they happen; a value that makes check_cmd
// (haproxy -c) fail leaves the destination untouched; the next good
// change applies; an expired lease removes the node.
func TestConfdWatch(t *testing.T) {
	e := newEnv(t)
	confdir := e.confdDir()
	dest := filepath.Join(e.dir, "haproxy.cfg")
	lease := e.putV2Node("n1", "10.0.0.1", "3306")
	p := e.start(e.confdArgs(confdir, "-watch")...)
	waitFile(t, dest, "server n1 10.0.0.1:3306")

	e.putV2Node("n2", "10.0.0.2", "3306")
	waitFile(t, dest, "server n2 10.0.0.2:3306")

	before, _ := os.ReadFile(dest)
	e.put("/config/balance", "no-such-algorithm")
	p.waitLog("check")
	p.waitLog("destination left as it was")
	if after, _ := os.ReadFile(dest); string(after) != string(before) {
		t.Fatalf("a config that failed check_cmd reached the destination:\n%s", after)
	}
	e.put("/config/balance", "roundrobin")
	waitFile(t, dest, "balance roundrobin")

	if _, err := e.cli.Revoke(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	if err := testbed.Poll(30*time.Second, 20*time.Millisecond, func() bool {
		b, _ := os.ReadFile(dest)
		return !strings.Contains(string(b), "n1") && strings.Contains(string(b), "n2")
	}); err != nil {
		t.Fatalf("n1 never left after its lease was revoked")
	}
	p.stop()
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("haconfd confd exited %d on SIGTERM\n%s", code, p.Log())
	}
}

// confd's bad input: an unsupported backend and a missing confdir are one
// clear line and exit 2.
func TestConfdBadInput(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"confd", "-backend", "consul", "-onetime"}, "-backend consul: haconfd supports only etcdv3"},
		{[]string{"confd", "-backend", "etcdv3", "-confdir", "/nonexistent-confd", "-onetime"}, "/nonexistent-confd"},
		{[]string{"confd", "-no-such-flag"}, "no-such-flag"},
	} {
		q := e.start(tc.args...)
		if code := q.exited(30 * time.Second); code != 2 || !strings.Contains(q.Log(), tc.want) {
			t.Fatalf("%v: exit %d, want 2 with %q:\n%s", tc.args, code, tc.want, q.Log())
		}
	}
}

func waitFile(t *testing.T, path, substr string) {
	t.Helper()
	if err := testbed.Poll(30*time.Second, 20*time.Millisecond, func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), substr)
	}); err != nil {
		b, _ := os.ReadFile(path)
		t.Fatalf("%s never contained %q:\n%s", path, substr, b)
	}
}
