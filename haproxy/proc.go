package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// socketTimeout bounds one stats socket exchange when ctx has no closer deadline.
const socketTimeout = 2 * time.Second

// ShowInfo runs "show info" on the HAProxy stats socket and returns its
// key/value pairs (Pid, Uptime_sec, Stopping, ...).
func ShowInfo(ctx context.Context, socket string) (map[string]string, error) {
	reply, err := socketCommand(ctx, socket, "show info")
	if err != nil {
		return nil, err
	}
	info := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(reply))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			continue
		}
		info[k] = strings.TrimSpace(v)
	}
	if _, ok := info["Pid"]; !ok {
		first, _, _ := strings.Cut(strings.TrimSpace(string(reply)), "\n")
		if first == "" {
			first = "empty reply"
		}
		return nil, fmt.Errorf("show info on %s: unexpected reply: %q", socket, first)
	}
	return info, nil
}

// socketCommand sends one command to a stats socket (non-interactive mode:
// HAProxy answers and closes) and returns the whole reply.
func socketCommand(ctx context.Context, socket, command string) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", command, socket, err)
	}
	defer func() { _ = conn.Close() }()
	deadline := time.Now().Add(socketTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("%s on %s: %w", command, socket, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(conn, command+"\n"); err != nil {
		return nil, fmt.Errorf("%s on %s: %w", command, socket, err)
	}
	reply, err := io.ReadAll(io.LimitReader(conn, 1<<20))
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("%s on %s: %w", command, socket, err)
	}
	return reply, nil
}

// readPIDFile returns the pids listed in path; none when it does not exist.
func readPIDFile(path string) ([]int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pidfile: %w", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("read pidfile %s: bad pid %q", path, f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// alive reports whether pid exists and is not a zombie (kill -0 succeeds on
// a zombie, and an orphaned HAProxy may stay one when nothing reaps it).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist)
	}
	// "pid (comm) S ...": the state follows the last ')'.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		switch stat[i+2] {
		case 'Z', 'X', 'x':
			return false
		}
	}
	return true
}

func alivePIDs(pids []int) []int {
	var out []int
	for _, p := range pids {
		if alive(p) {
			out = append(out, p)
		}
	}
	return out
}

// launch runs a command that starts HAProxy in daemon mode (it returns once
// the daemon has forked). Its output goes to a temp file rather than a
// pipe, so that the daemon cannot keep us waiting, and so that what the
// child prints after the fork (e.g. "Cannot chroot") can still be read.
// The returned outFile must be removed by the caller.
func launch(ctx context.Context, name string, args, env []string) (outFile string, err error) {
	f, err := os.CreateTemp("", "haconfd-haproxy-*.log")
	if err != nil {
		return "", fmt.Errorf("start %s: output file: %w", name, err)
	}
	outFile = f.Name()
	defer func() { _ = f.Close() }()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Env = env
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return outFile, err
	}
	return outFile, nil
}

// readOutput returns the contents of a launch output file ("" if unreadable).
func readOutput(path string) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
