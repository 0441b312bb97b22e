package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// load is clients on the host asking through HAProxy's published port, a
// new connection per operation, with what answered each one. An operation
// fails when it gets no answer (refused, reset, closed early, timed out).
type load struct {
	mu       sync.Mutex
	ok, fail int
	firstErr string
	seen     map[string]time.Time // who answered → last answer
	perWho   map[string]int
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// counts is a snapshot of a load's totals.
type counts struct{ ok, fail int }

func (l *load) counts() counts {
	l.mu.Lock()
	defer l.mu.Unlock()
	return counts{l.ok, l.fail}
}

func (l *load) record(who string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.fail++
		if l.firstErr == "" {
			l.firstErr = err.Error()
		}
		return
	}
	l.ok++
	l.seen[who] = time.Now()
	l.perWho[who]++
}

func (l *load) takeFirstErr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.firstErr
	l.firstErr = ""
	return s
}

func newLoad(ctx context.Context, workers int, op func(ctx context.Context) (string, error)) *load {
	l := &load{seen: map[string]time.Time{}, perWho: map[string]int{}}
	ctx, l.cancel = context.WithCancel(ctx)
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				who, err := op(ctx)
				if ctx.Err() != nil {
					return
				}
				l.record(who, err)
				_ = pause(ctx, 20*time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load) stop() { l.cancel(); l.wg.Wait() }

// servedBy: who has answered after since.
func (l *load) servedSince(who string, since time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[who].After(since)
}

// waitServed waits until who answers an operation begun after since.
func (l *load) waitServed(ctx context.Context, who string, since time.Time, bound time.Duration) (time.Duration, error) {
	if err := poll(ctx, bound, 50*time.Millisecond, func() bool { return l.servedSince(who, since) }); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("no answer from %s within %s", who, bound)
	}
	return time.Since(since), nil
}

// waitGone waits until who has not answered for quiet while the others
// did; the time is when it answered last, from since.
func (l *load) waitGone(ctx context.Context, who string, since time.Time, quiet, bound time.Duration) (time.Duration, error) {
	var last time.Time
	err := poll(ctx, bound, 100*time.Millisecond, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		last = l.seen[who]
		if time.Since(last) < quiet {
			return false
		}
		for w, t := range l.seen {
			if w != who && time.Since(t) < quiet/2 {
				return true
			}
		}
		return false
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("%s still answering (or nobody else is) %s after the change", who, bound)
	}
	if last.Before(since) {
		return 0, nil
	}
	return last.Sub(since), nil
}

// served is "id: count, ..." of everyone who answered so far.
func (l *load) served() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.perWho))
	for k := range l.perWho {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, l.perWho[k])
	}
	return strings.Join(parts, ", ")
}

// tcpAsk is one operation against the e2e backends: connect, read the id
// line, close.
func tcpAsk(addr string) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "", fmt.Errorf("closed without an answer")
			}
			return "", err
		}
		return strings.TrimSpace(line), nil
	}
}

// sqlAsk is one operation through HAProxy to Galera: a new connection,
// which node answered (wsrep_node_address), an INSERT.
func sqlAsk(addr, user, password, db string) (func(ctx context.Context) (string, error), *sql.DB, error) {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = user, password, "tcp", addr, db
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 5*time.Second, 15*time.Second, 15*time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, nil, err
	}
	pool := sql.OpenDB(conn)
	pool.SetMaxIdleConns(-1) // a new connection per operation: HAProxy routes each
	return func(ctx context.Context) (string, error) {
		octx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		c, err := pool.Conn(octx)
		if err != nil {
			return "", err
		}
		defer c.Close()
		var node string
		if err := c.QueryRowContext(octx, "SELECT @@wsrep_node_address").Scan(&node); err != nil {
			return "", err
		}
		if _, err := c.ExecContext(octx, "INSERT INTO e2e (node) VALUES (?)", node); err != nil {
			return "", err
		}
		return node, nil
	}, pool, nil
}

// held is a connection kept open through HAProxy, echoing a line every
// 100 ms, to see how it ends when HAProxy stops.
type held struct {
	conn      net.Conn
	mu        sync.Mutex
	lastReply time.Time
	end       string // "eof", or the error
	endAt     time.Time
	done      chan struct{}
}

func holdConn(ctx context.Context, addr string) (*held, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err != nil {
		c.Close()
		return nil, fmt.Errorf("held connection: no id line: %w", err)
	}
	h := &held{conn: c, lastReply: time.Now(), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		defer c.Close()
		for {
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			_, err := io.WriteString(c, "ping\n")
			if err == nil {
				_, err = r.ReadString('\n')
			}
			h.mu.Lock()
			if err != nil {
				h.endAt = time.Now()
				switch {
				case errors.Is(err, io.EOF):
					h.end = "eof"
				case errors.Is(err, syscall.ECONNRESET):
					h.end = "reset"
				default:
					h.end = err.Error()
				}
				h.mu.Unlock()
				return
			}
			h.lastReply = time.Now()
			h.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return h, nil
}

// close ends the connection from the client's side and waits for its
// goroutine.
func (h *held) close() {
	_ = h.conn.Close()
	<-h.done
}

func (h *held) result() (end string, endAt, lastReply time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.end, h.endAt, h.lastReply
}
