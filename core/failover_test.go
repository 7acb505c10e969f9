package core

import (
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/transport"
)

// A hub that answers "not found" to a device that connected before is taken for a failover: retried on the
// policy's jittered back-off, as the hub busy, until FailoverWindow has passed since its first such answer; then
// it is fatal. TestFatalKindsStopAtOnceAndFailPending has the device that never connected.
func TestHubNotFoundAfterAConnectIsAFailoverBoundedInTime(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 0))
	d := newFakeDialer(nil)
	d.fallback = &transport.Error{Kind: transport.KindHubNotFound, Op: "connect"}
	c, r := newTestClient(t, d, Options{Clock: fake, OperationTimeout: time.Hour})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	nextTimer(t, fake) // the token's renewal
	d.conn(0).kill(transport.KindHubNotFound)
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError})
	start := fake.Now()
	for i := 0; fake.Now().Sub(start) < FailoverWindow; i++ {
		if i == 1000 {
			t.Fatal("still retrying after 1000 attempts")
		}
		fake.Advance(nextTimer(t, fake))
		waitFor(t, func() bool { return d.dialCount() >= i+2 })
	}
	r.expectStates(t, state{StatusDisconnected, ReasonCommunicationError})
	if gone := fake.Now().Sub(start); gone > FailoverWindow+time.Minute {
		t.Fatalf("gave up after %v; the window is %v", gone, FailoverWindow)
	}
}

func (d *fakeDialer) dialCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dials
}
