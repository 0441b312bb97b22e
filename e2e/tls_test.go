package e2e

import (
	"fmt"
	"github.com/haconfd/haconfd/internal/testbed"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/etcdtest"
)

// rootClient is a client to srv with its own credentials, closed when the
// test ends.
func (e *env) rootClient(srv *etcdserver.Server) *clientv3.Client {
	e.t.Helper()
	cli, err := srv.Client()
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cli.Close() })
	return cli
}

// haconfd against an etcd that requires client certificates: a
// certificate from another CA is refused with a one-line error naming
// TLS and the certificate, no config is written and haconfd keeps
// running; the right certificate works.
func TestEtcdTLS(t *testing.T) {
	e := newEnv(t)
	pki := etcdtest.NewTestPKI(t, "")
	other := etcdtest.NewTestPKI(t, "")
	srv := etcdtest.StartWith(t, etcdserver.Options{TLS: &pki})
	e.cli = e.rootClient(srv)
	bs := backends(t, "db", 1)
	e.putNode("db1", bs[0])
	args := append([]string{"run"}, e.argsWith(srv.Endpoints()[0])...)

	wrong := e.start(append(args, "--etcd-ca", pki.CAFile, "--etcd-cert", other.ClientCertFile, "--etcd-key", other.ClientKeyFile)...)
	wrong.waitLog("etcd read failed")
	line := logLine(wrong.Log(), "etcd read failed")
	if !strings.Contains(line, "tls") || !strings.Contains(line, "certificate") {
		t.Errorf("the error does not name TLS and the certificate:\n%s", line)
	}
	if code := wrong.exited(2 * time.Second); code != -1 {
		t.Fatalf("haconfd exited (%d) instead of retrying:\n%s", code, wrong.Log())
	}
	if e.live() != "" {
		t.Fatalf("a config was written with a refused certificate")
	}
	wrong.stop()
	t.Logf("refused certificate: %s", line)

	e.start(append(args, "--etcd-ca", pki.CAFile, "--etcd-cert", pki.ClientCertFile, "--etcd-key", pki.ClientKeyFile)...)
	e.eventually("db1 serves over etcd TLS", func(m map[string]int) bool { return m["db1"] == 12 })
}

// haconfd against an etcd with authentication: a user that may only read
// the prefix works with the password from the flag or from
// HACONFD_ETCD_PASSWORD; a wrong password is a clear error; no password
// ever appears in haconfd's output, even at debug level.
func TestEtcdAuth(t *testing.T) {
	const (
		user     = "lb"
		password = "Pw-3f9a1c7e-never-log"
		wrongPw  = "Pw-wrong-0d2b-never-log"
	)
	e := newEnv(t)
	srv := etcdtest.StartWith(t, etcdserver.Options{Auth: &etcdserver.Auth{
		RootPassword: "root-Pw-5e1d",
		Users:        []etcdserver.User{{Name: user, Password: password, ReadPrefix: prefix}},
	}})
	e.cli = e.rootClient(srv)
	bs := backends(t, "db", 2)
	e.putNode("db1", bs[0])
	args := append(append([]string{"run"}, e.argsWith(srv.Endpoints()[0])...), "--etcd-username", user)

	checkNoSecret := func(p *proc) {
		t.Helper()
		for _, s := range []string{password, wrongPw, "root-Pw-5e1d"} {
			if strings.Contains(p.Log(), s) {
				t.Fatalf("a password appears in haconfd's output:\n%s", p.Log())
			}
		}
	}

	bad := e.start(append(args, "--etcd-password", wrongPw)...)
	if err := pollLog(bad, "authentication failed"); err != nil {
		t.Fatalf("no clear error for a wrong password:\n%s", bad.Log())
	}
	if code := bad.exited(30 * time.Second); code != 2 {
		t.Fatalf("wrong password: exit %d, want 2 (bad input)\n%s", code, bad.Log())
	}
	checkNoSecret(bad)
	if e.live() != "" {
		t.Fatalf("a config was written with a wrong password")
	}
	t.Logf("wrong password: %s", logLine(bad.Log(), "authentication failed"))

	p := e.start(append(args, "--etcd-password", password)...)
	e.eventually("db1 serves with the password flag", func(m map[string]int) bool { return m["db1"] == 12 })
	p.stop()
	checkNoSecret(p)

	t.Setenv("HACONFD_ETCD_PASSWORD", password)
	p = e.start(args...)
	e.putNode("db2", bs[1])
	e.eventually("db2 joins with HACONFD_ETCD_PASSWORD", func(m map[string]int) bool { return m["db2"] > 0 && m["error"] == 0 })
	p.stop()
	checkNoSecret(p)
}

func logLine(log, substr string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

// pollLog waits until p logged substr or exited having logged it.
func pollLog(p *proc, substr string) error {
	if err := testbed.Poll(30*time.Second, 20*time.Millisecond, func() bool { return strings.Contains(p.Log(), substr) }); err != nil {
		return fmt.Errorf("%q not logged", substr)
	}
	return nil
}
