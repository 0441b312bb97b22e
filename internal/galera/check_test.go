package galera

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEvaluate is clustercheck's state table: every wsrep_local_state
// value with every option.
func TestEvaluate(t *testing.T) {
	comments := map[int]string{
		StateUnknown: "", 0: "Initialized", 1: "Joining", 2: "Donor/Desynced", 3: "Joined", 4: "Synced", 5: "Error",
	}
	for _, state := range []int{StateUnknown, 0, 1, 2, 3, 4, 5} {
		for _, donor := range []bool{false, true} {
			for _, readOnlyOK := range []bool{false, true} {
				for _, readOnly := range []bool{false, true} {
					st := Wsrep{State: state, Comment: comments[state], Index: 0, ReadOnly: readOnly}
					opts := CheckOptions{AvailableWhenDonor: donor, AvailableWhenReadOnly: readOnlyOK}
					wantCode, wantLine := 503, bodyNotSynced
					if state == 4 || state == 2 && donor {
						wantCode, wantLine = 200, bodySynced
						if readOnly && !readOnlyOK {
							wantCode, wantLine = 503, bodyReadOnly
						}
					}
					name := strings.NewReplacer("{", "", "}", "", " ", "_").Replace(
						comments[state] + "/" + map[bool]string{true: "donor_ok", false: "donor_no"}[donor] +
							"/" + map[bool]string{true: "ro_ok", false: "ro_no"}[readOnlyOK] +
							"/" + map[bool]string{true: "read_only", false: "read_write"}[readOnly])
					t.Run(name, func(t *testing.T) {
						v := Evaluate(st, opts)
						if v.Code != wantCode {
							t.Fatalf("code %d, want %d (body %q)", v.Code, wantCode, v.Body)
						}
						first, rest, ok := strings.Cut(v.Body, "\r\n")
						if !ok || first != wantLine {
							t.Fatalf("first line %q, want %q", first, wantLine)
						}
						if !strings.HasSuffix(rest, "\r\n") || strings.Count(rest, "\r\n") != 1 || len(rest) < 5 {
							t.Fatalf("reason line %q: want one non-empty CRLF-terminated line", rest)
						}
					})
				}
			}
		}
	}
}

func TestEvaluateReason(t *testing.T) {
	tests := []struct {
		name string
		st   Wsrep
		want string
	}{
		{"donor", Wsrep{State: 2, Comment: "Donor/Desynced"}, "wsrep_local_state 2 (Donor/Desynced)"},
		{"no comment", Wsrep{State: 3}, "wsrep_local_state 3 (Joined)"},
		{"no wsrep", Wsrep{State: StateUnknown}, "wsrep_local_state not reported"},
		{"read only", Wsrep{State: 4, Comment: "Synced", ReadOnly: true}, "read_only ON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v := Evaluate(tt.st, CheckOptions{}); !strings.Contains(v.Body, tt.want) {
				t.Fatalf("body %q does not say %q", v.Body, tt.want)
			}
		})
	}
}

// serve runs the handler on a kernel-chosen port until the test ends.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return "http://" + l.Addr().String()
}

func TestCheckHTTP(t *testing.T) {
	fake := &fakeStatus{}
	dir := t.TempDir()
	disabled := filepath.Join(dir, "disabled")
	url := serve(t, NewCheck(fake, CheckOptions{Timeout: 200 * time.Millisecond, DisabledFile: disabled}, nil))
	tests := []struct {
		name     string
		method   string
		st       Wsrep
		err      error
		block    bool
		disabled bool
		code     int
		body     string
	}{
		{"synced OPTIONS (httpchk default)", http.MethodOptions, Wsrep{State: 4, Comment: "Synced"}, nil, false, false, 200, bodySynced},
		{"synced GET", http.MethodGet, Wsrep{State: 4, Comment: "Synced"}, nil, false, false, 200, bodySynced},
		{"synced HEAD", http.MethodHead, Wsrep{State: 4, Comment: "Synced"}, nil, false, false, 200, ""},
		{"joined", http.MethodGet, Wsrep{State: 3, Comment: "Joined"}, nil, false, false, 503, bodyNotSynced},
		{"mysql down", http.MethodGet, Wsrep{}, errors.New("dial tcp 127.0.0.1:3306: connection refused"), false, false, 503, "MySQL error: dial tcp"},
		{"mysql hangs", http.MethodGet, Wsrep{}, nil, true, false, 503, "did not answer within 200ms"},
		{"disabled by hand", http.MethodGet, Wsrep{State: 4, Comment: "Synced"}, nil, false, true, 503, bodyDisabled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake.set(tt.st, tt.err)
			fake.mu.Lock()
			fake.block = tt.block
			fake.mu.Unlock()
			if tt.disabled {
				if err := os.WriteFile(disabled, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.Remove(disabled) })
			}
			req, err := http.NewRequestWithContext(context.Background(), tt.method, url+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tt.code, b)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain" {
				t.Fatalf("Content-Type %q", ct)
			}
			if tt.body == "" && len(b) != 0 || !strings.Contains(string(b), tt.body) {
				t.Fatalf("body %q, want it to contain %q", b, tt.body)
			}
		})
	}
}
