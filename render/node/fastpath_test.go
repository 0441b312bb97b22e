package node

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// The ParseNodes fast paths against the plain definitions they replace.

func refIsHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if !isAlnum(l[i]) && l[i] != '-' {
				return false
			}
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

func refIDOK(id string) bool {
	if id == "" || len(id) > maxIDLen || !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == '/' || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func refSafeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < utf8.RuneSelf && (isAlnum(byte(r)) || strings.IndexByte("_.:-", byte(r)) >= 0) {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

var fastPathInputs = []string{
	"", "a", "db1", "db-1.example.com", "a..b", ".a", "a.", "-a", "a-", "a.-b", "1.2.3.999", "10.0.0.1", "host1.2x",
	"under_score", "a b", "a\tb", "a\nb", "a\x7fb", "a/b", "é", "ü.example", "a\u00a0b", "a\u2028b", "\xff", "x:y@z",
	strings.Repeat("a", 63) + ".b", strings.Repeat("a", 64) + ".b", strings.Repeat("a.", 126) + "a", strings.Repeat("a", 254),
}

func FuzzFastPaths(f *testing.F) {
	for _, s := range fastPathInputs {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := isHostName(s), refIsHostName(s); got != want {
			t.Errorf("isHostName(%q) = %v, want %v", s, got, want)
		}
		if got, want := validateID(s) == nil, refIDOK(s); got != want {
			t.Errorf("validateID(%q) ok = %v, want %v", s, got, want)
		}
		if got, want := safeName(s), refSafeName(s); got != want {
			t.Errorf("safeName(%q) = %q, want %q", s, got, want)
		}
		// validateHostOrIP returns an IPv4 literal as given: canonical.
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() && a.String() != s {
			t.Errorf("netip.ParseAddr(%q) took a non-canonical IPv4 literal (%s)", s, a)
		}
	})
}

func TestAssignNamesFastPath(t *testing.T) {
	var nodes []Node
	for i := 0; i < 5; i++ {
		nodes = append(nodes, Node{ID: fmt.Sprintf("n%d", i)})
	}
	out, problems := assignNames(nodes)
	if len(out) != 5 || problems != nil {
		t.Fatalf("assignNames = %v, %v", out, problems)
	}
	for _, n := range out {
		if n.Name != n.ID {
			t.Errorf("name %q for id %q", n.Name, n.ID)
		}
	}
}
