package core

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/transport/pool"
	"github.com/iotconn/iotconn/hubsim"
)

// These tests run the engine with its real AMQP transport against an in-process hub emulator on 127.0.0.1.

// startAMQPHub starts hubsim with AMQP over TLS and over WebSocket, with dev1 registered.
func startAMQPHub(t testing.TB) *hubsim.Hub {
	t.Helper()
	hub, err := hubsim.Start(hubsim.Config{Dir: t.TempDir(), MQTTAddr: "127.0.0.1:0", AMQPAddr: "127.0.0.1:0",
		AMQPWSAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	return hub
}

// amqpDevice registers id and returns its connection string for transport (AMQP or AMQP over WebSocket): the
// hub's name for the tokens, the listener's address as the gateway.
func amqpDevice(t testing.TB, hub *hubsim.Hub, id string, transport TransportKind) string {
	t.Helper()
	if _, err := hub.Device(id); err != nil {
		if _, err := hub.AddDevice(id, ""); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := hub.ConnectionString(id)
	if err != nil {
		t.Fatal(err)
	}
	addr := hub.AMQPAddr()
	if transport == TransportAMQPWS {
		addr = hub.AMQPWSAddr()
	}
	_, port, _ := net.SplitHostPort(addr)
	return cs + ";GatewayHostName=localhost:" + port
}

func amqpClient(t testing.TB, hub *hubsim.Hub, cs string, opts Options) (*Client, *recorder) {
	t.Helper()
	opts.CAFile = hub.CAFile()
	c, err := NewClient(cs, opts)
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	c.SetHandlers(r.handlers())
	t.Cleanup(func() { closeAndCheck(t, c) })
	return c, r
}

// TestAMQPSendAndC2D, over AMQP and AMQP over WebSocket: a message with every system property and application
// properties is delivered; a C2D message reaches the handler and leaves the hub's queue once the handler
// returned; Close ends with Disabled/Client_Close.
func TestAMQPSendAndC2D(t *testing.T) {
	hub := startAMQPHub(t)
	for _, tr := range []TransportKind{TransportAMQP, TransportAMQPWS} {
		t.Run(fmt.Sprint("transport=", tr), func(t *testing.T) {
			id := fmt.Sprint("dev", tr)
			c, r := amqpClient(t, hub, amqpDevice(t, hub, id, tr), Options{Transport: tr})
			release := make(chan struct{})
			handled := make(chan *Message, 1)
			h := r.handlers()
			h.OnMessage = func(m *Message) {
				<-release // the hub keeps the message until this returns
				handled <- m
			}
			c.SetHandlers(h)
			if err := connect(t, c); err != nil {
				t.Fatal(err)
			}
			r.expectStates(t, connected)
			if _, err := c.Send(&Message{Payload: []byte(`{"t":21}`), MessageID: "m-1", CorrelationID: "c-1",
				ContentType: "application/json", ContentEncoding: "utf-8",
				Properties: []Property{{"unit", "°C & more"}}}); err != nil {
				t.Fatal(err)
			}
			if comp := r.expectCompletions(t, 1)[0]; comp.result != SendDelivered {
				t.Fatalf("%+v", comp)
			}
			got := hub.Messages(id)[0]
			if got.MessageID != "m-1" || got.CorrelationID != "c-1" || got.ContentType != "application/json" ||
				got.ContentEncoding != "utf-8" || got.Properties["unit"] != "°C & more" || string(got.Payload) != `{"t":21}` {
				t.Fatalf("hub recorded %+v", got)
			}
			if err := hub.SendC2D(id, hubsim.C2DMessage{Payload: []byte("reboot"), MessageID: "c2d-1",
				Properties: map[string]string{"urgency": "high"}}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return hub.PendingC2D(id) == 1 })
			close(release)
			select {
			case m := <-handled:
				if string(m.Payload) != "reboot" || m.MessageID != "c2d-1" || len(m.Properties) != 1 {
					t.Fatalf("C2D %+v", m)
				}
			case <-time.After(waitLimit):
				t.Fatal("no C2D message")
			}
			waitFor(t, func() bool { return hub.PendingC2D(id) == 0 })
			closeAndWait(c)
			r.expectStates(t, disabled)
		})
	}
}

// TestAMQPTokenRenewedInPlace: a 3 s token renewed every second (the floors waived) is renewed in place ten times
// while messages flow: no status change, one connection in the hub's count, every message delivered once.
func TestAMQPTokenRenewedInPlace(t *testing.T) {
	hub := startAMQPHub(t)
	c, r := amqpClient(t, hub, amqpDevice(t, hub, "dev1", TransportAMQP), Options{Transport: TransportAMQP,
		SASLifetime: 3 * time.Second, SASRenewMargin: 2 * time.Second, shortTokensForTests: true})
	var mu sync.Mutex
	renewals := 0
	h := r.handlers()
	h.OnLog = func(_ LogLevel, msg string) {
		if strings.Contains(msg, "renewed in place") {
			mu.Lock()
			renewals++
			mu.Unlock()
		}
	}
	c.SetHandlers(h)
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	sent := 0
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := renewals
		mu.Unlock()
		if n >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d renewals", n)
		}
		if _, err := c.Send(&Message{Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		sent++
		time.Sleep(20 * time.Millisecond) // a steady flow, not synchronisation
	}
	for _, comp := range r.expectCompletions(t, sent) {
		if comp.result != SendDelivered {
			t.Fatalf("%+v", comp)
		}
	}
	select {
	case s := <-r.states:
		t.Fatalf("status change during renewals: %v/%v", s.status, s.reason)
	default:
	}
	ids := map[string]bool{}
	for _, m := range hub.Messages("dev1") {
		if ids[m.MessageID] {
			t.Fatalf("duplicate %s", m.MessageID)
		}
		ids[m.MessageID] = true
	}
	if dev, _ := hub.Device("dev1"); len(ids) != sent || dev.Connections != 1 {
		t.Fatalf("hub has %d of %d messages over %d connections", len(ids), sent, dev.Connections)
	}
}

// TestAMQPPoolSurvivesFailover: 200 clients pooled 50 to a connection (4 connections) lose them all to hubsim's
// failover fault (every connection closed, opens answered com.microsoft:iot-hub-not-found-error for 5 s, then
// accepted). Every client comes back by itself (Disconnected_Retrying/Communication_Error, then Connected), every
// message sent before and during the outage is delivered once, the pool holds only new connections, and the
// devices come back spread out, each on its own jittered back-off: no 100 ms slice holds half of them (a pool that
// reconnected its devices itself would bring them all back in one).
func TestAMQPPoolSurvivesFailover(t *testing.T) {
	const n, perConn = 200, 50
	hub := startAMQPHub(t)
	type dev struct {
		c *Client
		r *recorder
	}
	devs := make([]dev, n)
	for i := range devs {
		cs := amqpDevice(t, hub, fmt.Sprint("pooled", i), TransportAMQP)
		c, r := amqpClient(t, hub, cs, Options{Transport: TransportAMQP, AMQPPool: perConn})
		if err := connect(t, c); err != nil {
			t.Fatal(err)
		}
		r.expectStates(t, connected)
		devs[i] = dev{c, r}
	}
	pl := protocols[TransportAMQP].dialer(perConn).(interface{ Stats() pool.Stats })
	if st := pl.Stats(); fmt.Sprint(st.Live) != "[50 50 50 50]" {
		t.Fatalf("pool before the failover: %+v", st)
	}
	events, stop := hub.Events()
	defer stop()
	for _, d := range devs {
		if _, err := d.c.Send(&Message{Payload: []byte("before")}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range devs {
		d.r.expectCompletions(t, 1)
	}
	if err := hub.Fault(hubsim.Fault{Kind: hubsim.FaultFailover, Duration: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		d.r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError})
		for range 2 {
			if _, err := d.c.Send(&Message{Payload: []byte("during")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, d := range devs {
		select {
		case s := <-d.r.states:
			if s != connected {
				t.Fatalf("device %d: %v/%v", i, s.status, s.reason)
			}
		case <-time.After(3 * waitLimit): // the default policy's back-off reaches 10 s
			t.Fatalf("device %d did not come back", i)
		}
		for _, comp := range d.r.expectCompletions(t, 2) {
			if comp.result != SendDelivered {
				t.Fatalf("device %d: %+v", i, comp)
			}
		}
		ids := map[string]bool{}
		for _, m := range hub.Messages(fmt.Sprint("pooled", i)) {
			ids[m.MessageID] = true
		}
		if len(ids) != 3 {
			t.Fatalf("device %d: the hub has %d distinct messages, want 3", i, len(ids))
		}
	}
	if st := pl.Stats(); fmt.Sprint(st.Live) != "[50 50 50 50]" || st.Ended != 0 || len(st.Opening) != 0 {
		t.Fatalf("pool after the failover: %+v", st)
	}
	perSlice := map[int64]int{} // the devices' reconnects per 100 ms, from the hub's log
	for reconnects := 0; reconnects < n; {
		select {
		case e := <-events:
			if e.Kind == hubsim.EventConnect {
				perSlice[e.Time.UnixMilli()/100]++
				reconnects++
			}
		case <-time.After(waitLimit):
			t.Fatalf("the hub logged %d reconnects, want %d", reconnects, n)
		}
	}
	most := 0
	for _, k := range perSlice {
		most = max(most, k)
	}
	t.Logf("reconnects over %d slices of 100 ms, at most %d in one", len(perSlice), most)
	if most > n/2 {
		t.Fatalf("%d of %d devices came back in one 100 ms slice", most, n)
	}
}
