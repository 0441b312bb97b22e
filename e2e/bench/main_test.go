package main

import (
	"strings"
	"testing"
)

// Rows of two runs line up by measurement and path, empty cells kept.
func TestSideBySide(t *testing.T) {
	a := []string{
		"| add | runtime | 20 | 2.5 ms | 8.0 ms | 9.0 ms | p50 ≤ 10 ms |",
		one("storm: applies", "auto", "1", "≤ 2"),
		"| only in the first | x | 1 | 1.0 ms | 1.0 ms | 1.0 ms | - |",
		one("failed connections (9099 ok)", "runtime", "0", "0"),
		one("churn (26 changes, 9099 ok)", "runtime", "0", "0"),
	}
	b := []string{
		one("storm: applies", "auto", "2", "≤ 2"),
		"| add | runtime | 20 | 2.0 ms | 2.6 ms | 3.0 ms | p50 ≤ 10 ms |",
		one("failed connections (8800 ok)", "runtime", "1", "0"),
		one("churn (25 changes, 8800 ok)", "runtime", "2", "0"),
	}
	got := sideBySide("2.6", "3.0", a, b)
	for _, want := range []string{
		"| add | runtime | 2.5 ms | 8.0 ms | 9.0 ms | 2.0 ms | 2.6 ms | 3.0 ms | p50 ≤ 10 ms |",
		"| storm: applies | auto | 1 |  |  | 2 |  |  | ≤ 2 |",
		"| only in the first | x | 1.0 ms | 1.0 ms | 1.0 ms | - |  |  | - |",
		"| failed connections (9099 ok) | runtime | 0 |  |  | 1 |  |  | 0 |",
		"| churn (26 changes, 9099 ok) | runtime | 0 |  |  | 2 |  |  | 0 |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("side by side lacks\n%s\n in:\n%s", want, got)
		}
	}
}
