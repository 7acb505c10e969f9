package core

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/hubsim"
)

// A completion says only what the library knows: a message handed to the link may have reached the hub until
// its acknowledgement comes or its link ends.

// messageRecorder also keeps each completion's message text.
type messageRecorder struct {
	*recorder
	texts chan string
}

func newMessageRecorder(c *Client) *messageRecorder {
	r := &messageRecorder{recorder: newRecorder(), texts: make(chan string, 100)}
	h := r.handlers()
	onSend := h.OnSendComplete
	h.OnSendComplete = func(id uint64, res SendResult, err *Error) {
		if err != nil {
			r.texts <- err.Msg
		}
		onSend(id, res, err)
	}
	c.SetHandlers(h)
	return r
}

func TestSentMessagePastItsTTLExpiresInDoubtWhenItsLinkEnds(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 0))
	d := newFakeDialer()
	d.manual = true
	c, r := newTestClient(t, d, Options{Clock: fake, RetryPolicy: retry.NoRetry{}})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(&Message{Payload: []byte("x"), MessageID: "in-doubt", TTL: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	first := d.conn(0)
	waitFor(t, func() bool { return len(first.sentIDs()) == 1 })
	fake.Advance(time.Minute) // its PUBACK may still come: no completion yet
	first.kill(transport.KindProtocol)
	comp := r.expectCompletions(t, 1)[0]
	if comp.result != SendExpired || comp.code != CodeInDoubt {
		t.Fatalf("completion %+v, want expired with CodeInDoubt", comp)
	}
	r.expectNoMoreCompletions(t)
}

func TestCloseSaysASentUnacknowledgedMessageMayHaveArrived(t *testing.T) {
	d := newFakeDialer()
	d.manual = true
	c, err := newClient(testConnStr(), Options{}, d)
	if err != nil {
		t.Fatal(err)
	}
	r := newMessageRecorder(c)
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(&Message{Payload: []byte("on the wire")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(d.conn(0).sentIDs()) == 1 })
	closeAndWait(c)
	if comp := r.expectCompletions(t, 1)[0]; comp.result != SendFailed || comp.code != CodeClosed {
		t.Fatalf("completion %+v", comp)
	}
	if text := <-r.texts; !strings.Contains(text, "may have reached the hub") {
		t.Fatalf("completion text %q does not say the message may have arrived", text)
	}
}

func TestDropOldestKeepsAMessageThatMayHaveArrived(t *testing.T) {
	d := newFakeDialer()
	d.manual = true
	d.fallback = &transport.Error{Kind: transport.KindNetwork, Op: "connect", Err: errors.New("refused")}
	d.script = []error{nil}
	c, r := newTestClient(t, d, Options{QueueMaxMessages: 2, QueueOverflow: OverflowDropOldest})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	sendIDs(t, c, "sent")
	waitFor(t, func() bool { return len(d.conn(0).sentIDs()) == 1 })
	d.conn(0).kill(transport.KindProtocol) // back in the queue, unacknowledged; the hub is down now
	waitFor(t, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.dials >= 2
	})
	sendIDs(t, c, "queued", "newest")
	comp := r.expectCompletions(t, 1)[0]
	if comp.id != 2 || comp.result != SendFailed || comp.code != CodeDropped {
		t.Fatalf("completion %+v, want message 2 dropped (message 1 may have reached the hub)", comp)
	}
}

// The hub stalls a message that is on the wire past its time-to-live, then records it: its completion must
// say delivered, not expired.
func TestHubMessageOnTheWirePastItsTTLIsDeliveredNotExpired(t *testing.T) {
	h := startHub(t)
	c, r := h.client(t, h.cs, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	h.fault(t, hubsim.FaultBlackhole, 2*time.Second)
	if _, err := c.Send(&Message{Payload: []byte("stalled"), MessageID: "stalled", TTL: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	comp := r.expectCompletions(t, 1)[0]
	recorded := slices.ContainsFunc(h.hub.Messages("dev1"), func(m hubsim.D2CMessage) bool { return m.MessageID == "stalled" })
	if comp.result != SendDelivered || !recorded {
		t.Fatalf("completion %+v, recorded by the hub: %v; want delivered and recorded", comp, recorded)
	}
}
