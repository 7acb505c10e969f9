package hubsim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/iotconn/iotconn/core/iothub"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait of these tests.
const waitLimit = 10 * time.Second

func startHub(t testing.TB, mod func(*Config)) *Hub {
	t.Helper()
	cfg := Config{Dir: t.TempDir(), MQTTAddr: "127.0.0.1:0"}
	if mod != nil {
		mod(&cfg)
	}
	h, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func addDevice(t testing.TB, h *Hub, id string) Device {
	t.Helper()
	d, err := h.AddDevice(id, "")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func sasToken(t testing.TB, resource, key string, expiry time.Time) string {
	t.Helper()
	tok, err := iothub.BuildSAS(resource, key, "", expiry)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func caPool(t testing.TB, h *Hub) *x509.CertPool {
	t.Helper()
	pool, err := h.CAPool()
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// dev is a raw MQTT device: paho with every automatic behaviour off.
type dev struct {
	client paho.Client
	lost   chan error
	msgs   chan paho.Message
}

// creds are what a test device connects with; zero fields get the valid defaults.
type creds struct {
	clientID, username, password string
	clean                        *bool
	autoAckOff                   bool
	will                         string // will topic; payload "last words"
}

// validCreds are the credentials of a device, or of a module ("d/m").
func validCreds(t testing.TB, h *Hub, d Device) creds {
	dev, mod, _ := strings.Cut(d.ID, "/")
	return creds{
		clientID: d.ID,
		username: iothub.Username(h.HostName(), dev, mod),
		password: sasToken(t, iothub.ResourceURI(h.HostName(), dev, mod), d.PrimaryKey, time.Now().Add(time.Hour)),
	}
}

// connect dials the hub's TLS listener (or the broker URL given) and returns the device and the CONNACK code.
func connect(t testing.TB, h *Hub, c creds, broker string) (*dev, byte, error) {
	t.Helper()
	if broker == "" {
		broker = "ssl://" + h.Addr()
	}
	d := &dev{lost: make(chan error, 1), msgs: make(chan paho.Message, 100)}
	clean := true
	if c.clean != nil {
		clean = *c.clean
	}
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(c.clientID).SetUsername(c.username).
		SetPassword(c.password).SetTLSConfig(&tls.Config{RootCAs: caPool(t, h), ServerName: "localhost"}).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(clean).SetProtocolVersion(4).
		SetKeepAlive(30 * time.Second).SetConnectTimeout(waitLimit).SetOrderMatters(false).
		SetAutoAckDisabled(c.autoAckOff).
		SetConnectionLostHandler(func(_ paho.Client, err error) { d.lost <- err }).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { d.msgs <- m })
	if c.will != "" {
		opts.SetWill(c.will, "last words", 1, false)
	}
	d.client = paho.NewClient(opts)
	tok := d.client.Connect()
	if !tok.WaitTimeout(waitLimit) {
		t.Fatal("connect did not finish")
	}
	ct := tok.(*paho.ConnectToken)
	if err := tok.Error(); err != nil {
		return d, ct.ReturnCode(), err
	}
	t.Cleanup(func() { d.client.Disconnect(0) })
	return d, ct.ReturnCode(), nil
}

func mustConnect(t testing.TB, h *Hub, d Device) *dev {
	t.Helper()
	c, code, err := connect(t, h, validCreds(t, h, d), "")
	if err != nil {
		t.Fatalf("connect %s: code %d: %v", d.ID, code, err)
	}
	return c
}

func (d *dev) subscribe(t testing.TB, filter string, qos byte) {
	t.Helper()
	tok := d.client.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func (d *dev) publish(t testing.TB, topic string, qos byte, payload []byte) {
	t.Helper()
	tok := d.client.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// waitLost waits until the hub dropped the connection.
func (d *dev) waitLost(t testing.TB) error {
	t.Helper()
	select {
	case err := <-d.lost:
		return err
	case <-time.After(waitLimit):
		t.Fatal("connection was not dropped")
		return nil
	}
}

// waitMsg waits for a message on a topic with the given prefix.
func (d *dev) waitMsg(t testing.TB, prefix string) paho.Message {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case m := <-d.msgs:
			if strings.HasPrefix(m.Topic(), prefix) {
				return m
			}
		case <-deadline:
			t.Fatalf("no message on %s", prefix)
			return nil
		}
	}
}

// waitEvent waits for an event matching ok.
func waitEvent(t testing.TB, events <-chan Event, ok func(Event) bool) Event {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case e := <-events:
			if ok(e) {
				return e
			}
		case <-deadline:
			t.Fatal("expected event did not come")
			return Event{}
		}
	}
}

func ctxLimit(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}
