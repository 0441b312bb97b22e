package render

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/haconfd/haconfd/render/node"
	"net"
	"path"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// ErrKeyNotExist is returned (wrapped in a *KeyError) by get and getv when
// the key is not in the snapshot. Its text matches confd's memkv.
var ErrKeyNotExist = errors.New("key does not exist")

// ErrFuncDisabled is returned by a template function whose backing Option
// is nil: lookupIP/lookupIPV4/lookupIPV6/lookupSRV (Options.Lookup) and
// fileExists (Options.FileExists).
var ErrFuncDisabled = errors.New("disabled")

// ErrLookupDisabled is ErrFuncDisabled, under its older name.
var ErrLookupDisabled = ErrFuncDisabled

// KeyError names the key a key function failed on.
type KeyError struct {
	Key string
	Err error
}

// Error matches confd's memkv text: "key does not exist: /a/b".
func (e *KeyError) Error() string { return e.Err.Error() + ": " + e.Key }

// Unwrap returns the cause.
func (e *KeyError) Unwrap() error { return e.Err }

// KVPair is what get returns, as in confd (node.KV: the same pair the
// node parser reads).
type KVPair = node.KV

// KVPairs is what gets returns: like confd's memkv.KVPairs it is a named
// type, so reverse leaves it as it is (confd's reverse only reverses a plain
// []KVPair, e.g. the result of sortKVByLength).
type KVPairs []KVPair

// Lookup resolves names for the lookupIP and lookupSRV template functions.
// The daemon wires it to the resolver; render itself never does I/O.
type Lookup interface {
	LookupIP(name string) ([]net.IP, error)
	LookupSRV(service, proto, name string) ([]*net.SRV, error)
}

// kvStore gives confd's key functions over one immutable snapshot. etcd v3
// has no directories: they are derived from the '/'-separated key paths, as
// confd's memkv does.
type kvStore struct {
	m      map[string]string
	pairs  []KVPair // Input.Sorted, when the snapshot came as sorted pairs
	sorted []string // sorted keys, built on first use (most templates never list keys)
}

func newKVStore(m map[string]string) *kvStore {
	return &kvStore{m: m}
}

// newKVStoreSorted is a store over pairs sorted by key; its map is built
// only if a template looks a key up (the default templates never do).
func newKVStoreSorted(pairs []KVPair) *kvStore {
	return &kvStore{pairs: pairs}
}

// kv returns the key → value map.
func (s *kvStore) kv() map[string]string {
	if s.m == nil && s.pairs != nil {
		s.m = Input{Sorted: s.pairs}.Map()
	}
	return s.m
}

func (s *kvStore) size() int {
	if s.pairs != nil {
		return len(s.pairs)
	}
	return len(s.m)
}

// keys returns the keys sorted, for deterministic iteration.
func (s *kvStore) keys() []string {
	if s.sorted == nil {
		s.sorted = make([]string, 0, s.size())
		if s.pairs != nil {
			for _, p := range s.pairs {
				s.sorted = append(s.sorted, p.Key)
			}
			return s.sorted
		}
		for k := range s.m {
			s.sorted = append(s.sorted, k)
		}
		sort.Strings(s.sorted)
	}
	return s.sorted
}

func (s *kvStore) exists(key string) bool {
	_, ok := s.kv()[key]
	return ok
}

func (s *kvStore) get(key string) (KVPair, error) {
	v, ok := s.kv()[key]
	if !ok {
		return KVPair{}, &KeyError{Key: key, Err: ErrKeyNotExist}
	}
	return KVPair{Key: key, Value: v}, nil
}

// getv returns the value of key, or the first default when the key is
// missing; without a default a missing key is an error.
func (s *kvStore) getv(key string, def ...string) (string, error) {
	v, ok := s.kv()[key]
	if !ok {
		if len(def) > 0 {
			return def[0], nil
		}
		return "", &KeyError{Key: key, Err: ErrKeyNotExist}
	}
	return v, nil
}

// gets returns the pairs whose key matches pattern (path.Match), sorted by
// key. As in confd, a malformed pattern is an error only when there is at
// least one key to match it against.
func (s *kvStore) gets(pattern string) (KVPairs, error) {
	out := make(KVPairs, 0)
	if _, err := path.Match(pattern, ""); err != nil && s.size() > 0 {
		return nil, fmt.Errorf("pattern %q: %w", pattern, err)
	}
	for _, k := range s.keys() {
		if ok, _ := path.Match(pattern, k); ok {
			out = append(out, KVPair{Key: k, Value: s.kv()[k]})
		}
	}
	return out, nil
}

// getvs returns the values of the keys matching pattern, sorted by value.
func (s *kvStore) getvs(pattern string) ([]string, error) {
	kvs, err := s.gets(pattern)
	if err != nil {
		return []string{}, err
	}
	out := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, kv.Value)
	}
	sort.Strings(out)
	return out, nil
}

func pathTerms(p string) []string { return strings.Split(path.Clean(p), "/") }

func hasTermPrefix(prefix, terms []string) bool {
	if len(terms) < len(prefix) {
		return false
	}
	for i := range prefix {
		if prefix[i] != terms[i] {
			return false
		}
	}
	return true
}

// ls returns the names one level below dir, sorted and unique. A key equal
// to dir gives its own base name (confd memkv behaviour).
func (s *kvStore) ls(dir string) []string {
	set := make(map[string]bool)
	prefix := pathTerms(dir)
	for _, k := range s.keys() {
		if k == dir {
			set[path.Base(k)] = true
			continue
		}
		if hasTermPrefix(prefix, pathTerms(path.Dir(k))) {
			rest := strings.TrimPrefix(strings.TrimPrefix(k, dir), "/")
			first, _, _ := strings.Cut(rest, "/")
			set[first] = true
		}
	}
	return sortedSet(set)
}

// lsdir returns the names one level below dir that have children
// themselves, sorted and unique: lsdir "/components/galera/" lists the ids
// of directory-style nodes.
func (s *kvStore) lsdir(dir string) []string {
	set := make(map[string]bool)
	prefix := pathTerms(dir)
	for _, k := range s.keys() {
		if !strings.HasPrefix(k, dir) {
			continue
		}
		terms := pathTerms(path.Dir(k))
		if hasTermPrefix(prefix, terms) && len(terms) > len(prefix) {
			set[terms[len(prefix)]] = true
		}
	}
	return sortedSet(set)
}

func sortedSet(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// funcMap returns the template functions bound to one snapshot. With a nil
// store (parse time) the key functions exist but are never called.
func funcMap(s *kvStore, opts *Options, warn func(string)) template.FuncMap {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	lookup := opts.Lookup
	fileExists := opts.FileExists
	return template.FuncMap{
		// confd memkv key functions
		"exists": s.exists,
		"get":    s.get,
		"gets":   s.gets,
		"getv":   s.getv,
		"getvs":  s.getvs,
		"ls":     s.ls,
		"lsdir":  s.lsdir,
		// confd template_funcs
		"base":       path.Base,
		"dir":        path.Dir,
		"split":      strings.Split,
		"join":       strings.Join,
		"json":       unmarshalJSONObject,
		"jsonArray":  unmarshalJSONArray,
		"toUpper":    strings.ToUpper,
		"toLower":    strings.ToLower,
		"contains":   strings.Contains,
		"replace":    strings.Replace,
		"trimSuffix": strings.TrimSuffix,
		"getenv": func(key string, def ...string) string {
			if v := getenv(key); v != "" {
				return v
			}
			if len(def) > 0 {
				return def[0]
			}
			return ""
		},
		"datetime":       now,
		"atoi":           strconv.Atoi,
		"add":            func(a, b int) int { return a + b },
		"sub":            func(a, b int) int { return a - b },
		"mul":            func(a, b int) int { return a * b },
		"div":            intDiv,
		"mod":            intMod,
		"seq":            seq,
		"map":            createMap,
		"parseBool":      strconv.ParseBool,
		"reverse":        func(v any) any { return reverse(v, warn) },
		"sortByLength":   sortByLength,
		"sortKVByLength": sortKVByLength,
		"base64Encode":   func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		"base64Decode": func(s string) (string, error) {
			b, err := base64.StdEncoding.DecodeString(s)
			return string(b), err
		},
		"lookupIP":   func(name string) ([]string, error) { return lookupIP(lookup, "lookupIP", name, "") },
		"lookupIPV4": func(name string) ([]string, error) { return lookupIP(lookup, "lookupIPV4", name, ".") },
		"lookupIPV6": func(name string) ([]string, error) { return lookupIP(lookup, "lookupIPV6", name, ":") },
		"lookupSRV": func(service, proto, name string) ([]*net.SRV, error) {
			return lookupSRV(lookup, service, proto, name)
		},
		"fileExists": func(p string) (bool, error) {
			if fileExists == nil {
				return false, fmt.Errorf("fileExists %w", ErrFuncDisabled)
			}
			return fileExists(p), nil
		},
	}
}

func unmarshalJSONObject(data string) (map[string]any, error) {
	var m map[string]any
	err := json.Unmarshal([]byte(data), &m)
	return m, err
}

func unmarshalJSONArray(data string) ([]any, error) {
	var a []any
	err := json.Unmarshal([]byte(data), &a)
	return a, err
}

// ErrDivideByZero is what div and mod return for a zero divisor (confd panics,
// which text/template also turns into an error).
var ErrDivideByZero = errors.New("integer divide by zero")

func intDiv(a, b int) (int, error) {
	if b == 0 {
		return 0, ErrDivideByZero
	}
	return a / b, nil
}

func intMod(a, b int) (int, error) {
	if b == 0 {
		return 0, ErrDivideByZero
	}
	return a % b, nil
}

// seq returns first..last inclusive (empty when last < first), like GNU seq.
func seq(first, last int) []int {
	var out []int
	for i := first; i <= last; i++ {
		out = append(out, i)
	}
	return out
}

// createMap builds a map from alternating string keys and values.
func createMap(values ...any) (map[string]any, error) {
	if len(values)%2 != 0 {
		return nil, errors.New("invalid map call")
	}
	m := make(map[string]any, len(values)/2)
	for i := 0; i < len(values); i += 2 {
		k, ok := values[i].(string)
		if !ok {
			return nil, errors.New("map keys must be strings")
		}
		m[k] = values[i+1]
	}
	return m, nil
}

// reverse reverses a []string or []KVPair in place (as confd does) and
// returns it; a []Node is returned as a reversed copy (the node lists are
// shared with the template data); anything else, including the KVPairs of
// gets, is returned unchanged, as confd does (with a warning for KVPairs).
func reverse(v any, warn func(string)) any {
	switch s := v.(type) {
	case KVPairs:
		warn("reverse: the list from gets is left in key order, as confd leaves it; " +
			"to reverse it, write reverse (sortKVByLength (gets ...)) or range over it backwards")
	case []string:
		for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
			s[i], s[j] = s[j], s[i]
		}
	case []KVPair:
		for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
			s[i], s[j] = s[j], s[i]
		}
	case []Node:
		out := make([]Node, len(s))
		for i := range s {
			out[len(s)-1-i] = s[i]
		}
		return out
	}
	return v
}

// byLength and byKeyLength are confd's sort.Interface types: sorting with
// the same sort.Sort and Less gives the same order as confd, also among
// equal lengths.
type byLength []string

func (s byLength) Len() int           { return len(s) }
func (s byLength) Swap(i, j int)      { s[i], s[j] = s[j], s[i] }
func (s byLength) Less(i, j int) bool { return len(s[i]) < len(s[j]) }

type byKeyLength []KVPair

func (s byKeyLength) Len() int           { return len(s) }
func (s byKeyLength) Swap(i, j int)      { s[i], s[j] = s[j], s[i] }
func (s byKeyLength) Less(i, j int) bool { return len(s[i].Key) < len(s[j].Key) }

// sortByLength sorts in place by length, shortest first, exactly as confd.
func sortByLength(v []string) []string {
	sort.Sort(byLength(v))
	return v
}

// sortKVByLength sorts pairs in place by key length, shortest first,
// exactly as confd; it takes the KVPairs of gets too and returns a plain
// []KVPair.
func sortKVByLength(v []KVPair) []KVPair {
	sort.Sort(byKeyLength(v))
	return v
}

// bySRV is confd's SRV order: by the concatenated target, port, priority,
// weight string.
type bySRV []*net.SRV

func (s bySRV) Len() int      { return len(s) }
func (s bySRV) Swap(i, j int) { s[i], s[j] = s[j], s[i] }
func (s bySRV) Less(i, j int) bool {
	return srvKey(s[i]) < srvKey(s[j])
}

func srvKey(s *net.SRV) string {
	return fmt.Sprintf("%s%d%d%d", s.Target, s.Port, s.Priority, s.Weight)
}

// lookupIP resolves name and returns its addresses as sorted strings,
// keeping only those containing filter (""=all). As in confd, a failed
// lookup gives an empty list; a nil Lookup is an error.
func lookupIP(l Lookup, fn, name, filter string) ([]string, error) {
	if l == nil {
		return nil, fmt.Errorf("%s %w", fn, ErrLookupDisabled)
	}
	ips, err := l.LookupIP(name)
	if err != nil {
		return nil, nil //nolint:nilerr // confd semantics: failures give an empty list
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		if s := ip.String(); strings.Contains(s, filter) {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out, nil
}

// lookupSRV resolves an SRV record, sorted by target, port, priority,
// weight as in confd; a failed lookup gives an empty list.
func lookupSRV(l Lookup, service, proto, name string) ([]*net.SRV, error) {
	if l == nil {
		return nil, fmt.Errorf("lookupSRV %w", ErrLookupDisabled)
	}
	srvs, err := l.LookupSRV(service, proto, name)
	if err != nil {
		return []*net.SRV{}, nil //nolint:nilerr // confd semantics
	}
	sort.Sort(bySRV(srvs))
	return srvs, nil
}
