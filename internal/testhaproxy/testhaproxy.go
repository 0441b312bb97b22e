// Package testhaproxy finds the HAProxy binary that tests, the demo and
// the benchmarks run against, so that one switch runs all of them on
// another HAProxy:
//
//	HACONFD_TEST_HAPROXY=.cache/haproxy-3.0/bin/haproxy go test ./e2e
//
// Without the variable it is "haproxy" on PATH, else /usr/sbin/haproxy
// (Debian's package; /usr/sbin is not on every user's PATH). It is test
// support: the daemon never imports it.
package testhaproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// EnvVar names the binary to test against (a path, or a name looked up
// on PATH).
const EnvVar = "HACONFD_TEST_HAPROXY"

// debianPath is where Debian's package installs HAProxy.
const debianPath = "/usr/sbin/haproxy"

// Binary is the HAProxy the tests run against.
type Binary struct {
	Path string // absolute
	// Line is the first line of `haproxy -v`, e.g. "HAProxy version
	// 3.0.11-1+deb13u5 2026/11/18 - https://haproxy.org/".
	Line string
}

// Release is the version word of Line ("3.0.11-1+deb13u5"), or Line.
func (b Binary) Release() string {
	f := strings.Fields(b.Line)
	if len(f) >= 3 && f[1] == "version" {
		return f[2]
	}
	return b.Line
}

// String is "haproxy 3.0.11-1+deb13u5 (/path/to/haproxy)", the line the
// test packages print.
func (b Binary) String() string {
	return fmt.Sprintf("haproxy %s (%s)", b.Release(), b.Path)
}

// Find resolves the binary: $HACONFD_TEST_HAPROXY when set (never
// anything else then), else haproxy on PATH, else /usr/sbin/haproxy; and
// runs it with -v. The error says what was tried and how to fix it.
func Find() (Binary, error) {
	name, explicit := os.LookupEnv(EnvVar)
	var path string
	var err error
	if explicit && name != "" {
		if path, err = exec.LookPath(name); err != nil {
			return Binary{}, fmt.Errorf("%s=%s: %w", EnvVar, name, err)
		}
	} else if path, err = exec.LookPath("haproxy"); err != nil {
		if _, serr := os.Stat(debianPath); serr != nil {
			return Binary{}, fmt.Errorf("no haproxy on PATH nor at %s (apt-get install -y haproxy, or set %s): %w", debianPath, EnvVar, err)
		}
		path = debianPath
	}
	if path, err = filepath.Abs(path); err != nil {
		return Binary{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "-v")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return Binary{}, fmt.Errorf("%s -v: %w: %s", path, err, strings.TrimSpace(out.String()))
	}
	line, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
	if !strings.HasPrefix(line, "HAProxy version ") {
		return Binary{}, fmt.Errorf("%s -v printed %q: not HAProxy", path, line)
	}
	return Binary{Path: path, Line: strings.TrimSpace(line)}, nil
}

// InCI reports whether the tests run in CI (CI=true), where a missing
// tool fails the run instead of skipping.
func InCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// required reports why a missing binary fails the tests instead of
// skipping them ("" when it may skip): in CI, or when $HACONFD_TEST_HAPROXY
// asked for a binary.
func required() string {
	switch {
	case InCI():
		return "CI=true"
	case os.Getenv(EnvVar) != "":
		return EnvVar + " is set"
	}
	return ""
}

// Require returns the binary, or ends the test: it fails in CI or when
// $HACONFD_TEST_HAPROXY names a binary that does not work, and is
// skipped elsewhere when there is no usable HAProxy.
func Require(t testing.TB) Binary {
	t.Helper()
	b, err := Find()
	if err != nil {
		if why := required(); why != "" {
			t.Fatalf("HAProxy required (%s): %v", why, err)
		}
		t.Skipf("HAProxy not available: %v", err)
	}
	return b
}

// Announce is for TestMain: it finds the binary and prints "<pkg>:
// haproxy 3.0.11-1+deb13u5 (/path)" on stderr (go test shows it with -v
// and when the package fails). Without a binary it prints why and
// returns the error in CI or when $HACONFD_TEST_HAPROXY is set; elsewhere
// it returns nil and the tests that Require one skip.
func Announce(pkg string) (Binary, error) {
	b, err := Find()
	if err != nil {
		if why := required(); why != "" {
			return b, fmt.Errorf("%s: HAProxy required (%s): %w", pkg, why, err)
		}
		fmt.Fprintf(os.Stderr, "%s: tests that need HAProxy skip: %v\n", pkg, err)
		return b, nil
	}
	fmt.Fprintf(os.Stderr, "%s: %s\n", pkg, b)
	return b, nil
}

// ShimPATH makes dir (created if needed) hold "haproxy", a symlink to b.Path, and
// returns path with dir in front: for processes a test starts that look
// haproxy up on PATH themselves (haconfd's default --haproxy-bin, a confd
// check_cmd, a deployment's script).
func (b Binary) ShimPATH(dir, path string) (string, error) {
	if b.Path == "" {
		return "", errors.New("testhaproxy: no binary to put on PATH")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("testhaproxy: %w", err)
	}
	if err := os.Symlink(b.Path, filepath.Join(dir, "haproxy")); err != nil {
		return "", fmt.Errorf("testhaproxy: %w", err)
	}
	if path == "" {
		return dir, nil
	}
	return dir + string(os.PathListSeparator) + path, nil
}
