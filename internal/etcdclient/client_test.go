package etcdclient_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/internal/etcdclient"
	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A request that fails without saying why (a timeout) is explained: the
// endpoint refuses connections, or etcd refuses the client certificate,
// or the server certificate is not trusted.
func TestDiagnose(t *testing.T) {
	pki := etcdtest.NewTestPKI(t, "")
	other := etcdtest.NewTestPKI(t, "")
	srv := etcdtest.StartWith(t, etcdserver.Options{TLS: &pki})
	refused := "http://127.0.0.1:1"
	tests := []struct {
		name          string
		endpoints     []string
		ca, cert, key string
		want          string
	}{
		{"nothing listens", []string{refused}, "", "", "", "connection refused"},
		{"client cert of another CA", srv.Endpoints(), pki.CAFile, other.ClientCertFile, other.ClientKeyFile, "tls"},
		{"server cert of another CA", srv.Endpoints(), other.CAFile, pki.ClientCertFile, pki.ClientKeyFile, "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := etcdclient.Connect(t.Context(), config.Etcd{EtcdEndpoints: tt.endpoints, EtcdDialTimeout: time.Second,
				EtcdCA: tt.ca, EtcdCert: tt.cert, EtcdKey: tt.key}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			_, err = c.Get(ctx, "/x")
			cancel()
			if err == nil {
				t.Fatal("a request went through")
			}
			why := c.Diagnose(t.Context(), err)
			if why == nil || !strings.Contains(strings.ToLower(why.Error()), tt.want) {
				t.Fatalf("Diagnose(%v) = %v, want it to say %q", err, why, tt.want)
			}
		})
	}
	// An answer from etcd needs no diagnosis.
	c, err := etcdclient.Connect(t.Context(), config.Etcd{EtcdEndpoints: srv.Endpoints(), EtcdDialTimeout: time.Second,
		EtcdCA: pki.CAFile, EtcdCert: pki.ClientCertFile, EtcdKey: pki.ClientKeyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Get(t.Context(), "/x"); err != nil {
		t.Fatalf("with the right certificates: %v", err)
	}
}

// Rejected credentials are a configuration error (ErrCredentials); a TLS
// file that cannot be read is ErrTLSFiles.
func TestConnectErrors(t *testing.T) {
	srv := etcdtest.StartWith(t, etcdserver.Options{Auth: &etcdserver.Auth{RootPassword: "rootpw"}})
	_, err := etcdclient.Connect(t.Context(), config.Etcd{EtcdEndpoints: srv.Endpoints(), EtcdDialTimeout: 2 * time.Second,
		EtcdUsername: "root", EtcdPassword: "wrong"}, nil)
	if !errors.Is(err, etcdclient.ErrCredentials) {
		t.Fatalf("wrong password: %v, want ErrCredentials", err)
	}
	_, err = etcdclient.Connect(t.Context(), config.Etcd{EtcdEndpoints: srv.Endpoints(), EtcdDialTimeout: 2 * time.Second,
		EtcdCA: "/nonexistent/ca.pem"}, nil)
	if !errors.Is(err, etcdclient.ErrTLSFiles) {
		t.Fatalf("missing CA: %v, want ErrTLSFiles", err)
	}
	c, err := etcdclient.Connect(t.Context(), config.Etcd{EtcdEndpoints: srv.Endpoints(), EtcdDialTimeout: 2 * time.Second,
		EtcdUsername: "root", EtcdPassword: "rootpw"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(t.Context(), "/x", "1"); err != nil {
		t.Fatal(fmt.Errorf("with the right password: %w", err))
	}
}
