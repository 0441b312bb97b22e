package node

import (
	"fmt"
	"strings"
)

// Clusters returns the names of the clusters found under prefix in kvs
// (sorted by key), sorted: the first-level directories <c> that hold nodes
// one level down, <prefix>/<c>/<node>/<field> with a field haconfd reads,
// as severalnines' etcd-based Galera image writes them under /galera, and
// that are not nodes themselves (no <prefix>/<c> value, no
// <prefix>/<c>/<field>). A node of a cluster is parsed with the prefix
// <prefix>/<c>.
func Clusters(prefix string, kvs []KV) []string {
	lo, hi := SortedRange(prefix, kvs)
	under := TrimPrefix(prefix) + "/"
	var out []string
	isNode := map[string]bool{}
	last := ""
	for _, kv := range kvs[lo:hi] {
		rest := kv.Key[len(under):]
		c, after, deep := strings.Cut(rest, "/")
		if c == "" {
			continue
		}
		if !deep {
			isNode[c] = true
			continue
		}
		id, field, deeper := strings.Cut(after, "/")
		if !deeper {
			if _, ok := dirFieldOf(id); ok {
				isNode[c] = true
			}
			continue
		}
		if id == "" || field == "" || strings.Contains(field, "/") || c == last {
			continue
		}
		if _, ok := dirFieldOf(field); ok {
			out = append(out, c)
			last = c
		}
	}
	keep := out[:0]
	for _, c := range out {
		if !isNode[c] && validateID(c) == nil {
			keep = append(keep, c)
		}
	}
	if len(keep) == 0 {
		return nil
	}
	return keep
}

// ClusterServiceName is the HAProxy-safe section name of a cluster.
func ClusterServiceName(cluster string) string {
	if isToken(cluster, "_.:-") {
		return cluster
	}
	return safeName(cluster) + "-" + shortHash(cluster)
}

// EmptyPrefixNote says, on one line, that prefix yielded no node: how many
// keys it has, the first ones it could not use, and why when that can be
// told (problems are the prefix's skipped nodes).
func EmptyPrefixNote(prefix string, kvs []KV, problems []Problem) string {
	lo, hi := SortedRange(prefix, kvs)
	p := TrimPrefix(prefix)
	if lo == hi {
		return fmt.Sprintf("prefix %s: no node: no keys under it", p)
	}
	under := p + "/"
	var first []string
	deep := 0
	for _, kv := range kvs[lo:hi] {
		if len(first) < 3 {
			first = append(first, quoteIfOdd(kv.Key))
		}
		if strings.Count(kv.Key[len(under):], "/") >= 2 {
			deep++
		}
	}
	msg := fmt.Sprintf("prefix %s: no node among its %d key(s); first keys it could not use: %s", p, hi-lo, strings.Join(first, ", "))
	switch {
	case len(problems) > 0:
		msg += "; " + problems[0].Error()
	case deep == hi-lo:
		msg += "; every key is more than two levels below the prefix (<prefix>/<node>/<field> or, above clusters, <prefix>/<cluster>/<node>/<field> with a field such as ip or wsrep_local_state_comment)"
	default:
		msg += "; none registers a node (an ip, a port, a state, an address value): only keys such as drain or wsrep_notify left by nodes that are gone"
	}
	return msg
}
