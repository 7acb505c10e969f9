package hubsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/iothub"
)

func TestC2DKeptWhileOfflineAndRedeliveredUntilAcked(t *testing.T) {
	h := startHub(t, nil)
	d := addDevice(t, h, "d1")
	if err := h.SendC2D("d1", C2DMessage{Payload: []byte("hello"), MessageID: "mid 1", CorrelationID: "cid",
		ContentType: "text/plain", Properties: map[string]string{"k": "v w"}}); err != nil {
		t.Fatal(err)
	}
	if err := h.SendC2D("ghost", C2DMessage{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("C2D to an unknown device: %v", err)
	}

	cr := validCreds(t, h, d)
	cr.autoAckOff = true
	first, _, err := connect(t, h, cr, "")
	if err != nil {
		t.Fatal(err)
	}
	first.subscribe(t, iothub.C2DPrefix("d1")+"#", 1)
	m := first.waitMsg(t, iothub.C2DPrefix("d1"))
	props, err := iothub.DecodeProperties(strings.TrimPrefix(m.Topic(), iothub.C2DPrefix("d1")))
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{"$.mid", "mid 1"}, {"$.to", "/devices/d1/messages/deviceBound"}, {"$.cid", "cid"}, {"$.ct", "text/plain"}, {"k", "v w"}}
	if string(m.Payload()) != "hello" || m.Qos() != 1 || !equalPairs(props, want) {
		t.Fatalf("C2D %s qos %d payload %q props %q", m.Topic(), m.Qos(), m.Payload(), props)
	}
	// Not acknowledged: the message stays queued and comes again on the next connection.
	first.client.Disconnect(0)
	if n := h.PendingC2D("d1"); n != 1 {
		t.Fatalf("%d C2D messages pending without a PUBACK, want 1", n)
	}
	second := mustConnect(t, h, d)
	second.subscribe(t, iothub.C2DPrefix("d1")+"#", 1)
	if m := second.waitMsg(t, iothub.C2DPrefix("d1")); string(m.Payload()) != "hello" {
		t.Fatalf("redelivered %q", m.Payload())
	}
	// paho acknowledges it on its own; the PUBACK completes it.
	if err := h.WaitC2DDelivered(ctxLimit(t), "d1"); err != nil {
		t.Fatal(err)
	}
}

func equalPairs(a, b [][2]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTwinGetReportedPatchAndDesiredNotifications(t *testing.T) {
	h := startHub(t, nil)
	d := addDevice(t, h, "d1")
	dv := mustConnect(t, h, d)
	dv.subscribe(t, "$iothub/twin/res/#", 0)
	dv.subscribe(t, "$iothub/twin/PATCH/properties/desired/#", 0)

	dv.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=r%201!", 1, []byte(`{"temp":{"v":21.5},"gone":null}`))
	m := dv.waitMsg(t, "$iothub/twin/res/")
	if m.Topic() != "$iothub/twin/res/204/?$rid=r%201!&$version=2" {
		t.Fatalf("reported patch response %s", m.Topic())
	}
	dv.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=bad", 1, []byte(`[1]`))
	if m := dv.waitMsg(t, "$iothub/twin/res/"); m.Topic() != "$iothub/twin/res/400/?$rid=bad" {
		t.Fatalf("bad patch response %s", m.Topic())
	}

	if _, err := h.UpdateDesired("d1", []byte(`{"color":"red","n":12345678901234567890}`)); err != nil {
		t.Fatal(err)
	}
	n := dv.waitMsg(t, "$iothub/twin/PATCH/properties/desired/")
	if n.Topic() != "$iothub/twin/PATCH/properties/desired/?$version=2" {
		t.Fatalf("desired notification topic %s", n.Topic())
	}
	var note map[string]json.RawMessage
	if err := json.Unmarshal(n.Payload(), &note); err != nil || string(note["color"]) != `"red"` ||
		string(note["$version"]) != "2" || string(note["n"]) != "12345678901234567890" {
		t.Fatalf("desired notification %s, %v", n.Payload(), err)
	}

	dv.publish(t, "$iothub/twin/GET/?$rid=g", 0, nil)
	g := dv.waitMsg(t, "$iothub/twin/res/")
	var doc struct {
		Desired, Reported map[string]json.RawMessage
	}
	if g.Topic() != "$iothub/twin/res/200/?$rid=g" || json.Unmarshal(g.Payload(), &doc) != nil {
		t.Fatalf("twin GET %s %s", g.Topic(), g.Payload())
	}
	if string(doc.Desired["$version"]) != "2" || string(doc.Reported["$version"]) != "2" ||
		string(doc.Reported["temp"]) != `{"v":21.5}` || doc.Reported["gone"] != nil {
		t.Fatalf("twin document %s", g.Payload())
	}
}

func TestDirectMethodRoundTrip(t *testing.T) {
	h := startHub(t, nil)
	d := addDevice(t, h, "d1")
	if _, err := h.InvokeMethod(ctxLimit(t), "d1", "reboot", []byte(`{}`)); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("method on an offline device: %v", err)
	}
	dv := mustConnect(t, h, d)
	dv.subscribe(t, "$iothub/methods/POST/#", 0)
	result := make(chan MethodResult, 1)
	failed := make(chan error, 1)
	go func() {
		r, err := h.InvokeMethod(ctxLimit(t), "d1", "reboot", []byte(`{"delay":1}`))
		if err != nil {
			failed <- err
			return
		}
		result <- r
	}()
	req := dv.waitMsg(t, "$iothub/methods/POST/reboot/?$rid=")
	if string(req.Payload()) != `{"delay":1}` {
		t.Fatalf("method payload %s", req.Payload())
	}
	rid := strings.TrimPrefix(req.Topic(), "$iothub/methods/POST/reboot/?$rid=")
	dv.publish(t, "$iothub/methods/res/202/?$rid="+rid, 0, []byte(`{"ok":true}`))
	select {
	case r := <-result:
		if r.Status != 202 || string(r.Payload) != `{"ok":true}` {
			t.Fatalf("method result %+v", r)
		}
	case err := <-failed:
		t.Fatal(err)
	case <-time.After(waitLimit):
		t.Fatal("method call did not return")
	}
}

func TestProtocolViolationsCloseTheConnection(t *testing.T) {
	h := startHub(t, nil)
	d := addDevice(t, h, "d1")
	events, cancel := h.Events()
	defer cancel()
	for _, c := range []struct {
		name   string
		act    func(dv *dev)
		reason string
	}{
		{"QoS 2 publish", func(dv *dev) { dv.client.Publish(iothub.TelemetryTopic("d1", "", ""), 2, false, "x") }, "QoS 2"},
		{"foreign telemetry topic", func(dv *dev) { dv.client.Publish(iothub.TelemetryTopic("d2", "", ""), 0, false, "x") }, "may not use"},
		{"foreign subscription", func(dv *dev) { dv.client.Subscribe(iothub.C2DPrefix("d2")+"#", 1, nil) }, "may not use"},
		{"wildcard over other devices", func(dv *dev) { dv.client.Subscribe("devices/+/messages/devicebound/#", 1, nil) }, "may not use"},
		{"message over 256 KB", func(dv *dev) {
			dv.client.Publish(iothub.TelemetryTopic("d1", "", ""), 1, false, bytes.Repeat([]byte("x"), 256*1024+1))
		}, "256 KB"},
		{"message over 256 KB as IoT Hub counts it", func(dv *dev) {
			// The body fits alone; its message id and the property's name and value take it one byte over.
			bag := iothub.EncodeProperties([][2]string{{iothub.PropMessageID, "m1"}, {"k", "v"}})
			dv.client.Publish(iothub.TelemetryTopic("d1", "", bag), 1, false, bytes.Repeat([]byte("x"), 256*1024-3))
		}, "256 KB"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dv := mustConnect(t, h, d)
			c.act(dv)
			dv.waitLost(t)
			e := waitEvent(t, events, func(e Event) bool { return e.Kind == EventDisconnect })
			if !strings.Contains(e.Reason, c.reason) {
				t.Fatalf("disconnect reason %q, want it to mention %q", e.Reason, c.reason)
			}
		})
	}
	if n := len(h.Messages("d1")); n != 0 {
		t.Fatalf("%d messages recorded from violating publishes", n)
	}
}

func TestPersistentSessionKeepsSubscriptions(t *testing.T) {
	h := startHub(t, nil)
	d := addDevice(t, h, "d1")
	keep := false
	cr := validCreds(t, h, d)
	cr.clean = &keep
	first, _, err := connect(t, h, cr, "")
	if err != nil {
		t.Fatal(err)
	}
	first.subscribe(t, iothub.C2DPrefix("d1")+"#", 1)
	first.client.Disconnect(0)
	second, _, err := connect(t, h, cr, "")
	if err != nil {
		t.Fatal(err)
	}
	// No new SUBSCRIBE: the session's subscription still routes C2D to the device.
	if err := h.SendC2D("d1", C2DMessage{Payload: []byte("resumed")}); err != nil {
		t.Fatal(err)
	}
	if m := second.waitMsg(t, iothub.C2DPrefix("d1")); string(m.Payload()) != "resumed" {
		t.Fatalf("got %q", m.Payload())
	}
}

// TestHostName: Config.HostName names the hub in connection strings, for SDKs that dial fixed ports; a name the
// hub would not accept in token scopes is refused at start.
func TestHostName(t *testing.T) {
	h := startHub(t, func(c *Config) { c.HostName = "127.0.0.1" })
	addDevice(t, h, "d1")
	if cs, _ := h.ConnectionString("d1"); !strings.HasPrefix(cs, "HostName=127.0.0.1;") {
		t.Fatalf("connection string %s", cs)
	}
	if _, err := Start(Config{Dir: t.TempDir(), MQTTAddr: "127.0.0.1:0", HostName: "hub.example.com"}); err == nil {
		t.Fatal("a foreign host name was accepted")
	}
}
