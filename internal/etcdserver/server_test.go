package etcdserver_test

import (
	"bytes"
	"context"
	"errors"
	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/etcdtest"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestStartForTestPutGet(t *testing.T) {
	s := etcdtest.Start(t)
	eps := s.Endpoints()
	if len(eps) != 1 || !strings.HasPrefix(eps[0], "http://127.0.0.1:") {
		t.Fatalf("Endpoints() = %v, want one http://127.0.0.1:PORT", eps)
	}
	cli, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/a", "1"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := cli.Get(ctx, "/a")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" {
		t.Fatalf("get /a = %v, want 1", resp.Kvs)
	}
	s.Close()
	s.Close() // idempotent
}

func TestRestartSameDirAndURL(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	s1, err := etcdserver.Start(ctx, etcdserver.Options{Dir: dir, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	url := s1.Endpoints()[0]
	cli, err := s1.Client()
	if err != nil {
		s1.Close()
		t.Fatal(err)
	}
	_, err = cli.Put(ctx, "/k", "v")
	cli.Close()
	s1.Close()
	if err != nil {
		t.Fatalf("put: %v", err)
	}

	s2, err := etcdserver.Start(ctx, etcdserver.Options{Dir: dir, ClientURL: url, Logger: logger})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer s2.Close()
	if got := s2.Endpoints()[0]; got != url {
		t.Fatalf("restarted endpoint = %s, want %s", got, url)
	}
	cli2, err := s2.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	resp, err := cli2.Get(ctx, "/k")
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get /k after restart = %v, want v", resp.Kvs)
	}
}

func TestStartBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts etcdserver.Options
		want string
	}{
		{"no dir", etcdserver.Options{}, "etcd data dir"},
		{"bad scheme", etcdserver.Options{Dir: "x", ClientURL: "unix:///tmp/x"}, "scheme must be http"},
		{"hostname", etcdserver.Options{Dir: "x", ClientURL: "http://example.com:2379"}, "not an IP address"},
		{"no port", etcdserver.Options{Dir: "x", ClientURL: "http://127.0.0.1"}, "want http://IP:PORT"},
		{"port zero", etcdserver.Options{Dir: "x", ClientURL: "http://127.0.0.1:0"}, "port must be set"},
		{"path", etcdserver.Options{Dir: "x", ClientURL: "http://127.0.0.1:1/x"}, "no path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := etcdserver.Start(context.Background(), tt.opts)
			if err == nil {
				t.Fatal("etcdserver.Start succeeded, want error")
			}
			if !errors.Is(err, etcdserver.ErrInvalidOptions) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("etcdserver.Start error = %q, want etcdserver.ErrInvalidOptions containing %q", err, tt.want)
			}
		})
	}
}

func TestStartContextDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := etcdserver.Start(ctx, etcdserver.Options{Dir: t.TempDir()})
	if err == nil {
		t.Fatal("etcdserver.Start with a canceled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("etcdserver.Start error = %v, want context.Canceled", err)
	}
}
