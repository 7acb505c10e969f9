package core

import (
	"bytes"
	"errors"
	"strconv"
	"strings"

	"github.com/iotconn/iotconn/core/internal/notify"
	"github.com/iotconn/iotconn/core/internal/outbox"
	"github.com/iotconn/iotconn/core/internal/reqresp"
	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/store"
	"github.com/iotconn/iotconn/core/transport"
)

// Twins on the request layer (core/internal/reqresp): the requests the application makes, the hub's answers, and
// the rules that end each request in exactly one result across lost links. A twin GET is a Retry request: sent
// again on the next link within its deadline. A reported patch waits in the outbound queue like a message (its
// order, limits and durability are the queue's); once handed to a link it is a Retry request until its answer.

// request is what the engine keeps with each request of the table (reqresp.Request.Data).
type request struct {
	kind  transport.RequestKind
	id    uint64        // RequestTwinGet: the application's id
	sync  bool          // RequestTwinGet: the engine's own, after connecting (desired.go)
	entry *outbox.Entry // RequestTwinReport: the queued patch

	// RequestMethodResponse (methods.go): the hub's request id, the application's status, and where
	// RespondMethod waits for the result.
	method   string
	status   int
	answered chan *Error
}

// errLinkLost ends the requests the hub forgets with their link.
var errLinkLost = Errorf(CodeState, "the link ended first; the hub forgot the request with the link")

// usesTwin says whether h takes twin results: only then does a link subscribe to twin answers and desired
// patches. A hub of the Basic tier has no twins and drops a device that subscribes to them, so a client that
// never uses twins must not.
func usesTwin(h Handlers) bool { return h.OnTwin != nil || h.OnReported != nil || h.OnDesired != nil }

// features are the subscriptions of the next link, from the handlers set now.
func (c *Client) features() transport.Feature {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := transport.FeatureC2D
	if usesTwin(c.handlers) {
		f |= transport.FeatureTwin
	}
	if c.handlers.OnMethod != nil {
		f |= transport.FeatureMethods
	}
	return f
}

// needTwin refuses a twin request of a closed client, or of one whose links do not subscribe to twin answers.
func (c *Client) needTwin(call string) *Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return Errorf(CodeClosed, "client closed")
	case !usesTwin(c.handlers):
		return Errorf(CodeState, "%s needs a twin handler (OnTwin, OnReported or OnDesired) set before Connect: "+
			"links subscribe to twin answers only for clients that use twins", call)
	}
	return nil
}

// GetTwin asks for the whole twin and returns the request's id at once; OnTwin(id, twin, err) follows exactly
// once. Asked while disconnected, it waits for a link; a link lost before the answer sends it again on the next
// one; OperationTimeout from now bounds it (CodeTimeout).
func (c *Client) GetTwin() (uint64, error) {
	if err := c.needTwin("GetTwin"); err != nil {
		return 0, err
	}
	id := c.out.TakeID()
	r := &reqresp.Request{Op: "twin.get", Kind: reqresp.Retry, Deadline: c.clk.Now().Add(c.opts.OperationTimeout),
		Data: &request{kind: transport.RequestTwinGet, id: id}}
	if c.reqs.Add(r) != nil {
		return 0, Errorf(CodeClosed, "client closed")
	}
	c.flush()
	notify.Raise(c.kick) // the loop arms the request's deadline
	return id, nil
}

// PatchReported accepts a reported-properties patch (one UTF-8 JSON object; null deletes a property) and returns
// its id at once; OnReported(id, version, err) follows exactly once, with the twin's new reported version when the
// hub took it. Patches wait in the outbound queue with the messages, in order, and count against its limits and
// overflow policy; in durable mode PatchReported returns once the patch is on disk, and a patch a give-up or
// Close failed goes out from the next client on the same directory. A link lost before the answer sends it again
// on the next one. OperationTimeout from now bounds it: expired, with CodeInDoubt once it went out unanswered.
func (c *Client) PatchReported(patch []byte) (uint64, error) {
	if err := c.needTwin("PatchReported"); err != nil {
		return 0, err
	}
	if err, tooLarge := iothub.CheckReportedPatch(patch); err != nil {
		return 0, &Error{Code: codeFor(tooLarge), Msg: err.Error(), Err: err}
	}
	return c.enqueue(store.KindReported, transport.Message{Payload: bytes.Clone(patch)},
		c.clk.Now().Add(c.opts.OperationTimeout))
}

// patchRequest is the request of a queued patch that flush hands to the link; the patch's deadline bounds it.
func patchRequest(e *outbox.Entry) *reqresp.Request {
	return &reqresp.Request{Op: "twin.report", Kind: reqresp.Retry, Deadline: e.Deadline, Payload: e.Wire.Payload,
		Data: &request{kind: transport.RequestTwinReport, entry: e}}
}

// sendRequests hands every request waiting for a link to conn, in order. Called by flush, with sendMu held.
func (c *Client) sendRequests(conn transport.Conn) {
	for _, r := range c.reqs.Ready() {
		rq := r.Data.(*request)
		wire := &transport.Request{Kind: rq.kind, RID: r.RID, Payload: r.Payload}
		if rq.kind == transport.RequestMethodResponse {
			wire.RID, wire.Status = rq.method, rq.status
		}
		rid := r.RID
		conn.Request(wire, func(err error) {
			// The hub answers a method response with nothing: written is done. A failed write ends its link:
			// LinkLost then sends the request again or fails it.
			if err == nil && rq.kind == transport.RequestMethodResponse {
				c.answered(rid, reqresp.Response{})
			}
		})
	}
}

// answered resolves the request a hub's answer names; an answer nothing waits for (late, or to a request id of an
// earlier link) is dropped.
func (c *Client) answered(rid string, resp reqresp.Response) {
	if res, ok := c.reqs.Resolve(rid, resp); ok {
		c.finish(res)
	}
}

// finishAll delivers results, in order.
func (c *Client) finishAll(results []reqresp.Result) {
	for _, res := range results {
		c.finish(res)
	}
}

// finish delivers a request's one result.
func (c *Client) finish(res reqresp.Result) {
	rq := res.Req.Data.(*request)
	var err *Error
	switch {
	case errors.Is(res.Err, reqresp.ErrTimeout) && rq.kind == transport.RequestTwinReport:
		c.expireAll([]*outbox.Entry{rq.entry}) // in doubt: it went out, unanswered
		return
	case errors.Is(res.Err, reqresp.ErrTimeout):
		err = Errorf(CodeTimeout, "not done within the operation timeout (%v)", c.opts.OperationTimeout)
	case res.Err != nil:
		err = res.Err.(*Error) // the engine fails requests with its own errors only
	case rq.kind != transport.RequestMethodResponse:
		err = answerError(res.Resp)
	}
	switch {
	case rq.sync:
		c.synced(res, err)
	case rq.kind == transport.RequestTwinGet:
		var twin []byte
		if err == nil {
			twin = res.Resp.Payload
		}
		c.events.push(event{kind: evTwin, id: rq.id, payload: twin, err: err})
	case rq.kind == transport.RequestTwinReport:
		result := SendDelivered // the hub answered: the patch leaves the queue, taken or refused
		if res.Err != nil {
			result = SendFailed
		}
		c.complete(rq.entry, result, res.Resp.Version, err)
	case rq.kind == transport.RequestMethodResponse:
		rq.answered <- err
	}
}

// answerError is the error of a hub's answer, nil for a 2xx status. The engine does not retry a request the hub
// answered: the application decides.
func answerError(resp reqresp.Response) *Error {
	if resp.Status >= 200 && resp.Status < 300 {
		return nil
	}
	code := CodeProtocol
	switch resp.Status {
	case 400:
		code = CodeInvalidArgument
	case 401, 403:
		code = CodeAuth
	case 413:
		code = CodeTooLarge
	case 429:
		code = CodeThrottled
	}
	msg := "the hub answered " + strconv.Itoa(resp.Status)
	if len(resp.Payload) > 0 {
		msg += ": " + strings.ToValidUTF8(string(resp.Payload[:min(len(resp.Payload), 200)]), "")
	}
	return &Error{Code: code, Msg: msg}
}

// armRequests sets the requests' timer to the earliest deadline among them, if it changed.
func (c *Client) armRequests(ls *loopState) {
	next := c.reqs.NextDeadline()
	if ls.requests != nil && next.Equal(ls.requestAt) {
		return
	}
	stopTimer(&ls.requests)
	if !next.IsZero() {
		ls.requests, ls.requestAt = c.clk.NewTimer(next.Sub(c.clk.Now())), next
	}
}
