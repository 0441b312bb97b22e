package app

import (
	"sync"
	"time"
)

// Event kinds: what the loop did, for subscribers (status, metrics, the
// fleet status, the timeline of the page).
const (
	EventRendered  = "rendered"  // a snapshot was rendered
	EventRuntime   = "runtime"   // server changes sent through the runtime API (fast lane)
	EventWritten   = "written"   // the file was rewritten (no reload)
	EventReloaded  = "reloaded"  // HAProxy started or reloaded with a new config
	EventPending   = "pending"   // a reload is waiting (quiescence, fleet slot)
	EventHeld      = "held"      // a guard holds a server, or a start
	EventReleased  = "released"  // a held server was released
	EventFailed    = "failed"    // a render, a runtime command, a write or a reload failed
	EventDrained   = "drained"   // a removed server finished draining and is gone
	EventRepaired  = "repaired"  // a resync found HAProxy's live state off and repaired it
	EventConverged = "converged" // everything the newest render asks for is live
	EventEtcd      = "etcd"      // the etcd connection changed
	EventSnapshot  = "snapshot"  // a new revision arrived from etcd
)

// Event is one thing the loop did.
type Event struct {
	Time     time.Time     `json:"time"`
	Kind     string        `json:"kind"`
	Rev      int64         `json:"rev,omitempty"`
	Lane     string        `json:"lane,omitempty"`   // "fast" or "reload"
	Action   string        `json:"action,omitempty"` // runtime, write, start, reload, none
	Servers  []string      `json:"servers,omitempty"`
	Commands []string      `json:"commands,omitempty"`
	Steps    []string      `json:"steps,omitempty"`
	Detail   string        `json:"detail,omitempty"`
	Err      string        `json:"err,omitempty"`
	Duration time.Duration `json:"duration,omitempty"`
	PID      int           `json:"pid,omitempty"`
}

// Bus hands events to subscribers. Publish never blocks: listeners are
// called in line (they must be quick and never block), channel
// subscribers that are full miss the event (and can read the status).
type Bus struct {
	mu        sync.Mutex
	listeners []func(Event)
	subs      map[chan Event]struct{}
	ring      []Event // the last ringSize events
	next      int
	full      bool
}

const ringSize = 500

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{subs: map[chan Event]struct{}{}, ring: make([]Event, ringSize)} }

// Listen adds a listener called in line with every event.
func (b *Bus) Listen(f func(Event)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.listeners = append(b.listeners, f)
}

// Subscribe returns a channel of the events published from now on (those
// that find it full are dropped) and a function that unsubscribes.
func (b *Bus) Subscribe(buffer int) (<-chan Event, func()) {
	ch := make(chan Event, buffer)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}
}

// Publish stamps e (when its Time is zero) and hands it out.
func (b *Bus) Publish(e Event) {
	if b == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.mu.Lock()
	b.ring[b.next] = e
	b.next = (b.next + 1) % len(b.ring)
	if b.next == 0 {
		b.full = true
	}
	ls := b.listeners
	for ch := range b.subs {
		select {
		case ch <- e:
		default:
		}
	}
	b.mu.Unlock()
	for _, f := range ls {
		f(e)
	}
}

// Recent returns the last events, oldest first.
func (b *Bus) Recent() []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Event
	if b.full {
		out = append(out, b.ring[b.next:]...)
	}
	return append(out, b.ring[:b.next]...)
}
