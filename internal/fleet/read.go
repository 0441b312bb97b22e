package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// State of an instance in ReadAll.
type State string

// States.
const (
	Converged State = "converged" // applied the latest change under its prefixes
	Lagging   State = "lagging"   // behind the latest change (not applied yet, or held)
	Failing   State = "failing"   // its last render or apply failed
	Gone      State = "gone"      // its lease expired: it stopped without a clean exit
)

// Instance is one instance's published status and what ReadAll made of it.
type Instance struct {
	Report
	State  State  `json:"state"`
	Latest int64  `json:"latest_revision"`  // latest change under the instance's prefixes
	Behind int64  `json:"behind,omitempty"` // revisions from applied to latest (lagging)
	Detail string `json:"detail,omitempty"`
}

// Fleet is what ReadAll read.
type Fleet struct {
	Revision  int64      `json:"revision"` // etcd's revision when read
	Read      time.Time  `json:"read"`
	Instances []Instance `json:"instances"` // sorted by name
	Notes     []string   `json:"notes,omitempty"`
}

// Counts returns how many instances are in each state.
func (f Fleet) Counts() map[State]int {
	m := map[State]int{}
	for _, in := range f.Instances {
		m[in.State]++
	}
	return m
}

// deleteScanTimeout bounds the search for deletions after the newest key.
const deleteScanTimeout = 5 * time.Second

// ReadAll reads every instance under the status prefix and classifies it.
// The latest change under a set of prefixes is the newest revision that
// put or deleted a key there: the newest mod_revision of the keys, or a
// later deletion, found by watching the prefixes from that revision up to
// the current one (a deletion leaves no mod_revision to read). An
// instance's own published prefixes are used; watched is the default for
// instances that published none. An instance is converged when its
// applied revision is at least that latest change and its last result is
// ok; failing when its last render or apply failed; lagging otherwise;
// gone when only its last-seen key is left (the lease expired).
func ReadAll(ctx context.Context, cli *clientv3.Client, prefix string, watched []string) (Fleet, error) {
	if err := CheckPrefix(prefix); err != nil {
		return Fleet{}, fmt.Errorf("status prefix: %w", err)
	}
	live, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return Fleet{}, fmt.Errorf("read instance statuses under %s: %w", prefix, err)
	}
	seen, err := cli.Get(ctx, prefix+".last-seen/", clientv3.WithPrefix(), clientv3.WithRev(live.Header.Revision))
	if err != nil {
		return Fleet{}, fmt.Errorf("read last-seen keys under %s.last-seen: %w", prefix, err)
	}
	f := Fleet{Revision: live.Header.Revision, Read: time.Now()}
	byName := map[string]Instance{}
	for _, kv := range live.Kvs {
		var st Report
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			f.Notes = append(f.Notes, fmt.Sprintf("%s: not a status: %v", kv.Key, err))
			continue
		}
		st.Instance = strings.TrimPrefix(string(kv.Key), prefix+"/")
		byName[st.Instance] = Instance{Report: st}
	}
	for _, kv := range seen.Kvs {
		name := strings.TrimPrefix(string(kv.Key), prefix+".last-seen/")
		if _, ok := byName[name]; ok {
			continue
		}
		var st Report
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			f.Notes = append(f.Notes, fmt.Sprintf("%s: not a status: %v", kv.Key, err))
			continue
		}
		st.Instance = name
		byName[name] = Instance{Report: st, State: Gone,
			Detail: "lease expired: no clean stop; last update " + st.Updated.Format(time.RFC3339)}
	}
	latest := map[string]int64{} // by joined prefix list
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		in := byName[name]
		ps := in.Prefixes
		if len(ps) == 0 {
			ps = watched
		}
		key := strings.Join(ps, "\x00")
		l, ok := latest[key]
		if !ok {
			var note string
			l, note, err = LatestChange(ctx, cli, ps)
			if err != nil {
				return Fleet{}, err
			}
			if note != "" {
				f.Notes = append(f.Notes, note)
			}
			latest[key] = l
		}
		in.Latest = l
		if in.State != Gone {
			classify(&in, f.Read)
		}
		f.Instances = append(f.Instances, in)
	}
	return f, nil
}

func classify(in *Instance, now time.Time) {
	switch {
	case in.LastResult == ResultError:
		in.State = Failing
		in.Detail = in.LastError
		if in.FailedChange != "" && in.FailedError != "" && !strings.Contains(in.LastError, in.FailedError) {
			in.Detail += "; reload failed: " + in.FailedError
		}
	case in.AppliedRevision >= in.Latest && in.LastResult != ResultHeld:
		in.State = Converged
	default:
		in.State = Lagging
		in.Behind = max(in.Latest-in.AppliedRevision, 0)
		var parts []string
		switch {
		case in.Behind > 0 && in.SeenRevision < in.Latest:
			parts = append(parts, fmt.Sprintf("%d revisions behind, latest change not seen yet", in.Behind))
		case in.Behind > 0 && !in.BehindSince.IsZero():
			parts = append(parts, fmt.Sprintf("%d revisions behind for %s", in.Behind, now.Sub(in.BehindSince).Round(100*time.Millisecond)))
		case in.Behind > 0:
			parts = append(parts, fmt.Sprintf("%d revisions behind", in.Behind))
		}
		if in.Held != "" {
			parts = append(parts, "held: "+in.Held)
		}
		if in.Waiting != "" {
			parts = append(parts, "waiting for a "+in.Waiting)
		}
		in.Detail = strings.Join(parts, "; ")
	}
}

// LatestChange returns the newest revision that put or deleted a key
// under prefixes (a key p, or keys under p/). note is non-empty when
// deletions could not all be checked (compacted history, timeout): the
// result then counts only what was seen.
func LatestChange(ctx context.Context, cli *clientv3.Client, prefixes []string) (rev int64, note string, err error) {
	var head int64
	for _, p := range prefixes {
		resp, err := cli.Txn(ctx).Then(
			clientv3.OpGet(strings.TrimSuffix(p, "/")+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly(),
				clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1)),
			clientv3.OpGet(p, clientv3.WithKeysOnly()),
		).Commit()
		if err != nil {
			return 0, "", fmt.Errorf("latest change under %s: %w", p, err)
		}
		head = max(head, resp.Header.Revision)
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				rev = max(rev, kv.ModRevision)
			}
		}
	}
	if rev >= head {
		return rev, "", nil
	}
	del, note := lastDelete(ctx, cli, prefixes, rev+1, head)
	return max(rev, del), note, nil
}

// lastDelete returns the newest deletion under prefixes in revisions
// [from, head]. It watches the whole key space from revision from and
// reads events until one at head or later arrives: a watch delivers
// events in revision order, so every deletion up to head has been seen
// then. It does not trust progress notifications: etcd 3.4.23 (Debian
// 12's) may send one before a fresh watch has delivered past events
// (etcd-io/etcd#15220, fixed by #15237), which made a recent delete look
// absent.
func lastDelete(ctx context.Context, cli *clientv3.Client, prefixes []string, from, head int64) (int64, string) {
	wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), deleteScanTimeout)
	defer cancel()
	under := func(key string) bool {
		for _, p := range prefixes {
			p = strings.TrimSuffix(p, "/")
			if key == p || strings.HasPrefix(key, p+"/") {
				return true
			}
		}
		return false
	}
	var last int64
	ch := cli.Watch(wctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(from))
	for {
		select {
		case <-wctx.Done():
			return last, fmt.Sprintf("deletions under %v after revision %d not all checked: %v", prefixes, from-1, wctx.Err())
		case r, ok := <-ch:
			if !ok {
				return last, fmt.Sprintf("deletions under %v after revision %d not all checked: watch closed", prefixes, from-1)
			}
			if r.CompactRevision != 0 {
				return last, fmt.Sprintf("deletions under %v before revision %d are compacted away", prefixes, r.CompactRevision)
			}
			if err := r.Err(); err != nil {
				return last, fmt.Sprintf("deletions under %v after revision %d not all checked: %v", prefixes, from-1, err)
			}
			reached := false
			for _, ev := range r.Events { // one response holds a whole revision
				if ev.Kv.ModRevision > head {
					reached = true
					continue
				}
				if ev.Type == mvccpb.DELETE && under(string(ev.Kv.Key)) {
					last = max(last, ev.Kv.ModRevision)
				}
				reached = reached || ev.Kv.ModRevision == head
			}
			if reached {
				return last, ""
			}
		}
	}
}
