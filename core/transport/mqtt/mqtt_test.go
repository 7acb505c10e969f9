package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/hubsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitLimit = 10 * time.Second

// recorder is a transport.Handler that keeps what arrives.
type recorder struct {
	msgs chan *transport.Message
	lost chan *transport.Error
}

func newRecorder() *recorder {
	return &recorder{msgs: make(chan *transport.Message, 16), lost: make(chan *transport.Error, 4)}
}

func (r *recorder) OnMessage(m *transport.Message)      { r.msgs <- m }
func (r *recorder) OnConnectionLost(e *transport.Error) { r.lost <- e }

func startHub(t *testing.T, cfg hubsim.Config) *hubsim.Hub {
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

func tlsFor(t *testing.T, h *hubsim.Hub) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(h.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA certificate")
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// params returns dial parameters for device id with a valid one-hour token signed with key.
func params(t *testing.T, h *hubsim.Hub, id, key string, r *recorder) transport.DialParams {
	t.Helper()
	tok, err := iothub.BuildSAS(iothub.ResourceURI(h.HostName(), id, ""), key, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return transport.DialParams{Host: h.HostName(), DeviceID: id, Token: tok, TLS: tlsFor(t, h), Handler: r}
}

func addDevice(t *testing.T, h *hubsim.Hub, id string) string {
	t.Helper()
	d, err := h.AddDevice(id, "")
	if err != nil {
		t.Fatal(err)
	}
	return d.PrimaryKey
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

// sendAll pipelines msgs and returns each one's result, in send order.
func sendAll(t *testing.T, c transport.Conn, msgs []*transport.Message) []error {
	t.Helper()
	results := make([]error, len(msgs))
	var wg sync.WaitGroup
	wg.Add(len(msgs))
	for i, m := range msgs {
		c.Send(m, func(err error) { results[i] = err; wg.Done() })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("not every send completed")
	}
	return results
}

func TestTelemetryPropertiesAndC2D(t *testing.T) {
	for _, ws := range []bool{false, true} {
		t.Run(fmt.Sprintf("websocket=%v", ws), func(t *testing.T) {
			h := startHub(t, hubsim.Config{WSAddr: "127.0.0.1:0"})
			key := addDevice(t, h, "dev1")
			r := newRecorder()
			p := params(t, h, "dev1", key, r)
			if ws {
				_, port, _ := net.SplitHostPort(h.WSAddr())
				p.Host, p.WebSocket = "localhost:"+port, true
			}
			c := mustDial(t, p)
			var msgs []*transport.Message
			for i := 0; i < 200; i++ {
				msgs = append(msgs, &transport.Message{Payload: []byte(fmt.Sprint(i)), MessageID: fmt.Sprint("m", i)})
			}
			msgs[0] = &transport.Message{Payload: []byte("{}"), MessageID: "m 0/&=", CorrelationID: "c1",
				ContentType: "application/json", ContentEncoding: "utf-8",
				Properties: [][2]string{{"temp unit", "°C/&="}, {"b", ""}}}
			for i, err := range sendAll(t, c, msgs) {
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
				first.ContentEncoding != "utf-8" || first.Properties["temp unit"] != "°C/&=" || string(first.Payload) != "{}" {
				t.Fatalf("hub recorded %+v", first)
			}
			for i := 1; i < len(got); i++ {
				if got[i].MessageID != msgs[i].MessageID {
					t.Fatalf("message %d arrived as %q: order not kept", i, got[i].MessageID)
				}
			}

			err = h.SendC2D("dev1", hubsim.C2DMessage{Payload: []byte("hello"), MessageID: "c2d-1", CorrelationID: "k",
				ContentType: "text/plain", Properties: map[string]string{"a key": "v/1"}})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-r.msgs:
				if string(m.Payload) != "hello" || m.MessageID != "c2d-1" || m.CorrelationID != "k" ||
					m.ContentType != "text/plain" || fmt.Sprint(m.Properties) != "[[a key v/1]]" {
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

func TestConnectFailuresAreClassified(t *testing.T) {
	h := startHub(t, hubsim.Config{})
	key := addDevice(t, h, "dev1")
	disabledKey := addDevice(t, h, "off")
	if err := h.SetDeviceEnabled("off", false); err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	wrongKey := params(t, h, "dev1", disabledKey, newRecorder())
	disabled := params(t, h, "off", disabledKey, newRecorder())
	unknown := params(t, h, "ghost", key, newRecorder())
	refused := params(t, h, "dev1", key, newRecorder())
	refused.Host = fmt.Sprintf("localhost:%d", refusedPort)
	untrusted := params(t, h, "dev1", key, newRecorder())
	untrusted.TLS = &tls.Config{ServerName: "localhost", RootCAs: x509.NewCertPool()}
	badToken := params(t, h, "dev1", key, newRecorder())
	badToken.Token = "not a token"
	dns := params(t, h, "dev1", key, newRecorder())
	dns.Host = "no-such-host.invalid:8883"
	for name, tc := range map[string]struct {
		p    transport.DialParams
		kind transport.Kind
	}{
		"wrong key":     {wrongKey, transport.KindAuth},
		"bad password":  {badToken, transport.KindAuth},
		"disabled":      {disabled, transport.KindDeviceDisabled},
		"unknown":       {unknown, transport.KindDeviceNotFound},
		"refused":       {refused, transport.KindNetwork},
		"dns":           {dns, transport.KindNetwork},
		"untrusted hub": {untrusted, transport.KindUntrusted},
	} {
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
	t.Run("throttled", func(t *testing.T) {
		if err := h.Fault(hubsim.Fault{Kind: hubsim.FaultThrottle, Rate: 0}); err != nil {
			t.Fatal(err)
		}
		if err := h.Fault(hubsim.Fault{Kind: hubsim.FaultThrottle, Rate: 1, Duration: time.Minute}); err != nil {
			t.Fatal(err)
		}
		defer h.Fault(hubsim.Fault{Kind: hubsim.FaultThrottle, Rate: 0})
		var kinds []transport.Kind
		for i := 0; i < 5; i++ { // at 1 connect per second, at most two of five quick connects get through
			c, err := dial(params(t, h, "dev1", key, newRecorder()))
			if err == nil {
				c.Close()
				continue
			}
			kinds = append(kinds, transport.KindOf(err))
		}
		if len(kinds) < 3 || kinds[0] != transport.KindProtocol {
			t.Fatalf("throttled connects failed with %v; want protocol drops", kinds)
		}
	})
	t.Run("context ends the dial", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := NewDialer().Dial(ctx, params(t, h, "dev1", key, newRecorder()))
		var te *transport.Error
		if !errors.As(err, &te) {
			t.Fatalf("err %v", err)
		}
	})
}

func TestKillTCPReportsOneLossAndFailsLaterSends(t *testing.T) {
	h := startHub(t, hubsim.Config{})
	key := addDevice(t, h, "dev1")
	r := newRecorder()
	c := mustDial(t, params(t, h, "dev1", key, r))
	if errs := sendAll(t, c, []*transport.Message{{Payload: []byte("a")}}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	if err := h.Fault(hubsim.Fault{Kind: hubsim.FaultKillTCP, Device: "dev1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-r.lost:
		if e.Kind != transport.KindProtocol {
			t.Fatalf("loss kind %v", e)
		}
	case <-time.After(waitLimit):
		t.Fatal("loss not reported")
	}
	errs := sendAll(t, c, []*transport.Message{{Payload: []byte("b")}, {Payload: []byte("c")}})
	for _, err := range errs {
		if transport.KindOf(err) != transport.KindProtocol {
			t.Fatalf("send on a dead link: %v", err)
		}
	}
	c.Close()
	select {
	case e := <-r.lost:
		t.Fatalf("second loss report %v", e)
	default:
	}
}

func TestCloseCompletesEverySendOnceAndReportsNoLoss(t *testing.T) {
	h := startHub(t, hubsim.Config{})
	key := addDevice(t, h, "dev1")
	r := newRecorder()
	c, err := dial(params(t, h, "dev1", key, r))
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	var mu sync.Mutex
	calls := map[int]int{}
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		c.Send(&transport.Message{Payload: []byte("x")}, func(error) {
			mu.Lock()
			calls[i]++
			mu.Unlock()
			wg.Done()
		})
	}
	c.Close()
	wg.Wait() // Close has returned, so every done already ran
	for i := 0; i < n; i++ {
		if calls[i] != 1 {
			t.Fatalf("send %d completed %d times", i, calls[i])
		}
	}
	var after error
	c.Send(&transport.Message{}, func(err error) { after = err })
	if !strings.Contains(fmt.Sprint(after), "closed") {
		t.Fatalf("send after close: %v", after)
	}
	select {
	case e := <-r.lost:
		t.Fatalf("Close reported a loss: %v", e)
	default:
	}
}

func TestModuleDoesNotSubscribeToC2D(t *testing.T) {
	h := startHub(t, hubsim.Config{})
	addDevice(t, h, "dev1")
	m, err := h.AddModule("dev1", "mod1", "")
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	tok, err := iothub.BuildSAS(iothub.ResourceURI(h.HostName(), "dev1", "mod1"), m.PrimaryKey, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c := mustDial(t, transport.DialParams{Host: h.HostName(), DeviceID: "dev1", ModuleID: "mod1", Token: tok,
		TLS: tlsFor(t, h), Handler: r})
	if errs := sendAll(t, c, []*transport.Message{{Payload: []byte("from module")}}); errs[0] != nil {
		t.Fatal(errs[0])
	}
}
