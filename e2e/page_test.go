package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/app"
	"github.com/haconfd/haconfd/internal/testbed"
)

// The page, in a real browser (Debian's chromium, headless, driven with
// chromedp): etcd, haconfd and HAProxy are real; every check reads the
// DOM.

// chromium returns the browser's path. In CI (CI=true) a missing browser
// fails the test; elsewhere it skips.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is missing (CI=true): .ci/run installs Debian's chromium package")
	}
	t.Skip("chromium is not installed (apt-get install chromium): the page's browser test needs it")
	return ""
}

// browser starts a headless chromium with a fresh profile, stopped when
// the test ends.
func browser(t *testing.T, width, height int) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// domRow is one server row of the page, as the DOM has it.
type domRow struct {
	Key      string `json:"key"`
	Admin    string `json:"admin"`
	Op       string `json:"op"`
	Status   string `json:"status"`
	Mismatch bool   `json:"mismatch"`
	Held     bool   `json:"held"`
	Node     string `json:"node"`
	Text     string `json:"text"`
}

const rowsJS = `Array.from(document.querySelectorAll('#servers tr[data-key]')).map((tr) => ({
	key: tr.dataset.key, admin: tr.dataset.admin, op: tr.dataset.op, status: tr.dataset.status,
	mismatch: tr.classList.contains('mismatch'), held: tr.dataset.held === 'true',
	node: (tr.querySelector('.node') || {}).textContent || '', text: tr.innerText}))`

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// domWait polls the page until cond holds on the value of expr.
func domWait[T any](t *testing.T, ctx context.Context, what, expr string, cond func(T) bool) T {
	t.Helper()
	var v T
	if err := testbed.Poll(20*time.Second, 25*time.Millisecond, func() bool { v = eval[T](t, ctx, expr); return cond(v) }); err != nil {
		t.Fatalf("page: %s: not within 20s; last %+v", what, v)
	}
	return v
}

func rowByKey(rows []domRow, key string) (domRow, bool) {
	for _, r := range rows {
		if r.Key == key {
			return r, true
		}
	}
	return domRow{}, false
}

// TestPage opens the page and follows an incident: the servers shown are
// HAProxy's (show servers state); a node added in etcd appears without a
// reload of the page (pushed, not polled); a server put in maintenance by
// hand on the socket is shown as a mismatch; a server held by a guard
// shows the guard's reason, next to the server, in a banner and in the
// timeline; a node id with markup in it stays text. Screenshots (laptop
// and phone) are saved as test artifacts, and to $HACONFD_PAGE_PNG (make
// dashboard).
func TestPage(t *testing.T) {
	ctx := browser(t, 1280, 900)
	e := newEnv(t)
	dbs := map[string]*testbed.Backend{}
	for _, id := range []string{"db1", "db2", "db3", "db4"} {
		dbs[id] = startBackendT(t, id, true)
	}
	for _, id := range []string{"db1", "db2", "db3"} {
		e.putJSON(id, dbs[id].Port, "Synced")
	}
	// --resync 0: the server put in maintenance by hand stays so (no
	// repair) for the page to show; --max-remove 0.2 holds a removal.
	p := e.run("--instance", "lb-a", "--resync", "0", "--max-remove", "0.2")
	addr := p.httpAddr()
	waitStatus(t, addr, "converged", func(s app.Status) bool { return s.Applied > 0 && s.Applied >= s.Revision })
	var sessions []net.Conn
	t.Cleanup(func() {
		for _, c := range sessions {
			c.Close()
		}
	})
	hold := func(n int) {
		for range n {
			c, err := net.DialTimeout("tcp", e.front, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			sessions = append(sessions, c)
		}
	}
	hold(3)

	page := "http://" + addr + "/"
	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		t.Fatal(err)
	}

	// 1. The servers shown are the ones HAProxy has, in the state it has them.
	var live haproxy.LiveState
	domWait(t, ctx, "servers as in show servers state", rowsJS, func(rows []domRow) bool {
		var err error
		if live, err = haproxy.ParseServersState(adminCommand(t, e.sock, "show servers state")); err != nil {
			t.Fatal(err)
		}
		if len(rows) != live.Count() {
			return false
		}
		for _, s := range live.Sorted() {
			r, ok := rowByKey(rows, s.Backend+"/"+s.Name)
			if !ok || r.Admin != s.AdminWord() || r.Op != s.OpWord() || r.Mismatch || r.Status == "" {
				return false
			}
		}
		return true
	})
	t.Logf("page shows the %d servers of show servers state, with their admin and operational states", live.Count())
	domWait(t, ctx, "the page streams events", `document.querySelector('#chips .dot.on') !== null`, func(b bool) bool { return b })

	// 2. A node added in etcd appears without a reload of the page: the
	// marker set in the page survives, and the timeline has the runtime
	// change, which only the stream brings while it is connected.
	eval[bool](t, ctx, `window.__samePage = true`)
	t0 := time.Now()
	e.putJSON("db4", dbs["db4"].Port, "Synced")
	domWait(t, ctx, "db4 appears", rowsJS, func(rows []domRow) bool { _, ok := rowByKey(rows, "galera/db4"); return ok })
	t.Logf("db4 on the page %v after its put in etcd", time.Since(t0).Round(time.Millisecond))
	if !eval[bool](t, ctx, `window.__samePage === true`) {
		t.Fatal("the page was reloaded")
	}
	domWait(t, ctx, "the runtime change in the timeline", `Array.from(document.querySelectorAll('#timeline li[data-kind=runtime]')).map((li) => li.innerText).join('\n')`,
		func(s string) bool { return strings.Contains(s, "galera/db4") })
	hold(3)

	// 3. A server put in maintenance by hand on the socket: a mismatch.
	if reply := adminCommand(t, e.sock, "set server galera/db2 state maint"); strings.TrimSpace(reply) != "" {
		t.Fatalf("set server by hand: %q", reply)
	}
	rows := domWait(t, ctx, "db2 shown as a mismatch", rowsJS, func(rows []domRow) bool {
		r, _ := rowByKey(rows, "galera/db2")
		return r.Mismatch && r.Admin == "maint"
	})
	if r, _ := rowByKey(rows, "galera/db2"); !strings.Contains(r.Text, "maint in HAProxy; haconfd wants it in rotation") {
		t.Fatalf("db2's row does not say what differs:\n%s", r.Text)
	}
	for _, r := range rows {
		if r.Mismatch && r.Key != "galera/db2" {
			t.Fatalf("%s shown as a mismatch too:\n%s", r.Key, r.Text)
		}
	}

	// 4. A node that leaves Synced: out of rotation, with the reason.
	e.putJSON("db3", dbs["db3"].Port, "Donor/Desynced")
	domWait(t, ctx, "db3 out of rotation", rowsJS, func(rows []domRow) bool {
		r, _ := rowByKey(rows, "galera/db3")
		return r.Admin == "ready" && !r.Mismatch && strings.Contains(r.Text, "out of rotation") && strings.Contains(r.Text, `Galera state "Donor/Desynced" is not Synced`)
	})

	// 5. A removal held by --max-remove: its reason, on the page.
	e.del(prefix + "/db4")
	st := waitStatus(t, addr, "db4 held", func(s app.Status) bool { return len(s.HeldServers) == 1 })
	held := st.HeldServers[0]
	key := held.Section + "/" + held.Server
	domWait(t, ctx, "the held server with its reason", rowsJS, func(rows []domRow) bool {
		r, _ := rowByKey(rows, key)
		return r.Held && strings.Contains(r.Text, held.Reason)
	})
	domWait(t, ctx, "the hold in a banner", `(document.querySelector('#banners [data-held]') || {}).innerText || ''`,
		func(s string) bool { return strings.Contains(s, key) && strings.Contains(s, held.Reason) })
	domWait(t, ctx, "the hold in the timeline", `Array.from(document.querySelectorAll('#timeline li[data-kind=held]')).map((li) => li.innerText).join('\n')`,
		func(s string) bool { return strings.Contains(s, held.Reason) })
	t.Logf("held: %s: %s", key, held.Reason)

	// The fleet: this instance, marked.
	domWait(t, ctx, "this instance in the fleet", `(document.querySelector('#fleet tr.self[data-instance="lb-a"]') || {}).innerText || ''`,
		func(s string) bool { return strings.Contains(s, "this page") })

	// Screenshots, once the sessions chart has a few samples: the laptop
	// (1280 px wide), then a phone (390 px).
	domWait(t, ctx, "the sessions chart", `((document.querySelector('#chart-sessions polyline') || {getAttribute: () => ''}).getAttribute('points') || '').split(' ').length`,
		func(n int) bool { return n >= 6 })
	png := os.Getenv("HACONFD_PAGE_PNG")
	screenshot(t, ctx, "page.png", png, true)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	phone := ""
	if png != "" {
		phone = strings.TrimSuffix(png, ".png") + "-phone.png"
	}
	screenshot(t, ctx, "page-phone.png", phone, false)
	screenshot(t, ctx, "page-phone-full.png", "", true)

	// 6. A node id with markup in it is shown as text.
	hostile := `"><b>hostile<i>x`
	e.put(prefix+"/"+hostile, fmt.Sprintf(`{"ip":"127.0.0.1","port":%d,"state":"Synced"}`, dbs["db1"].Port))
	domWait(t, ctx, "the hostile node shown", rowsJS, func(rows []domRow) bool {
		return slices.ContainsFunc(rows, func(r domRow) bool { return r.Node == hostile })
	})
	if n := eval[int](t, ctx, `Array.from(document.querySelectorAll('b, i')).filter((x) => x.textContent.startsWith('hostile') || x.textContent === 'x').length`); n != 0 {
		t.Fatalf("the node id was parsed as markup: %d element(s) made from it", n)
	}
}

// screenshot saves the whole page (full) or what the screen shows as name
// in the test's artifact directory, and to also when set.
func screenshot(t *testing.T, ctx context.Context, name, also string, full bool) {
	t.Helper()
	shot := chromedp.CaptureScreenshot()
	if full {
		shot = chromedp.FullScreenshot(100)
	}
	png, err := chromedp.Run(ctx, shot)
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{filepath.Join(t.ArtifactDir(), name)}
	if also != "" {
		paths = append(paths, also)
	}
	for _, path := range paths {
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", path, len(png))
	}
}

// The page's JSON for scripts: /live joins each server's desired state
// with HAProxy's, /history has the chart data, /fleet the instances.
func TestPageJSON(t *testing.T) {
	e := newEnv(t)
	db1 := startBackendT(t, "db1", false)
	e.putJSON("db1", db1.Port, "Synced")
	p := e.run("--instance", "lb-json", "--resync", "0")
	addr := p.httpAddr()
	waitStatus(t, addr, "converged", func(s app.Status) bool { return s.Applied > 0 && s.Applied >= s.Revision })
	var lv app.LiveView
	if err := testbed.Poll(20*time.Second, 20*time.Millisecond, func() bool {
		_, body := get(t, addr, "/live")
		if err := json.Unmarshal([]byte(body), &lv); err != nil {
			t.Fatalf("/live: %v\n%s", err, body)
		}
		return len(lv.Servers) == 1 && lv.Servers[0].Live != nil && lv.Servers[0].Live.Status != ""
	}); err != nil {
		t.Fatalf("/live never showed db1 live: %+v", lv)
	}
	s := lv.Servers[0]
	if s.Section != "galera" || s.Server != "db1" || s.Desired == nil || s.Live.Admin != "ready" || len(s.Mismatch) != 0 || lv.Instance != "lb-json" {
		t.Fatalf("/live = %+v", lv)
	}
	var fv app.FleetView
	_, body := get(t, addr, "/fleet")
	if err := json.Unmarshal([]byte(body), &fv); err != nil || !fv.Enabled || fv.Fleet == nil || fv.Instance != "lb-json" {
		t.Fatalf("/fleet = %+v, %v\n%s", fv, err, body)
	}
	var hs app.History
	_, body = get(t, addr, "/history")
	if err := json.Unmarshal([]byte(body), &hs); err != nil || hs.Window != "10m0s" || len(hs.Applies) == 0 || len(hs.Samples) == 0 {
		t.Fatalf("/history = %+v, %v\n%s", hs, err, body)
	}
	code, body := get(t, addr, "/")
	if code != 200 || !strings.HasPrefix(body, "<!doctype html>") {
		t.Fatalf("GET / = %d\n%.200s", code, body)
	}
}
