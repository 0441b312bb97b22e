package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"github.com/haconfd/haconfd/internal/etcdserver"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is etcdserver.PKI: the PEM files of a throwaway CA.
type PKI = etcdserver.PKI

// ClientCN is the common name of the client certificate NewPKI makes.
const ClientCN = "haconfd"

// certLifetime is how long the certificates NewPKI makes stay valid.
const certLifetime = 24 * time.Hour

// NewPKI writes a new CA, server and client certificate with their keys
// into dir (which must exist) and returns the file names. Each call makes
// a new, unrelated CA: the client certificate of one PKI is rejected by a
// server that trusts another.
func NewPKI(dir string) (PKI, error) {
	p := PKI{
		CAFile:         filepath.Join(dir, "ca.pem"),
		ServerCertFile: filepath.Join(dir, "server.pem"),
		ServerKeyFile:  filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"),
		ClientKeyFile:  filepath.Join(dir, "client-key.pem"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PKI{}, fmt.Errorf("test PKI: CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "haconfd test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, caCert, err := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return PKI{}, fmt.Errorf("test PKI: CA certificate: %w", err)
	}
	if err := writePEM(p.CAFile, "CERTIFICATE", caDER, 0o644); err != nil {
		return PKI{}, err
	}
	leaves := []struct {
		tmpl              *x509.Certificate
		certFile, keyFile string
	}{
		{&x509.Certificate{
			Subject:     pkix.Name{CommonName: "127.0.0.1"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			DNSNames:    []string{"localhost"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}, p.ServerCertFile, p.ServerKeyFile},
		{&x509.Certificate{
			Subject:     pkix.Name{CommonName: ClientCN},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, p.ClientCertFile, p.ClientKeyFile},
	}
	for _, l := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return PKI{}, fmt.Errorf("test PKI: key for %s: %w", l.certFile, err)
		}
		l.tmpl.NotBefore, l.tmpl.NotAfter = now.Add(-time.Hour), now.Add(certLifetime)
		l.tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, _, err := sign(l.tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return PKI{}, fmt.Errorf("test PKI: certificate %s: %w", l.certFile, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return PKI{}, fmt.Errorf("test PKI: key for %s: %w", l.certFile, err)
		}
		if err := writePEM(l.certFile, "CERTIFICATE", der, 0o644); err != nil {
			return PKI{}, err
		}
		if err := writePEM(l.keyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
			return PKI{}, err
		}
	}
	return p, nil
}

// NewTestPKI is NewPKI for tests: a failure fails the test. An empty dir
// means t.TempDir().
func NewTestPKI(t testing.TB, dir string) PKI {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	p, err := NewPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, priv *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return der, cert, nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("test PKI: %w", err)
	}
	return nil
}
