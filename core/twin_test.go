package core

import (
	"strings"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/transport"
)

// These tests run the twin requests on the scripted transport, which records requests and answers only when a test
// says so.

// twinResult is one OnTwin or OnReported call.
type twinResult struct {
	id      uint64
	twin    string
	version int64
	code    Code
}

// twinRecorder also records the twin handlers; OnDesired only when desired is not nil.
type twinRecorder struct {
	*recorder
	twins    chan twinResult
	reported chan twinResult
	desired  chan twinResult // version and twin (the patch)
}

func errCode(err *Error) Code {
	if err == nil {
		return CodeOK
	}
	return err.Code
}

func (r *twinRecorder) handlers() Handlers {
	h := r.recorder.handlers()
	h.OnTwin = func(id uint64, twin []byte, err *Error) {
		r.twins <- twinResult{id: id, twin: string(twin), code: errCode(err)}
	}
	h.OnReported = func(id uint64, version int64, err *Error) {
		r.reported <- twinResult{id: id, version: version, code: errCode(err)}
	}
	if r.desired != nil {
		h.OnDesired = func(version int64, patch []byte) { r.desired <- twinResult{version: version, twin: string(patch)} }
	}
	return h
}

func newTwinRecorder() *twinRecorder {
	return &twinRecorder{recorder: newRecorder(), twins: make(chan twinResult, 100),
		reported: make(chan twinResult, 100)}
}

func newTwinClient(t *testing.T, d transport.Dialer, opts Options) (*Client, *twinRecorder) {
	t.Helper()
	c, _ := newTestClient(t, d, opts)
	r := newTwinRecorder()
	c.SetHandlers(r.handlers())
	return c, r
}

// receive waits for the next value of ch.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("no %s", what)
	}
	panic("unreachable")
}

// expectNone fails if ch holds a value now.
func expectNone[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("an extra %s: %+v", what, v)
	default:
	}
}

// waitRequests waits until conn recorded n requests and returns them.
func waitRequests(t *testing.T, conn *fakeConn, n int) []transport.Request {
	t.Helper()
	waitFor(t, func() bool { return len(conn.sentRequests()) >= n })
	rs := conn.sentRequests()
	if len(rs) != n {
		t.Fatalf("%d requests, want %d: %+v", len(rs), n, rs)
	}
	return rs
}

func mustPatch(t *testing.T, c *Client, patch string) uint64 {
	t.Helper()
	id, err := c.PatchReported([]byte(patch))
	if err != nil {
		t.Fatalf("PatchReported(%s): %v", patch, err)
	}
	return id
}

func mustGetTwin(t *testing.T, c *Client) uint64 {
	t.Helper()
	id, err := c.GetTwin()
	if err != nil {
		t.Fatalf("GetTwin: %v", err)
	}
	return id
}

// A client without twin handlers neither subscribes to twins (a Basic-tier hub would drop it) nor sends twin
// requests; one with them subscribes on every link.
func TestTwinRequestsNeedATwinHandlerAndSubscribeOnlyThen(t *testing.T) {
	d := newFakeDialer()
	c, _ := newTestClient(t, d, Options{})
	if _, err := c.GetTwin(); codeOf(err) != CodeState {
		t.Fatalf("GetTwin without a twin handler: %v", err)
	}
	if _, err := c.PatchReported([]byte(`{"a":1}`)); codeOf(err) != CodeState {
		t.Fatalf("PatchReported without a twin handler: %v", err)
	}
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	if f := d.conn(0).params.Features; f != transport.FeatureC2D {
		t.Fatalf("features %b without twin handlers", f)
	}
	d2 := newFakeDialer()
	c2, _ := newTwinClient(t, d2, Options{})
	if err := connect(t, c2); err != nil {
		t.Fatal(err)
	}
	if f := d2.conn(0).params.Features; f != transport.FeatureC2D|transport.FeatureTwin {
		t.Fatalf("features %b with twin handlers", f)
	}
}

// Requests made while disconnected wait for the link; patches go out in order, after the requests waiting; one
// id sequence numbers messages, patches and GETs; each ends in one result with the hub's answer.
func TestTwinRequestsMadeWhileDisconnectedGoOutOnConnect(t *testing.T) {
	d := newFakeDialer()
	c, r := newTwinClient(t, d, Options{})
	sendIDs(t, c, "m1")
	p1, get, p2 := mustPatch(t, c, `{"a":1}`), mustGetTwin(t, c), mustPatch(t, c, `{"b":{"c":null}}`)
	if p1 != 2 || get != 3 || p2 != 4 {
		t.Fatalf("ids %d %d %d, want 2 3 4", p1, get, p2)
	}
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	rs := waitRequests(t, d.conn(0), 3)
	if rs[0].Kind != transport.RequestTwinGet || rs[1].Kind != transport.RequestTwinReport ||
		string(rs[1].Payload) != `{"a":1}` || rs[2].Kind != transport.RequestTwinReport ||
		string(rs[2].Payload) != `{"b":{"c":null}}` {
		t.Fatalf("requests %+v", rs)
	}
	twin := `{"desired":{"$version":1},"reported":{"$version":3}}`
	d.conn(0).answer(rs[2].RID, 204, 3, "")
	d.conn(0).answer(rs[0].RID, 200, 0, twin)
	d.conn(0).answer(rs[1].RID, 204, 2, "")
	d.conn(0).answer(rs[1].RID, 204, 2, "") // a repeated answer ends nothing twice
	if got := receive(t, r.reported, "reported completion"); got != (twinResult{id: p2, version: 3}) {
		t.Fatalf("second patch: %+v", got)
	}
	if got := receive(t, r.twins, "twin"); got != (twinResult{id: get, twin: twin}) {
		t.Fatalf("twin: %+v", got)
	}
	if got := receive(t, r.reported, "reported completion"); got != (twinResult{id: p1, version: 2}) {
		t.Fatalf("first patch: %+v", got)
	}
	if comp := r.expectCompletions(t, 1)[0]; comp.id != 1 || comp.result != SendDelivered {
		t.Fatalf("message %+v", comp)
	}
	expectNone(t, r.reported, "reported completion")
	expectNone(t, r.twins, "twin")
}

// A patch is one UTF-8 JSON object within IoT Hub's size limit; it counts against the queue's limits and
// overflow policy as a message does.
func TestReportedPatchValidationAndQueueLimits(t *testing.T) {
	c, r := newTwinClient(t, newFakeDialer(), Options{QueueMaxMessages: 2, QueueOverflow: OverflowDropOldest})
	for _, bad := range []string{``, `null`, `[1]`, `{"a":}`, "{\"a\":\"\xff\"}", `{} {}`} {
		if _, err := c.PatchReported([]byte(bad)); codeOf(err) != CodeInvalidArgument {
			t.Errorf("patch %q: %v", bad, err)
		}
	}
	big := `{"k":"` + strings.Repeat("x", 32<<10) + `"}`
	if _, err := c.PatchReported([]byte(big)); codeOf(err) != CodeTooLarge {
		t.Fatalf("a patch over 32 KB: %v", err)
	}
	first := mustPatch(t, c, `{"a":1}`)
	sendIDs(t, c, "m")
	mustPatch(t, c, `{"a":2}`) // drops the oldest, the first patch
	if got := receive(t, r.reported, "reported completion"); got.id != first || got.code != CodeDropped {
		t.Fatalf("dropped patch: %+v", got)
	}
	c2, _ := newTwinClient(t, newFakeDialer(), Options{QueueMaxMessages: 1})
	mustPatch(t, c2, `{"a":1}`)
	if _, err := c2.PatchReported([]byte(`{"a":2}`)); codeOf(err) != CodeQueueFull {
		t.Fatalf("a patch over the queue's limit: %v", err)
	}
}

// Requests outstanding when the link drops go out again on the next link with new request ids; answers to the old
// ids (from the dead link) end nothing, so each request ends once.
func TestRequestsOutstandingAtLinkLossAreSentAgainAndEndOnce(t *testing.T) {
	d := newFakeDialer()
	c, r := newTwinClient(t, d, Options{RetryPolicy: retry.Custom(func(int, error) (bool, time.Duration) {
		return true, 0
	})})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	get, patch := mustGetTwin(t, c), mustPatch(t, c, `{"fw":"2"}`)
	first := d.conn(0)
	old := waitRequests(t, first, 2)
	first.kill(transport.KindProtocol)
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError}, connected)
	again := waitRequests(t, d.conn(1), 2)
	if again[0].Kind != transport.RequestTwinGet || again[1].Kind != transport.RequestTwinReport ||
		again[0].RID == old[0].RID || again[1].RID == old[1].RID {
		t.Fatalf("sent again %+v after %+v", again, old)
	}
	first.answer(old[0].RID, 200, 0, `{"old":true}`)
	first.answer(old[1].RID, 204, 7, "")
	d.conn(1).answer(again[0].RID, 200, 0, `{"desired":{},"reported":{}}`)
	d.conn(1).answer(again[1].RID, 204, 8, "")
	if got := receive(t, r.twins, "twin"); got.id != get || got.twin != `{"desired":{},"reported":{}}` {
		t.Fatalf("twin %+v", got)
	}
	if got := receive(t, r.reported, "reported completion"); got != (twinResult{id: patch, version: 8}) {
		t.Fatalf("patch %+v", got)
	}
	expectNone(t, r.twins, "twin")
	expectNone(t, r.reported, "reported completion")
}

// OperationTimeout bounds every request: a GET unanswered ends CodeTimeout; a patch that went out unanswered
// expires in doubt, one that never went out expires CodeTimeout. A late answer ends nothing.
func TestRequestDeadlines(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 0))
	d := newFakeDialer()
	c, r := newTwinClient(t, d, Options{Clock: fake, OperationTimeout: time.Minute})
	queued := mustPatch(t, c, `{"a":0}`)
	fake.Advance(time.Minute)
	if got := receive(t, r.reported, "reported completion"); got.id != queued || got.code != CodeTimeout {
		t.Fatalf("a patch that never went out: %+v", got)
	}
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	get, patch := mustGetTwin(t, c), mustPatch(t, c, `{"a":1}`)
	rs := waitRequests(t, d.conn(0), 2)
	fake.Advance(time.Minute)
	if got := receive(t, r.twins, "twin"); got.id != get || got.code != CodeTimeout || got.twin != "" {
		t.Fatalf("GET past its deadline: %+v", got)
	}
	if got := receive(t, r.reported, "reported completion"); got.id != patch || got.code != CodeInDoubt {
		t.Fatalf("patch past its deadline: %+v", got)
	}
	d.conn(0).answer(rs[0].RID, 200, 0, `{}`)
	d.conn(0).answer(rs[1].RID, 204, 2, "")
	expectNone(t, r.twins, "twin")
	expectNone(t, r.reported, "reported completion")
}

// The hub's refusal ends a request with an error that says so; nothing is retried after an answer.
func TestRefusedRequestsEndWithTheHubsStatus(t *testing.T) {
	d := newFakeDialer()
	c, r := newTwinClient(t, d, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	get, patch := mustGetTwin(t, c), mustPatch(t, c, `{"a":1}`)
	rs := waitRequests(t, d.conn(0), 2)
	d.conn(0).answer(rs[0].RID, 429, 0, `{"message":"throttled"}`)
	d.conn(0).answer(rs[1].RID, 400, 0, `"bad"`)
	if got := receive(t, r.twins, "twin"); got.id != get || got.code != CodeThrottled {
		t.Fatalf("throttled GET: %+v", got)
	}
	if got := receive(t, r.reported, "reported completion"); got.id != patch || got.code != CodeInvalidArgument {
		t.Fatalf("refused patch: %+v", got)
	}
	if n := len(d.conn(0).sentRequests()); n != 2 {
		t.Fatalf("%d requests sent; answered ones are not retried", n)
	}
}

// Close and a give-up end every outstanding request once, with their reason.
func TestCloseAndGiveUpEndOutstandingRequestsOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(c *Client, d *fakeDialer)
		code Code
	}{
		{"close", func(c *Client, _ *fakeDialer) { c.Close() }, CodeClosed},
		{"fatal", func(_ *Client, d *fakeDialer) { d.conn(0).kill(transport.KindAuth) }, CodeAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDialer()
			c, r := newTwinClient(t, d, Options{})
			if err := connect(t, c); err != nil {
				t.Fatal(err)
			}
			get, patch := mustGetTwin(t, c), mustPatch(t, c, `{"a":1}`)
			waitRequests(t, d.conn(0), 2)
			tc.end(c, d)
			if got := receive(t, r.twins, "twin"); got.id != get || got.code != tc.code {
				t.Fatalf("GET: %+v", got)
			}
			if got := receive(t, r.reported, "reported completion"); got.id != patch || got.code != tc.code {
				t.Fatalf("patch: %+v", got)
			}
			closeAndWait(c)
			expectNone(t, r.twins, "twin")
			expectNone(t, r.reported, "reported completion")
			if _, err := c.GetTwin(); codeOf(err) != CodeClosed {
				t.Fatalf("GetTwin after Close: %v", err)
			}
			if _, err := c.PatchReported([]byte(`{}`)); codeOf(err) != CodeClosed {
				t.Fatalf("PatchReported after Close: %v", err)
			}
		})
	}
}
