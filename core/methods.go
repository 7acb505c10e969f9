package core

import (
	"bytes"

	"github.com/iotconn/iotconn/core/internal/notify"
	"github.com/iotconn/iotconn/core/internal/reqresp"
	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
)

// Direct methods: the hub's calls reach the application as OnMethod events, each open until RespondMethod
// answers it. A call belongs to the link it came on: the hub forgets it when that link ends, so a response is a
// FailOnLoss request, and a call of an ended link cannot be answered on the next.

// methodCalled records a call of link gen as open and hands it to the application. A call that comes while its
// link is still being set up (the hub may call right after the SUBACK) waits until the loop publishes the link:
// answered before that, it would find no live link of its generation and be refused.
func (c *Client) methodCalled(gen uint64, rid, name string, payload []byte) {
	ev := event{kind: evMethod, rid: rid, method: name, payload: payload}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.methods[rid] = gen
	if c.live == nil || gen != c.liveGen {
		c.heldCalls = append(c.heldCalls, heldCall{gen, ev})
		return
	}
	c.events.push(ev)
}

// heldCall is a method call of a link not yet published.
type heldCall struct {
	gen uint64
	ev  event
}

// releaseCallsLocked hands the application the held calls of link gen, now live (live), and drops those of
// links up to gen that never became live or ended. Under sendMu.
func (c *Client) releaseCallsLocked(gen uint64, live bool) {
	kept := c.heldCalls[:0]
	for _, h := range c.heldCalls {
		switch {
		case live && h.gen == gen:
			c.events.push(h.ev)
		case h.gen > gen:
			kept = append(kept, h)
		default:
			delete(c.methods, h.ev.rid)
		}
	}
	c.heldCalls = kept
}

// forgetMethodsLocked drops the open calls of links before gen, the one ending: a response to a call of the
// ending link is still told that the hub forgot it, and calls never answered do not pile up. Under sendMu.
func (c *Client) forgetMethodsLocked(gen uint64) {
	for rid, g := range c.methods {
		if g < gen {
			delete(c.methods, rid)
		}
	}
}

// RespondMethod answers the method call requestID (from OnMethod) with status and payload (nothing, or one JSON
// value up to 128 KB) and returns once the response was written to the link, or with why it was not: each call
// takes one response, so a second one, or one for an unknown id, is CodeInvalidArgument; a call whose link has
// ended is CodeState (the hub forgot it with the link; the caller gets its timeout), as is a response whose
// link ends before it is written; CodeTimeout after OperationTimeout; CodeClosed. An invalid payload is refused
// before anything else, and the call stays open.
func (c *Client) RespondMethod(requestID string, status int, payload []byte) error {
	if err, tooLarge := iothub.CheckMethodPayload(payload); err != nil {
		return &Error{Code: codeFor(tooLarge), Msg: err.Error(), Err: err}
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return Errorf(CodeClosed, "client closed")
	}
	rq := &request{kind: transport.RequestMethodResponse, method: requestID, status: status,
		answered: make(chan *Error, 1)}
	r := &reqresp.Request{Op: "method.respond", Kind: reqresp.FailOnLoss, Payload: bytes.Clone(payload), Data: rq,
		Deadline: c.clk.Now().Add(c.opts.OperationTimeout)}
	c.sendMu.Lock()
	gen, open := c.methods[requestID]
	delete(c.methods, requestID)
	switch {
	case !open:
		c.sendMu.Unlock()
		return Errorf(CodeInvalidArgument, "no method call %q waits for a response: it was answered already, or "+
			"never received", requestID)
	case c.live == nil || gen != c.liveGen:
		c.sendMu.Unlock()
		return Errorf(CodeState, "method call %q came on a link that has ended: the hub forgot the call with the "+
			"link", requestID)
	}
	c.reqs.Add(r) // never refused: Close ends the table only after the link is gone
	c.sendRequests(c.live)
	c.sendMu.Unlock()
	notify.Raise(c.kick) // the loop arms the response's deadline
	if err := <-rq.answered; err != nil {
		return err
	}
	return nil
}
