package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/render"
	"github.com/haconfd/haconfd/render/node"
)

// galeraState is what the target keeps between renders for Galera
// routing (issue 15): each service's writers and lagging nodes (the
// render's memory), the writer handovers of the newest render, and the
// notes already logged.
type galeraState struct {
	memory    map[string]node.Memory
	handovers []render.Handover
	notes     map[string]bool
	recorded  map[string]recordedAt // writer updates sent, by key
	metrics   *galeraMetrics
}

// galeraRendered takes what a render decided: its memory for the next
// render, its writer handovers for the fast lane, and its notes (a prefix
// with no node, a cluster nobody bound, an unreadable signal), each
// logged once until it changes and listed in /status.
func (t *HAProxyTarget) galeraRendered(out render.Output) {
	g := &t.galera
	g.memory = out.Memory
	g.handovers = out.Handovers
	notes := slices.Clone(out.Notes)
	for _, p := range out.Problems {
		if p.Drained {
			notes = append(notes, p.Error()+" (node kept out of rotation)")
		}
	}
	seen := make(map[string]bool, len(notes))
	for _, n := range out.Notes {
		seen[n] = true
		if !g.notes[n] {
			t.log.Warn(n)
		}
	}
	for _, n := range notes {
		seen[n] = true
	}
	g.notes = seen
	t.board.Update(func(s *Status) { s.Notes = notes })
	for _, h := range out.Handovers {
		t.log.Info("writer handed over", "service", h.Service, "from", h.Node, "to", strings.Join(h.To, ","), "why", h.Why)
	}
	t.recordWriters(out.WriterUpdates)
	t.observeNodes(out)
}

// handOver shuts down the sessions of the writers that handed the writes
// over in the newest render (--writer-failover-sessions shutdown), in the
// writer sections of desired (WriterMark) where their server now takes no
// connection (weight 0): once the fast lane has moved the writes, clients
// that stayed on the old writer reconnect to the new one, so two nodes do
// not take writes at once. Graceful maintenance never comes here
// (render.Handover).
func (t *HAProxyTarget) handOver(desired []byte) {
	hs := t.galera.handovers
	t.galera.handovers = nil
	if len(hs) == 0 || t.rt == nil {
		return
	}
	if t.opts.KeepWriterSessions {
		for _, h := range hs {
			t.log.Info("writer handed over; its sessions are kept (--writer-failover-sessions keep)", "server", h.Server)
		}
		return
	}
	lines, err := haproxy.ServerLines(desired)
	if err != nil {
		return
	}
	writerSecs := writerSections(desired)
	var sent, servers []string
	for _, h := range hs {
		for _, section := range slices.Sorted(maps.Keys(lines)) {
			line, ok := lines[section][h.Server]
			if !ok || !writerSecs[section] || serverWeight(line) != 0 {
				continue
			}
			if _, live := t.belief.Get(section, h.Server); !live {
				continue
			}
			op := haproxy.ServerOp{Kind: haproxy.OpShutdownSessions, Backend: section, Server: h.Server}
			if err := t.rt.Send(op); err != nil {
				t.log.Warn("could not shut down the old writer's sessions", "server", section+"/"+h.Server, "err", err)
				continue
			}
			t.log.Info("old writer's sessions shut down", "server", section+"/"+h.Server, "to", strings.Join(h.To, ","), "why", h.Why)
			sent = append(sent, op.NowLine())
			servers = append(servers, section+"/"+h.Server)
		}
	}
	if len(sent) > 0 {
		t.bus.Publish(Event{Kind: EventRuntime, Lane: "fast", Rev: t.outRev, Action: string(haproxy.ActionRuntime), Servers: servers, Commands: sent,
			Detail: "writer handover: sessions of the old writer shut down"})
	}
}

// WriterMark after a listen or backend section's name marks a section
// that only the writers serve: a writer handover shuts the old writer's
// sessions down there.
const WriterMark = "haconfd:writers"

// writerSections are the sections of cfg whose header line carries
// WriterMark in its comment.
func writerSections(cfg []byte) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(string(cfg), "\n") {
		code, comment, ok := strings.Cut(line, "#")
		if !ok || !strings.Contains(comment, WriterMark) {
			continue
		}
		f := strings.Fields(code)
		if len(f) >= 2 && (f[0] == "listen" || f[0] == "backend") {
			out[f[1]] = true
		}
	}
	return out
}

// serverWeight is the weight a server line sets (1 when none).
func serverWeight(line string) int {
	f := strings.Fields(line)
	for i := 3; i+1 < len(f); i++ {
		if f[i] == "weight" {
			if w, err := strconv.Atoi(f[i+1]); err == nil {
				return w
			}
		}
	}
	return 1
}

// nodeView fills a server view from its node: in rotation or not, writer,
// the signals it published, and why it takes no connection in this
// section.
func nodeView(v *ServerView, n render.Node) {
	v.Writer = n.IsWriter
	v.InRotation = !v.Disabled && v.Weight > 0
	v.Signals = Signals(n)
	switch {
	case v.InRotation:
		if n.LastResort || n.Lagging {
			v.Reasons = append(v.Reasons, n.Reasons...)
		}
	case !n.InRotation:
		v.Reasons = append(v.Reasons, n.Reasons...)
	case !n.Writable:
		v.Reasons = append(v.Reasons, n.Reasons...)
	case n.IsWriter:
		v.Reasons = append(v.Reasons, "a writer: takes no reads in this section (--writer-is-reader=false)")
	default:
		v.Reasons = append(v.Reasons, "not a writer: this section takes only the writers' connections")
	}
}

// Signals are the Galera signals n published, by name.
func Signals(n render.Node) map[string]string {
	m := map[string]string{}
	add := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	add("state", n.State)
	if n.Index >= 0 {
		add("wsrep_local_index", strconv.Itoa(n.Index))
	}
	add(node.SigReady, n.Ready)
	add(node.SigClusterStatus, n.ClusterStatus)
	add(node.SigDesync, n.Desync)
	add(node.SigRejectQueries, n.RejectQueries)
	add(node.SigDonorRejectsQueries, n.DonorRejectsQueries)
	if n.ReadOnly {
		add(node.SigReadOnly, "ON")
	}
	add(node.SigMaintMode, n.MaintMode)
	if n.RecvQueueSet {
		add(node.SigRecvQueue, strconv.FormatInt(n.RecvQueue, 10))
	}
	add(node.SigFlowControlPaused, n.FlowControlPaused)
	add(node.SigLastCommitted, n.LastCommitted)
	if n.PrioritySet {
		add(node.SigPriority, strconv.Itoa(n.Priority))
	}
	if n.CheckPort > 0 {
		add(node.SigCheckPort, strconv.Itoa(n.CheckPort))
	}
	if n.Drain != nil {
		add(node.SigDrain, n.Drain.String())
	}
	if r := n.Notify; r != nil {
		s := "status " + r.Status
		if r.Primary != nil {
			s += fmt.Sprintf(", primary %t", *r.Primary)
		}
		s += fmt.Sprintf(", %d members", len(r.Members))
		add(node.SigNotify, s)
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// firstPrefixNodes counts the nodes of the first prefix: its own, and
// those of the clusters under it (Services lists a prefix's clusters right
// after it).
func firstPrefixNodes(svcs []render.Service) int {
	if len(svcs) == 0 {
		return 0
	}
	n := len(svcs[0].Nodes)
	for _, s := range svcs[1:] {
		if s.Cluster == "" {
			break
		}
		n += len(s.Nodes)
	}
	return n
}

// NodeDecision is one node's rotation as a render decided it (render
// --plan, /servers through ServerView).
type NodeDecision struct {
	Service    string   `json:"service"`
	Node       string   `json:"node"`
	Server     string   `json:"server"`
	InRotation bool     `json:"in_rotation"`
	Writer     bool     `json:"writer,omitempty"`
	Reader     bool     `json:"reader,omitempty"`
	LastResort bool     `json:"last_resort,omitempty"`
	Lagging    bool     `json:"lagging,omitempty"`
	Reasons    []string `json:"reasons,omitempty"`
}

// Decisions lists every node of out, by service, with why it is in or out.
func Decisions(out render.Output) []NodeDecision {
	var ds []NodeDecision
	for _, s := range out.Services {
		for _, n := range s.Nodes {
			ds = append(ds, NodeDecision{Service: s.Name, Node: n.ID, Server: n.Name, InRotation: n.InRotation, Writer: n.IsWriter,
				Reader: n.Reader, LastResort: n.LastResort, Lagging: n.Lagging, Reasons: n.Reasons})
		}
	}
	return ds
}

// String is "in" / "out" with the reasons, for --plan's text.
func (d NodeDecision) String() string {
	what := "in rotation"
	if !d.InRotation {
		what = "out of rotation"
	}
	var roles []string
	if d.Writer {
		roles = append(roles, "writer")
	}
	if d.Reader && d.InRotation {
		roles = append(roles, "reader")
	}
	if len(roles) > 0 {
		what += " (" + strings.Join(roles, ", ") + ")"
	}
	if len(d.Reasons) > 0 {
		what += ": " + strings.Join(d.Reasons, "; ")
	}
	return fmt.Sprintf("node %s/%s: %s", d.Service, d.Node, what)
}

// galeraPolicy is the rotation policy cfg describes.
func galeraPolicy(cfg config.Config) node.Policy {
	return node.Policy{
		MaxRecvQueue:      int64(cfg.MaxRecvQueue),
		MaxWriters:        cfg.MaxWriters,
		WriterFailback:    cfg.WriterFailback,
		WritersNotReaders: !cfg.WriterIsReader,
	}
}

// galeraLiveSettings are the Galera settings a settings reload applies
// (they only change the render).
var galeraLiveSettings = []string{"reader-bind", "writer-is-reader", "max-writers", "writer-failback", "max-recv-queue", "default-port", "cluster-bind"}

// WriterStore records a service's writers for the whole fleet (etcd, with
// a compare on the revision the render saw).
type WriterStore interface {
	Record(ctx context.Context, u render.WriterUpdate) error
}

// ErrWriterRace is returned by a WriterStore when another load balancer
// recorded writers first: its choice arrives with the next snapshot.
var ErrWriterRace = errors.New("another load balancer recorded the writers first")

// etcdWriters is the WriterStore on etcd.
type etcdWriters struct{ cli *clientv3.Client }

func (s etcdWriters) Record(ctx context.Context, u render.WriterUpdate) error {
	b, err := json.Marshal(render.WriterRecord{Writers: u.Writers})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(u.Key), "=", u.PrevRev)).
		Then(clientv3.OpPut(u.Key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("record writers %s: %w", u.Key, err)
	}
	if !resp.Succeeded {
		return ErrWriterRace
	}
	return nil
}

// writerKeys is where the fleet keeps its writers: next to the status
// prefix, as its .last-seen and .reload-lock keys ("" without one: each
// load balancer then remembers its own writers).
func writerKeys(cfg config.Config) string {
	if cfg.StatusPrefix == "" {
		return ""
	}
	return cfg.StatusPrefix + ".writers"
}

// sharedWriterKeys is the writers prefix when the fleet shares writers:
// a writer section is configured (--single-writer, --writer-bind) and
// etcd lets this instance read the prefix (an etcd user limited to the
// node prefix keeps its own writers, with a warning, rather than lose
// the node watch). "" otherwise.
func sharedWriterKeys(ctx context.Context, cfg config.Config, etcd *Etcd, logger *slog.Logger) string {
	k := writerKeys(cfg)
	if k == "" || cfg.Confdir != "" || !(cfg.SingleWriter || cfg.WriterBind != "") || etcd == nil || etcd.Client == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := etcd.Client.Client.Get(ctx, k+"/", clientv3.WithPrefix(), clientv3.WithLimit(1), clientv3.WithKeysOnly()); errors.Is(err, rpctypes.ErrPermissionDenied) {
		logger.Warn("the writers are not shared with the fleet: etcd denies reading them; this instance keeps its own", "key", k, "err", err)
		return ""
	}
	return k
}

// watchPrefixes are the prefixes the daemon watches: the nodes', and the
// fleet's writers (wk, "" for none).
func watchPrefixes(cfg config.Config, wk string) []string {
	p := slices.Clone(cfg.Prefixes)
	if wk != "" {
		p = append(p, wk)
	}
	return p
}

// recordWriters sends the render's writer updates to the store, in the
// background; the same proposal is not sent again until the snapshot
// changes it, and a service's writers are recorded at most once a second
// (two load balancers that disagree on who is eligible do not make etcd
// spin).
func (t *HAProxyTarget) recordWriters(us []render.WriterUpdate) {
	st := t.opts.Writers
	if st == nil || t.opts.DryRun || t.lanes == nil {
		return
	}
	g := &t.galera
	if g.recorded == nil {
		g.recorded = map[string]recordedAt{}
	}
	now := time.Now()
	for _, u := range us {
		sig := fmt.Sprintf("%d %s", u.PrevRev, strings.Join(u.Writers, ","))
		if last, ok := g.recorded[u.Key]; ok && (last.sig == sig || now.Sub(last.at) < time.Second) {
			continue
		}
		g.recorded[u.Key] = recordedAt{sig: sig, at: now}
		ctx, log := t.ctx, t.log
		t.lanes.Go(func() {
			err := st.Record(ctx, u)
			switch {
			case errors.Is(err, rpctypes.ErrPermissionDenied):
				log.Warn("the writers are not shared with the fleet: etcd denies writing them; this instance keeps its own choice", "key", u.Key, "err", err)
				t.lanes.Post(func() { t.opts.Writers = nil })
			case errors.Is(err, ErrWriterRace):
				log.Debug("writers recorded by another load balancer first", "key", u.Key)
			case err != nil:
				log.Warn("could not record the writers for the fleet", "key", u.Key, "err", err)
			default:
				log.Info("writers recorded for the fleet", "key", u.Key, "writers", strings.Join(u.Writers, ","), "were", strings.Join(u.Prev, ","))
			}
		})
	}
}

type recordedAt struct {
	sig string
	at  time.Time
}

// fleetWriters is the writer store (nil when the writers are not shared).
func fleetWriters(wk string, etcd *Etcd) WriterStore {
	if wk == "" || etcd == nil || etcd.Client == nil {
		return nil
	}
	return etcdWriters{cli: etcd.Client.Client}
}

// galeraMetrics are the rotation gauges: registered on the target's
// registry at its first render.
type galeraMetrics struct {
	inRotation *prometheus.GaugeVec
	writer     *prometheus.GaugeVec
	out        *prometheus.GaugeVec
}

// reasonCodes name the kinds of reasons for haconfd_nodes_out_of_rotation.
var reasonCodes = []struct{ part, code string }{
	{"drained by an operator", "drained"},
	{"unreadable signal", "unreadable_signal"},
	{"wsrep_local_recv_queue", "lag"},
	{"wsrep_reject_queries", "reject_queries"},
	{"pxc_maint_mode", "maintenance"},
	{"wsrep_ready OFF", "not_ready"},
	{"Primary component", "non_primary"},
	{"Donor/Desynced", "donor"},
	{"is not Synced", "not_synced"},
}

func reasonCode(reasons []string) string {
	all := strings.Join(reasons, "; ")
	for _, rc := range reasonCodes {
		if strings.Contains(all, rc.part) {
			return rc.code
		}
	}
	return "other"
}

// observeNodes sets the rotation gauges from a render.
func (t *HAProxyTarget) observeNodes(out render.Output) {
	m := t.opts.Metrics
	if m == nil || m.Registry == nil {
		return
	}
	g := t.galera.metrics
	if g == nil {
		g = &galeraMetrics{
			inRotation: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "haconfd_node_in_rotation",
				Help: "1 when the node takes new connections (its service's multi-writer and reader sections), 0 when it is out of rotation (/servers says why)."}, []string{"service", "node"}),
			writer: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "haconfd_node_writer",
				Help: "1 when the node is one of its service's writers."}, []string{"service", "node"}),
			out: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "haconfd_nodes_out_of_rotation",
				Help: "Nodes out of rotation by service and first reason: drained, unreadable_signal, lag, reject_queries, maintenance, not_ready, non_primary, donor, not_synced, other."}, []string{"service", "reason"}),
		}
		for _, c := range []prometheus.Collector{g.inRotation, g.writer, g.out} {
			if err := m.Registry.Register(c); err != nil {
				t.log.Warn("node rotation metrics not registered", "err", err)
				return
			}
		}
		t.galera.metrics = g
	}
	g.inRotation.Reset()
	g.writer.Reset()
	g.out.Reset()
	for _, s := range out.Services {
		for _, n := range s.Nodes {
			g.inRotation.WithLabelValues(s.Name, n.ID).Set(b2f(n.InRotation))
			g.writer.WithLabelValues(s.Name, n.ID).Set(b2f(n.IsWriter))
			if !n.InRotation {
				g.out.WithLabelValues(s.Name, reasonCode(n.Reasons)).Inc()
			}
		}
	}
}
