// Package hubsimtest starts hubsim setups in process for other packages' tests: hubs and a DPS over them (the
// engine's provisioning tests). It lives beside hubsim, which the Python sdist does not vendor with the engine.
package hubsimtest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotconn/iotconn/hubsim"
)

// Env is n hubs on 127.0.0.1 sharing one CA and a DPS over them (MQTT and control listeners).
type Env struct {
	DPS  *hubsim.DPS
	Hubs []*hubsim.Hub
}

// Start starts the hubs and the DPS; t's cleanup closes them. mod, when not nil, changes the DPS config.
func Start(t testing.TB, n int, mod func(*hubsim.DPSConfig)) *Env {
	t.Helper()
	hubs := make([]*hubsim.Hub, n)
	for i := range hubs {
		cfg := hubsim.Config{Dir: t.TempDir(), MQTTAddr: "127.0.0.1:0"}
		if i > 0 {
			cfg.CADir = filepath.Dir(hubs[0].CAFile())
		}
		h, err := hubsim.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		hubs[i] = h
	}
	cfg := hubsim.DPSConfig{Hubs: hubs, MQTTAddr: "127.0.0.1:0", ControlAddr: "127.0.0.1:0", RetryAfter: time.Second}
	if mod != nil {
		mod(&cfg)
	}
	d, err := hubsim.StartDPS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() }) // registered last, so it runs before the hubs' Close
	return &Env{DPS: d, Hubs: hubs}
}

// Enroll creates or replaces an enrollment.
func (e *Env) Enroll(t testing.TB, en hubsim.Enrollment) hubsim.Enrollment {
	t.Helper()
	got, err := e.DPS.SetEnrollment(en)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TLS trusts the hubs' CA.
func (e *Env) TLS(t testing.TB) *tls.Config {
	t.Helper()
	b, err := os.ReadFile(e.DPS.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("no CA in " + e.DPS.CAFile())
	}
	return &tls.Config{RootCAs: pool}
}

// Mint makes a test certificate and writes it to dir as name.pem and name-key.pem; it returns the two paths.
func Mint(t testing.TB, dir, name string, o hubsim.CertOptions) (hubsim.Cert, string, string) {
	t.Helper()
	c, err := hubsim.MintCert(o)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, []byte(c.CertPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(c.KeyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	return c, certFile, keyFile
}
