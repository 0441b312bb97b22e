package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
)

// ErrInvalidOptions is wrapped by every error NewEtcd returns for bad
// options.
var ErrInvalidOptions = errors.New("invalid watch options")

// ErrWatchClosed is reported (in logs and Status.Err) when etcd closed the
// watch channel without saying why.
var ErrWatchClosed = errors.New("etcd watch channel closed")

// errStalled ends a watch whose stream stopped answering.
var errStalled = errors.New("etcd watch stalled")

const (
	defaultPageSize       = 500
	defaultMinBackoff     = 100 * time.Millisecond
	defaultMaxBackoff     = 5 * time.Second
	defaultRequestTimeout = 5 * time.Second
	defaultProbeInterval  = 5 * time.Second
	// A watch stream is asked for its progress every progressInterval; a
	// stream that has not answered for stallTimeout is on a member that
	// stopped answering (paused, frozen disk, half-open connection): the
	// probe's Get may go to another member and pass, and gRPC's keepalive
	// takes 15 s or more, while nodes leave rotation elsewhere.
	defaultProgressInterval = 250 * time.Millisecond
	defaultStallTimeout     = time.Second
	// logEvery: while etcd stays unreachable, log the 1st failure, then
	// every logEvery-th one (and any failure whose error differs).
	logEvery = 10
)

// ConnState is the state of the connection to etcd.
type ConnState struct {
	// Connected is true from a successful full read of the prefixes until
	// the watch or a read fails.
	Connected bool
	// Err is why the source is not connected (nil when Connected).
	Err error
	// Since is when the current state began.
	Since time.Time
	// Revision is the revision of the last snapshot read from etcd (0 if
	// none yet).
	Revision int64
}

// Options configures an Etcd source.
type Options struct {
	// Prefixes to watch, at least one. A prefix "/a/b" covers the key
	// "/a/b" and every key under "/a/b/", but not "/a/bc". A prefix ending
	// in "/" covers every key that starts with it. Prefixes may not
	// overlap.
	Prefixes []string
	// PageSize is the number of keys per Get request (default 500).
	PageSize int64
	// MinBackoff and MaxBackoff bound the jittered, doubling delay between
	// reconnect attempts (defaults 100ms and 5s).
	MinBackoff, MaxBackoff time.Duration
	// Logger for warnings about etcd (the caller adds its component
	// attribute); nil discards.
	Logger *slog.Logger
	// OnStatus, if set, is called from the Run goroutine on each
	// connect/disconnect transition (and once for the first outcome).
	OnStatus func(ConnState)
	// Diagnose, if set, says why etcd did not answer when a failed
	// request does not (a refused connection, a TLS handshake or a client
	// certificate etcd refuses): the reason is logged with the failure.
	// It returns nil when there is nothing better to say.
	Diagnose func(ctx context.Context, err error) error
}

// keyRange is one etcd range: a single key when end is "", every key from
// key on when end is "\x00", else [key, end).
type keyRange struct{ key, end string }

// EtcdSource keeps a snapshot of the configured prefixes current from etcd.
type EtcdSource struct {
	cli        *clientv3.Client
	prefixes   []string
	ranges     []keyRange // what a full read gets
	watchRange keyRange   // one range covering all prefixes, events filtered
	pageSize   int64
	minBackoff time.Duration
	maxBackoff time.Duration
	logger     *slog.Logger
	onStatus   func(ConnState)
	diagnose   func(context.Context, error) error

	// Not options: changed by tests only.
	requestTimeout  time.Duration // per Get request
	probeInterval   time.Duration // liveness check of etcd while watching
	progressEvery   time.Duration // progress requests on the watch stream
	stallTimeout    time.Duration // a watch stream silent this long after a request is stalled
	hookBeforeWatch func(rev int64)
	hookAfterPage   func(rev int64)
}

// NewEtcdSource returns a source reading from cli. It checks opts and fills in
// defaults; cli stays owned by the caller.
func NewEtcdSource(cli *clientv3.Client, opts Options) (*EtcdSource, error) {
	if cli == nil {
		return nil, fmt.Errorf("etcd client: %w: is nil", ErrInvalidOptions)
	}
	if err := checkPrefixes(opts.Prefixes); err != nil {
		return nil, err
	}
	e := &EtcdSource{
		cli:            cli,
		prefixes:       slices.Clone(opts.Prefixes),
		pageSize:       opts.PageSize,
		minBackoff:     opts.MinBackoff,
		maxBackoff:     opts.MaxBackoff,
		logger:         opts.Logger,
		onStatus:       opts.OnStatus,
		diagnose:       opts.Diagnose,
		requestTimeout: defaultRequestTimeout,
		probeInterval:  defaultProbeInterval,
		progressEvery:  defaultProgressInterval,
		stallTimeout:   defaultStallTimeout,
	}
	switch {
	case e.pageSize < 0:
		return nil, fmt.Errorf("page size %d: %w: must not be negative", e.pageSize, ErrInvalidOptions)
	case e.pageSize == 0:
		e.pageSize = defaultPageSize
	}
	if e.minBackoff < 0 || e.maxBackoff < 0 {
		return nil, fmt.Errorf("backoff %v..%v: %w: must not be negative", e.minBackoff, e.maxBackoff, ErrInvalidOptions)
	}
	if e.minBackoff == 0 {
		e.minBackoff = defaultMinBackoff
	}
	if e.maxBackoff == 0 {
		e.maxBackoff = max(defaultMaxBackoff, e.minBackoff)
	}
	if e.minBackoff > e.maxBackoff {
		return nil, fmt.Errorf("backoff %v..%v: %w: min backoff is more than max backoff",
			e.minBackoff, e.maxBackoff, ErrInvalidOptions)
	}
	if e.logger == nil {
		e.logger = slog.New(slog.DiscardHandler)
	}

	for _, p := range e.prefixes {
		if strings.HasSuffix(p, "/") {
			e.ranges = append(e.ranges, keyRange{p, clientv3.GetPrefixRangeEnd(p)})
			continue
		}
		e.ranges = append(e.ranges,
			keyRange{key: p},
			keyRange{p + "/", clientv3.GetPrefixRangeEnd(p + "/")})
	}
	e.watchRange = coveringRange(e.ranges)
	return e, nil
}

func checkPrefixes(prefixes []string) error {
	if len(prefixes) == 0 {
		return fmt.Errorf("prefixes: %w: need at least one", ErrInvalidOptions)
	}
	for i, p := range prefixes {
		if p == "" {
			return fmt.Errorf("prefix #%d: %w: is empty", i+1, ErrInvalidOptions)
		}
		for _, q := range prefixes[:i] {
			if q == p {
				return fmt.Errorf("prefix %q: %w: given twice", p, ErrInvalidOptions)
			}
			if prefixMatch(q, p) || prefixMatch(p, q) {
				return fmt.Errorf("prefixes %q and %q: %w: one covers keys of the other", q, p, ErrInvalidOptions)
			}
		}
	}
	return nil
}

// prefixMatch reports whether key is covered by prefix p: p itself and
// keys under p + "/" (or, for p ending in "/", keys starting with p).
func prefixMatch(p, key string) bool {
	if strings.HasSuffix(p, "/") {
		return strings.HasPrefix(key, p)
	}
	return key == p || strings.HasPrefix(key, p+"/")
}

func (e *EtcdSource) match(key string) bool {
	for _, p := range e.prefixes {
		if prefixMatch(p, key) {
			return true
		}
	}
	return false
}

// coveringRange returns the smallest single range holding all of rs, so
// that one watch sees every event in revision order.
func coveringRange(rs []keyRange) keyRange {
	out := keyRange{key: rs[0].key, end: rangeEnd(rs[0])}
	for _, r := range rs[1:] {
		out.key = min(out.key, r.key)
		end := rangeEnd(r)
		if out.end == "\x00" || end == "\x00" {
			out.end = "\x00"
		} else {
			out.end = max(out.end, end)
		}
	}
	return out
}

func rangeEnd(r keyRange) string {
	if r.end == "" {
		return r.key + "\x00"
	}
	return r.end
}

func (r keyRange) opts() []clientv3.OpOption {
	switch r.end {
	case "":
		return nil
	case "\x00":
		return []clientv3.OpOption{clientv3.WithFromKey()}
	default:
		return []clientv3.OpOption{clientv3.WithRange(r.end)}
	}
}

// Run reads every key under the prefixes at one revision, sends that
// snapshot on out, then keeps it current from a watch starting at the next
// revision, sending a new snapshot after each change. When the watch
// breaks (compaction, lost leader, etcd unreachable) it backs off, reads
// everything again and resumes. It returns nil when ctx is done; etcd
// being unreachable is not an error, it is retried. Run must not be
// called again before it returned.
func (e *EtcdSource) Run(ctx context.Context, out chan<- Snapshot) error {
	if out == nil {
		return fmt.Errorf("watch run: %w: output channel is nil", ErrInvalidOptions)
	}
	r := &runner{e: e, out: out, backoff: e.minBackoff}
	timeout := e.requestTimeout
	for {
		state, rev, err := e.read(ctx, timeout)
		timeout = e.requestTimeout
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				// Compacted between two pages: etcd is fine, read again.
				r.e.logger.Warn("etcd compacted during the read, reading again", "err", err)
			} else {
				r.readFailed(ctx, err)
			}
			if !r.wait(ctx) {
				return nil
			}
			continue
		}
		r.connected(rev)
		if !r.send(ctx, snapshotOf(state, rev)) {
			return nil
		}
		err = e.watch(ctx, rev, state, r)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errStalled) {
			// The read may go to the member that stopped answering: give
			// it no more than the stall took, the next one goes elsewhere.
			timeout = e.stallTimeout
		}
		r.watchBroken(ctx, err)
		if !r.wait(ctx) {
			return nil
		}
	}
}

// read gets every key of every range at one revision: the first page
// pins the revision for all the others.
func (e *EtcdSource) read(ctx context.Context, timeout time.Duration) (map[string]KV, int64, error) {
	state := make(map[string]KV)
	var rev int64
	for _, r := range e.ranges {
		if err := e.readRange(ctx, r, &rev, state, timeout); err != nil {
			return nil, 0, err
		}
	}
	return state, rev, nil
}

func (e *EtcdSource) readRange(ctx context.Context, r keyRange, rev *int64, state map[string]KV, timeout time.Duration) error {
	key := r.key
	for {
		opts := append(r.opts(), clientv3.WithRev(*rev), clientv3.WithLimit(e.pageSize))
		rctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := e.cli.Get(rctx, key, opts...)
		cancel()
		if err != nil {
			return fmt.Errorf("get %q at revision %d: %w", key, *rev, err)
		}
		if *rev == 0 {
			*rev = resp.Header.Revision
		}
		if e.hookAfterPage != nil {
			e.hookAfterPage(*rev)
		}
		for _, kv := range resp.Kvs {
			if e.match(string(kv.Key)) {
				state[string(kv.Key)] = toKV(kv)
			}
		}
		if r.end == "" || !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// errCompacted marks a watch that started below etcd's compaction
// revision: everything must be read again.
type errCompacted struct{ rev, compactRev int64 }

func (e *errCompacted) Error() string {
	return fmt.Sprintf("watch from revision %d: compacted at revision %d", e.rev, e.compactRev)
}

func (e *errCompacted) Unwrap() error { return rpctypes.ErrCompacted }

// watch applies events after rev to state and sends a snapshot after each
// change, until ctx is done or the watch breaks; it returns why.
func (e *EtcdSource) watch(ctx context.Context, rev int64, state map[string]KV, r *runner) error {
	wctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(ctx))
	var wg sync.WaitGroup
	defer func() {
		cancel(nil)
		wg.Wait()
	}()
	// A watch on an unreachable etcd just waits (and creating it can block
	// too); a probe notices and cancels it with the reason.
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.probeLoop(wctx, cancel)
	}()
	// broken returns why the watch ended when wctx was canceled by the
	// probe, or err.
	broken := func(err error) error {
		if ctx.Err() == nil && wctx.Err() != nil {
			if cause := context.Cause(wctx); cause != nil && !errors.Is(cause, context.Canceled) {
				return cause
			}
		}
		return err
	}
	if e.hookBeforeWatch != nil {
		e.hookBeforeWatch(rev)
	}
	// The creation is the first request the stream must answer.
	opts := append(e.watchRange.opts(), clientv3.WithRev(rev+1), clientv3.WithCreatedNotify())
	answered := make(chan struct{}, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.stallLoop(wctx, cancel, answered)
	}()
	wch := e.cli.Watch(wctx, e.watchRange.key, opts...)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wctx.Done():
			return broken(wctx.Err())
		case resp, ok := <-wch:
			if !ok {
				return broken(ErrWatchClosed)
			}
			select {
			case answered <- struct{}{}:
			default:
			}
			if resp.CompactRevision != 0 {
				return &errCompacted{rev: rev + 1, compactRev: resp.CompactRevision}
			}
			if err := resp.Err(); err != nil {
				return broken(fmt.Errorf("watch from revision %d: %w", rev+1, err))
			}
			if resp.Canceled {
				return broken(fmt.Errorf("watch from revision %d: canceled by etcd", rev+1))
			}
			changed := false
			for _, ev := range resp.Events {
				key := string(ev.Kv.Key)
				// The header revision can be ahead of the events while
				// a watch catches up; the events say what is applied.
				rev = max(rev, ev.Kv.ModRevision)
				if !e.match(key) {
					continue
				}
				changed = true
				switch ev.Type {
				case mvccpb.PUT:
					state[key] = toKV(ev.Kv)
				case mvccpb.DELETE:
					delete(state, key)
				}
			}
			if changed && !r.send(ctx, snapshotOf(state, rev)) {
				return ctx.Err()
			}
		}
	}
}

// probeLoop checks that etcd answers every probeInterval until ctx is
// done; on the first failure it cancels ctx with the error. It also
// follows the client's gRPC connection: TRANSIENT_FAILURE means that no
// endpoint can be reached (one member down leaves it READY through the
// others), and ends the watch at once, so an outage is noticed in
// milliseconds rather than after up to probeInterval + requestTimeout (a
// request on a lost connection waits for it, as etcd's client asks gRPC
// to). The probe remains for what the connection state does not show: a
// member that answers nothing, or a network that drops packets until the
// keepalive gives up.
func (e *EtcdSource) probeLoop(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(e.probeInterval)
	defer t.Stop()
	lost := make(chan connectivity.State, 1)
	if conn := e.cli.ActiveConnection(); conn != nil {
		go func() {
			for st := conn.GetState(); ; st = conn.GetState() {
				if st == connectivity.TransientFailure || st == connectivity.Shutdown {
					lost <- st
					return
				}
				if !conn.WaitForStateChange(ctx, st) {
					return // ctx done
				}
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case st := <-lost:
			cancel(fmt.Errorf("etcd %v unreachable: connection %s", e.cli.Endpoints(), strings.ToLower(st.String())))
			return
		case <-t.C:
			if err := e.probe(ctx); err != nil && ctx.Err() == nil {
				cancel(err)
				return
			}
		}
	}
}

// stallLoop asks the watch stream of ctx for its progress every
// progressEvery, once the previous request (first: the creation) was
// answered (any response counts: the watch loop signals answered); when
// one stays unanswered for stallTimeout it cancels ctx: the member the
// stream is on stopped answering, the next read goes to the others. A
// member that answers nothing is otherwise seen only by gRPC's keepalive,
// 15 s or more later, while the other members go on and nodes leave
// rotation unseen.
func (e *EtcdSource) stallLoop(ctx context.Context, cancel context.CancelCauseFunc, answered <-chan struct{}) {
	t := time.NewTicker(e.progressEvery)
	defer t.Stop()
	asked := time.Now()
	waiting := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-answered:
			waiting = false
		case now := <-t.C:
			if waiting {
				if now.Sub(asked) >= e.stallTimeout {
					cancel(fmt.Errorf("%w: no answer from its member for %s", errStalled, now.Sub(asked).Round(time.Millisecond)))
					return
				}
				continue
			}
			// Same ctx as the watch: the request goes on its stream.
			if err := e.cli.RequestProgress(ctx); err != nil {
				if ctx.Err() == nil {
					cancel(fmt.Errorf("etcd watch progress request: %w", err))
				}
				return
			}
			asked, waiting = now, true
		}
	}
}

func (e *EtcdSource) probe(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, e.requestTimeout)
	defer cancel()
	if _, err := e.cli.Get(pctx, e.prefixes[0], clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("probe etcd: %w", err)
	}
	return nil
}

func toKV(kv *mvccpb.KeyValue) KV {
	return KV{Key: string(kv.Key), Value: string(kv.Value), Lease: kv.Lease, ModRevision: kv.ModRevision}
}

func snapshotOf(state map[string]KV, rev int64) Snapshot {
	kvs := make([]KV, 0, len(state))
	for _, kv := range state {
		kvs = append(kvs, kv)
	}
	sortKVs(kvs)
	return Snapshot{Revision: rev, KVs: kvs}
}

// runner is the state of one Run: status, backoff and log throttling.
type runner struct {
	e        *EtcdSource
	out      chan<- Snapshot
	backoff  time.Duration
	status   ConnState
	reported bool  // OnStatus was called at least once
	rev      int64 // revision of the last snapshot sent
	failures int   // consecutive failed reads
	lastErr  string
}

func (r *runner) send(ctx context.Context, s Snapshot) bool {
	select {
	case r.out <- s:
		r.rev = s.Revision
		return true
	case <-ctx.Done():
		return false
	}
}

// wait sleeps for the jittered backoff and doubles it; false if ctx ended.
func (r *runner) wait(ctx context.Context) bool {
	d := r.backoff/2 + rand.N(r.backoff/2+1)
	r.backoff = min(2*r.backoff, r.e.maxBackoff)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *runner) connected(rev int64) {
	if r.failures > 0 {
		r.e.logger.Info("etcd reachable again", "rev", rev, "failures", r.failures)
	}
	r.failures, r.lastErr = 0, ""
	r.backoff = r.e.minBackoff
	r.setStatus(true, nil, rev)
}

func (r *runner) readFailed(ctx context.Context, err error) {
	r.failures++
	if r.failures == 1 || r.failures%logEvery == 0 || err.Error() != r.lastErr {
		args := []any{"endpoints", r.e.cli.Endpoints(), "failures", r.failures, "err", err}
		if why := r.e.why(ctx, err); why != nil {
			args = append(args, "endpoint_error", why)
		}
		r.e.logger.Warn("etcd read failed, retrying", args...)
	}
	r.lastErr = err.Error()
	r.setStatus(false, err, r.rev)
}

func (r *runner) watchBroken(ctx context.Context, err error) {
	var ce *errCompacted
	if errors.As(err, &ce) {
		// etcd is fine; only our position in its history is gone.
		r.e.logger.Warn("etcd watch compacted, reading everything again",
			"rev", ce.rev, "compact_rev", ce.compactRev)
		return
	}
	args := []any{"endpoints", r.e.cli.Endpoints(), "rev", r.rev, "err", err}
	if why := r.e.why(ctx, err); why != nil {
		args = append(args, "endpoint_error", why)
	}
	r.e.logger.Warn("etcd watch broken, reading everything again", args...)
	r.setStatus(false, err, r.rev)
	// Count the break like a failed read so the next failure is not
	// logged again as the first one.
	r.failures, r.lastErr = 1, err.Error()
}

func (r *runner) setStatus(connected bool, err error, rev int64) {
	if r.reported && r.status.Connected == connected {
		r.status.Err, r.status.Revision = err, rev
		return
	}
	r.reported = true
	r.status = ConnState{Connected: connected, Err: err, Since: time.Now(), Revision: rev}
	if r.e.onStatus != nil {
		r.e.onStatus(r.status)
	}
}

// why asks Options.Diagnose about err, unless err is an answer from etcd.
func (e *EtcdSource) why(ctx context.Context, err error) error {
	var etcdErr rpctypes.EtcdError
	if e.diagnose == nil || errors.As(err, &etcdErr) || errors.Is(err, rpctypes.ErrCompacted) || ctx.Err() != nil {
		return nil
	}
	return e.diagnose(ctx, err)
}
