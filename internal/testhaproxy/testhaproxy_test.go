package testhaproxy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "haproxy")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFind(t *testing.T) {
	fake := script(t, `echo "HAProxy version 3.0.11-1+deb13u5 2026/11/18 - https://haproxy.org/"; echo "Status: long-term supported branch"`)
	tests := []struct {
		name    string
		env     string
		want    string // String()
		wantErr string
	}{
		{"env names the binary", fake, "haproxy 3.0.11-1+deb13u5 (" + fake + ")", ""},
		{"env names a missing file", "/nonexistent/haproxy", "", "HACONFD_TEST_HAPROXY=/nonexistent/haproxy: "},
		{"env names something else", script(t, "echo nginx version: nginx/1.22.1"), "", `-v printed "nginx version: nginx/1.22.1": not HAProxy`},
		{"env names a failing binary", script(t, "echo broken >&2; exit 1"), "", "exit status 1: broken"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvVar, tc.env)
			b, err := Find()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Find() = %v, %v; want error containing %q", b, err, tc.wantErr)
				}
				return
			}
			if err != nil || b.String() != tc.want {
				t.Fatalf("Find() = %v, %v; want %s", b, err, tc.want)
			}
		})
	}
}

// Without the variable: haproxy on PATH wins over /usr/sbin/haproxy.
func TestFindOnPATH(t *testing.T) {
	fake := script(t, `echo "HAProxy version 2.8.5 2023/12/07"`)
	t.Setenv(EnvVar, "")
	t.Setenv("PATH", filepath.Dir(fake))
	b, err := Find()
	if err != nil || b.Path != fake || b.Release() != "2.8.5" {
		t.Fatalf("Find() = %+v, %v; want %s", b, err, fake)
	}
}

func TestRequired(t *testing.T) {
	for _, tc := range []struct{ ci, env, want string }{
		{"", "", ""},
		{"false", "", ""},
		{"true", "", "CI=true"},
		{"", "/x/haproxy", "HACONFD_TEST_HAPROXY is set"},
	} {
		t.Setenv("CI", tc.ci)
		t.Setenv(EnvVar, tc.env)
		if got := required(); got != tc.want {
			t.Errorf("CI=%q %s=%q: required() = %q, want %q", tc.ci, EnvVar, tc.env, got, tc.want)
		}
	}
}

func TestShimPATH(t *testing.T) {
	fake := script(t, `echo "HAProxy version 3.0.11 2026/11/18"`)
	dir := t.TempDir()
	path, err := Binary{Path: fake}.ShimPATH(dir, "/usr/bin:/bin")
	if err != nil {
		t.Fatal(err)
	}
	if want := dir + ":/usr/bin:/bin"; path != want {
		t.Fatalf("PATH = %q, want %q", path, want)
	}
	t.Setenv("PATH", path)
	got, err := exec.LookPath("haproxy")
	if err != nil || got != filepath.Join(dir, "haproxy") {
		t.Fatalf("LookPath = %q, %v", got, err)
	}
	if out, err := exec.Command("haproxy", "-v").Output(); err != nil || !strings.HasPrefix(string(out), "HAProxy version 3.0.11") {
		t.Fatalf("haproxy -v through the shim: %q, %v", out, err)
	}
}
