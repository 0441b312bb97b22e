package main

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// conn is one client connection through a frontend: when it was dialed,
// when it ended, and which backend answered (-1: it failed, err says how).
type conn struct {
	start, end time.Time
	backend    int
	err        string
}

// load is the client: -clients loops per frontend, each making one new
// connection at a time (read the backend's id, close), a pause between.
type load struct {
	mu    sync.Mutex
	conns [][]conn // per load balancer
	wg    sync.WaitGroup
}

func (e *env) startLoad(ctx context.Context) {
	e.load = &load{conns: make([][]conn, len(e.lbs))}
	for i, l := range e.lbs {
		for range e.f.clients {
			e.load.wg.Go(func() { e.load.loop(ctx, i, l.front, e.backendIndex) })
		}
	}
}

func (ld *load) loop(ctx context.Context, lb int, addr string, backend func(string) int) {
	d := net.Dialer{Timeout: time.Second}
	for ctx.Err() == nil {
		c := conn{start: time.Now(), backend: -1}
		id, err := ask(ctx, &d, addr)
		c.end = time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.err = errKind(err)
		} else if c.backend = backend(id); c.backend < 0 {
			c.err = "unknown backend " + id
		}
		ld.mu.Lock()
		ld.conns[lb] = append(ld.conns[lb], c)
		ld.mu.Unlock()
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func ask(ctx context.Context, d *net.Dialer, addr string) (string, error) {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// errKind is a short, stable name for a connection's failure.
func errKind(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if strings.Contains(err.Error(), "EOF") {
		return "closed without reply"
	}
	return err.Error()
}

// since returns lb's connections from index from on, and the next index.
func (ld *load) since(lb, from int) ([]conn, int) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	all := ld.conns[lb]
	return all[from:len(all):len(all)], len(all)
}

func (ld *load) total() (n, failed int) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for _, cs := range ld.conns {
		n += len(cs)
		for _, c := range cs {
			if c.backend < 0 {
				failed++
			}
		}
	}
	return n, failed
}
