package main

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// runCmd runs cmd with args the way execute does and returns the exit code
// and what went to stderr.
func runCmd(t *testing.T, cmd *cobra.Command, args ...string) (int, string) {
	t.Helper()
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: 2, err: err} })
	err := cmd.Execute()
	if err == nil {
		return 0, ""
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, ee.Error()
	}
	return 1, err.Error()
}

func TestGaleraCommandsBadInput(t *testing.T) {
	tests := []struct {
		name string
		cmd  func(out, errw *bytes.Buffer) *cobra.Command
		args []string
		env  map[string]string
		want string
	}{
		{"register without ip", reg, []string{"--id", "db1"}, nil, "ip: required"},
		{"register bad ip", reg, []string{"--id", "db1", "--ip", "10.0.0.300"}, nil, "is not an IP address or host name"},
		{"register bad port", reg, []string{"--id", "db1", "--ip", "10.0.0.1", "--port", "0"}, nil, "--port: 0: not 1-65535"},
		{"register bad layout", reg, []string{"--id", "db1", "--ip", "10.0.0.1", "--layout", "xml"}, nil, `--layout: "xml": want dir or json`},
		{"register bad ttl", reg, []string{"--id", "db1", "--ip", "10.0.0.1", "--ttl", "1500ms"}, nil, "ttl 1.5s: must be whole seconds"},
		{"register bad dsn", reg, []string{"--id", "db1", "--ip", "10.0.0.1", "--mysql-dsn", "nonsense"}, nil, "--mysql-dsn: invalid MySQL DSN"},
		{"register bad env", reg, []string{"--id", "db1"}, map[string]string{"HACONFD_PORT": "x"}, "HACONFD_PORT"},
		{"register unknown flag", reg, []string{"--nope"}, nil, "unknown flag: --nope"},
		{"register bad log level", reg, []string{"--ip", "10.0.0.1", "--log-level", "loud"}, nil, `--log-level: "loud"`},
		{"check without dsn", chk, nil, nil, "--mysql-dsn: required"},
		{"check bad timeout", chk, []string{"--mysql-dsn", "u:p@tcp(127.0.0.1:1)/", "--query-timeout", "0s"}, nil, "--query-timeout: must be positive"},
		{"check old --timeout name", chk, []string{"--mysql-dsn", "u:p@tcp(127.0.0.1:1)/", "--timeout", "0s"}, nil, "--query-timeout: must be positive"},
		{"check both timeout names", chk, []string{"--mysql-dsn", "u:p@tcp(127.0.0.1:1)/", "--timeout", "1s", "--query-timeout", "1s"}, nil, "--timeout: give --query-timeout only"},
		{"register unknown key in --config", reg, []string{"--ip", "10.0.0.1", "--config", "testdata/unknown-key.yaml"}, nil, "has invalid keys: prefixx"},
		{"register prefix list", reg, []string{"--ip", "10.0.0.1", "--prefix", "/a,/b"}, nil, "--prefix: a node registers under one prefix"},
		{"check bad env", chk, nil, map[string]string{"HACONFD_MYSQL_DSN": "u:p@tcp(127.0.0.1:1)/", "HACONFD_QUERY_TIMEOUT": "soon"}, "HACONFD_QUERY_TIMEOUT"},
		{"check bad listen", chk, []string{"--mysql-dsn", "u:p@tcp(127.0.0.1:1)/", "--listen", "127.0.0.1:99999"}, nil, "--listen 127.0.0.1:99999"},
		{"check dsn from env", chk, []string{"--query-timeout", "0s"}, map[string]string{"HACONFD_MYSQL_DSN": "u:p@tcp(127.0.0.1:1)/"}, "--query-timeout"},
		{"register bad priority", reg, []string{"--ip", "10.0.0.1", "--priority", "first"}, nil, `--priority: "first" must be a whole number`},
		{"register bad check port", reg, []string{"--ip", "10.0.0.1", "--check-port", "99999"}, nil, `--check-port: "99999" must be a port`},
		{"notify bad primary", ntf, []string{"--id", "db1", "--primary", "maybe"}, nil, `--primary: "maybe" must be yes or no`},
		{"notify bad members", ntf, []string{"--id", "db1", "--members", "/db1/10.0.0.1:3306"}, nil, `--members: "/db1/10.0.0.1:3306" has no uuid`},
		{"notify bad index", ntf, []string{"--id", "db1", "--index", "first", "--members", "u1/db1/a"}, nil, `--index: "first" is not a member index`},
		{"notify bad id", ntf, []string{"--id", "db 1"}, nil, `--id: "db 1": not a node id`},
		{"notify two prefixes", ntf, []string{"--id", "db1", "--prefix", "/a,/b"}, nil, "--prefix: give the one prefix"},
		{"notify bad timeout", ntf, []string{"--id", "db1", "--timeout", "0s"}, nil, "--timeout: must be positive"},
		{"drain without reason", drn, []string{"db1"}, nil, "--reason: say why"},
		{"drain bad node", drn, []string{"db/1", "--reason", "x"}, nil, `NODE: "db/1": not a node id`},
		{"drain no node", drn, []string{"--reason", "x"}, nil, "accepts 1 arg(s), received 0"},
		{"drain bad endpoint", drn, []string{"db1", "--reason", "x", "--etcd-endpoints", "localhost"}, nil, `--etcd-endpoints: "localhost"`},
		{"undrain bad node", udr, []string{"db 1"}, nil, `NODE: "db 1": not a node id`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out, errw bytes.Buffer
			code, msg := runCmd(t, tt.cmd(&out, &errw), tt.args...)
			if code != 2 || !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Fatalf("exit %d, error %q: want exit 2 and one line saying %q", code, msg, tt.want)
			}
		})
	}
}

func reg(out, errw *bytes.Buffer) *cobra.Command { return newRegister(out, errw) }
func chk(out, errw *bytes.Buffer) *cobra.Command { return newCheck(out, errw) }
func ntf(out, errw *bytes.Buffer) *cobra.Command { return newNotify(out, errw) }
func drn(out, errw *bytes.Buffer) *cobra.Command { return newDrain(out, errw) }
func udr(out, errw *bytes.Buffer) *cobra.Command { return newUndrain(out, errw) }

// register and check read flags, HACONFD_* variables and --config the
// same way as run, and --validate-config checks them without connecting
// to anything.
func TestGaleraCommandsValidateConfig(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/node.yaml"
	if err := os.WriteFile(file, []byte("ip: 10.0.0.7\nport: 3307\nmysql-dsn: \"u:p@tcp(127.0.0.1:1)/\"\nlisten: 127.0.0.1:19200\n# a run setting in a shared file is ignored\noutput: /etc/haproxy/haproxy.cfg\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errw bytes.Buffer
	if code, msg := runCmd(t, reg(&out, &errw), "--config", file, "--id", "db7", "--validate-config"); code != 0 || !strings.Contains(out.String(), "node db7 at 10.0.0.7:3307") {
		t.Fatalf("register --validate-config: exit %d %q, out %q", code, msg, out.String())
	}
	out.Reset()
	t.Setenv("HACONFD_LISTEN", "127.0.0.1:29200")
	if code, msg := runCmd(t, chk(&out, &errw), "--config", file, "--validate-config"); code != 0 || !strings.Contains(out.String(), "127.0.0.1:29200") {
		t.Fatalf("check --validate-config: exit %d %q, out %q (the environment beats the file)", code, msg, out.String())
	}
}
