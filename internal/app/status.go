package app

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// HeldServer is a server a guard keeps configured although its node left.
type HeldServer struct {
	Section string    `json:"section"`
	Server  string    `json:"server"`
	Guard   string    `json:"guard"` // max_remove or min_servers
	Reason  string    `json:"reason"`
	Since   time.Time `json:"since"`
	// Until is when it is released (zero: when its node returns, other
	// servers come back, or --force).
	Until time.Time `json:"until,omitempty"`
}

func (h HeldServer) String() string {
	return h.Section + "/" + h.Server + " (" + h.Guard + ": " + h.Reason + ")"
}

// PendingReload is a change that waits for the reload lane.
type PendingReload struct {
	Action  string    `json:"action"` // start or reload
	Reasons []string  `json:"reasons"`
	Since   time.Time `json:"since"`
	// Waiting says what it waits for: quiescence, a fleet reload slot,
	// the reload itself, or a retry after a failure.
	Waiting string `json:"waiting"`
}

// Status is what the loop has done and what is live, for /status,
// /readyz, `haconfd status` and the page.
type Status struct {
	Revision       int64     `json:"revision"`        // newest revision seen
	Applied        int64     `json:"applied"`         // newest revision whose render is entirely live
	RuntimeApplied int64     `json:"runtime_applied"` // newest revision whose server changes are live
	LastApply      time.Time `json:"last_apply"`      // when a change last went live
	LastAction     string    `json:"last_action"`     // how: runtime, write, start, reload, none
	LastError      string    `json:"last_error"`      // empty once the newest render is live
	// Held is why the newest render is not (entirely) live by choice: a
	// start held by --min-servers, or servers kept by a guard (summary).
	Held        string         `json:"held"`
	HeldSince   time.Time      `json:"held_since"`
	HeldServers []HeldServer   `json:"held_servers"`
	Pending     *PendingReload `json:"pending_reload,omitempty"`
	Draining    []string       `json:"draining"`     // removed servers finishing their sessions
	Servers     int            `json:"servers"`      // servers in the live config
	Applies     int            `json:"applies"`      // changes made live (runtime, write, start, reload)
	Reloads     int            `json:"reloads"`      // starts and reloads of HAProxy
	Failures    int            `json:"failures"`     // renders, commands, writes or reloads that failed
	Holds       int            `json:"holds"`        // servers or starts a guard held
	Rollbacks   int            `json:"rollbacks"`    // reloads rolled back
	LastAttempt time.Time      `json:"last_attempt"` // when the loop last rendered
	Skipped     []string       `json:"skipped_nodes"`
	Incomplete  []string       `json:"incomplete_nodes"` // registrations still arriving
	Resynced    time.Time      `json:"resynced"`         // last comparison with HAProxy's live state
	Repairs     int            `json:"repairs"`          // live-state differences repaired
	HAProxy     HAProxyStatus  `json:"haproxy"`
	// ConfigSHA256 is the sha256 of the live file.
	ConfigSHA256 string `json:"config_sha256"`

	EtcdConnected bool      `json:"etcd_connected"`
	EtcdSince     time.Time `json:"etcd_since"` // since when connected or disconnected
	EtcdError     string    `json:"etcd_error"`

	// Notes are what the keys under the prefixes did not give, one line
	// each: a prefix with no node, a cluster nobody bound, a node signal
	// that could not be read (the node is kept out of rotation).
	Notes []string `json:"notes"`
}

// HAProxyStatus is what is known of the running HAProxy.
type HAProxyStatus struct {
	PID     int    `json:"pid"`
	Version string `json:"version"`
	Running bool   `json:"running"`
	// Methods are how haconfd drives this version (haproxy.Caps.Methods):
	// e.g. "master reload: Success= answer" on 2.7+.
	Methods []string `json:"methods,omitempty"`
	// Warnings are what `haproxy -c` warned about the live config (e.g. a
	// deprecated keyword in a template), one line each.
	Warnings []string `json:"warnings,omitempty"`
}

// Ready says whether haconfd is connected to etcd and has the newest
// revision it saw live, and why not. Servers held by a guard are live by
// choice: ready, and listed.
func (s Status) Ready() (bool, string) {
	switch {
	case !s.EtcdConnected && s.EtcdSince.IsZero():
		return false, "not ready: no snapshot from etcd yet"
	case !s.EtcdConnected:
		return false, fmt.Sprintf("not ready: etcd unreachable since %s (%s); the last good config stays live",
			s.EtcdSince.UTC().Format(time.RFC3339), s.EtcdError)
	case s.Applied < s.Revision || s.Applied == 0:
		msg := fmt.Sprintf("not ready: revision %d seen, %d live", s.Revision, s.Applied)
		if s.Held != "" && len(s.HeldServers) == 0 {
			msg += "; held: " + s.Held
		}
		if p := s.Pending; p != nil {
			msg += fmt.Sprintf("; %s pending (%s) since %s, waiting: %s", p.Action, strings.Join(p.Reasons, "; "),
				s.Pending.Since.UTC().Format(time.RFC3339), p.Waiting)
		}
		if s.LastError != "" {
			msg += "; last error: " + s.LastError
		}
		return false, msg
	default:
		msg := fmt.Sprintf("ready: revision %d live", s.Applied)
		if n := len(s.HeldServers); n > 0 {
			var hs []string
			for _, h := range s.HeldServers {
				hs = append(hs, h.String())
			}
			msg += fmt.Sprintf("; %d server(s) held: %s", n, strings.Join(hs, ", "))
		}
		return true, msg
	}
}

// ServerView is one server as haconfd wants it: what etcd and the guards
// say, and why it is in or out of rotation (for /servers and the page;
// HAProxy's live state is read next to it).
type ServerView struct {
	Section  string `json:"section"`
	Server   string `json:"server"`
	Addr     string `json:"addr"` // ip:port as rendered
	Weight   int    `json:"weight"`
	Disabled bool   `json:"disabled"` // rendered "disabled": out of rotation
	Node     string `json:"node,omitempty"`
	State    string `json:"state,omitempty"` // the node's Galera state ("" when unpublished)
	Held     bool   `json:"held,omitempty"`
	Draining bool   `json:"draining,omitempty"`
	// InRotation: the node takes new connections in this section (weight
	// above 0, not disabled). Writer: it is one of its service's writers.
	InRotation bool `json:"in_rotation"`
	Writer     bool `json:"writer,omitempty"`
	// Signals are the Galera signals its node published (name → value).
	Signals map[string]string `json:"signals,omitempty"`
	// Reasons say why the server is out of rotation, or kept although its
	// node left; empty for a server in rotation as etcd says.
	Reasons []string `json:"reasons,omitempty"`
}

// Board holds the status; safe for concurrent use.
type Board struct {
	mu      sync.Mutex
	s       Status
	servers []ServerView
}

// Servers returns the servers as haconfd wants them, by section and name.
func (b *Board) Servers() []ServerView {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.servers)
}

// SetServers replaces the server views.
func (b *Board) SetServers(v []ServerView) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.servers = v
}

// Get returns a copy of the status.
func (b *Board) Get() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.s
	s.Skipped = slices.Clone(s.Skipped)
	s.Incomplete = slices.Clone(s.Incomplete)
	s.Notes = slices.Clone(s.Notes)
	s.HeldServers = slices.Clone(s.HeldServers)
	s.Draining = slices.Clone(s.Draining)
	if s.Pending != nil {
		p := *s.Pending
		p.Reasons = slices.Clone(p.Reasons)
		s.Pending = &p
	}
	return s
}

// Update changes the status under the lock.
func (b *Board) Update(f func(*Status)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(&b.s)
}
