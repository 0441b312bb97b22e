package node_test

import (
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/haconfd/haconfd/render/node"
)

const pfx = "/components/galera"

func hash8(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

func TestParseNodesValid(t *testing.T) {
	tests := []struct {
		name string
		kvs  map[string]string
		want []node.Node
	}{
		{
			name: "directory style with all fields",
			kvs: map[string]string{
				pfx + "/n1/ip": "10.0.0.1", pfx + "/n1/port": "3307", pfx + "/n1/host": "db1.example.com",
				pfx + "/n1/service_instance_name": "galera@n1.service", pfx + "/n1/weight": "100",
				pfx + "/n1/wsrep_local_state_comment": "Donor/Desynced", pfx + "/n1/wsrep_local_index": "2",
			},
			want: []node.Node{{ID: "n1", Name: "n1", Key: pfx + "/n1", IP: "10.0.0.1", Port: 3307, Addr: "10.0.0.1:3307",
				Host: "db1.example.com", ServiceInstanceName: "galera@n1.service", Weight: 100, State: "Donor/Desynced", Index: 2, Weighted: true}},
		},
		{
			name: "defaults",
			kvs:  map[string]string{pfx + "/n1": "10.0.0.1"},
			want: []node.Node{{ID: "n1", Name: "n1", Key: pfx + "/n1", IP: "10.0.0.1", Port: 3306, Addr: "10.0.0.1:3306", Weight: 1, Index: -1, Synced: true}},
		},
		{
			name: "empty optional fields count as absent",
			kvs:  map[string]string{pfx + "/n1/ip": "10.0.0.1", pfx + "/n1/port": "", pfx + "/n1/host": "", pfx + "/n1/state": ""},
			want: []node.Node{{ID: "n1", Name: "n1", Key: pfx + "/n1", IP: "10.0.0.1", Port: 3306, Addr: "10.0.0.1:3306", Weight: 1, Index: -1, Synced: true}},
		},
		{
			name: "state wins over wsrep_local_state_comment",
			kvs:  map[string]string{pfx + "/n1/ip": "10.0.0.1", pfx + "/n1/port": "3306", pfx + "/n1/state": "Synced", pfx + "/n1/wsrep_local_state_comment": "Joined"},
			want: []node.Node{{ID: "n1", Name: "n1", Key: pfx + "/n1", IP: "10.0.0.1", Port: 3306, Addr: "10.0.0.1:3306", Weight: 1, State: "Synced", Index: -1, Synced: true}},
		},
		{
			name: "value ipv6 bracketed, canonical form",
			kvs:  map[string]string{pfx + "/n1": "[2001:DB8::0:1]:3310"},
			want: []node.Node{{ID: "n1", Name: "n1", Key: pfx + "/n1", IP: "2001:db8::1", Port: 3310, Addr: "[2001:db8::1]:3310", Weight: 1, Index: -1, Synced: true}},
		},
		{
			name: "value host name",
			kvs:  map[string]string{pfx + "/n1": "db-1.example.com:3306"},
			want: []node.Node{{ID: "n1", Name: "n1", Key: pfx + "/n1", IP: "db-1.example.com", Port: 3306, Addr: "db-1.example.com:3306", Weight: 1, Index: -1, Synced: true}},
		},
		{
			name: "json with string port and index, known state with spaces",
			kvs:  map[string]string{pfx + "/n1": `{"ip":"10.0.0.1","port":"3306","index":"0","state":"Joining: receiving State Transfer","x":[1]}`},
			want: []node.Node{{ID: "n1", Name: "n1", Key: pfx + "/n1", IP: "10.0.0.1", Port: 3306, Addr: "10.0.0.1:3306", Weight: 1,
				State: "Joining: receiving State Transfer", Index: 0}},
		},
		{
			name: "directory fields win over the value",
			kvs:  map[string]string{pfx + "/n1": `{"ip":"10.0.0.9","port":1234,"weight":5}`, pfx + "/n1/ip": "10.0.0.1", pfx + "/n1/weight": "7"},
			want: []node.Node{{ID: "n1", Name: "n1", Key: pfx + "/n1", IP: "10.0.0.1", Port: 1234, Addr: "10.0.0.1:1234", Weight: 7, Index: -1, Synced: true, Weighted: true}},
		},
		{
			name: "trailing slash prefix, unrelated and deep keys ignored",
			kvs: map[string]string{pfx + "/n1/ip": "10.0.0.1", pfx + "/n1/port": "3306", pfx + "/n1/a/b": "x", pfx: "x", pfx + "/": "x",
				pfx + "x/n2/ip": "10.0.0.2", "/elsewhere/n3/ip": "10.0.0.3", pfx + "/n1/unknown": "bad\nvalue"},
			want: []node.Node{{ID: "n1", Name: "n1", Key: pfx + "/n1", IP: "10.0.0.1", Port: 3306, Addr: "10.0.0.1:3306", Weight: 1, Index: -1, Synced: true}},
		},
		{
			name: "no keys",
			kvs:  nil,
			want: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prefix := pfx
			if strings.Contains(tc.name, "trailing slash") {
				prefix += "/"
			}
			got, problems := node.Parse(prefix, tc.kvs)
			if len(problems) != 0 {
				t.Fatalf("problems: %v", problems)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseNodesInvalid(t *testing.T) {
	tests := []struct {
		name, key, value, reason string
	}{
		{"ip newline", "n1/ip", "10.0.0.1\n  server evil 1.2.3.4:1", `ip "10.0.0.1\n  server evil 1.2.3.4:1" is not an IP address or host name`},
		{"ip with zone", "n1/ip", "fe80::1%eth0", `ip "fe80::1%eth0" is not an IP address or host name`},
		{"numeric tld", "n1/ip", "1.2.3.999", `ip "1.2.3.999" is not an IP address or host name`},
		{"label dash", "n1/ip", "-db.example", `ip "-db.example" is not an IP address or host name`},
		{"unicode host", "n1/ip", "dé.example", `ip "dé.example" is not an IP address or host name`},
		{"port letters", "n1/port", "33o6", `port "33o6" is not a number 1-65535`},
		{"port huge", "n1/port", "99999999999999999999", `port "99999999999999999999" is not a number 1-65535`},
		{"port space", "n1/port", " 3306", `port " 3306" is not a number 1-65535`},
		{"weight negative", "n1/weight", "-1", `weight "-1" is not a number 0-256`},
		{"state unknown with space", "n1/state", "Not Synced", `state "Not Synced" is not a Galera state`},
		{"state comment", "n1/state", "Synced#x", `state "Synced#x" is not a Galera state`},
		{"host space", "n1/host", "db 1", `host "db 1" is not a host name`},
		{"sin bad", "n1/service_instance_name", "a\x00", `service_instance_name "a\x00" is not a token of [A-Za-z0-9_.:@-]`},
		{"value two ports", "n1", "10.0.0.1:3306:3306", `ip "10.0.0.1:3306:3306" is not an IP address or host name`},
		{"value empty port", "n1", "10.0.0.1:", `value "10.0.0.1:" has an empty port`},
		{"value unclosed bracket", "n1", "[::1:3306", `value "[::1:3306" has no closing ']'`},
		{"value junk after bracket", "n1", "[::1]x", `value "[::1]x" is not [ip]:port`},
		{"value empty", "n1", "", `missing ip`},
		{"json array", "n1", `{"ip":["10.0.0.1"]}`, `JSON field "ip" is not a string`},
		{"json port bool", "n1", `{"ip":"10.0.0.1","port":true}`, `JSON field "port" is not a number or string`},
		{"json port negative", "n1", `{"ip":"10.0.0.1","port":-1}`, `port "-1" is not a number 1-65535`},
		{"json trailing", "n1", `{"ip":"10.0.0.1"} x`, `value is not a JSON object: invalid character 'x' after top-level value`},
		{"long value is cut", "n1/ip", strings.Repeat("a", 70) + " x", `ip "` + strings.Repeat("a", 64) + `"... is not an IP address or host name`},
		{"id too long", strings.Repeat("i", 254) + "/ip", "10.0.0.1", "id is longer than 253 bytes"},
		{"id invalid utf8", "n\xff/ip", "10.0.0.1", `id "n\xff" is not valid UTF-8`},
		{"id unicode space", "n\u00a01/ip", "10.0.0.1", `id "n\u00a01" contains a control character or whitespace`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kvs := map[string]string{pfx + "/" + tc.key: tc.value, pfx + "/ok": "10.0.0.2"}
			if strings.HasPrefix(tc.key, "n1/") && !strings.HasSuffix(tc.key, "/ip") {
				kvs[pfx+"/n1/ip"] = "10.0.0.1"
			}
			if strings.HasSuffix(tc.key, "/ip") || strings.HasPrefix(tc.key, "n1/") && !strings.HasSuffix(tc.key, "/port") {
				kvs[pfx+"/"+strings.TrimSuffix(strings.TrimSuffix(tc.key, "/ip"), "/"+strings.TrimPrefix(tc.key, "n1/"))+"/port"] = "3306"
			}
			nodes, problems := node.Parse(pfx, kvs)
			if len(nodes) != 1 || nodes[0].ID != "ok" {
				t.Errorf("nodes = %+v, want only ok", nodes)
			}
			if len(problems) != 1 {
				t.Fatalf("problems = %v, want 1", problems)
			}
			if problems[0].Reason != tc.reason {
				t.Errorf("reason = %s\nwant     %s", problems[0].Reason, tc.reason)
			}
			if msg := problems[0].Error(); strings.ContainsAny(msg, "\n\r\x00") || !strings.HasPrefix(msg, "node ") {
				t.Errorf("Error() = %q, want one line starting with \"node \"", msg)
			}
		})
	}
}

// A directory-style node is served once its registration is complete
// (ip and port keys): the fleet unit writes one key at a time, and a node
// seen between them must never be served on a guessed port.
func TestIncompleteRegistration(t *testing.T) {
	tests := []struct {
		name       string
		kvs        map[string]string
		incomplete bool
	}{
		{"ip only", map[string]string{pfx + "/n1/ip": "10.0.0.1"}, true},
		{"ip and host, no port yet", map[string]string{pfx + "/n1/ip": "10.0.0.1", pfx + "/n1/host": "db1"}, true},
		{"ip and port", map[string]string{pfx + "/n1/ip": "10.0.0.1", pfx + "/n1/port": "3307"}, false},
		{"port key empty: written, default port", map[string]string{pfx + "/n1/ip": "10.0.0.1", pfx + "/n1/port": ""}, false},
		{"port from the value", map[string]string{pfx + "/n1": "10.0.0.9:3307", pfx + "/n1/ip": "10.0.0.1"}, false},
		{"value without port: one write, default port", map[string]string{pfx + "/n1": "10.0.0.1"}, false},
		{"json without port: one write, default port", map[string]string{pfx + "/n1": `{"ip":"10.0.0.1"}`}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nodes, problems := node.Parse(pfx, tc.kvs)
			if tc.incomplete {
				if len(nodes) != 0 || len(problems) != 1 || !problems[0].Incomplete {
					t.Fatalf("nodes %+v problems %+v, want the node left out as incomplete", nodes, problems)
				}
				return
			}
			if len(nodes) != 1 || len(problems) != 0 {
				t.Fatalf("nodes %+v problems %+v, want the node", nodes, problems)
			}
		})
	}
	// A bad value is reported as such, not as incomplete.
	_, problems := node.Parse(pfx, map[string]string{pfx + "/n1/ip": "10.0.0.1 x"})
	if len(problems) != 1 || problems[0].Incomplete {
		t.Fatalf("problems %+v, want one that is not incomplete", problems)
	}
}

func TestProblemError(t *testing.T) {
	p := node.Problem{Key: pfx + "/n1", Reason: `ip "x y" is not an IP address or host name`}
	if got, want := p.Error(), `node /components/galera/n1: ip "x y" is not an IP address or host name`; got != want {
		t.Errorf("got %q want %q", got, want)
	}
	p = node.Problem{Key: pfx + "/n\n1", Reason: "bad\nreason"}
	if got, want := p.Error(), `node "/components/galera/n\n1": bad\nreason`; got != want {
		t.Errorf("got %q want %q", got, want)
	}
}

func TestNodeNames(t *testing.T) {
	crafted := "db_1-" + hash8("db@1") // an id equal to the hashed name of "db@1"
	tests := []struct {
		name string
		ids  []string
		want map[string]string // id → name
		drop int
	}{
		{"unchanged", []string{"n1", "a.b:c-d_e"}, map[string]string{"n1": "n1", "a.b:c-d_e": "a.b:c-d_e"}, 0},
		{"changed gets hash", []string{"db@1", "é"}, map[string]string{"db@1": "db_1-" + hash8("db@1"), "é": "_-" + hash8("é")}, 0},
		{"sanitised next to its twin", []string{"db@1", "db_1"}, map[string]string{"db@1": "db_1-" + hash8("db@1"), "db_1": "db_1"}, 0},
		{"crafted collision: plain id hashed too", []string{"db@1", crafted},
			map[string]string{"db@1": "db_1-" + hash8("db@1"), crafted: crafted + "-" + hash8(crafted)}, 0},
		// A second crafted id equal to the first one's hashed name: its name
		// still collides, so it is dropped with a Problem (never two servers
		// of one name: HAProxy 3.3 refuses duplicates).
		{"crafted chain: the colliding node is dropped", []string{"db@1", crafted, crafted + "-" + hash8(crafted)},
			map[string]string{"db@1": "db_1-" + hash8("db@1"), crafted: crafted + "-" + hash8(crafted)}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kvs := map[string]string{}
			for i, id := range tc.ids {
				kvs[pfx+"/"+id] = "10.0.0." + string(rune('1'+i))
			}
			nodes, problems := node.Parse(pfx, kvs)
			if len(problems) != tc.drop {
				t.Fatalf("problems %v", problems)
			}
			seen := map[string]bool{}
			for _, n := range nodes {
				if n.Name != tc.want[n.ID] {
					t.Errorf("id %q: name %q, want %q", n.ID, n.Name, tc.want[n.ID])
				}
				if seen[n.Name] {
					t.Errorf("duplicate name %q", n.Name)
				}
				seen[n.Name] = true
			}
		})
	}
}

func TestSyncedAndWeighted(t *testing.T) {
	for state, want := range map[string]bool{"": true, "Synced": true, "Donor/Desynced": false, "Joined": false, "synced-x": false} {
		kvs := map[string]string{pfx + "/n1/ip": "10.0.0.1", pfx + "/n1/port": "3306", pfx + "/n1/state": state}
		nodes, problems := node.Parse(pfx, kvs)
		if len(nodes) != 1 {
			t.Fatalf("state %q: nodes %v, problems %v", state, nodes, problems)
		}
		if nodes[0].Synced != want {
			t.Errorf("state %q: Synced = %v, want %v", state, nodes[0].Synced, want)
		}
	}
	for weight, want := range map[string]bool{"": false, "1": false, "0": true, "2": true, "256": true} {
		kvs := map[string]string{pfx + "/n1/ip": "10.0.0.1", pfx + "/n1/port": "3306", pfx + "/n1/weight": weight}
		nodes, _ := node.Parse(pfx, kvs)
		if len(nodes) != 1 || nodes[0].Weighted != want {
			t.Errorf("weight %q: nodes %+v, want Weighted %v", weight, nodes, want)
		}
	}
}

func TestParseNodesSorted(t *testing.T) {
	kvs := map[string]string{}
	for _, id := range []string{"z", "a", "M", "n10", "n9", "é"} {
		kvs[pfx+"/"+id] = "10.0.0.1"
	}
	nodes, _ := node.Parse(pfx, kvs)
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	if want := []string{"M", "a", "n10", "n9", "z", "é"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("ids %v, want %v", ids, want)
	}
}

// Keys of one node need not follow each other in key order ("n1-x" sorts
// between "n1" and "n1/ip"): ParseNodesSorted still gathers them, and
// reads nothing outside the prefix.
func TestParseNodesSortedInterleaved(t *testing.T) {
	kvs := map[string]string{
		pfx + "/n1": "10.0.0.1", pfx + "/n1-x/ip": "10.0.0.2", pfx + "/n1.y": "10.0.0.3",
		pfx + "/n1/port": "3307", pfx + "/n1/weight": "5", pfx + "/n1-x/port": "3308", pfx + "/n1!": "bad value",
		pfx + "-other/n9": "10.0.0.9", "/components/a/n8": "10.0.0.8", pfx: "x",
	}
	want, wantProblems := node.Parse(pfx, kvs)
	got, gotProblems := node.ParseSorted(pfx, sortedPairs(kvs))
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gotProblems, wantProblems) {
		t.Fatalf("ParseNodesSorted = %+v %+v\nParseNodes = %+v %+v", got, gotProblems, want, wantProblems)
	}
	if len(got) != 3 || got[0].Addr != "10.0.0.1:3307" || got[0].Weight != 5 || got[1].Addr != "10.0.0.2:3308" {
		t.Errorf("nodes = %+v", got)
	}
}

// sortedPairs is kvs as etcd returns them: sorted by key.
func sortedPairs(kvs map[string]string) []node.KV {
	out := make([]node.KV, 0, len(kvs))
	for k, v := range kvs {
		out = append(out, node.KV{Key: k, Value: v})
	}
	slices.SortFunc(out, func(a, b node.KV) int { return strings.Compare(a.Key, b.Key) })
	return out
}
