package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// leaveEvent is a node leaving Synced (or being stopped) or coming back,
// as the test did it or as the state monitor (every 20ms over each node's
// socket) saw it.
type leaveEvent struct {
	at   time.Time
	node string
	what string // "desync", "stop", "crash", "IST donor", ... or "back"
}

// bench prints the figures of issue 15 and returns failures: a node that
// left Synced still getting new connections later than -drain-bound.
//
//   - node leaves Synced → the last new query on it (p50, max over every
//     leaveEvent; target max ≤ 100ms); the number of queries a node
//     answered more than 100ms after it left (target 0);
//   - node back to Synced → its first query (target ≤ 500ms);
//   - the same for an operator's drain, wsrep_reject_queries and FTWRL
//     (graceful maintenance), and for their undoing.
func (e *env) bench(cl *client, mon *monitor, steps []step) []error {
	recs := cl.records()
	inLastResort := func(at time.Time) bool {
		for _, s := range steps {
			if s.lastResort && !at.Before(s.from) && !at.After(s.to) {
				return true
			}
		}
		return false
	}
	e.mu.Lock()
	events := slices.Clone(e.events)
	e.mu.Unlock()

	// Leaves and backs from the monitor, with the signals the test sent
	// taking the place of the monitor's first sight of them (the monitor
	// sees a stopped node only when its socket closes).
	var leaves, backs []leaveEvent
	mon.mu.Lock()
	for node, trs := range mon.trans {
		prev := ""
		for _, tr := range trs {
			switch {
			case tr.state == "Synced" && prev != "" && prev != "Synced":
				backs = append(backs, leaveEvent{tr.at, node, "back"})
			case tr.state != "Synced" && (prev == "Synced" || prev == ""):
				if prev == "" {
					break // the monitor's first reading
				}
				what := tr.state
				switch {
				case tr.state == "(down)":
					what = "down"
				case strings.HasPrefix(tr.state, "Donor"):
					what = "Donor/Desynced"
				}
				leaves = append(leaves, leaveEvent{tr.at, node, what})
			}
			prev = tr.state
		}
	}
	mon.mu.Unlock()
	var admin, undo []leaveEvent
	for _, ev := range events {
		switch ev.kind {
		case "stop", "kill", "desync":
			// The signal is when the node began to leave: it replaces the
			// monitor's later sight of it.
			for i := range leaves {
				l := &leaves[i]
				if l.node == ev.node && !l.at.Before(ev.at) && l.at.Sub(ev.at) < 30*time.Second {
					l.at, l.what = ev.at, map[string]string{"stop": "stop (SIGTERM)", "kill": "crash (SIGKILL)", "desync": "desync (wsrep_desync=ON)"}[ev.kind]
					break
				}
			}
		case "drain", "reject", "ftwrl":
			admin = append(admin, leaveEvent{ev.at, ev.node, ev.kind})
		case "undrain", "unreject", "unlock":
			undo = append(undo, leaveEvent{ev.at, ev.node, ev.kind})
		}
	}
	byTime := func(a, b leaveEvent) int { return a.at.Compare(b.at) }
	slices.SortFunc(leaves, byTime)
	slices.SortFunc(backs, byTime)

	// lastAfter: the last successful query on node that began in [from,
	// until), and how many began after from+100ms. From syncedFrom on (the
	// test undid what took the node out, e.g. wsrep_desync=OFF), a query
	// the node answered as Synced does not count: the monitor sees the node
	// back only at its next poll, and such a query went to a Synced node.
	lastAfter := func(node string, from, until, syncedFrom time.Time) (time.Duration, int, int) {
		var last time.Duration
		served, late := 0, 0
		for _, r := range recs {
			if r.err != "" || r.node != node || r.at.Before(from) || !r.at.Before(until) ||
				!r.at.Before(syncedFrom) && r.state == "Synced" {
				continue
			}
			served++
			last = max(last, r.at.Sub(from))
			if r.at.Sub(from) > 100*time.Millisecond {
				late++
			}
		}
		return last, served, late
	}
	firstAfter := func(node string, from time.Time) (time.Duration, bool) {
		for _, r := range recs {
			if r.err == "" && r.node == node && !r.at.Before(from) {
				return r.at.Sub(from), true
			}
		}
		return 0, false
	}
	nextBack := func(node string, after time.Time) time.Time {
		for _, b := range backs {
			if b.node == node && b.at.After(after) {
				return b.at
			}
		}
		return time.Now().Add(time.Hour)
	}

	var fails []error
	fmt.Printf("\nBENCHMARK (issue 15; targets in brackets)\n")
	var leaveD []time.Duration
	lateTotal := 0
	for _, l := range leaves {
		if inLastResort(l.at) || !mon.othersSynced(l.node, l.at) {
			fmt.Printf("  %s %-18s %s: the last resort (no other node Synced): not counted\n", l.at.Format("15:04:05.000"), l.node, l.what)
			continue
		}
		syncedFrom := time.Now().Add(time.Hour)
		for _, ev := range events {
			if ev.kind == "resync" && ev.node == l.node && ev.at.After(l.at) {
				syncedFrom = ev.at
				break
			}
		}
		d, served, late := lastAfter(l.node, l.at, nextBack(l.node, l.at), syncedFrom)
		leaveD = append(leaveD, d)
		lateTotal += late
		fmt.Printf("  %s %-18s %s: last new query %6s later (%d served after it left, %d more than 100ms after)\n",
			l.at.Format("15:04:05.000"), l.node, l.what, d.Round(time.Millisecond), served, late)
		if d > e.f.drainBound {
			fails = append(fails, fmt.Errorf("%s (%s at %s) still got new connections %s after it left (bound %s)", l.node, l.what, l.at.Format("15:04:05.000"), d.Round(time.Millisecond), e.f.drainBound))
		}
	}
	e.note("node leaves Synced → last new query on it", "p50 %s, max %s over %d transitions [max ≤ 100ms]", p50(leaveD), maxD(leaveD), len(leaveD))
	e.note("queries on a node > 100ms after it left Synced", "%d [0]", lateTotal)
	var backD []time.Duration
	for _, b := range backs {
		d, ok := firstAfter(b.node, b.at)
		if !ok {
			continue
		}
		backD = append(backD, d)
		fmt.Printf("  %s %-18s back to Synced: first query %6s later\n", b.at.Format("15:04:05.000"), b.node, d.Round(time.Millisecond))
	}
	e.note("node back to Synced → first query on it", "p50 %s, max %s over %d transitions [≤ 500ms]", p50(backD), maxD(backD), len(backD))
	if len(admin) > 0 {
		var ad, ud []time.Duration
		for _, a := range admin {
			until := a.at.Add(time.Hour)
			for _, u := range undo {
				if u.node == a.node && u.at.After(a.at) {
					until = u.at
					break
				}
			}
			d, served, late := lastAfter(a.node, a.at, until, time.Now().Add(time.Hour))
			ad = append(ad, d)
			fmt.Printf("  %s %-18s %s: last new query %6s later (%d served, %d more than 100ms after)\n", a.at.Format("15:04:05.000"), a.node, a.what, d.Round(time.Millisecond), served, late)
			if d > e.f.drainBound {
				fails = append(fails, fmt.Errorf("%s (%s) still got new connections %s after it (bound %s)", a.node, a.what, d.Round(time.Millisecond), e.f.drainBound))
			}
		}
		for _, u := range undo {
			if d, ok := firstAfter(u.node, u.at); ok {
				ud = append(ud, d)
				fmt.Printf("  %s %-18s %s: first query %6s later\n", u.at.Format("15:04:05.000"), u.node, u.what, d.Round(time.Millisecond))
			}
		}
		e.note("drain / reject queries / FTWRL → last new query", "p50 %s, max %s over %d", p50(ad), maxD(ad), len(ad))
		e.note("undrain / reject off / unlock → first query", "p50 %s, max %s over %d", p50(ud), maxD(ud), len(ud))
	}
	return fails
}

func p50(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2].Round(time.Millisecond).String()
}

func maxD(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	return slices.Max(ds).Round(time.Millisecond).String()
}
