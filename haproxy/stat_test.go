package haproxy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// A reply of HAProxy 2.6.12 (servers a: check failing, b: no check, c:
// disabled), shortened to the first columns and the ones read, plus a
// quoted field with a comma.
const statReply = `# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,weight,lastchg,check_status,last_chk,addr,
db,FRONTEND,,,0,0,4096,0,OPEN,,,,,,
db,a,0,0,2,5,,17,DOWN,1,12,L4CON,Connection refused,127.0.0.1:1,
db,b,0,0,0,0,,0,no check,1,3,,,127.0.0.1:2,
db,c,0,0,0,0,,0,MAINT,1,,,"refused, twice",[::1]:3,
db,BACKEND,0,0,2,5,410,17,UP,2,1,,,,
`

func TestParseStat(t *testing.T) {
	rows, err := ParseStat(statReply)
	if err != nil {
		t.Fatal(err)
	}
	want := []StatRow{
		{Proxy: "db", Server: "a", Status: "DOWN", Sessions: 2, MaxSessions: 5, Total: 17, Weight: 1, CheckStatus: "L4CON", CheckDesc: "Connection refused", LastChange: 12, Addr: "127.0.0.1:1"},
		{Proxy: "db", Server: "b", Status: "no check", Weight: 1, LastChange: 3, Addr: "127.0.0.1:2"},
		{Proxy: "db", Server: "c", Status: "MAINT", Weight: 1, CheckDesc: "refused, twice", LastChange: -1, Addr: "[::1]:3"},
	}
	if !slices.Equal(rows, want) {
		t.Fatalf("ParseStat =\n%+v\nwant\n%+v", rows, want)
	}
}

func TestParseStatBad(t *testing.T) {
	tests := []struct{ name, reply, want string }{
		{"empty", "", "empty reply"},
		{"no header", "db,a,0\n", "no header line"},
		{"no scur column", "# pxname,svname,status\ndb,a,UP\n", "no scur column"},
		{"scur not a number", "# pxname,svname,status,scur\ndb,a,UP,x\n", `scur "x" is not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseStat(tt.reply)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseStat(%q) = %v, want an error with %q", tt.reply, err, tt.want)
			}
		})
	}
}

// Stat against a running HAProxy names the same servers as "show servers
// state", with the check status, and says MAINT for a server put in
// maintenance on the socket.
func TestRuntimeStat(t *testing.T) {
	s := newRuntimeSite(t, nil)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	front := freePort(t)
	mustApply(t, s, s.rtConfig(front, "roundrobin", rtServer{"a", a.port, "check"}, rtServer{"b", b.port, ""}), ActionStart)
	rt, err := NewRuntime(s.sock, nil, haproxyVersion.Caps())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Exec("set server db/b state maint"); err != nil {
		t.Fatal(err)
	}
	var rows []StatRow
	deadline := time.Now().Add(10 * time.Second)
	for {
		if rows, err = rt.Stat(); err != nil {
			t.Fatal(err)
		}
		if len(rows) == 2 && rows[0].CheckStatus == "L4OK" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	live, err := rt.ServersState()
	if err != nil {
		t.Fatal(err)
	}
	var names, liveNames []string
	for _, r := range rows {
		names = append(names, r.Proxy+"/"+r.Server)
	}
	for _, s := range live.Sorted() {
		liveNames = append(liveNames, s.Backend+"/"+s.Name)
	}
	if !slices.Equal(names, liveNames) {
		t.Fatalf("show stat names %v, show servers state names %v", names, liveNames)
	}
	if rows[0].Status != "UP" || rows[0].CheckStatus != "L4OK" || rows[0].Addr != fmt.Sprintf("127.0.0.1:%d", a.port) {
		t.Errorf("a = %+v, want UP, L4OK, its address", rows[0])
	}
	if rows[1].Status != "MAINT" {
		t.Errorf("b = %+v, want MAINT", rows[1])
	}
}
