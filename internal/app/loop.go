// Package app is haconfd's reconcile loop and what it drives: two lanes
// (server changes through the runtime API at once; reloads, drains and
// fleet slots as background jobs), the targets it keeps in step with etcd
// (a running HAProxy, confd resources, a dry run), the guards per server,
// the Galera rotation and writers, the events it publishes, and the HTTP
// endpoints and page that show them. cmd/haconfd wires it from config.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/haconfd/haconfd/watch"
)

// Source emits consistent snapshots of the watched keys until ctx ends.
type Source interface {
	Run(ctx context.Context, out chan<- watch.Snapshot) error
}

// Target is what the loop keeps in step with etcd: a running HAProxy
// (HAProxyTarget), confd template resources (ConfdTarget), or a dry run.
// Every method is called on the loop goroutine, one at a time: a target's
// state needs no lock. A method must never wait on slow work: what takes
// time (haproxy -c, a reload, a fleet slot, a drain) goes to a job
// (Lanes.Submit) or a goroutine that reports back with Lanes.Post.
type Target interface {
	// Start is called once before the first snapshot.
	Start(ctx context.Context, l *Lanes) error
	// Snapshot is called for each new snapshot (the newest of those that
	// arrived together), at once: the fast lane.
	Snapshot(ctx context.Context, s watch.Snapshot)
	// Resync is called every LoopOptions.Resync: look at the world again
	// (HAProxy's live state, files changed by hand) and repair it.
	Resync(ctx context.Context)
	// Result is what --once reports once the first snapshot's work is
	// done (nil: it went live).
	Result() error
}

// Job is slow work of the reload lane. Run runs on the lane's one worker
// goroutine and must not touch the target's state; Done runs on the loop
// goroutine with Run's error. A job superseded by a newer one has its
// context canceled; Run then returns as soon as it can without leaving a
// half-done change (Done still runs and sees the outcome).
type Job struct {
	Name string // "reload", "write", ... (logs)
	// Wait: quiescence applies (--wait MIN:MAX): the job starts MIN after
	// the last Submit, never later than MAX after the first of a burst.
	Wait bool
	Run  func(ctx context.Context) error
	Done func(err error)
}

// Clock is the loop's time source (a fake in tests).
type Clock interface {
	Now() time.Time
	// AfterFunc runs f in its own goroutine after d; stop cancels it.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// LoopOptions tune the loop.
type LoopOptions struct {
	WaitMin, WaitMax time.Duration // quiescence of the reload lane
	Resync           time.Duration // Target.Resync period (0: never)
	Once             bool          // handle one snapshot, wait for its jobs, return Target.Result
	Clock            Clock         // default: the real clock
	Logger           *slog.Logger
	// OnSnapshot, if set, is told of every snapshot as it arrives (status).
	OnSnapshot func(watch.Snapshot)
	// Heartbeat, if set, is called on the loop goroutine at least every
	// second while the loop makes progress (the systemd watchdog).
	Heartbeat func()
}

// Loop drives a Target: snapshots from a Source go to the target at once;
// the target's slow work runs on the reload lane (one worker, newest job
// wins, quiescence for jobs that ask for it).
type Loop struct {
	src    Source
	target Target
	opts   LoopOptions
	log    *slog.Logger
	lanes  *Lanes
	ctx    context.Context // of the running loop, for jobs
}

// NewLoop returns a loop joining src and target.
func NewLoop(src Source, target Target, opts LoopOptions) *Loop {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	l := &Loop{src: src, target: target, opts: opts, log: opts.Logger}
	l.lanes = &Lanes{loop: l, inbox: make(chan func(), 64), done: make(chan struct{})}
	return l
}

// Lanes is the loop's side the target talks to: run a closure on the loop
// goroutine, schedule one, and submit slow jobs.
type Lanes struct {
	loop  *Loop
	inbox chan func()
	done  chan struct{} // closed when the loop returns

	// Owned by the loop goroutine.
	pending    *Job
	ready      bool      // pending may start (quiescence over, or no wait)
	burstStart time.Time // first Submit of the current quiescence burst
	stopTimer  func() bool
	timerGen   int
	running    *Job
	cancelRun  context.CancelFunc
	workers    sync.WaitGroup
	onIdle     []func()
}

// Post runs f on the loop goroutine (from any goroutine). After the loop
// has returned, f is dropped.
func (l *Lanes) Post(f func()) {
	select {
	case l.inbox <- f:
	case <-l.done:
	}
}

// After runs f on the loop goroutine after d; the returned stop cancels it.
func (l *Lanes) After(d time.Duration, f func()) (stop func()) {
	canceled := false
	var mu sync.Mutex
	s := l.loop.opts.Clock.AfterFunc(d, func() {
		l.Post(func() {
			mu.Lock()
			c := canceled
			mu.Unlock()
			if !c {
				f()
			}
		})
	})
	return func() {
		mu.Lock()
		canceled = true
		mu.Unlock()
		s()
	}
}

// Now is the loop clock's time.
func (l *Lanes) Now() time.Time { return l.loop.opts.Clock.Now() }

// Go runs f in a goroutine that the loop waits for before it returns.
func (l *Lanes) Go(f func()) {
	l.workers.Add(1)
	go func() {
		defer l.workers.Done()
		f()
	}()
}

// Call runs f on the loop goroutine and waits until it has (from a job's
// goroutine: e.g. to take the newest config when its turn comes).
func (l *Lanes) Call(ctx context.Context, f func()) error {
	ran := make(chan struct{})
	select {
	case l.inbox <- func() { f(); close(ran) }:
	case <-l.done:
		return errors.New("loop stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ran:
		return nil
	case <-l.done:
		return errors.New("loop stopped")
	}
}

// Submit makes j the reload lane's next job. Submitting the running job
// again does nothing; submitting the pending one again restarts its
// quiescence wait (never past MAX after the first Submit of the burst).
// Another job replaces a pending one (dropped: its Done is not called)
// and cancels a running one, whose Done still runs once its Run has
// returned. Call on the loop goroutine.
func (l *Lanes) Submit(j *Job) {
	if j == l.running {
		return
	}
	if j != l.pending && l.cancelRun != nil {
		l.cancelRun()
	}
	l.pending = j
	if !j.Wait || l.loop.opts.Once || l.loop.opts.WaitMin <= 0 && l.loop.opts.WaitMax <= 0 {
		l.ready = true
		l.burstStart = time.Time{}
		l.stopQuiescence()
		l.kick()
		return
	}
	now := l.Now()
	if l.burstStart.IsZero() {
		l.burstStart = now
	}
	delay := l.loop.opts.WaitMin
	if deadline := l.burstStart.Add(l.loop.opts.WaitMax); now.Add(delay).After(deadline) {
		delay = max(deadline.Sub(now), 0)
	}
	l.ready = false
	l.stopQuiescence()
	l.timerGen++
	gen := l.timerGen
	l.stopTimer = l.loop.opts.Clock.AfterFunc(delay, func() {
		l.Post(func() {
			if gen != l.timerGen {
				return
			}
			l.ready = true
			l.burstStart = time.Time{}
			l.kick()
		})
	})
}

// Cancel drops the pending job and cancels the running one. Call on the
// loop goroutine.
func (l *Lanes) Cancel() {
	l.pending = nil
	l.ready = false
	l.burstStart = time.Time{}
	l.stopQuiescence()
	if l.cancelRun != nil {
		l.cancelRun()
	}
}

// Busy reports whether a job is pending or running.
func (l *Lanes) Busy() bool { return l.pending != nil || l.running != nil }

// Running reports whether j is the job the worker runs now.
func (l *Lanes) Running(j *Job) bool { return j != nil && l.running == j }

func (l *Lanes) stopQuiescence() {
	if l.stopTimer != nil {
		l.stopTimer()
		l.stopTimer = nil
	}
	l.timerGen++
}

// kick starts the pending job when it is ready and the worker is free.
func (l *Lanes) kick() {
	if l.running != nil || l.pending == nil || !l.ready {
		if l.running == nil && l.pending == nil {
			l.idle()
		}
		return
	}
	j := l.pending
	l.pending, l.ready = nil, false
	l.running = j
	ctx, cancel := context.WithCancel(l.loop.ctx)
	l.cancelRun = cancel
	l.workers.Add(1)
	log := l.loop.log
	log.Debug("reload lane: job started", "job", j.Name)
	start := time.Now()
	go func() {
		defer l.workers.Done()
		err := j.Run(ctx)
		cancel()
		l.Post(func() {
			log.Debug("reload lane: job done", "job", j.Name, "err", err, "took", time.Since(start).Round(time.Microsecond))
			l.running, l.cancelRun = nil, nil
			if j.Done != nil {
				j.Done(err)
			}
			l.kick()
		})
	}()
}

// whenIdle runs f on the loop goroutine once no job is pending or running.
func (l *Lanes) whenIdle(f func()) {
	l.onIdle = append(l.onIdle, f)
	if !l.Busy() {
		l.idle()
	}
}

func (l *Lanes) idle() {
	fs := l.onIdle
	l.onIdle = nil
	for _, f := range fs {
		f()
	}
}

// Run drives the loop until ctx ends (returns nil) or, with Once, until
// the first snapshot has been handled and its jobs are done (returns
// Target.Result()).
func (l *Loop) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l.ctx = ctx
	lanes := l.lanes
	defer func() {
		cancel()
		close(lanes.done)
		lanes.workers.Wait()
	}()
	snaps := make(chan watch.Snapshot, 1)
	srcDone := make(chan error, 1)
	go func() { srcDone <- l.src.Run(ctx, snaps) }()
	defer func() {
		cancel()
		<-srcDone
	}()
	if err := l.target.Start(ctx, lanes); err != nil {
		return err
	}

	var resync <-chan time.Time
	if l.opts.Resync > 0 && !l.opts.Once {
		t := time.NewTicker(l.opts.Resync)
		defer t.Stop()
		resync = t.C
	}
	beat := time.NewTicker(time.Second)
	defer beat.Stop()
	onceDone := make(chan struct{})
	gotFirst := false
	for {
		if l.opts.Heartbeat != nil {
			l.opts.Heartbeat()
		}
		select {
		case <-ctx.Done():
			if l.opts.Once {
				return fmt.Errorf("--once: %w", ErrNoSnapshot)
			}
			return nil
		case err := <-srcDone:
			srcDone <- err // for the deferred wait
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch: %w", err)
		case f := <-lanes.inbox:
			f()
		case s := <-snaps:
			// The newest of what arrived together.
			for more := true; more; {
				select {
				case n := <-snaps:
					s = n
				default:
					more = false
				}
			}
			if l.opts.OnSnapshot != nil {
				l.opts.OnSnapshot(s)
			}
			if l.opts.Once && gotFirst {
				continue
			}
			l.target.Snapshot(ctx, s)
			if l.opts.Once && !gotFirst {
				gotFirst = true
				lanes.whenIdle(func() { close(onceDone) })
			}
		case <-onceDone:
			return l.target.Result()
		case <-resync:
			l.target.Resync(ctx)
		case <-beat.C:
		}
	}
}

// errSuperseded marks a job whose context was canceled because a newer
// job replaced it, and that did nothing.
var errSuperseded = errors.New("superseded by a newer change")
