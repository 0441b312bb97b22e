package haproxy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

const planBase = `global
    stats socket /tmp/x.sock level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    default-server init-addr last,libc,none
listen galera
    bind 127.0.0.1:3306
    balance leastconn
    default-server port 9200 inter 2s rise 3 fall 2
    server n1 10.0.0.1:3306 check
    server n2 10.0.0.2:3306 check weight 5
`

func TestPlanChange(t *testing.T) {
	edit := func(pairs ...string) string {
		s := planBase
		for i := 0; i < len(pairs); i += 2 {
			if !strings.Contains(s, pairs[i]) {
				t.Fatalf("test setup: %q not in base", pairs[i])
			}
			s = strings.Replace(s, pairs[i], pairs[i+1], 1)
		}
		return s
	}
	const slots = `listen st
    bind 127.0.0.1:3307
    balance static-rr
    server slot1 10.0.0.1:3306 check
    server slot2 127.0.0.1:1 check disabled
`
	tests := []struct {
		name     string
		prev     string
		next     string
		reasons  []string // substrings, in order; nil: a runtime plan
		ops      []OpKind
		commands []string // exact, when set
	}{
		{
			name: "comment and blank lines only",
			prev: planBase, next: "# rendered at rev 7\n" + strings.ReplaceAll(planBase, "\n", "\n\n"),
		},
		{
			name: "server added, default-server expanded",
			prev: planBase, next: planBase + "    server n3 10.0.0.3:3306 check\n",
			ops: []OpKind{OpAdd},
			commands: []string{
				"add server galera/n3 10.0.0.3:3306 port 9200 inter 2s rise 3 fall 2 check",
				"enable health galera/n3",
				"set server galera/n3 state ready;set server galera/n3 health down",
			},
		},
		{
			name: "server added without check, disabled",
			prev: planBase, next: planBase + "    server n3 [fd00::3]:3306 disabled\n",
			ops:      []OpKind{OpAdd},
			commands: []string{"add server galera/n3 [fd00::3]:3306 port 9200 inter 2s rise 3 fall 2"},
		},
		{
			name: "server removed",
			prev: planBase, next: edit("    server n2 10.0.0.2:3306 check weight 5\n", ""),
			ops: []OpKind{OpRemove},
			commands: []string{
				"set server galera/n2 state drain",
				"# wait until galera/n2 has no sessions (at most the drain timeout, then: shutdown sessions server galera/n2)",
				"set server galera/n2 state maint",
				"del server galera/n2",
			},
		},
		{
			name: "address change",
			prev: planBase, next: edit("10.0.0.1:3306", "10.0.0.9:3306"),
			ops: []OpKind{OpUpdate},
			commands: []string{
				"set server galera/n1 state maint",
				"set server galera/n1 addr 10.0.0.9 port 3306",
				"set server galera/n1 state ready;set server galera/n1 health down",
			},
		},
		{
			name: "port change",
			prev: planBase, next: edit("10.0.0.1:3306", "10.0.0.1:3307"),
			ops: []OpKind{OpUpdate},
		},
		{
			name: "weight change",
			prev: planBase, next: edit("weight 5", "weight 50"),
			ops:      []OpKind{OpUpdate},
			commands: []string{"set server galera/n2 weight 50"},
		},
		{
			name: "disabled",
			prev: planBase, next: edit("10.0.0.1:3306 check", "10.0.0.1:3306 check disabled"),
			ops:      []OpKind{OpUpdate},
			commands: []string{"set server galera/n1 state maint"},
		},
		{
			name: "enabled again",
			prev: edit("10.0.0.1:3306 check", "10.0.0.1:3306 check disabled"), next: planBase,
			ops:      []OpKind{OpUpdate},
			commands: []string{"set server galera/n1 state ready;set server galera/n1 health down"},
		},
		{
			name: "adds before updates before removes",
			prev: planBase,
			next: edit("    server n2 10.0.0.2:3306 check weight 5\n", "    server n0 10.0.0.7:3306\n", "10.0.0.1:3306", "10.0.0.8:3306"),
			ops:  []OpKind{OpAdd, OpUpdate, OpRemove},
		},
		{
			name: "static-rr slot fill",
			prev: planBase + slots, next: planBase + strings.Replace(slots, "127.0.0.1:1 check disabled", "10.0.0.2:3306 check", 1),
			ops: []OpKind{OpFillSlot},
			commands: []string{
				"set server st/slot2 addr 10.0.0.2 port 3306",
				"set server st/slot2 state ready;set server st/slot2 health down",
			},
		},
		{
			name: "static-rr slot free",
			prev: planBase + slots, next: planBase + strings.Replace(slots, "10.0.0.1:3306 check", "127.0.0.1:1 check disabled", 1),
			ops: []OpKind{OpFreeSlot},
			commands: []string{
				"set server st/slot1 state drain",
				"# wait until st/slot1 has no sessions (at most the drain timeout, then: shutdown sessions server st/slot1)",
				"set server st/slot1 state maint",
				"set server st/slot1 addr 127.0.0.1 port 1",
			},
		},
		{
			name: "static-rr server added",
			prev: planBase + slots, next: planBase + slots + "    server slot3 10.0.0.3:3306\n",
			reasons: []string{`server "slot3" added to listen st: balance static-rr refuses dynamic servers`},
		},
		{
			name: "static-rr server removed",
			prev: planBase + slots, next: planBase + strings.Replace(slots, "    server slot2 127.0.0.1:1 check disabled\n", "", 1),
			reasons: []string{`server "slot2" removed from listen st: balance static-rr refuses dynamic servers`},
		},
		{
			name: "map-based source hash",
			prev: edit("balance leastconn", "balance source"), next: edit("balance leastconn", "balance source") + "    server n3 10.0.0.3:3306\n",
			reasons: []string{"balance source (map-based hash) refuses dynamic servers"},
		},
		{
			name: "consistent source hash is dynamic",
			prev: edit("balance leastconn", "balance source\n    hash-type consistent"),
			next: edit("balance leastconn", "balance source\n    hash-type consistent") + "    server n3 10.0.0.3:3306\n",
			ops:  []OpKind{OpAdd},
		},
		{
			name: "new section",
			prev: planBase, next: planBase + "listen extra\n    bind 127.0.0.1:4000\n    server x 10.0.0.1:1\n",
			reasons: []string{`section "listen extra" added`},
		},
		{
			name: "removed section",
			prev: planBase + "listen extra\n    bind 127.0.0.1:4000\n", next: planBase,
			reasons: []string{`section "listen extra" removed`},
		},
		{
			name: "changed balance",
			prev: planBase, next: edit("balance leastconn", "balance roundrobin"),
			reasons: []string{`"balance" changed in listen galera`},
		},
		{
			name: "changed bind",
			prev: planBase, next: edit("bind 127.0.0.1:3306", "bind 127.0.0.1:3316"),
			reasons: []string{`"bind" changed in listen galera`},
		},
		{
			name: "changed global",
			prev: planBase, next: edit("global\n", "global\n    maxconn 100\n"),
			reasons: []string{`"maxconn" added to global`},
		},
		{
			name: "changed default-server",
			prev: planBase, next: edit("rise 3", "rise 2"),
			reasons: []string{`"default-server" changed in listen galera`},
		},
		{
			name: "server options other than addr, weight, disabled",
			prev: planBase, next: edit("10.0.0.1:3306 check", "10.0.0.1:3306 check backup"),
			reasons: []string{`server "n1" options changed in listen galera`},
		},
		{
			name: "hostname address added",
			prev: planBase, next: planBase + "    server n3 db3.example.com:3306 check\n",
			reasons: []string{`server "n3" added to listen galera: address "db3.example.com:3306" is not IP:port`},
		},
		{
			name: "moved to a hostname",
			prev: planBase, next: edit("10.0.0.1:3306", "db1:3306"),
			reasons: []string{`server "n1" in listen galera: address "db1:3306" is not IP:port`},
		},
		{
			name: "server needs a keyword add server refuses",
			prev: planBase, next: planBase + "    server n3 10.0.0.3:3306 cookie n3\n",
			reasons: []string{`server "n3" added to listen galera needs "cookie", which add server refuses`},
		},
		{
			name: "unknown server keyword",
			prev: planBase, next: planBase + "    server n3 10.0.0.3:3306 frobnicate\n",
			reasons: []string{`option "frobnicate" not understood`},
		},
		{
			name: "duplicate server name",
			prev: planBase, next: planBase + "    server n1 10.0.0.3:3306\n",
			reasons: []string{`server "n1" defined twice in listen galera`},
		},
		{
			name: "sections reordered",
			prev: planBase + "backend a\nbackend b\n", next: planBase + "backend b\nbackend a\n",
			reasons: []string{"sections reordered"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := PlanChange([]byte(tt.prev), []byte(tt.next), Caps{})
			if err != nil {
				t.Fatalf("PlanChange = %v", err)
			}
			if tt.reasons != nil {
				if !p.Reload {
					t.Fatalf("plan = %+v, want a reload", p)
				}
				if len(p.Reasons) < len(tt.reasons) {
					t.Fatalf("reasons = %q, want %q", p.Reasons, tt.reasons)
				}
				for i, want := range tt.reasons {
					if !strings.Contains(p.Reasons[i], want) {
						t.Errorf("reason[%d] = %q, want it to contain %q", i, p.Reasons[i], want)
					}
				}
				if !strings.HasPrefix(p.String(), "reload:\n  ") {
					t.Errorf("String() = %q", p.String())
				}
				return
			}
			if p.Reload {
				t.Fatalf("plan is a reload: %q", p.Reasons)
			}
			var kinds []OpKind
			for _, op := range p.Ops {
				kinds = append(kinds, op.Kind)
			}
			if !slices.Equal(kinds, tt.ops) {
				t.Fatalf("ops = %v, want %v (%+v)", kinds, tt.ops, p.Ops)
			}
			if tt.commands != nil && !slices.Equal(p.Commands, tt.commands) {
				t.Errorf("commands =\n%s\nwant\n%s", strings.Join(p.Commands, "\n"), strings.Join(tt.commands, "\n"))
			}
		})
	}
}

func TestPlanFirstStart(t *testing.T) {
	p, err := PlanChange(nil, []byte(planBase), Caps{})
	if err != nil || !p.Reload || !slices.Equal(p.Reasons, []string{"no running config"}) {
		t.Fatalf("PlanChange(nil) = %+v, %v", p, err)
	}
}

func TestPlanBadInput(t *testing.T) {
	for _, line := range []string{"    server lonely\n", "    server\n", "\tserver  # only a comment\n"} {
		_, err := PlanChange([]byte(planBase), []byte(planBase+line), Caps{})
		if err == nil || !strings.Contains(err.Error(), "line 15: server line needs a name and an address") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: PlanChange = %v, want a one-line error naming line 15", line, err)
		}
	}
}

// Whitespace, CRLF line ends and comments do not make a difference: the
// same config written differently plans nothing.
func TestPlanNormalizesLines(t *testing.T) {
	messy := strings.NewReplacer("    server n1 ", "\tserver   n1\t", "balance leastconn", "balance leastconn   # comment", "\n", "\r\n").Replace(planBase)
	if messy == planBase {
		t.Fatal("replacer changed nothing")
	}
	p, err := PlanChange([]byte(planBase), []byte(messy), Caps{})
	if err != nil || p.Reload || len(p.Ops) != 0 {
		t.Fatalf("PlanChange(clean, messy) = %+v, %v; want nothing to do", p, err)
	}
	if got := normalize("\t a  b\tc \u00a0d "); got != "a b c d" {
		t.Errorf("normalize = %q", got)
	}
	if got := normalize("    server n1 10.0.0.1:3306 check"); got != "server n1 10.0.0.1:3306 check" {
		t.Errorf("normalize = %q", got)
	}
}

func TestPlanStringAndJSON(t *testing.T) {
	p, err := PlanChange([]byte(planBase), []byte(planBase+"    server n3 10.0.0.3:3306\n"), Caps{})
	if err != nil {
		t.Fatal(err)
	}
	want := "runtime: 2 commands\n  add server galera/n3 10.0.0.3:3306 port 9200 inter 2s rise 3 fall 2\n  set server galera/n3 state ready\n"
	if p.String() != want {
		t.Errorf("String() =\n%s\nwant\n%s", p.String(), want)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"reload":false`, `"kind":"add"`, `"backend":"galera"`, `"server":"n3"`, `"port":3306`, `"commands":["add server`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
	}
	r, _ := PlanChange([]byte(planBase), []byte(strings.Replace(planBase, "leastconn", "first", 1)), Caps{})
	b, _ = json.Marshal(r)
	if !strings.Contains(string(b), `"reload":true,"reasons":["\"balance\" changed in listen galera"]`) {
		t.Errorf("JSON = %s", b)
	}
}
