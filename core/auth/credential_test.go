package auth

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
	"strings"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/iothub"
)

var now = time.Unix(1700000000, 0)

func mustParse(t *testing.T, s string) *ConnectionString {
	t.Helper()
	c, err := ParseConnectionString(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestKeyCredentialMakesFreshVerifiableTokens(t *testing.T) {
	c := mustParse(t, "HostName=hub.example.net;DeviceId=dev1;ModuleId=m1;SharedAccessKey="+testKey)
	for _, lifetime := range []time.Duration{0, 90 * time.Second} {
		cred, err := NewCredential(c, lifetime)
		if err != nil {
			t.Fatal(err)
		}
		if !cred.Renewable() {
			t.Fatal("a shared access key credential must be renewable")
		}
		want := lifetime
		if want == 0 {
			want = time.Hour
		}
		for _, at := range []time.Time{now, now.Add(10 * time.Minute), now.Add(2500 * time.Millisecond)} {
			token, expiry, err := cred.Token(at)
			if err != nil {
				t.Fatal(err)
			}
			if d := expiry.Sub(at); d > want || d <= want-time.Second {
				t.Fatalf("lifetime %v: token at %v expires %v later", lifetime, at, d)
			}
			sas, err := iothub.ParseSAS(token)
			if err != nil {
				t.Fatal(err)
			}
			if !sas.Verify(testKey) || sas.Verify("b3RoZXJrZXk=") {
				t.Fatal("the token must verify with the key, and only with it")
			}
			if sas.Resource != c.ResourceURI() || !sas.Expiry.Equal(expiry) || sas.KeyName != "" {
				t.Fatalf("token %+v does not match resource %q / expiry %v", sas, c.ResourceURI(), expiry)
			}
		}
	}
}

func TestKeyNameGoesIntoSkn(t *testing.T) {
	c := mustParse(t, "HostName=hub.example.net;DeviceId=dev1;SharedAccessKeyName=device policy;SharedAccessKey="+testKey)
	cred, err := NewCredential(c, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := cred.Token(now)
	if err != nil {
		t.Fatal(err)
	}
	sas, err := iothub.ParseSAS(token)
	if err != nil || sas.KeyName != "device policy" || !sas.Verify(testKey) {
		t.Fatalf("token %q: %+v, %v", token, sas, err)
	}
}

func TestNewCredentialRejectsBadLifetimes(t *testing.T) {
	c := mustParse(t, "HostName=h;DeviceId=d;SharedAccessKey="+testKey)
	for _, lifetime := range []time.Duration{-time.Second, time.Millisecond, 999 * time.Millisecond} {
		if _, err := NewCredential(c, lifetime); err == nil || !strings.Contains(err.Error(), "lifetime") {
			t.Fatalf("lifetime %v: %v", lifetime, err)
		}
	}
	if _, err := NewCredential(nil, 0); err == nil {
		t.Fatal("a nil connection string must be an error")
	}
}

func TestFixedTokenExpires(t *testing.T) {
	expiry := now.Add(time.Hour)
	token, err := iothub.BuildSAS("hub.example.net/devices/dev1", testKey, "", expiry)
	if err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, "HostName=hub.example.net;DeviceId=dev1;SharedAccessSignature="+token)
	cred, err := NewCredential(c, time.Minute) // the lifetime does not apply to a given token
	if err != nil {
		t.Fatal(err)
	}
	if cred.Renewable() {
		t.Fatal("a user-supplied token is not renewable")
	}
	for _, at := range []time.Time{now, expiry.Add(-time.Second)} {
		got, gotExpiry, err := cred.Token(at)
		if err != nil || got != token || !gotExpiry.Equal(expiry) {
			t.Fatalf("at %v: %q %v %v", at, got, gotExpiry, err)
		}
	}
	for _, at := range []time.Time{expiry, expiry.Add(time.Hour)} {
		got, _, err := cred.Token(at)
		if !errors.Is(err, ErrTokenExpired) || got != "" {
			t.Fatalf("at %v: %q %v, want ErrTokenExpired", at, got, err)
		}
		if !strings.Contains(err.Error(), expiry.UTC().Format(time.RFC3339)) {
			t.Fatalf("error %q does not say when the token expired", err)
		}
	}
}

func TestFixedTokenScope(t *testing.T) {
	build := func(resource string) string {
		token, err := iothub.BuildSAS(resource, testKey, "", now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
	const dev = "HostName=hub.example.net;DeviceId=dev1;SharedAccessSignature="
	const mod = "HostName=hub.example.net;DeviceId=dev1;ModuleId=m1;SharedAccessSignature="
	covered := map[string]string{
		"own device":      dev + build("hub.example.net/devices/dev1"),
		"trailing slash":  dev + build("hub.example.net/devices/dev1/"),
		"hub wide":        dev + build("hub.example.net"),
		"host case":       dev + build("HUB.example.net/devices/dev1"),
		"module's device": mod + build("hub.example.net/devices/dev1"),
		"own module":      mod + build("hub.example.net/devices/dev1/modules/m1"),
	}
	for name, s := range covered {
		if _, err := NewCredential(mustParse(t, s), 0); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	notCovered := map[string]string{
		"other device":         dev + build("hub.example.net/devices/dev2"),
		"device name prefix":   dev + build("hub.example.net/devices/dev"),
		"device id case":       dev + build("hub.example.net/devices/DEV1"),
		"other hub":            dev + build("other.example.net/devices/dev1"),
		"a module of a device": dev + build("hub.example.net/devices/dev1/modules/m1"),
		"other module":         mod + build("hub.example.net/devices/dev1/modules/m2"),
	}
	for name, s := range notCovered {
		_, err := NewCredential(mustParse(t, s), 0)
		if err == nil || !strings.Contains(err.Error(), "does not cover") {
			t.Fatalf("%s: got %v, want a scope error", name, err)
		}
	}
	bad := mustParse(t, "HostName=hub.example.net;DeviceId=dev1;SharedAccessSignature=sr=x&sig=c2ln&se=1")
	if _, err := NewCredential(bad, 0); err == nil || !strings.Contains(err.Error(), "SharedAccessSignature") {
		t.Fatalf("a token without its prefix: %v", err)
	}
}

func TestX509CredentialHasNoToken(t *testing.T) {
	cred, err := NewCredential(mustParse(t, "HostName=h;DeviceId=d;x509=true"), 0)
	if err != nil {
		t.Fatal(err)
	}
	token, expiry, err := cred.Token(now)
	if token != "" || !expiry.IsZero() || err != nil || cred.Renewable() {
		t.Fatalf("X.509: %q %v %v renewable=%v", token, expiry, err, cred.Renewable())
	}
}

// writeKeyPair makes a self-signed certificate for name and writes the PEM files into dir.
func writeKeyPair(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: now, NotAfter: now.Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	return certFile, keyFile
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadClientCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeKeyPair(t, dir, "dev1")
	otherCert, otherKey := writeKeyPair(t, dir, "dev2")
	cert, err := LoadClientCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Leaf == nil || cert.Leaf.Subject.CommonName != "dev1" || cert.PrivateKey == nil {
		t.Fatalf("loaded certificate %+v", cert.Leaf)
	}

	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, []byte("not PEM at all"))
	unreadable := filepath.Join(dir, "a-directory")
	if err := os.Mkdir(unreadable, 0o700); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ cert, key, want string }{
		"no cert path":     {"", keyFile, "client certificate file not given"},
		"no key path":      {certFile, "", "client key file not given"},
		"missing cert":     {filepath.Join(dir, "nope.crt"), keyFile, "nope.crt"},
		"missing key":      {certFile, filepath.Join(dir, "nope.key"), "nope.key"},
		"unreadable cert":  {unreadable, keyFile, "client certificate file"},
		"cert not PEM":     {garbage, keyFile, "holds no PEM CERTIFICATE"},
		"key not PEM":      {certFile, garbage, "holds no PEM PRIVATE KEY"},
		"files swapped":    {keyFile, certFile, "holds no PEM CERTIFICATE"},
		"mismatched pair":  {certFile, otherKey, "does not match"},
		"mismatched pair2": {otherCert, keyFile, "does not match"},
	}
	for name, c := range cases {
		_, err := LoadClientCertificate(c.cert, c.key)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: got %v, want an error saying %q", name, err, c.want)
		}
	}
	if _, err := LoadClientCertificate(filepath.Join(dir, "nope.crt"), keyFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing file must wrap os.ErrNotExist: %v", err)
	}
}
