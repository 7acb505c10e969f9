package hubsim

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iotconn/iotconn/core/iothub"
)

// connackHook runs fn as the hub is about to write a CONNACK: the moment a resumed session's subscriptions are
// already there and the device has not been told it is connected.
type connackHook struct {
	mqtt.HookBase
	fn func()
}

func (k *connackHook) ID() string           { return "test-connack" }
func (k *connackHook) Provides(b byte) bool { return b == mqtt.OnPacketEncode }

func (k *connackHook) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack {
		k.fn()
	}
	return pk
}

// readPacket reads one MQTT packet: its first byte and its body.
func readPacket(t *testing.T, conn net.Conn) (byte, []byte) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
	var head [1]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		t.Fatalf("reading a packet: %v", err)
	}
	n, shift := 0, 0
	for {
		var b [1]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			t.Fatalf("reading a packet's length: %v", err)
		}
		n |= int(b[0]&0x7f) << shift
		if b[0]&0x80 == 0 {
			break
		}
		shift += 7
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(conn, body); err != nil {
		t.Fatalf("reading a packet's body: %v", err)
	}
	return head[0], body
}

// publishTopic is the topic of a PUBLISH body.
func publishTopic(body []byte) string {
	return string(body[2 : 2+(int(body[0])<<8|int(body[1]))])
}

// resume connects with clean session 0 and returns the connection and the CONNACK's session-present flag; the
// first packet must be the CONNACK.
func resume(t *testing.T, h *Hub, c creds) (net.Conn, bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", h.TCPAddr(), waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	body := append(mqttString("MQTT"), 4, 0xC0, 0, 60) // level 4, user+password, keepalive 60 s
	for _, s := range []string{c.clientID, c.username, c.password} {
		body = append(body, mqttString(s)...)
	}
	if _, err := conn.Write(mqttPacket(0x10, body)); err != nil {
		t.Fatal(err)
	}
	if typ, body := readPacket(t, conn); typ != 0x20 || len(body) != 2 || body[1] != 0 {
		t.Fatalf("first packet % x % x, want CONNACK 0", typ, body)
	} else {
		return conn, body[0]&1 == 1
	}
	return nil, false
}

// The hub writes nothing before the CONNACK ([MQTT-3.2.0-1]). A resumed session holds its subscriptions before
// the CONNACK is written; a method call sent then came first, the device's connect failed on it, and the caller
// waited its whole timeout. A call then is refused as not connected; a C2D message waits for the CONNACK.
func TestNothingPublishedBeforeConnack(t *testing.T) {
	h := startHub(t, withTCP)
	c := validCreds(t, h, addDevice(t, h, "d1"))
	first, _ := resume(t, h, c)
	sub := append([]byte{0, 1}, mqttString("$iothub/methods/POST/#")...)
	sub = append(sub, 0)
	sub = append(sub, mqttString(iothub.C2DPrefix("d1")+"#")...)
	sub = append(sub, 1)
	if _, err := first.Write(mqttPacket(0x82, sub)); err != nil {
		t.Fatal(err)
	}
	if typ, body := readPacket(t, first); typ != 0x90 || len(body) != 4 || body[2] != 0 || body[3] != 1 {
		t.Fatalf("SUBACK % x % x", typ, body)
	}

	var once sync.Once
	during := make(chan [2]error, 1)
	hook := &connackHook{fn: func() {
		once.Do(func() {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // sent or refused, then over: a sent call would end with ErrMethodTimeout
			_, invokeErr := h.InvokeMethod(ctx, "d1", "early", nil)
			during <- [2]error{invokeErr, h.SendC2D("d1", C2DMessage{MessageID: "early", Payload: []byte("c2d")})}
		})
	}}
	if err := h.mqtt.srv.Load().AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	second, present := resume(t, h, c)
	if !present {
		t.Fatal("the session was not resumed")
	}
	if errs := <-during; !errors.Is(errs[0], ErrNotConnected) || errs[1] != nil {
		t.Fatalf("during the connect: method %v, C2D %v", errs[0], errs[1])
	}
	if typ, body := readPacket(t, second); typ&0xf0 != 0x30 || !strings.HasPrefix(publishTopic(body), iothub.C2DPrefix("d1")) {
		t.Fatalf("after the CONNACK % x %q, want the C2D message", typ, body)
	}

	// The resumed subscription takes calls once the device is connected.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.InvokeMethod(ctx, "d1", "later", nil); !errors.Is(err, ErrMethodTimeout) {
		t.Fatalf("method on the resumed session: %v", err)
	}
	if typ, body := readPacket(t, second); typ&0xf0 != 0x30 ||
		!strings.HasPrefix(publishTopic(body), "$iothub/methods/POST/later/?$rid=") {
		t.Fatalf("% x %q, want the method call", typ, body)
	}
}
