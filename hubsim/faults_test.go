package hubsim

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/iothub"
)

// Raw MQTT 3.1.1 over the plain TCP listener, for byte-level checks (RST versus FIN, no CONNACK, no PINGRESP).

func mqttString(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func connectPacket(c creds) []byte {
	body := append(mqttString("MQTT"), 4, 0xC2, 0, 60) // level 4, user+password+clean, keepalive 60 s
	body = append(body, mqttString(c.clientID)...)
	body = append(body, mqttString(c.username)...)
	body = append(body, mqttString(c.password)...)
	return mqttPacket(0x10, body)
}

// mqttPacket frames a body with its fixed header.
func mqttPacket(header byte, body []byte) []byte {
	pk := []byte{header}
	for n := len(body); ; {
		b := byte(n % 128)
		if n /= 128; n > 0 {
			b |= 0x80
		}
		pk = append(pk, b)
		if n == 0 {
			break
		}
	}
	return append(pk, body...)
}

// rawConnect sends CONNECT and returns the connection and the CONNACK code, -1 if it closed without CONNACK.
func rawConnect(t *testing.T, addr string, c creds) (net.Conn, int) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write(connectPacket(c)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("no CONNACK and no close")
		}
		return conn, -1
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		t.Fatalf("not a CONNACK: % x", ack)
	}
	return conn, int(ack[3])
}

func rawConnected(t *testing.T, h *Hub, d Device) net.Conn {
	t.Helper()
	conn, code := rawConnect(t, h.TCPAddr(), validCreds(t, h, d))
	if code != 0 {
		t.Fatalf("CONNACK %d", code)
	}
	return conn
}

// readEnd reads until the connection ends and returns how: io.EOF for a clean close, ECONNRESET for a reset.
func readEnd(t *testing.T, conn net.Conn) error {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("connection still open")
			}
			return err
		}
	}
}

func assertReset(t *testing.T, conn net.Conn) {
	t.Helper()
	if err := readEnd(t, conn); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection ended with %v, want a TCP reset", err)
	}
}

func withTCP(c *Config) { c.TCPAddr = "127.0.0.1:0" }

func TestFaultKillTCPResetsWithoutGoodbye(t *testing.T) {
	h := startHub(t, withTCP)
	d := addDevice(t, h, "d1")
	other := addDevice(t, h, "d2")
	conn := rawConnected(t, h, d)
	bystander := rawConnected(t, h, other)
	if err := h.Fault(Fault{Kind: FaultKillTCP, Device: "d1"}); err != nil {
		t.Fatal(err)
	}
	assertReset(t, conn)
	// The other device is untouched: it still gets answers.
	if _, err := bystander.Write([]byte{0xC0, 0}); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 2)
	_ = bystander.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := io.ReadFull(bystander, resp); err != nil || resp[0] != 0xD0 {
		t.Fatalf("bystander PINGRESP % x, %v", resp, err)
	}
	if err := h.Fault(Fault{Kind: FaultKillTCP, Device: "d1"}); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("kill-tcp of an offline device: %v", err)
	}
	// Without a device, every connection goes.
	if err := h.Fault(Fault{Kind: FaultKillTCP}); err != nil {
		t.Fatal(err)
	}
	assertReset(t, bystander)
}

func TestFaultShutdownListenerClosesCleanlyAndReopens(t *testing.T) {
	t.Parallel() // waits out a timed fault
	h := startHub(t, withTCP)
	d := addDevice(t, h, "d1")
	events, cancel := h.Events()
	defer cancel()
	tlsDev := mustConnect(t, h, d)
	conn := rawConnected(t, h, addDevice(t, h, "d2"))
	if err := h.Fault(Fault{Kind: FaultShutdownListener, Duration: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := readEnd(t, conn); err != io.EOF {
		t.Fatalf("plain connection ended with %v, want a clean close (EOF)", err)
	}
	if err := tlsDev.waitLost(t); err == nil {
		t.Fatal("TLS connection not closed")
	}
	if c, err := net.DialTimeout("tcp", h.Addr(), waitLimit); err == nil {
		c.Close()
		t.Fatal("listener accepted a connection while shut down")
	}
	waitEvent(t, events, func(e Event) bool { return e.Kind == EventFault && e.Reason == "listeners reopened" })
	mustConnect(t, h, d)
}

func TestFaultHubDownRefusesThenRecovers(t *testing.T) {
	t.Parallel() // waits out a timed fault
	h := startHub(t, withTCP)
	d := addDevice(t, h, "d1")
	events, cancel := h.Events()
	defer cancel()
	conn := rawConnected(t, h, d)
	if err := h.Fault(Fault{Kind: FaultHubDown, Duration: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	assertReset(t, conn)
	for _, addr := range []string{h.Addr(), h.TCPAddr()} {
		_, err := net.DialTimeout("tcp", addr, waitLimit)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %s while down: %v, want connection refused", addr, err)
		}
	}
	waitEvent(t, events, func(e Event) bool { return e.Kind == EventFault && e.Reason == "listeners reopened" })
	mustConnect(t, h, d)
	rawConnected(t, h, addDevice(t, h, "d2"))
}

func TestFaultBlackholeStallsTrafficAndNewConnections(t *testing.T) {
	t.Parallel() // waits out a timed fault
	h := startHub(t, withTCP)
	d := addDevice(t, h, "d1")
	events, cancel := h.Events()
	defer cancel()
	conn := rawConnected(t, h, d)
	if err := h.Fault(Fault{Kind: FaultBlackhole, Duration: 3 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte{0xC0, 0}); err != nil { // PINGREQ
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 2)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %d bytes, %v during the blackhole; want silence", n, err)
	}
	// A new connection is accepted but never answered.
	fresh, err := net.DialTimeout("tcp", h.TCPAddr(), waitLimit)
	if err != nil {
		t.Fatalf("blackhole refused the TCP connect: %v", err)
	}
	defer fresh.Close()
	if _, err := fresh.Write(connectPacket(validCreds(t, h, addDevice(t, h, "d2")))); err != nil {
		t.Fatal(err)
	}
	_ = fresh.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := fresh.Read(make([]byte, 4)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("new connection got %d bytes, %v; want silence", n, err)
	}
	waitEvent(t, events, func(e Event) bool { return e.Kind == EventFault && e.Reason == "blackhole ended" })
	// The stalled PINGREQ is answered now; the unanswered connection is closed.
	_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
	resp := make([]byte, 2)
	if _, err := io.ReadFull(conn, resp); err != nil || resp[0] != 0xD0 {
		t.Fatalf("PINGRESP after the blackhole: % x, %v", resp, err)
	}
	if err := readEnd(t, fresh); err == nil {
		t.Fatal("connection accepted during the blackhole was not closed")
	}
}

// expectThrottled makes five quick connects against a throttle of one per second: the first passes, and some are
// refused with refusal (a CONNACK code, or -1 for a close without one), which hubsim's reject event reports.
func expectThrottled(t *testing.T, h *Hub, d Device, events <-chan Event, refusal int) {
	t.Helper()
	accepted, refused := 0, 0
	for i := 0; i < 5; i++ {
		_, code := rawConnect(t, h.TCPAddr(), validCreds(t, h, d))
		switch code {
		case 0:
			accepted++
		case refusal:
			refused++
		default:
			t.Fatalf("a throttled connect got %d, want 0 or %d", code, refusal)
		}
	}
	if accepted < 1 || refused < 1 {
		t.Fatalf("accepted %d, refused %d", accepted, refused)
	}
	e := waitEvent(t, events, func(e Event) bool { return e.Kind == EventReject })
	if e.Code != refusal || !strings.Contains(e.Reason, "throttled") {
		t.Fatalf("reject event %+v", e)
	}
}

func TestFaultThrottleClosesConnectsWithoutConnack(t *testing.T) {
	h := startHub(t, withTCP)
	d := addDevice(t, h, "d1")
	events, cancel := h.Events()
	defer cancel()
	if err := h.Fault(Fault{Kind: FaultThrottle, Rate: 1, Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	expectThrottled(t, h, d, events, -1)
	if err := h.Fault(Fault{Kind: FaultThrottle, Rate: 0}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, code := rawConnect(t, h.TCPAddr(), validCreds(t, h, d)); code != 0 {
			t.Fatalf("connect after the throttle was lifted: %d", code)
		}
	}
}

func TestFaultThrottleCanAnswerServerUnavailable(t *testing.T) {
	h := startHub(t, func(c *Config) { withTCP(c); c.ControlAddr = "127.0.0.1:0" })
	d := addDevice(t, h, "d1")
	events, cancel := h.Events()
	defer cancel()
	if code, b := call(t, h, "POST", "/faults", `{"kind":"throttle","rate":1,"seconds":60,"answer":"server-unavailable"}`); code != 200 {
		t.Fatalf("POST /faults: %d %s", code, b)
	}
	expectThrottled(t, h, d, events, 3)
	// The next throttle fault chooses its own answer: the default closes.
	if err := h.Fault(Fault{Kind: FaultThrottle, Rate: 1, Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	codes := map[int]bool{}
	for i := 0; i < 5; i++ {
		_, code := rawConnect(t, h.TCPAddr(), validCreds(t, h, d))
		codes[code] = true
	}
	if codes[3] || !codes[-1] {
		t.Fatalf("connects under a closing throttle answered %v", codes)
	}
	for _, bad := range []Fault{
		{Kind: FaultThrottle, Rate: 1, Answer: "teapot"},
		{Kind: FaultKillTCP, Answer: ThrottleClose},
	} {
		if err := h.Fault(bad); err == nil {
			t.Fatalf("fault %+v accepted", bad)
		}
	}
}

func TestFaultExpireToken(t *testing.T) {
	h := startHub(t, withTCP)
	d := addDevice(t, h, "d1")
	events, cancel := h.Events()
	defer cancel()
	conn := rawConnected(t, h, d)
	if err := h.Fault(Fault{Kind: FaultExpireToken, Device: "d1"}); err != nil {
		t.Fatal(err)
	}
	assertReset(t, conn)
	e := waitEvent(t, events, func(e Event) bool { return e.Kind == EventDisconnect })
	if !strings.HasPrefix(e.Reason, "sas token expired") {
		t.Fatalf("disconnect reason %q", e.Reason)
	}
	rawConnected(t, h, d) // a fresh token is fine
}

func TestFaultRotateKey(t *testing.T) {
	h := startHub(t, withTCP)
	d := addDevice(t, h, "d1")
	conn := rawConnected(t, h, d)
	if err := h.Fault(Fault{Kind: FaultRotateKey, Device: "d1"}); err != nil {
		t.Fatal(err)
	}
	assertReset(t, conn)
	if _, code := rawConnect(t, h.TCPAddr(), validCreds(t, h, d)); code != 5 {
		t.Fatalf("old key got CONNACK %d, want 5", code)
	}
	rotated, err := h.Device("d1")
	if err != nil || rotated.PrimaryKey == d.PrimaryKey || rotated.SecondaryKey == d.SecondaryKey {
		t.Fatalf("keys not rotated: %+v, %v", rotated, err)
	}
	rawConnected(t, h, rotated)
}

func TestFaultDisableDevice(t *testing.T) {
	h := startHub(t, withTCP)
	d := addDevice(t, h, "d1")
	conn := rawConnected(t, h, d)
	if err := h.Fault(Fault{Kind: FaultDisableDevice, Device: "d1"}); err != nil {
		t.Fatal(err)
	}
	assertReset(t, conn)
	if _, code := rawConnect(t, h.TCPAddr(), validCreds(t, h, d)); code != 3 {
		t.Fatalf("disabled device got CONNACK %d, want 3", code)
	}
	if err := h.SetDeviceEnabled("d1", true); err != nil {
		t.Fatal(err)
	}
	rawConnected(t, h, d)
}

func TestFaultMovePort(t *testing.T) {
	h := startHub(t, nil)
	d := addDevice(t, h, "d1")
	dv := mustConnect(t, h, d)
	old := h.Addr()
	if err := h.Fault(Fault{Kind: FaultMovePort, Addr: "127.0.0.1:0"}); err != nil {
		t.Fatal(err)
	}
	dv.waitLost(t)
	if h.Addr() == old {
		t.Fatal("address unchanged")
	}
	if _, err := net.DialTimeout("tcp", old, waitLimit); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("old address: %v, want connection refused", err)
	}
	mustConnect(t, h, d)
	if err := h.Fault(Fault{Kind: FaultMovePort, Addr: "256.0.0.1:1"}); err == nil {
		t.Fatal("move to an impossible address succeeded")
	}
	mustConnect(t, h, d) // still served where it was
	if err := h.Fault(Fault{Kind: FaultMovePort, Listener: "amqps"}); err == nil {
		t.Fatal("moved an AMQP listener the hub does not have")
	}
	if err := h.Fault(Fault{Kind: FaultKillTCP, Listener: "mqtts"}); err == nil {
		t.Fatal("a listener accepted for a fault that moves none")
	}
}

// TestFaultMovePortAMQP: move-port with Listener moves that listener (here AMQP's), and leaves the MQTT one.
func TestFaultMovePortAMQP(t *testing.T) {
	h := startHub(t, func(c *Config) { c.AMQPAddr = "127.0.0.1:0" })
	mqtt, old := h.Addr(), h.AMQPAddr()
	if err := h.Fault(Fault{Kind: FaultMovePort, Listener: "amqps"}); err != nil {
		t.Fatal(err)
	}
	if h.AMQPAddr() == old || h.Addr() != mqtt {
		t.Fatalf("AMQP %s -> %s, MQTT %s -> %s: want only AMQP's moved", old, h.AMQPAddr(), mqtt, h.Addr())
	}
	if _, err := net.DialTimeout("tcp", old, waitLimit); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("old address: %v, want connection refused", err)
	}
	connectAMQPDevice(t, h, "d1")
}

func TestFaultRestartKeepsRegistryAndQueuedC2D(t *testing.T) {
	h := startHub(t, withTCP)
	d := addDevice(t, h, "d1")
	events, cancel := h.Events()
	defer cancel()
	dv := mustConnect(t, h, d)
	conn := rawConnected(t, h, addDevice(t, h, "d2"))
	if err := h.SendC2D("d1", C2DMessage{Payload: []byte("queued")}); err != nil {
		t.Fatal(err)
	}
	addr, tcpAddr := h.Addr(), h.TCPAddr()
	if err := h.Fault(Fault{Kind: FaultRestart}); err != nil {
		t.Fatal(err)
	}
	dv.waitLost(t)
	assertReset(t, conn)
	waitEvent(t, events, func(e Event) bool { return e.Kind == EventFault && e.Reason == "restart" })
	if h.Addr() != addr || h.TCPAddr() != tcpAddr {
		t.Fatalf("restart moved the hub: %s %s", h.Addr(), h.TCPAddr())
	}
	again := mustConnect(t, h, d)
	again.subscribe(t, iothub.C2DPrefix("d1")+"#", 1)
	if m := again.waitMsg(t, iothub.C2DPrefix("d1")); string(m.Payload()) != "queued" {
		t.Fatalf("C2D after restart %q", m.Payload())
	}
}

func TestFaultInjectionMessageProperties(t *testing.T) {
	h := startHub(t, withTCP)
	d := addDevice(t, h, "d1")
	for _, c := range []struct {
		op      string
		wantEnd func(error) bool
	}{
		{"KillTcp", func(err error) bool { return errors.Is(err, syscall.ECONNRESET) }},
		{"ShutDownMqtt", func(err error) bool { return err == io.EOF }},
	} {
		t.Run(c.op, func(t *testing.T) {
			conn := rawConnected(t, h, d)
			bag := iothub.EncodeProperties([][2]string{{faultPropType, c.op}, {faultPropDelaySecs, "0"}, {faultPropDurationSec, "30"}})
			topic := iothub.TelemetryTopic("d1", "", bag)
			pub := mqttPacket(0x30, append(mqttString(topic), "fault"...)) // QoS 0 PUBLISH
			if _, err := conn.Write(pub); err != nil {
				t.Fatal(err)
			}
			if err := readEnd(t, conn); !c.wantEnd(err) {
				t.Fatalf("%s ended the connection with %v", c.op, err)
			}
			// For DurationInSecs the device's connects are closed unanswered.
			if _, code := rawConnect(t, h.TCPAddr(), validCreds(t, h, d)); code != -1 {
				t.Fatalf("connect during the fault got CONNACK %d", code)
			}
			h.mu.Lock()
			delete(h.refused, "d1") // end the 30 s window early for the next case
			h.mu.Unlock()
		})
	}
	if n := len(h.Messages("d1")); n != 2 {
		t.Fatalf("%d fault messages recorded, want 2", n)
	}
}

func TestCloseEndsFaultsCallsAndConnections(t *testing.T) {
	h, err := Start(Config{Dir: t.TempDir(), MQTTAddr: "127.0.0.1:0", TCPAddr: "127.0.0.1:0", ControlAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	d := addDevice(t, h, "d1")
	dv := mustConnect(t, h, d)
	dv.subscribe(t, "$iothub/methods/POST/#", 0)
	called := make(chan error, 1)
	go func() {
		_, err := h.InvokeMethod(context.Background(), "d1", "never", nil)
		called <- err
	}()
	dv.waitMsg(t, "$iothub/methods/POST/never/")
	if err := h.Fault(Fault{Kind: FaultBlackhole, Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	held, err := net.DialTimeout("tcp", h.TCPAddr(), waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-called:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("pending method call ended with %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("pending method call still waiting after Close")
	}
	if err := readEnd(t, held); err == nil {
		t.Fatal("connection held by the blackhole survived Close")
	}
	if err := h.Fault(Fault{Kind: FaultKillTCP}); !errors.Is(err, ErrClosed) {
		t.Fatalf("fault after Close: %v", err)
	}
	// goleak in TestMain checks that no goroutine of the hub is left.
}

// TestCertNames: the server certificate covers Config.CertNames; a hub started again on the same state directory
// with another name makes it again, still under the same CA.
func TestCertNames(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a.hub.test", "b.hub.test"} {
		h := startHub(t, func(c *Config) { c.Dir, c.CertNames = dir, []string{name} })
		for _, sn := range []string{name, "localhost", "other.hub.test"} {
			c, err := tls.Dial("tcp", h.Addr(), &tls.Config{RootCAs: caPool(t, h), ServerName: sn})
			if err == nil {
				c.Close()
			}
			if (err == nil) != (sn != "other.hub.test") {
				t.Fatalf("TLS to %s as %q: %v", h.Addr(), sn, err)
			}
		}
		h.Close()
	}
}
