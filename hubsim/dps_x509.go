package hubsim

import (
	"crypto/x509"
	"errors"
	"time"
)

// hubCred is how DPS registers a device on its hub: keys, or X.509 (thumbprints, or a CA the hub must trust).
type hubCred struct {
	primary, secondary string
	auth               string   // "" = SAS keys
	thumbprints        []string // AuthSelfSigned
	caPEM              string   // AuthCA: registered on the hub first
}

// check validates an X.509 attestation of an individual enrollment (thumbprints) or a group (CA certificate).
func (x *X509Attestation) check(group bool) error {
	switch {
	case x == nil:
		return errors.New("an x509 attestation needs \"x509\"")
	case group && (x.CACertificate == "" || len(x.Thumbprints) > 0):
		return errors.New("an x509 group needs a caCertificate (PEM) and no thumbprints")
	case !group && (len(x.Thumbprints) == 0 || len(x.Thumbprints) > 2 || x.CACertificate != ""):
		return errors.New("an x509 individual enrollment needs one or two thumbprints and no caCertificate")
	}
	if group {
		certs, err := parseCerts([]byte(x.CACertificate))
		if err != nil {
			return err
		}
		if !certs[0].IsCA {
			return errors.New("caCertificate is not a CA")
		}
	}
	return nil
}

// verify checks a device's certificate chain: its CN is the registration id, it is valid now, and it has a listed
// thumbprint (individual) or chains to the group's CA.
func (x *X509Attestation) verify(regID string, chain []*x509.Certificate, group bool) (hubCred, bool) {
	leaf, now := chain[0], time.Now()
	if leaf.Subject.CommonName != regID || checkValidity(leaf, now) != "" {
		return hubCred{}, false
	}
	if !group {
		return hubCred{auth: AuthSelfSigned, thumbprints: x.Thumbprints}, thumbprintMatches(leaf, x.Thumbprints)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(x.CACertificate))
	return hubCred{auth: AuthCA, caPEM: x.CACertificate}, chainsTo(chain, roots, now) == nil
}
