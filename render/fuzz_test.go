package render_test

import (
	"bytes"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/haconfd/haconfd/render"
	"github.com/haconfd/haconfd/render/node"
)

var (
	reName    = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)
	reHost    = regexp.MustCompile(`^[A-Za-z0-9.-]+$`)
	reSIN     = regexp.MustCompile(`^[A-Za-z0-9_.:@-]+$`)
	reState   = regexp.MustCompile(`^[A-Za-z0-9_.:/-]+$|^(Waiting (on|for) SST|Joining: [A-Za-z ]+)$`)
	reServer  = regexp.MustCompile(`^    server [A-Za-z0-9_.:-]+ \S+ check( weight \d+)?( disabled)?$`)
	fuzzSeeds = [][9]string{
		{"n1", "10.0.0.1", "3306", "db1", "galera@1", "1", "Synced", "0", "10.0.0.2:3306"},
		{"n1\nserver evil 1.2.3.4:1", "10.0.0.1\n  server evil 1.2.3.4:1", "3306\n", "db1 #x", "a b", "1\t", "Synced\n", "-1", `{"ip":"10.0.0.1\n server x"}`},
		{"id with space", "::1", "65535", "", "", "256", "Donor/Desynced", "", "[::1]:1"},
		{"é", "fe80::1%eth0", "0", "x\x00", "\x00", "257", "Joining: receiving State Transfer", "9", `{"ip":"::1","port":"1","weight":0}`},
		{"#", "host.example", "", "", "", "", "Synced disabled", "", "10.0.0.1#x"},
	}
)

func addSeeds(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8])
	}
}

func fuzzKVs(id, ip, port, host, sin, weight, state, index, value string) map[string]string {
	kvs := map[string]string{
		pfx + "/" + id + "/ip":                    ip,
		pfx + "/" + id + "/port":                  port,
		pfx + "/" + id + "/host":                  host,
		pfx + "/" + id + "/service_instance_name": sin,
		pfx + "/" + id + "/weight":                weight,
		pfx + "/" + id + "/state":                 state,
		pfx + "/" + id + "/wsrep_local_index":     index,
		pfx + "/v-" + id:                          value,
		pfx + "/" + id:                            value,
		pfx + "/good":                             "10.0.0.9:3306",
	}
	return kvs
}

// checkNode asserts the invariants every node returned by ParseNodes holds.
func checkNode(t *testing.T, n node.Node) {
	t.Helper()
	if n.ID == "" || len(n.ID) > 253 || strings.ContainsAny(n.ID, "/") ||
		strings.IndexFunc(n.ID, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		t.Errorf("bad id %q", n.ID)
	}
	if !reName.MatchString(n.Name) {
		t.Errorf("bad name %q", n.Name)
	}
	if n.Key != pfx+"/"+n.ID {
		t.Errorf("bad key %q", n.Key)
	}
	if a, err := netip.ParseAddr(n.IP); err == nil {
		if a.Zone() != "" {
			t.Errorf("ip with zone %q", n.IP)
		}
	} else if !reHost.MatchString(n.IP) {
		t.Errorf("bad ip %q", n.IP)
	}
	if n.Port < 1 || n.Port > 65535 || n.Addr != net.JoinHostPort(n.IP, strconv.Itoa(n.Port)) {
		t.Errorf("bad port/addr %d %q", n.Port, n.Addr)
	}
	if n.Host != "" && !reHost.MatchString(n.Host) && !strings.Contains(n.Host, ":") {
		t.Errorf("bad host %q", n.Host)
	}
	if n.ServiceInstanceName != "" && !reSIN.MatchString(n.ServiceInstanceName) {
		t.Errorf("bad service_instance_name %q", n.ServiceInstanceName)
	}
	if n.Weight < 0 || n.Weight > 256 || n.Index < -1 {
		t.Errorf("bad weight/index %d %d", n.Weight, n.Index)
	}
	if n.State != "" && !reState.MatchString(n.State) {
		t.Errorf("bad state %q", n.State)
	}
}

func FuzzParseNodes(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, id, ip, port, host, sin, weight, state, index, value string) {
		kvs := fuzzKVs(id, ip, port, host, sin, weight, state, index, value)
		nodes, problems := node.Parse(pfx, kvs)
		sn, sp := node.ParseSorted(pfx, sortedPairs(kvs))
		if !reflect.DeepEqual(sn, nodes) || !reflect.DeepEqual(sp, problems) {
			t.Errorf("ParseNodesSorted = %+v %+v, ParseNodes = %+v %+v", sn, sp, nodes, problems)
		}
		names := map[string]bool{}
		for i, n := range nodes {
			checkNode(t, n)
			if names[n.Name] {
				t.Errorf("duplicate name %q", n.Name)
			}
			names[n.Name] = true
			if i > 0 && nodes[i-1].ID >= n.ID {
				t.Errorf("not sorted: %q then %q", nodes[i-1].ID, n.ID)
			}
		}
		for _, p := range problems {
			if msg := p.Error(); strings.ContainsAny(msg, "\n\r\x00") {
				t.Errorf("problem not on one line: %q", msg)
			}
		}
	})
}

// FuzzRender: whatever the values, the default templates give only lines
// they give for valid values, and no fuzzed value with a control character
// reaches the output.
func FuzzRender(f *testing.F) {
	addSeeds(f)
	r, err := render.New(render.Options{Templates: defaultTemplates(f), Prefixes: []string{pfx}, Vars: defaultVars()})
	if err != nil {
		f.Fatal(err)
	}
	empty, err := r.Render(render.Input{})
	if err != nil {
		f.Fatal(err)
	}
	baseline, err := r.Render(render.Input{KVs: map[string]string{pfx + "/good": "10.0.0.9:3306"}})
	if err != nil {
		f.Fatal(err)
	}
	fixed := map[string]bool{}
	for _, l := range strings.Split(string(empty.Config), "\n") {
		fixed[l] = true
	}
	f.Fuzz(func(t *testing.T, id, ip, port, host, sin, weight, state, index, value string) {
		out, err := r.Render(render.Input{Revision: 1, KVs: fuzzKVs(id, ip, port, host, sin, weight, state, index, value)})
		if err != nil {
			t.Fatal(err)
		}
		cfg := string(out.Config)
		if !strings.HasPrefix(cfg, strings.TrimSuffix(string(empty.Config), "\n")) {
			t.Errorf("fixed part changed:\n%s", cfg)
		}
		for _, l := range strings.Split(cfg, "\n") {
			if !fixed[l] && !reServer.MatchString(l) {
				t.Errorf("unexpected line %q", l)
			}
		}
		if !strings.Contains(cfg, "    server good 10.0.0.9:3306 check\n") {
			t.Errorf("valid node lost:\n%s", cfg)
		}
		for _, v := range []string{id, ip, port, host, sin, weight, state, index, value} {
			// (a value the valid output holds anyway, like "3306\n", proves nothing)
			if strings.IndexFunc(v, unicode.IsControl) >= 0 && strings.Contains(cfg, v) && !bytes.Contains(baseline.Config, []byte(v)) {
				t.Errorf("raw value %q reached the output", v)
			}
		}
	})
}

// sortedPairs is kvs as render.Input.Sorted wants them.
func sortedPairs(kvs map[string]string) []render.KVPair {
	out := make([]render.KVPair, 0, len(kvs))
	for _, k := range slices.Sorted(maps.Keys(kvs)) {
		out = append(out, render.KVPair{Key: k, Value: kvs[k]})
	}
	return out
}
