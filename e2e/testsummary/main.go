// Command testsummary reads `go test -json` on stdin and prints what
// `go test` prints without -json (one line per package, the output of
// failed tests), then every skipped test with its reason and the number
// of skips, so that a test skipped in CI is never silent. It exits 1 when
// a test or package failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type key struct{ pkg, test string }

func main() {
	if !summarize(os.Stdin, os.Stdout) {
		os.Exit(1)
	}
}

// summarize copies the -json stream from r to w as text and reports
// whether every package and test passed.
func summarize(r io.Reader, w io.Writer) bool {
	out := map[key][]string{} // output lines per test (and package, test "")
	var skipped []string
	failed := false
	passedPkgs, failedPkgs := 0, 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			fmt.Fprintln(w, string(line)) // a build error or anything else: as it is
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output":
			out[k] = append(out[k], e.Output)
			if e.Test == "" && !strings.HasPrefix(e.Output, "ok ") && !strings.HasPrefix(e.Output, "FAIL") &&
				!strings.HasPrefix(e.Output, "PASS") && !strings.HasPrefix(e.Output, "?") && !strings.HasPrefix(e.Output, "=== ") {
				fmt.Fprint(w, e.Output) // TestMain's lines (e.g. the HAProxy version)
			}
		case "skip":
			if e.Test != "" {
				skipped = append(skipped, fmt.Sprintf("%s %s: %s", e.Package, e.Test, reason(out[k])))
			}
		case "fail":
			failed = true
			if e.Test != "" {
				fmt.Fprintf(w, "--- FAIL: %s (%.2fs) [%s]\n", e.Test, e.Elapsed, e.Package)
				for _, l := range out[k] {
					fmt.Fprint(w, "    "+l)
				}
				continue
			}
			failedPkgs++
			fmt.Fprintf(w, "FAIL\t%s\t%.3fs\n", e.Package, e.Elapsed)
		case "pass":
			if e.Test == "" {
				passedPkgs++
				fmt.Fprintf(w, "ok  \t%s\t%.3fs\n", e.Package, e.Elapsed)
			}
		}
	}
	sort.Strings(skipped)
	for _, s := range skipped {
		fmt.Fprintln(w, "SKIP", s)
	}
	fmt.Fprintf(w, "tests: %d packages ok, %d failed, %d tests skipped\n", passedPkgs, failedPkgs, len(skipped))
	return !failed && sc.Err() == nil
}

// reason is the skip message: the test's last output line that is not
// go test's own "--- SKIP" line.
func reason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "--- SKIP") || strings.HasPrefix(l, "=== ") {
			continue
		}
		return l
	}
	return "(no reason given)"
}
