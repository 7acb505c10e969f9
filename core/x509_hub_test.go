package core

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iotconn/iotconn/hubsim"
	"github.com/iotconn/iotconn/hubsim/hubsimtest"
)

// X.509 against hubsim's certificate authentication: a self-signed device (thumbprint) and a CA-signed one (CN and
// chain), a certificate rotated on disk presented at the next connect of the same client, and an expired one
// ending Disconnected/Bad_Credential with a message that says so, not retried.

func x509Client(t *testing.T, hub *hubsim.Hub, dev, certFile, keyFile string) (*Client, *recorder) {
	t.Helper()
	c, err := NewClient("HostName="+hub.HostName()+";DeviceId="+dev+";x509=true",
		Options{CAFile: hub.CAFile(), CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	c.SetHandlers(r.handlers())
	t.Cleanup(func() { closeAndCheck(t, c) })
	return c, r
}

func TestX509SelfSignedAndCASigned(t *testing.T) {
	h := startHub(t).hub
	dir := t.TempDir()
	self, selfCert, selfKey := hubsimtest.Mint(t, dir, "self", hubsim.CertOptions{CommonName: "x-self"})
	root, _, _ := hubsimtest.Mint(t, dir, "root", hubsim.CertOptions{CommonName: "root", CA: true})
	_, caCert, caKey := hubsimtest.Mint(t, dir, "signed", hubsim.CertOptions{CommonName: "x-ca", Issuer: &root})
	if err := h.AddCA([]byte(root.CertPEM)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.AddDevices([]hubsim.DeviceSpec{
		{ID: "x-self", Auth: hubsim.AuthSelfSigned, Thumbprints: []string{self.Thumbprint}},
		{ID: "x-ca", Auth: hubsim.AuthCA},
	}); err != nil {
		t.Fatal(err)
	}
	for dev, files := range map[string][2]string{"x-self": {selfCert, selfKey}, "x-ca": {caCert, caKey}} {
		c, _ := x509Client(t, h, dev, files[0], files[1])
		mustConnect(t, c)
		sendAll(t, c, 1, dev)
		waitHubMessages(t, h, dev, 1)
	}
}

func TestX509RotationWithoutRecreatingTheClient(t *testing.T) {
	hd := startHub(t)
	h := hd.hub
	dir := t.TempDir()
	old, certFile, keyFile := hubsimtest.Mint(t, dir, "dev", hubsim.CertOptions{CommonName: "x-rot"})
	if _, err := h.AddDevices([]hubsim.DeviceSpec{{ID: "x-rot", Auth: hubsim.AuthSelfSigned,
		Thumbprints: []string{old.Thumbprint}}}); err != nil {
		t.Fatal(err)
	}
	c, r := x509Client(t, h, "x-rot", certFile, keyFile)
	mustConnect(t, c)
	r.expectConnected(t)

	// The new certificate replaces the old one's files; the hub takes only the new one from now on.
	next, nextCert, nextKey := hubsimtest.Mint(t, t.TempDir(), "next", hubsim.CertOptions{CommonName: "x-rot"})
	for src, dst := range map[string]string{nextCert: certFile, nextKey: keyFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.SetThumbprints("x-rot", []string{next.Thumbprint}); err != nil {
		t.Fatal(err)
	}
	if err := h.Fault(hubsim.Fault{Kind: hubsim.FaultKillTCP, Device: "x-rot"}); err != nil {
		t.Fatal(err)
	}
	r.expectRetrying(t)
	r.expectConnected(t) // with the old certificate it would have been CONNACK 5: Disconnected/Bad_Credential
	sendAll(t, c, 1, "rotated")
	waitHubMessages(t, h, "x-rot", 1)
}

func TestX509ExpiredCertificateIsBadCredential(t *testing.T) {
	h := startHub(t).hub
	dir := t.TempDir()
	cert, certFile, keyFile := hubsimtest.Mint(t, dir, "old", hubsim.CertOptions{CommonName: "x-old",
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if _, err := h.AddDevices([]hubsim.DeviceSpec{{ID: "x-old", Auth: hubsim.AuthSelfSigned,
		Thumbprints: []string{cert.Thumbprint}}}); err != nil {
		t.Fatal(err)
	}
	c, r := x509Client(t, h, "x-old", certFile, keyFile)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err := c.Connect(ctx)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeAuth || !strings.Contains(e.Msg, "expired at") {
		t.Fatalf("connect: %v", err)
	}
	r.expectStates(t, state{StatusDisconnected, ReasonBadCredential})
	if d, _ := h.Device("x-old"); d.Connections != 0 {
		t.Fatalf("%d connections accepted", d.Connections)
	}
}

// A provisioned X.509 device: DPS attests it by its certificate, the hub by the same certificate.
func TestProvisionedClientX509(t *testing.T) {
	env := hubsimtest.Start(t, 1, nil)
	cert, certFile, keyFile := hubsimtest.Mint(t, t.TempDir(), "dev", hubsim.CertOptions{CommonName: "x-prov"})
	env.Enroll(t, hubsim.Enrollment{RegistrationID: "x-prov", Attestation: hubsim.AttestationX509,
		X509: &hubsim.X509Attestation{Thumbprints: []string{cert.Thumbprint}}})
	c, _ := provisionedClient(t, env, Provisioning{RegistrationID: "x-prov"},
		Options{CertFile: certFile, KeyFile: keyFile})
	mustConnect(t, c)
	sendAll(t, c, 1, "x509")
	waitHubMessages(t, env.Hubs[0], "x-prov", 1)
	if c.Registrations() != 1 {
		t.Fatalf("%d registrations", c.Registrations())
	}
}
