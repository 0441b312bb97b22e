package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/internal/fleet"
)

// The page: one self-contained HTML file (inline CSS and JavaScript, no
// external asset) that shows the fleet, every server's desired state next
// to HAProxy's live one, and a timeline of the last changes. It reads the
// JSON endpoints below, which are documented for scripts too, and gets
// events pushed through Server-Sent Events. It is read-only.

//go:embed page.html
var pageHTML []byte

// Page defaults.
const (
	pageSample    = 5 * time.Second  // connections are sampled this often
	pageWindow    = 10 * time.Minute // the charts' span
	pageMinSample = time.Second      // a /live read records a sample at most this often
	pageTopN      = 32               // servers kept per sample (the busiest)
	pageStreams   = 32               // concurrent /stream clients
	pageFleetTTL  = time.Second      // /fleet is read from etcd at most this often
	pageLiveWait  = 5 * time.Second  // bound on one read of HAProxy's socket or etcd
	pagePing      = 15 * time.Second // a comment on /stream keeps proxies from closing it
)

// LiveReader reads the running HAProxy: haproxy.Runtime.
type LiveReader interface {
	ServersState() (haproxy.LiveState, error)
	Stat() ([]haproxy.StatRow, error)
}

// PageOptions are what the page shows and where it reads it.
type PageOptions struct {
	Board *Board
	Bus   *Bus
	// Live reads HAProxy's live state at request time (nil: no runtime
	// socket configured).
	Live LiveReader
	// Fleet reads every instance's published status (nil: publishing is
	// off).
	Fleet func(ctx context.Context) (fleet.Fleet, error)
	// Instance is this instance's name (marked in the fleet).
	Instance string
	Sample   time.Duration // 0: pageSample
	Window   time.Duration // 0: pageWindow
	Logger   *slog.Logger
}

// Page serves the page and its JSON endpoints.
type Page struct {
	opts    PageOptions
	html    []byte
	csp     string
	streams atomic.Int32

	mu      sync.Mutex
	samples []Sample // oldest first, within Window

	fleetMu   sync.Mutex
	fleetAt   time.Time
	fleetView FleetView

	done     chan struct{}
	doneOnce sync.Once
}

// NewPage returns the page for opts.
func NewPage(opts PageOptions) *Page {
	if opts.Sample <= 0 {
		opts.Sample = pageSample
	}
	if opts.Window <= 0 {
		opts.Window = pageWindow
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Page{opts: opts, html: pageHTML, csp: pageCSP(pageHTML), done: make(chan struct{})}
}

// pageCSP allows exactly the page's inline script and style (by hash),
// requests to its own origin, and nothing else: markup that a value from
// etcd or HAProxy smuggled in could neither run nor load anything.
func pageCSP(html []byte) string {
	hash := func(open, close string) string {
		i := bytes.Index(html, []byte(open))
		j := bytes.Index(html, []byte(close))
		if i < 0 || j < i {
			return "'none'"
		}
		sum := sha256.Sum256(html[i+len(open) : j])
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return "default-src 'none'; script-src " + hash("<script>", "</script>") + "; style-src " + hash("<style>", "</style>") +
		"; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// Mount returns a handler that serves the page's paths and hands every
// other one to h (the /metrics, /status ... handler).
func (p *Page) Mount(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", p.serveHTML)
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, p.Live()) })
	mux.HandleFunc("GET /fleet", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, p.FleetView(r.Context())) })
	mux.HandleFunc("GET /history", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, p.History()) })
	mux.HandleFunc("GET /stream", p.serveStream)
	mux.Handle("/", h)
	return mux
}

func (p *Page) serveHTML(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(p.html)
}

// Run samples HAProxy's sessions per server every Sample until ctx ends,
// so that the chart has the last minutes when the page is opened in the
// middle of an incident; it also ends the open /stream responses.
func (p *Page) Run(ctx context.Context) {
	defer p.doneOnce.Do(func() { close(p.done) })
	if p.opts.Live == nil {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(p.opts.Sample)
	defer t.Stop()
	for {
		if rows, err := p.opts.Live.Stat(); err == nil {
			p.record(time.Now(), rows, 0)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample is the sessions of the busiest servers at one time.
type Sample struct {
	Time     time.Time      `json:"time"`
	Total    int            `json:"total"`    // sessions on every server
	Sessions map[string]int `json:"sessions"` // section/server → current sessions (the pageTopN busiest)
}

// record keeps a sample unless the last one is younger than minGap.
func (p *Page) record(now time.Time, rows []haproxy.StatRow, minGap time.Duration) {
	s := Sample{Time: now, Sessions: map[string]int{}}
	sorted := slices.Clone(rows)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Sessions > sorted[j].Sessions })
	for i, r := range sorted {
		s.Total += r.Sessions
		if i < pageTopN {
			s.Sessions[r.Proxy+"/"+r.Server] = r.Sessions
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.samples); n > 0 && now.Sub(p.samples[n-1].Time) < minGap {
		return
	}
	cut := 0
	for cut < len(p.samples) && now.Sub(p.samples[cut].Time) > p.opts.Window {
		cut++
	}
	p.samples = append(p.samples[cut:], s)
}

// LiveView is every server as haconfd wants it next to HAProxy's live
// state, read from HAProxy when asked (GET /live).
type LiveView struct {
	Time       time.Time    `json:"time"`
	Instance   string       `json:"instance"`
	Servers    []PageServer `json:"servers"` // by section, then server
	Mismatches int          `json:"mismatches"`
	// Error: HAProxy's live state could not be read (no socket, HAProxy
	// down); the servers then show the desired state only.
	Error string `json:"error,omitempty"`
}

// PageServer is one server: desired, live, and how they differ.
type PageServer struct {
	Section string      `json:"section"`
	Server  string      `json:"server"`
	Desired *ServerView `json:"desired"` // nil: in HAProxy, not in haconfd's config
	Live    *LiveServer `json:"live"`    // nil: not in HAProxy (or not read)
	// Mismatch says how HAProxy's live state differs from what haconfd
	// wants (admin state, address, weight, presence).
	Mismatch []string `json:"mismatch,omitempty"`
	// Warn: wanted in rotation, and HAProxy's health check says down.
	Warn []string `json:"warn,omitempty"`
}

// LiveServer is one server as the running HAProxy has it ("show servers
// state" and "show stat").
type LiveServer struct {
	Addr        string `json:"addr"`   // ip:port
	Admin       string `json:"admin"`  // ready, maint, drain
	Op          string `json:"op"`     // up, down, starting, stopping
	Status      string `json:"status"` // HAProxy's word: UP, DOWN, MAINT, DRAIN, no check, UP 1/3 ...
	Weight      int    `json:"weight"`
	Sessions    int    `json:"sessions"`
	MaxSessions int    `json:"max_sessions"`
	Total       int64  `json:"total_sessions"`
	Check       string `json:"check_status,omitempty"` // L4OK, L4CON, L7STS ...
	CheckDesc   string `json:"check_desc,omitempty"`
	LastChange  int64  `json:"last_change_s"` // seconds since the last UP/DOWN change (-1: unknown)
}

// Live reads HAProxy now and joins it with the desired servers.
func (p *Page) Live() LiveView {
	v := LiveView{Time: time.Now(), Instance: p.opts.Instance}
	desired := p.opts.Board.Servers()
	var state haproxy.LiveState
	var stats []haproxy.StatRow
	if p.opts.Live == nil {
		v.Error = "no runtime socket configured (--runtime-socket): HAProxy's live state is not read"
	} else {
		var err error
		if state, err = p.opts.Live.ServersState(); err == nil {
			stats, err = p.opts.Live.Stat()
		}
		if err != nil {
			v.Error = "reading HAProxy's live state: " + err.Error()
			state, stats = nil, nil
		} else {
			p.record(v.Time, stats, pageMinSample)
		}
	}
	v.Servers = joinServers(desired, state, stats, v.Error == "")
	for _, s := range v.Servers {
		if len(s.Mismatch) > 0 {
			v.Mismatches++
		}
	}
	return v
}

// joinServers pairs desired and live servers by section/server. With
// compare false (live state unknown) nothing is a mismatch.
func joinServers(desired []ServerView, state haproxy.LiveState, stats []haproxy.StatRow, compare bool) []PageServer {
	byKey := map[string]*PageServer{}
	var keys []string
	get := func(section, server string) *PageServer {
		k := section + "/" + server
		if s, ok := byKey[k]; ok {
			return s
		}
		s := &PageServer{Section: section, Server: server}
		byKey[k] = s
		keys = append(keys, k)
		return s
	}
	for i := range desired {
		d := desired[i]
		get(d.Section, d.Server).Desired = &d
	}
	stat := map[string]haproxy.StatRow{}
	for _, r := range stats {
		stat[r.Proxy+"/"+r.Server] = r
	}
	for _, st := range state.Sorted() {
		l := &LiveServer{Addr: net.JoinHostPort(st.Addr, strconv.Itoa(st.Port)), Admin: st.AdminWord(), Op: st.OpWord(),
			Weight: st.Weight, LastChange: -1}
		if r, ok := stat[st.Backend+"/"+st.Name]; ok {
			l.Status, l.Sessions, l.MaxSessions, l.Total = r.Status, r.Sessions, r.MaxSessions, r.Total
			l.Check, l.CheckDesc, l.LastChange = r.CheckStatus, r.CheckDesc, r.LastChange
		}
		get(st.Backend, st.Name).Live = l
	}
	sort.Strings(keys)
	out := make([]PageServer, 0, len(keys))
	for _, k := range keys {
		s := byKey[k]
		if compare {
			s.Mismatch, s.Warn = compareServer(s.Desired, s.Live)
		}
		out = append(out, *s)
	}
	return out
}

// compareServer says how live differs from desired. A server out of
// rotation (disabled, draining) must be in maint or drain; one in
// rotation must be ready; the address (when it is an IP) and the weight
// must be the desired ones.
func compareServer(d *ServerView, l *LiveServer) (mismatch, warn []string) {
	switch {
	case d == nil && l == nil:
		return nil, nil
	case d == nil:
		return []string{"in HAProxy, not in haconfd's config"}, nil
	case l == nil:
		if d.Draining {
			return nil, nil // drained and deleted since the views were made
		}
		return []string{"missing from HAProxy"}, nil
	}
	// Out of rotation: disabled (maint), draining for a removal, or
	// drained with weight 0 (a Galera node out of rotation: ready, its
	// checks running, weight 0).
	byWeight := !d.Disabled && !d.Draining && d.Weight == 0
	out := d.Disabled || d.Draining || byWeight
	switch {
	case (d.Disabled || d.Draining) && l.Admin == "ready":
		want := "maint"
		if d.Draining {
			want = "drain"
		}
		mismatch = append(mismatch, fmt.Sprintf("in rotation in HAProxy; haconfd wants it out (%s)", want))
	case byWeight && l.Admin != "ready":
		mismatch = append(mismatch, fmt.Sprintf("%s in HAProxy; haconfd wants it ready with weight 0", l.Admin))
	case !out && l.Admin != "ready":
		mismatch = append(mismatch, fmt.Sprintf("%s in HAProxy; haconfd wants it in rotation", l.Admin))
	}
	if want, err := netip.ParseAddrPort(d.Addr); err == nil {
		if got, err := netip.ParseAddrPort(l.Addr); err != nil || got != want {
			mismatch = append(mismatch, fmt.Sprintf("address %s in HAProxy; haconfd wants %s", l.Addr, d.Addr))
		}
	}
	if (d.Weight > 0 || byWeight) && l.Weight != d.Weight {
		mismatch = append(mismatch, fmt.Sprintf("weight %d in HAProxy; haconfd wants %d", l.Weight, d.Weight))
	}
	if !out && l.Admin == "ready" && l.Op == "down" {
		w := "HAProxy's health check says down"
		if l.Check != "" {
			w += ": " + l.Check
		}
		if l.CheckDesc != "" {
			w += " (" + l.CheckDesc + ")"
		}
		warn = append(warn, w)
	}
	return mismatch, warn
}

// FleetView is every instance of the fleet (GET /fleet).
type FleetView struct {
	Instance string       `json:"instance"` // this one
	Enabled  bool         `json:"enabled"`  // false: --status-prefix is empty, nothing is published
	Fleet    *fleet.Fleet `json:"fleet,omitempty"`
	Error    string       `json:"error,omitempty"`
}

// FleetView reads the fleet (at most once per pageFleetTTL).
func (p *Page) FleetView(ctx context.Context) FleetView {
	if p.opts.Fleet == nil {
		return FleetView{Instance: p.opts.Instance}
	}
	p.fleetMu.Lock()
	defer p.fleetMu.Unlock()
	if !p.fleetAt.IsZero() && time.Since(p.fleetAt) < pageFleetTTL {
		return p.fleetView
	}
	ctx, cancel := context.WithTimeout(ctx, pageLiveWait)
	defer cancel()
	v := FleetView{Instance: p.opts.Instance, Enabled: true}
	f, err := p.opts.Fleet(ctx)
	if err != nil {
		v.Error = err.Error()
	} else {
		v.Fleet = &f
	}
	p.fleetView, p.fleetAt = v, time.Now()
	return v
}

// History is what the charts draw (GET /history): the sessions samples
// and the changes that went live, over the last Window.
type History struct {
	Window  string       `json:"window"`
	Sample  string       `json:"sample"` // the background sampling interval
	Samples []Sample     `json:"samples"`
	Applies []ApplyPoint `json:"applies"`
}

// ApplyPoint is one change: from its etcd revision to live (converged),
// or a failure.
type ApplyPoint struct {
	Time       time.Time `json:"time"`
	Rev        int64     `json:"rev"`
	Action     string    `json:"action"` // runtime, write, start, reload; "failed" for a failure
	DurationMS float64   `json:"duration_ms"`
}

// History returns the charts' data.
func (p *Page) History() History {
	h := History{Window: p.opts.Window.String(), Sample: p.opts.Sample.String(), Samples: []Sample{}, Applies: []ApplyPoint{}}
	now := time.Now()
	p.mu.Lock()
	for _, s := range p.samples {
		if now.Sub(s.Time) <= p.opts.Window {
			h.Samples = append(h.Samples, s)
		}
	}
	p.mu.Unlock()
	for _, e := range p.opts.Bus.Recent() {
		if now.Sub(e.Time) > p.opts.Window {
			continue
		}
		switch {
		case e.Kind == EventConverged && e.Action != "" && e.Action != string(haproxy.ActionNone):
			h.Applies = append(h.Applies, ApplyPoint{Time: e.Time, Rev: e.Rev, Action: e.Action, DurationMS: ms(e.Duration)})
		case e.Kind == EventFailed:
			h.Applies = append(h.Applies, ApplyPoint{Time: e.Time, Rev: e.Rev, Action: "failed", DurationMS: ms(e.Duration)})
		}
	}
	return h
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// serveStream sends every event as it happens (Server-Sent Events, event
// name "event", data: one Event as JSON), and a comment every pagePing.
func (p *Page) serveStream(w http.ResponseWriter, r *http.Request) {
	if p.streams.Add(1) > pageStreams {
		p.streams.Add(-1)
		http.Error(w, "too many open streams", http.StatusServiceUnavailable)
		return
	}
	defer p.streams.Add(-1)
	rc := http.NewResponseController(w)
	events, unsubscribe := p.opts.Bus.Subscribe(256)
	defer unsubscribe()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	ping := time.NewTicker(pagePing)
	defer ping.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case <-p.done:
			return
		case <-ping.C:
			_, err = fmt.Fprint(w, ": ping\n\n")
		case e := <-events:
			b, jerr := json.Marshal(e)
			if jerr != nil {
				continue
			}
			_, err = fmt.Fprintf(w, "event: event\ndata: %s\n\n", b)
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// newPage wires the page for `haconfd run`: HAProxy's socket (read
// only), the fleet status when it is published, this instance's name.
func newPage(cfg config.Config, board *Board, bus *Bus, cli *clientv3.Client, fl *fleetGlue, logger *slog.Logger) *Page {
	opts := PageOptions{Board: board, Bus: bus, Logger: logger.With("component", "page"), Instance: cfg.Instance}
	if cfg.RuntimeSocket != "" {
		if rt, err := haproxy.NewRuntime(cfg.RuntimeSocket, nil, haproxy.Caps{}); err == nil {
			opts.Live = rt
		}
	}
	if fl != nil && fl.pub != nil {
		opts.Instance = fl.pub.Instance()
		opts.Fleet = func(ctx context.Context) (fleet.Fleet, error) {
			return fleet.ReadAll(ctx, cli, cfg.StatusPrefix, cfg.Prefixes)
		}
	}
	if opts.Instance == "" {
		opts.Instance, _ = os.Hostname()
	}
	return NewPage(opts)
}
