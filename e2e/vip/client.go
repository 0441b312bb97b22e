package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// runClient is `vip client`, run in the client namespace: -workers
// loops, each making one new connection to -addr at a time, every
// -interval, reading the backend's line ("<backend> <address HAProxy
// connected from>", so the load balancer that served it is known). Several
// loops, so that one connection stuck until its timeout (accepted by a
// load balancer that gave the address up right after) does not hide when
// the others get through. It prints one line per attempt, "<unix ns> ok
// <backend> <lb address>" or "<unix ns> fail <error>", until killed.
func runClient(args []string) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	addr := fs.String("addr", "", "address to connect to (the virtual IP and port)")
	workers := fs.Int("workers", 4, "concurrent loops")
	interval := fs.Duration("interval", 20*time.Millisecond, "pause between a loop's attempts")
	dial := fs.Duration("dial-timeout", 250*time.Millisecond, "bound on a connect")
	if err := fs.Parse(args); err != nil || *addr == "" || *workers < 1 {
		fmt.Fprintln(os.Stderr, "vip client: -addr HOST:PORT is required, -workers at least 1")
		return 2
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	gone := make(chan struct{})
	var once sync.Once
	for range *workers {
		go func() {
			for {
				line, err := ask(*addr, *dial)
				now := time.Now().UnixNano()
				mu.Lock()
				if err != nil {
					fmt.Fprintf(w, "%d fail %s\n", now, strings.ReplaceAll(err.Error(), "\n", " "))
				} else {
					fmt.Fprintf(w, "%d ok %s\n", now, line)
				}
				ferr := w.Flush()
				mu.Unlock()
				if ferr != nil {
					once.Do(func() { close(gone) }) // the parent is gone
					return
				}
				time.Sleep(*interval)
			}
		}()
	}
	<-gone
	return 0
}

func ask(addr string, dial time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, dial)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", fmt.Errorf("unexpected reply %q", line)
	}
	return f[0] + " " + f[1], nil
}

// attempt is one connection of the client.
type attempt struct {
	at      time.Time
	ok      bool
	backend string
	lb      string // address of the load balancer that served it
	err     string
}

// clientLog collects the client's attempts.
type clientLog struct {
	mu   sync.Mutex
	all  []attempt
	cmd  *exec.Cmd
	done chan struct{}
}

func startClient(cmd *exec.Cmd) (*clientLog, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	l := &clientLog{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.read(out)
		_ = cmd.Wait()
	}()
	return l, nil
}

func (l *clientLog) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 3)
		if len(f) < 3 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		a := attempt{at: time.Unix(0, ns), ok: f[1] == "ok"}
		if a.ok {
			a.backend, a.lb, _ = strings.Cut(f[2], " ")
		} else {
			a.err = f[2]
		}
		l.mu.Lock()
		l.all = append(l.all, a)
		l.mu.Unlock()
	}
}

// between returns the attempts in [from, to].
func (l *clientLog) between(from, to time.Time) []attempt {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []attempt
	for _, a := range l.all {
		if !a.at.Before(from) && !a.at.After(to) {
			out = append(out, a)
		}
	}
	return out
}

// lastOK is the newest successful attempt (and whether there is one).
func (l *clientLog) lastOK() (attempt, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.all) - 1; i >= 0; i-- {
		if l.all[i].ok {
			return l.all[i], true
		}
	}
	return attempt{}, false
}

// dump writes every attempt to path, one per line (kept with the logs).
func (l *clientLog) dump(path string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, a := range l.all {
		if a.ok {
			fmt.Fprintf(&b, "%s ok %s %s\n", a.at.Format("15:04:05.000000"), a.backend, a.lb)
		} else {
			fmt.Fprintf(&b, "%s fail %s\n", a.at.Format("15:04:05.000000"), a.err)
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func (l *clientLog) stop() {
	if l.cmd.Process != nil {
		_ = l.cmd.Process.Kill()
	}
	<-l.done
}
