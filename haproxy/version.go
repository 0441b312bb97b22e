package haproxy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Version is an HAProxy release, as `haproxy -v` names it. Values order
// with Compare; a development or release-candidate build ("3.1-dev5")
// counts as its branch's first release (3.1.0).
type Version struct {
	Major, Minor, Patch int
	// Build is the version as printed ("2.6.12-1+deb12u4"), for people;
	// Compare ignores it.
	Build string
}

// Caps are what an HAProxy release offers beyond 2.6, the oldest haconfd
// runs on, that changes how haconfd applies a change. The zero value is
// 2.6's.
type Caps struct {
	// AddCookie (3.0+): "add server" takes "cookie"; on 2.6 a server
	// with a cookie is added by a reload.
	AddCookie bool
	// WaitRemovable (3.0+): "wait <ms> srv-removable <srv>" blocks until
	// a server in maintenance has no connection left, so "del server"
	// follows at once; on 2.6 haconfd retries "del server" while HAProxy
	// still counts connections on it.
	WaitRemovable bool
	// ReloadStatus (2.7+): the master CLI "reload" answers once the new
	// worker is up or has failed, "Success=1" or "Success=0" followed by
	// the startup logs; on 2.6 it answers nothing and haconfd polls
	// "show proc" for a new worker and the failure counter.
	ReloadStatus bool
}

// Caps returns what v offers (see Caps).
func (v Version) Caps() Caps {
	return Caps{
		AddCookie:     v.AtLeast(3, 0),
		WaitRemovable: v.AtLeast(3, 0),
		ReloadStatus:  v.AtLeast(2, 7),
	}
}

// Methods names the method haconfd uses for each capability, for logs
// and /status: "add server with cookie" or "reload for cookie", ...
func (c Caps) Methods() []string {
	pick := func(ok bool, yes, no string) string {
		if ok {
			return yes
		}
		return no
	}
	return []string{
		pick(c.ReloadStatus, "master reload: Success= answer", "master reload: show proc polled"),
		pick(c.WaitRemovable, "del server after wait srv-removable", "del server retried while connections remain"),
		pick(c.AddCookie, "add server with cookie", "server with cookie: reload"),
	}
}

// MinMajor and MinMinor name the oldest HAProxy branch haconfd runs on.
const (
	MinMajor = 2
	MinMinor = 6
)

// ErrVersion marks a binary whose `-v` output names no HAProxy version.
var ErrVersion = errors.New("no HAProxy version")

// ErrUnsupportedVersion marks an HAProxy older than MinMajor.MinMinor.
var ErrUnsupportedVersion = errors.New("unsupported HAProxy version")

// String is the version as printed when known, else Major.Minor.Patch.
func (v Version) String() string {
	if v.Build != "" {
		return v.Build
	}
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// Compare returns -1, 0 or +1 as v is older than, the same as, or newer
// than w.
func (v Version) Compare(w Version) int {
	if c := cmp.Compare(v.Major, w.Major); c != 0 {
		return c
	}
	if c := cmp.Compare(v.Minor, w.Minor); c != 0 {
		return c
	}
	return cmp.Compare(v.Patch, w.Patch)
}

// AtLeast reports whether v is release major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	return v.Compare(Version{Major: major, Minor: minor}) >= 0
}

// Supported returns nil when haconfd runs on v, or an error that says
// why not (errors.Is ErrUnsupportedVersion).
func (v Version) Supported() error {
	if v.AtLeast(MinMajor, MinMinor) {
		return nil
	}
	return fmt.Errorf("%w: %s is older than %d.%d, the oldest haconfd runs on", ErrUnsupportedVersion, v, MinMajor, MinMinor)
}

// versionLine matches the first line of `haproxy -v`: "HAProxy version
// 2.6.12-1+deb12u4 2023/03/20 - https://haproxy.org/", "HAProxy version
// 3.1-dev5-0f0d2b5 2024/08/01", and 1.x's "HA-Proxy version 1.8.19".
var versionLine = regexp.MustCompile(`^HA-?Proxy version ([0-9]{1,4})\.([0-9]{1,4})(?:\.([0-9]{1,6}))?(?:[-+~ ]|$)`)

// ParseVersion reads the version from the output of `haproxy -v` (or
// -vv): the first line that starts with "HAProxy version".
func ParseVersion(out string) (Version, error) {
	for line := range strings.Lines(out) {
		m := versionLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		v := Version{Build: buildOf(line)}
		v.Major, _ = strconv.Atoi(m[1])
		v.Minor, _ = strconv.Atoi(m[2])
		if m[3] != "" {
			v.Patch, _ = strconv.Atoi(m[3])
		}
		return v, nil
	}
	return Version{}, fmt.Errorf("%w: printed %s, not a line like \"HAProxy version 2.6.12 ...\"", ErrVersion, quoteStart(out))
}

// buildOf is the version word of a "HAProxy version X ..." line.
func buildOf(line string) string {
	f := strings.Fields(line)
	if len(f) < 3 {
		return ""
	}
	return f[2]
}

// quoteStart quotes the first line of out, cut at 80 bytes.
func quoteStart(out string) string {
	first, _, more := strings.Cut(strings.TrimSpace(out), "\n")
	if first == "" {
		return "nothing"
	}
	if len(first) > 80 {
		first, more = first[:80], true
	}
	if more {
		return strconv.Quote(first) + " ..."
	}
	return strconv.Quote(first)
}

// versionTimeout bounds `haproxy -v`, which returns at once.
const versionTimeout = 10 * time.Second

// BinaryVersion runs `bin -v` and parses what it prints. Errors name
// the command; a binary that runs but names no version gives
// errors.Is ErrVersion.
func BinaryVersion(ctx context.Context, bin string) (Version, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-v")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if out.Len() > 0 {
			return Version{}, fmt.Errorf("%s -v: %w: printed %s", bin, err, quoteStart(out.String()))
		}
		return Version{}, fmt.Errorf("%s -v: %w", bin, err)
	}
	v, err := ParseVersion(out.String())
	if err != nil {
		return Version{}, fmt.Errorf("%s -v: %w", bin, err)
	}
	return v, nil
}
