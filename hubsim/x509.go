package hubsim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// X.509 device authentication, as IoT Hub does it: a device registered with the thumbprints of its self-signed (or
// any) certificate, or as CA-authenticated, whose certificate must chain to a CA registered on the hub and name the
// device in its subject CN. The hub asks every TLS client for a certificate and checks it on CONNECT, so a wrong or
// expired one is answered CONNACK 5 rather than a failed handshake.

// Device authentication types, as IoT Hub's registry names them.
const (
	AuthSAS        = "sas"
	AuthSelfSigned = "selfSigned"
	AuthCA         = "certificateAuthority"
)

// deviceCAsFile holds the CA certificates registered on the hub (PEM, one after another).
const deviceCAsFile = "device-cas.pem"

// Thumbprint is a certificate's SHA-1 thumbprint in upper-case hex, the form IoT Hub and the Azure portal show;
// hubsim also accepts SHA-256 thumbprints.
func Thumbprint(c *x509.Certificate) string {
	sum := sha1.Sum(c.Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

func thumbprintMatches(c *x509.Certificate, prints []string) bool {
	s256 := sha256.Sum256(c.Raw)
	for _, p := range prints {
		p = strings.ReplaceAll(p, ":", "")
		if strings.EqualFold(p, Thumbprint(c)) || strings.EqualFold(p, hex.EncodeToString(s256[:])) {
			return true
		}
	}
	return false
}

// nth is list[i], "" when the list is shorter.
func nth(list []string, i int) string {
	if i < len(list) {
		return list[i]
	}
	return ""
}

// peerCertificates is the certificate chain a device presented in its TLS handshake, leaf first; nil without TLS.
func peerCertificates(c net.Conn) []*x509.Certificate {
	switch c := c.(type) {
	case *tls.Conn:
		return c.ConnectionState().PeerCertificates
	case *wsConn:
		return peerCertificates(c.ws.NetConn()) // hub: the TLS connection; DPS: the servedConn under it
	case *servedConn:
		return peerCertificates(c.Conn)
	}
	return nil
}

// checkValidity reports why a leaf's validity period does not cover now, "" when it does.
func checkValidity(leaf *x509.Certificate, now time.Time) string {
	switch {
	case now.After(leaf.NotAfter):
		return "certificate expired at " + leaf.NotAfter.UTC().Format(time.RFC3339)
	case now.Before(leaf.NotBefore):
		return "certificate not valid before " + leaf.NotBefore.UTC().Format(time.RFC3339)
	}
	return ""
}

// chainsTo reports whether the presented chain leads from its leaf to one of roots.
func chainsTo(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) error {
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// caStore is the CA certificates registered on a hub, kept in its state dir.
type caStore struct {
	path string
	mu   sync.Mutex
	pems []byte
	pool *x509.CertPool
}

func loadCAStore(dir string) (*caStore, error) {
	s := &caStore{path: filepath.Join(dir, deviceCAsFile), pool: x509.NewCertPool()}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	if _, err := parseCerts(b); err != nil {
		return nil, fmt.Errorf("%s: %w", s.path, err)
	}
	s.pems = b
	s.pool.AppendCertsFromPEM(b)
	return s, nil
}

func parseCerts(pemBytes []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, pemBytes = pem.Decode(pemBytes)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

// add registers CA certificates (PEM); one already registered is kept once.
func (s *caStore) add(pemBytes []byte) error {
	certs, err := parseCerts(pemBytes)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.pems
	for _, c := range certs {
		if !c.IsCA {
			return fmt.Errorf("certificate %q is not a CA", c.Subject.CommonName)
		}
		block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		if !bytes.Contains(next, block) {
			next = append(append([]byte(nil), next...), block...)
		}
	}
	if err := os.WriteFile(s.path, next, 0o644); err != nil {
		return err
	}
	s.pems = next
	for _, c := range certs {
		s.pool.AddCert(c)
	}
	return nil
}

func (s *caStore) roots() *x509.CertPool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pool.Clone()
}

// AddCA registers CA certificates (PEM) on the hub, as a verified CA of IoT Hub: devices registered as
// CA-authenticated connect with certificates that chain to one. It persists in the state dir.
func (h *Hub) AddCA(pemBytes []byte) error { return h.deviceCAs.add(pemBytes) }

// SetThumbprints replaces a self-signed device's one or two thumbprints, as when its certificate is rotated;
// a live connection stays up, since IoT Hub checks a certificate at connect only.
func (h *Hub) SetThumbprints(id string, prints []string) error {
	if len(prints) == 0 || len(prints) > 2 {
		return fmt.Errorf("give one or two thumbprints, got %d", len(prints))
	}
	h.mu.Lock()
	rec, ok := h.reg.devices[id]
	if !ok {
		h.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if rec.Auth != AuthSelfSigned {
		h.mu.Unlock()
		return fmt.Errorf("device %s is not a %s device", id, AuthSelfSigned)
	}
	rec.Thumbprints = append([]string(nil), prints...)
	saved := h.reg.persist(rec)
	h.mu.Unlock()
	return saved.wait()
}

// authenticateCert is authenticate for a connect with no password whose TLS handshake presented a certificate.
// (Kept beside authenticate rather than inside it, to merge with the AMQP front's split of authenticate.)
func (h *Hub) authenticateCert(id identity, c credentials) (identity, time.Time, *rejection) {
	if c.clientID != id.String() {
		return id, time.Time{}, reject(rejectIdentifier, fmt.Sprintf("client id %q does not match user name identity %q", c.clientID, id))
	}
	now := time.Now()
	if r := h.authenticateX509(id, c.certs, now); r != nil {
		return id, time.Time{}, r
	}
	h.mu.Lock()
	refusedUntil := h.refused[id.String()]
	h.mu.Unlock()
	if now.Before(refusedUntil) {
		return id, time.Time{}, reject(rejectUnavailable, "fault injection: connects refused until "+refusedUntil.Format(time.RFC3339))
	}
	return id, now.AddDate(100, 0, 0), nil // IoT Hub checks a certificate at connect only
}

// authenticateX509 checks a CONNECT without password whose TLS handshake presented a certificate chain.
func (h *Hub) authenticateX509(id identity, chain []*x509.Certificate, now time.Time) *rejection {
	h.mu.Lock()
	rec, ok := h.reg.devices[id.String()]
	var auth string
	var prints []string
	var disabled bool
	if ok {
		auth, prints, disabled = rec.Auth, rec.Thumbprints, rec.Disabled
	}
	h.mu.Unlock()
	if !ok {
		return reject(rejectIdentifier, "device "+id.String()+" is not registered")
	}
	leaf := chain[0]
	switch auth {
	case AuthSelfSigned:
		if !thumbprintMatches(leaf, prints) {
			return reject(rejectNotAuthorized, "certificate thumbprint "+Thumbprint(leaf)+" is not the device's")
		}
		if why := checkValidity(leaf, now); why != "" {
			return reject(rejectNotAuthorized, why)
		}
	case AuthCA:
		if leaf.Subject.CommonName != id.device {
			return reject(rejectNotAuthorized, fmt.Sprintf("certificate CN %q is not the device id", leaf.Subject.CommonName))
		}
		if why := checkValidity(leaf, now); why != "" {
			return reject(rejectNotAuthorized, why)
		}
		if err := chainsTo(chain, h.deviceCAs.roots(), now); err != nil {
			return reject(rejectNotAuthorized, "certificate does not chain to a registered CA: "+err.Error())
		}
	default:
		return reject(rejectNotAuthorized, "device "+id.String()+" authenticates with SAS tokens, not certificates")
	}
	if disabled {
		return reject(rejectDisabled, "device "+id.String()+" is disabled")
	}
	return nil
}

// CertOptions describe a test certificate for MintCert.
type CertOptions struct {
	CommonName string
	Issuer     *Cert     // signer; nil = self-signed
	CA         bool      // may sign other certificates
	NotBefore  time.Time // zero = an hour ago
	NotAfter   time.Time // zero = in a year; in the past for an expired certificate
}

// Cert is a minted certificate and its private key, PEM encoded.
type Cert struct {
	CertPEM    string `json:"certPem"`
	KeyPEM     string `json:"keyPem"`
	Thumbprint string `json:"thumbprint"` // SHA-1, upper-case hex
}

// MintCert makes a certificate for tests: a device certificate (self-signed or signed by Issuer), valid or
// expired, or a CA to sign device certificates with.
func MintCert(o CertOptions) (Cert, error) {
	if o.CommonName == "" {
		return Cert{}, errors.New("a certificate needs a common name")
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.AddDate(1, 0, 0)
	}
	if !o.NotAfter.After(o.NotBefore) {
		o.NotBefore = o.NotAfter.Add(-24 * time.Hour)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Cert{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: o.CommonName},
		NotBefore: o.NotBefore, NotAfter: o.NotAfter, BasicConstraintsValid: true, IsCA: o.CA,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if o.CA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	parent, signer := tmpl, any(key)
	if o.Issuer != nil {
		pair, err := tls.X509KeyPair([]byte(o.Issuer.CertPEM), []byte(o.Issuer.KeyPEM))
		if err != nil {
			return Cert{}, fmt.Errorf("issuer: %w", err)
		}
		if parent, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return Cert{}, err
		}
		signer = pair.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return Cert{}, err
	}
	certPEM, keyPEM, err := encodeCertAndKey(der, key)
	if err != nil {
		return Cert{}, err
	}
	c, _ := x509.ParseCertificate(der)
	return Cert{CertPEM: string(certPEM), KeyPEM: string(keyPEM), Thumbprint: Thumbprint(c)}, nil
}

// handleAddCA registers CA certificates: body {"pem": "..."}.
func (h *Hub) handleAddCA(w http.ResponseWriter, r *http.Request) {
	var req struct {
		PEM string `json:"pem"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := h.AddCA([]byte(req.PEM)); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleMintCert mints a test certificate: body {"commonName", "ca"?, "issuer"?: {"certPem","keyPem"},
// "validDays"?, "expired"?}.
func handleMintCert(w http.ResponseWriter, r *http.Request) {
	var req struct {
		CommonName string  `json:"commonName"`
		CA         bool    `json:"ca"`
		Issuer     *Cert   `json:"issuer"`
		ValidDays  float64 `json:"validDays"`
		Expired    bool    `json:"expired"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	o := CertOptions{CommonName: req.CommonName, CA: req.CA, Issuer: req.Issuer}
	if req.ValidDays > 0 {
		o.NotAfter = time.Now().Add(time.Duration(req.ValidDays * float64(24*time.Hour)))
	}
	if req.Expired {
		o.NotAfter = time.Now().Add(-time.Hour)
	}
	c, err := MintCert(o)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, c)
}
