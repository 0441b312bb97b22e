package e2e

import (
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// The keepalived example's checks are haconfd command lines that parse
// with the systemd example's haconfd.yaml: with nothing running here they
// exit 1 (unhealthy), never 2 (bad flag, bad config file). make e2e-vip
// runs the example itself, in network namespaces.
func TestExampleKeepalivedChecks(t *testing.T) {
	conf, err := os.ReadFile("../examples/keepalived/keepalived.conf")
	if err != nil {
		t.Fatal(err)
	}
	scripts := regexp.MustCompile(`(?m)^\s*script "([^"]+)"`).FindAllStringSubmatch(string(conf), -1)
	if len(scripts) != 2 {
		t.Fatalf("want the two checks (chk_haproxy, chk_haconfd), found %d script lines", len(scripts))
	}
	for _, m := range scripts {
		line := m[1]
		argv := strings.Fields(line)
		if argv[0] != "/usr/local/bin/haconfd" {
			t.Fatalf("%q: not /usr/local/bin/haconfd (the systemd example's path)", line)
		}
		for i, a := range argv {
			if a == "/etc/haconfd/haconfd.yaml" {
				argv[i] = "../examples/systemd/haconfd.yaml"
			}
		}
		if !slicesContains(argv, "--self") {
			t.Errorf("%q: not a status --self check", line)
		}
		out, err := exec.Command(haconfdBin, argv[1:]...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.HasPrefix(string(out), "unhealthy:") {
			t.Errorf("%q: %v (want exit 1, unhealthy: nothing runs here)\n%s", line, err, out)
		}
	}
}

// The drop-in orders keepalived after haconfd without tying their lives
// together: stopping or restarting haconfd must not stop keepalived (the
// checks decide), and a keepalived that crashed is started again.
func TestExampleKeepalivedDropIn(t *testing.T) {
	u := exParseUnit(t, "../examples/keepalived/haconfd.conf")
	if !slicesContains(u["Unit"]["After"], "haconfd.service") || !slicesContains(u["Unit"]["Wants"], "haconfd.service") {
		t.Errorf("[Unit] After= and Wants= must name haconfd.service: %v", u["Unit"])
	}
	for _, k := range []string{"Requires", "BindsTo", "PartOf", "Requisite"} {
		if vs := u["Unit"][k]; len(vs) > 0 {
			t.Errorf("[Unit] %s=%v: a haconfd restart would stop keepalived", k, vs)
		}
	}
	if r := u["Service"]["Restart"]; len(r) != 1 || r[0] != "on-failure" {
		t.Errorf("[Service] Restart=%v, want on-failure (Debian's unit does not restart keepalived)", r)
	}
}

func slicesContains(list []string, s string) bool {
	for _, v := range list {
		for _, f := range strings.Fields(v) {
			if f == s {
				return true
			}
		}
	}
	return false
}
