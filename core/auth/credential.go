package auth

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/iotconn/iotconn/core/iothub"
)

// ErrTokenExpired is returned (wrapped with the expiry) by a credential whose fixed token has run out.
var ErrTokenExpired = errors.New("SAS token expired")

// Credential supplies what the transport presents to the hub.
type Credential interface {
	// Token returns the SAS token to present at now and when it stops being valid; "" and the zero time for X.509.
	Token(now time.Time) (token string, expiry time.Time, err error)
	// Renewable reports whether Token makes a fresh token on every call (a shared access key).
	Renewable() bool
}

// NewCredential picks the credential c names. lifetime applies to tokens made from a shared access key
// (iothub.DefaultSASLifetime when 0); since a token's expiry has whole-second resolution it must be at least a second.
func NewCredential(c *ConnectionString, lifetime time.Duration) (Credential, error) {
	if c == nil {
		return nil, errors.New("no connection string")
	}
	switch {
	case c.SharedAccessKey != "":
		if lifetime == 0 {
			lifetime = iothub.DefaultSASLifetime
		}
		if lifetime < time.Second {
			return nil, fmt.Errorf("SAS token lifetime %v is too short: want at least 1s", lifetime)
		}
		// Fail now, not at the first connect, if the key is unusable.
		if _, err := iothub.BuildSAS(c.ResourceURI(), c.SharedAccessKey, c.SharedAccessKeyName, time.Unix(1, 0)); err != nil {
			return nil, err
		}
		return &keyCredential{resource: c.ResourceURI(), key: c.SharedAccessKey, keyName: c.SharedAccessKeyName,
			lifetime: lifetime}, nil
	case c.SharedAccessSignature != "":
		sas, err := iothub.ParseSAS(c.SharedAccessSignature)
		if err != nil {
			return nil, fmt.Errorf("connection string SharedAccessSignature: %w", err)
		}
		if !scopeCovers(sas.Resource, c.ResourceURI()) {
			return nil, fmt.Errorf("SharedAccessSignature is for %q, which does not cover %q", sas.Resource, c.ResourceURI())
		}
		return &fixedToken{token: c.SharedAccessSignature, expiry: sas.Expiry}, nil
	case c.X509:
		return x509Credential{}, nil
	}
	return nil, errors.New("connection string has no credential")
}

// scopeCovers reports whether the token resource is resource or one of its parent paths. Host names compare
// without case; the path is case-sensitive, as device ids are.
func scopeCovers(tokenResource, resource string) bool {
	scope := strings.Split(strings.TrimSuffix(tokenResource, "/"), "/")
	want := strings.Split(resource, "/")
	if len(scope) > len(want) || !strings.EqualFold(scope[0], want[0]) {
		return false
	}
	for i := 1; i < len(scope); i++ {
		if scope[i] != want[i] {
			return false
		}
	}
	return true
}

// keyCredential signs a fresh token on every call.
type keyCredential struct {
	resource, key, keyName string
	lifetime               time.Duration
}

func (k *keyCredential) Token(now time.Time) (string, time.Time, error) {
	expiry := time.Unix(now.Add(k.lifetime).Unix(), 0) // the token carries whole seconds
	token, err := iothub.BuildSAS(k.resource, k.key, k.keyName, expiry)
	if err != nil {
		return "", time.Time{}, err
	}
	return token, expiry, nil
}

func (k *keyCredential) Renewable() bool { return true }

// fixedToken is a token the user made; nothing here can renew it.
type fixedToken struct {
	token  string
	expiry time.Time
}

func (f *fixedToken) Token(now time.Time) (string, time.Time, error) {
	if !now.Before(f.expiry) {
		return "", f.expiry, fmt.Errorf("%w at %s", ErrTokenExpired, f.expiry.UTC().Format(time.RFC3339))
	}
	return f.token, f.expiry, nil
}

func (f *fixedToken) Renewable() bool { return false }

// x509Credential authenticates with the TLS client certificate; there is no token.
type x509Credential struct{}

func (x509Credential) Token(time.Time) (string, time.Time, error) { return "", time.Time{}, nil }

func (x509Credential) Renewable() bool { return false }

// LoadClientCertificate reads a PEM certificate (chain) and its PEM private key for X.509 authentication.
func LoadClientCertificate(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := readPEM("client certificate", certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readPEM("client key", keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	if !hasBlock(certPEM, func(t string) bool { return t == "CERTIFICATE" }) {
		return tls.Certificate{}, fmt.Errorf("client certificate file %s holds no PEM CERTIFICATE block", certFile)
	}
	if !hasBlock(keyPEM, func(t string) bool { return strings.HasSuffix(t, "PRIVATE KEY") }) {
		return tls.Certificate{}, fmt.Errorf("client key file %s holds no PEM PRIVATE KEY block", keyFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("client certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

func readPEM(what, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("%s file not given", what)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s file: %w", what, err)
	}
	return b, nil
}

func hasBlock(data []byte, typeOK func(string) bool) bool {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return false
		}
		if typeOK(block.Type) {
			return true
		}
	}
}

// CertificateFiles is a client certificate that follows its files: read again when either file changed (its size
// or modification time), so a certificate rotated on disk is presented on the next connect without recreating the
// client. A rotation caught half-written keeps the last certificate that loaded until the files are whole again.
type CertificateFiles struct {
	certFile, keyFile string

	mu    sync.Mutex
	cert  *tls.Certificate
	stamp [2]fileStamp
}

type fileStamp struct {
	size int64
	mod  time.Time
}

// NewCertificateFiles loads the certificate and key once, so a missing or bad file is refused at once.
func NewCertificateFiles(certFile, keyFile string) (*CertificateFiles, error) {
	f := &CertificateFiles{certFile: certFile, keyFile: keyFile}
	stamp := f.stamps()
	cert, err := LoadClientCertificate(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	f.cert, f.stamp = &cert, stamp
	return f, nil
}

func (f *CertificateFiles) stamps() [2]fileStamp {
	var s [2]fileStamp
	for i, path := range []string{f.certFile, f.keyFile} {
		if fi, err := os.Stat(path); err == nil {
			s[i] = fileStamp{fi.Size(), fi.ModTime()}
		}
	}
	return s
}

// Current returns the certificate of the files as they are now.
func (f *CertificateFiles) Current() *tls.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	if stamp := f.stamps(); stamp != f.stamp {
		if cert, err := LoadClientCertificate(f.certFile, f.keyFile); err == nil {
			f.cert, f.stamp = &cert, stamp
		}
	}
	return f.cert
}

// GetClientCertificate is tls.Config's hook: each handshake presents Current.
func (f *CertificateFiles) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return f.Current(), nil
}

// CertificateNotAfter reads when the first certificate in a PEM file expires, for an authentication failure's
// message.
func CertificateNotAfter(certFile string) (time.Time, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return time.Time{}, err
	}
	for {
		var block *pem.Block
		if block, b = pem.Decode(b); block == nil {
			return time.Time{}, fmt.Errorf("%s holds no PEM certificate", certFile)
		}
		if block.Type == "CERTIFICATE" {
			leaf, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return time.Time{}, err
			}
			return leaf.NotAfter, nil
		}
	}
}
