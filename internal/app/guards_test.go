package app

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"
)

// guardRun drives a guardBook the way the target does: each decision sees
// the servers configured by the previous one (rendered plus held).
type guardRun struct {
	t          *testing.T
	g          *guardBook
	now        time.Time
	configured map[string]map[string]string
}

func newGuardRun(t *testing.T, opts GuardOptions, servers ...string) *guardRun {
	r := &guardRun{t: t, g: newGuardBook(opts), now: time.Unix(1_700_000_000, 0),
		configured: map[string]map[string]string{"galera": {}}}
	for _, s := range servers {
		r.configured["galera"][s] = serverLine(s)
	}
	return r
}

func serverLine(name string) string { return fmt.Sprintf("server %s 127.0.0.1:3306", name) }

// render decides for a render of section galera with these servers and
// returns the result; the next decision sees what this one configured.
func (r *guardRun) render(servers ...string) guardResult {
	r.t.Helper()
	rendered := map[string]map[string]string{"galera": {}}
	for _, s := range servers {
		rendered["galera"][s] = serverLine(s)
	}
	res := r.g.decide(r.now, rendered, r.configured)
	next := map[string]map[string]string{"galera": maps.Clone(rendered["galera"])}
	for _, h := range res.Held {
		next[h.Section][h.Server] = serverLine(h.Server)
	}
	r.configured = next
	return res
}

func heldNames(res guardResult) []string {
	var out []string
	for _, h := range res.Held {
		out = append(out, h.Server)
	}
	return out
}

// A server held by --max-remove is released as soon as its node is back
// (README: held "until its node returns"), not kept as a hold.
func TestGuardReleasesHeldServerWhenNodeReturns(t *testing.T) {
	r := newGuardRun(t, GuardOptions{MinServers: 1, MaxRemove: 0.5, Hold: 0}, "db1", "db2", "db3", "db4")
	res := r.render("db4")
	if got := heldNames(res); !slices.Equal(got, []string{"db3"}) {
		t.Fatalf("held %v, want [db3] (two of four may go)", got)
	}
	res = r.render("db3", "db4")
	if len(res.Held) != 0 || len(res.Released) != 1 || res.Released[0].Server != "db3" {
		t.Fatalf("db3 is back: held %v, released %+v; want nothing held, db3 released", heldNames(res), res.Released)
	}
}

// A node that left and came back (a rolling restart) no longer counts
// against --max-remove.
func TestGuardReturnedNodeNoLongerCounts(t *testing.T) {
	r := newGuardRun(t, GuardOptions{MinServers: 1, MaxRemove: 0.5, Hold: time.Minute}, "db1", "db2", "db3", "db4")
	if res := r.render("db2", "db3", "db4"); len(res.Held) != 0 {
		t.Fatalf("first removal held: %v", heldNames(res))
	}
	r.now = r.now.Add(time.Second)
	if res := r.render("db1", "db2", "db3", "db4"); len(res.Held) != 0 {
		t.Fatalf("return held something: %v", heldNames(res))
	}
	r.now = r.now.Add(time.Second)
	// db1 is back: two of four may go again.
	if res := r.render("db1", "db4"); len(res.Held) != 0 {
		t.Fatalf("held %v: the returned db1 still counted as a removal", heldNames(res))
	}
}

// Removals older than the window no longer count.
func TestGuardWindowExpires(t *testing.T) {
	r := newGuardRun(t, GuardOptions{MinServers: 1, MaxRemove: 0.5, Hold: time.Minute}, "db1", "db2", "db3", "db4")
	if res := r.render("db3", "db4"); len(res.Held) != 0 {
		t.Fatalf("two of four held: %v", heldNames(res))
	}
	r.now = r.now.Add(2 * time.Minute)
	// Now one of the two remaining servers may go (0.5 of 2).
	if res := r.render("db4"); len(res.Held) != 0 {
		t.Fatalf("held %v: removals outside the window still counted", heldNames(res))
	}
}

// --force holds nothing: neither --max-remove nor --min-servers.
func TestGuardForceHoldsNothing(t *testing.T) {
	r := newGuardRun(t, GuardOptions{MinServers: 2, MaxRemove: 0.25, Hold: time.Minute, Force: true}, "db1", "db2", "db3", "db4")
	res := r.render()
	if len(res.Held) != 0 || len(res.NewHolds) != 0 || len(res.Extra["galera"]) != 0 {
		t.Fatalf("--force: held %v, extra %v", heldNames(res), res.Extra)
	}
}
