package mqtt

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/transporttest"
	"github.com/iotconn/iotconn/hubsim"
)

// request sends r and waits for its done.
func request(t *testing.T, c transport.Conn, r *transport.Request) {
	t.Helper()
	done := make(chan error, 1)
	c.Request(r, func(err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("request %+v: %v", r, err)
		}
	case <-time.After(waitLimit):
		t.Fatalf("request %+v never done", r)
	}
}

// The twin and methods features against the emulator: requests are answered by request id, desired updates and
// method calls arrive, and a method answer reaches the caller.
func TestTwinAndMethodFeatures(t *testing.T) {
	h := startHub(t, hubsim.Config{})
	key := addDevice(t, h, "dev1")
	r := transporttest.NewRecorder()
	p := params(t, h, "dev1", key, r)
	p.Features = transport.FeatureTwin | transport.FeatureMethods
	c := mustDial(t, p)

	request(t, c, &transport.Request{Kind: transport.RequestTwinReport, RID: "r1", Payload: []byte(`{"fw":"1.2"}`)})
	if in := r.ExpectInbound(t, transport.InboundTwinResponse); in.RID != "r1" || in.Status != 204 || in.Version < 1 {
		t.Fatalf("reported patch answered %+v", in)
	}
	request(t, c, &transport.Request{Kind: transport.RequestTwinGet, RID: "g1"})
	in := r.ExpectInbound(t, transport.InboundTwinResponse)
	var twin struct {
		Reported map[string]any `json:"reported"`
	}
	if err := json.Unmarshal(in.Payload, &twin); err != nil || in.RID != "g1" || in.Status != 200 ||
		twin.Reported["fw"] != "1.2" {
		t.Fatalf("twin GET answered %+v (%s, %v)", in, in.Payload, err)
	}

	if _, err := h.UpdateDesired("dev1", []byte(`{"rate":5}`)); err != nil {
		t.Fatal(err)
	}
	if in := r.ExpectInbound(t, transport.InboundDesired); in.Version < 1 || string(in.Payload) == "" {
		t.Fatalf("desired update %+v", in)
	}

	result := make(chan hubsim.MethodResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		res, err := h.InvokeMethod(ctx, "dev1", "reboot", []byte(`{"delay":1}`))
		if err != nil {
			res.Status = -1
		}
		result <- res
	}()
	call := r.ExpectInbound(t, transport.InboundMethod)
	if call.Method != "reboot" || string(call.Payload) != `{"delay":1}` {
		t.Fatalf("method call %+v", call)
	}
	request(t, c, &transport.Request{Kind: transport.RequestMethodResponse, RID: call.RID, Status: 202,
		Payload: []byte(`{"ok":true}`)})
	if res := <-result; res.Status != 202 || string(res.Payload) != `{"ok":true}` {
		t.Fatalf("the caller got %+v", res)
	}
	select {
	case m := <-r.Msgs:
		t.Fatalf("a C2D message without the C2D feature: %+v", m)
	default:
	}
}
