package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultTTL is Options.TTL when unset.
const DefaultTTL = 10 * time.Second

// requestTimeout bounds one etcd request of the publisher.
const requestTimeout = 5 * time.Second

// Options configure a Publisher.
type Options struct {
	Prefix   string        // status prefix, e.g. /haconfd/instances (required)
	Instance string        // this instance's name (required)
	TTL      time.Duration // lease TTL, rounded up to whole seconds, at least 1s; default DefaultTTL
	Logger   *slog.Logger
}

// Publisher keeps this instance's Report in etcd on a lease that it keeps
// alive (a concurrency.Session, also used by Stagger for its locks).
type Publisher struct {
	cli  *clientv3.Client
	opts Options
	ttl  int
	log  *slog.Logger

	mu      sync.Mutex
	status  Report
	sess    *concurrency.Session
	ready   chan struct{} // closed while sess is set
	pubMu   sync.Mutex    // serializes puts so the newest status wins
	deleted bool          // Run ended: publish nothing more
}

// NewPublisher checks opts and returns a Publisher; Run publishes.
func NewPublisher(cli *clientv3.Client, opts Options) (*Publisher, error) {
	if cli == nil {
		return nil, errors.New("fleet publisher: etcd client is nil")
	}
	if err := CheckPrefix(opts.Prefix); err != nil {
		return nil, fmt.Errorf("fleet option Prefix: %w", err)
	}
	if err := CheckInstance(opts.Instance); err != nil {
		return nil, fmt.Errorf("fleet option Instance: %w", err)
	}
	switch {
	case opts.TTL < 0:
		return nil, fmt.Errorf("fleet option TTL %v: must not be negative", opts.TTL)
	case opts.TTL == 0:
		opts.TTL = DefaultTTL
	case opts.TTL < time.Second:
		return nil, fmt.Errorf("fleet option TTL %v: must be at least 1s (etcd leases count whole seconds)", opts.TTL)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Publisher{
		cli:    cli,
		opts:   opts,
		ttl:    int(math.Ceil(opts.TTL.Seconds())),
		log:    log,
		status: Report{Instance: opts.Instance, Started: time.Now()},
		ready:  make(chan struct{}),
	}, nil
}

// Instance is this instance's name.
func (p *Publisher) Instance() string { return p.opts.Instance }

// Prefix is the status prefix.
func (p *Publisher) Prefix() string { return p.opts.Prefix }

// Report returns a copy of the status as last updated.
func (p *Publisher) Report() Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status.clone()
}

// Run obtains a lease, publishes the status and keeps the lease alive
// until ctx ends; a lost lease (etcd unreachable for longer than the TTL)
// is replaced and the status published again. When ctx ends it deletes
// the status and last-seen keys and revokes the lease (a clean stop), and
// returns nil.
func (p *Publisher) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		sess, err := concurrency.NewSession(p.cli, concurrency.WithTTL(p.ttl), concurrency.WithContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			p.log.Warn("no etcd lease for the instance status, retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		p.mu.Lock()
		p.sess = sess
		close(p.ready)
		p.mu.Unlock()
		if err := p.publish(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("publish instance status", "err", err)
		}
		select {
		case <-ctx.Done():
			p.stop(sess)
			return nil
		case <-sess.Done():
			p.log.Warn("instance status lease lost (etcd unreachable for longer than the TTL?), renewing", "lease", fmt.Sprintf("%x", sess.Lease()))
			p.mu.Lock()
			p.sess = nil
			p.ready = make(chan struct{})
			p.mu.Unlock()
		}
	}
}

// stop deletes the keys and revokes the lease (the session's own context
// is done, so Session.Close could not revoke).
func (p *Publisher) stop(sess *concurrency.Session) {
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	p.mu.Lock()
	p.deleted = true
	p.sess = nil
	p.ready = make(chan struct{})
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	_, err := p.cli.Txn(ctx).Then(
		clientv3.OpDelete(statusKey(p.opts.Prefix, p.opts.Instance)),
		clientv3.OpDelete(seenKey(p.opts.Prefix, p.opts.Instance)),
	).Commit()
	if _, rerr := p.cli.Revoke(ctx, sess.Lease()); err == nil {
		err = rerr
	}
	if err != nil {
		p.log.Warn("remove instance status on stop (it expires with its lease)", "err", err)
	}
}

// Update changes the status with f and publishes it at once when a lease
// is held (else the next lease publishes it). It returns the put's error.
func (p *Publisher) Update(ctx context.Context, f func(*Report)) error {
	p.mu.Lock()
	f(&p.status)
	p.status.Instance = p.opts.Instance
	p.mu.Unlock()
	return p.publish(ctx)
}

func (p *Publisher) publish(ctx context.Context) error {
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	p.mu.Lock()
	sess, deleted := p.sess, p.deleted
	p.status.Updated = time.Now()
	st := p.status.clone()
	p.mu.Unlock()
	if sess == nil || deleted {
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("publish status: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	_, err = p.cli.Txn(pctx).Then(
		clientv3.OpPut(statusKey(p.opts.Prefix, p.opts.Instance), string(b), clientv3.WithLease(sess.Lease())),
		clientv3.OpPut(seenKey(p.opts.Prefix, p.opts.Instance), string(b)),
	).Commit()
	if err != nil {
		return fmt.Errorf("publish status of %s: %w", p.opts.Instance, err)
	}
	return nil
}

// session waits for the lease (at most until ctx ends).
func (p *Publisher) session(ctx context.Context) (*concurrency.Session, error) {
	for {
		p.mu.Lock()
		sess, ready := p.sess, p.ready
		p.mu.Unlock()
		if sess != nil {
			return sess, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("no etcd lease for reload coordination: %w", context.Cause(ctx))
		}
	}
}
