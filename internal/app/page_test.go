package app

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/fleet"
)

func TestCompareServer(t *testing.T) {
	in := ServerView{Section: "galera", Server: "db1", Addr: "10.0.0.1:3306", Weight: 1}
	out := in
	out.Disabled = true
	draining := out
	draining.Draining = true
	weight0 := in // a Galera node out of rotation: weight 0, checks running
	weight0.Weight = 0
	up := LiveServer{Addr: "10.0.0.1:3306", Admin: "ready", Op: "up", Weight: 1}
	with := func(f func(*LiveServer)) *LiveServer { l := up; f(&l); return &l }
	tests := []struct {
		name     string
		d        *ServerView
		l        *LiveServer
		mismatch []string
		warn     []string
	}{
		{"in rotation, ready", &in, &up, nil, nil},
		{"in rotation, maint by hand", &in, with(func(l *LiveServer) { l.Admin = "maint" }), []string{"maint in HAProxy; haconfd wants it in rotation"}, nil},
		{"in rotation, drain by hand", &in, with(func(l *LiveServer) { l.Admin = "drain" }), []string{"drain in HAProxy; haconfd wants it in rotation"}, nil},
		{"out of rotation, maint", &out, with(func(l *LiveServer) { l.Admin = "maint" }), nil, nil},
		{"out of rotation, ready", &out, &up, []string{"in rotation in HAProxy; haconfd wants it out (maint)"}, nil},
		{"draining, drain", &draining, with(func(l *LiveServer) { l.Admin = "drain" }), nil, nil},
		{"draining, ready", &draining, &up, []string{"in rotation in HAProxy; haconfd wants it out (drain)"}, nil},
		{"draining, gone", &draining, nil, nil, nil},
		{"missing", &in, nil, []string{"missing from HAProxy"}, nil},
		{"unknown to haconfd", nil, &up, []string{"in HAProxy, not in haconfd's config"}, nil},
		{"moved", &in, with(func(l *LiveServer) { l.Addr = "10.0.0.2:3306" }), []string{"address 10.0.0.2:3306 in HAProxy; haconfd wants 10.0.0.1:3306"}, nil},
		{"ipv6 same", &ServerView{Addr: "[::1]:3306", Weight: 1}, with(func(l *LiveServer) { l.Addr = "[::1]:3306" }), nil, nil},
		{"host name not compared", &ServerView{Addr: "db1.example:3306", Weight: 1}, &up, nil, nil},
		{"weight", &in, with(func(l *LiveServer) { l.Weight = 5 }), []string{"weight 5 in HAProxy; haconfd wants 1"}, nil},
		{"check down", &in, with(func(l *LiveServer) { l.Op, l.Check, l.CheckDesc = "down", "L4CON", "Connection refused" }), nil,
			[]string{"HAProxy's health check says down: L4CON (Connection refused)"}},
		{"check down while out of rotation", &out, with(func(l *LiveServer) { l.Admin, l.Op = "maint", "down" }), nil, nil},
		{"weight 0, ready with weight 0", &weight0, with(func(l *LiveServer) { l.Weight = 0 }), nil, nil},
		{"weight 0, check down: no warning", &weight0, with(func(l *LiveServer) { l.Weight, l.Op = 0, "down" }), nil, nil},
		{"weight 0 wanted, weight 1 live", &weight0, &up, []string{"weight 1 in HAProxy; haconfd wants 0"}, nil},
		{"weight 0 wanted, maint live", &weight0, with(func(l *LiveServer) { l.Weight, l.Admin = 0, "maint" }), []string{"maint in HAProxy; haconfd wants it ready with weight 0"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, w := compareServer(tt.d, tt.l)
			if !slices.Equal(m, tt.mismatch) || !slices.Equal(w, tt.warn) {
				t.Fatalf("compareServer = %q, %q; want %q, %q", m, w, tt.mismatch, tt.warn)
			}
		})
	}
}

// fakeLive is a LiveReader with fixed replies.
type fakeLive struct {
	state haproxy.LiveState
	stat  []haproxy.StatRow
	err   error
	calls atomic.Int32
}

func (f *fakeLive) ServersState() (haproxy.LiveState, error) { f.calls.Add(1); return f.state, f.err }
func (f *fakeLive) Stat() ([]haproxy.StatRow, error)         { return f.stat, f.err }

func newTestPage(t *testing.T, live LiveReader, views []ServerView) (*Page, *Bus, *httptest.Server) {
	t.Helper()
	board, bus := &Board{}, NewBus()
	board.SetServers(views)
	p := NewPage(PageOptions{Board: board, Bus: bus, Live: live, Instance: "lb-a"})
	srv := httptest.NewServer(p.Mount(Handler(board, bus, nil)))
	t.Cleanup(srv.Close)
	return p, bus, srv
}

func fetch(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// GET /live reads HAProxy at request time and marks what differs; a
// server HAProxy no longer answers for shows the desired state only.
func TestPageLive(t *testing.T) {
	live := &fakeLive{state: haproxy.LiveState{}, stat: []haproxy.StatRow{
		{Proxy: "galera", Server: "db1", Status: "UP", Sessions: 3, Total: 9, CheckStatus: "L4OK"},
		{Proxy: "galera", Server: "db2", Status: "MAINT"},
	}}
	live.state.Set(haproxy.ServerState{Backend: "galera", Name: "db1", Addr: "127.0.0.1", Port: 3306, Op: haproxy.OpRunning, Weight: 1})
	live.state.Set(haproxy.ServerState{Backend: "galera", Name: "db2", Addr: "127.0.0.1", Port: 3307, Op: haproxy.OpRunning, Weight: 1, Admin: haproxy.AdminForcedMaint})
	views := []ServerView{
		{Section: "galera", Server: "db1", Addr: "127.0.0.1:3306", Weight: 1, Node: "db1", State: "Synced"},
		{Section: "galera", Server: "db2", Addr: "127.0.0.1:3307", Weight: 1, Node: "db2", State: "Synced"},
	}
	_, _, srv := newTestPage(t, live, views)
	resp, body := fetch(t, srv.URL+"/live")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/live: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var v LiveView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	if v.Instance != "lb-a" || v.Mismatches != 1 || len(v.Servers) != 2 || v.Error != "" {
		t.Fatalf("/live = %+v", v)
	}
	db1, db2 := v.Servers[0], v.Servers[1]
	if db1.Live == nil || db1.Live.Sessions != 3 || db1.Live.Status != "UP" || db1.Live.Check != "L4OK" || len(db1.Mismatch) != 0 {
		t.Errorf("db1 = %+v %+v", db1, db1.Live)
	}
	if db2.Live == nil || db2.Live.Admin != "maint" || !slices.Equal(db2.Mismatch, []string{"maint in HAProxy; haconfd wants it in rotation"}) {
		t.Errorf("db2 = %+v", db2)
	}

	live.err = errors.New("connection refused")
	_, body = fetch(t, srv.URL+"/live")
	v = LiveView{}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(v.Error, "connection refused") || v.Mismatches != 0 || len(v.Servers) != 2 || v.Servers[0].Live != nil || v.Servers[0].Desired == nil {
		t.Fatalf("/live with HAProxy unreachable = %+v", v)
	}
}

// The page is one file with everything inline: no external asset, and a
// Content-Security-Policy that allows exactly its own script and style.
func TestPageSelfContained(t *testing.T) {
	_, _, srv := newTestPage(t, nil, nil)
	resp, body := fetch(t, srv.URL+"/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if string(body) != string(pageHTML) {
		t.Fatal("GET / is not the embedded page as it is: no value may be written into the HTML on the server")
	}
	t.Logf("page: %d bytes", len(body))
	html := string(body)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, part := range []struct{ open, close, directive string }{{"<script>", "</script>", "script-src"}, {"<style>", "</style>", "style-src"}} {
		i, j := strings.Index(html, part.open), strings.Index(html, part.close)
		sum := sha256.Sum256([]byte(html[i+len(part.open) : j]))
		want := part.directive + " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if !strings.Contains(csp, want+";") {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
		if strings.Count(html, part.open) != 1 {
			t.Errorf("%d %s elements: the CSP hashes one", strings.Count(html, part.open), part.open)
		}
	}
	for _, d := range []string{"default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("CSP %q lacks %q", csp, d)
		}
	}
	// No external asset: the only URL is the SVG namespace.
	for _, m := range regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s'"]*`).FindAllString(html, -1) {
		if m != "http://www.w3.org/2000/svg" {
			t.Errorf("external reference %q", m)
		}
	}
	for _, bad := range []string{" src=", "@import", "url(", "<link rel=\"stylesheet\""} {
		if strings.Contains(html, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	if strings.Contains(html, "style=\"") {
		t.Error("an inline style attribute: the CSP blocks it")
	}
}

// Values from etcd and HAProxy (node ids, states, errors) are untrusted:
// the script never turns a string into markup, and never sets an event
// handler or a URL attribute from data.
func TestPageScriptHasNoMarkupSinks(t *testing.T) {
	html := string(pageHTML)
	script := html[strings.Index(html, "<script>"):strings.Index(html, "</script>")]
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(", "createContextualFragment",
		"DOMParser", "srcdoc", "javascript:", "setTimeout('", "setTimeout(\"", "setInterval('", "setInterval(\""} {
		if strings.Contains(script, sink) {
			t.Errorf("the page's script uses %s", sink)
		}
	}
	// h() sets only class, title, data-*, aria-* and colspan; SVG
	// attributes are the script's own constants.
	if !strings.Contains(script, `else if (/^(data-|aria-)|^colspan$/.test(k)) e.setAttribute(k, v);`) ||
		!strings.Contains(script, `else throw new Error('attribute ' + k);`) {
		t.Error("h() must refuse attributes other than class, title, data-*, aria-*, colspan")
	}
	if n := strings.Count(script, "setAttribute("); n != 3 {
		t.Errorf("%d setAttribute calls, want 3 (h, s, the chart's viewBox): check any new one", n)
	}
}

// JSON answers escape markup: a hostile node id stays a JSON string.
func TestPageJSONEscapesMarkup(t *testing.T) {
	hostile := `"><img src=x onerror=alert(1)><b>`
	_, _, srv := newTestPage(t, nil, []ServerView{{Section: "galera", Server: "x", Node: hostile, State: "<b>Synced</b>"}})
	for _, path := range []string{"/live", "/servers"} {
		_, body := fetch(t, srv.URL+path)
		if strings.ContainsAny(string(body), "<>") {
			t.Errorf("%s has raw markup:\n%s", path, body)
		}
		if !strings.Contains(string(body), `\u003cimg src=x onerror=alert(1)\u003e`) {
			t.Errorf("%s lacks the escaped id:\n%s", path, body)
		}
	}
}

// /stream pushes each event as it is published, and ends when the page
// stops.
func TestPageStream(t *testing.T) {
	p, bus, srv := newTestPage(t, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	resp, err := http.Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	if line, err := r.ReadString('\n'); err != nil || line != "retry: 2000\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	// The subscription exists once the first line is written: publish.
	bus.Publish(Event{Kind: EventRuntime, Rev: 7, Servers: []string{"galera/db1"}})
	var ev Event
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if ev.Kind != EventRuntime || ev.Rev != 7 || !slices.Equal(ev.Servers, []string{"galera/db1"}) {
		t.Fatalf("event %+v", ev)
	}
	cancel()
	<-done
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatalf("stream did not end cleanly: %v", err)
	}
}

// The sessions samples keep the window, the busiest servers, and at most
// one sample per minimum gap.
func TestPageSamples(t *testing.T) {
	p := NewPage(PageOptions{Board: &Board{}, Bus: NewBus(), Window: time.Minute})
	t0 := time.Now().Add(-2 * time.Minute)
	var rows []haproxy.StatRow
	for i := range pageTopN + 5 {
		rows = append(rows, haproxy.StatRow{Proxy: "b", Server: "s" + string(rune('A'+i)), Sessions: i})
	}
	p.record(t0, rows, 0)
	p.record(t0.Add(90*time.Second), rows, 0)
	p.record(t0.Add(90*time.Second+time.Millisecond), rows, time.Second) // within the gap: dropped
	p.record(t0.Add(100*time.Second), rows, time.Second)
	h := p.History()
	if len(h.Samples) != 2 {
		t.Fatalf("%d samples, want 2 (the first is out of the window, one within the gap)", len(h.Samples))
	}
	s := h.Samples[0]
	if len(s.Sessions) != pageTopN || s.Total != (pageTopN+5)*(pageTopN+4)/2 {
		t.Fatalf("sample: %d servers, total %d", len(s.Sessions), s.Total)
	}
	if _, ok := s.Sessions["b/sA"]; ok {
		t.Fatal("an idle server kept over a busier one")
	}
}

// /history lists the changes that went live and the failures; /fleet is
// read at most once per second.
func TestPageHistoryAndFleet(t *testing.T) {
	var reads atomic.Int32
	board, bus := &Board{}, NewBus()
	p := NewPage(PageOptions{Board: board, Bus: bus, Instance: "lb-a", Fleet: func(context.Context) (fleet.Fleet, error) {
		reads.Add(1)
		return fleet.Fleet{Revision: 9}, nil
	}})
	bus.Publish(Event{Kind: EventConverged, Rev: 3, Action: "runtime", Duration: 1500 * time.Microsecond})
	bus.Publish(Event{Kind: EventConverged, Rev: 4, Action: "none"})
	bus.Publish(Event{Kind: EventFailed, Rev: 5, Action: "reload", Duration: time.Second})
	h := p.History()
	if len(h.Applies) != 2 || h.Applies[0].DurationMS != 1.5 || h.Applies[0].Action != "runtime" || h.Applies[1].Action != "failed" {
		t.Fatalf("applies %+v", h.Applies)
	}
	for range 3 {
		if v := p.FleetView(context.Background()); !v.Enabled || v.Fleet.Revision != 9 || v.Instance != "lb-a" {
			t.Fatalf("fleet %+v", v)
		}
	}
	if n := reads.Load(); n != 1 {
		t.Fatalf("%d reads of the fleet, want 1 within a second", n)
	}
	if v := NewPage(PageOptions{Board: board, Bus: bus}).FleetView(context.Background()); v.Enabled {
		t.Fatalf("fleet without publishing: %+v", v)
	}
}
