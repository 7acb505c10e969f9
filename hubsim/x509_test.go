package hubsim

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotconn/iotconn/core/iothub"
)

func mint(t testing.TB, o CertOptions) Cert {
	t.Helper()
	c, err := MintCert(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// connectX509 connects as deviceID with no password and the certificate (plus chain PEMs) and returns the CONNACK code.
func connectX509(t testing.TB, h *Hub, deviceID string, c Cert, chain ...Cert) byte {
	t.Helper()
	certPEM := c.CertPEM
	for _, ch := range chain {
		certPEM += ch.CertPEM
	}
	pair, err := tls.X509KeyPair([]byte(certPEM), []byte(c.KeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	opts := paho.NewClientOptions().AddBroker("ssl://" + h.Addr()).SetClientID(deviceID).
		SetUsername(iothub.Username(h.HostName(), deviceID, "")).
		SetTLSConfig(&tls.Config{RootCAs: caPool(t, h), ServerName: "localhost", Certificates: []tls.Certificate{pair}}).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).SetConnectTimeout(waitLimit)
	cl := paho.NewClient(opts)
	tok := cl.Connect()
	if !tok.WaitTimeout(waitLimit) {
		t.Fatal("connect did not finish")
	}
	code := tok.(*paho.ConnectToken).ReturnCode()
	if tok.Error() == nil {
		cl.Disconnect(0)
	}
	return code
}

// A device registered with the thumbprint of its self-signed certificate connects with it; another certificate,
// an expired one with the registered thumbprint, and a SAS token are refused with CONNACK 5.
func TestX509SelfSignedThumbprint(t *testing.T) {
	h := startHub(t, nil)
	good := mint(t, CertOptions{CommonName: "ss-1"})
	expired := mint(t, CertOptions{CommonName: "ss-1", NotAfter: time.Now().Add(-time.Minute)})
	second := mint(t, CertOptions{CommonName: "anything"}) // thumbprint auth does not look at the CN
	if _, err := h.AddDevices([]DeviceSpec{{ID: "ss-1", Auth: AuthSelfSigned,
		Thumbprints: []string{good.Thumbprint, strings.ToLower(second.Thumbprint)}}}); err != nil {
		t.Fatal(err)
	}
	d, _ := h.Device("ss-1")
	if d.Auth != AuthSelfSigned || d.PrimaryThumbprint != good.Thumbprint || d.PrimaryKey != "" {
		t.Fatalf("device %+v", d)
	}
	if cs, _ := h.ConnectionString("ss-1"); !strings.HasSuffix(cs, ";DeviceId=ss-1;x509=true") {
		t.Fatalf("connection string %s", cs)
	}
	for _, c := range []struct {
		name string
		cert Cert
		want byte
	}{
		{"primary", good, 0},
		{"secondary", second, 0},
		{"unregistered certificate", mint(t, CertOptions{CommonName: "ss-1"}), 5},
		{"expired", expired, 5},
	} {
		if code := connectX509(t, h, "ss-1", c.cert); code != c.want {
			t.Errorf("%s: CONNACK %d, want %d", c.name, code, c.want)
		}
	}
	if err := h.SetDeviceEnabled("ss-1", false); err != nil {
		t.Fatal(err)
	}
	if code := connectX509(t, h, "ss-1", good); code != 3 {
		t.Errorf("disabled: CONNACK %d, want 3", code)
	}
	// A token cannot stand in for the certificate: the device has no keys.
	tok := sasToken(t, iothub.ResourceURI(h.HostName(), "ss-1", ""), randomKey(), time.Now().Add(time.Hour))
	if _, code, _ := connect(t, h, creds{clientID: "ss-1", username: iothub.Username(h.HostName(), "ss-1", ""), password: tok}, ""); code != 5 {
		t.Errorf("token for an X.509 device: CONNACK %d, want 5", code)
	}
	// And a SAS device is not authenticated by a certificate.
	addDevice(t, h, "sas-1")
	if code := connectX509(t, h, "sas-1", mint(t, CertOptions{CommonName: "sas-1"})); code != 5 {
		t.Errorf("certificate for a SAS device: CONNACK %d, want 5", code)
	}
}

// A CA-authenticated device connects with a certificate its CA (registered on the hub, kept across a restart)
// signed, directly or through an intermediate it presents; a CN that is not the device id, another CA and an
// expired certificate get CONNACK 5.
func TestX509CertificateAuthority(t *testing.T) {
	dir := t.TempDir()
	h := startHub(t, func(c *Config) { c.Dir = dir })
	ca := mint(t, CertOptions{CommonName: "test root", CA: true})
	inter := mint(t, CertOptions{CommonName: "test intermediate", CA: true, Issuer: &ca})
	other := mint(t, CertOptions{CommonName: "other root", CA: true})
	if err := h.AddCA([]byte(ca.CertPEM)); err != nil {
		t.Fatal(err)
	}
	if err := h.AddCA([]byte(mint(t, CertOptions{CommonName: "leaf"}).CertPEM)); err == nil {
		t.Fatal("a certificate that is not a CA was registered as one")
	}
	if _, err := h.AddDevices([]DeviceSpec{{ID: "ca-1", Auth: AuthCA}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		cert  Cert
		chain []Cert
		want  byte
	}{
		{"signed by the CA", mint(t, CertOptions{CommonName: "ca-1", Issuer: &ca}), nil, 0},
		{"through an intermediate", mint(t, CertOptions{CommonName: "ca-1", Issuer: &inter}), []Cert{inter}, 0},
		{"CN of another device", mint(t, CertOptions{CommonName: "ca-2", Issuer: &ca}), nil, 5},
		{"another CA", mint(t, CertOptions{CommonName: "ca-1", Issuer: &other}), nil, 5},
		{"expired", mint(t, CertOptions{CommonName: "ca-1", Issuer: &ca, NotAfter: time.Now().Add(-time.Minute)}), nil, 5},
		{"self-signed", mint(t, CertOptions{CommonName: "ca-1"}), nil, 5},
	} {
		if code := connectX509(t, h, "ca-1", c.cert, c.chain...); code != c.want {
			t.Errorf("%s: CONNACK %d, want %d", c.name, code, c.want)
		}
	}
	_ = h.Close()
	h2 := startHub(t, func(c *Config) { c.Dir = dir })
	if code := connectX509(t, h2, "ca-1", mint(t, CertOptions{CommonName: "ca-1", Issuer: &ca})); code != 0 {
		t.Errorf("after a restart: CONNACK %d", code)
	}
}

// The control API mints certificates, registers a CA and registers X.509 devices.
func TestX509ControlAPI(t *testing.T) {
	h := startHub(t, func(c *Config) { c.ControlAddr = "127.0.0.1:0" })
	post := func(path string, body any, want int) []byte {
		t.Helper()
		b, _ := json.Marshal(body)
		res, err := http.Post(h.ControlURL()+path, "application/json", strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		out, _ := io.ReadAll(res.Body)
		if res.StatusCode != want {
			t.Fatalf("POST %s: %d %s, want %d", path, res.StatusCode, out, want)
		}
		return out
	}
	var ca, leaf, self, old Cert
	_ = json.Unmarshal(post("/certificates", map[string]any{"commonName": "root", "ca": true}, 201), &ca)
	_ = json.Unmarshal(post("/certificates", map[string]any{"commonName": "dev-ca", "issuer": ca}, 201), &leaf)
	_ = json.Unmarshal(post("/certificates", map[string]any{"commonName": "dev-ss"}, 201), &self)
	_ = json.Unmarshal(post("/certificates", map[string]any{"commonName": "dev-ss", "expired": true}, 201), &old)
	post("/cas", map[string]string{"pem": ca.CertPEM}, 204)
	post("/devices", []map[string]any{
		{"id": "dev-ca", "auth": AuthCA},
		{"id": "dev-ss", "auth": AuthSelfSigned, "thumbprints": []string{self.Thumbprint, old.Thumbprint}},
	}, 201)
	post("/devices", map[string]any{"id": "bad", "auth": AuthSelfSigned}, 400)
	// Rotation on the registry side: a new certificate's thumbprint replaces the expired one.
	var next Cert
	_ = json.Unmarshal(post("/certificates", map[string]any{"commonName": "dev-ss"}, 201), &next)
	if code := connectX509(t, h, "dev-ss", next); code != 5 {
		t.Fatalf("unregistered next certificate: CONNACK %d", code)
	}
	req, _ := http.NewRequest("PATCH", h.ControlURL()+"/devices/dev-ss",
		strings.NewReader(`{"thumbprints":["`+self.Thumbprint+`","`+next.Thumbprint+`"]}`))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("PATCH thumbprints: %d", res.StatusCode)
	}
	if code := connectX509(t, h, "dev-ss", next); code != 0 {
		t.Fatalf("rotated certificate: CONNACK %d", code)
	}
	post("/devices", map[string]any{"id": "bad", "auth": AuthCA, "key": randomKey()}, 400)
	for _, c := range []struct {
		id   string
		cert Cert
		want byte
	}{{"dev-ca", leaf, 0}, {"dev-ss", self, 0}, {"dev-ss", old, 5}} {
		if code := connectX509(t, h, c.id, c.cert); code != c.want {
			t.Errorf("%s: CONNACK %d, want %d", c.id, code, c.want)
		}
	}
}

// X.509 enrollments: an individual one by thumbprint and a group by CA; the device registers with its certificate
// (over MQTT with no password, over HTTPS with no Authorization), is created on its hub as a self-signed or
// CA-authenticated device, and connects there with the same certificate. A certificate the enrollment does not
// know, or an expired one, is refused 401; one whose CN is not the registration id gets CONNACK 5.
func TestDPSX509Enrollments(t *testing.T) {
	d, hubs := startDPS(t, 1, nil)
	ca := mint(t, CertOptions{CommonName: "fleet root", CA: true})
	solo := mint(t, CertOptions{CommonName: "x-solo"})
	member := mint(t, CertOptions{CommonName: "x-member", Issuer: &ca})
	setEnrollment(t, d, Enrollment{RegistrationID: "x-solo", Attestation: AttestationX509,
		X509: &X509Attestation{Thumbprints: []string{solo.Thumbprint}}})
	setEnrollment(t, d, Enrollment{GroupID: "x-fleet", Attestation: AttestationX509,
		X509: &X509Attestation{CACertificate: ca.CertPEM}})
	if _, err := d.SetEnrollment(Enrollment{GroupID: "bad", Attestation: AttestationX509,
		X509: &X509Attestation{CACertificate: solo.CertPEM}}); err == nil {
		t.Fatal("a group with a CA certificate that is not a CA was accepted")
	}
	pool := caPool(t, hubs[0])
	tlsFor := func(c Cert) *tls.Config {
		pair, err := tls.X509KeyPair([]byte(c.CertPEM), []byte(c.KeyPEM))
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{pair}}
	}
	dev, _, err := dialDPSWith(t, d, tlsFor(solo), "x-solo", "", "")
	if err != nil {
		t.Fatal(err)
	}
	r := dev.poll(dev.register("x-solo").body["operationId"].(string))
	if st, _ := r.body["registrationState"].(map[string]any); r.status != 200 || st["deviceId"] != "x-solo" {
		t.Fatalf("x-solo: %+v", r)
	}
	if hd, _ := hubs[0].Device("x-solo"); hd.Auth != AuthSelfSigned || hd.PrimaryThumbprint != solo.Thumbprint {
		t.Fatalf("hub device %+v", hd)
	}
	if code := connectX509(t, hubs[0], "x-solo", solo); code != 0 {
		t.Fatalf("x-solo on its hub: CONNACK %d", code)
	}

	// The group member over HTTPS.
	c := &http.Client{Timeout: waitLimit, Transport: &http.Transport{TLSClientConfig: tlsFor(member)}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest("PUT", "https://"+d.HTTPSAddr()+"/"+d.IDScope()+"/registrations/x-member/register?api-version=2019-03-31", strings.NewReader("{}"))
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 202 {
		t.Fatalf("x-member register: %d", res.StatusCode)
	}
	if reg, _ := d.Registration("x-member"); reg.State.Status != "assigned" || reg.Enrollment != "group x-fleet" {
		t.Fatalf("x-member: %+v", reg)
	}
	if hd, _ := hubs[0].Device("x-member"); hd.Auth != AuthCA {
		t.Fatalf("hub device %+v", hd)
	}
	if code := connectX509(t, hubs[0], "x-member", member); code != 0 {
		t.Fatalf("x-member on its hub: CONNACK %d", code)
	}

	// A certificate of the right CN that no enrollment knows, and one whose CN is another registration id.
	stranger := mint(t, CertOptions{CommonName: "x-solo"})
	dev, _, err = dialDPSWith(t, d, tlsFor(stranger), "x-solo", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if r := dev.register("x-solo"); r.status != 401 {
		t.Fatalf("unknown certificate: %+v", r)
	}
	if _, code, err := dialDPSWith(t, d, tlsFor(member), "x-solo", "", ""); err == nil || code != 5 {
		t.Fatalf("CN of another registration: CONNACK %d (%v)", code, err)
	}
	// An expired member certificate of the group's CA.
	old := mint(t, CertOptions{CommonName: "x-old", Issuer: &ca, NotAfter: time.Now().Add(-time.Minute)})
	dev, _, err = dialDPSWith(t, d, tlsFor(old), "x-old", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if r := dev.register("x-old"); r.status != 401 {
		t.Fatalf("expired certificate: %+v", r)
	}
}

// iotconn-hubsim mint-cert writes a CA, a device certificate it signs and an expired one, for tests in any language.
func TestCLIMintCert(t *testing.T) {
	bin := buildCLI(t)
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"mint-cert"}, args...)...).Output()
		if err != nil {
			t.Fatalf("mint-cert %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	run("--cn", "root", "--ca", "--out", filepath.Join(dir, "root"))
	print := run("--cn", "dev-1", "--issuer", filepath.Join(dir, "root"), "--out", filepath.Join(dir, "dev-1"))
	run("--cn", "dev-1", "--expired", "--out", filepath.Join(dir, "old"))
	load := func(name string) *x509.Certificate {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	root, leaf, old := load("root"), load("dev-1"), load("old")
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if err := chainsTo([]*x509.Certificate{leaf}, roots, time.Now()); err != nil || Thumbprint(leaf) != print || leaf.Subject.CommonName != "dev-1" {
		t.Fatalf("device certificate: %v, thumbprint %s printed %s", err, Thumbprint(leaf), print)
	}
	if checkValidity(old, time.Now()) == "" {
		t.Fatal("the expired certificate is valid")
	}
	if err := exec.Command(bin, "mint-cert", "--out", filepath.Join(dir, "x")).Run(); err == nil {
		t.Fatal("mint-cert without --cn succeeded")
	}
}
