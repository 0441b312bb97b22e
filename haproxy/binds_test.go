package haproxy

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestParseBinds(t *testing.T) {
	tests := []struct {
		name string
		cfg  string
		want []string
	}{
		{"ipv4", "listen a\n    bind 127.0.0.1:3306\n", []string{"127.0.0.1:3306"}},
		{"empty host", "frontend f\n  bind :3306 name x\n", []string{"0.0.0.0:3306"}},
		{"star", "\tbind *:80 ssl crt /x.pem\n", []string{"0.0.0.0:80"}},
		{"ipv6 bracketed", "bind [::1]:80\n", []string{"[::1]:80"}},
		{"ipv6 any", "bind [::]:443 v4v6\n", []string{"[::]:443"}},
		{"ipv6 bare", "bind ::1:8080\n", []string{"[::1]:8080"}},
		{"list", "bind 127.0.0.1:80,127.0.0.2:81, :82\n", []string{"127.0.0.1:80", "127.0.0.2:81"}},
		{"list no space", "bind 127.0.0.1:80,:82\n", []string{"127.0.0.1:80", "0.0.0.0:82"}},
		{"prefixes", "bind ipv4@127.0.0.1:1\nbind ipv6@[::1]:2\nbind tcp@:3\n", []string{"127.0.0.1:1", "[::1]:2", "0.0.0.0:3"}},
		{"range", "bind 127.0.0.1:8000-8002\n", []string{"127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002"}},
		{"unix and friends skipped", "bind /run/h.sock mode 600\nbind unix@/x\nbind abns@foo\nbind fd@3\nbind quic4@:443\nbind udp@:53\n", nil},
		{"env skipped", "bind ${ADDR}:80\nbind :${PORT}\n", nil},
		{"comments", "# bind 1.1.1.1:1\n    bind 127.0.0.1:5 # bind 2.2.2.2:2\n", []string{"127.0.0.1:5"}},
		{"not bind", "    bind-process 1\n    stats bind-process all\n    server s 127.0.0.1:80\n", nil},
		{"bad port skipped", "bind 127.0.0.1:0\nbind 127.0.0.1:70000\nbind 127.0.0.1:x\nbind 127.0.0.1\n", nil},
		{"duplicates once", "bind :80\nbind *:80\nbind 0.0.0.0:80\n", []string{"0.0.0.0:80"}},
		{"quoted", "bind \"127.0.0.1:9\"\n", []string{"127.0.0.1:9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseBinds([]byte(tt.cfg))
			if !slices.Equal(got, tt.want) {
				t.Errorf("parseBinds = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCheckBinds(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = held.Close() }()
	heldAddr := held.Addr().String()
	heldPort := strconv.Itoa(held.Addr().(*net.TCPAddr).Port)
	free := "127.0.0.1:" + strconv.Itoa(freePort(t))

	tests := []struct {
		name    string
		next    string
		live    string
		wantErr bool
	}{
		{"free address", "bind " + free + "\n", "", false},
		{"taken, not in live", "bind " + free + "\nbind " + heldAddr + "\n", "", true},
		{"taken wildcard", "bind :" + heldPort + "\n", "", true},
		{"taken but held by live haproxy", "bind " + heldAddr + "\n", "bind " + heldAddr + "\n", false},
		{"taken, live holds the wildcard", "bind " + heldAddr + "\n", "bind *:" + heldPort + "\n", false},
		{"unix only", "bind /tmp/x.sock\n", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var live []byte
			if tt.live != "" {
				live = []byte(tt.live)
			}
			err := checkBinds([]byte(tt.next), live)
			if (err != nil) != tt.wantErr {
				t.Fatalf("checkBinds = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBindInUse) {
				t.Fatalf("error %v is not ErrBindInUse", err)
			}
		})
	}
}

func TestSweepStages(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "haproxy.cfg")
	old := filepath.Join(dir, ".haconfd-stage-1")
	fresh := filepath.Join(dir, ".haconfd-stage-2")
	for _, p := range []string{dst, old, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if n := sweepStages(dst, time.Minute); n != 1 {
		t.Fatalf("swept %d files, want 1", n)
	}
	for p, want := range map[string]bool{dst: true, old: false, fresh: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Fatalf("%s exists=%v, want %v", p, err == nil, want)
		}
	}
}
