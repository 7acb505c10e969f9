package amqp

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/transporttest"
	"github.com/iotconn/iotconn/hubsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitLimit = 10 * time.Second

// startHub starts hubsim with its AMQP listeners (TLS and WebSocket) on 127.0.0.1.
func startHub(t testing.TB) *hubsim.Hub {
	t.Helper()
	h, err := hubsim.Start(hubsim.Config{Dir: t.TempDir(), MQTTAddr: "127.0.0.1:0", AMQPAddr: "127.0.0.1:0",
		AMQPWSAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// params are dial parameters for device id on the hub's AMQP TLS listener, with a token valid for lifetime.
func params(t testing.TB, h *hubsim.Hub, id, key string, r transport.Handler, lifetime time.Duration) transport.DialParams {
	t.Helper()
	pool, err := h.CAPool()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(h.AMQPAddr())
	return transport.DialParams{Host: "localhost:" + port, HubHost: h.HostName(), DeviceID: id,
		Token: token(t, h, id, key, lifetime), TLS: &tls.Config{RootCAs: pool}, Features: transport.FeatureC2D,
		Handler: r}
}

func token(t testing.TB, h *hubsim.Hub, id, key string, lifetime time.Duration) string {
	t.Helper()
	tok, err := iothub.BuildSAS(iothub.ResourceURI(h.HostName(), id, ""), key, "", time.Now().Add(lifetime))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// overWebSocket points p at the hub's AMQP WebSocket listener.
func overWebSocket(h *hubsim.Hub, p transport.DialParams) transport.DialParams {
	_, port, _ := net.SplitHostPort(h.AMQPWSAddr())
	p.Host, p.WebSocket = "localhost:"+port, true
	return p
}

func ctxLimit(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func mustDial(t *testing.T, d transport.Dialer, p transport.DialParams) transport.Conn {
	t.Helper()
	c, err := d.Dial(ctxLimit(t), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// send sends m and waits for its completion.
func send(t *testing.T, c transport.Conn, m *transport.Message) error {
	t.Helper()
	done := make(chan error, 1)
	c.Send(m, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-time.After(waitLimit):
		t.Fatal("send never completed")
		return nil
	}
}

// TestTelemetryAndC2D, over TLS and over WebSocket: telemetry carries every system property and the application
// properties; a C2D message arrives with its properties and leaves the hub's queue only once acknowledged (Ack,
// which the engine calls after the application's handler returned).
func TestTelemetryAndC2D(t *testing.T) {
	h := startHub(t)
	for _, ws := range []bool{false, true} {
		t.Run(fmt.Sprintf("websocket=%v", ws), func(t *testing.T) {
			id := fmt.Sprintf("dev-ws-%v", ws)
			r := transporttest.NewRecorder()
			p := params(t, h, id, transporttest.AddDevice(t, h, id), r, time.Hour)
			if ws {
				p = overWebSocket(h, p)
			}
			c := mustDial(t, NewDialer(), p)
			m := &transport.Message{Payload: []byte(`{"t":21}`), MessageID: "m-1", CorrelationID: "c-1",
				ContentType: "application/json", ContentEncoding: "utf-8",
				Properties: [][2]string{{"unit", "°C & more"}, {iothub.CreationTimeProperty, "2026-01-01T00:00:00Z"}}}
			if err := send(t, c, m); err != nil {
				t.Fatal(err)
			}
			got, err := h.WaitMessages(ctxLimit(t), id, 1)
			if err != nil {
				t.Fatal(err)
			}
			g := got[0]
			if string(g.Payload) != `{"t":21}` || g.MessageID != "m-1" || g.CorrelationID != "c-1" ||
				g.ContentType != "application/json" || g.ContentEncoding != "utf-8" ||
				g.Properties["unit"] != "°C & more" || g.Properties[iothub.CreationTimeProperty] == "" {
				t.Fatalf("hub recorded %+v", g)
			}
			if err := h.SendC2D(id, hubsim.C2DMessage{Payload: []byte("hi"), MessageID: "c2d-1", CorrelationID: "x",
				ContentType: "text/plain", Properties: map[string]string{"b": "2", "a": "1"}}); err != nil {
				t.Fatal(err)
			}
			in := r.ExpectMessage(t)
			if string(in.Payload) != "hi" || in.MessageID != "c2d-1" || in.CorrelationID != "x" ||
				in.ContentType != "text/plain" || fmt.Sprint(in.Properties) != "[[a 1] [b 2]]" || in.Ack == nil {
				t.Fatalf("C2D arrived as %+v", in)
			}
			if n := h.PendingC2D(id); n != 1 {
				t.Fatalf("%d C2D messages pending before the ack, want 1", n)
			}
			in.Ack()
			deadline := time.Now().Add(waitLimit)
			for h.PendingC2D(id) != 0 {
				if time.Now().After(deadline) {
					t.Fatal("the acknowledged C2D message stayed in the hub's queue")
				}
				time.Sleep(10 * time.Millisecond)
			}
			r.ExpectNoLoss(t)
		})
	}
}

// TestUnackedC2DIsRedelivered: a C2D message whose handler never returned (no Ack) is delivered again on the
// next link.
func TestUnackedC2DIsRedelivered(t *testing.T) {
	h := startHub(t)
	r := transporttest.NewRecorder()
	p := params(t, h, "dev1", transporttest.AddDevice(t, h, "dev1"), r, time.Hour)
	c, err := NewDialer().Dial(ctxLimit(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.SendC2D("dev1", hubsim.C2DMessage{Payload: []byte("once"), MessageID: "m"}); err != nil {
		t.Fatal(err)
	}
	r.ExpectMessage(t)
	c.Close()
	mustDial(t, NewDialer(), p)
	if m := r.ExpectMessage(t); string(m.Payload) != "once" {
		t.Fatalf("redelivered %+v", m)
	}
}

// TestRenewInPlace: ten renewals of a 5 s token during continuous sending: the hub logs each as a renewal in
// place, no loss is reported, every message is accepted once, one connection in the hub's count.
func TestRenewInPlace(t *testing.T) {
	h := startHub(t)
	key := transporttest.AddDevice(t, h, "dev1")
	events, stop := h.Events()
	defer stop()
	r := transporttest.NewRecorder()
	p := params(t, h, "dev1", key, r, 5*time.Second)
	c := mustDial(t, NewDialer(), p)
	sent := 0
	for i := range 10 {
		for range 20 {
			if err := send(t, c, &transport.Message{Payload: []byte("x"), MessageID: fmt.Sprint("m", sent)}); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		if err := c.RenewToken(ctxLimit(t), token(t, h, "dev1", key, 5*time.Second)); err != nil {
			t.Fatalf("renewal %d: %v", i, err)
		}
	}
	for renewals, deadline := 0, time.After(waitLimit); renewals < 10; {
		select {
		case e := <-events:
			switch e.Kind {
			case hubsim.EventRenew:
				renewals++
			case hubsim.EventDisconnect, hubsim.EventReject:
				t.Fatalf("the device's connection ended: %+v", e)
			}
		case <-deadline:
			t.Fatalf("the hub logged %d renewals in place, want 10", renewals)
		}
	}
	got := h.Messages("dev1")
	seen := map[string]bool{}
	for _, m := range got {
		if seen[m.MessageID] {
			t.Fatalf("duplicate %s", m.MessageID)
		}
		seen[m.MessageID] = true
	}
	if len(seen) != sent {
		t.Fatalf("hub has %d messages, sent %d", len(seen), sent)
	}
	if dev, _ := h.Device("dev1"); dev.Connections != 1 {
		t.Fatalf("%d connections, want 1", dev.Connections)
	}
	r.ExpectNoLoss(t)
}

// TestTwinAndMethods: twin GET and reported patch answered by request id, desired updates pushed, a method call
// answered back to its caller.
func TestTwinAndMethods(t *testing.T) {
	h := startHub(t)
	r := transporttest.NewRecorder()
	p := params(t, h, "dev1", transporttest.AddDevice(t, h, "dev1"), r, time.Hour)
	p.Features = transport.FeatureTwin | transport.FeatureMethods
	c := mustDial(t, NewDialer(), p)
	transporttest.CheckTwinAndMethods(t, h, "dev1", c, r)
}

// TestModule: a module's links are under /devices/{d}/modules/{m}: its telemetry is recorded under the module's
// identity and its twin answers; a module has no C2D link, even when the feature is asked for.
func TestModule(t *testing.T) {
	h := startHub(t)
	transporttest.AddDevice(t, h, "dev1")
	m, err := h.AddModule("dev1", "mod", "")
	if err != nil {
		t.Fatal(err)
	}
	r := transporttest.NewRecorder()
	p := params(t, h, "dev1", m.PrimaryKey, r, time.Hour)
	p.ModuleID, p.Features = "mod", transport.FeatureC2D|transport.FeatureTwin
	tok, err := iothub.BuildSAS(iothub.ResourceURI(h.HostName(), "dev1", "mod"), m.PrimaryKey, "",
		time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	p.Token = tok
	c := mustDial(t, NewDialer(), p)
	if err := send(t, c, &transport.Message{Payload: []byte("from the module"), MessageID: "mm"}); err != nil {
		t.Fatal(err)
	}
	if got, err := h.WaitMessages(ctxLimit(t), m.ID, 1); err != nil || got[0].MessageID != "mm" {
		t.Fatalf("recorded %+v, %v", got, err)
	}
	transporttest.Request(t, c, &transport.Request{Kind: transport.RequestTwinReport, RID: "r1", Payload: []byte(`{"v":1}`)})
	if in := r.ExpectInbound(t, transport.InboundTwinResponse); in.RID != "r1" || in.Status != 204 {
		t.Fatalf("reported patch answered %+v", in)
	}
}
