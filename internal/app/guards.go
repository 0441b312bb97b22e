package app

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// Guard names.
const (
	GuardMinServers = "min_servers"
	GuardMaxRemove  = "max_remove"
)

// GuardOptions are the per-server guards.
type GuardOptions struct {
	// MinServers: a section that had servers keeps at least this many;
	// the last ones whose nodes left stay configured until others come
	// back (never released by time: an empty section is an outage).
	MinServers int
	// MaxRemove: at most this share (0-1; 1 = off) of a section's servers
	// may go within the sliding Window; removals beyond it are held.
	MaxRemove float64
	// Hold: a server held by MaxRemove is released this long after it
	// was held, whatever else changes meanwhile (0: only when its node
	// returns, or --force).
	Hold time.Duration
	// Window: removals within this long count together (default Hold, or
	// a minute when Hold is 0).
	Window time.Duration
	// Force: no guard holds anything.
	Force bool
}

// guardBook decides, server by server, which removals go and which are
// held. It is pure: the caller passes the time.
type guardBook struct {
	opts     GuardOptions
	held     map[string]*HeldServer          // section/server
	lines    map[string]string               // section/server → the held server's configured line
	removals map[string]map[string]time.Time // section → server → when its removal went through (within the window, while it stays away)
	seen     map[string]map[string]string    // section → servers configured before this render
}

func newGuardBook(opts GuardOptions) *guardBook {
	if opts.MaxRemove <= 0 {
		opts.MaxRemove = 1
	}
	if opts.Window <= 0 {
		opts.Window = opts.Hold
		if opts.Window <= 0 {
			opts.Window = time.Minute
		}
	}
	return &guardBook{opts: opts, held: map[string]*HeldServer{}, lines: map[string]string{}, removals: map[string]map[string]time.Time{}}
}

// guardResult is one decision of the guards.
type guardResult struct {
	Extra    map[string][]string // section → server lines kept although their nodes left
	Held     []HeldServer        // every server held now, sorted
	NewHolds []HeldServer        // held by this decision
	Released []HeldServer        // released by this decision
	Next     time.Time           // when a hold ends by time (zero: none)
}

// decide compares rendered (section → server → line, the new render)
// with configured (the servers configured before it: the previous
// decision's) and returns the lines to keep.
func (g *guardBook) decide(now time.Time, rendered, configured map[string]map[string]string) guardResult {
	var res guardResult
	if g.opts.Force {
		for _, k := range slices.Sorted(maps.Keys(g.held)) {
			res.Released = append(res.Released, *g.held[k])
		}
		clear(g.held)
		clear(g.lines)
		return res
	}
	// Removals count while they are recent and the server stays away: a
	// node that left and came back (a rolling restart) no longer counts.
	window := now.Add(-g.opts.Window)
	for s, m := range g.removals {
		for name, t := range m {
			if _, back := rendered[s][name]; back || !t.After(window) {
				delete(m, name)
			}
		}
		if len(m) == 0 {
			delete(g.removals, s)
		}
	}
	noteRemoval := func(section, name string) {
		m := g.removals[section]
		if m == nil {
			m = map[string]time.Time{}
			g.removals[section] = m
		}
		m[name] = now
	}
	release := func(k string) {
		res.Released = append(res.Released, *g.held[k])
		delete(g.held, k)
		delete(g.lines, k)
	}
	// Held servers whose node is back, or whose section is gone: done.
	for _, k := range slices.Sorted(maps.Keys(g.held)) {
		h := g.held[k]
		if _, back := rendered[h.Section][h.Server]; back {
			release(k)
			continue
		}
		if _, ok := rendered[h.Section]; !ok {
			release(k)
		}
	}
	for _, section := range slices.Sorted(maps.Keys(rendered)) {
		now1 := rendered[section]
		before := configured[section]
		if len(before) == 0 {
			continue // a new section, or one that had no servers
		}
		var removed []string
		for _, name := range slices.Sorted(maps.Keys(before)) {
			if _, ok := now1[name]; !ok {
				removed = append(removed, name)
			}
		}
		heldHere := func() int {
			n := 0
			for _, h := range g.held {
				if h.Section == section {
					n++
				}
			}
			return n
		}
		// Time-limited holds that are due go (they count as removals).
		var fresh []string
		for _, name := range removed {
			k := section + "/" + name
			h := g.held[k]
			switch {
			case h == nil:
				fresh = append(fresh, name)
			case h.Guard == GuardMaxRemove && !h.Until.IsZero() && !now.Before(h.Until):
				release(k)
				noteRemoval(section, name)
			}
		}
		// --max-remove over the sliding window.
		allowed := math.MaxInt
		base := len(before) + len(g.removals[section])
		if g.opts.MaxRemove < 1 {
			allowed = int(math.Floor(g.opts.MaxRemove*float64(base)+1e-9)) - len(g.removals[section])
		}
		for _, name := range fresh {
			k := section + "/" + name
			if allowed > 0 {
				allowed--
				noteRemoval(section, name)
				continue
			}
			h := &HeldServer{Section: section, Server: name, Guard: GuardMaxRemove, Since: now,
				Reason: fmt.Sprintf("more than --max-remove %g of section %s's %d servers would be gone within %s", g.opts.MaxRemove, section,
					base, g.opts.Window)}
			if g.opts.Hold > 0 {
				h.Until = now.Add(g.opts.Hold)
			}
			g.held[k], g.lines[k] = h, before[name]
			res.NewHolds = append(res.NewHolds, *h)
		}
		// --min-servers: keep the last servers of a section that had some.
		count := len(now1) + heldHere()
		if count < g.opts.MinServers {
			for _, name := range removed {
				k := section + "/" + name
				if count >= g.opts.MinServers {
					break
				}
				if g.held[k] != nil {
					continue
				}
				h := &HeldServer{Section: section, Server: name, Guard: GuardMinServers, Since: now,
					Reason: fmt.Sprintf("section %s would have %d servers, fewer than --min-servers %d", section, len(now1), g.opts.MinServers)}
				g.held[k], g.lines[k] = h, before[name]
				res.NewHolds = append(res.NewHolds, *h)
				delete(g.removals[section], name) // not removed after all
				count++
			}
		} else {
			// Min-servers holds no longer needed (others came back).
			for _, k := range slices.Sorted(maps.Keys(g.held)) {
				h := g.held[k]
				if h.Section != section || h.Guard != GuardMinServers {
					continue
				}
				if count-1 >= g.opts.MinServers {
					release(k)
					noteRemoval(section, h.Server)
					count--
				}
			}
		}
	}
	res.Extra = map[string][]string{}
	for _, k := range slices.Sorted(maps.Keys(g.held)) {
		h := g.held[k]
		res.Held = append(res.Held, *h)
		res.Extra[h.Section] = append(res.Extra[h.Section], g.lines[k])
		if !h.Until.IsZero() && (res.Next.IsZero() || h.Until.Before(res.Next)) {
			res.Next = h.Until
		}
	}
	return res
}
