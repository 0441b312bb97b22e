package watch

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestReadSnapshot(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Snapshot
		wantErr string // "" means no error
	}{
		{
			name: "structured",
			in: `{"revision": 7, "kvs": [
				{"key": "/b", "value": "2", "lease": 5, "mod_revision": 6},
				{"key": "/a", "value": "1"}]}`,
			want: Snapshot{Revision: 7, KVs: []KV{
				{Key: "/a", Value: "1"},
				{Key: "/b", Value: "2", Lease: 5, ModRevision: 6},
			}},
		},
		{
			name: "structured empty",
			in:   `{"revision": 0, "kvs": []}`,
			want: Snapshot{KVs: []KV{}},
		},
		{
			name: "flat",
			in:   `{"/components/galera/n2": "10.0.0.2:3306", "/components/galera/n1": "10.0.0.1:3306"}`,
			want: Snapshot{KVs: []KV{
				{Key: "/components/galera/n1", Value: "10.0.0.1:3306"},
				{Key: "/components/galera/n2", Value: "10.0.0.2:3306"},
			}},
		},
		{
			name: "flat with a key named kvs",
			in:   `{"kvs": "x", "revision": "y"}`,
			want: Snapshot{KVs: []KV{{Key: "kvs", Value: "x"}, {Key: "revision", Value: "y"}}},
		},
		{
			name: "flat empty",
			in:   `{}`,
			want: Snapshot{KVs: []KV{}},
		},
		{name: "empty input", in: "  \n", wantErr: "empty input"},
		{name: "not json", in: "key=value", wantErr: "want a JSON object"},
		{name: "array", in: `[{"key":"/a"}]`, wantErr: "want a JSON object"},
		{name: "null", in: `null`, wantErr: "got null"},
		{name: "truncated", in: `{"/a": "1"`, wantErr: "want a JSON object"},
		{name: "trailing data", in: `{"/a": "1"} {"/b": "2"}`, wantErr: "unexpected data after"},
		{name: "flat number value", in: `{"/a": 1}`, wantErr: `value of key "/a" must be a string, got a number`},
		{name: "flat object value", in: `{"/a": {"ip": "x"}}`, wantErr: `got an object`},
		{name: "flat empty key", in: `{"": "x"}`, wantErr: "key is empty"},
		{name: "structured unknown field", in: `{"revision": 1, "kvs": [], "extra": 1}`, wantErr: `unknown field "extra"`},
		{name: "structured bad kv", in: `{"kvs": [{"key": "/a", "value": 3}]}`, wantErr: "cannot unmarshal number"},
		{name: "structured empty key", in: `{"kvs": [{"value": "x"}]}`, wantErr: "kvs[0]: key is empty"},
		{name: "structured duplicate", in: `{"kvs": [{"key": "/a"}, {"key": "/a"}]}`, wantErr: `key "/a" appears twice`},
		{name: "structured negative revision", in: `{"revision": -1, "kvs": []}`, wantErr: "revision -1 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadSnapshot(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ReadSnapshot = %+v, want error containing %q", got, tt.wantErr)
				}
				if !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadSnapshot error = %q, want ErrBadSnapshot containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadSnapshot: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ReadSnapshot = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestWriteJSONDeterministicAndRoundTrip(t *testing.T) {
	s := Snapshot{Revision: 42, KVs: []KV{
		{Key: "/p/b", Value: "<2>&", ModRevision: 40},
		{Key: "/p/a", Value: "1", Lease: 7, ModRevision: 41},
	}}
	var b1, b2 bytes.Buffer
	if err := s.WriteJSON(&b1); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteJSON(&b2); err != nil {
		t.Fatal(err)
	}
	want := `{
  "revision": 42,
  "kvs": [
    {
      "key": "/p/a",
      "value": "1",
      "lease": 7,
      "mod_revision": 41
    },
    {
      "key": "/p/b",
      "value": "<2>&",
      "mod_revision": 40
    }
  ]
}
`
	if b1.String() != want || b2.String() != want {
		t.Fatalf("WriteJSON =\n%s\nwant\n%s", b1.String(), want)
	}
	if s.KVs[0].Key != "/p/b" {
		t.Errorf("WriteJSON reordered the snapshot it was given")
	}

	path := filepath.Join(t.TempDir(), "snap.json")
	if err := os.WriteFile(path, b1.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSnapshotFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wantSnap := Snapshot{Revision: 42, KVs: []KV{s.KVs[1], s.KVs[0]}}
	if !reflect.DeepEqual(got, wantSnap) {
		t.Errorf("round trip = %+v, want %+v", got, wantSnap)
	}

	var empty bytes.Buffer
	if err := (Snapshot{}).WriteJSON(&empty); err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"revision\": 0,\n  \"kvs\": []\n}\n"; empty.String() != want {
		t.Errorf("empty snapshot JSON = %q, want %q", empty.String(), want)
	}
}

func TestReadSnapshotFileErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := ReadSnapshotFile(filepath.Join(dir, "missing.json"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: error = %v, want fs.ErrNotExist", err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"/a": true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = ReadSnapshotFile(bad)
	if !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: error = %v, want ErrBadSnapshot naming %s", err, bad)
	}
}

func TestSnapshotGetAndMap(t *testing.T) {
	s := Snapshot{KVs: []KV{{Key: "/a", Value: "1"}, {Key: "/b", Value: ""}, {Key: "/c", Value: "3"}}}
	tests := []struct {
		key   string
		want  string
		found bool
	}{
		{"/a", "1", true},
		{"/b", "", true},
		{"/c", "3", true},
		{"/", "", false},
		{"/bb", "", false},
		{"/d", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			v, ok := s.Get(tt.key)
			if v != tt.want || ok != tt.found {
				t.Errorf("Get(%q) = %q, %v; want %q, %v", tt.key, v, ok, tt.want, tt.found)
			}
		})
	}
	if got := s.Map(); !reflect.DeepEqual(got, map[string]string{"/a": "1", "/b": "", "/c": "3"}) {
		t.Errorf("Map = %v", got)
	}
}
