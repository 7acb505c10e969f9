package transporttest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/hubsim"
)

// AddDevice registers device id in h and returns its primary key.
func AddDevice(t testing.TB, h *hubsim.Hub, id string) string {
	t.Helper()
	d, err := h.AddDevice(id, "")
	if err != nil {
		t.Fatal(err)
	}
	return d.PrimaryKey
}

// Request makes r on c and fails the test unless it completes without an error within WaitLimit.
func Request(t *testing.T, c transport.Conn, r *transport.Request) {
	t.Helper()
	done := make(chan error, 1)
	c.Request(r, func(err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("request %+v: %v", r, err)
		}
	case <-time.After(WaitLimit):
		t.Fatalf("request %+v never done", r)
	}
}

// CheckTwinAndMethods checks, on c, dialled for device with the twin and method features and rec as its handler:
// a reported patch and a twin GET answered by request id, a desired update from the hub pushed with its
// version, and a method call from the hub answered back to its caller.
func CheckTwinAndMethods(t *testing.T, h *hubsim.Hub, device string, c transport.Conn, rec *Recorder) {
	t.Helper()
	Request(t, c, &transport.Request{Kind: transport.RequestTwinReport, RID: "r1", Payload: []byte(`{"fw":"1.2"}`)})
	if in := rec.ExpectInbound(t, transport.InboundTwinResponse); in.RID != "r1" || in.Status != 204 || in.Version < 1 {
		t.Fatalf("reported patch answered %+v", in)
	}
	Request(t, c, &transport.Request{Kind: transport.RequestTwinGet, RID: "g1"})
	in := rec.ExpectInbound(t, transport.InboundTwinResponse)
	var twin struct {
		Reported map[string]any `json:"reported"`
	}
	if err := json.Unmarshal(in.Payload, &twin); err != nil || in.RID != "g1" || in.Status != 200 ||
		twin.Reported["fw"] != "1.2" {
		t.Fatalf("twin GET answered %+v (%s, %v)", in, in.Payload, err)
	}

	if _, err := h.UpdateDesired(device, []byte(`{"rate":5}`)); err != nil {
		t.Fatal(err)
	}
	if in := rec.ExpectInbound(t, transport.InboundDesired); in.Version < 1 || string(in.Payload) == "" {
		t.Fatalf("desired update %+v", in)
	}

	result := make(chan hubsim.MethodResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
		defer cancel()
		res, err := h.InvokeMethod(ctx, device, "reboot", []byte(`{"delay":1}`))
		if err != nil {
			res.Status = -1
		}
		result <- res
	}()
	call := rec.ExpectInbound(t, transport.InboundMethod)
	if call.Method != "reboot" || string(call.Payload) != `{"delay":1}` {
		t.Fatalf("method call %+v", call)
	}
	Request(t, c, &transport.Request{Kind: transport.RequestMethodResponse, RID: call.RID, Status: 202,
		Payload: []byte(`{"ok":true}`)})
	if res := <-result; res.Status != 202 || string(res.Payload) != `{"ok":true}` {
		t.Fatalf("the caller got %+v", res)
	}
}
