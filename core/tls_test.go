package core

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/auth"
)

// A fleet of clients trusting the same CA shares one parsed pool; other CAs get their own, and bad input is
// still refused per client.
func TestClientsWithTheSameCAShareOneRootPool(t *testing.T) {
	dir := t.TempDir()
	caA, caB := writeTestCA(t, dir, "a"), writeTestCA(t, dir, "b")
	cs := "HostName=h.example;DeviceId=d;SharedAccessKey=" + testKey
	roots := func(opts Options) any {
		t.Helper()
		conf, err := buildTLS(mustParseCS(t, cs), &opts)
		if err != nil {
			t.Fatal(err)
		}
		return conf.RootCAs
	}
	first := roots(Options{CAFile: caA})
	if roots(Options{CAFile: caA}) != first {
		t.Fatal("two clients with the same CA file got two pools")
	}
	pemA, err := os.ReadFile(caA)
	if err != nil {
		t.Fatal(err)
	}
	if fromPEM := roots(Options{CAPEM: pemA}); roots(Options{CAPEM: pemA}) != fromPEM {
		t.Fatal("two clients with the same CA PEM got two pools")
	}
	if roots(Options{CAFile: caB}) == first {
		t.Fatal("another CA got the first CA's pool")
	}
	if roots(Options{CAFile: caA, CAPEM: pemA}) == first {
		t.Fatal("file and PEM together share the pool of the file alone: the key must tell them apart")
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, opts := range []Options{{CAFile: empty}, {CAPEM: []byte("not pem")}, {CAFile: caA, CAPEM: []byte("x")}} {
		var e *Error
		if _, err := buildTLS(mustParseCS(t, cs), &opts); !errors.As(err, &e) || e.Code != CodeInvalidArgument {
			t.Errorf("%+v: got %v, want CodeInvalidArgument", opts, err)
		}
	}
}

func mustParseCS(t *testing.T, s string) *auth.ConnectionString {
	t.Helper()
	cs, err := auth.ParseConnectionString(s)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// writeTestCA writes a self-signed CA certificate named name into dir and returns its path.
func writeTestCA(t *testing.T, dir, name string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
