package haproxy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    Version
		wantErr string
	}{
		{"debian 12", "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/\nStatus: long-term supported branch - will stop receiving fixes around Q2 2027.\n", Version{Major: 2, Minor: 6, Patch: 12}, ""},
		{"debian 13", "HAProxy version 3.0.11-1+deb13u5 2026/11/18 - https://haproxy.org/\n", Version{Major: 3, Minor: 0, Patch: 11}, ""},
		{"upstream", "HAProxy version 3.2.4 2025/08/13 - https://haproxy.org/\n", Version{Major: 3, Minor: 2, Patch: 4}, ""},
		{"dev build", "HAProxy version 3.1-dev5-0f0d2b5 2024/08/01 - https://haproxy.org/\n", Version{Major: 3, Minor: 1, Patch: 0}, ""},
		{"backport", "HAProxy version 3.2.0-1~bpo12+1 2025/05/28 - https://haproxy.org/\n", Version{Major: 3, Minor: 2, Patch: 0}, ""},
		{"ubuntu 2.4", "HAProxy version 2.4.22-0ubuntu0.22.04.3 2023/08/09 - https://haproxy.org/\n", Version{Major: 2, Minor: 4, Patch: 22}, ""},
		{"1.x spelling", "HA-Proxy version 1.8.19 2019/02/11\nCopyright 2000-2019 Willy Tarreau <willy@haproxy.org>\n", Version{Major: 1, Minor: 8, Patch: 19}, ""},
		{"-vv, after a notice", "[NOTICE] something\nHAProxy version 2.8.5 2023/12/07 - https://haproxy.org/\nBuild options :\n", Version{Major: 2, Minor: 8, Patch: 5}, ""},
		{"CRLF", "HAProxy version 2.9.1 2023/12/14\r\n", Version{Major: 2, Minor: 9, Patch: 1}, ""},
		{"garbage", "this is not haproxy\n", Version{}, `no HAProxy version: printed "this is not haproxy", not a line like "HAProxy version 2.6.12 ..."`},
		{"empty", "", Version{}, `no HAProxy version: printed nothing, not a line like "HAProxy version 2.6.12 ..."`},
		{"no number", "HAProxy version unknown\n", Version{}, `no HAProxy version: printed "HAProxy version unknown", not a line like "HAProxy version 2.6.12 ..."`},
		{"glued", "HAProxy version 2.6x\n", Version{}, `no HAProxy version: printed "HAProxy version 2.6x", not a line like "HAProxy version 2.6.12 ..."`},
		{"not at line start", "nginx says HAProxy version 2.6.1\n", Version{}, `no HAProxy version: printed "nginx says HAProxy version 2.6.1", not a line like "HAProxy version 2.6.12 ..."`},
		{"long first line, more lines", strings.Repeat("x", 100) + "\nmore\n", Version{}, `no HAProxy version: printed "` + strings.Repeat("x", 80) + `" ..., not a line like "HAProxy version 2.6.12 ..."`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseVersion(tc.out)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr || !errors.Is(err, ErrVersion) {
					t.Fatalf("ParseVersion = %v, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.Compare(tc.want) != 0 {
				t.Fatalf("ParseVersion = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestVersionOrder(t *testing.T) {
	tests := []struct {
		v, w Version
		want int
	}{
		{Version{Major: 2, Minor: 6, Patch: 12}, Version{Major: 2, Minor: 6, Patch: 12}, 0},
		{Version{Major: 2, Minor: 6, Patch: 12}, Version{Major: 3, Minor: 0, Patch: 0}, -1},
		{Version{Major: 2, Minor: 10, Patch: 0}, Version{Major: 2, Minor: 9, Patch: 9}, 1}, // numeric, not lexical
		{Version{Major: 3, Minor: 0, Patch: 2}, Version{Major: 3, Minor: 0, Patch: 11}, -1},
		{Version{Major: 3, Minor: 0, Patch: 0}, Version{Major: 2, Minor: 99, Patch: 99}, 1},
	}
	for _, tc := range tests {
		if got := tc.v.Compare(tc.w); got != tc.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tc.v, tc.w, got, tc.want)
		}
		if got := tc.w.Compare(tc.v); got != -tc.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tc.w, tc.v, got, -tc.want)
		}
	}
	if !(Version{Major: 3, Minor: 0, Patch: 0}).AtLeast(3, 0) || (Version{Major: 2, Minor: 9, Patch: 9}).AtLeast(3, 0) || !(Version{Major: 3, Minor: 1, Patch: 0}).AtLeast(2, 7) {
		t.Error("AtLeast compares major.minor")
	}
	if s := (Version{Major: 3, Minor: 0, Patch: 11}).String(); s != "3.0.11" {
		t.Errorf("String() = %q", s)
	}
}

func TestVersionSupported(t *testing.T) {
	tests := []struct {
		v       Version
		wantErr string
	}{
		{Version{Major: 2, Minor: 6, Patch: 0}, ""},
		{Version{Major: 2, Minor: 6, Patch: 12}, ""},
		{Version{Major: 3, Minor: 0, Patch: 11}, ""},
		{Version{Major: 2, Minor: 5, Patch: 14}, "unsupported HAProxy version: 2.5.14 is older than 2.6, the oldest haconfd runs on"},
		{Version{Major: 2, Minor: 4, Patch: 22}, "unsupported HAProxy version: 2.4.22 is older than 2.6, the oldest haconfd runs on"},
		{Version{Major: 1, Minor: 8, Patch: 19}, "unsupported HAProxy version: 1.8.19 is older than 2.6, the oldest haconfd runs on"},
	}
	for _, tc := range tests {
		t.Run(tc.v.String(), func(t *testing.T) {
			err := tc.v.Supported()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error() != tc.wantErr || !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("Supported() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// fakeBin writes an executable shell script named haproxy into a temp dir.
func fakeBin(t *testing.T, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "haproxy")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// The build is the version word as printed, for /status and logs.
func TestVersionBuild(t *testing.T) {
	v, err := ParseVersion("HAProxy version 3.0.11-1+deb13u5 2026/11/18 - https://haproxy.org/\n")
	if err != nil || v.Build != "3.0.11-1+deb13u5" || v.String() != "3.0.11-1+deb13u5" {
		t.Fatalf("ParseVersion = %+v, %v", v, err)
	}
	if s := (Version{Major: 2, Minor: 6}).String(); s != "2.6.0" {
		t.Fatalf("String() without a build = %q", s)
	}
}

// Each capability starts at the release whose management.txt documents it.
func TestCaps(t *testing.T) {
	tests := []struct {
		v    Version
		want Caps
	}{
		{Version{Major: 2, Minor: 6, Patch: 12}, Caps{}},
		{Version{Major: 2, Minor: 7}, Caps{ReloadStatus: true}},
		{Version{Major: 2, Minor: 9, Patch: 5}, Caps{ReloadStatus: true}},
		{Version{Major: 3, Minor: 0, Patch: 11}, Caps{ReloadStatus: true, WaitRemovable: true, AddCookie: true}},
		{Version{Major: 3, Minor: 2}, Caps{ReloadStatus: true, WaitRemovable: true, AddCookie: true}},
	}
	for _, tc := range tests {
		if got := tc.v.Caps(); got != tc.want {
			t.Errorf("%s: Caps() = %+v, want %+v", tc.v, got, tc.want)
		}
	}
}

func TestBinaryVersion(t *testing.T) {
	t.Run("fake 2.4", func(t *testing.T) {
		bin := fakeBin(t, `echo "HAProxy version 2.4.22-0ubuntu0.22.04.3 2023/08/09 - https://haproxy.org/"`)
		v, err := BinaryVersion(context.Background(), bin)
		if err != nil || v.Compare(Version{Major: 2, Minor: 4, Patch: 22}) != 0 || v.Build != "2.4.22-0ubuntu0.22.04.3" {
			t.Fatalf("BinaryVersion = %v, %v", v, err)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		bin := fakeBin(t, `echo "hello"`)
		_, err := BinaryVersion(context.Background(), bin)
		if !errors.Is(err, ErrVersion) || !strings.HasPrefix(err.Error(), bin+` -v: no HAProxy version: printed "hello"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("fails", func(t *testing.T) {
		bin := fakeBin(t, `echo "boom" >&2; exit 3`)
		_, err := BinaryVersion(context.Background(), bin)
		if err == nil || err.Error() != bin+` -v: exit status 3: printed "boom"` {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "haproxy")
		_, err := BinaryVersion(context.Background(), bin)
		if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), bin+" -v: ") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("real", func(t *testing.T) {
		requireHAProxy(t)
		v, err := BinaryVersion(context.Background(), haproxyBin)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Supported(); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s is HAProxy %s", haproxyBin, v)
	})
}
