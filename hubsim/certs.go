package hubsim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// File names in the state directory.
const (
	caCertFile     = "ca.pem"
	caKeyFile      = "ca-key.pem"
	serverCertFile = "server.pem"
	serverKeyFile  = "server-key.pem"
)

// loadOrCreateTLS returns the server TLS config for dir, creating the CA and the server certificate on first use so
// clients that trusted ca.pem once keep trusting the hub across restarts. The certificate covers localhost,
// names, 127.0.0.1, ::1 and ips (the loopback addresses the hub or DPS listens on); one that does not is made again.
func loadOrCreateTLS(dir string, names []string, ips ...net.IP) (*tls.Config, error) {
	caPEM, caKeyPEM, err := readPair(dir, caCertFile, caKeyFile)
	if err != nil {
		return nil, err
	}
	if caPEM == nil {
		if caPEM, caKeyPEM, err = newCA(); err != nil {
			return nil, err
		}
		if err := writePair(dir, caCertFile, caKeyFile, caPEM, caKeyPEM); err != nil {
			return nil, err
		}
		// A new CA invalidates any server certificate signed by an old one.
		_ = os.Remove(filepath.Join(dir, serverCertFile))
	}
	srvPEM, srvKeyPEM, err := readPair(dir, serverCertFile, serverKeyFile)
	if err != nil {
		return nil, err
	}
	if srvPEM == nil || certExpiresSoon(srvPEM) || !certCovers(srvPEM, names, ips) {
		if srvPEM, srvKeyPEM, err = newServerCert(caPEM, caKeyPEM, names, ips); err != nil {
			return nil, err
		}
		if err := writePair(dir, serverCertFile, serverKeyFile, srvPEM, srvKeyPEM); err != nil {
			return nil, err
		}
	}
	cert, err := tls.X509KeyPair(append(srvPEM, caPEM...), srvKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("server certificate in %s: %w", dir, err)
	}
	// Ask for a client certificate without requiring or verifying one: X.509 devices present theirs, checked on
	// CONNECT against the registry (or DPS's enrollments); SAS devices present none.
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequestClientCert}, nil
}

// adoptCA copies caDir's CA into dir, so the hubs and the DPS of one process share the CA clients trust; a server
// certificate in dir signed by another CA is dropped, to be made again.
func adoptCA(dir, caDir string) error {
	caPEM, caKeyPEM, err := readPair(caDir, caCertFile, caKeyFile)
	if err != nil {
		return err
	}
	if caPEM == nil {
		return errors.New("no CA there yet")
	}
	if own, _ := os.ReadFile(filepath.Join(dir, caCertFile)); bytes.Equal(own, caPEM) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dir, serverCertFile))
	return writePair(dir, caCertFile, caKeyFile, caPEM, caKeyPEM)
}

// readPair returns nil, nil, nil when either file is missing.
func readPair(dir, certName, keyName string) (certPEM, keyPEM []byte, err error) {
	certPEM, err = os.ReadFile(filepath.Join(dir, certName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = os.ReadFile(filepath.Join(dir, keyName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	return certPEM, keyPEM, err
}

func writePair(dir, certName, keyName string, certPEM, keyPEM []byte) error {
	if err := os.WriteFile(filepath.Join(dir, keyName), keyPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, certName), certPEM, 0o644)
}

func certExpiresSoon(certPEM []byte) bool {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return true
	}
	c, err := x509.ParseCertificate(block.Bytes)
	return err != nil || time.Until(c.NotAfter) < 24*time.Hour
}

func newCA() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "iotconn hubsim local CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCertAndKey(der, key)
}

// certCovers reports whether a certificate lists every one of names and ips.
func certCovers(certPEM []byte, names []string, ips []net.IP) bool {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return false
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	for _, n := range names {
		if !slices.Contains(c.DNSNames, n) {
			return false
		}
	}
	return true
}

// listenIPs are the IP addresses of listen addresses that name one (not a wildcard or a host name).
func listenIPs(addrs ...string) []net.IP {
	var out []net.IP
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if ip := net.ParseIP(host); err == nil && ip != nil && !ip.IsUnspecified() {
			out = append(out, ip)
		}
	}
	return out
}

func newServerCert(caPEM, caKeyPEM []byte, names []string, ips []net.IP) (certPEM, keyPEM []byte, err error) {
	ca, err := tls.X509KeyPair(caPEM, caKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("stored CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     append([]string{"localhost"}, names...),
		IPAddresses:  append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	return encodeCertAndKey(der, key)
}

func encodeCertAndKey(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
