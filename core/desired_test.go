package core

import (
	"context"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/transport"
)

func newDesiredClient(t *testing.T, d transport.Dialer, opts Options) (*Client, *twinRecorder) {
	t.Helper()
	c, _ := newTestClient(t, d, opts)
	r := newTwinRecorder()
	r.desired = make(chan twinResult, 100)
	c.SetHandlers(r.handlers())
	return c, r
}

// patchDesired delivers a desired patch as a transport would.
func (c *fakeConn) patchDesired(version int64, patch string) {
	c.params.Handler.OnInbound(&transport.Inbound{Kind: transport.InboundDesired, Version: version,
		Payload: []byte(patch)})
}

// syncGet waits for the GET a link makes after connecting, its n-th request, and answers it with a twin whose
// desired section is desired.
func syncGet(t *testing.T, conn *fakeConn, n int, desired string) {
	t.Helper()
	rs := waitRequests(t, conn, n)
	if r := rs[n-1]; r.Kind != transport.RequestTwinGet {
		t.Fatalf("request %d is %+v, want the GET after connecting", n, r)
	}
	conn.answer(rs[n-1].RID, 200, 0, `{"desired":`+desired+`,"reported":{"$version":1}}`)
}

// throttleTimer waits for the next timer on the throttling schedule (10 s to 60 s) and returns its delay.
func throttleTimer(t *testing.T, fake *clock.Fake) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for {
		d, err := fake.NextTimer(ctx)
		if err != nil {
			t.Fatal("no timer on the throttling schedule")
		}
		if d >= 10*time.Second && d <= time.Minute {
			return d
		}
	}
}

func expectDesired(t *testing.T, r *twinRecorder, version int64, patch string) {
	t.Helper()
	if got := receive(t, r.desired, "desired update"); got.version != version || got.twin != patch {
		t.Fatalf("desired update %+v, want version %d %s", got, version, patch)
	}
}

// After connecting the engine GETs the twin and delivers the desired section once; then the hub's patches, each
// version once, in increasing order.
func TestDesiredAfterConnectingThenPatchesEachVersionOnce(t *testing.T) {
	d := newFakeDialer()
	c, r := newDesiredClient(t, d, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	conn := d.conn(0)
	syncGet(t, conn, 1, `{"rate":5,"$version":3}`)
	expectDesired(t, r, 3, `{"rate":5,"$version":3}`)
	conn.patchDesired(4, `{"rate":6,"$version":4}`)
	conn.patchDesired(4, `{"rate":6,"$version":4}`) // repeated
	conn.patchDesired(3, `{"rate":5,"$version":3}`) // older
	conn.patchDesired(6, `{"fan":true,"$version":6}`)
	expectDesired(t, r, 4, `{"rate":6,"$version":4}`)
	expectDesired(t, r, 6, `{"fan":true,"$version":6}`)
	expectNone(t, r.desired, "desired update")
}

// A patch that overtakes the answer of the GET after connecting waits for it; a reconnect GETs again and
// delivers only a desired version that moved while the device was offline.
func TestDesiredPatchesWaitForTheGetAndEveryReconnectGetsAgain(t *testing.T) {
	d := newFakeDialer()
	c, r := newDesiredClient(t, d, Options{RetryPolicy: retry.Custom(func(int, error) (bool, time.Duration) {
		return true, 0
	})})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	first := d.conn(0)
	waitRequests(t, first, 1)
	first.patchDesired(5, `{"b":2,"$version":5}`) // applied after the GET was served
	expectNone(t, r.desired, "desired update before the GET's answer")
	syncGet(t, first, 1, `{"a":1,"$version":4}`)
	expectDesired(t, r, 4, `{"a":1,"$version":4}`)
	expectDesired(t, r, 5, `{"b":2,"$version":5}`)

	for i, tc := range []struct {
		desired string
		want    int64
	}{{`{"a":1,"b":2,"$version":5}`, 0}, {`{"a":9,"b":2,"$version":7}`, 7}} {
		d.conn(i).kill(transport.KindProtocol)
		r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError}, connected)
		syncGet(t, d.conn(i+1), 1, tc.desired)
		if tc.want != 0 {
			expectDesired(t, r, tc.want, tc.desired)
		}
		d.conn(i+1).patchDesired(5, `{"b":2,"$version":5}`) // the hub repeats an old one
	}
	closeAndWait(c)
	expectNone(t, r.desired, "desired update")
}

// A GET after connecting that the hub refuses, or that gets no answer, is asked again on the throttling
// schedule; patches wait for it.
func TestFailedGetAfterConnectingIsAskedAgain(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 0))
	d := newFakeDialer()
	c, r := newDesiredClient(t, d, Options{Clock: fake, OperationTimeout: 5 * time.Minute})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	conn := d.conn(0)
	rs := waitRequests(t, conn, 1)
	conn.answer(rs[0].RID, 429, 0, `{"message":"throttled"}`)
	conn.patchDesired(9, `{"x":1,"$version":9}`)
	fake.Advance(throttleTimer(t, fake))
	waitRequests(t, conn, 2)
	fake.Advance(5 * time.Minute) // no answer before the deadline
	fake.Advance(throttleTimer(t, fake))
	rs = waitRequests(t, conn, 3)
	expectNone(t, r.desired, "desired update before a GET succeeded")
	conn.answer(rs[2].RID, 200, 0, `{"desired":{"x":0,"$version":8},"reported":{}}`)
	expectDesired(t, r, 8, `{"x":0,"$version":8}`)
	expectDesired(t, r, 9, `{"x":1,"$version":9}`)
}

// A token renewal is a reconnect like any other: the new link subscribes again and GETs the twin.
func TestRenewalSubscribesAgainAndGetsTheTwin(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 0))
	d := newFakeDialer()
	c, r := newDesiredClient(t, d, Options{Clock: fake, SASLifetime: time.Hour, SASRenewMargin: 6 * time.Minute})
	h := r.handlers()
	h.OnMethod = func(string, string, []byte) {}
	c.SetHandlers(h)
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	syncGet(t, d.conn(0), 1, `{"$version":1}`)
	expectDesired(t, r, 1, `{"$version":1}`)
	fake.Advance(54 * time.Minute)
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonExpiredSASToken}, connected)
	second := d.conn(1)
	if f := second.params.Features; f != transport.FeatureC2D|transport.FeatureTwin|transport.FeatureMethods {
		t.Fatalf("features after the renewal %b", f)
	}
	syncGet(t, second, 1, `{"rate":2,"$version":2}`)
	expectDesired(t, r, 2, `{"rate":2,"$version":2}`)
}
