package haproxy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseAlerts(t *testing.T) {
	tests := []struct {
		name   string
		output string
		want   []ValidationError
	}{
		{
			name: "2.6 unknown keyword",
			output: `[NOTICE]   (3883) : haproxy version is 2.6.12-1+deb12u4
[NOTICE]   (3883) : path to executable is /usr/sbin/haproxy
[ALERT]    (3883) : config : parsing [bad1.cfg:10] : unknown keyword 'bogus' in 'listen' section
[ALERT]    (3883) : config : Error(s) found in configuration file : bad1.cfg
[ALERT]    (3883) : config : Fatal errors found in configuration.
`,
			want: []ValidationError{{File: "bad1.cfg", Line: 10, Msg: "unknown keyword 'bogus' in 'listen' section"}},
		},
		{
			name: "2.6 several, no space before colon, continuation lines",
			output: `[ALERT]    (3908) : config : parsing [/etc/haproxy/a.cfg:9] : 'tcp-request connection reject' : error detected in proxy 'x' while parsing 'if' condition : no such ACL : 'bar'
[ALERT]    (3908) : config : [/etc/haproxy/a.cfg:10] : 'server x/s1' : unexpected character 'a' in 'agent-inter' argument of server s1..
[ALERT]    (3908) : config : parsing [/etc/haproxy/a.cfg:11]: unmatched quote at position 18:
  unterminated "quote
               ^
[ALERT]    (3908) : config : Error(s) found in configuration file : /etc/haproxy/a.cfg
[ALERT]    (3908) : config : Fatal errors found in configuration.
`,
			want: []ValidationError{
				{File: "/etc/haproxy/a.cfg", Line: 9, Msg: "'tcp-request connection reject' : error detected in proxy 'x' while parsing 'if' condition : no such ACL : 'bar'"},
				{File: "/etc/haproxy/a.cfg", Line: 10, Msg: "'server x/s1' : unexpected character 'a' in 'agent-inter' argument of server s1.."},
				{File: "/etc/haproxy/a.cfg", Line: 11, Msg: "unmatched quote at position 18:"},
			},
		},
		{
			name: "2.6 unresolvable server",
			output: `[ALERT]    (4901) : config : [bad5.cfg:8] : 'server x/s1' : could not resolve address 'nonexistent.invalid'.
[ALERT]    (4901) : config : Failed to initialize server(s) addr.
`,
			want: []ValidationError{{File: "bad5.cfg", Line: 8, Msg: "'server x/s1' : could not resolve address 'nonexistent.invalid'."}},
		},
		{
			name: "2.6 no location",
			output: `[ALERT]    (3885) : config : Proxy 'x': unable to find required use_backend: 'nothere'.
[ALERT]    (3885) : config : Fatal errors found in configuration.
`,
			want: []ValidationError{{Msg: "Proxy 'x': unable to find required use_backend: 'nothere'."}},
		},
		{
			name:   "2.6 cannot open file, no category location",
			output: "[ALERT]    (3355) : config : Cannot open configuration file/directory /nonexist.cfg : No such file or directory\n",
			want:   []ValidationError{{Msg: "Cannot open configuration file/directory /nonexist.cfg : No such file or directory"}},
		},
		{
			name:   "2.6 runtime alert without category",
			output: "[ALERT]    (5540) : [haproxy.main()] Cannot chroot(/nonexistent-dir).\n",
			want:   []ValidationError{{Msg: "[haproxy.main()] Cannot chroot(/nonexistent-dir)."}},
		},
		{
			name:   "2.6 -x failure",
			output: "[WARNING]  (9270) : Failed to connect to the old process socket '/tmp/hcx/nope.sock'\n[ALERT]    (9270) : Failed to get the sockets from the old process!\n",
			want:   []ValidationError{{Msg: "Failed to get the sockets from the old process!"}},
		},
		{
			name:   "pre-2.4 format with timestamp",
			output: "[ALERT] 123/045612 (1234) : parsing [/etc/haproxy/haproxy.cfg:42] : unknown keyword 'foo' in 'backend' section\n[ALERT] 123/045612 (1234) : Error(s) found in configuration file : /etc/haproxy/haproxy.cfg\n",
			want:   []ValidationError{{File: "/etc/haproxy/haproxy.cfg", Line: 42, Msg: "unknown keyword 'foo' in 'backend' section"}},
		},
		{
			name:   "location inside the message",
			output: "[ALERT]    (1) : config : backend 'b' uses a weird thing at [x.cfg:7].\n",
			want:   []ValidationError{{File: "x.cfg", Line: 7, Msg: "backend 'b' uses a weird thing at [x.cfg:7]."}},
		},
		{
			name:   "only summaries are kept when alone",
			output: "[ALERT]    (1) : config : Fatal errors found in configuration.\n",
			want:   []ValidationError{{Msg: "Fatal errors found in configuration."}},
		},
		{
			name:   "warnings only",
			output: "[WARNING]  (4905) : config : missing timeouts for proxy 'x'.\nConfiguration file is valid\n",
			want:   nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseAlerts(tt.output)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d alerts %+v, want %d %+v", len(got), got, len(tt.want), tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("alert %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestInvalidConfigErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		errs []ValidationError
		want string
	}{
		{"one", []ValidationError{{File: "a.cfg", Line: 3, Msg: "bad"}}, "haproxy -c: a.cfg:3: bad"},
		{"more", []ValidationError{{File: "a.cfg", Line: 3, Msg: "bad"}, {Msg: "x"}, {Msg: "y"}}, "haproxy -c: a.cfg:3: bad (+2 more)"},
		{"no location", []ValidationError{{Msg: "Proxy 'x': nope"}}, "haproxy -c: Proxy 'x': nope"},
		{"none", nil, "haproxy -c: haproxy rejected the configuration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := error(&InvalidConfigError{Errors: tt.errs})
			if got := err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Error("errors.Is(ErrInvalidConfig) = false")
			}
			if !errors.Is(wrapErr(err), ErrInvalidConfig) {
				t.Error("errors.Is through a wrap = false")
			}
		})
	}
}

func wrapErr(err error) error { return errors.Join(errors.New("ctx"), err) }

func TestValidate(t *testing.T) {
	requireHAProxy(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	port := freePort(t)
	good := write("good.cfg", "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\nlisten x\n    bind 127.0.0.1:"+itoa(port)+"\n    server s1 127.0.0.1:1\n")
	bad := write("bad.cfg", "defaults\n    mode tcp\nlisten x\n    bind 127.0.0.1:"+itoa(port)+"\n    bogus keyword\n    frobnicate yes\n")

	t.Run("good", func(t *testing.T) {
		if w, err := Validate(t.Context(), haproxyBin, good); err != nil || len(w) != 0 {
			t.Fatalf("Validate(good) = %v, %v", w, err)
		}
	})
	// Warnings are returned, one per [WARNING], with file and line when
	// HAProxy names them; the config is still accepted.
	t.Run("warnings", func(t *testing.T) {
		warn := write("warn.cfg", "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\nlisten x\n    bind 127.0.0.1:"+itoa(port)+"\n    option httplog\n    server s1 127.0.0.1:1\n")
		w, err := Validate(t.Context(), haproxyBin, warn)
		if err != nil || len(w) == 0 {
			t.Fatalf("Validate(warn) = %v, %v; want warnings", w, err)
		}
		if w[0].File != warn || w[0].Line != 8 || !strings.Contains(w[0].Msg, "'option httplog' not usable") {
			t.Fatalf("first warning = %+v", w[0])
		}
	})
	t.Run("bad keyword", func(t *testing.T) {
		_, err := Validate(t.Context(), haproxyBin, bad)
		mustErrorIs(t, err, ErrInvalidConfig)
		var ice *InvalidConfigError
		if !errors.As(err, &ice) {
			t.Fatalf("error %T is not *InvalidConfigError", err)
		}
		if len(ice.Errors) != 2 {
			t.Fatalf("got %d errors, want 2: %+v", len(ice.Errors), ice.Errors)
		}
		e := ice.Errors[0]
		if e.File != bad || e.Line != 5 || !strings.Contains(e.Msg, "unknown keyword 'bogus'") {
			t.Errorf("first error = %+v, want %s:5 unknown keyword 'bogus'", e, bad)
		}
		if ice.Errors[1].Line != 6 {
			t.Errorf("second error line = %d, want 6", ice.Errors[1].Line)
		}
		if want := "haproxy -c: " + bad + ":5: unknown keyword 'bogus' in 'listen' section (+1 more)"; err.Error() != want {
			t.Errorf("Error() = %q, want %q", err.Error(), want)
		}
		if !strings.Contains(ice.Output, "[ALERT]") {
			t.Errorf("Output lacks the raw alerts: %q", ice.Output)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := Validate(t.Context(), haproxyBin, filepath.Join(dir, "nope.cfg"))
		mustErrorIs(t, err, ErrInvalidConfig)
		if !strings.Contains(err.Error(), "Cannot open configuration file") {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("missing binary", func(t *testing.T) {
		_, err := Validate(t.Context(), filepath.Join(dir, "no-haproxy"), good)
		if err == nil || errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("error = %v, want a run error that is not ErrInvalidConfig", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := Validate(ctx, haproxyBin, good)
		mustErrorIs(t, err, context.Canceled)
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestValidateRealAlerts generates alerts with the installed HAProxy and
// checks that each parses to the expected line.
func TestValidateRealAlerts(t *testing.T) {
	requireHAProxy(t)
	dir := t.TempDir()
	port := itoa(freePort(t))
	head := "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\nlisten x\n    bind 127.0.0.1:" + port + "\n" // 7 lines
	tests := []struct {
		name     string
		body     string
		wantLine int
		wantMsg  string
	}{
		{"unresolvable server", head + "    server s1 nonexistent.invalid:1\n", 8, "could not resolve address"},
		{"missing backend", head + "    use_backend nothere\n", 0, "unable to find required use_backend"},
		{"unmatched quote", head + "    server s1 \"127.0.0.1:1\n", 8, "unmatched quote"},
		{"bad port", head + "    bind 127.0.0.1:99999\n", 8, "invalid port '99999'"},
		{"unknown acl", head + "    tcp-request connection reject if nosuchacl\n", 8, "no such ACL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".cfg")
			if err := os.WriteFile(p, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Validate(t.Context(), haproxyBin, p)
			var ice *InvalidConfigError
			if !errors.As(err, &ice) {
				t.Fatalf("Validate = %v, want *InvalidConfigError", err)
			}
			e := ice.Errors[0]
			if e.Line != tt.wantLine || !strings.Contains(e.Msg, tt.wantMsg) {
				t.Errorf("first alert = %+v, want line %d msg containing %q\noutput:\n%s", e, tt.wantLine, tt.wantMsg, ice.Output)
			}
			if tt.wantLine > 0 && e.File != p {
				t.Errorf("file = %q, want %q", e.File, p)
			}
		})
	}
}
