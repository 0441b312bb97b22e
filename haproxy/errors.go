package haproxy

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidConfig is matched (errors.Is) by every *InvalidConfigError: haproxy -c refused the file.
var ErrInvalidConfig = errors.New("haproxy rejected the configuration")

// ErrBindInUse is returned, wrapped with the address, when a bind address
// that the new configuration adds is already taken by another process.
var ErrBindInUse = errors.New("bind address already in use")

// ErrStartFailed is returned, wrapped with the reason, when a new HAProxy
// process failed to start: a non-zero exit code, or a process that died (or
// never answered on its socket) after forking.
var ErrStartFailed = errors.New("haproxy failed to start")

// ErrReloadHeld is returned, wrapped with the reason, when
// Options.BeforeReload refused a start or reload (e.g. a fleet-wide
// reload wave was stopped); the live file and HAProxy are untouched.
var ErrReloadHeld = errors.New("reload held")

// ValidationError is one [ALERT] line of `haproxy -c` output.
type ValidationError struct {
	File string // file named by the alert, "" when the alert names none
	Line int    // line in File, 0 when unknown
	Msg  string // the message, without the "[ALERT] (pid) : config :" prefix and location
}

func (v ValidationError) String() string {
	switch {
	case v.File != "" && v.Line > 0:
		return fmt.Sprintf("%s:%d: %s", v.File, v.Line, v.Msg)
	case v.File != "":
		return fmt.Sprintf("%s: %s", v.File, v.Msg)
	case v.Line > 0:
		return fmt.Sprintf("line %d: %s", v.Line, v.Msg)
	default:
		return v.Msg
	}
}

// InvalidConfigError reports a configuration that `haproxy -c` refused.
// errors.Is(err, ErrInvalidConfig) is true for it.
type InvalidConfigError struct {
	Errors []ValidationError // parsed alerts, in output order; at least one
	Output string            // the full output of haproxy -c
}

// Error returns one line: "haproxy -c: <file>:<line>: <msg> (+N more)".
func (e *InvalidConfigError) Error() string {
	if len(e.Errors) == 0 {
		return "haproxy -c: " + ErrInvalidConfig.Error()
	}
	var b strings.Builder
	b.WriteString("haproxy -c: ")
	b.WriteString(e.Errors[0].String())
	if n := len(e.Errors) - 1; n > 0 {
		fmt.Fprintf(&b, " (+%d more)", n)
	}
	return b.String()
}

// Is reports whether target is ErrInvalidConfig.
func (e *InvalidConfigError) Is(target error) bool { return target == ErrInvalidConfig }
