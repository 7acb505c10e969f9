package core

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/mqtt"
)

// Send refuses what cannot reach the hub exactly as given; nothing is cut or rewritten later.
func TestSendRefusesWhatCannotReachTheHubUnchanged(t *testing.T) {
	d := newFakeDialer()
	c, _ := newTestClient(t, d, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(&Message{Payload: []byte("id 1")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(d.conn(0).sentIDs()) == 1 })
	generated := d.conn(0).sentIDs()[0] // its prefix, then the id "1"
	if n := len(generated) - 1 + len("18446744073709551615"); n > iothub.MaxGeneratedMessageIDLength {
		t.Fatalf("generated message ids reach %d bytes; the limits count %d", n, iothub.MaxGeneratedMessageIDLength)
	}
	if err, _ := iothub.CheckMessageID(generated); err != nil {
		t.Fatalf("a generated message id breaks IoT Hub's rule: %v", err)
	}
	exact := func(extra int) *Message { // IoT Hub's count: payload + system values + property names and values
		m := &Message{MessageID: "m1", CorrelationID: "c", ContentType: "t", ContentEncoding: "e",
			Properties: []Property{{"k", "v"}}}
		m.Payload = make([]byte, iothub.MaxMessageSize-len("m1ctekv")+extra)
		return m
	}
	// '&' percent-encodes to three bytes: a topic one byte over MQTT's limit.
	topicPrefix := len(iothub.TelemetryTopic("dev1", "", "")) + len("%24.mid=m1&k=")
	overTopic := mqtt.MaxTopicLength - topicPrefix + 1
	bigBag := strings.Repeat("&", overTopic/3) + strings.Repeat("a", overTopic%3)
	for name, tc := range map[string]struct {
		msg  *Message
		code Code
		says string
	}{
		"size at the limit":      {exact(0), CodeOK, ""},
		"size over the limit":    {exact(1), CodeTooLarge, "262144"},
		"generated id counts":    {&Message{Payload: make([]byte, iothub.MaxMessageSize-47)}, CodeTooLarge, "generated"},
		"id of 128":              {&Message{Payload: []byte("x"), MessageID: strings.Repeat("i", 128)}, CodeOK, ""},
		"id of 129":              {&Message{Payload: []byte("x"), MessageID: strings.Repeat("i", 129)}, CodeTooLarge, "128"},
		"id with a space":        {&Message{Payload: []byte("x"), MessageID: "a b"}, CodeInvalidArgument, "message id"},
		"topic over MQTT's":      {&Message{Payload: []byte("x"), MessageID: "m1", Properties: []Property{{"k", bigBag}}}, CodeTooLarge, "65535"},
		"$.mid":                  {props("$.mid", "forged"), CodeInvalidArgument, "system properties"},
		"$.cid":                  {props("$.cid", "c"), CodeInvalidArgument, "$.cid"},
		"$.ct":                   {props("$.ct", "c"), CodeInvalidArgument, "$.ct"},
		"$.ce":                   {props("$.ce", "c"), CodeInvalidArgument, "$.ce"},
		"$.to":                   {props("$.to", "c"), CodeInvalidArgument, "$.to"},
		"iothub- in any case":    {props("IoTHub-Ack", "full"), CodeInvalidArgument, "IoTHub-Ack"},
		"creation time is yours": {props(iothub.CreationTimeProperty, "2026-01-01T00:00:00Z"), CodeOK, ""},
		"repeated key":           {props("k", "1", "k", "2"), CodeInvalidArgument, "repeats"},
		"repeated among many":    {manyProps(40, 7, 33), CodeInvalidArgument, "repeats"},
		"not UTF-8":              {props("k", "\xff"), CodeInvalidArgument, "UTF-8"},
		"NUL":                    {props("k\x00v", "x"), CodeInvalidArgument, "NUL"},
		"content type not UTF-8": {&Message{Payload: []byte("x"), ContentType: "\xc3"}, CodeInvalidArgument, "content type"},
	} {
		_, err := c.Send(tc.msg)
		if codeOf(err) != tc.code || (err != nil && !strings.Contains(err.Error(), tc.says)) {
			t.Errorf("%s: %v, want code %v saying %q", name, err, tc.code, tc.says)
		}
	}
}

func props(kv ...string) *Message {
	m := &Message{Payload: []byte("x")}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Properties = append(m.Properties, Property{kv[i], kv[i+1]})
	}
	return m
}

// manyProps has n distinct keys except that key j repeats key i.
func manyProps(n, i, j int) *Message {
	m := &Message{Payload: []byte("x")}
	for k := range n {
		m.Properties = append(m.Properties, Property{"key" + string(rune('A'+k%26)) + string(rune('a'+k/26)), "v"})
	}
	m.Properties[j].Key = m.Properties[i].Key
	return m
}

func TestCreateRefusesIdentitiesTheWireCannotCarry(t *testing.T) {
	for name, tc := range map[string]struct {
		cs   string
		code Code
	}{
		"device id of 129": {"HostName=h;DeviceId=" + strings.Repeat("d", 129) + ";SharedAccessKey=" + testKey, CodeTooLarge},
		"host of 254":      {"HostName=" + strings.Repeat("h", 254) + ";DeviceId=d;SharedAccessKey=" + testKey, CodeTooLarge},
		"MQTT wildcard":    {"HostName=h;DeviceId=a#b;SharedAccessKey=" + testKey, CodeInvalidArgument},
	} {
		if _, err := newClient(tc.cs, Options{}, newFakeDialer()); codeOf(err) != tc.code {
			t.Errorf("%s: %v, want %v", name, err, tc.code)
		}
	}
}

func TestSASOptionsBelowTheFloorsAreRefused(t *testing.T) {
	for name, o := range map[string]Options{
		"lifetime of 1 s":     {SASLifetime: time.Second},
		"lifetime of 59 s":    {SASLifetime: 59 * time.Second},
		"margin of 4 s":       {SASRenewMargin: 4 * time.Second},
		"renewals 29 s apart": {SASLifetime: time.Minute, SASRenewMargin: 31 * time.Second},
	} {
		if _, err := newClient(testConnStr(), o, newFakeDialer()); codeOf(err) != CodeInvalidArgument {
			t.Errorf("%s: %v, want CodeInvalidArgument", name, err)
		}
	}
	c, err := newClient(testConnStr(), Options{SASLifetime: MinSASLifetime, SASRenewMargin: MinSASLifetime -
		MinSASRenewInterval}, newFakeDialer())
	if err != nil {
		t.Fatalf("the floors themselves: %v", err)
	}
	closeAndWait(c)
}

// Renewals come (lifetime - margin) after the token was made, never sooner: not when the token's whole-second
// expiry rounds down, not when the clock leaps.
func TestRenewalsAreSpacedByLifetimeMinusMargin(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 900_000_000)) // 0.9 s past a second: the expiry rounds down
	d := newFakeDialer()
	c, r := newTestClient(t, d, Options{Clock: fake, SASLifetime: time.Hour, SASRenewMargin: 6 * time.Minute,
		OperationTimeout: 2 * time.Hour})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	ctx := testContext(t)
	if renewIn, err := fake.NextTimer(ctx); err != nil || renewIn != 54*time.Minute {
		t.Fatalf("renewal timer %v, %v; want 54m", renewIn, err)
	}
	fake.Advance(10 * time.Hour) // an NTP step: one renewal, then the next 54 min later
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonExpiredSASToken}, connected)
	if renewIn, err := fake.NextTimer(ctx); err != nil || renewIn != 54*time.Minute {
		t.Fatalf("renewal timer after the leap %v, %v; want 54m", renewIn, err)
	}
	if d.dials != 2 {
		t.Fatalf("%d dials, want 2", d.dials)
	}
}

func TestCancelConnectEndsTheAttemptAndTheClientStaysUsable(t *testing.T) {
	d := &blockingDialer{fakeDialer: newFakeDialer(), entered: make(chan struct{}, 10)}
	c, r := newTestClient(t, d, Options{})
	result := make(chan error, 1)
	go func() { result <- c.Connect(context.Background()) }()
	<-d.entered // the dial is in progress and would wait for ever
	c.CancelConnect()
	select {
	case err := <-result:
		if codeOf(err) != CodeCanceled {
			t.Fatalf("cancelled connect: %v, want CodeCanceled", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Connect did not return after CancelConnect")
	}
	r.expectStates(t, state{StatusDisconnected, ReasonRetryExpired})
	d.open.Store(true)
	if err := connect(t, c); err != nil {
		t.Fatalf("connect after a cancelled one: %v", err)
	}
	r.expectStates(t, connected)

	// A caller's own context counts as cancelled too, a deadline as a timeout.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c2, _ := newTestClient(t, newFakeDialer(), Options{})
	if err := c2.Connect(ctx); codeOf(err) != CodeCanceled {
		t.Fatalf("cancelled context: %v", err)
	}
}

// blockingDialer's dials wait for their context until open is set.
type blockingDialer struct {
	*fakeDialer
	open    atomic.Bool
	entered chan struct{}
}

func (d *blockingDialer) Dial(ctx context.Context, p transport.DialParams) (transport.Conn, error) {
	if !d.open.Load() {
		d.entered <- struct{}{}
		<-ctx.Done()
		return nil, &transport.Error{Kind: transport.KindTimeout, Op: "connect", Err: errors.New("aborted")}
	}
	return d.fakeDialer.Dial(ctx, p)
}
