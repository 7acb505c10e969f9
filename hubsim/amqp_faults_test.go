package hubsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
)

// amqpTestDevice is a go-amqp connection with one authorised device and its telemetry sender.
type amqpTestDevice struct {
	conn *goamqp.Conn
	cbs  *cbsClient
	snd  *goamqp.Sender
	dev  Device
}

func connectAMQPDevice(t *testing.T, h *Hub, id string) *amqpTestDevice {
	t.Helper()
	d, err := h.Device(id)
	if err != nil {
		d = addDevice(t, h, id)
	}
	conn := mustDialAMQP(t, h)
	cbs := newCBS(t, conn)
	cbs.authorise(t, h, d, "auth")
	snd, err := newSession(t, conn).NewSender(ctxLimit(t), "/devices/"+id+"/messages/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	return &amqpTestDevice{conn: conn, cbs: cbs, snd: snd, dev: d}
}

func (d *amqpTestDevice) send(t *testing.T, ctx context.Context) error {
	t.Helper()
	return d.snd.Send(ctx, goamqp.NewMessage([]byte("hello")), nil)
}

// waitConnEnd waits until the hub ends the client's connection and returns why.
func waitConnEnd(t *testing.T, c *goamqp.Conn) error {
	t.Helper()
	select {
	case <-c.Done():
		return c.Err()
	case <-time.After(waitLimit):
		t.Fatal("connection did not end")
		return nil
	}
}

func remoteCondition(err error) goamqp.ErrCond {
	var ce *goamqp.ConnError
	var le *goamqp.LinkError
	var ae *goamqp.Error
	switch {
	case errors.As(err, &ce) && ce.RemoteErr != nil:
		return ce.RemoteErr.Condition
	case errors.As(err, &le) && le.RemoteErr != nil:
		return le.RemoteErr.Condition
	case errors.As(err, &ae):
		return ae.Condition
	}
	return ""
}

func fault(t *testing.T, h *Hub, f Fault) {
	t.Helper()
	if err := h.Fault(f); err != nil {
		t.Fatal(err)
	}
}

// shortCtx bounds an operation that must not complete while a fault holds it; the faults last 3 s, so a loaded
// machine still runs the check inside the fault.
func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

// TestAMQPFaultsCutTheConnection: kill-tcp, hub-down and restart end a connected client's connection without
// an AMQP close; amqp-close closes it with amqp:connection:forced; after each the device connects again.
func TestAMQPFaultsCutTheConnection(t *testing.T) {
	h := startAMQPHub(t)
	addDevice(t, h, "d1")
	events, stop := h.Events()
	defer stop()
	for _, f := range []Fault{
		{Kind: FaultKillTCP, Device: "d1"}, {Kind: FaultKillTCP}, {Kind: FaultHubDown, Duration: 3 * time.Second},
		{Kind: FaultRestart}, {Kind: FaultAMQPClose, Device: "d1"}, {Kind: FaultAMQPClose},
	} {
		d := connectAMQPDevice(t, h, "d1")
		fault(t, h, f)
		err := waitConnEnd(t, d.conn)
		cond := remoteCondition(err)
		if f.Kind == FaultAMQPClose && cond != goamqp.ErrCondConnectionForced || f.Kind != FaultAMQPClose && cond != "" {
			t.Fatalf("%s: connection ended with %v", f.Kind, err)
		}
		if f.Kind == FaultHubDown {
			if _, err := dialAMQP(t, h, goamqp.SASLTypeAnonymous()); err == nil {
				t.Fatal("connected while the hub is down")
			}
			waitEvent(t, events, func(e Event) bool { return e.Reason == "listeners reopened" })
		}
	}
}

// TestAMQPFaultsDetachTheDevice: expire-token, rotate-key and disable-device detach the device's links with
// amqp:unauthorized-access, amqp:unauthorized-access and amqp:not-found; amqp-detach with the chosen condition.
// The connection stays up for the other device on it.
func TestAMQPFaultsDetachTheDevice(t *testing.T) {
	h := startAMQPHub(t)
	for _, c := range []struct {
		f    Fault
		want goamqp.ErrCond
	}{
		{Fault{Kind: FaultExpireToken}, goamqp.ErrCondUnauthorizedAccess},
		{Fault{Kind: FaultRotateKey}, goamqp.ErrCondUnauthorizedAccess},
		{Fault{Kind: FaultAMQPDetach, Condition: "com.microsoft:timeout"}, "com.microsoft:timeout"},
		{Fault{Kind: FaultAMQPDetach}, goamqp.ErrCondDetachForced},
		{Fault{Kind: FaultDisableDevice}, goamqp.ErrCondNotFound},
	} {
		id := fmt.Sprint("d-", c.f.Kind, c.want)
		d := connectAMQPDevice(t, h, id)
		bystander := addDevice(t, h, "other-"+id)
		d.cbs.authorise(t, h, bystander, "other")
		c.f.Device = id
		fault(t, h, c.f)
		var err error
		for range 100 { // the detach may still be on its way when the first send goes
			if err = d.send(t, ctxLimit(t)); err != nil {
				break
			}
		}
		if cond := remoteCondition(err); cond != c.want {
			t.Fatalf("%s: send after it: %v", c.f.Kind, err)
		}
		other, err := newSession(t, d.conn).NewSender(ctxLimit(t), "/devices/"+bystander.ID+"/messages/events", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := other.Send(ctxLimit(t), goamqp.NewMessage([]byte("x")), nil); err != nil {
			t.Fatalf("%s: the other device: %v", c.f.Kind, err)
		}
	}
}

// TestAMQPFaultReject: telemetry is rejected with the chosen condition while the fault lasts.
func TestAMQPFaultReject(t *testing.T) {
	h := startAMQPHub(t)
	d := connectAMQPDevice(t, h, "d1")
	fault(t, h, Fault{Kind: FaultAMQPReject, Device: "d1", Condition: string(condThrottled), Duration: time.Minute})
	if cond := remoteCondition(d.send(t, ctxLimit(t))); cond != goamqp.ErrCond(condThrottled) {
		t.Fatalf("condition %q", cond)
	}
	fault(t, h, Fault{Kind: FaultAMQPReject, Device: "d1", Condition: string("amqp:resource-limit-exceeded"), Duration: time.Minute})
	if cond := remoteCondition(d.send(t, ctxLimit(t))); cond != goamqp.ErrCondResourceLimitExceeded {
		t.Fatalf("condition %q", cond)
	}
}

// TestAMQPFaultWithholdCredit: with credit withheld a send does not go out; when the fault ends it does.
func TestAMQPFaultWithholdCredit(t *testing.T) {
	h := startAMQPHub(t)
	d := connectAMQPDevice(t, h, "d1")
	events, stop := h.Events()
	defer stop()
	fault(t, h, Fault{Kind: FaultAMQPWithholdCredit, Device: "d1", Duration: 3 * time.Second})
	var err error
	// go-amqp reads flows and takes sends in one select, so a few sends may still go out on the old credit (the
	// hub accepts what was in flight); soon one finds no credit.
	for range 20 {
		if err = d.send(t, shortCtx(t)); err != nil {
			break
		}
	}
	if cond := remoteCondition(err); cond != goamqp.ErrCondTransferLimitExceeded {
		t.Fatalf("send without credit: %v", err)
	}
	waitEvent(t, events, func(e Event) bool { return e.Reason == "amqp-withhold-credit ended" })
	if err := d.send(t, ctxLimit(t)); err != nil {
		t.Fatal(err)
	}
}

// TestAMQPFaultDropCBS: put-token gets no reply while the fault lasts (the token still applies), and replies
// again afterwards.
func TestAMQPFaultDropCBS(t *testing.T) {
	h := startAMQPHub(t)
	d := connectAMQPDevice(t, h, "d1")
	events, stop := h.Events()
	defer stop()
	fault(t, h, Fault{Kind: FaultAMQPDropCBS, Duration: 3 * time.Second})
	req := goamqp.NewMessage(nil)
	req.Data, req.Value = nil, "SharedAccessSignature sr=x&sig=y&se=1"
	req.Properties = &goamqp.MessageProperties{MessageID: "dropped"}
	req.ApplicationProperties = map[string]any{"operation": "put-token", "type": amqpTokenTypeSB, "name": "localhost/devices/d1"}
	if err := d.cbs.snd.Send(ctxLimit(t), req, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := d.cbs.rcv.Receive(shortCtx(t), nil); err == nil {
		t.Fatalf("a reply came: %v", m.Properties)
	}
	waitEvent(t, events, func(e Event) bool { return e.Reason == "amqp-drop-cbs ended" })
	// the reply to the request sent during the fault never comes, so the next one is the next reply
	d.cbs.authorise(t, h, d.dev, "after")
}

// TestAMQPFaultThrottle: over the throttle's rate a new device's put-token is rejected with
// com.microsoft:device-container-throttled.
func TestAMQPFaultThrottle(t *testing.T) {
	h := startAMQPHub(t)
	conn := mustDialAMQP(t, h)
	cbs := newCBS(t, conn)
	fault(t, h, Fault{Kind: FaultThrottle, Rate: 1, Duration: time.Minute})
	throttled := 0
	for i := range 5 {
		d := addDevice(t, h, fmt.Sprint("d", i))
		aud := "localhost/devices/" + d.ID
		req := goamqp.NewMessage(nil)
		req.Data, req.Value = nil, sasToken(t, aud, d.PrimaryKey, time.Now().Add(time.Hour))
		req.Properties = &goamqp.MessageProperties{MessageID: uint64(i)}
		req.ApplicationProperties = map[string]any{"operation": "put-token", "type": amqpTokenTypeSB, "name": aud}
		err := cbs.snd.Send(ctxLimit(t), req, nil)
		switch cond := remoteCondition(err); {
		case err == nil:
			m, err := cbs.rcv.Receive(ctxLimit(t), nil)
			if err != nil || statusOf(m) != int32(200) {
				t.Fatalf("accepted put-token: %v %v", err, m)
			}
		case cond == goamqp.ErrCond(condThrottled):
			throttled++
		default:
			t.Fatalf("put-token: %v", err)
		}
	}
	if throttled == 0 {
		t.Fatal("five device connections within the rate of one per second were all accepted")
	}
}

// TestAMQPFaultFailover: every connection is cut; during the fault an AMQP connect is closed with
// com.microsoft:iot-hub-not-found-error, at the new address and at the old one (a client's stale lookup), and an
// MQTT connect gets CONNACK 3; afterwards devices connect again on the new address, and the old one refuses.
func TestAMQPFaultFailover(t *testing.T) {
	h := startHub(t, func(c *Config) { c.AMQPAddr = "127.0.0.1:0" })
	d := connectAMQPDevice(t, h, "d1")
	events, stop := h.Events()
	defer stop()
	old := h.AMQPAddr()
	fault(t, h, Fault{Kind: FaultFailover, Duration: 3 * time.Second, Addr: "127.0.0.1:0"})
	waitConnEnd(t, d.conn)
	if h.AMQPAddr() == old {
		t.Fatal("the AMQP listener did not move")
	}
	for _, addr := range []string{h.AMQPAddr(), old} {
		c, err := dialAMQPAt(t, h, addr, goamqp.SASLTypeAnonymous())
		if err == nil {
			err = waitConnEnd(t, c)
		}
		if cond := remoteCondition(err); cond != goamqp.ErrCond(condHubNotFound) {
			t.Fatalf("connect to %s during failover: %v", addr, err)
		}
		waitEvent(t, events, func(e Event) bool {
			return e.Kind == EventReject && strings.HasSuffix(e.Reason, "iot-hub-not-found (failover in progress) at "+addr)
		})
	}
	if _, code, _ := connect(t, h, validCreds(t, h, d.dev), ""); code != 3 {
		t.Fatalf("MQTT connect during failover: CONNACK %d", code)
	}
	waitEvent(t, events, func(e Event) bool { return e.Reason == "failover ended" })
	connectAMQPDevice(t, h, "d1")
	if _, err := net.DialTimeout("tcp", old, waitLimit); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("old address after the failover: %v, want connection refused", err)
	}
	if err := h.Fault(Fault{Kind: FaultFailover, Duration: time.Second, Addr: "127.0.0.1:0", Listener: "nope"}); err == nil {
		t.Fatal("a failover moved a listener that does not exist")
	}
}

// TestAMQPFaultBlackhole: while blackholed a send does not complete; afterwards the link works again.
func TestAMQPFaultBlackhole(t *testing.T) {
	h := startAMQPHub(t)
	d := connectAMQPDevice(t, h, "d1")
	events, stop := h.Events()
	defer stop()
	fault(t, h, Fault{Kind: FaultBlackhole, Duration: 3 * time.Second})
	if err := d.send(t, shortCtx(t)); err == nil {
		t.Fatal("a send completed through a blackhole")
	}
	waitEvent(t, events, func(e Event) bool { return e.Reason == "blackhole ended" })
	if err := d.send(t, ctxLimit(t)); err != nil {
		t.Fatal(err)
	}
}

// TestAMQPFaultMessages: Azure's SDK end-to-end fault messages act on AMQP: KillAmqpD2CLink detaches the
// telemetry link, KillAmqpSession ends its session, both with amqp:link:detach-forced, KillAmqpConnection closes
// the connection with amqp:connection:forced; a put-token within DurationInSecs is answered 503.
func TestAMQPFaultMessages(t *testing.T) {
	h := startAMQPHub(t)
	for _, op := range []string{"KillAmqpD2CLink", "KillAmqpSession", "KillAmqpConnection"} {
		d := connectAMQPDevice(t, h, "d1")
		m := goamqp.NewMessage([]byte("fault"))
		m.ApplicationProperties = map[string]any{faultPropType: op, faultPropDelaySecs: "0", faultPropDurationSec: "0"}
		// With no delay the fault may even overtake the message's own outcome.
		err := d.snd.Send(ctxLimit(t), m, nil)
		if op == "KillAmqpConnection" {
			err = waitConnEnd(t, d.conn)
		}
		for i := 0; err == nil && i < 100; i++ { // the detach or end may still be on its way
			err = d.send(t, ctxLimit(t))
		}
		var se *goamqp.SessionError
		cond := remoteCondition(err)
		if errors.As(err, &se) && se.RemoteErr != nil {
			cond = se.RemoteErr.Condition
		}
		want := goamqp.ErrCondDetachForced
		if op == "KillAmqpConnection" {
			want = goamqp.ErrCondConnectionForced
		}
		if cond != want {
			t.Fatalf("%s: %v", op, err)
		}
	}
	d := connectAMQPDevice(t, h, "d1")
	m := goamqp.NewMessage([]byte("fault"))
	m.ApplicationProperties = map[string]any{faultPropType: "KillAmqpD2CLink", faultPropDelaySecs: "0",
		faultPropDurationSec: "60"}
	_ = d.snd.Send(ctxLimit(t), m, nil) // its outcome may lose the race with the detach
	aud := "localhost/devices/d1"
	tok := sasToken(t, aud, d.dev.PrimaryKey, time.Now().Add(time.Hour))
	for range 100 { // the refusal starts once the hub handled the message, after its acknowledgement
		if st := statusOf(d.cbs.putToken(t, amqpTokenTypeSB, aud, tok, "again")); st == int32(503) {
			return
		}
	}
	t.Fatal("put-tokens during the fault's duration were not answered 503")
}
