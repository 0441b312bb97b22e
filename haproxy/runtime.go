package haproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/haproxytech/client-native/v5/runtime"
	"github.com/haproxytech/client-native/v5/runtime/options"
)

// ErrRuntimeRefused is matched (errors.Is) by every *RuntimeError.
var ErrRuntimeRefused = errors.New("runtime API refused a command")

// RuntimeError is a runtime API command that HAProxy answered with an
// error (severity 0-3), or a server that would not drain or go away.
type RuntimeError struct {
	Command string // the command line sent ("a;b" when joined)
	Reply   string // HAProxy's error line, without its "[3]: " severity prefix
}

func (e *RuntimeError) Error() string {
	return fmt.Sprintf("runtime API refused %q: %s", e.Command, e.Reply)
}

// Is reports whether target is ErrRuntimeRefused.
func (e *RuntimeError) Is(target error) bool { return target == ErrRuntimeRefused }

// drainPoll is how often a draining server's sessions are counted.
const drainPoll = 10 * time.Millisecond

// delRetry bounds how long "del server" is retried while HAProxy still
// counts connections on a server in MAINT (HAProxy 2.6).
const delRetry = time.Second

// waitRemovable bounds one "wait <ms> srv-removable" (HAProxy 3.0+), well
// under the runtime client's 30 s per command.
const waitRemovable = 5 * time.Second

// Runtime is a client of HAProxy's runtime API (the admin stats socket),
// through client-native's runtime client, which prefixes each line with
// "set severity-output number" so that every reply line carries its
// severity. Every reply is parsed: HAProxy answers in text even on
// failure. It is safe for concurrent use (one connection per command).
type Runtime struct {
	rt     *runtime.SingleRuntime
	socket string
	log    *slog.Logger
	caps   Caps
}

// NewRuntime returns a client of the stats socket at socket; it does not
// connect until a command is sent. caps are the running HAProxy's
// (Version.Caps): they choose how a server is deleted.
func NewRuntime(socket string, log *slog.Logger, caps Caps) (*Runtime, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rt := &runtime.SingleRuntime{}
	if err := rt.Init(socket, 0, 0, options.RuntimeOptions{DoNotCheckRuntimeOnInit: true}); err != nil {
		return nil, fmt.Errorf("runtime API on %s: %w", socket, err)
	}
	return &Runtime{rt: rt, socket: socket, log: log, caps: caps}, nil
}

// Exec sends one line (commands joined with ';' run in order, in one
// round trip) and parses the reply: any reply line with severity 0-3
// makes a *RuntimeError.
func (r *Runtime) Exec(line string) (string, error) {
	r.log.Debug("runtime command", "line", line)
	reply, err := r.rt.ExecuteRaw(line)
	if err != nil {
		return "", fmt.Errorf("runtime API %q on %s: %w", line, r.socket, err)
	}
	if msg, bad := replyError(reply); bad {
		return reply, &RuntimeError{Command: line, Reply: msg}
	}
	return reply, nil
}

// replyError finds the first error line ("[0]:" to "[3]:") of a reply.
func replyError(reply string) (string, bool) {
	for _, l := range strings.Split(reply, "\n") {
		l = strings.TrimSpace(l)
		if len(l) >= 4 && l[0] == '[' && l[1] >= '0' && l[1] <= '3' && l[2] == ']' && l[3] == ':' {
			return strings.TrimSpace(l[4:]), true
		}
	}
	return "", false
}

// Sessions returns the current session count (show stat "scur") of one server.
func (r *Runtime) Sessions(backend, server string) (int, error) {
	reply, err := r.Exec("show stat " + backend + " 4 -1")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(reply))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	col := -1
	for sc.Scan() {
		line := sc.Text()
		if h, ok := strings.CutPrefix(line, "# "); ok {
			for i, name := range strings.Split(h, ",") {
				if name == "scur" {
					col = i
				}
			}
			continue
		}
		f := strings.Split(line, ",")
		if col < 0 || len(f) <= col || f[0] != backend || f[1] != server {
			continue
		}
		n, err := strconv.Atoi(f[col])
		if err != nil {
			return 0, fmt.Errorf("show stat %s/%s: scur %q: %w", backend, server, f[col], err)
		}
		return n, nil
	}
	return 0, &RuntimeError{Command: "show stat " + backend + " 4 -1", Reply: "no line for server " + server}
}

// ServersState reads "show servers state": every server of the running
// HAProxy.
func (r *Runtime) ServersState() (LiveState, error) {
	reply, err := r.Exec("show servers state")
	if err != nil {
		return nil, err
	}
	return ParseServersState(reply)
}

// Info reads "show info" (Pid, Uptime_sec, Stopping, Version, ...).
func (r *Runtime) Info() (map[string]string, error) {
	reply, err := r.Exec("show info")
	if err != nil {
		return nil, err
	}
	info := make(map[string]string)
	for _, l := range strings.Split(reply, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && k != "" && !strings.ContainsAny(k, " \t") {
			info[k] = strings.TrimSpace(v)
		}
	}
	if _, ok := info["Pid"]; !ok {
		return nil, fmt.Errorf("show info on %s: unexpected reply: %q", r.socket, firstLine(strings.TrimSpace(reply)))
	}
	return info, nil
}

// Send sends what op does at once (op.NowLine) in one round trip.
func (r *Runtime) Send(op ServerOp) error {
	line := op.NowLine()
	if line == "" {
		return nil
	}
	_, err := r.Exec(line)
	return err
}

// FinishDrain completes a removal or a freed slot that Send started
// (the server is draining): it waits until the server has no sessions,
// at most timeout, then ends the remaining ones with "shutdown sessions",
// and sends op.AfterDrain (maint, then del server or the placeholder
// address). A ctx canceled while waiting returns ctx's error with the
// server left draining; HAProxy no longer knowing the server (a reload
// dropped it) ends the drain without error.
func (r *Runtime) FinishDrain(ctx context.Context, op ServerOp, timeout time.Duration) error {
	if err := r.drain(ctx, op.Backend, op.Server, timeout); err != nil {
		if gone(err) {
			return nil
		}
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, step := range op.AfterDrain() {
		var err error
		if strings.HasPrefix(step, "del server ") {
			err = r.del(op.Backend, op.Server)
		} else {
			_, err = r.Exec(step)
		}
		if err != nil {
			if gone(err) {
				return nil
			}
			return err
		}
	}
	return nil
}

// gone reports whether err says HAProxy has no such backend or server.
func gone(err error) bool {
	var re *RuntimeError
	if !errors.As(err, &re) {
		return false
	}
	m := strings.ToLower(re.Reply)
	return strings.Contains(m, "no such server") || strings.Contains(m, "no such backend") || strings.Contains(m, "no line for server")
}

// drain waits until backend/server has no sessions, at most timeout, then
// ends the remaining ones with "shutdown sessions". ctx ending stops the
// wait with its error.
func (r *Runtime) drain(ctx context.Context, backend, server string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := r.Sessions(backend, server)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			r.log.Info("drain timeout: shutting down sessions", "backend", backend, "server", server, "sessions", n, "drain_timeout", timeout)
			_, err := r.Exec("shutdown sessions server " + backend + "/" + server)
			return err
		}
		t := time.NewTimer(drainPoll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// del deletes a server in MAINT: on HAProxy 3.0+ after "wait
// srv-removable" (delAfterWait), before that by retrying briefly while
// HAProxy still counts connections on it.
func (r *Runtime) del(backend, server string) error {
	if r.caps.WaitRemovable {
		return r.delAfterWait(backend, server)
	}
	id := backend + "/" + server
	deadline := time.Now().Add(delRetry)
	for {
		_, err := r.Exec("del server " + id)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		var re *RuntimeError
		if !errors.As(err, &re) || !strings.Contains(re.Reply, "connection") {
			return err
		}
		if _, err := r.Exec("shutdown sessions server " + id); err != nil {
			return err
		}
		time.Sleep(drainPoll)
	}
}

// delAfterWait is HAProxy 3.0's documented removal of a server in MAINT:
// "wait srv-removable" blocks until no connection is left (at most
// waitRemovable), then "del server". Connections that outlast the wait
// are shut down and waited for once more.
func (r *Runtime) delAfterWait(backend, server string) error {
	id := backend + "/" + server
	wait := fmt.Sprintf("wait %d srv-removable %s", waitRemovable.Milliseconds(), id)
	for attempt := 1; ; attempt++ {
		reply, err := r.Exec(wait)
		if err != nil && gone(err) {
			return err
		}
		if err == nil && strings.Contains(reply, "Done") {
			break
		}
		if attempt == 2 {
			if err == nil {
				err = fmt.Errorf("%q answered %q", wait, strings.TrimSpace(reply))
			}
			return fmt.Errorf("del server %s: not removable: %w", id, err)
		}
		r.log.Info("connections outlast wait srv-removable: shutting them down", "backend", backend, "server", server)
		if _, err := r.Exec("shutdown sessions server " + id); err != nil {
			return err
		}
	}
	_, err := r.Exec("del server " + id)
	return err
}

// serversState returns "show servers state" with only the lines of servers
// whose effective definition (address and options, default-server
// included) is the same in live and next. HAProxy restores port, weight,
// admin and health state from this file on reload, even over a changed
// configuration: a server that the reload changes must start from the
// configuration, not from its old state.
func (r *Runtime) serversState(live, next []byte) ([]byte, int, error) {
	reply, err := r.Exec("show servers state")
	if err != nil {
		return nil, 0, err
	}
	lc, lerr := parseConfig(live, nil)
	nc, nerr := parseConfig(next, nil)
	var b strings.Builder
	kept := 0
	for i, line := range strings.Split(strings.TrimSpace(reply), "\n") {
		if i == 0 || strings.HasPrefix(line, "#") {
			b.WriteString(line + "\n")
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || lerr != nil || nerr != nil {
			continue
		}
		a, aok := lc.serverPrint(f[1], f[3])
		z, zok := nc.serverPrint(f[1], f[3])
		if aok && zok && a == z {
			b.WriteString(line + "\n")
			kept++
		}
	}
	return []byte(b.String()), kept, nil
}

// serverPrint identifies what a server line means, default-server included.
func (c *config) serverPrint(backend, server string) (string, bool) {
	for _, s := range c.sections {
		if !s.isProxy() || s.name != backend {
			continue
		}
		srv := s.byName[server]
		if srv == nil {
			return "", false
		}
		e := s.effective(srv)
		return srv.addr + " " + otherOptions(e.opts) + fmt.Sprintf(" weight=%d disabled=%t", e.weight, e.disabled), true
	}
	return "", false
}
