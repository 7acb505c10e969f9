package hubsim

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/iothub"
)

func TestRejectedCredentialsGetDocumentedCodes(t *testing.T) {
	h := startHub(t, nil)
	d := addDevice(t, h, "d1")
	off := addDevice(t, h, "off")
	if err := h.SetDeviceEnabled(off.ID, false); err != nil {
		t.Fatal(err)
	}
	host := h.HostName()
	res := iothub.ResourceURI(host, "d1", "")
	later := time.Now().Add(time.Hour)
	events, cancel := h.Events()
	defer cancel()
	for _, c := range []struct {
		name string
		mod  func(*creds)
		code byte
	}{
		{"wrong key", func(c *creds) { c.password = sasToken(t, res, randomKey(), later) }, 5},
		{"expired token", func(c *creds) { c.password = sasToken(t, res, d.PrimaryKey, time.Now().Add(-time.Minute)) }, 5},
		{"scope of another device", func(c *creds) {
			c.password = sasToken(t, iothub.ResourceURI(host, "d2", ""), d.PrimaryKey, later)
		}, 5},
		{"unknown device", func(c *creds) {
			c.clientID, c.username = "ghost", iothub.Username(host, "ghost", "")
			c.password = sasToken(t, iothub.ResourceURI(host, "ghost", ""), d.PrimaryKey, later)
		}, 2},
		{"client id not matching user name", func(c *creds) { c.clientID = "d2" }, 2},
		{"disabled device", func(c *creds) {
			c.clientID, c.username = off.ID, iothub.Username(host, off.ID, "")
			c.password = sasToken(t, iothub.ResourceURI(host, off.ID, ""), off.PrimaryKey, later)
		}, 3},
		{"malformed user name", func(c *creds) { c.username = "d1" }, 4},
		{"user name of another host", func(c *creds) { c.username = iothub.Username("myhub.azure-devices.net", "d1", "") }, 4},
		{"password not a SAS token", func(c *creds) { c.password = "hunter2" }, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			cr := validCreds(t, h, d)
			c.mod(&cr)
			_, code, err := connect(t, h, cr, "")
			if err == nil || code != c.code {
				t.Fatalf("got CONNACK %d (%v), want %d", code, err, c.code)
			}
			e := waitEvent(t, events, func(e Event) bool { return e.Kind == EventReject })
			if e.Code != int(c.code) || e.Reason == "" {
				t.Fatalf("reject event %+v, want code %d with a reason", e, c.code)
			}
		})
	}
}

func TestAcceptedCredentialForms(t *testing.T) {
	h := startHub(t, func(c *Config) { c.ClockSkew = time.Minute })
	d := addDevice(t, h, "d1")
	_, port, _ := strings.Cut(h.Addr(), ":")
	for _, c := range []struct {
		name string
		mod  func(*creds)
	}{
		{"port in HostName", func(c *creds) {
			c.username = iothub.Username("localhost:"+port, "d1", "")
			c.password = sasToken(t, iothub.ResourceURI("localhost:"+port, "d1", ""), d.PrimaryKey, time.Now().Add(time.Hour))
		}},
		{"user name without '?' and with extra parameters", func(c *creds) {
			c.username = "localhost/d1/api-version=2018-06-30&DeviceClientType=iothubclient%2F1.0"
		}},
		{"secondary key", func(c *creds) {
			c.password = sasToken(t, iothub.ResourceURI(h.HostName(), "d1", ""), d.SecondaryKey, time.Now().Add(time.Hour))
		}},
		{"hub-wide scope", func(c *creds) {
			c.password = sasToken(t, h.HostName(), d.PrimaryKey, time.Now().Add(time.Hour))
		}},
		{"expired within the clock skew", func(c *creds) {
			c.password = sasToken(t, iothub.ResourceURI(h.HostName(), "d1", ""), d.PrimaryKey, time.Now().Add(-10*time.Second))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cr := validCreds(t, h, d)
			c.mod(&cr)
			dv, code, err := connect(t, h, cr, "")
			if err != nil || code != 0 {
				t.Fatalf("refused with CONNACK %d: %v", code, err)
			}
			dv.client.Disconnect(0)
		})
	}
}

func TestModuleIdentityConnects(t *testing.T) {
	h := startHub(t, nil)
	addDevice(t, h, "d1")
	m, err := h.AddModule("d1", "m1", "")
	if err != nil {
		t.Fatal(err)
	}
	cr := creds{
		clientID: "d1/m1",
		username: iothub.Username(h.HostName(), "d1", "m1"),
		password: sasToken(t, iothub.ResourceURI(h.HostName(), "d1", "m1"), m.PrimaryKey, time.Now().Add(time.Hour)),
	}
	dv, code, err := connect(t, h, cr, "")
	if err != nil {
		t.Fatalf("module refused with %d: %v", code, err)
	}
	dv.subscribe(t, "devices/d1/modules/m1/#", 1) // as the C# SDK does
	dv.subscribe(t, "$iothub/methods/POST/#", 0)
	dv.publish(t, iothub.TelemetryTopic("d1", "m1", "k=v"), 1, []byte("from module"))
	msgs, err := h.WaitMessages(ctxLimit(t), "d1/m1", 1)
	if err != nil || string(msgs[0].Payload) != "from module" || msgs[0].Properties["k"] != "v" {
		t.Fatalf("module telemetry: %+v, %v", msgs, err)
	}
}

func TestOneConnectionPerDevice(t *testing.T) {
	h := startHub(t, nil)
	d := addDevice(t, h, "d1")
	events, cancel := h.Events()
	defer cancel()
	first := mustConnect(t, h, d)
	second := mustConnect(t, h, d)
	first.waitLost(t)
	e := waitEvent(t, events, func(e Event) bool { return e.Kind == EventDisconnect })
	if !strings.Contains(e.Reason, "replaced") {
		t.Fatalf("disconnect reason %q", e.Reason)
	}
	second.publish(t, iothub.TelemetryTopic("d1", "", ""), 1, []byte("still here"))
	if _, err := h.WaitMessages(ctxLimit(t), "d1", 1); err != nil {
		t.Fatal(err)
	}
	got, err := h.Device("d1")
	if err != nil || !got.Connected || got.Connections != 2 {
		t.Fatalf("device state %+v, %v; want connected with 2 connections", got, err)
	}
}

func TestTokenExpiryDropsLiveConnection(t *testing.T) {
	t.Parallel() // waits out a timed fault
	h := startHub(t, func(c *Config) { c.TokenGrace = 200 * time.Millisecond })
	d := addDevice(t, h, "d1")
	events, cancel := h.Events()
	defer cancel()
	cr := validCreds(t, h, d)
	cr.password = sasToken(t, iothub.ResourceURI(h.HostName(), "d1", ""), d.PrimaryKey, time.Now().Add(3*time.Second))
	dv, code, err := connect(t, h, cr, "")
	if err != nil {
		t.Fatalf("refused with %d: %v", code, err)
	}
	dv.waitLost(t)
	e := waitEvent(t, events, func(e Event) bool { return e.Kind == EventDisconnect })
	if e.Reason != "sas token expired" {
		t.Fatalf("disconnect reason %q", e.Reason)
	}
}

func TestTelemetryRecordedWithProperties(t *testing.T) {
	h := startHub(t, func(c *Config) { c.TCPAddr = "127.0.0.1:0" })
	d := addDevice(t, h, "d1")
	dv := mustConnect(t, h, d)
	bag := iothub.EncodeProperties([][2]string{
		{iothub.PropMessageID, "m 1"}, {"z", "1"}, {iothub.PropCorrelationID, "c/1"},
		{iothub.PropContentType, "application/json"}, {iothub.PropContentEncoding, "utf-8"}, {"temp unit", "°C&more"},
		{"$.uid", "ignored"}, {"iothub-ack", "ignored"}, {iothub.CreationTimeProperty, "2026-11-27T06:23:40.123Z"},
		{"a", "2"},
	})
	dv.publish(t, iothub.TelemetryTopic("d1", "", bag), 1, []byte(`{"t":21.5}`))
	dv.publish(t, "devices/d1/messages/events", 0, []byte("bare topic"))
	// The plain TCP listener records the same way.
	plain, code, err := connect(t, h, validCreds(t, h, addDevice(t, h, "d2")), "tcp://"+h.TCPAddr())
	if err != nil {
		t.Fatalf("plain TCP refused with %d: %v", code, err)
	}
	plain.publish(t, iothub.TelemetryTopic("d2", "", "a=b"), 1, []byte("over tcp"))

	msgs, err := h.WaitMessages(ctxLimit(t), "d1", 2)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if !bytes.Equal(m.Payload, []byte(`{"t":21.5}`)) || m.MessageID != "m 1" || m.CorrelationID != "c/1" ||
		m.ContentType != "application/json" || m.ContentEncoding != "utf-8" || m.ArrivedAt.IsZero() {
		t.Fatalf("system properties: %+v", m)
	}
	// Wire order, not name order; the creation time a device may set is an application property like any other.
	wantList := [][2]string{
		{"z", "1"}, {"temp unit", "°C&more"}, {iothub.CreationTimeProperty, "2026-11-27T06:23:40.123Z"}, {"a", "2"},
	}
	if !reflect.DeepEqual(m.PropertyList, wantList) {
		t.Fatalf("application properties in order: %q, want %q", m.PropertyList, wantList)
	}
	if len(m.Properties) != len(wantList) || m.Properties["temp unit"] != "°C&more" ||
		m.Properties[iothub.CreationTimeProperty] != "2026-11-27T06:23:40.123Z" {
		t.Fatalf("application properties: %v", m.Properties)
	}
	if msgs[1].PropertyList == nil || len(msgs[1].PropertyList) != 0 {
		t.Fatalf("bare topic's property list %#v, want empty", msgs[1].PropertyList)
	}
	if string(msgs[1].Payload) != "bare topic" {
		t.Fatalf("second message %q", msgs[1].Payload)
	}
	if got, err := h.WaitMessages(ctxLimit(t), "d2", 1); err != nil || got[0].Properties["a"] != "b" {
		t.Fatalf("tcp message: %+v, %v", got, err)
	}
}

// TestMessageAtSizeLimitRecorded: a message of exactly 256 KB as IoT Hub counts it (body, message id, property
// name and value) is recorded whole; one byte more closes the connection (TestProtocolViolationsCloseTheConnection).
func TestMessageAtSizeLimitRecorded(t *testing.T) {
	h := startHub(t, nil)
	dv := mustConnect(t, h, addDevice(t, h, "d1"))
	body := bytes.Repeat([]byte{0, 0xff, '&'}, (256*1024-4)/3+1)[:256*1024-4]
	bag := iothub.EncodeProperties([][2]string{{iothub.PropMessageID, "m1"}, {"k", "v"}})
	dv.publish(t, iothub.TelemetryTopic("d1", "", bag), 1, body)
	msgs, err := h.WaitMessages(ctxLimit(t), "d1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if m := msgs[0]; !bytes.Equal(m.Payload, body) || m.MessageID != "m1" || m.size() != 256*1024 {
		t.Fatalf("recorded %d bytes of body, id %q, size %d", len(m.Payload), m.MessageID, m.size())
	}
}

func TestRegistryAndCAPersistAcrossStarts(t *testing.T) {
	dir := t.TempDir()
	h, err := Start(Config{Dir: dir, MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := h.AddDevice("d1", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.UpdateDesired("d1", []byte(`{"color":"red"}`)); err != nil {
		t.Fatal(err)
	}
	if err := h.SetDeviceEnabled("d1", false); err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	_ = h.Close()

	h2 := startHub(t, func(c *Config) { c.Dir = dir })
	got, err := h2.Device("d1")
	if err != nil || got.PrimaryKey != d.PrimaryKey || got.SecondaryKey != d.SecondaryKey || got.Status != StatusDisabled {
		t.Fatalf("after restart %+v, %v; want %+v disabled", got, err, d)
	}
	if twin, _ := h2.Twin("d1"); !bytes.Contains(twin, []byte(`"color":"red"`)) {
		t.Fatalf("twin lost: %s", twin)
	}
	ca2, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil || !bytes.Equal(ca, ca2) {
		t.Fatal("CA regenerated on restart")
	}
	cs, err := h2.ConnectionString("d1")
	if err != nil || cs != "HostName="+h2.HostName()+";DeviceId=d1;SharedAccessKey="+d.PrimaryKey {
		t.Fatalf("connection string %q, %v", cs, err)
	}
}

func TestWebSocketListener(t *testing.T) {
	h := startHub(t, func(c *Config) { c.WSAddr = "127.0.0.1:0" })
	d := addDevice(t, h, "d1")
	dv, code, err := connect(t, h, validCreds(t, h, d), "wss://"+h.WSAddr()+"/$iothub/websocket")
	if err != nil {
		t.Fatalf("WebSocket connect refused with %d: %v", code, err)
	}
	dv.publish(t, iothub.TelemetryTopic("d1", "", "k=v"), 1, []byte("over ws"))
	if msgs, err := h.WaitMessages(ctxLimit(t), "d1", 1); err != nil || string(msgs[0].Payload) != "over ws" {
		t.Fatalf("ws telemetry %+v, %v", msgs, err)
	}
	if err := h.Fault(Fault{Kind: FaultKillTCP, Device: "d1"}); err != nil {
		t.Fatal(err)
	}
	dv.waitLost(t)
	if _, _, err := connect(t, h, validCreds(t, h, d), "wss://"+h.WSAddr()+"/elsewhere"); err == nil {
		t.Fatal("WebSocket upgrade on a wrong path succeeded")
	}
}

func TestWillMessageRecordedAsTelemetry(t *testing.T) {
	h := startHub(t, nil)
	d := addDevice(t, h, "d1")
	cr := validCreds(t, h, d)
	cr.will = iothub.TelemetryTopic("d1", "", "reason=gone")
	dv, code, err := connect(t, h, cr, "")
	if err != nil {
		t.Fatalf("refused with %d: %v", code, err)
	}
	if err := h.Fault(Fault{Kind: FaultKillTCP, Device: "d1"}); err != nil {
		t.Fatal(err)
	}
	dv.waitLost(t)
	msgs, err := h.WaitMessages(ctxLimit(t), "d1", 1)
	if err != nil || string(msgs[0].Payload) != "last words" || msgs[0].Properties["reason"] != "gone" {
		t.Fatalf("will: %+v, %v", msgs, err)
	}

	// A device that says goodbye (DISCONNECT) leaves no will.
	events, cancel := h.Events()
	defer cancel()
	cr = validCreds(t, h, addDevice(t, h, "d2"))
	cr.will = iothub.TelemetryTopic("d2", "", "")
	polite, code, err := connect(t, h, cr, "")
	if err != nil {
		t.Fatalf("refused with %d: %v", code, err)
	}
	polite.client.Disconnect(250)
	waitEvent(t, events, func(e Event) bool { return e.Kind == EventDisconnect && e.Device == "d2" })
	if n := len(h.Messages("d2")); n != 0 {
		t.Fatalf("%d messages recorded after a DISCONNECT", n)
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := Start(Config{MQTTAddr: "127.0.0.1:0"}); err == nil {
		t.Error("started without a state dir")
	}
	for _, file := range []string{legacyRegistryFile, registryDB} {
		bad := t.TempDir()
		if err := os.WriteFile(filepath.Join(bad, file), []byte("{not json"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Start(Config{Dir: bad, MQTTAddr: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "registry") {
			t.Errorf("corrupt %s: %v", file, err)
		}
	}
	h := startHub(t, nil)
	if _, err := Start(Config{Dir: h.cfg.Dir, MQTTAddr: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "in use by another hubsim") {
		t.Errorf("second hub on a state dir: %v", err)
	}
	// The TLS listener binds, then the busy plain port fails: Start cleans up what it opened.
	if _, err := Start(Config{Dir: t.TempDir(), MQTTAddr: "127.0.0.1:0", TCPAddr: h.Addr()}); err == nil {
		t.Error("started on a busy port")
	}
	if _, err := Start(Config{Dir: t.TempDir(), MQTTAddr: "127.0.0.1:0", ControlAddr: h.Addr()}); err == nil {
		t.Error("control API started on a busy port")
	}
}
