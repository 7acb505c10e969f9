package core

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/hubsim"
)

// These tests run the engine with its real MQTT transport against an in-process hub emulator on 127.0.0.1.

// hubDevice is an identity of the hub: dev1, or a module of it (module).
type hubDevice struct {
	hub *hubsim.Hub
	cs  string
	id  string // "dev1" or "dev1/{module}"
}

func startHub(t testing.TB) hubDevice {
	t.Helper()
	hub, err := hubsim.Start(hubsim.Config{Dir: t.TempDir(), MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	if _, err := hub.AddDevice("dev1", ""); err != nil {
		t.Fatal(err)
	}
	cs, err := hub.ConnectionString("dev1")
	if err != nil {
		t.Fatal(err)
	}
	return hubDevice{hub, cs, "dev1"}
}

// module registers a module of dev1 on the same hub.
func (h hubDevice) module(t testing.TB, name string) hubDevice {
	t.Helper()
	m, err := h.hub.AddModule("dev1", name, "")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := h.hub.ConnectionString(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	return hubDevice{h.hub, cs, m.ID}
}

func (h hubDevice) client(t testing.TB, cs string, opts Options) (*Client, *recorder) {
	t.Helper()
	opts.CAFile = h.hub.CAFile()
	c, err := NewClient(cs, opts)
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	c.SetHandlers(r.handlers())
	t.Cleanup(func() { closeAndCheck(t, c) })
	return c, r
}

func (h hubDevice) fault(t *testing.T, kind hubsim.FaultKind, d time.Duration) {
	t.Helper()
	if err := h.hub.Fault(hubsim.Fault{Kind: kind, Device: h.id, Duration: d}); err != nil {
		t.Fatal(err)
	}
}

// sendAll sends n messages and returns when all are accepted.
func sendAll(t *testing.T, c *Client, n int, tag string) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := c.Send(&Message{Payload: []byte(fmt.Sprintf("%s-%d", tag, i))}); err != nil {
			t.Fatal(err)
		}
	}
}

// expectAllDelivered waits for n completions, all Delivered, and for n distinct $.mid in the hub's record.
func (h hubDevice) expectAllDelivered(t *testing.T, r *recorder, n int) {
	t.Helper()
	r.expectDelivered(t, n, h.id)
	r.expectNoMoreCompletions(t)
	unique := map[string]bool{}
	for _, m := range h.hub.Messages(h.id) {
		unique[m.MessageID] = true
	}
	if len(unique) != n {
		t.Fatalf("hub recorded %d distinct message ids, want %d", len(unique), n)
	}
}

func TestHubNormalConnectSendClose(t *testing.T) {
	h := startHub(t)
	c, r := h.client(t, h.cs, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	id, err := c.Send(&Message{Payload: []byte(`{"t":21}`), MessageID: "m-1", CorrelationID: "c-1",
		ContentType: "application/json", ContentEncoding: "utf-8", Properties: []Property{{"unit", "°C & more"}}})
	if err != nil {
		t.Fatal(err)
	}
	h.expectAllDelivered(t, r, 1)
	got := h.hub.Messages("dev1")[0]
	if id != 1 || got.MessageID != "m-1" || got.CorrelationID != "c-1" || got.ContentType != "application/json" ||
		got.ContentEncoding != "utf-8" || got.Properties["unit"] != "°C & more" || string(got.Payload) != `{"t":21}` {
		t.Fatalf("hub recorded %+v", got)
	}
	c.Close()
	r.expectStates(t, connected, disabled)
}

func TestHubRejectedCredentialsAreFatal(t *testing.T) {
	h := startHub(t)
	wrongKey := strings.Split(h.cs, "SharedAccessKey=")[0] + "SharedAccessKey=" + testKey
	c, r := h.client(t, wrongKey, Options{})
	if err := connect(t, c); codeOf(err) != CodeAuth {
		t.Fatalf("wrong key: %v", err)
	}
	r.expectStates(t, state{StatusDisconnected, ReasonBadCredential})

	if err := h.hub.SetDeviceEnabled("dev1", false); err != nil {
		t.Fatal(err)
	}
	c2, r2 := h.client(t, h.cs, Options{})
	if err := connect(t, c2); codeOf(err) != CodeDeviceDisabled {
		t.Fatalf("disabled device: %v", err)
	}
	r2.expectStates(t, state{StatusDisconnected, ReasonDeviceDisabled})
	select {
	case s := <-r.states:
		t.Fatalf("a fatal error was followed by %v", s)
	case s := <-r2.states:
		t.Fatalf("a fatal error was followed by %v", s)
	default:
	}
}

func TestHubDownAtStartThenUpAgain(t *testing.T) {
	h := startHub(t)
	h.fault(t, hubsim.FaultHubDown, 2*time.Second)
	c, r := h.client(t, h.cs, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonNoNetwork}, connected)
}

func TestHubTCPKilledMidStreamLosesNothing(t *testing.T) {
	h := startHub(t)
	c, r := h.client(t, h.cs, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	sendAll(t, c, 300, "before")
	h.fault(t, hubsim.FaultKillTCP, 0)
	sendAll(t, c, 300, "after")
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError}, connected)
	h.expectAllDelivered(t, r, 600)
}

func TestHubDownWithNoRetryOrAFinitePolicy(t *testing.T) {
	finite, err := retry.NewExponential(2, 10*time.Millisecond, 100*time.Millisecond, 10*time.Millisecond, retry.JitterDefault)
	if err != nil {
		t.Fatal(err)
	}
	for name, policy := range map[string]retry.Policy{"NoRetry": retry.NoRetry{}, "two retries": finite} {
		t.Run(name, func(t *testing.T) {
			h := startHub(t)
			h.fault(t, hubsim.FaultHubDown, time.Minute)
			c, r := h.client(t, h.cs, Options{RetryPolicy: policy})
			sendAll(t, c, 3, "queued")
			if err := connect(t, c); codeOf(err) != CodeRetryExpired {
				t.Fatalf("Connect: %v", err)
			}
			if _, finite := policy.(*retry.Exponential); finite {
				r.expectStates(t, state{StatusDisconnectedRetrying, ReasonNoNetwork})
			}
			r.expectStates(t, state{StatusDisconnected, ReasonRetryExpired})
			for _, comp := range r.expectCompletions(t, 3) {
				if comp.result != SendFailed || comp.code != CodeRetryExpired {
					t.Fatalf("queued message ended %+v", comp)
				}
			}
		})
	}
}

func TestHubTokenRenewalLosesNothing(t *testing.T) {
	h := startHub(t)
	// A 3 s token renewed 2 s before expiry (below the floors, waived here): a renewal every second or so.
	c, r := h.client(t, h.cs, Options{SASLifetime: 3 * time.Second, SASRenewMargin: 2 * time.Second,
		shortTokensForTests: true})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	sent := 0
	for round := 0; round < 2; round++ {
		sendAll(t, c, 100, fmt.Sprint("round", round))
		sent += 100
		r.expectStates(t, state{StatusDisconnectedRetrying, ReasonExpiredSASToken}, connected)
	}
	h.expectAllDelivered(t, r, sent)
}

func TestHubC2DReachesTheHandler(t *testing.T) {
	h := startHub(t)
	c, r := h.client(t, h.cs, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	if err := h.hub.SendC2D("dev1", hubsim.C2DMessage{Payload: []byte("reboot"), MessageID: "c2d-1",
		Properties: map[string]string{"urgency": "high"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-r.messages:
		if string(m.Payload) != "reboot" || m.MessageID != "c2d-1" || len(m.Properties) != 1 ||
			m.Properties[0] != (Property{"urgency", "high"}) {
			t.Fatalf("C2D %+v", m)
		}
	case <-time.After(waitLimit):
		t.Fatal("no C2D message")
	}
}
