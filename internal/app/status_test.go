package app

import (
	"strings"
	"testing"
	"time"
)

// /readyz: ready when etcd is connected and the newest revision is
// entirely live; servers held by a guard are live by choice.
func TestStatusReady(t *testing.T) {
	since := time.Unix(1_700_000_000, 0)
	cases := []struct {
		name  string
		s     Status
		ready bool
		want  string
	}{
		{"no snapshot yet", Status{}, false, "no snapshot from etcd yet"},
		{"etcd unreachable", Status{Revision: 5, Applied: 5, EtcdSince: since, EtcdError: "dial refused"}, false, "etcd unreachable since"},
		{"newest revision not live", Status{Revision: 6, Applied: 5, EtcdConnected: true, EtcdSince: since}, false, "revision 6 seen, 5 live"},
		{"nothing live", Status{EtcdConnected: true, EtcdSince: since}, false, "not ready"},
		{"first start held", Status{Revision: 3, EtcdConnected: true, EtcdSince: since, Held: "section galera would have 0 servers"}, false, "held: section galera"},
		{"live", Status{Revision: 5, Applied: 5, EtcdConnected: true, EtcdSince: since}, true, "ready: revision 5 live"},
		{"live with held servers", Status{Revision: 5, Applied: 5, EtcdConnected: true, EtcdSince: since,
			HeldServers: []HeldServer{{Section: "galera", Server: "db3", Guard: GuardMaxRemove}}}, true, "1 server(s) held"},
	}
	for _, tc := range cases {
		ready, why := tc.s.Ready()
		if ready != tc.ready || !strings.Contains(why, tc.want) {
			t.Errorf("%s: Ready() = %v, %q; want %v, %q", tc.name, ready, why, tc.ready, tc.want)
		}
	}
}
