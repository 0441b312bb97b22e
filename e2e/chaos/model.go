package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/internal/testbed"
)

// model is the harness's own view of the nodes, from its own watch of the
// prefix: which node is in rotation, and since when each one is out.
type model struct {
	mu    sync.Mutex
	kv    map[string]string // key below the prefix -> value
	rev   int64             // newest revision seen
	last  time.Time         // when the newest change arrived
	out   map[string][]span // node -> its spans out of rotation (to zero: still out)
	inRot map[string]bool
	addr  map[string]string
}

// span is [from, to); to is zero while it lasts.
type span struct{ from, to time.Time }

func (s span) contains(t time.Time) bool {
	return !t.Before(s.from) && (s.to.IsZero() || t.Before(s.to))
}

func newModel() *model {
	return &model{kv: map[string]string{}, out: map[string][]span{}, inRot: map[string]bool{}, addr: map[string]string{}}
}

// start reads the prefix and follows it from there (the client moves to
// another member when one fails).
func (m *model) start(ctx context.Context, cli *clientv3.Client) error {
	resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	m.mu.Lock()
	for _, kv := range resp.Kvs {
		m.kv[string(kv.Key)] = string(kv.Value)
	}
	m.rev = resp.Header.Revision
	m.recompute(time.Now())
	m.mu.Unlock()
	go func() {
		rev := resp.Header.Revision
		for ctx.Err() == nil {
			wc := cli.Watch(clientv3.WithRequireLeader(ctx), prefix+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1))
			for wr := range wc {
				if wr.Err() != nil {
					break
				}
				now := time.Now()
				m.mu.Lock()
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypeDelete {
						delete(m.kv, string(ev.Kv.Key))
					} else {
						m.kv[string(ev.Kv.Key)] = string(ev.Kv.Value)
					}
					rev = ev.Kv.ModRevision
				}
				m.rev = rev
				m.last = now
				m.recompute(now)
				m.mu.Unlock()
			}
			_ = testbed.Sleep(ctx, 100*time.Millisecond)
		}
	}()
	return nil
}

// recompute applies haconfd's rotation rules that the faults touch: a
// node is in rotation when it has an ip and a port, no drain key, and its
// Galera state, when published, is Synced. Only the backends' nodes
// (db1-db8) count; the hostile ones must never be served at all.
func (m *model) recompute(now time.Time) {
	nodes := map[string]map[string]string{}
	for k, v := range m.kv {
		rest := strings.TrimPrefix(k, prefix+"/")
		id, field, ok := strings.Cut(rest, "/")
		if !ok || !strings.HasPrefix(id, "db") {
			continue
		}
		if nodes[id] == nil {
			nodes[id] = map[string]string{}
		}
		nodes[id][field] = v
	}
	seen := map[string]bool{}
	for id, f := range nodes {
		seen[id] = true
		in := f["ip"] != "" && f["port"] != "" && f["drain"] == ""
		if st, ok := f["wsrep_local_state_comment"]; ok && st != "Synced" {
			in = false
		}
		m.set(id, in, now)
		if in {
			m.addr[id] = f["ip"] + ":" + f["port"]
		}
	}
	for id := range m.inRot {
		if !seen[id] {
			m.set(id, false, now)
		}
	}
}

func (m *model) set(id string, in bool, now time.Time) {
	was, known := m.inRot[id]
	m.inRot[id] = in
	switch {
	case in && known && !was:
		s := m.out[id]
		s[len(s)-1].to = now
	case !in && (!known || was):
		m.out[id] = append(m.out[id], span{from: now})
	}
}

// inRotation is the addresses of the nodes in rotation now.
func (m *model) inRotation() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for id, in := range m.inRot {
		if in {
			out = append(out, m.addr[id])
		}
	}
	slices.Sort(out)
	return out
}

// outAt is the span during which node id was out of rotation at t.
func (m *model) outAt(id string, t time.Time) (span, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.out[id] {
		if s.contains(t) {
			return s, true
		}
	}
	return span{}, false
}

func (m *model) revision() (int64, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev, m.last
}

func (m *model) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var in, out []string
	for id, ok := range m.inRot {
		if ok {
			in = append(in, id)
		} else {
			out = append(out, id)
		}
	}
	slices.Sort(in)
	slices.Sort(out)
	return fmt.Sprintf("in rotation %s; out %s", strings.Join(in, ","), strings.Join(out, ","))
}
