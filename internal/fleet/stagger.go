package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultLockWait is StaggerOptions.LockWait when unset.
const DefaultLockWait = 2 * time.Minute

// StaggerOptions configure a Stagger.
type StaggerOptions struct {
	// Slots is how many instances may reload at once (at least 1).
	Slots int
	// LockWait bounds the wait for a slot; after it (a holder that hangs)
	// the reload goes ahead uncoordinated, with a warning. Default
	// DefaultLockWait.
	LockWait time.Duration
	// SessionWait bounds the wait for etcd (a lease) before a reload; after
	// it the reload goes ahead uncoordinated, with a warning: an
	// unreachable etcd never keeps a validated config from going live.
	// Default: the publisher's TTL.
	SessionWait time.Duration
	Logger      *slog.Logger
}

// Attempt describes a start or reload about to happen.
type Attempt struct {
	Action       string // "start" or "reload"
	Change       string // Digest of the watched keys the config was rendered from
	ConfigSHA256 string
	// Coordinate: take a reload slot (reloads); a start of a HAProxy that
	// is not running is only wave-checked and recorded.
	Coordinate bool
}

// Stagger staggers reloads across the fleet with an etcd semaphore of
// Slots slots (one concurrency.Mutex per slot, on the publisher's
// lease), and stops a wave: a change that failed to start or reload on
// one instance is refused by the others.
type Stagger struct {
	pub  *Publisher
	opts StaggerOptions
	log  *slog.Logger

	// retry is the background release of a slot whose delete etcd did not
	// take (nil when none runs); guarded by mu.
	mu    sync.Mutex
	retry *releaseRetry
}

// releaseRetry retries the delete of a slot's key until etcd takes it.
type releaseRetry struct {
	stop chan struct{}
	done chan struct{}
}

// NewStagger returns a Stagger that uses pub's lease and status.
func NewStagger(pub *Publisher, opts StaggerOptions) (*Stagger, error) {
	if pub == nil {
		return nil, errors.New("fleet stagger: publisher is nil")
	}
	if opts.Slots < 1 {
		return nil, fmt.Errorf("fleet stagger option Slots %d: must be at least 1", opts.Slots)
	}
	switch {
	case opts.LockWait < 0:
		return nil, fmt.Errorf("fleet stagger option LockWait %v: must not be negative", opts.LockWait)
	case opts.LockWait == 0:
		opts.LockWait = DefaultLockWait
	}
	switch {
	case opts.SessionWait < 0:
		return nil, fmt.Errorf("fleet stagger option SessionWait %v: must not be negative", opts.SessionWait)
	case opts.SessionWait == 0:
		opts.SessionWait = pub.opts.TTL
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Stagger{pub: pub, opts: opts, log: log}, nil
}

// Acquire is called right before a start or reload. It refuses
// (*WaveStoppedError) when another live instance failed the same change;
// for a coordinated attempt it then waits for a reload slot, and checks
// the wave again once it holds one. It records the attempt in the
// published timeline. The returned release must be called with the
// outcome: it publishes it (success clears this instance's failed change,
// failure stops the wave for the change) and only then frees the slot.
// Other errors are ctx's.
func (s *Stagger) Acquire(ctx context.Context, a Attempt) (release func(ok bool, err error), err error) {
	if err := s.checkWave(ctx, a.Change); err != nil {
		return nil, err
	}
	var mu *heldSlot
	if a.Coordinate {
		mu, err = s.lock(ctx)
		if err != nil {
			return nil, err
		}
		if mu != nil {
			if err := s.checkWave(ctx, a.Change); err != nil {
				s.unlock(mu)
				s.clearWaiting(ctx)
				return nil, err
			}
		}
	}
	rec := Reload{Action: a.Action, Change: a.Change, ConfigSHA256: a.ConfigSHA256, Started: time.Now(), Coordinated: mu != nil}
	if err := s.pub.Update(ctx, func(st *Report) {
		st.Waiting = ""
		st.Reloads = append(st.Reloads, rec)
		if n := len(st.Reloads); n > maxReloads {
			st.Reloads = st.Reloads[n-maxReloads:]
		}
	}); err != nil {
		s.log.Warn("publish reload start", "err", err)
	}
	return func(ok bool, rerr error) {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		if err := s.pub.Update(ctx, func(st *Report) {
			for i := len(st.Reloads) - 1; i >= 0; i-- {
				r := &st.Reloads[i]
				if r.Started.Equal(rec.Started) && r.Change == rec.Change {
					r.Finished, r.OK = time.Now(), ok
					if rerr != nil {
						r.Error = rerr.Error()
					}
					break
				}
			}
			if ok {
				st.FailedChange, st.FailedConfigSHA256, st.FailedError = "", "", ""
			} else {
				st.FailedChange, st.FailedConfigSHA256 = a.Change, a.ConfigSHA256
				st.FailedError = "reload failed"
				if rerr != nil {
					st.FailedError = rerr.Error()
				}
			}
		}); err != nil {
			s.log.Warn("publish reload outcome", "err", err)
		}
		if mu != nil {
			s.unlock(mu)
		}
	}, nil
}

// checkWave refuses a change that another live instance failed. When the
// statuses cannot be read the reload goes ahead (logged).
func (s *Stagger) checkWave(ctx context.Context, change string) error {
	if change == "" {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := s.pub.cli.Get(rctx, s.pub.opts.Prefix+"/", clientv3.WithPrefix())
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn("cannot read the fleet's statuses; reloading without the wave check", "err", err)
		return nil
	}
	for _, kv := range resp.Kvs {
		var st Report
		if json.Unmarshal(kv.Value, &st) != nil || st.Instance == s.pub.opts.Instance {
			continue
		}
		if st.FailedChange == change {
			return &WaveStoppedError{Instance: st.Instance, Reason: st.FailedError}
		}
	}
	return nil
}

// lock takes a slot: a free one if any (TryLock on each), else it waits
// on one chosen by the instance name. It returns nil (and no error) when
// coordination is not possible (no lease in time, etcd refused, slot not
// free within LockWait): the reload then goes ahead uncoordinated.
// heldSlot is a reload slot held: its mutex and the session it is on.
type heldSlot struct {
	mu   *concurrency.Mutex
	sess *concurrency.Session
}

func (s *Stagger) lock(ctx context.Context) (*heldSlot, error) {
	// A slot key this instance still holds from a release etcd did not
	// take is on the same lease: the new mutex takes it over, the
	// background delete must not remove it under the new holder.
	s.stopRetry()
	since := time.Now()
	sctx, cancel := context.WithTimeout(ctx, s.opts.SessionWait)
	sess, err := s.pub.session(sctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.log.Warn("reloading without coordination", "err", err)
		return nil, nil
	}
	for slot := range s.opts.Slots {
		mu := concurrency.NewMutex(sess, lockPrefix(s.pub.opts.Prefix, slot))
		tctx, cancel := context.WithTimeout(ctx, requestTimeout)
		err := mu.TryLock(tctx)
		cancel()
		switch {
		case err == nil:
			return &heldSlot{mu, sess}, nil
		case errors.Is(err, concurrency.ErrLocked):
			continue
		case ctx.Err() != nil:
			return nil, ctx.Err()
		default:
			s.uncoordinated(err)
			return nil, nil
		}
	}
	h := fnv.New32a()
	h.Write([]byte(s.pub.opts.Instance))
	slot := int(h.Sum32() % uint32(s.opts.Slots))
	if err := s.pub.Update(ctx, func(st *Report) {
		st.Waiting = fmt.Sprintf("reload slot %d since %s", slot, since.Format(time.RFC3339Nano))
	}); err != nil {
		s.log.Warn("publish waiting", "err", err)
	}
	s.log.Info("waiting for a reload slot", "slot", slot, "slots", s.opts.Slots)
	lctx, cancel := context.WithTimeout(ctx, s.opts.LockWait)
	defer cancel()
	mu := concurrency.NewMutex(sess, lockPrefix(s.pub.opts.Prefix, slot))
	if err := mu.Lock(lctx); err != nil {
		if ctx.Err() != nil {
			_ = s.pub.Update(context.WithoutCancel(ctx), func(st *Report) { st.Waiting = "" })
			return nil, ctx.Err()
		}
		s.uncoordinated(err)
		return nil, nil
	}
	s.log.Info("reload slot taken", "slot", slot, "waited", time.Since(since).Round(time.Millisecond))
	return &heldSlot{mu, sess}, nil
}

// clearWaiting removes the "waiting for a reload slot" note once no slot
// is awaited (the attempt was refused or canceled).
func (s *Stagger) clearWaiting(ctx context.Context) {
	if s.pub.Report().Waiting == "" {
		return
	}
	if err := s.pub.Update(context.WithoutCancel(ctx), func(st *Report) { st.Waiting = "" }); err != nil {
		s.log.Warn("publish waiting", "err", err)
	}
}

func (s *Stagger) uncoordinated(err error) {
	if errors.Is(err, rpctypes.ErrPermissionDenied) {
		s.log.Warn("etcd refused the reload lock (the etcd user needs write access to the status prefix); reloading without coordination", "err", err)
		return
	}
	s.log.Warn("reloading without coordination", "err", err)
}

// unlock frees the slot. When etcd does not take the delete (the member
// stopped answering, no leader for a while), the key stays on the
// session's lease, which the publisher keeps alive: every other instance
// would wait LockWait for the slot (2 minutes by default). So the delete
// is retried in the background until etcd takes it, the session ends (the
// key goes with its lease) or this instance takes a slot again.
func (s *Stagger) unlock(held *heldSlot) {
	mu := held.mu
	err := tryUnlock(mu)
	if err == nil {
		return
	}
	s.log.Warn("release reload slot failed; retrying in the background", "err", err)
	r := &releaseRetry{stop: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	s.retry = r
	s.mu.Unlock()
	sessDone := held.sess.Done()
	go func() {
		defer close(r.done)
		backoff := 100 * time.Millisecond
		for {
			t := time.NewTimer(backoff)
			select {
			case <-r.stop:
				t.Stop()
				return
			case <-sessDone:
				t.Stop()
				return
			case <-t.C:
			}
			err := tryUnlock(mu)
			if err == nil || errors.Is(err, concurrency.ErrLockReleased) {
				s.log.Info("reload slot released")
				return
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}()
}

func tryUnlock(mu *concurrency.Mutex) error {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	return mu.Unlock(ctx)
}

// stopRetry ends a background release, if one runs, and waits for it.
func (s *Stagger) stopRetry() {
	s.mu.Lock()
	r := s.retry
	s.retry = nil
	s.mu.Unlock()
	if r == nil {
		return
	}
	close(r.stop)
	<-r.done
}
