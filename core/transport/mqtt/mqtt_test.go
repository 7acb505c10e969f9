package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/transporttest"
	"github.com/iotconn/iotconn/hubsim"
)

// A publisher that raced a link's loss into paho's Publish stays there for up to publishWait: paho offers no
// way to abort a Publish. Everything else must be gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/eclipse/paho%2emqtt%2egolang.(*client).Publish"))
}

const waitLimit = 10 * time.Second

func startHub(t testing.TB, cfg hubsim.Config) *hubsim.Hub {
	t.Helper()
	cfg.Dir = t.TempDir()
	if cfg.MQTTAddr == "" {
		cfg.MQTTAddr = "127.0.0.1:0"
	}
	h, err := hubsim.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// tlsFor trusts the hub's CA. ServerName stays empty: the transport takes it from the host.
func tlsFor(t testing.TB, h *hubsim.Hub) *tls.Config {
	t.Helper()
	pool, err := h.CAPool()
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool}
}

// params returns dial parameters for device id with a valid one-hour token signed with key.
func params(t testing.TB, h *hubsim.Hub, id, key string, r *transporttest.Recorder) transport.DialParams {
	t.Helper()
	tok, err := iothub.BuildSAS(iothub.ResourceURI(h.HostName(), id, ""), key, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return transport.DialParams{Host: h.HostName(), DeviceID: id, Token: tok, TLS: tlsFor(t, h),
		Features: transport.FeatureC2D, Handler: r}
}

// overWebSocket points p at the hub's WebSocket listener.
func overWebSocket(h *hubsim.Hub, p transport.DialParams) transport.DialParams {
	_, port, _ := net.SplitHostPort(h.WSAddr())
	p.Host, p.WebSocket = "localhost:"+port, true
	return p
}

func dial(p transport.DialParams) (transport.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	return NewDialer().Dial(ctx, p)
}

func mustDial(t *testing.T, p transport.DialParams) transport.Conn {
	t.Helper()
	c, err := dial(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func fault(t *testing.T, h *hubsim.Hub, f hubsim.Fault) {
	t.Helper()
	if err := h.Fault(f); err != nil {
		t.Fatal(err)
	}
}

// sends pipelines messages on a conn and counts every completion.
type sends struct {
	mu      sync.Mutex
	calls   []int
	results []error
	left    sync.WaitGroup
}

func sendAll(c transport.Conn, msgs []*transport.Message) *sends {
	s := &sends{calls: make([]int, len(msgs)), results: make([]error, len(msgs))}
	s.left.Add(len(msgs))
	for i, m := range msgs {
		c.Send(m, func(err error) {
			s.mu.Lock()
			s.calls[i]++
			first := s.calls[i] == 1
			s.results[i] = err
			s.mu.Unlock()
			if first {
				s.left.Done()
			}
		})
	}
	return s
}

// wait returns every send's result once each has completed.
func (s *sends) wait(t *testing.T) []error {
	t.Helper()
	done := make(chan struct{})
	go func() { s.left.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("not every send completed")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.results...)
}

// expectOnce checks that no completion ran twice; call it after Close, when no completion can follow.
func (s *sends) expectOnce(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, n := range s.calls {
		if n != 1 {
			t.Fatalf("send %d completed %d times", i, n)
		}
	}
}

func numbered(n int, prefix string) []*transport.Message {
	msgs := make([]*transport.Message, n)
	for i := range msgs {
		msgs[i] = &transport.Message{Payload: []byte(fmt.Sprint(i)), MessageID: fmt.Sprint(prefix, i)}
	}
	return msgs
}

func TestTelemetryPropertiesAndC2D(t *testing.T) {
	for _, ws := range []bool{false, true} {
		t.Run(fmt.Sprintf("websocket=%v", ws), func(t *testing.T) {
			h := startHub(t, hubsim.Config{WSAddr: "127.0.0.1:0"})
			key := transporttest.AddDevice(t, h, "dev1")
			r := transporttest.NewRecorder()
			p := params(t, h, "dev1", key, r)
			if ws {
				p = overWebSocket(h, p)
			}
			c := mustDial(t, p)
			msgs := numbered(200, "m")
			msgs[0] = &transport.Message{Payload: []byte("{}"), MessageID: "m 0/&=", CorrelationID: "c1",
				ContentType: "application/json", ContentEncoding: "utf-8",
				Properties: [][2]string{{"temp unit", "°C/&="}, {"b", ""}}}
			for i, err := range sendAll(c, msgs).wait(t) {
				if err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			got, err := h.WaitMessages(ctx, "dev1", len(msgs))
			if err != nil {
				t.Fatal(err)
			}
			first := got[0]
			if first.MessageID != "m 0/&=" || first.CorrelationID != "c1" || first.ContentType != "application/json" ||
				first.ContentEncoding != "utf-8" || string(first.Payload) != "{}" ||
				fmt.Sprint(first.Properties) != "map[b: temp unit:°C/&=]" {
				t.Fatalf("hub recorded %+v", first)
			}
			for i := 1; i < len(got); i++ {
				if got[i].MessageID != msgs[i].MessageID {
					t.Fatalf("message %d arrived as %q: order not kept", i, got[i].MessageID)
				}
			}

			err = h.SendC2D("dev1", hubsim.C2DMessage{Payload: []byte("hello"), MessageID: "c2d-1", CorrelationID: "k",
				ContentType: "text/plain", ContentEncoding: "utf-8", Properties: map[string]string{"a key": "v/1"}})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-r.Msgs:
				// hubsim also sends $.to, a system property the app does not see
				if string(m.Payload) != "hello" || m.MessageID != "c2d-1" || m.CorrelationID != "k" ||
					m.ContentType != "text/plain" || m.ContentEncoding != "utf-8" ||
					fmt.Sprint(m.Properties) != "[[a key v/1]]" {
					t.Fatalf("C2D %+v", m)
				}
			case <-time.After(waitLimit):
				t.Fatal("no C2D message")
			}
			if err := h.WaitC2DDelivered(ctx, "dev1"); err != nil {
				t.Fatal("C2D not acknowledged:", err)
			}
		})
	}
}

func TestPipelinedSendsAreEachAcknowledgedOnce(t *testing.T) {
	h := startHub(t, hubsim.Config{})
	key := transporttest.AddDevice(t, h, "dev1")
	r := transporttest.NewRecorder()
	c := mustDial(t, params(t, h, "dev1", key, r))
	const n = 1000
	s := sendAll(c, numbered(n, "p"))
	for i, err := range s.wait(t) {
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	c.Close()
	s.expectOnce(t)
	if got := len(h.Messages("dev1")); got != n {
		t.Fatalf("hub recorded %d messages, want %d", got, n)
	}
	r.ExpectNoLoss(t)
}

func TestC2DQueuedWhileAwayArrivesOnReconnect(t *testing.T) {
	h := startHub(t, hubsim.Config{})
	key := transporttest.AddDevice(t, h, "dev1")
	first := mustDial(t, params(t, h, "dev1", key, transporttest.NewRecorder()))
	first.Close()
	if err := h.SendC2D("dev1", hubsim.C2DMessage{Payload: []byte("while away")}); err != nil {
		t.Fatal(err)
	}
	r := transporttest.NewRecorder()
	mustDial(t, params(t, h, "dev1", key, r)) // the hub sends it right after the CONNACK, before SUBSCRIBE
	select {
	case m := <-r.Msgs:
		if string(m.Payload) != "while away" {
			t.Fatalf("C2D %q", m.Payload)
		}
	case <-time.After(waitLimit):
		t.Fatal("the C2D message queued while away never arrived")
	}
}

func TestConnectFailuresAreClassified(t *testing.T) {
	h := startHub(t, hubsim.Config{WSAddr: "127.0.0.1:0"})
	key := transporttest.AddDevice(t, h, "dev1")
	disabledKey := transporttest.AddDevice(t, h, "off")
	if err := h.SetDeviceEnabled("off", false); err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedHost := fmt.Sprintf("localhost:%d", closed.Addr().(*net.TCPAddr).Port)
	closed.Close()
	plainSpeaker := answeringListener(t, []byte("SSH-2.0-OpenSSH_9.2\r\n"))
	plainCloser := answeringListener(t, nil)

	cases := map[string]struct {
		p    transport.DialParams
		kind transport.Kind
	}{}
	for _, ws := range []bool{false, true} {
		with := func(name string, kind transport.Kind, edit func(p *transport.DialParams), id, key string) {
			p := params(t, h, id, key, transporttest.NewRecorder())
			if ws {
				p = overWebSocket(h, p)
				name += " over WebSocket"
			}
			edit(&p)
			cases[name] = struct {
				p    transport.DialParams
				kind transport.Kind
			}{p, kind}
		}
		keep := func(*transport.DialParams) {}
		with("wrong key", transport.KindAuth, keep, "dev1", disabledKey)
		with("malformed token", transport.KindAuth, func(p *transport.DialParams) { p.Token = "not a token" }, "dev1", key)
		with("disabled", transport.KindServerUnavailable, keep, "off", disabledKey)
		with("unknown device", transport.KindDeviceNotFound, keep, "ghost", key)
		with("refused", transport.KindNetwork, func(p *transport.DialParams) { p.Host = refusedHost }, "dev1", key)
		with("dns", transport.KindNetwork, func(p *transport.DialParams) { p.Host = "no-such-host.invalid:8883" }, "dev1", key)
		// TCP connected, so the network works; the peer does not speak TLS: Communication_Error, not No_Network.
		with("plain TCP speaker", transport.KindProtocol, func(p *transport.DialParams) { p.Host = plainSpeaker }, "dev1", key)
		with("plain TCP closer", transport.KindProtocol, func(p *transport.DialParams) { p.Host = plainCloser }, "dev1", key)
		with("untrusted hub", transport.KindUntrusted, func(p *transport.DialParams) {
			p.TLS = &tls.Config{RootCAs: x509.NewCertPool()}
		}, "dev1", key)
	}
	// An MQTT listener answers a WebSocket upgrade by closing the connection.
	notWS := params(t, h, "dev1", key, transporttest.NewRecorder())
	notWS.WebSocket = true
	cases["WebSocket to an MQTT port"] = struct {
		p    transport.DialParams
		kind transport.Kind
	}{notWS, transport.KindProtocol}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := dial(tc.p)
			if err == nil {
				c.Close()
				t.Fatal("connected")
			}
			if k := transport.KindOf(err); k != tc.kind {
				t.Fatalf("kind %v (%v), want %v", k, err, tc.kind)
			}
		})
	}
	// hubsim's throttle answers either way: a connect closed without CONNACK is how IoT Hub throttles MQTT;
	// CONNACK 3 is ambiguous (a disabled device too), so the transport says only what the hub said.
	for answer, want := range map[hubsim.ThrottleAnswer]transport.Kind{
		hubsim.ThrottleClose: transport.KindThrottled, hubsim.ThrottleServerUnavailable: transport.KindServerUnavailable,
	} {
		t.Run("throttled, answer "+string(answer), func(t *testing.T) {
			fault(t, h, hubsim.Fault{Kind: hubsim.FaultThrottle, Rate: 1, Duration: time.Minute, Answer: answer})
			defer h.Fault(hubsim.Fault{Kind: hubsim.FaultThrottle, Rate: 0})
			var kinds []transport.Kind
			for i := 0; i < 5; i++ { // at 1 connect per second, at most two of five quick connects get through
				c, err := dial(params(t, h, "dev1", key, transporttest.NewRecorder()))
				if err == nil {
					c.Close()
					continue
				}
				kinds = append(kinds, transport.KindOf(err))
			}
			if len(kinds) < 3 {
				t.Fatalf("%d of 5 throttled connects failed", len(kinds))
			}
			for _, k := range kinds {
				if k != want {
					t.Fatalf("throttled connects failed with %v; want %v", kinds, want)
				}
			}
		})
	}
}

// testListener accepts TCP connections on 127.0.0.1 until the test ends and hands each to serve, which says
// whether it stays open (until then).
func testListener(t *testing.T, serve func(net.Conn) (keep bool)) (addr string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var kept []net.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if serve(c) {
				kept = append(kept, c)
			}
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range kept {
			c.Close()
		}
	})
	return l.Addr().String()
}

// answeringListener writes reply to each connection and closes it: a live peer that does not speak TLS.
func answeringListener(t *testing.T, reply []byte) (addr string) {
	return testListener(t, func(c net.Conn) bool {
		c.Write(reply)
		c.Close()
		return false
	})
}

// silentListener never answers; each accept is signalled.
func silentListener(t *testing.T) (addr string, accepted <-chan struct{}) {
	acc := make(chan struct{}, 8)
	return testListener(t, func(net.Conn) bool {
		acc <- struct{}{}
		return true
	}), acc
}

func TestDialEndsWithItsContext(t *testing.T) {
	for _, ws := range []bool{false, true} {
		t.Run(fmt.Sprintf("websocket=%v", ws), func(t *testing.T) {
			addr, accepted := silentListener(t)
			p := transport.DialParams{Host: addr, DeviceID: "dev1", Token: "t", WebSocket: ws, Handler: transporttest.NewRecorder()}

			// A deadline that passes during the TLS handshake is a timeout, not a network failure.
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			_, err := NewDialer().Dial(ctx, p)
			cancel()
			if k := transport.KindOf(err); k != transport.KindTimeout {
				t.Fatalf("deadline: kind %v (%v), want timeout", k, err)
			}

			// Cancelling ends the dial long before its deadline.
			ctx, cancel = context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			result := make(chan error, 1)
			go func() {
				_, err := NewDialer().Dial(ctx, p)
				result <- err
			}()
			for range 2 { // the first connection was the deadline case
				select {
				case <-accepted:
				case <-time.After(waitLimit):
					t.Fatal("the dial never reached the listener")
				}
			}
			cancel()
			select {
			case err := <-result:
				if k := transport.KindOf(err); k != transport.KindTimeout || !errors.Is(err, context.Canceled) {
					t.Fatalf("cancel: kind %v (%v), want a timeout from the cancelled context", k, err)
				}
			case <-time.After(waitLimit):
				t.Fatal("Dial kept going after its context was cancelled")
			}
		})
	}
}

func TestKillTCPReportsOneLossAndFailsPendingSends(t *testing.T) {
	h := startHub(t, hubsim.Config{})
	key := transporttest.AddDevice(t, h, "dev1")
	r := transporttest.NewRecorder()
	c := mustDial(t, params(t, h, "dev1", key, r))
	if errs := sendAll(c, numbered(1, "before")).wait(t); errs[0] != nil {
		t.Fatal(errs[0])
	}
	// The stalled hub acknowledges nothing, so these sends are still pending when the connection is killed.
	fault(t, h, hubsim.Fault{Kind: hubsim.FaultBlackhole, Duration: time.Minute})
	pending := sendAll(c, numbered(50, "stalled"))
	fault(t, h, hubsim.Fault{Kind: hubsim.FaultKillTCP, Device: "dev1"})
	if e := r.ExpectLoss(t); e.Kind != transport.KindProtocol {
		t.Fatalf("loss kind %v", e)
	}
	for i, err := range pending.wait(t) {
		if transport.KindOf(err) != transport.KindProtocol {
			t.Fatalf("pending send %d: %v", i, err)
		}
	}
	for i, err := range sendAll(c, numbered(2, "after")).wait(t) {
		if transport.KindOf(err) != transport.KindProtocol {
			t.Fatalf("send %d on a dead link: %v", i, err)
		}
	}
	c.Close()
	pending.expectOnce(t)
	r.ExpectNoLoss(t)
}

func TestCloseCompletesEverySendOnceAndReportsNoLoss(t *testing.T) {
	h := startHub(t, hubsim.Config{})
	key := transporttest.AddDevice(t, h, "dev1")
	r := transporttest.NewRecorder()
	c := mustDial(t, params(t, h, "dev1", key, r))
	s := sendAll(c, numbered(2000, "x"))
	c.Close()
	s.expectOnce(t) // Close has returned, so every done already ran
	for i, err := range s.wait(t) {
		if err != nil && !strings.Contains(err.Error(), "closed") {
			t.Fatalf("send %d failed with %v, want closed", i, err)
		}
	}
	after := sendAll(c, numbered(1, "late")).wait(t)[0]
	if transport.KindOf(after) != transport.KindProtocol || !strings.Contains(fmt.Sprint(after), "closed") {
		t.Fatalf("send after close: %v", after)
	}
	if err := c.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	r.ExpectNoLoss(t)
}

func TestModuleSendsWithoutC2D(t *testing.T) {
	h := startHub(t, hubsim.Config{})
	transporttest.AddDevice(t, h, "dev1")
	m, err := h.AddModule("dev1", "mod1", "")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iothub.BuildSAS(iothub.ResourceURI(h.HostName(), "dev1", "mod1"), m.PrimaryKey, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// hubsim closes a connection that subscribes outside its identity's tree, so a module's C2D SUBSCRIBE
	// would fail this dial.
	c := mustDial(t, transport.DialParams{Host: h.HostName(), DeviceID: "dev1", ModuleID: "mod1", Token: tok,
		TLS: tlsFor(t, h), Handler: transporttest.NewRecorder()})
	if errs := sendAll(c, numbered(1, "from module")).wait(t); errs[0] != nil {
		t.Fatal(errs[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := h.WaitMessages(ctx, "dev1/mod1", 1); err != nil {
		t.Fatal(err)
	}
}

func TestBadInputIsAnError(t *testing.T) {
	for name, p := range map[string]transport.DialParams{
		"no host":    {DeviceID: "d", Handler: transporttest.NewRecorder()},
		"no device":  {Host: "localhost", Handler: transporttest.NewRecorder()},
		"no handler": {Host: "localhost", DeviceID: "d"},
	} {
		if _, err := dial(p); err == nil {
			t.Errorf("%s: dialled", name)
		}
	}
	h := startHub(t, hubsim.Config{})
	key := transporttest.AddDevice(t, h, "dev1")
	c := mustDial(t, params(t, h, "dev1", key, transporttest.NewRecorder()))
	var got error
	c.Send(nil, func(err error) { got = err })
	if got == nil {
		t.Fatal("a nil message was accepted")
	}
	if err := c.RenewToken(context.Background(), "t"); !errors.Is(err, transport.ErrRenewNeedsReconnect) {
		t.Fatalf("RenewToken: %v", err)
	}
}

func TestKeepAliveDefaultsAndCap(t *testing.T) {
	for in, want := range map[time.Duration]int64{0: 240, 30 * time.Second: 30, 2 * time.Hour: 1177} {
		c := &conn{}
		opts := c.options(context.Background(), transport.DialParams{Host: "h", DeviceID: "d", KeepAlive: in})
		if opts.KeepAlive != want {
			t.Errorf("keep-alive %v became %d s, want %d s", in, opts.KeepAlive, want)
		}
	}
}

// An idle link keeps none of the transport's own goroutines (publisher, waiter, flusher): a process with
// thousands of idle devices pays only paho's. Each starts again with the next send.
func TestIdleLinkKeepsNoTransportGoroutine(t *testing.T) {
	h := startHub(t, hubsim.Config{})
	key := transporttest.AddDevice(t, h, "dev1")
	r := transporttest.NewRecorder()
	c := mustDial(t, params(t, h, "dev1", key, r))
	defer c.Close()
	for round := range 2 {
		s := sendAll(c, numbered(200, fmt.Sprintf("r%d-", round)))
		for i, err := range s.wait(t) {
			if err != nil {
				t.Fatalf("round %d, send %d: %v", round, i, err)
			}
		}
		deadline := time.Now().Add(waitLimit)
		for running := transportGoroutines(); running != ""; running = transportGoroutines() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: idle link still runs: %s", round, running)
			}
			runtime.Gosched()
			time.Sleep(time.Millisecond) // polling a goroutine dump: there is no event to wait on
		}
	}
	if got := len(h.Messages("dev1")); got != 400 {
		t.Fatalf("hub recorded %d messages, want 400", got)
	}
}

// transportGoroutines names the transport's own goroutines that are running, "" if none.
func transportGoroutines() string {
	buf := make([]byte, 1<<20)
	dump := string(buf[:runtime.Stack(buf, true)])
	var running []string
	for _, fn := range []string{"mqtt.(*conn).publish", "mqtt.(*conn).await", "mqtt.(*batchWriter).flusher"} {
		if strings.Contains(dump, fn+"(") {
			running = append(running, fn)
		}
	}
	return strings.Join(running, ", ")
}
