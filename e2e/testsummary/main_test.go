package main

import (
	"bytes"
	"strings"
	"testing"
)

const stream = `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:9: haproxy not installed\n"}
{"Action":"output","Package":"p","Test":"TestA","Output":"--- SKIP: TestA (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:3: want 1, got 2\n"}
{"Action":"fail","Package":"p","Test":"TestB","Elapsed":0.5}
{"Action":"fail","Package":"p","Elapsed":1}
{"Action":"pass","Package":"q","Elapsed":2}
`

// A skipped test is listed with its reason, and a failure fails the run.
func TestSkipsAreListedAndFailuresFail(t *testing.T) {
	var w bytes.Buffer
	if summarize(strings.NewReader(stream), &w) {
		t.Errorf("a failed test must fail the summary:\n%s", w.String())
	}
	for _, want := range []string{
		"SKIP p TestA: a_test.go:9: haproxy not installed",
		"--- FAIL: TestB (0.50s) [p]",
		"want 1, got 2",
		"FAIL\tp\t1.000s",
		"ok  \tq\t2.000s",
		"tests: 1 packages ok, 1 failed, 1 tests skipped",
	} {
		if !strings.Contains(w.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, w.String())
		}
	}
	ok := summarize(strings.NewReader(`{"Action":"pass","Package":"q","Elapsed":2}`+"\n"), &w)
	if !ok {
		t.Error("a passing run must pass")
	}
}
