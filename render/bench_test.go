package render

import (
	"fmt"
	"testing"

	"github.com/haconfd/haconfd/templates"
)

func BenchmarkRender10k(b *testing.B) {
	base, _ := templates.File(templates.Base)
	gal, _ := templates.File(templates.Galera)
	r, err := New(Options{Templates: []Template{{Name: "b", Text: base}, {Name: "g", Text: gal}}, Prefixes: []string{"/components/galera"},
		Vars: map[string]string{"bind": ":3306", "runtime_socket": "/tmp/a.sock", "check_port": "9200"}})
	if err != nil {
		b.Fatal(err)
	}
	kvs := map[string]string{}
	for i := 0; i < 10000; i++ {
		kvs[fmt.Sprintf("/components/galera/node%05d", i)] = fmt.Sprintf("10.%d.%d.%d:3306", i/65536, i/256%256, i%256)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := r.Render(Input{Revision: 1, KVs: kvs}); err != nil {
			b.Fatal(err)
		}
	}
}
