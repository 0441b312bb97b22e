package galera

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haconfd/haconfd/render/node"
)

// ErrNotRegistered is wrapped when a node has no registration under the
// prefix.
var ErrNotRegistered = errors.New("not registered")

// ErrBadNode is wrapped for a node name that cannot be a node id.
var ErrBadNode = errors.New("not a node id")

// CheckNodeID accepts what can be a node's id below a prefix: one path
// element, printable, no whitespace.
func CheckNodeID(id string) error {
	if id == "" || strings.ContainsAny(id, "/ \t\r\n") || len(id) > 253 || strings.IndexFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return fmt.Errorf("%q: %w (one path element below the prefix, no / or whitespace)", id, ErrBadNode)
	}
	return nil
}

// registration finds the node's keys under prefix: its value
// (<prefix>/<id>) and directory fields. It returns the lease its
// registration keys carry (0 when none), and the ids registered under
// prefix (for an error message) when the node has no registration.
func registration(ctx context.Context, cli *clientv3.Client, prefix, id string) (lease clientv3.LeaseID, found bool, err error) {
	base := node.TrimPrefix(prefix) + "/" + id
	resp, err := cli.Get(ctx, base, clientv3.WithPrefix())
	if err != nil {
		return 0, false, fmt.Errorf("read %s: %w", base, err)
	}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		field, ok := strings.CutPrefix(k, base)
		if !ok || field != "" && !strings.HasPrefix(field, "/") {
			continue // another id that starts with this one
		}
		field = strings.TrimPrefix(field, "/")
		if field == node.SigDrain || field == node.SigNotify || strings.Contains(field, "/") {
			continue
		}
		found = true
		if kv.Lease != 0 {
			lease = clientv3.LeaseID(kv.Lease)
		}
	}
	return lease, found, nil
}

// registeredIDs lists the ids below prefix (for messages), at most 20.
func registeredIDs(ctx context.Context, cli *clientv3.Client, prefix string) []string {
	under := node.TrimPrefix(prefix) + "/"
	resp, err := cli.Get(ctx, under, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil
	}
	var ids []string
	for _, kv := range resp.Kvs {
		id, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), under), "/")
		if id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) > 20 {
		ids = append(ids[:20], "...")
	}
	return ids
}

// DrainResult says what Drain or Undrain did.
type DrainResult struct {
	Key     string
	Drain   node.AdminDrain
	Changed bool // false: it was already so
}

// Drain sets an operator's drain on node id under prefix: the key
// <prefix>/<id>/drain = {"by","reason","since"}, with no lease, so it
// outlives restarts of the node and of its registrar until Undrain. The
// node must be registered (unless force).
func Drain(ctx context.Context, cli *clientv3.Client, prefix, id, by, reason string, force bool, now time.Time) (DrainResult, error) {
	if err := CheckNodeID(id); err != nil {
		return DrainResult{}, err
	}
	if strings.TrimSpace(reason) == "" {
		return DrainResult{}, fmt.Errorf("--reason: say why %s is drained (it is shown with the drain)", id)
	}
	key := node.TrimPrefix(prefix) + "/" + id + "/" + node.SigDrain
	_, found, err := registration(ctx, cli, prefix, id)
	if err != nil {
		return DrainResult{}, err
	}
	if !found && !force {
		ids := registeredIDs(ctx, cli, prefix)
		return DrainResult{}, fmt.Errorf("node %q under %s: %w (registered: %s); --force drains it all the same", id, node.TrimPrefix(prefix), ErrNotRegistered, orNone(ids))
	}
	d := node.AdminDrain{By: by, Reason: reason, Since: now.UTC().Format(time.RFC3339)}
	b, err := json.Marshal(d)
	if err != nil {
		return DrainResult{}, err
	}
	old, err := cli.Get(ctx, key)
	if err != nil {
		return DrainResult{}, fmt.Errorf("read %s: %w", key, err)
	}
	if _, err := cli.Put(ctx, key, string(b)); err != nil {
		return DrainResult{}, fmt.Errorf("write %s: %w", key, err)
	}
	return DrainResult{Key: key, Drain: d, Changed: len(old.Kvs) == 0}, nil
}

// Undrain removes the operator's drain of node id; the node takes
// connections again once its health allows. Changed is false when it was
// not drained.
func Undrain(ctx context.Context, cli *clientv3.Client, prefix, id string) (DrainResult, error) {
	if err := CheckNodeID(id); err != nil {
		return DrainResult{}, err
	}
	key := node.TrimPrefix(prefix) + "/" + id + "/" + node.SigDrain
	resp, err := cli.Delete(ctx, key, clientv3.WithPrevKV())
	if err != nil {
		return DrainResult{}, fmt.Errorf("delete %s: %w", key, err)
	}
	r := DrainResult{Key: key, Changed: resp.Deleted > 0}
	if len(resp.PrevKvs) > 0 {
		r.Drain = *parseDrainValue(string(resp.PrevKvs[0].Value))
	}
	return r, nil
}

func parseDrainValue(v string) *node.AdminDrain {
	var d node.AdminDrain
	if json.Unmarshal([]byte(v), &d) != nil {
		return &node.AdminDrain{Unreadable: true}
	}
	return &d
}

func orNone(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

// NotifyArgs are the arguments Galera passes to wsrep_notify_cmd: on a
// status change --status; on a view change also --uuid (the cluster
// state UUID), --primary yes|no, --members uuid/name/address,... and
// --index (this node's place in the members).
type NotifyArgs struct {
	Status  string
	UUID    string
	Primary string
	Members string
	Index   string
}

// ParseMembers reads --members: "uuid/name/address,uuid/name/address".
func ParseMembers(s string) ([]node.Member, error) {
	var out []node.Member
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, m := range strings.Split(s, ",") {
		parts := strings.SplitN(strings.TrimSpace(m), "/", 3)
		if parts[0] == "" {
			return nil, fmt.Errorf("--members: %q has no uuid", m)
		}
		mem := node.Member{UUID: parts[0]}
		if len(parts) > 1 {
			mem.Name = parts[1]
		}
		if len(parts) > 2 {
			mem.Addr = parts[2]
		}
		out = append(out, mem)
	}
	return out, nil
}

// record merges args into the node's previous record: the status when
// given, the view when given (a status change alone keeps the view).
func (a NotifyArgs) record(prev node.NotifyRecord, now time.Time) (node.NotifyRecord, error) {
	r := prev
	r.Rev = 0
	if a.Status != "" {
		r.Status = strings.ToLower(a.Status)
	}
	if a.Members != "" || a.Primary != "" || a.Index != "" || a.UUID != "" {
		members, err := ParseMembers(a.Members)
		if err != nil {
			return r, err
		}
		r.Members = members
		r.Cluster = a.UUID
		r.Primary, r.Index = nil, nil
		switch strings.ToLower(a.Primary) {
		case "yes", "1", "true":
			t := true
			r.Primary = &t
		case "no", "0", "false":
			f := false
			r.Primary = &f
		case "":
		default:
			return r, fmt.Errorf("--primary: %q must be yes or no", a.Primary)
		}
		if a.Index != "" {
			i, err := strconv.Atoi(a.Index)
			if err != nil || i < -1 || i > 1<<16 {
				return r, fmt.Errorf("--index: %q is not a member index", a.Index)
			}
			r.Index = &i
		}
	}
	r.At = now.UTC().Format(time.RFC3339Nano)
	return r, nil
}

// Check validates the arguments Galera passed.
func (a NotifyArgs) Check() error {
	var errs []error
	if a.Status != "" && !isWord(a.Status) {
		errs = append(errs, fmt.Errorf("--status: %q is not a Galera status", a.Status))
	}
	if _, err := (NotifyArgs{Members: a.Members, Primary: a.Primary, Index: a.Index, UUID: a.UUID}).record(node.NotifyRecord{}, time.Time{}); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func isWord(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return s != ""
}

// NotifyResult says what Notify wrote.
type NotifyResult struct {
	Key    string
	Record node.NotifyRecord
	Wrote  bool // false: the node is not registered, nothing written
}

// Notify is `haconfd notify`, Galera's wsrep_notify_cmd: it merges args
// into the node's record <prefix>/<id>/wsrep_notify and writes it on the
// lease of the node's registration (so it goes away with it). haconfd
// takes the node out at once when the record, newer than the state the
// registrar published, says it does not serve; and the newest view of a
// Primary component, written by the survivors within ~50 ms of a clean
// leave, takes out the members it no longer lists. A node with no
// registration gets nothing written (Wrote false).
func Notify(ctx context.Context, cli *clientv3.Client, prefix, id string, args NotifyArgs, now time.Time) (NotifyResult, error) {
	if err := CheckNodeID(id); err != nil {
		return NotifyResult{}, err
	}
	if err := args.Check(); err != nil {
		return NotifyResult{}, err
	}
	key := node.TrimPrefix(prefix) + "/" + id + "/" + node.SigNotify
	lease, found, err := registration(ctx, cli, prefix, id)
	if err != nil {
		return NotifyResult{}, err
	}
	if !found {
		return NotifyResult{Key: key}, nil
	}
	var prev node.NotifyRecord
	old, err := cli.Get(ctx, key)
	if err != nil {
		return NotifyResult{}, fmt.Errorf("read %s: %w", key, err)
	}
	if len(old.Kvs) > 0 {
		_ = json.Unmarshal(old.Kvs[0].Value, &prev) // an unreadable record is replaced
	}
	rec, err := args.record(prev, now)
	if err != nil {
		return NotifyResult{}, err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return NotifyResult{}, err
	}
	var opts []clientv3.OpOption
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(lease))
	}
	if _, err := cli.Put(ctx, key, string(b), opts...); err != nil {
		return NotifyResult{}, fmt.Errorf("write %s: %w", key, err)
	}
	return NotifyResult{Key: key, Record: rec, Wrote: true}, nil
}
