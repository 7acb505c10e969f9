package hubsim

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/gorilla/websocket"

	"github.com/iotconn/iotconn/core/iothub"
)

func startAMQPHub(t *testing.T) *Hub {
	t.Helper()
	return startHub(t, func(c *Config) { c.AMQPAddr = "127.0.0.1:0" })
}

// dialAMQP connects go-amqp to the hub's AMQP TLS listener.
func dialAMQP(t *testing.T, h *Hub, sasl goamqp.SASLType) (*goamqp.Conn, error) {
	t.Helper()
	return dialAMQPAt(t, h, h.AMQPAddr(), sasl)
}

// dialAMQPAt is dialAMQP to addr, which need not be where the hub listens now.
func dialAMQPAt(t *testing.T, h *Hub, addr string, sasl goamqp.SASLType) (*goamqp.Conn, error) {
	t.Helper()
	c, err := goamqp.Dial(ctxLimit(t), "amqps://"+addr, &goamqp.ConnOptions{
		SASLType: sasl, HostName: "localhost", TLSConfig: &tls.Config{RootCAs: caPool(t, h), ServerName: "localhost"},
	})
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

func mustDialAMQP(t *testing.T, h *Hub) *goamqp.Conn {
	t.Helper()
	c, err := dialAMQP(t, h, goamqp.SASLTypeAnonymous())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newSession(t *testing.T, c *goamqp.Conn) *goamqp.Session {
	t.Helper()
	s, err := c.NewSession(ctxLimit(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// cbsClient is the pair of $cbs links a client puts tokens through.
type cbsClient struct {
	snd *goamqp.Sender
	rcv *goamqp.Receiver
}

func newCBS(t *testing.T, c *goamqp.Conn) *cbsClient {
	t.Helper()
	s := newSession(t, c)
	snd, err := s.NewSender(ctxLimit(t), "$cbs", nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := s.NewReceiver(ctxLimit(t), "$cbs", nil)
	if err != nil {
		t.Fatal(err)
	}
	return &cbsClient{snd: snd, rcv: rcv}
}

// putToken sends a put-token request and returns the reply.
func (c *cbsClient) putToken(t *testing.T, tokenType, audience, token string, msgID any) *goamqp.Message {
	t.Helper()
	req := goamqp.NewMessage(nil)
	req.Data = nil
	req.Value = token
	to, replyTo := "$cbs", "cbs"
	req.Properties = &goamqp.MessageProperties{MessageID: msgID, To: &to, ReplyTo: &replyTo}
	req.ApplicationProperties = map[string]any{"operation": "put-token", "type": tokenType, "name": audience}
	if err := c.snd.Send(ctxLimit(t), req, nil); err != nil {
		t.Fatal(err)
	}
	reply, err := c.rcv.Receive(ctxLimit(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.rcv.AcceptMessage(ctxLimit(t), reply)
	if reply.Properties == nil || reply.Properties.CorrelationID != msgID {
		t.Fatalf("correlation-id %#v, want %#v", reply.Properties, msgID)
	}
	return reply
}

// authorise puts a valid one-hour device token and fails the test unless the hub answers 200.
func (c *cbsClient) authorise(t *testing.T, h *Hub, d Device, msgID any) {
	t.Helper()
	aud := iothub.ResourceURI(h.HostName(), d.ID, "")
	tok := sasToken(t, aud, d.PrimaryKey, time.Now().Add(time.Hour))
	if st := c.putToken(t, amqpTokenTypeSB, aud, tok, msgID).ApplicationProperties[cbsStatusCode]; st != int32(200) {
		t.Fatalf("put-token for %s: status %#v", d.ID, st)
	}
}

func statusOf(m *goamqp.Message) any { return m.ApplicationProperties[cbsStatusCode] }

// TestAMQPCBS: put-token answers 200 for both token types with the correlation-id in the request's message-id
// type (string, uuid, ulong) and an int status; a bad signature answers 401, an unknown device 404; a link
// without a token is refused with amqp:unauthorized-access.
func TestAMQPCBS(t *testing.T) {
	h := startAMQPHub(t)
	d := addDevice(t, h, "d1")
	conn := mustDialAMQP(t, h)
	cbs := newCBS(t, conn)
	s := newSession(t, conn)
	_, err := s.NewSender(ctxLimit(t), "/devices/d1/messages/events", nil)
	var ae *goamqp.Error
	if !errors.As(err, &ae) || ae.Condition != goamqp.ErrCondUnauthorizedAccess {
		t.Fatalf("attach without a token: %v", err)
	}
	aud := iothub.ResourceURI(h.HostName(), d.ID, "")
	tok := sasToken(t, aud, d.PrimaryKey, time.Now().Add(time.Hour))
	for _, c := range []struct {
		typ string
		id  any
	}{{amqpTokenTypeSB, "req-1"}, {amqpTokenTypeIoTH, goamqp.UUID{1, 2, 3}}, {amqpTokenTypeSB, uint64(42)}} {
		if st := statusOf(cbs.putToken(t, c.typ, aud, tok, c.id)); st != int32(200) {
			t.Fatalf("%s with id %#v: status %#v", c.typ, c.id, st)
		}
	}
	bad := sasToken(t, aud, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", time.Now().Add(time.Hour))
	if st := statusOf(cbs.putToken(t, amqpTokenTypeSB, aud, bad, "bad")); st != int32(401) {
		t.Fatalf("bad signature: status %#v", st)
	}
	ghost := iothub.ResourceURI(h.HostName(), "ghost", "")
	ghostTok := sasToken(t, ghost, d.PrimaryKey, time.Now().Add(time.Hour))
	if st := statusOf(cbs.putToken(t, amqpTokenTypeSB, ghost, ghostTok, "ghost")); st != int32(404) {
		t.Fatalf("unknown device: status %#v", st)
	}
	if dev, _ := h.Device("d1"); !dev.Connected || dev.Connections != 1 {
		t.Fatalf("device state %+v: three puts of one identity are one connection", dev)
	}
}

// TestAMQPTelemetry: a message sent on an absolute, oddly cased events address is recorded with its system
// properties, application properties in wire order and message annotations; a C SDK batch records each message.
func TestAMQPTelemetry(t *testing.T) {
	h := startAMQPHub(t)
	d := addDevice(t, h, "d1")
	conn := mustDialAMQP(t, h)
	newCBS(t, conn).authorise(t, h, d, "1")
	snd, err := newSession(t, conn).NewSender(ctxLimit(t), "amqps://localhost/DEVICES/d1/Messages/Events", nil)
	if err != nil {
		t.Fatal(err)
	}
	ct, ce := "application/json", "utf-8"
	m := goamqp.NewMessage([]byte(`{"t":1}`))
	m.Properties = &goamqp.MessageProperties{MessageID: "m1", CorrelationID: "c1", ContentType: &ct, ContentEncoding: &ce}
	m.ApplicationProperties = map[string]any{"alert": "high"}
	m.Annotations = goamqp.Annotations{"iothub-interface-id": "urn:x"}
	if err := snd.Send(ctxLimit(t), m, nil); err != nil {
		t.Fatal(err)
	}
	var parts [][]byte
	for i := range 2 {
		pm := goamqp.NewMessage([]byte(fmt.Sprint("batched ", i)))
		b, err := pm.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, b)
	}
	batch := &goamqp.Message{Format: amqpBatchFormat, Data: parts}
	if err := snd.Send(ctxLimit(t), batch, nil); err != nil {
		t.Fatal(err)
	}
	got, err := h.WaitMessages(ctxLimit(t), "d1", 3)
	if err != nil {
		t.Fatal(err)
	}
	r := got[0]
	if string(r.Payload) != `{"t":1}` || r.MessageID != "m1" || r.CorrelationID != "c1" || r.ContentType != ct ||
		r.ContentEncoding != ce || r.Properties["alert"] != "high" || r.Annotations["iothub-interface-id"] != "urn:x" {
		t.Fatalf("recorded %+v", r)
	}
	if string(got[1].Payload) != "batched 0" || string(got[2].Payload) != "batched 1" {
		t.Fatalf("batch recorded as %q, %q", got[1].Payload, got[2].Payload)
	}
}

// TestAMQPMultiplexed: ten devices share one connection, each with its own session and token on one CBS link,
// and each one's telemetry is recorded under its own identity.
func TestAMQPMultiplexed(t *testing.T) {
	h := startAMQPHub(t)
	conn := mustDialAMQP(t, h)
	cbs := newCBS(t, conn)
	const n = 10
	for i := range n {
		d := addDevice(t, h, fmt.Sprint("dev", i))
		cbs.authorise(t, h, d, uint64(i))
		snd, err := newSession(t, conn).NewSender(ctxLimit(t), "/devices/"+d.ID+"/messages/events", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := snd.Send(ctxLimit(t), goamqp.NewMessage([]byte(d.ID)), nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		id := fmt.Sprint("dev", i)
		got, err := h.WaitMessages(ctxLimit(t), id, 1)
		if err != nil || string(got[0].Payload) != id {
			t.Fatalf("%s: %v %v", id, got, err)
		}
		if dev, _ := h.Device(id); !dev.Connected {
			t.Fatalf("%s not connected", id)
		}
	}
}

// TestAMQPTokenRenewalAndExpiry: a put-token on the live connection renews the device's token in place (same
// session, no new connection); once a token expires the device's links are detached with
// amqp:unauthorized-access while the connection stays up for the others.
func TestAMQPTokenRenewalAndExpiry(t *testing.T) {
	h := startAMQPHub(t)
	d := addDevice(t, h, "d1")
	other := addDevice(t, h, "d2")
	events, stop := h.Events()
	defer stop()
	conn := mustDialAMQP(t, h)
	cbs := newCBS(t, conn)
	cbs.authorise(t, h, other, "other")
	aud := iothub.ResourceURI(h.HostName(), d.ID, "")
	short := time.Now().Add(3 * time.Second)
	if st := statusOf(cbs.putToken(t, amqpTokenTypeSB, aud, sasToken(t, aud, d.PrimaryKey, short), "short")); st != int32(200) {
		t.Fatalf("status %#v", st)
	}
	s := h.sessionOf("d1")
	renewed := time.Now().Add(time.Hour)
	if st := statusOf(cbs.putToken(t, amqpTokenTypeSB, aud, sasToken(t, aud, d.PrimaryKey, renewed), "renew")); st != int32(200) {
		t.Fatalf("renewal status %#v", st)
	}
	h.mu.Lock()
	expiry := s.expiry
	h.mu.Unlock()
	if h.sessionOf("d1") != s || expiry.Unix() != renewed.Unix() {
		t.Fatalf("renewal made a new session or kept the old expiry %v", expiry)
	}
	if dev, _ := h.Device("d1"); dev.Connections != 1 {
		t.Fatalf("renewal counted as %d connections", dev.Connections)
	}

	snd, err := newSession(t, conn).NewSender(ctxLimit(t), "/devices/d1/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	soon := time.Now().Add(2 * time.Second) // se is whole seconds: at least 1 s left when the hub checks it
	if st := statusOf(cbs.putToken(t, amqpTokenTypeSB, aud, sasToken(t, aud, d.PrimaryKey, soon), "soon")); st != int32(200) {
		t.Fatalf("status %#v", st)
	}
	waitEvent(t, events, func(e Event) bool { return e.Kind == EventDisconnect && e.Device == "d1" })
	err = snd.Send(ctxLimit(t), goamqp.NewMessage([]byte("late")), nil)
	var le *goamqp.LinkError
	if !errors.As(err, &le) || le.RemoteErr == nil || le.RemoteErr.Condition != goamqp.ErrCondUnauthorizedAccess {
		t.Fatalf("send after expiry: %v", err)
	}
	snd2, err := newSession(t, conn).NewSender(ctxLimit(t), "/devices/d2/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd2.Send(ctxLimit(t), goamqp.NewMessage([]byte("still here")), nil); err != nil {
		t.Fatalf("the other device on the connection: %v", err)
	}
}

// TestAMQPSASLPlain: SASL PLAIN with {deviceId}@sas.{hub} and a SAS token authorises the device's links without
// CBS; a bad token fails the connect.
func TestAMQPSASLPlain(t *testing.T) {
	h := startAMQPHub(t)
	d := addDevice(t, h, "d1")
	tok := sasToken(t, iothub.ResourceURI(h.HostName(), d.ID, ""), d.PrimaryKey, time.Now().Add(time.Hour))
	conn, err := dialAMQP(t, h, goamqp.SASLTypePlain("d1@sas.localhost", tok))
	if err != nil {
		t.Fatal(err)
	}
	snd, err := newSession(t, conn).NewSender(ctxLimit(t), "/devices/d1/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctxLimit(t), goamqp.NewMessage([]byte("plain")), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitMessages(ctxLimit(t), "d1", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := dialAMQP(t, h, goamqp.SASLTypePlain("d1@sas.localhost", "SharedAccessSignature sr=x&sig=y&se=1")); err == nil {
		t.Fatal("a bad token connected")
	}
}

// deviceConn is a go-amqp connection with a device authorised on it.
func deviceConn(t *testing.T, h *Hub, id string) (*goamqp.Conn, Device) {
	t.Helper()
	d := addDevice(t, h, id)
	conn := mustDialAMQP(t, h)
	newCBS(t, conn).authorise(t, h, d, "auth-"+id)
	return conn, d
}

func receiveOne(t *testing.T, r *goamqp.Receiver) *goamqp.Message {
	t.Helper()
	m, err := r.Receive(ctxLimit(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAMQPC2D: C2D messages arrive on the devicebound link with a 16-byte delivery tag and their properties;
// accept completes one, reject removes one, release gives one back and it is delivered again.
func TestAMQPC2D(t *testing.T) {
	h := startAMQPHub(t)
	conn, _ := deviceConn(t, h, "d1")
	for i, p := range []string{"accept", "reject", "release"} {
		if err := h.SendC2D("d1", C2DMessage{Payload: []byte(p), MessageID: fmt.Sprint("m", i),
			Properties: map[string]string{"k": p}}); err != nil {
			t.Fatal(err)
		}
	}
	second := goamqp.ReceiverSettleModeSecond
	rcv, err := newSession(t, conn).NewReceiver(ctxLimit(t), "amqps://localhost/devices/d1/messages/deviceBound",
		&goamqp.ReceiverOptions{SettlementMode: &second})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"accept", "reject", "release"} {
		m := receiveOne(t, rcv)
		if string(m.GetData()) != want || len(m.DeliveryTag) != 16 || m.Properties.MessageID != fmt.Sprint("m", i) ||
			m.ApplicationProperties["k"] != want {
			t.Fatalf("C2D %d: %q tag % x props %+v %v", i, m.GetData(), m.DeliveryTag, m.Properties, m.ApplicationProperties)
		}
		switch want {
		case "accept":
			err = rcv.AcceptMessage(ctxLimit(t), m)
		case "reject":
			err = rcv.RejectMessage(ctxLimit(t), m, nil)
		case "release":
			err = rcv.ReleaseMessage(ctxLimit(t), m)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	again := receiveOne(t, rcv)
	if string(again.GetData()) != "release" {
		t.Fatalf("redelivered %q", again.GetData())
	}
	if err := rcv.AcceptMessage(ctxLimit(t), again); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitC2DDelivered(ctxLimit(t), "d1"); err != nil {
		t.Fatal(err)
	}
}

// twinLinks attaches the sender and receiver pair of a twin or methods channel.
func twinLinks(t *testing.T, conn *goamqp.Conn, addr string) (*goamqp.Sender, *goamqp.Receiver) {
	t.Helper()
	s := newSession(t, conn)
	props := map[string]any{"com.microsoft:channel-correlation-id": "twin:0c3d", "com.microsoft:api-version": "2021-04-12"}
	rcv, err := s.NewReceiver(ctxLimit(t), addr, &goamqp.ReceiverOptions{Properties: props})
	if err != nil {
		t.Fatal(err)
	}
	snd, err := s.NewSender(ctxLimit(t), addr, &goamqp.SenderOptions{Properties: props})
	if err != nil {
		t.Fatal(err)
	}
	return snd, rcv
}

// twinCall sends a twin request and returns the response, whose correlation-id must echo the request's.
func twinCall(t *testing.T, snd *goamqp.Sender, rcv *goamqp.Receiver, op, resource, body string) *goamqp.Message {
	t.Helper()
	corr := "0a7e3c55-5d2b-4c6e-9a53-" + op + resource
	req := goamqp.NewMessage([]byte(body))
	req.Properties = &goamqp.MessageProperties{CorrelationID: corr}
	req.Annotations = goamqp.Annotations{"operation": op}
	if resource != "" {
		req.Annotations["resource"] = resource
	}
	if err := snd.Send(ctxLimit(t), req, nil); err != nil {
		t.Fatal(err)
	}
	res := receiveOne(t, rcv)
	_ = rcv.AcceptMessage(ctxLimit(t), res)
	if res.Properties == nil || res.Properties.CorrelationID != corr {
		t.Fatalf("%s %s: correlation-id %+v", op, resource, res.Properties)
	}
	return res
}

// TestAMQPTwin: GET returns the twin document with status 200; PATCH of reported properties answers 204 with
// the new version; after PUT on the desired notifications resource a desired update arrives without
// correlation-id, with its version.
func TestAMQPTwin(t *testing.T) {
	h := startAMQPHub(t)
	conn, _ := deviceConn(t, h, "d1")
	snd, rcv := twinLinks(t, conn, "/devices/d1/twin")
	res := twinCall(t, snd, rcv, "GET", "", " ")
	if res.Annotations["status"] != int32(200) || !strings.Contains(string(res.GetData()), `"desired"`) {
		t.Fatalf("GET: %v %s", res.Annotations, res.GetData())
	}
	res = twinCall(t, snd, rcv, "PATCH", "/properties/reported", `{"fw":"1.2"}`)
	if res.Annotations["status"] != int32(204) || res.Annotations["version"] != int64(2) {
		t.Fatalf("PATCH: %v", res.Annotations)
	}
	if doc, _ := h.Twin("d1"); !strings.Contains(string(doc), `"fw":"1.2"`) {
		t.Fatalf("twin %s", doc)
	}
	if res = twinCall(t, snd, rcv, "PUT", "/notifications/twin/properties/desired", " "); res.Annotations["status"] != int32(200) {
		t.Fatalf("PUT: %v", res.Annotations)
	}
	if _, err := h.UpdateDesired("d1", []byte(`{"rate":5}`)); err != nil {
		t.Fatal(err)
	}
	push := receiveOne(t, rcv)
	if push.Properties != nil && push.Properties.CorrelationID != nil {
		t.Fatalf("desired push with correlation-id %v", push.Properties.CorrelationID)
	}
	if push.Annotations["version"] != int64(2) || !strings.Contains(string(push.GetData()), `"rate":5`) {
		t.Fatalf("desired push %v %s", push.Annotations, push.GetData())
	}
}

// TestAMQPMethods: a method call arrives on the methods link with its name and a uuid correlation-id; the
// device's answer, echoing it with IoThub-status, completes InvokeMethod.
func TestAMQPMethods(t *testing.T) {
	h := startAMQPHub(t)
	conn, _ := deviceConn(t, h, "d1")
	snd, rcv := twinLinks(t, conn, "/devices/d1/methods/devicebound")
	result := make(chan MethodResult, 1)
	go func() {
		r, err := h.InvokeMethod(ctxLimit(t), "d1", "reboot", []byte(`{"delay":1}`))
		if err != nil {
			r.Status = -1
		}
		result <- r
	}()
	call := receiveOne(t, rcv)
	_ = rcv.AcceptMessage(ctxLimit(t), call)
	if _, ok := call.Properties.CorrelationID.(goamqp.UUID); !ok || call.ApplicationProperties["IoThub-methodname"] != "reboot" ||
		string(call.GetData()) != `{"delay":1}` {
		t.Fatalf("call %+v %v %s", call.Properties, call.ApplicationProperties, call.GetData())
	}
	answer := goamqp.NewMessage([]byte(`{"ok":true}`))
	answer.Properties = &goamqp.MessageProperties{CorrelationID: call.Properties.CorrelationID}
	answer.ApplicationProperties = map[string]any{"IoThub-status": int32(201)}
	if err := snd.Send(ctxLimit(t), answer, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-result:
		if r.Status != 201 || string(r.Payload) != `{"ok":true}` {
			t.Fatalf("result %+v", r)
		}
	case <-time.After(waitLimit):
		t.Fatal("no method result")
	}
}

// dialWS opens a WebSocket to the hub's /$iothub/websocket offering the subprotocols; it returns the HTTP status
// when the upgrade is refused.
func dialWS(t *testing.T, h *Hub, addr string, protocols ...string) (*websocket.Conn, int, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: protocols, HandshakeTimeout: waitLimit,
		TLSClientConfig: &tls.Config{RootCAs: caPool(t, h), ServerName: "localhost"}}
	ws, resp, err := d.DialContext(ctxLimit(t), "wss://"+addr+wsPath, nil)
	status := 0
	if resp != nil {
		status = resp.StatusCode
		_ = resp.Body.Close()
	}
	if err == nil {
		t.Cleanup(func() { _ = ws.Close() })
	}
	return ws, status, err
}

// TestAMQPWebSocket: go-amqp over a WebSocket with subprotocol AMQPWSB10 authorises and sends telemetry, on its
// own listener and on the MQTT WebSocket listener when both share an address; an MQTT-only listener refuses an
// upgrade that offers only AMQPWSB10 with 400 instead of upgrading and waiting for MQTT.
func TestAMQPWebSocket(t *testing.T) {
	for _, shared := range []bool{false, true} {
		h := startHub(t, func(c *Config) {
			c.WSAddr, c.AMQPWSAddr = "127.0.0.1:0", "127.0.0.1:0"
			if !shared {
				c.WSAddr = ""
			}
		})
		d := addDevice(t, h, "d1")
		ws, _, err := dialWS(t, h, h.AMQPWSAddr(), wsAMQP)
		if err != nil {
			t.Fatal(err)
		}
		if ws.Subprotocol() != wsAMQP {
			t.Fatalf("subprotocol %q", ws.Subprotocol())
		}
		conn, err := goamqp.NewConn(ctxLimit(t), &wsConn{ws: ws}, &goamqp.ConnOptions{
			SASLType: goamqp.SASLTypeAnonymous(), HostName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		newCBS(t, conn).authorise(t, h, d, "ws")
		snd, err := newSession(t, conn).NewSender(ctxLimit(t), "/devices/d1/messages/events", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := snd.Send(ctxLimit(t), goamqp.NewMessage([]byte("over ws")), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := h.WaitMessages(ctxLimit(t), "d1", 1); err != nil {
			t.Fatal(err)
		}
	}
	h := startHub(t, func(c *Config) { c.WSAddr = "127.0.0.1:0" })
	if _, status, err := dialWS(t, h, h.WSAddr(), wsAMQP); err == nil || status != 400 {
		t.Fatalf("AMQPWSB10 upgrade on the MQTT listener: status %d, %v", status, err)
	}
	if ws, _, err := dialWS(t, h, h.WSAddr(), wsAMQP, wsMQTT); err != nil || ws.Subprotocol() != wsMQTT {
		t.Fatalf("an upgrade that also offers mqtt: %v", err)
	}
}
