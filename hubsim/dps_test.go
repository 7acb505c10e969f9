package hubsim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotconn/iotconn/core/iothub"
)

// startDPS starts n hubs (sharing the first one's CA) and a DPS over them with MQTT, HTTPS and control listeners.
func startDPS(t testing.TB, n int, mod func(*DPSConfig)) (*DPS, []*Hub) {
	t.Helper()
	hubs := make([]*Hub, n)
	for i := range hubs {
		hubs[i] = startHub(t, func(c *Config) {
			if i > 0 {
				c.CADir = hubs[0].cfg.Dir
			}
		})
	}
	cfg := DPSConfig{Hubs: hubs, MQTTAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0", ControlAddr: "127.0.0.1:0",
		RetryAfter: time.Second}
	if mod != nil {
		mod(&cfg)
	}
	d, err := StartDPS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d, hubs
}

func setEnrollment(t testing.TB, d *DPS, e Enrollment) Enrollment {
	t.Helper()
	got, err := d.SetEnrollment(e)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func dpsToken(t testing.TB, d *DPS, regID, key string, expiry time.Time) string {
	t.Helper()
	tok, err := iothub.BuildSAS(iothub.DPSResource(d.IDScope(), regID), key, iothub.DPSSASKeyName, expiry)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dpsResponse is one answer DPS published.
type dpsResponse struct {
	status, retryAfter int
	rid                string
	body               map[string]any
}

// dpsDevice is a raw MQTT registration connection.
type dpsDevice struct {
	t      testing.TB
	client paho.Client
	res    chan dpsResponse
	rid    int
}

// dialDPS connects over MQTT and subscribes to the responses; it returns the CONNACK code and error when refused.
func dialDPS(t testing.TB, d *DPS, regID, username, password string) (*dpsDevice, byte, error) {
	t.Helper()
	pool, err := d.cfg.Hubs[0].CAPool()
	if err != nil {
		t.Fatal(err)
	}
	return dialDPSWith(t, d, &tls.Config{RootCAs: pool, ServerName: "localhost"}, regID, username, password)
}

func dialDPSWith(t testing.TB, d *DPS, tc *tls.Config, regID, username, password string) (*dpsDevice, byte, error) {
	t.Helper()
	return dialDPSAt(t, d, "ssl://"+d.MQTTAddr(), tc, regID, username, password)
}

// dialDPSAt is dialDPS at a broker URL (ssl:// or wss://).
func dialDPSAt(t testing.TB, d *DPS, broker string, tc *tls.Config, regID, username, password string) (*dpsDevice, byte, error) {
	t.Helper()
	if username == "" {
		username = iothub.DPSUsername(d.IDScope(), regID) + "&ClientVersion=test"
	}
	dev := &dpsDevice{t: t, res: make(chan dpsResponse, 16)}
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(regID).SetUsername(username).
		SetPassword(password).SetTLSConfig(tc).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).SetConnectTimeout(waitLimit)
	dev.client = paho.NewClient(opts)
	tok := dev.client.Connect()
	if !tok.WaitTimeout(waitLimit) {
		t.Fatal("DPS connect did not finish")
	}
	if err := tok.Error(); err != nil {
		return nil, tok.(*paho.ConnectToken).ReturnCode(), err
	}
	t.Cleanup(func() { dev.client.Disconnect(0) })
	sub := dev.client.Subscribe(iothub.TopicDPSResponses+"#", 1, func(_ paho.Client, m paho.Message) {
		status, rid, ra, ok := iothub.ParseDPSResponse(m.Topic())
		if !ok {
			t.Errorf("response on %s", m.Topic())
			return
		}
		r := dpsResponse{status: status, rid: rid, retryAfter: ra}
		if err := json.Unmarshal(m.Payload(), &r.body); err != nil {
			t.Errorf("response body %q: %v", m.Payload(), err)
		}
		dev.res <- r
	})
	if !sub.WaitTimeout(waitLimit) || sub.Error() != nil {
		t.Fatalf("subscribe: %v", sub.Error())
	}
	return dev, 0, nil
}

// request publishes to topic(rid) and waits for the answer with that rid.
func (dev *dpsDevice) request(topic func(rid string) string, body string) dpsResponse {
	dev.t.Helper()
	dev.rid++
	rid := fmt.Sprint(dev.rid)
	if tok := dev.client.Publish(topic(rid), 1, false, body); !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		dev.t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case r := <-dev.res:
		if r.rid != rid {
			dev.t.Fatalf("answer to rid %s, want %s", r.rid, rid)
		}
		return r
	case <-time.After(waitLimit):
		dev.t.Fatal("no DPS answer")
	}
	return dpsResponse{}
}

func (dev *dpsDevice) register(regID string) dpsResponse {
	return dev.request(iothub.DPSRegisterTopic, `{"registrationId":"`+regID+`"}`)
}

func (dev *dpsDevice) poll(opID string) dpsResponse {
	return dev.request(func(rid string) string { return iothub.DPSStatusTopic(rid, opID) }, "")
}

// provisionMQTT registers and polls until assigned, as the SDKs do, and returns the registration state.
func provisionMQTT(t testing.TB, d *DPS, regID, key string) map[string]any {
	t.Helper()
	pool, err := d.cfg.Hubs[0].CAPool()
	if err != nil {
		t.Fatal(err)
	}
	return provisionMQTTWith(t, d, &tls.Config{RootCAs: pool, ServerName: "localhost"}, regID, key)
}

// provisionMQTTVerified is provisionMQTT verifying DPS's certificate by the IP it dials.
func provisionMQTTVerified(t testing.TB, d *DPS, pool *x509.CertPool, regID, key string) map[string]any {
	t.Helper()
	return provisionMQTTWith(t, d, &tls.Config{RootCAs: pool}, regID, key)
}

func provisionMQTTWith(t testing.TB, d *DPS, tc *tls.Config, regID, key string) map[string]any {
	t.Helper()
	dev, _, err := dialDPSWith(t, d, tc, regID, "", dpsToken(t, d, regID, key, time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.client.Disconnect(0)
	r := dev.register(regID)
	if r.status != 202 || r.body["status"] != "assigning" || r.retryAfter != d.retryAfterSeconds() {
		t.Fatalf("register answered %d %v retry-after %d", r.status, r.body, r.retryAfter)
	}
	opID := r.body["operationId"].(string)
	for i := 0; ; i++ {
		r = dev.poll(opID)
		if r.status == 200 {
			break
		}
		if r.status != 202 || i == 10 {
			t.Fatalf("poll %d answered %d %v", i, r.status, r.body)
		}
	}
	if r.body["status"] != "assigned" {
		t.Fatalf("operation ended %v", r.body)
	}
	return r.body["registrationState"].(map[string]any)
}

// connectHubAs connects to the hub named host with the device key and returns the CONNACK code.
func connectHubAs(t testing.TB, hubs []*Hub, host, deviceID, key string) byte {
	t.Helper()
	for _, h := range hubs {
		if h.HostName() == host {
			c := creds{clientID: deviceID, username: iothub.Username(host, deviceID, ""),
				password: sasToken(t, iothub.ResourceURI(host, deviceID, ""), key, time.Now().Add(time.Hour))}
			dev, code, _ := connect(t, h, c, "")
			if code == 0 {
				dev.client.Disconnect(0)
			}
			return code
		}
	}
	t.Fatalf("no hub %s", host)
	return 0
}

const (
	docGroupKey  = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
	docRegID     = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
	docDerivedID = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
)

// A device of a group enrollment registers with the key derived as Microsoft documents (their example's group
// key, registration id and derived key), is assigned, and connects to its hub with that key.
func TestDPSGroupDerivedKeyDocumentedExample(t *testing.T) {
	d, hubs := startDPS(t, 1, nil)
	setEnrollment(t, d, Enrollment{GroupID: "doc", PrimaryKey: docGroupKey})
	st := provisionMQTT(t, d, docRegID, docDerivedID)
	if st["assignedHub"] != hubs[0].HostName() || st["deviceId"] != docRegID || st["substatus"] != "initialAssignment" {
		t.Fatalf("registration state %v", st)
	}
	dev, err := hubs[0].Device(docRegID)
	if err != nil || dev.PrimaryKey != docDerivedID {
		t.Fatalf("hub device %+v %v, want primary key %s", dev, err, docDerivedID)
	}
	if code := connectHubAs(t, hubs, hubs[0].HostName(), docRegID, docDerivedID); code != 0 {
		t.Fatalf("hub CONNACK %d", code)
	}
	if reg, _ := d.Registration(docRegID); reg.Count != 1 || reg.Enrollment != "group doc" || d.Registrations() != 1 {
		t.Fatalf("registration %+v, total %d", reg, d.Registrations())
	}
}

// An individual enrollment: 202 assigning with retry-after, "assigning" polls as configured, then 200 assigned
// with the enrollment's device id; the hub device gets both enrollment keys.
func TestDPSIndividualEnrollmentMQTT(t *testing.T) {
	d, hubs := startDPS(t, 1, func(c *DPSConfig) { c.AssigningPolls = 2 })
	e := setEnrollment(t, d, Enrollment{RegistrationID: "reg-1", DeviceID: "device-1"})
	dev, _, err := dialDPS(t, d, "reg-1", "", dpsToken(t, d, "reg-1", e.SecondaryKey, time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	r := dev.register("reg-1")
	opID, _ := r.body["operationId"].(string)
	if r.status != 202 || opID == "" {
		t.Fatalf("register: %+v", r)
	}
	for i := 0; i < 2; i++ {
		if r = dev.poll(opID); r.status != 202 || r.body["status"] != "assigning" || r.retryAfter != 1 {
			t.Fatalf("poll %d: %+v", i, r)
		}
	}
	r = dev.poll(opID)
	st, _ := r.body["registrationState"].(map[string]any)
	if r.status != 200 || st["deviceId"] != "device-1" || st["assignedHub"] != hubs[0].HostName() || st["status"] != "assigned" {
		t.Fatalf("final poll: %+v", r)
	}
	hd, err := hubs[0].Device("device-1")
	if err != nil || hd.PrimaryKey != e.PrimaryKey || hd.SecondaryKey != e.SecondaryKey {
		t.Fatalf("hub device %+v %v", hd, err)
	}
	if r = dev.poll("no-such-operation"); r.status != 404 || r.body["errorCode"] != float64(404002) {
		t.Fatalf("unknown operation: %+v", r)
	}
}

// Wrong keys, unknown registrations, disabled enrollments and malformed connects get DPS's answers.
func TestDPSRefusals(t *testing.T) {
	d, _ := startDPS(t, 1, nil)
	e := setEnrollment(t, d, Enrollment{RegistrationID: "known"})
	setEnrollment(t, d, Enrollment{RegistrationID: "off", Status: StatusDisabled, PrimaryKey: e.PrimaryKey})
	hour := time.Now().Add(time.Hour)

	for _, c := range []struct{ regID, key string }{{"known", randomKey()}, {"stranger", e.PrimaryKey}} {
		dev, _, err := dialDPS(t, d, c.regID, "", dpsToken(t, d, c.regID, c.key, hour))
		if err != nil {
			t.Fatalf("%s: connect: %v", c.regID, err)
		}
		if r := dev.register(c.regID); r.status != 401 || r.body["errorCode"] != float64(401002) {
			t.Fatalf("%s: register answered %+v", c.regID, r)
		}
	}
	// The Python SDK signs without skn; DPS takes that.
	noSkn := sasToken(t, iothub.DPSResource(d.IDScope(), "known"), e.PrimaryKey, hour)
	if dev, _, err := dialDPS(t, d, "known", "", noSkn); err != nil || dev.register("known").status != 202 {
		t.Fatalf("token without skn: %v", err)
	}
	dev, _, err := dialDPS(t, d, "off", "", dpsToken(t, d, "off", e.PrimaryKey, hour))
	if err != nil {
		t.Fatal(err)
	}
	r := dev.poll(dev.register("off").body["operationId"].(string))
	if st, _ := r.body["registrationState"].(map[string]any); r.status != 200 || st["status"] != "disabled" {
		t.Fatalf("disabled enrollment: %+v", r)
	}
	if reg, _ := d.Registration("off"); reg.Count != 0 || d.Registrations() != 1 { // "known" counted, "off" not
		t.Fatalf("refused registrations were counted: %+v", reg)
	}

	for _, c := range []struct {
		name, username, password string
		code                     byte
	}{
		{"expired token", "", dpsToken(t, d, "known", e.PrimaryKey, time.Now().Add(-time.Minute)), 5},
		{"token for another registration", "", dpsToken(t, d, "other", e.PrimaryKey, hour), 5},
		{"other id scope", "0ne99999999/registrations/known/api-version=2019-03-31", dpsToken(t, d, "known", e.PrimaryKey, hour), 5},
		{"hub-style user name", "localhost/known/?api-version=2021-04-12", dpsToken(t, d, "known", e.PrimaryKey, hour), 4},
		{"password not a token", "", "secret", 4},
		{"token signed as a policy", "", sasToken(t, iothub.DPSResource(d.IDScope(), "known"), e.PrimaryKey, hour) + "&skn=provisioningserviceowner", 5},
	} {
		if _, code, err := dialDPS(t, d, "known", c.username, c.password); err == nil || code != c.code {
			t.Errorf("%s: CONNACK %d (%v), want %d", c.name, code, err, c.code)
		}
	}
}

// A group over two hubs spreads its devices by hash; moving it to one hub deletes the others' devices from their
// old hub (connects then refused) and their next registration lands on the new hub with the twin migrated.
// ReprovisionNever keeps a device on its first hub; ReprovisionReset moves it without its twin.
func TestDPSAllocationMoveAndReprovisionPolicies(t *testing.T) {
	d, hubs := startDPS(t, 2, nil)
	a, b := hubs[0].HostName(), hubs[1].HostName()
	g := setEnrollment(t, d, Enrollment{GroupID: "fleet"})
	key := func(regID string) string {
		k, err := iothub.DeriveDeviceKey(g.PrimaryKey, regID)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	perHub := map[string][]string{}
	for i := 0; i < 12; i++ {
		id := fmt.Sprintf("dev-%02d", i)
		st := provisionMQTT(t, d, id, key(id))
		perHub[st["assignedHub"].(string)] = append(perHub[st["assignedHub"].(string)], id)
	}
	if len(perHub[a]) == 0 || len(perHub[b]) == 0 || len(perHub[a])+len(perHub[b]) != 12 {
		t.Fatalf("hashed allocation put %d on %s and %d on %s", len(perHub[a]), a, len(perHub[b]), b)
	}
	movedID := perHub[a][0]
	if _, err := hubs[0].UpdateDesired(movedID, []byte(`{"fan":"on"}`)); err != nil {
		t.Fatal(err)
	}
	if err := d.MoveEnrollmentGroup("fleet", b); err != nil {
		t.Fatal(err)
	}
	if _, err := hubs[0].Device(movedID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("moved device still on the old hub: %v", err)
	}
	if code := connectHubAs(t, hubs, a, movedID, key(movedID)); code != 2 {
		t.Fatalf("old hub answered CONNACK %d, want 2", code)
	}
	st := provisionMQTT(t, d, movedID, key(movedID))
	if st["assignedHub"] != b || st["substatus"] != "deviceDataMigrated" {
		t.Fatalf("after the move: %v", st)
	}
	if tw, _ := hubs[1].Twin(movedID); !bytes.Contains(tw, []byte(`"fan":"on"`)) {
		t.Fatalf("twin not migrated: %s", tw)
	}
	if code := connectHubAs(t, hubs, b, movedID, key(movedID)); code != 0 {
		t.Fatalf("new hub CONNACK %d", code)
	}
	if reg, _ := d.Registration(movedID); reg.Count != 2 {
		t.Fatalf("registrations of the moved device: %d", reg.Count)
	}

	// Policies, on individual enrollments first assigned to hub a.
	for _, c := range []struct {
		policy, wantHub, substatus string
		twinKept                   bool
	}{
		{ReprovisionNever, a, "initialAssignment", true},
		{ReprovisionReset, b, "deviceDataReset", false},
	} {
		e := setEnrollment(t, d, Enrollment{RegistrationID: "p-" + c.policy, IoTHubs: []string{a}, Reprovision: c.policy})
		provisionMQTT(t, d, e.RegistrationID, e.PrimaryKey)
		if _, err := hubs[0].UpdateDesired(e.RegistrationID, []byte(`{"kept":1}`)); err != nil {
			t.Fatal(err)
		}
		e.IoTHubs = []string{b}
		setEnrollment(t, d, e)
		st := provisionMQTT(t, d, e.RegistrationID, e.PrimaryKey)
		if st["assignedHub"] != c.wantHub || st["substatus"] != c.substatus {
			t.Fatalf("%s: %v", c.policy, st)
		}
		tw, _ := hubs[map[string]int{a: 0, b: 1}[c.wantHub]].Twin(e.RegistrationID)
		if bytes.Contains(tw, []byte(`"kept":1`)) != c.twinKept {
			t.Fatalf("%s: twin %s", c.policy, tw)
		}
	}
}

// Throttle answers 429 with its retry-after, error answers 5xx, each for its count of requests; down refuses
// connects until it ends.
func TestDPSFaults(t *testing.T) {
	d, _ := startDPS(t, 1, nil)
	e := setEnrollment(t, d, Enrollment{RegistrationID: "r"})
	dev, _, err := dialDPS(t, d, "r", "", dpsToken(t, d, "r", e.PrimaryKey, time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Fault(DPSFault{Kind: DPSFaultThrottle, Count: 2, RetryAfter: 7 * time.Second}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if r := dev.register("r"); r.status != 429 || r.retryAfter != 7 || r.body["errorCode"] != float64(429001) {
			t.Fatalf("throttled register %d: %+v", i, r)
		}
	}
	if err := d.Fault(DPSFault{Kind: DPSFaultError, Status: 503, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if r := dev.register("r"); r.status != 503 {
		t.Fatalf("error fault: %+v", r)
	}
	if r := dev.register("r"); r.status != 202 {
		t.Fatalf("after the faults: %+v", r)
	}
	if err := d.Fault(DPSFault{Kind: DPSFaultThrottle}); err != nil { // until cleared
		t.Fatal(err)
	}
	if r := dev.register("r"); r.status != 429 || r.retryAfter != 5 {
		t.Fatalf("throttle until cleared: %+v", r)
	}
	if err := d.Fault(DPSFault{Kind: DPSFaultClear}); err != nil {
		t.Fatal(err)
	}
	if r := dev.register("r"); r.status != 202 {
		t.Fatalf("after clear: %+v", r)
	}

	events, stop := d.Events()
	defer stop()
	dev.client.Disconnect(0)
	if err := d.Fault(DPSFault{Kind: DPSFaultDown, Duration: time.Hour}); err != nil { // ended by clear below
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", d.MQTTAddr()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial during down: %v", err)
	}
	if err := d.Fault(DPSFault{Kind: DPSFaultClear}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, func(e Event) bool { return e.Kind == EventFault && e.Reason == "listeners reopened" })
	if _, _, err := dialDPS(t, d, "r", "", dpsToken(t, d, "r", e.PrimaryKey, time.Now().Add(time.Hour))); err != nil {
		t.Fatalf("connect after down: %v", err)
	}
}

// httpsDPS sends a device request to the HTTPS endpoint and returns status, Retry-After and body.
func httpsDPS(t testing.TB, d *DPS, method, path, auth, body string) (int, string, map[string]any) {
	t.Helper()
	pool, err := d.cfg.Hubs[0].CAPool()
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: waitLimit, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequest(method, "https://"+d.HTTPSAddr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: body %q", method, path, b)
	}
	return res.StatusCode, res.Header.Get("Retry-After"), m
}

// The HTTPS endpoint: PUT register, GET operation, SAS in Authorization.
func TestDPSHTTPS(t *testing.T) {
	d, hubs := startDPS(t, 1, nil)
	setEnrollment(t, d, Enrollment{GroupID: "doc", PrimaryKey: docGroupKey})
	base := "/" + d.IDScope() + "/registrations/" + docRegID
	tok := dpsToken(t, d, docRegID, docDerivedID, time.Now().Add(time.Hour))
	status, ra, body := httpsDPS(t, d, "PUT", base+"/register?api-version=2019-03-31", tok, `{"registrationId":"`+docRegID+`"}`)
	opID, _ := body["operationId"].(string)
	if status != 202 || ra != "1" || opID == "" {
		t.Fatalf("register: %d %q %v", status, ra, body)
	}
	status, _, body = httpsDPS(t, d, "GET", base+"/operations/"+opID+"?api-version=2019-03-31", tok, "")
	st, _ := body["registrationState"].(map[string]any)
	if status != 200 || st["assignedHub"] != hubs[0].HostName() || st["deviceId"] != docRegID {
		t.Fatalf("operation: %d %v", status, body)
	}
	status, _, body = httpsDPS(t, d, "POST", base+"?api-version=2021-10-01", tok, "{}")
	if status != 200 || body["assignedHub"] != hubs[0].HostName() || body["status"] != "assigned" {
		t.Fatalf("status lookup: %d %v", status, body)
	}
	if status, _, body = httpsDPS(t, d, "PUT", base+"/register?api-version=2019-03-31", "", "{}"); status != 401 {
		t.Fatalf("no Authorization: %d %v", status, body)
	}
	wrong := dpsToken(t, d, docRegID, randomKey(), time.Now().Add(time.Hour))
	if status, _, body = httpsDPS(t, d, "PUT", base+"/register?api-version=2019-03-31", wrong, "{}"); status != 401 {
		t.Fatalf("wrong key: %d %v", status, body)
	}
	if err := d.Fault(DPSFault{Kind: DPSFaultThrottle, Count: 1, RetryAfter: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if status, ra, _ = httpsDPS(t, d, "GET", base+"/operations/"+opID+"?api-version=2019-03-31", tok, ""); status != 429 || ra != "2" {
		t.Fatalf("throttled poll: %d %q", status, ra)
	}
}

// The control API creates enrollments, moves them and injects faults.
func TestDPSControlAPI(t *testing.T) {
	d, hubs := startDPS(t, 2, nil)
	call := func(method, path, body string, want int) map[string]any {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), method, d.ControlURL()+path, strings.NewReader(body))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, res.StatusCode, b, want)
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return m
	}
	a, b := hubs[0].HostName(), hubs[1].HostName()
	e := call("PUT", "/enrollments/ctl-1", `{"iotHubs":["`+a+`"],"reprovisionPolicy":"reset"}`, 200)
	key, _ := e["primaryKey"].(string)
	if e["registrationId"] != "ctl-1" || key == "" || e["allocationPolicy"] != "hashed" {
		t.Fatalf("enrollment %v", e)
	}
	call("PUT", "/enrollmentGroups/g", `{"primaryKey":"`+docGroupKey+`"}`, 200)
	call("PUT", "/enrollments/bad", `{"iotHubs":["elsewhere:1"]}`, 400)
	call("GET", "/enrollments/none", "", 404)
	if st := provisionMQTT(t, d, "ctl-1", key); st["assignedHub"] != a {
		t.Fatalf("%v", st)
	}
	call("POST", "/enrollments/ctl-1/move", `{"iotHub":"`+b+`"}`, 200)
	if _, err := hubs[0].Device("ctl-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("device still on the old hub: %v", err)
	}
	if st := provisionMQTT(t, d, "ctl-1", key); st["assignedHub"] != b {
		t.Fatalf("%v", st)
	}
	if reg := call("GET", "/registrations/ctl-1", "", 200); reg["registrations"] != float64(2) {
		t.Fatalf("%v", reg)
	}
	if n := call("GET", "/registrations", "", 200); n["registrations"] != float64(2) {
		t.Fatalf("%v", n)
	}
	call("POST", "/faults", `{"kind":"throttle","count":1,"retryAfter":4}`, 200)
	call("POST", "/faults", `{"kind":"error","status":404}`, 400)
	status, ra, _ := httpsDPS(t, d, "PUT", "/"+d.IDScope()+"/registrations/ctl-1/register?api-version=2019-03-31",
		dpsToken(t, d, "ctl-1", key, time.Now().Add(time.Hour)), "{}")
	if status != 429 || ra != "4" {
		t.Fatalf("throttled: %d %q", status, ra)
	}
	call("DELETE", "/enrollmentGroups/g", "", 204)
	call("DELETE", "/enrollmentGroups/g", "", 404)
}

// The CLI runs two hubs and a DPS with an enrollment group; a device registers over HTTPS and gets one of them.
func TestCLIRunsHubsAndDPS(t *testing.T) {
	bin := buildCLI(t)
	dir := t.TempDir()
	p := startCLI(t, bin, "--dir", dir, "--mqtt", "127.0.0.1:0", "--control", "127.0.0.1:0", "--hub", "127.0.0.1:0",
		"--dps-mqtt", "127.0.0.1:0", "--dps-https", "127.0.0.1:0", "--dps-retry-after", "1s",
		"--enrollment-group", "doc:"+docGroupKey, "--enrollment", "solo")
	lines := strings.Join(p.startupLines(t), "\n")
	find := func(pat string) []string {
		t.Helper()
		m := regexp.MustCompile(`(?m)` + pat).FindStringSubmatch(lines)
		if m == nil {
			t.Fatalf("no line %s in\n%s", pat, lines)
		}
		return m
	}
	hub1 := "localhost:" + find(`^hubsim: mqtts 127\.0\.0\.1:(\d+)$`)[1]
	hub2 := find(`^hubsim: hub2 (localhost:\d+) mqtts 127\.0\.0\.1:\d+ control http://127\.0\.0\.1:\d+$`)[1]
	httpsAddr := find(`^hubsim: dps https (127\.0\.0\.1:\d+)$`)[1]
	find(`^hubsim: dps mqtts 127\.0\.0\.1:\d+$`)
	find(`^hubsim: dps control http://127\.0\.0\.1:\d+$`)
	scope := find(`^hubsim: dps idscope (\S+)$`)[1]
	find(`^hubsim: dps group doc ` + regexp.QuoteMeta(docGroupKey) + `$`)
	find(`^hubsim: dps enrollment solo [A-Za-z0-9+/=]+$`)

	pool := x509.NewCertPool()
	ca, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("CA: %v", err)
	}
	c := &http.Client{Timeout: waitLimit, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	defer c.CloseIdleConnections()
	tok, _ := iothub.BuildSAS(iothub.DPSResource(scope, docRegID), docDerivedID, iothub.DPSSASKeyName, time.Now().Add(time.Hour))
	req, _ := http.NewRequest("PUT", "https://"+httpsAddr+"/"+scope+"/registrations/"+docRegID+"/register?api-version=2019-03-31", strings.NewReader("{}"))
	req.Header.Set("Authorization", tok)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var op struct{ OperationID string }
	_ = json.NewDecoder(res.Body).Decode(&op)
	res.Body.Close()
	req, _ = http.NewRequest("GET", "https://"+httpsAddr+"/"+scope+"/registrations/"+docRegID+"/operations/"+op.OperationID+"?api-version=2019-03-31", nil)
	req.Header.Set("Authorization", tok)
	if res, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	var done struct{ RegistrationState RegistrationState }
	_ = json.NewDecoder(res.Body).Decode(&done)
	res.Body.Close()
	if h := done.RegistrationState.AssignedHub; h != hub1 && h != hub2 {
		t.Fatalf("assigned %q, hubs %s and %s", h, hub1, hub2)
	}
	for i := 0; ; i++ {
		if l := p.next(t); strings.HasPrefix(l, "hubsim: dps register "+docRegID+" ") {
			break
		}
		if i == 100 {
			t.Fatal("no register log line")
		}
	}
	p.stop(t)
}

// Each hub and the DPS listen on a loopback address of their own with certificates covering it: a device
// verifies DPS and its hub by IP (no ServerName override), and the assigned hub is named by its address. When the
// standard ports are free (root, and no one on them), the same runs on 8883 and 443 with host names without ports.
func TestDPSAndHubsOnOwnLoopbackAddresses(t *testing.T) {
	for _, c := range []struct {
		name                 string
		hubPort, mqtt, https string
		wantHub1, wantHub2   string
	}{
		{"free ports", "0", "0", "0", "", ""},
		{"standard ports", "8883", "8883", "443", "127.0.0.12", "127.0.0.13"},
	} {
		t.Run(c.name, func(t *testing.T) {
			hubs := make([]*Hub, 2)
			for i := range hubs {
				cfg := Config{Dir: t.TempDir(), MQTTAddr: fmt.Sprintf("127.0.0.%d:%s", 12+i, c.hubPort)}
				if i > 0 {
					cfg.CADir = hubs[0].cfg.Dir
				}
				h, err := Start(cfg)
				if err != nil && c.hubPort != "0" {
					t.Skipf("standard ports unavailable: %v", err)
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = h.Close() })
				hubs[i] = h
			}
			d, err := StartDPS(DPSConfig{Hubs: hubs, MQTTAddr: "127.0.0.14:" + c.mqtt, HTTPSAddr: "127.0.0.14:" + c.https})
			if err != nil && c.hubPort != "0" {
				t.Skipf("standard ports unavailable: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Close() })
			for i, h := range hubs {
				want := []string{c.wantHub1, c.wantHub2}[i]
				if want == "" {
					want = h.Addr()
				}
				if h.HostName() != want {
					t.Fatalf("hub %d host name %q, want %q", i, h.HostName(), want)
				}
			}
			e := setEnrollment(t, d, Enrollment{RegistrationID: "ip-dev", IoTHubs: []string{hubs[1].HostName()}})
			pool, err := hubs[0].CAPool()
			if err != nil {
				t.Fatal(err)
			}
			for _, addr := range []string{d.MQTTAddr(), d.HTTPSAddr()} {
				conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
				if err != nil {
					t.Fatalf("DPS certificate for %s: %v", addr, err)
				}
				conn.Close()
			}
			st := provisionMQTTVerified(t, d, pool, "ip-dev", e.PrimaryKey)
			host := st["assignedHub"].(string)
			if host != hubs[1].HostName() {
				t.Fatalf("assigned %q", host)
			}
			addr := host
			if _, _, err := net.SplitHostPort(host); err != nil {
				addr = host + ":8883"
			}
			opts := paho.NewClientOptions().AddBroker("ssl://" + addr).SetClientID("ip-dev").
				SetUsername(iothub.Username(host, "ip-dev", "")).
				SetPassword(sasToken(t, iothub.ResourceURI(host, "ip-dev", ""), e.PrimaryKey, time.Now().Add(time.Hour))).
				SetTLSConfig(&tls.Config{RootCAs: pool}).SetAutoReconnect(false).SetConnectRetry(false)
			cl := paho.NewClient(opts)
			if tok := cl.Connect(); !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
				t.Fatalf("hub connect by IP: %v", tok.Error())
			}
			cl.Disconnect(0)
		})
	}
}

// With a quota of 2 registrations a minute the third register is answered 429 with the wait until the next is
// admitted; the registration log lists the two assignments in order.
func TestDPSRegistrationQuotaAndLog(t *testing.T) {
	d, hubs := startDPS(t, 1, func(c *DPSConfig) { c.RegistrationsPerMinute = 2 })
	e := setEnrollment(t, d, Enrollment{GroupID: "q"})
	for i := 0; i < 3; i++ {
		id := fmt.Sprint("q-", i)
		key, _ := iothub.DeriveDeviceKey(e.PrimaryKey, id)
		dev, _, err := dialDPS(t, d, id, "", dpsToken(t, d, id, key, time.Now().Add(time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		r := dev.register(id)
		if i < 2 && r.status != 202 {
			t.Fatalf("register %d: %+v", i, r)
		}
		if i == 2 && (r.status != 429 || r.retryAfter < 1 || r.retryAfter > 30) {
			t.Fatalf("register over the quota: %+v", r)
		}
	}
	log := d.RegistrationLog()
	if len(log) != 2 || log[0].RegistrationID != "q-0" || log[1].RegistrationID != "q-1" ||
		log[0].AssignedHub != hubs[0].HostName() || log[1].At.Before(log[0].At) {
		t.Fatalf("registration log %+v", log)
	}
}

// MQTT over WebSocket shares the HTTPS port, as DPS's 443 does: a device registers over it.
func TestDPSMQTTOverWebSocket(t *testing.T) {
	d, hubs := startDPS(t, 1, nil)
	e := setEnrollment(t, d, Enrollment{RegistrationID: "ws-dev"})
	pool := caPool(t, hubs[0])
	dev, _, err := dialDPSAt(t, d, "wss://"+d.HTTPSAddr()+wsPath, &tls.Config{RootCAs: pool, ServerName: "localhost"},
		"ws-dev", "", dpsToken(t, d, "ws-dev", e.PrimaryKey, time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	r := dev.poll(dev.register("ws-dev").body["operationId"].(string))
	if st, _ := r.body["registrationState"].(map[string]any); r.status != 200 || st["assignedHub"] != hubs[0].HostName() {
		t.Fatalf("over WebSocket: %+v", r)
	}
}
