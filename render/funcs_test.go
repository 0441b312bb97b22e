package render_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/haconfd/haconfd/render"
)

// execOne renders text as the only template over kvs and returns the output.
func execOne(t *testing.T, opts render.Options, kvs map[string]string, text string) (string, error) {
	t.Helper()
	opts.Templates = []render.Template{{Name: "t.tmpl", Text: text}}
	if opts.Prefixes == nil {
		opts.Prefixes = []string{pfx}
	}
	r, err := render.New(opts)
	if err != nil {
		return "", err
	}
	out, err := r.Render(render.Input{Revision: 5, KVs: kvs})
	return string(out.Config), err
}

type fakeLookup struct{ fail bool }

func (f fakeLookup) LookupIP(name string) ([]net.IP, error) {
	if f.fail {
		return nil, errors.New("no such host")
	}
	return []net.IP{net.ParseIP("2001:db8::1"), net.ParseIP("10.0.0.2"), net.ParseIP("10.0.0.1")}, nil
}

func (f fakeLookup) LookupSRV(service, proto, name string) ([]*net.SRV, error) {
	if f.fail {
		return nil, errors.New("no such host")
	}
	return []*net.SRV{{Target: "b.", Port: 2}, {Target: "a.", Port: 1}}, nil
}

// pfx is the prefix the tests register nodes under.
const pfx = "/components/galera"

func TestFuncs(t *testing.T) {
	kvs := map[string]string{
		"/a/b":                       "1",
		"/a/c/d":                     "2",
		"/a/c/e":                     "3",
		"/a/f/g/h":                   "4",
		"/ab/x":                      "5",
		"/u/ключ":                    "значение",
		"/j":                         `{"name":"x","n":1,"nested":{"k":"v"}}`,
		"/arr":                       `[1,"two"]`,
		"/empty":                     "",
		"/cfg/b":                     "zz",
		"/cfg/aaa":                   "y",
		"/cfg/cc":                    "a",
		"/components/galera/n1/ip":   "10.0.0.1",
		"/components/galera/n1/port": "3306",
		"/components/galera/n2":      "10.0.0.2",
	}
	opts := render.Options{
		Getenv:     func(k string) string { return map[string]string{"SET": "v", "EMPTY": ""}[k] },
		Now:        func() time.Time { return time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC) },
		Lookup:     fakeLookup{},
		FileExists: func(p string) bool { return p == "/etc/there" },
	}
	tests := []struct{ name, text, want, err string }{
		{"get", `{{ $kv := get "/a/b" }}{{ $kv.Key }}={{ $kv.Value }}`, "/a/b=1", ""},
		{"get missing", `{{ get "/nope" }}`, "", "key does not exist: /nope"},
		{"getv", `{{ getv "/a/c/d" }}`, "2", ""},
		{"getv empty value is not missing", `[{{ getv "/empty" "dflt" }}]`, "[]", ""},
		{"getv default", `{{ getv "/nope" "dflt" }}`, "dflt", ""},
		{"getv missing", `{{ getv "/nope" }}`, "", "key does not exist: /nope"},
		{"getv unicode", `{{ getv "/u/ключ" }}`, "значение", ""},
		{"getv empty default", `[{{ getv "/nope" "" }}]`, "[]", ""},
		{"getv extra defaults ignored", `{{ getv "/nope" "d1" "d2" }}`, "d1", ""},
		{"getv needs exact key", `{{ getv "/a/" "dflt" }}`, "dflt", ""},
		{"gets sorted by key", `{{ range gets "/a/c/*" }}{{ .Key }}={{ .Value }};{{ end }}`, "/a/c/d=2;/a/c/e=3;", ""},
		{"gets star stops at slash", `{{ len (gets "/a/*") }}`, "1", ""},
		{"gets no match", `{{ len (gets "/zzz/*") }}`, "0", ""},
		{"gets bad pattern", `{{ gets "/a/[" }}`, "", "syntax error in pattern"},
		{"gets unicode", `{{ range gets "/u/*" }}{{ .Key }}={{ .Value }}{{ end }}`, "/u/ключ=значение", ""},
		{"gets question mark", `{{ range gets "/a/?" }}{{ .Key }}{{ end }}`, "/a/b", ""},
		{"getvs no match is empty", `{{ len (getvs "/zzz/*") }}`, "0", ""},
		{"getvs bad pattern", `{{ getvs "/a/[" }}`, "", "syntax error in pattern"},
		{"getvs sorted by value", `{{ join (getvs "/cfg/*") "," }}`, "a,y,zz", ""},
		{"ls", `{{ join (ls "/a") "," }}`, "b,c,f", ""},
		{"ls trailing slash", `{{ join (ls "/a/") "," }}`, "b,c,f", ""},
		{"ls not a prefix of /ab", `{{ join (ls "/a/c") "," }}`, "d,e", ""},
		{"ls key itself", `{{ join (ls "/a/b") "," }}`, "b", ""},
		{"ls missing", `{{ len (ls "/nope") }}`, "0", ""},
		// confd memkv quirk, kept for compatibility: "/" splits into ["", ""], so
		// ls "/" lists only keys directly under the root.
		{"ls root", `{{ join (ls "/") "," }}`, "arr,empty,j", ""},
		{"lsdir", `{{ join (lsdir "/a") "," }}`, "c,f", ""},
		{"lsdir ids", `{{ join (lsdir "/components/galera/") "," }}`, "n1", ""},
		{"lsdir empty", `{{ len (lsdir "/a/b") }}`, "0", ""},
		{"lsdir missing", `{{ len (lsdir "/nope/") }}`, "0", ""},
		{"lsdir deep", `{{ join (lsdir "/a/f") "," }}`, "g", ""},
		// confd memkv quirk: lsdir "/" finds nothing.
		{"lsdir root is empty, ls unicode", `{{ join (lsdir "/") "," }}|{{ join (ls "/u") "," }}`, "|ключ", ""},
		{"ls dir with trailing slash of a key", `{{ len (ls "/a/b/") }}`, "0", ""},
		{"exists", `{{ exists "/a/b" }} {{ exists "/a" }} {{ exists "/nope" }}`, "true false false", ""},
		{"base dir", `{{ base "/a/c/d" }} {{ dir "/a/c/d" }}`, "d /a/c", ""},
		{"split join", `{{ join (split "a,b,,c" ",") "|" }}`, "a|b||c", ""},
		{"split empty", `{{ len (split "" ",") }}`, "1", ""},
		{"split empty sep", `{{ join (split "äb" "") "|" }}`, "ä|b", ""},
		{"join empty", `[{{ join (ls "/nope") "," }}]`, "[]", ""},
		{"json", `{{ $j := json (getv "/j") }}{{ $j.name }} {{ $j.n }} {{ $j.nested.k }}`, "x 1 v", ""},
		{"json bad", `{{ json "[1]" }}`, "", "cannot unmarshal array"},
		{"json invalid", `{{ json "{" }}`, "", "unexpected end of JSON input"},
		{"json missing field", `{{ $j := json (getv "/j") }}{{ $j.nope }}`, "<no value>", ""},
		{"jsonArray bad", `{{ jsonArray "{}" }}`, "", "cannot unmarshal object"},
		{"jsonArray", `{{ range jsonArray (getv "/arr") }}{{ . }};{{ end }}`, "1;two;", ""},
		{"case", `{{ toUpper "é-a" }} {{ toLower "ÉA" }}`, "É-A éa", ""},
		{"contains replace trimSuffix", `{{ contains "abc" "b" }} {{ replace "aaa" "a" "b" 2 }} {{ trimSuffix "a.cfg" ".cfg" }}`, "true bba a", ""},
		{"getenv", `{{ getenv "SET" }}|{{ getenv "UNSET" }}|{{ getenv "UNSET" "d" }}|{{ getenv "EMPTY" "d" }}`, "v||d|d", ""},
		{"datetime", `{{ (datetime).Year }}`, "2020", ""},
		{"atoi", `{{ atoi "42" }}`, "42", ""},
		{"atoi bad", `{{ atoi "x" }}`, "", `strconv.Atoi: parsing "x": invalid syntax`},
		{"atoi negative", `{{ atoi "-7" }}`, "-7", ""},
		{"atoi space", `{{ atoi " 7" }}`, "", "invalid syntax"},
		{"math negative", `{{ div -7 2 }} {{ mod -7 2 }}`, "-3 -1", ""},
		{"seq single", `{{ range seq 3 3 }}{{ . }}{{ end }}`, "3", ""},
		{"seq with atoi", `{{ range seq 1 (atoi "2") }}{{ . }}{{ end }}`, "12", ""},
		{"datetime format", `{{ datetime.Format "2006-01-02T15:04:05Z07:00" }}`, "2020-05-06T07:08:09Z", ""},
		{"base dir edge", `{{ base "" }} {{ base "/" }} {{ dir "x" }} {{ dir "/a/" }} {{ base "/a/b/" }}`, ". / . /a b", ""},
		{"toUpper unicode (strings.ToUpper, no special casing)", `{{ toUpper "straße é" }}`, "STRAßE É", ""},
		{"replace all", `{{ replace "a-b-c" "-" "_" -1 }}`, "a_b_c", ""},
		{"trimSuffix absent", `{{ trimSuffix "abc" "x" }}`, "abc", ""},
		{"contains empty", `{{ contains "abc" "" }}`, "true", ""},
		{"parseBool forms", `{{ parseBool "T" }} {{ parseBool "0" }} {{ parseBool "TRUE" }}`, "true false true", ""},
		{"map index", `{{ $m := map "k" "v" }}{{ index $m "k" }}[{{ index $m "x" }}]`, "v[<no value>]", ""},
		{"map empty", `{{ len (map) }}`, "0", ""},
		{"base64 empty", `[{{ base64Encode "" }}][{{ base64Decode "" }}]`, "[][]", ""},
		{"base64 no padding is an error", `{{ base64Decode "YQ" }}`, "", "illegal base64"},
		{"getenv unset and set unicode default", `{{ getenv "UNSET" "ü" }}`, "ü", ""},
		{"fileExists", `{{ fileExists "/etc/there" }} {{ fileExists "/nope" }}`, "true false", ""},
		{"math", `{{ add 2 3 }} {{ sub 2 3 }} {{ mul 2 3 }} {{ div 7 2 }} {{ mod 7 2 }}`, "5 -1 6 3 1", ""},
		{"div zero", `{{ div 1 0 }}`, "", "integer divide by zero"},
		{"mod zero", `{{ mod 1 0 }}`, "", "integer divide by zero"},
		{"seq", `{{ range seq 2 4 }}{{ . }}{{ end }}|{{ len (seq 3 1) }}`, "234|0", ""},
		{"map", `{{ $m := map "a" 1 "b" "x" }}{{ $m.a }}{{ $m.b }}`, "1x", ""},
		{"map odd", `{{ map "a" }}`, "", "error calling map: invalid map call"},
		{"map key type", `{{ map 1 2 }}`, "", "error calling map: map keys must be strings"},
		{"parseBool", `{{ parseBool "1" }} {{ parseBool "false" }}`, "true false", ""},
		{"parseBool bad", `{{ parseBool "yes" }}`, "", "invalid syntax"},
		{"reverse strings", `{{ join (reverse (ls "/a")) "," }}`, "f,c,b", ""},
		// confd quirk: gets returns memkv.KVPairs, which confd's reverse does not reverse.
		{"reverse gets is a no-op", `{{ range reverse (gets "/a/c/*") }}{{ .Value }}{{ end }}`, "23", ""},
		{"reverse kv", `{{ range reverse (sortKVByLength (gets "/a/c/*")) }}{{ .Value }}{{ end }}`, "32", ""},
		{"reverse empty", `{{ len (reverse (ls "/nope")) }}`, "0", ""},
		{"reverse other types unchanged", `{{ reverse "abc" }} {{ reverse 12 }}`, "abc 12", ""},
		{"reverse unicode", `{{ join (reverse (split "я,ж,a" ",")) "," }}`, "a,ж,я", ""},
		{"reverse nodes", `{{ range reverse .Nodes }}{{ .ID }}{{ end }}`, "n2n1", ""},
		{"sortByLength short list keeps order of equals", `{{ join (sortByLength (split "ccc,b,aa,a,bb" ",")) "," }}`, "b,a,aa,bb,ccc", ""},
		{"sortByLength counts bytes", `{{ join (sortByLength (split "ёё,abc" ",")) "," }}`, "abc,ёё", ""},
		{"sortByLength empty", `{{ len (sortByLength (ls "/nope")) }}`, "0", ""},
		{"sortKVByLength", `{{ range sortKVByLength (gets "/cfg/*") }}{{ .Key }};{{ end }}`, "/cfg/b;/cfg/cc;/cfg/aaa;", ""},
		{"base64", `{{ base64Encode "héllo" }} {{ base64Decode "aMOpbGxv" }}`, "aMOpbGxv héllo", ""},
		{"base64 bad", `{{ base64Decode "!!" }}`, "", "illegal base64"},
		{"lookupIP", `{{ join (lookupIP "db") "," }}`, "10.0.0.1,10.0.0.2,2001:db8::1", ""},
		{"lookupIPV4", `{{ join (lookupIPV4 "db") "," }}`, "10.0.0.1,10.0.0.2", ""},
		{"lookupIPV6", `{{ join (lookupIPV6 "db") "," }}`, "2001:db8::1", ""},
		{"lookupSRV sorted", `{{ range lookupSRV "mysql" "tcp" "db" }}{{ .Target }}{{ .Port }} {{ end }}`, "a.1 b.2 ", ""},
		{"data", `{{ .Prefix }} {{ .Revision }} {{ len .Nodes }} {{ (index .Services 0).Name }} [{{ .Vars.nope }}]`, "/components/galera 5 2 galera []", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := execOne(t, opts, kvs, tc.text)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLookupDisabledAndFailing(t *testing.T) {
	_, err := execOne(t, render.Options{}, nil, `{{ lookupIP "db" }}`)
	if err == nil || !strings.Contains(err.Error(), "lookupIP disabled") || !errors.Is(err, render.ErrLookupDisabled) {
		t.Errorf("nil Lookup: err = %v", err)
	}
	_, err = execOne(t, render.Options{}, nil, `{{ fileExists "/" }}`)
	if err == nil || !strings.Contains(err.Error(), "fileExists disabled") || !errors.Is(err, render.ErrFuncDisabled) {
		t.Errorf("nil FileExists: err = %v", err)
	}
	_, err = execOne(t, render.Options{}, nil, `{{ lookupSRV "a" "b" "c" }}`)
	if err == nil || !strings.Contains(err.Error(), "lookupSRV disabled") {
		t.Errorf("nil Lookup: err = %v", err)
	}
	got, err := execOne(t, render.Options{Lookup: fakeLookup{fail: true}}, nil, `{{ len (lookupIP "db") }}{{ len (lookupSRV "a" "b" "c") }}`)
	if err != nil || got != "00" {
		t.Errorf("failing lookup: %q, %v; want empty lists as in confd", got, err)
	}
}

func TestGetenvNil(t *testing.T) {
	got, err := execOne(t, render.Options{}, nil, `[{{ getenv "PATH" }}]`)
	if err != nil || got != "[]" {
		t.Errorf("got %q %v, want [] (nil Getenv reads nothing)", got, err)
	}
}
