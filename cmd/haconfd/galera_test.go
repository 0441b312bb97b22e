package main

import (
	"bytes"
	"errors"
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
		{"register bad port", reg, []string{"--id", "db1", "--ip", "10.0.0.1", "--port", "0"}, nil, "--port 0: not 1-65535"},
		{"register bad layout", reg, []string{"--id", "db1", "--ip", "10.0.0.1", "--layout", "xml"}, nil, `--layout: layout "xml"`},
		{"register bad ttl", reg, []string{"--id", "db1", "--ip", "10.0.0.1", "--ttl", "1500ms"}, nil, "ttl 1.5s: must be whole seconds"},
		{"register bad dsn", reg, []string{"--id", "db1", "--ip", "10.0.0.1", "--mysql-dsn", "nonsense"}, nil, "--mysql-dsn: invalid MySQL DSN"},
		{"register bad env", reg, []string{"--id", "db1"}, map[string]string{"HACONFD_PORT": "x"}, "HACONFD_PORT"},
		{"register unknown flag", reg, []string{"--nope"}, nil, "unknown flag: --nope"},
		{"register bad log level", reg, []string{"--ip", "10.0.0.1", "--log-level", "loud"}, nil, `--log-level "loud"`},
		{"check without dsn", chk, nil, nil, "--mysql-dsn: required"},
		{"check bad timeout", chk, []string{"--mysql-dsn", "u:p@tcp(127.0.0.1:1)/", "--timeout", "0s"}, nil, "--timeout 0s: must be positive"},
		{"check bad listen", chk, []string{"--mysql-dsn", "u:p@tcp(127.0.0.1:1)/", "--listen", "127.0.0.1:99999"}, nil, "--listen 127.0.0.1:99999"},
		{"check dsn from env", chk, []string{"--timeout", "0s"}, map[string]string{"HACONFD_MYSQL_DSN": "u:p@tcp(127.0.0.1:1)/"}, "--timeout 0s"},
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
