package core

import (
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/transport"
)

// methodCall is one OnMethod call.
type methodCall struct {
	rid, name, payload string
}

// newMethodClient records method calls; answer, when set, runs inside OnMethod.
func newMethodClient(t *testing.T, d transport.Dialer, opts Options,
	answer func(c *Client, call methodCall)) (*Client, *recorder, chan methodCall) {
	t.Helper()
	c, r := newTestClient(t, d, opts)
	calls := make(chan methodCall, 100)
	h := r.handlers()
	h.OnMethod = func(rid, name string, payload []byte) {
		call := methodCall{rid, name, string(payload)}
		if answer != nil {
			answer(c, call)
		}
		calls <- call
	}
	c.SetHandlers(h)
	return c, r, calls
}

// A call reaches OnMethod; its response goes out on the call's link with the application's status and payload,
// once: a second response, one for an unknown id, or one with a payload that is not JSON is refused (the last
// leaves the call open).
func TestMethodCallAnsweredOnceWithTheApplicationsStatusAndPayload(t *testing.T) {
	d := newFakeDialer()
	c, _, calls := newMethodClient(t, d, Options{}, nil)
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	conn := d.conn(0)
	if f := conn.params.Features; f != transport.FeatureC2D|transport.FeatureMethods {
		t.Fatalf("features %b with a method handler", f)
	}
	conn.callMethod("a1", "reboot", `{"delay":1}`)
	if call := receive(t, calls, "method call"); call != (methodCall{"a1", "reboot", `{"delay":1}`}) {
		t.Fatalf("call %+v", call)
	}
	if err := c.RespondMethod("a1", 200, []byte(`{"ok":`)); codeOf(err) != CodeInvalidArgument {
		t.Fatalf("a payload that is not JSON: %v", err)
	}
	if err := c.RespondMethod("a1", 202, []byte(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	rs := conn.sentRequests()
	if len(rs) != 1 || rs[0].Kind != transport.RequestMethodResponse || rs[0].RID != "a1" || rs[0].Status != 202 ||
		string(rs[0].Payload) != `{"ok":true}` {
		t.Fatalf("responses %+v", rs)
	}
	if err := c.RespondMethod("a1", 200, nil); codeOf(err) != CodeInvalidArgument {
		t.Fatalf("a second response: %v", err)
	}
	if err := c.RespondMethod("zz", 200, nil); codeOf(err) != CodeInvalidArgument {
		t.Fatalf("a response to an unknown call: %v", err)
	}
}

// Calls keep coming while earlier ones wait for their response; a handler may answer its call from inside.
func TestMethodCallsWhileAnEarlierOneWaits(t *testing.T) {
	d := newFakeDialer()
	c, _, calls := newMethodClient(t, d, Options{}, func(c *Client, call methodCall) {
		if call.name == "quick" {
			if err := c.RespondMethod(call.rid, 200, []byte(`"done"`)); err != nil {
				t.Errorf("answer inside the handler: %v", err)
			}
		}
	})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	conn := d.conn(0)
	conn.callMethod("1", "slow", "")
	slow := receive(t, calls, "method call")
	conn.callMethod("2", "quick", "")
	receive(t, calls, "method call")
	if err := c.RespondMethod(slow.rid, 500, []byte(`{"error":"late"}`)); err != nil {
		t.Fatal(err)
	}
	rs := conn.sentRequests()
	if len(rs) != 2 || rs[0].RID != "2" || rs[0].Status != 200 || rs[1].RID != "1" || rs[1].Status != 500 {
		t.Fatalf("responses %+v", rs)
	}
}

// A call belongs to its link: after a reconnect its response is refused (the hub forgot it), and calls of the new
// link are answered. A response outstanding when its link ends fails with CodeState, one outstanding at Close
// with CodeClosed: each ends once.
func TestMethodCallsAcrossALostLink(t *testing.T) {
	d := newFakeDialer()
	c, r, calls := newMethodClient(t, d, Options{RetryPolicy: retry.Custom(func(int, error) (bool, time.Duration) {
		return true, 0
	})}, nil)
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	d.conn(0).callMethod("old", "m", "")
	receive(t, calls, "method call")
	d.mu.Lock()
	d.manual = true // from the next link on, responses wait to be written
	d.mu.Unlock()
	d.conn(0).kill(transport.KindProtocol)
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError}, connected)
	if err := c.RespondMethod("old", 200, nil); codeOf(err) != CodeState {
		t.Fatalf("a response to a call of the lost link: %v", err)
	}
	for _, end := range []struct {
		rid  string
		code Code
		end  func()
	}{
		{"lost", CodeState, func() { d.conn(1).kill(transport.KindProtocol) }},
		{"closed", CodeClosed, func() { c.Close() }},
	} {
		conn := d.conn(len(d.conns) - 1)
		conn.callMethod(end.rid, "m", "")
		receive(t, calls, "method call")
		result := make(chan error, 1)
		go func() { result <- c.RespondMethod(end.rid, 200, []byte(`1`)) }()
		waitFor(t, func() bool { return len(conn.sentRequests()) == 1 })
		end.end()
		if err := receive(t, result, "response result"); codeOf(err) != end.code {
			t.Fatalf("a response outstanding at %s: %v", end.rid, err)
		}
		if end.code == CodeState {
			r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError}, connected)
		}
	}
}

// A call that comes while its link is being set up (the hub may call right after the SUBACK, before the dial
// returns) reaches the application once the link is live, and its answer goes out on that link. Poll mode lets
// the test run the handlers inside the dial: before the fix they got the call there and could not answer it.
func TestMethodCallDuringTheDialIsAnsweredOnItsLink(t *testing.T) {
	d := newFakeDialer()
	c, _, calls := newMethodClient(t, d, Options{Dispatch: DispatchPoll}, func(c *Client, call methodCall) {
		if err := c.RespondMethod(call.rid, 200, nil); err != nil {
			t.Errorf("respond to %s: %v", call.rid, err)
		}
	})
	d.during = func() {
		d.mu.Lock()
		conn := d.conns[len(d.conns)-1]
		d.mu.Unlock()
		conn.callMethod("early", "m", "")
		if _, err := c.Poll(0); err != nil {
			t.Errorf("poll inside the dial: %v", err)
		}
	}
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10 && len(calls) == 0; i++ {
		if _, err := c.Poll(waitLimit); err != nil {
			t.Fatal(err)
		}
	}
	if call := receive(t, calls, "method call"); call.rid != "early" {
		t.Fatalf("call %+v", call)
	}
	if rs := waitRequests(t, d.conn(0), 1); rs[0].Kind != transport.RequestMethodResponse || rs[0].RID != "early" {
		t.Fatalf("requests %+v", rs)
	}
}
