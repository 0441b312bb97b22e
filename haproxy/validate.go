package haproxy

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Validate runs `bin -c -f path` and returns nil when HAProxy accepts the
// file, with the [WARNING] lines it printed (a deprecated keyword, an
// option ignored in this mode...), an *InvalidConfigError (errors.Is
// ErrInvalidConfig) when it refuses it, or another error when HAProxy
// could not be run at all.
func Validate(ctx context.Context, bin, path string) ([]ValidationError, error) {
	cmd := exec.CommandContext(ctx, bin, "-c", "-f", path)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err == nil {
		return ParseWarnings(string(out)), nil
	}
	return nil, invalid(ctx, bin, path, out, err)
}

// invalid turns a failed `haproxy -c` into the error Validate returns.
func invalid(ctx context.Context, bin, path string, out []byte, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("validate %s: %w", path, ctxErr)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() < 0 {
		return fmt.Errorf("validate %s: run %s -c: %w", path, bin, err)
	}
	errs := ParseAlerts(string(out))
	if len(errs) == 0 {
		errs = []ValidationError{{Msg: fallbackMessage(string(out), err)}}
	}
	return &InvalidConfigError{Errors: errs, Output: string(out)}
}

// ParseWarnings extracts the [WARNING] lines of HAProxy output, in order,
// as ParseAlerts does for alerts; the closing "Warnings were found."
// repeats them and is dropped.
func ParseWarnings(output string) []ValidationError {
	var out []ValidationError
	for _, raw := range strings.Split(output, "\n") {
		line := strings.TrimSpace(raw)
		loc := warningPrefix.FindStringIndex(line)
		if loc == nil {
			continue
		}
		if v, ok := parseAlert(line[loc[1]:]); ok && !strings.HasPrefix(v.Msg, "Warnings were found") {
			out = append(out, v)
		}
	}
	return out
}

var (
	// "[WARNING]  (1234) : rest", as alertPrefix.
	warningPrefix = regexp.MustCompile(`^\[WARNING\]\s*(?:\d+/\d+\s*)?(?:\(\d+\)\s*)?:\s*`)
	// "[ALERT]    (1234) : rest", "[ALERT] 123/045612 (1234) : rest" (HAProxy < 2.4),
	// "[ALERT] (1234) : rest".
	alertPrefix = regexp.MustCompile(`^\[ALERT\]\s*(?:\d+/\d+\s*)?(?:\(\d+\)\s*)?:\s*`)
	// "config : " category introduced in HAProxy 2.4.
	alertCategory = regexp.MustCompile(`^([a-z][a-z0-9_-]*) : `)
	// "parsing [file:line] : msg", "parsing [file:line]: msg", "[file:line] : msg".
	alertLeadingLoc = regexp.MustCompile(`^(?:parsing\s+)?\[(.+?):(\d+)\]\s*:?\s*`)
	// A location anywhere in the message.
	alertAnyLoc = regexp.MustCompile(`\[([^\[\]\s]+):(\d+)\]`)
)

// summaryAlerts are closing lines that repeat what the other alerts said.
var summaryAlerts = []string{
	"Error(s) found in configuration file",
	"Fatal errors found in configuration",
	"Failed to initialize server(s) addr",
}

// ParseAlerts extracts the [ALERT] lines of HAProxy output, in order.
// Summary lines ("Fatal errors found in configuration.") are dropped unless
// they are the only alerts.
func ParseAlerts(output string) []ValidationError {
	var errs, summaries []ValidationError
	for _, raw := range strings.Split(output, "\n") {
		line := strings.TrimSpace(raw)
		loc := alertPrefix.FindStringIndex(line)
		if loc == nil {
			continue
		}
		v, ok := parseAlert(line[loc[1]:])
		if !ok {
			continue
		}
		if isSummary(v.Msg) {
			summaries = append(summaries, v)
			continue
		}
		errs = append(errs, v)
	}
	if len(errs) == 0 {
		return summaries
	}
	return errs
}

func parseAlert(rest string) (ValidationError, bool) {
	rest = strings.TrimSpace(rest)
	if m := alertCategory.FindStringSubmatch(rest); m != nil && m[1] != "parsing" {
		rest = rest[len(m[0]):]
	}
	if rest == "" {
		return ValidationError{}, false
	}
	var v ValidationError
	if m := alertLeadingLoc.FindStringSubmatchIndex(rest); m != nil {
		v.File = rest[m[2]:m[3]]
		v.Line, _ = strconv.Atoi(rest[m[4]:m[5]])
		v.Msg = strings.TrimSpace(rest[m[1]:])
		if v.Msg == "" {
			v.Msg = rest
		}
		return v, true
	}
	v.Msg = rest
	if m := alertAnyLoc.FindStringSubmatch(rest); m != nil {
		v.File = m[1]
		v.Line, _ = strconv.Atoi(m[2])
	}
	return v, true
}

func isSummary(msg string) bool {
	for _, s := range summaryAlerts {
		if strings.HasPrefix(msg, s) {
			return true
		}
	}
	return false
}

// fallbackMessage is used when haproxy failed without any [ALERT] line.
func fallbackMessage(output string, err error) string {
	lines := strings.Split(strings.TrimSpace(output), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l != "" && !strings.HasPrefix(l, "[NOTICE]") {
			return l
		}
	}
	return err.Error()
}

// firstAlert returns the first [ALERT] of output as one line, or "".
func firstAlert(output string) string {
	errs := ParseAlerts(output)
	if len(errs) == 0 {
		return ""
	}
	return errs[0].String()
}
