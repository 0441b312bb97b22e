package galera

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/render/node"
)

// Registrar defaults.
const (
	DefaultPrefix       = "/components/galera"
	DefaultTTL          = 10 * time.Second
	DefaultStatePoll    = 50 * time.Millisecond
	DefaultStopTimeout  = 5 * time.Second
	defaultOpTimeout    = 5 * time.Second
	maxRegisterBackoff  = 5 * time.Second
	firstRegisterBackof = 100 * time.Millisecond
)

// Layout is how a registration is written (node.Layout).
type Layout = node.Layout

// Layouts.
const (
	LayoutDir  = node.LayoutDir
	LayoutJSON = node.LayoutJSON
)

// ParseLayout accepts "dir" and "json".
func ParseLayout(s string) (Layout, error) {
	l, err := node.ParseLayout(s)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	return l, nil
}

// ErrInvalidOptions is wrapped by New's errors for bad Options.
var ErrInvalidOptions = errors.New("invalid registration")

// ErrLeaseLost is wrapped by the reason a registration had to be made
// again: the lease expired or was revoked.
var ErrLeaseLost = errors.New("lease lost")

// Options configure a Registrar.
type Options struct {
	Prefix              string        // default DefaultPrefix
	ID                  string        // node id below the prefix (required; the command defaults it to the host name)
	IP                  string        // IP literal or host name (required)
	Port                int           // default 3306
	Host                string        // optional host name
	ServiceInstanceName string        // optional token
	Layout              Layout        // default LayoutDir
	TTL                 time.Duration // lease TTL, whole seconds, default DefaultTTL
	Priority            string        // writer priority to publish ("" none)
	CheckPort           int           // the node's own health-check port to publish (0 none)
	// Wsrep, when set, is polled every StatePoll and the node's Galera
	// state, index and signals are published with the registration (on
	// the same lease), each time they change; the recv queue is the
	// smallest seen over the last second (a burst is not lag) and, with
	// wsrep_flow_control_paused, goes out at most every 500ms. While it
	// fails, the state published is StateUnreachable.
	Wsrep        WsrepReader
	StatePoll    time.Duration // default DefaultStatePoll
	QueryTimeout time.Duration // bounds one status read, default DefaultCheckTimeout
	StopTimeout  time.Duration // bounds the clean-up when Run's context ends, default DefaultStopTimeout
	Logger       *slog.Logger  // nil discards
}

// nodeState is what the registrar publishes about Galera.
type nodeState struct {
	state string // "" when no Wsrep reader
	index int    // -1 when unknown
	sig   node.Signals
}

// continuousEvery bounds how often a change of the continuous signals
// alone (recv queue, flow control) is published.
const continuousEvery = 500 * time.Millisecond

// recvWindow is how long a recv queue must stay high to be published
// high: the smallest value over it is published.
const recvWindow = time.Second

// Registrar keeps one node registered in etcd: every key on one lease, kept
// alive; registered again (new lease) when the lease is lost (expired
// during an etcd outage, revoked, etcd restored without it) and its keys
// restored when someone deletes them (the original fleet unit's stop
// command removed the whole prefix). When Run's context ends it deletes
// exactly its own keys, and only while they still carry its lease, then
// revokes the lease.
type Registrar struct {
	cli    *clientv3.Client
	opts   Options
	base   string // <prefix>/<id>
	logger *slog.Logger

	// owned by Run's goroutine
	state nodeState
	lease clientv3.LeaseID
	kvs   map[string]string // what was last written
}

// New validates opts (the registration must be one that haconfd's renderer
// accepts) and returns a Registrar.
func New(cli *clientv3.Client, opts Options) (*Registrar, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Port == 0 {
		opts.Port = node.DefaultPort
	}
	if opts.Layout == "" {
		opts.Layout = LayoutDir
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.StatePoll == 0 {
		opts.StatePoll = DefaultStatePoll
	}
	if opts.QueryTimeout == 0 {
		opts.QueryTimeout = DefaultCheckTimeout
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = DefaultStopTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, a...)))
	}
	if !strings.HasPrefix(opts.Prefix, "/") || strings.ContainsAny(opts.Prefix, " \t\r\n") {
		bad("prefix %q: must start with / and contain no whitespace", opts.Prefix)
	}
	opts.Prefix = strings.TrimRight(opts.Prefix, "/")
	if opts.Prefix == "" {
		bad("prefix: must not be /")
	}
	if opts.ID == "" {
		bad("id: required")
	} else if strings.Contains(opts.ID, "/") {
		bad("id %q: must not contain /", opts.ID)
	}
	if opts.IP == "" {
		bad("ip: required")
	}
	if opts.Port < 1 || opts.Port > 65535 {
		bad("port %d: not 1-65535", opts.Port)
	}
	if _, err := ParseLayout(string(opts.Layout)); err != nil {
		errs = append(errs, err)
	}
	if opts.TTL < time.Second || opts.TTL%time.Second != 0 {
		bad("ttl %s: must be whole seconds, at least 1s", opts.TTL)
	}
	if opts.StatePoll < 10*time.Millisecond {
		bad("state poll %s: must be at least 10ms", opts.StatePoll)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	r := &Registrar{
		cli:    cli,
		opts:   opts,
		base:   opts.Prefix + "/" + opts.ID,
		logger: opts.Logger,
		state:  nodeState{index: -1},
	}
	if opts.Wsrep != nil {
		r.state.state = "Synced" // only to validate the full key set
		r.state.index = 0
	}
	if err := r.validate(r.desired()); err != nil {
		return nil, err
	}
	r.state = nodeState{index: -1}
	return r, nil
}

// validate runs haconfd's own node parser over kvs: a registration that
// haconfd would skip is refused here.
func (r *Registrar) validate(kvs map[string]string) error {
	nodes, problems := node.Parse(r.opts.Prefix, kvs)
	if len(problems) > 0 {
		reason := problems[0].Reason
		return fmt.Errorf("%w: %s", ErrInvalidOptions, reason)
	}
	if len(nodes) != 1 || nodes[0].ID != r.opts.ID {
		return fmt.Errorf("%w: id %q is not read back as one node", ErrInvalidOptions, r.opts.ID)
	}
	return nil
}

// Keys returns the keys this registration writes (with the current state
// options), sorted.
func (r *Registrar) Keys() []string {
	return slices.Sorted(maps.Keys(r.desired()))
}

// desired is the key set for the current state.
func (r *Registrar) desired() map[string]string {
	o := r.opts
	return node.Encode(o.Prefix, node.Registration{
		ID: o.ID, IP: o.IP, Port: o.Port, Host: o.Host, ServiceInstanceName: o.ServiceInstanceName,
		State: r.state.state, Index: r.state.index, Signals: r.state.sig,
		Priority: o.Priority, CheckPort: o.CheckPort,
	}, o.Layout)
}

// Run registers the node and keeps it registered until ctx ends, then
// removes its keys and revokes its lease (bounded by StopTimeout). It
// returns nil after a clean removal.
func (r *Registrar) Run(ctx context.Context) error {
	var states chan nodeState
	var wg sync.WaitGroup
	if r.opts.Wsrep != nil {
		// Publish the state with the first registration: a node without a
		// state counts as Synced.
		r.state = r.readState(ctx, nodeState{index: -1})
		states = make(chan nodeState, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.poll(ctx, r.state, states)
		}()
	}
	defer wg.Wait()

	failures := 0
	for {
		r.takeState(states)
		rev, err := r.register(ctx)
		if err == nil {
			failures = 0
			err = r.keep(ctx, rev, states)
		}
		if ctx.Err() != nil {
			return r.stop()
		}
		wait := time.Duration(0)
		if failures > 0 {
			wait = min(firstRegisterBackof<<min(failures-1, 10), maxRegisterBackoff)
		}
		failures++
		r.logger.Warn("registration lost, registering again", "id", r.opts.ID, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return r.stop()
		case <-time.After(wait):
		}
	}
}

// takeState applies a pending state update, if any.
func (r *Registrar) takeState(states <-chan nodeState) {
	select {
	case s := <-states:
		r.state = s
	default:
	}
}

// register grants a lease and writes every key on it in one transaction;
// it returns the revision of that write.
func (r *Registrar) register(ctx context.Context) (int64, error) {
	octx, cancel := context.WithTimeout(ctx, defaultOpTimeout)
	defer cancel()
	g, err := r.cli.Grant(octx, int64(r.opts.TTL/time.Second))
	if err != nil {
		return 0, fmt.Errorf("grant lease: %w", err)
	}
	old := r.lease
	r.lease = g.ID
	r.kvs = nil
	rev, err := r.putAll(octx)
	if err != nil {
		return 0, err
	}
	if old != 0 && old != g.ID {
		// Best effort: the old lease, if it still exists, holds none of
		// our keys any more; let it go now rather than at its TTL.
		_, _ = r.cli.Revoke(octx, old)
	}
	r.logger.Info("registered", "id", r.opts.ID, "lease", fmt.Sprintf("%x", int64(g.ID)), "ttl", r.opts.TTL,
		"keys", len(r.kvs), "state", r.state.state)
	return rev, nil
}

// putAll writes the desired keys that changed since the last write (every
// key after a new lease, or when all is set) on the current lease, in one
// transaction, and removes keys it wrote before that are no longer
// desired. It returns the revision of the write. Writing only what
// changed keeps each key's revision the time of its last change (a
// node's state revision orders it against its wsrep_notify record).
func (r *Registrar) putAll(ctx context.Context) (int64, error) {
	return r.put(ctx, true)
}

func (r *Registrar) put(ctx context.Context, all bool) (int64, error) {
	want := r.desired()
	var ops []clientv3.Op
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if old, ok := r.kvs[k]; ok && old == want[k] && !all {
			continue
		}
		ops = append(ops, clientv3.OpPut(k, want[k], clientv3.WithLease(r.lease)))
	}
	for k := range r.kvs {
		if _, ok := want[k]; !ok {
			ops = append(ops, r.guardedDelete(k))
		}
	}
	resp, err := r.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return 0, fmt.Errorf("write %s: %w", r.base, ErrLeaseLost)
		}
		return 0, fmt.Errorf("write %s: %w", r.base, err)
	}
	r.kvs = want
	return resp.Header.Revision, nil
}

// guardedDelete deletes k only while it carries our lease.
func (r *Registrar) guardedDelete(k string) clientv3.Op {
	return clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(k), "=", r.lease)},
		[]clientv3.Op{clientv3.OpDelete(k)}, nil)
}

// keep keeps the lease alive, republishes state changes and restores keys
// that someone deletes, until ctx ends (nil) or the registration is lost
// (an error).
func (r *Registrar) keep(ctx context.Context, rev int64, states <-chan nodeState) error {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ka, err := r.cli.KeepAlive(kctx, r.lease)
	if err != nil {
		return fmt.Errorf("keep lease alive: %w", err)
	}
	wch, stopWatch := r.watchOwn(kctx, rev)
	defer func() { stopWatch() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-ka:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("keepalive for lease %x ended: %w", int64(r.lease), ErrLeaseLost)
			}
		case s := <-states:
			if s == r.state {
				continue
			}
			prev := r.state
			r.state = s
			if err := r.write(kctx); err != nil {
				return err
			}
			if prev.state != s.state || prev.index != s.index || !sameDiscrete(prev.sig, s.sig) {
				r.logger.Info("state published", "id", r.opts.ID, "state", s.state, "index", s.index, "signals", signalsText(s.sig))
			} else {
				r.logger.Debug("signals published", "id", r.opts.ID, "recv_queue", s.sig.RecvQueue, "flow_control_paused", s.sig.FlowControlPaused)
			}
		case wr, ok := <-wch:
			// Only deletions are undone: a put by someone else may be a
			// second registrar with the same id, and fighting it would
			// never end.
			restore := !ok || wr.Err() != nil
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if _, own := r.kvs[k]; own && ev.Type == clientv3.EventTypeDelete {
					r.logger.Warn("own key deleted by someone else, restoring it", "key", k)
					restore = true
				}
			}
			if !restore {
				continue
			}
			if kctx.Err() != nil {
				return nil
			}
			// Write everything again (which also proves the lease still
			// exists) and watch on from that revision.
			octx, ocancel := context.WithTimeout(kctx, defaultOpTimeout)
			rev, err := r.putAll(octx)
			ocancel()
			if err != nil {
				return err
			}
			stopWatch()
			wch, stopWatch = r.watchOwn(kctx, rev)
		}
	}
}

// write publishes the current desired keys with an operation timeout.
func (r *Registrar) write(ctx context.Context) error {
	octx, cancel := context.WithTimeout(ctx, defaultOpTimeout)
	defer cancel()
	_, err := r.put(octx, false)
	return err
}

// watchOwn watches this node's keys from rev+1 (no gap after our write).
// A watch that ends (leader lost, compaction, closed) makes keep write
// everything again and watch anew.
func (r *Registrar) watchOwn(ctx context.Context, rev int64) (clientv3.WatchChan, context.CancelFunc) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	if r.opts.Layout == LayoutJSON {
		return r.cli.Watch(ctx, r.base, clientv3.WithRev(rev+1)), cancel
	}
	return r.cli.Watch(ctx, r.base+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1)), cancel
}

// stop deletes exactly the keys this registrar wrote, each only while it
// still carries our lease (so a newer registration of the same id by
// someone else survives), in one transaction, then revokes the lease.
func (r *Registrar) stop() error {
	if r.lease == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.StopTimeout)
	defer cancel()
	var ops []clientv3.Op
	for _, k := range slices.Sorted(maps.Keys(r.kvs)) {
		ops = append(ops, r.guardedDelete(k))
	}
	var errs []error
	if len(ops) > 0 {
		if _, err := r.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			errs = append(errs, fmt.Errorf("delete keys of %s: %w", r.base, err))
		}
	}
	if _, err := r.cli.Revoke(ctx, r.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		errs = append(errs, fmt.Errorf("revoke lease %x: %w", int64(r.lease), err))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	r.logger.Info("unregistered", "id", r.opts.ID, "keys", len(r.kvs))
	r.lease = 0
	return nil
}

// poll reads the node's status every StatePoll and sends the published
// state when it changes; a pending update not yet taken is replaced. A
// change of the continuous signals alone (recv queue, flow control) goes
// out at most every continuousEvery; the recv queue published is the
// smallest read over the last recvWindow, so that only a queue that stays
// high is published high, while a drop shows at once.
func (r *Registrar) poll(ctx context.Context, last nodeState, out chan nodeState) {
	t := time.NewTicker(r.opts.StatePoll)
	defer t.Stop()
	var win recvWindowMin
	lastContinuous := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		s := r.readState(ctx, last)
		s.sig.RecvQueue = win.add(now, s.sig.RecvQueue)
		if s == last {
			continue
		}
		if s.state == last.state && s.index == last.index && sameDiscrete(s.sig, last.sig) {
			if now.Sub(lastContinuous) < continuousEvery && !(s.sig.RecvQueue == "0" && last.sig.RecvQueue != "0") {
				continue
			}
		}
		if s.sig.RecvQueue != last.sig.RecvQueue || s.sig.FlowControlPaused != last.sig.FlowControlPaused {
			lastContinuous = now
		}
		last = s
		select { // replace a pending update
		case <-out:
		default:
		}
		out <- s
	}
}

// sameDiscrete compares the signals that go out at once.
func sameDiscrete(a, b node.Signals) bool {
	a.RecvQueue, b.RecvQueue = "", ""
	a.FlowControlPaused, b.FlowControlPaused = "", ""
	return a == b
}

func signalsText(s node.Signals) string {
	var parts []string
	for _, f := range [][2]string{{"ready", s.Ready}, {"cluster", s.ClusterStatus}, {"desync", s.Desync},
		{"reject", s.RejectQueries}, {"donor_rejects", s.DonorRejectsQueries}, {"read_only", s.ReadOnly},
		{"maint", s.MaintMode}, {"recv_queue", s.RecvQueue}} {
		if f[1] != "" {
			parts = append(parts, f[0]+"="+f[1])
		}
	}
	return strings.Join(parts, " ")
}

// recvWindowMin keeps the recv queue readings of the last recvWindow.
type recvWindowMin struct {
	samples []recvSample
}

type recvSample struct {
	at time.Time
	q  int64
}

// add records a reading ("" when unreadable: the window is cleared) and
// returns the smallest over the window, as published.
func (w *recvWindowMin) add(at time.Time, v string) string {
	q, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		w.samples = w.samples[:0]
		return v
	}
	keep := w.samples[:0]
	for _, s := range w.samples {
		if at.Sub(s.at) < recvWindow {
			keep = append(keep, s)
		}
	}
	w.samples = append(keep, recvSample{at, q})
	m := q
	for _, s := range w.samples {
		m = min(m, s.q)
	}
	return strconv.FormatInt(m, 10)
}

// readState reads the status once and maps it to what is published. While
// MySQL does not answer, the state is StateUnreachable and the last known
// index and signals are kept.
func (r *Registrar) readState(ctx context.Context, last nodeState) nodeState {
	qctx, cancel := context.WithTimeout(ctx, r.opts.QueryTimeout)
	defer cancel()
	st, err := r.opts.Wsrep.ReadWsrep(qctx)
	if err != nil {
		if ctx.Err() == nil {
			r.logger.Debug("node status unreadable", "id", r.opts.ID, "err", err)
		}
		return nodeState{state: StateUnreachable, index: last.index, sig: last.sig}
	}
	return publishedState(st, last.index)
}

// publishedState is the state, index and signals published for st:
// Galera's own comment when haconfd's parser accepts it, else the name of
// the numeric state.
func publishedState(st Wsrep, lastIndex int) nodeState {
	s := nodeState{state: st.Comment, index: st.Index}
	if s.index < 0 {
		s.index = lastIndex
	}
	if s.state == "" || !node.ValidState(s.state) {
		s.state = stateName(st.State)
	}
	ro := "OFF"
	if st.ReadOnly {
		ro = "ON"
	}
	s.sig, _ = node.Signals{
		Ready: st.Ready, ClusterStatus: st.ClusterStatus, Desync: st.Desync, RejectQueries: st.RejectQueries,
		DonorRejectsQueries: st.DonorRejectsQueries, ReadOnly: ro, MaintMode: st.MaintMode,
		RecvQueue: st.RecvQueue, FlowControlPaused: st.FlowControlPaused,
	}.Normalized()
	return s
}
