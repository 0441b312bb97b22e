package render

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/haconfd/haconfd/templates"
)

// BenchmarkRender10k renders the default templates for 10,000 nodes, as
// "ip:port" values and as the five directory keys per node that
// `haconfd register --mysql-dsn` writes (the render + plan row of make
// bench, render part).
func BenchmarkRender10k(b *testing.B) {
	base, _ := templates.File(templates.Base)
	gal, _ := templates.File(templates.Galera)
	r, err := New(Options{Templates: []Template{{Name: "b", Text: base}, {Name: "g", Text: gal}}, Prefixes: []string{"/components/galera"},
		Vars: map[string]string{"bind": ":3306", "runtime_socket": "/tmp/a.sock", "check_port": "9200"}})
	if err != nil {
		b.Fatal(err)
	}
	values, dirs := map[string]string{}, map[string]string{}
	for i := 0; i < 10000; i++ {
		node := fmt.Sprintf("/components/galera/node%05d", i)
		ip := fmt.Sprintf("10.%d.%d.%d", i/65536, i/256%256, i%256)
		values[node] = ip + ":3306"
		dirs[node+"/ip"], dirs[node+"/port"], dirs[node+"/host"] = ip, "3306", fmt.Sprintf("db%05d.example.com", i)
		dirs[node+"/wsrep_local_state_comment"], dirs[node+"/wsrep_local_index"] = "Synced", fmt.Sprint(i)
	}
	for name, kvs := range map[string]map[string]string{"values": values, "dirs": dirs} {
		sorted := make([]KVPair, 0, len(kvs))
		for _, k := range slices.Sorted(maps.Keys(kvs)) {
			sorted = append(sorted, KVPair{Key: k, Value: kvs[k]})
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				out, err := r.Render(Input{Revision: 1, KVs: kvs, Sorted: sorted})
				if err != nil || len(out.Services[0].Nodes) != 10000 {
					b.Fatal(err, out.Problems)
				}
			}
		})
	}
}
