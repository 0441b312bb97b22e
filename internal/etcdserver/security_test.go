package etcdserver_test

import (
	"context"
	"errors"
	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/etcdtest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestTLSRequiresClientCert(t *testing.T) {
	pki := etcdtest.NewTestPKI(t, "")
	other := etcdtest.NewTestPKI(t, "")
	for _, f := range []string{pki.CAFile, pki.ServerCertFile, pki.ServerKeyFile, pki.ClientCertFile, pki.ClientKeyFile} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("etcdserver.PKI file: %v", err)
		}
	}
	if fi, err := os.Stat(pki.ClientKeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client key mode = %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	s := etcdtest.StartWith(t, etcdserver.Options{TLS: &pki})
	ep := s.Endpoints()[0]
	if !strings.HasPrefix(ep, "https://127.0.0.1:") {
		t.Fatalf("endpoint %s, want https://127.0.0.1:PORT", ep)
	}
	cli, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/a", "1"); err != nil {
		t.Fatalf("put with the right client certificate: %v", err)
	}

	tests := []struct {
		name string
		info transport.TLSInfo
	}{
		{"cert of another CA", transport.TLSInfo{TrustedCAFile: pki.CAFile, CertFile: other.ClientCertFile, KeyFile: other.ClientKeyFile}},
		{"no client cert", transport.TLSInfo{TrustedCAFile: pki.CAFile}},
		{"server not trusted", transport.TLSInfo{TrustedCAFile: other.CAFile, CertFile: pki.ClientCertFile, KeyFile: pki.ClientKeyFile}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := tt.info.ClientConfig()
			if err != nil {
				t.Fatal(err)
			}
			bad, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, TLS: tc, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			if _, err := bad.Get(rctx, "/a"); err == nil {
				t.Fatal("get succeeded, want it refused")
			}
		})
	}
}

func TestAuth(t *testing.T) {
	dir := t.TempDir()
	auth := &etcdserver.Auth{RootPassword: "r00t-secret", Users: []etcdserver.User{{Name: "reader", Password: "reader-secret", ReadPrefix: "/p"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := etcdserver.Start(ctx, etcdserver.Options{Dir: dir, Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	url := s.Endpoints()[0]
	check := func(t *testing.T, s *etcdserver.Server) {
		root, err := s.Client()
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		if _, err := root.Put(ctx, "/p/n1", "x"); err != nil {
			t.Fatalf("put as root: %v", err)
		}
		if _, err := root.Put(ctx, "/q", "y"); err != nil {
			t.Fatalf("put as root: %v", err)
		}
		user := func(password string) (*clientv3.Client, error) {
			return clientv3.New(clientv3.Config{Endpoints: []string{url}, Username: "reader", Password: password,
				DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		}
		rd, err := user("reader-secret")
		if err != nil {
			t.Fatalf("client as reader: %v", err)
		}
		defer rd.Close()
		if resp, err := rd.Get(ctx, "/p", clientv3.WithPrefix()); err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("reader get /p = %v, %v; want one key", resp, err)
		}
		if _, err := rd.Get(ctx, "/q"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Fatalf("reader get /q: %v, want permission denied", err)
		}
		if _, err := rd.Put(ctx, "/p/n2", "x"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Fatalf("reader put: %v, want permission denied", err)
		}
		if c, err := user("wrong"); !errors.Is(err, rpctypes.ErrAuthFailed) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("client with a wrong password: %v, want %v", err, rpctypes.ErrAuthFailed)
		}
		anon, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer anon.Close()
		if _, err := anon.Get(ctx, "/p"); !errors.Is(err, rpctypes.ErrUserEmpty) {
			t.Fatalf("anonymous get: %v, want %v", err, rpctypes.ErrUserEmpty)
		}
	}
	t.Run("first start", func(t *testing.T) { check(t, s) })
	s.Close()
	// Restarted on the same directory: auth is already on and stays.
	s2, err := etcdserver.Start(ctx, etcdserver.Options{Dir: dir, ClientURL: url, Auth: auth})
	if err != nil {
		t.Fatalf("restart with auth on: %v", err)
	}
	defer s2.Close()
	t.Run("restarted", func(t *testing.T) { check(t, s2) })
}

func TestSecurityBadOptions(t *testing.T) {
	pki := etcdserver.PKI{CAFile: "ca", ServerCertFile: "c", ServerKeyFile: "k"}
	tests := []struct {
		name string
		opts etcdserver.Options
		want string
	}{
		{"TLS with http URL", etcdserver.Options{ClientURL: "http://127.0.0.1:1", TLS: &pki}, "scheme must be https"},
		{"https without TLS", etcdserver.Options{ClientURL: "https://127.0.0.1:1"}, "scheme must be http"},
		{"TLS without CA", etcdserver.Options{TLS: &etcdserver.PKI{ServerCertFile: "c", ServerKeyFile: "k"}}, "etcd TLS CA"},
		{"auth without root password", etcdserver.Options{Auth: &etcdserver.Auth{}}, "root password"},
		{"user named root", etcdserver.Options{Auth: &etcdserver.Auth{RootPassword: "x", Users: []etcdserver.User{{Name: "root", Password: "p", ReadPrefix: "/"}}}}, "name must be set"},
		{"user without password", etcdserver.Options{Auth: &etcdserver.Auth{RootPassword: "x", Users: []etcdserver.User{{Name: "u", ReadPrefix: "/"}}}}, "password must not be empty"},
		{"user without prefix", etcdserver.Options{Auth: &etcdserver.Auth{RootPassword: "x", Users: []etcdserver.User{{Name: "u", Password: "p"}}}}, "read prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Dir = filepath.Join(t.TempDir(), "d")
			_, err := etcdserver.Start(context.Background(), tt.opts)
			if !errors.Is(err, etcdserver.ErrInvalidOptions) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("etcdserver.Start error = %v, want etcdserver.ErrInvalidOptions containing %q", err, tt.want)
			}
		})
	}
}
