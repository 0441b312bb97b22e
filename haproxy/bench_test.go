package haproxy

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkPlan10k plans the addition of one server to a section of
// 10,000 (the render + plan row of make bench, plan part).
func BenchmarkPlan10k(b *testing.B) {
	cfg := func(n int) []byte {
		var sb strings.Builder
		sb.WriteString("global\n    stats socket /tmp/a.sock mode 660 level admin expose-fd listeners\n\ndefaults\n    mode tcp\n    timeout connect 5s\n\nlisten galera\n    bind 127.0.0.1:3306\n    mode tcp\n    balance leastconn\n    default-server inter 2s rise 3 fall 2\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&sb, "    server node%05d 10.%d.%d.%d:3306 check\n", i, i/65536, i/256%256, i%256)
		}
		return []byte(sb.String())
	}
	live, next := cfg(9999), cfg(10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, err := PlanChange(live, next, Caps{})
		if err != nil || p.Reload {
			b.Fatalf("plan: %v %+v", err, p.Reasons)
		}
	}
}
