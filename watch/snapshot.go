// Package watch keeps a consistent, immutable snapshot of every key under
// a set of etcd prefixes, current from an etcd watch, and reads and writes
// snapshots as JSON files.
package watch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
)

// ErrBadSnapshot is wrapped by every error ReadSnapshot returns for input
// that is not a snapshot.
var ErrBadSnapshot = errors.New("bad snapshot")

// KV is one key with its value as stored in etcd.
type KV struct {
	Key         string `json:"key"`
	Value       string `json:"value"`
	Lease       int64  `json:"lease,omitempty"`
	ModRevision int64  `json:"mod_revision,omitempty"`
}

// Snapshot is the content of the watched prefixes at one etcd revision.
// KVs are sorted by Key. A Snapshot is immutable once emitted: neither the
// sender nor a receiver may change KVs.
type Snapshot struct {
	Revision int64 `json:"revision"`
	KVs      []KV  `json:"kvs"`
}

// Map returns the snapshot as a new key → value map.
func (s Snapshot) Map() map[string]string {
	m := make(map[string]string, len(s.KVs))
	for _, kv := range s.KVs {
		m[kv.Key] = kv.Value
	}
	return m
}

// Get returns the value of key and whether the key is in the snapshot.
func (s Snapshot) Get(key string) (string, bool) {
	i, ok := slices.BinarySearchFunc(s.KVs, key, func(kv KV, k string) int {
		return strings.Compare(kv.Key, k)
	})
	if !ok {
		return "", false
	}
	return s.KVs[i].Value, true
}

// WriteJSON writes the snapshot as an indented JSON object
// {"revision":N,"kvs":[{"key":..,"value":..},...]} with keys sorted, so the
// same snapshot always gives the same bytes. ReadSnapshot reads it back.
func (s Snapshot) WriteJSON(w io.Writer) error {
	out := s
	if out.KVs == nil {
		out.KVs = []KV{}
	}
	if !sort.SliceIsSorted(out.KVs, func(i, j int) bool { return out.KVs[i].Key < out.KVs[j].Key }) {
		out.KVs = slices.Clone(out.KVs)
		sortKVs(out.KVs)
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}

// ReadSnapshotFile reads a snapshot from the JSON file at path (see
// ReadSnapshot for the accepted forms).
func ReadSnapshotFile(path string) (Snapshot, error) {
	data, err := os.ReadFile(path) // sized once, unlike io.ReadAll
	if err != nil {
		return Snapshot{}, fmt.Errorf("read snapshot: %w", err)
	}
	s, err := parseSnapshot(data)
	if err != nil {
		return Snapshot{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ReadSnapshot reads a snapshot in one of two JSON forms:
//
//	{"revision": 12, "kvs": [{"key": "/a", "value": "1"}, ...]}
//	{"/a": "1", "/b": "2"}
//
// The first is what WriteJSON writes; "lease" and "mod_revision" are
// optional in each kv. The second is a flat key → string value object with
// revision 0. An object is taken to be the first form when it has a "kvs"
// member that is an array.
func ReadSnapshot(r io.Reader) (Snapshot, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Snapshot{}, fmt.Errorf("read snapshot: %w", err)
	}
	return parseSnapshot(data)
}

func parseSnapshot(data []byte) (Snapshot, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Snapshot{}, fmt.Errorf("read snapshot: %w: empty input", ErrBadSnapshot)
	}
	// Which form: the first byte of each member is enough (a map of
	// json.RawMessage would copy a 10,000-node file once more).
	var kinds map[string]firstByte
	if err := strictDecode(data, &kinds); err != nil {
		return Snapshot{}, fmt.Errorf("read snapshot: %w: want a JSON object: %w", ErrBadSnapshot, err)
	}
	if kinds == nil {
		return Snapshot{}, fmt.Errorf("read snapshot: %w: want a JSON object, got null", ErrBadSnapshot)
	}
	if kinds["kvs"] == '[' {
		return readStructured(data)
	}
	var top map[string]json.RawMessage
	if err := strictDecode(data, &top); err != nil {
		return Snapshot{}, fmt.Errorf("read snapshot: %w: want a JSON object: %w", ErrBadSnapshot, err)
	}
	return readFlat(top)
}

// firstByte keeps only the first byte of a JSON value.
type firstByte byte

func (f *firstByte) UnmarshalJSON(b []byte) error {
	if b = bytes.TrimSpace(b); len(b) > 0 {
		*f = firstByte(b[0])
	}
	return nil
}

func readStructured(data []byte) (Snapshot, error) {
	var s Snapshot
	if err := strictDecode(data, &s, disallowUnknown); err != nil {
		return Snapshot{}, fmt.Errorf("read snapshot: %w: %w", ErrBadSnapshot, err)
	}
	if s.Revision < 0 {
		return Snapshot{}, fmt.Errorf("read snapshot: %w: revision %d is negative", ErrBadSnapshot, s.Revision)
	}
	if s.KVs == nil {
		s.KVs = []KV{}
	}
	for i, kv := range s.KVs {
		if kv.Key == "" {
			return Snapshot{}, fmt.Errorf("read snapshot: %w: kvs[%d]: key is empty", ErrBadSnapshot, i)
		}
	}
	sortKVs(s.KVs)
	for i := 1; i < len(s.KVs); i++ {
		if s.KVs[i].Key == s.KVs[i-1].Key {
			return Snapshot{}, fmt.Errorf("read snapshot: %w: key %q appears twice", ErrBadSnapshot, s.KVs[i].Key)
		}
	}
	return s, nil
}

func readFlat(top map[string]json.RawMessage) (Snapshot, error) {
	s := Snapshot{KVs: make([]KV, 0, len(top))}
	for k, raw := range top {
		if k == "" {
			return Snapshot{}, fmt.Errorf("read snapshot: %w: key is empty", ErrBadSnapshot)
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return Snapshot{}, fmt.Errorf("read snapshot: %w: value of key %q must be a string, got %s",
				ErrBadSnapshot, k, jsonKind(raw))
		}
		s.KVs = append(s.KVs, KV{Key: k, Value: v})
	}
	sortKVs(s.KVs)
	return s, nil
}

type decodeOption int

const disallowUnknown decodeOption = 1

// strictDecode decodes exactly one JSON value from data into v; trailing
// data is an error.
func strictDecode(data []byte, v any, opts ...decodeOption) error {
	if !slices.Contains(opts, disallowUnknown) {
		// Unmarshal reads data in place (a Decoder copies it into its
		// buffer) and also refuses trailing data.
		if err := json.Unmarshal(data, v); err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) && strings.Contains(se.Error(), "after top-level value") {
				return errors.New("unexpected data after the JSON object")
			}
			return err
		}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if slices.Contains(opts, disallowUnknown) {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

func jsonKind(raw json.RawMessage) string {
	b := bytes.TrimSpace(raw)
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func sortKVs(kvs []KV) {
	slices.SortFunc(kvs, func(a, b KV) int { return strings.Compare(a.Key, b.Key) })
}
