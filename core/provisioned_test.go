package core

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/provisioning"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/transport"
)

// DPS's retry-after is a floor under the engine's own wait, never the wait itself: DPS answers a fleet over its
// quota with the same short seconds, and devices that all came back then would ask it again together (measured:
// 1 000 devices retrying at DPS's retry-after asked it 10 000 times). A throttled registration waits the
// throttling schedule, at least DPS's retry-after, and its first retry is spread by the fleet hint; a hub's
// retry-after is still taken as it is (TestFleetHintSpreadsFirstRetries).
func TestDPSRetryAfterIsAFloor(t *testing.T) {
	for _, tc := range []struct {
		name     string
		after    time.Duration
		spread   time.Duration
		lo, hi   time.Duration
		throttle bool
	}{
		{"short retry-after, throttled", time.Second, 0, 10 * time.Second, 14 * time.Second, true},
		{"long retry-after", 30 * time.Second, 0, 30 * time.Second, 45 * time.Second, true},
		{"with the fleet hint", time.Second, time.Minute, 10 * time.Second, 74 * time.Second, true},
		{"a 503's retry-after over the policy's delay", 2 * time.Second, 0, 2 * time.Second, 3 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind := transport.KindServerBusy
			if tc.throttle {
				kind = transport.KindThrottled
			}
			fake := clock.NewFake(time.Unix(1700000000, 0))
			d := newFakeDialer(&transport.Error{Kind: kind, Op: opProvision, RetryAfter: tc.after})
			c, _ := newTestClient(t, d, Options{Clock: fake, ReconnectSpread: tc.spread, OperationTimeout: time.Hour,
				RetryPolicy: retry.DefaultExponential()})
			go connect(t, c)
			if got := nextTimer(t, fake); got < tc.lo || got > tc.hi {
				t.Fatalf("waited %v after DPS asked for %v; want [%v, %v]", got, tc.after, tc.lo, tc.hi)
			}
		})
	}
}

// A hub that knew the device refuses it (moved): the registration that follows comes at the policy's delay, not
// after the fleet hint's window again; the device keeps the place its first retry drew. A plain failure after the
// first retry still waits the window (TestFleetHintSpreadsFirstRetries).
func TestAMovedDeviceRegistersAtThePolicysDelay(t *testing.T) {
	const window = time.Minute
	dir := t.TempDir()
	cache := filepath.Join(dir, provisioning.CacheFile)
	p := Provisioning{Host: "dps.invalid", IDScope: "0ne1", RegistrationID: "dev-1", SymmetricKey: testKey,
		CacheFile: cache}
	if err := provisioning.SaveCache(cache, provisioning.Assignment{Host: p.Host, IDScope: p.IDScope,
		RegistrationID: p.RegistrationID, AssignedHub: "hub.example", DeviceID: "dev-1"}); err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake(time.Unix(1700000000, 0))
	d := newFakeDialer()
	c, err := newProvisionedClient(p, Options{Clock: fake, ReconnectSpread: window, OperationTimeout: time.Hour}, d)
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	c.SetHandlers(r.handlers())
	t.Cleanup(func() { closeAndCheck(t, c) })
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	if hub, _ := c.Assignment(); hub != "hub.example" || c.Registrations() != 0 {
		t.Fatalf("connected to %q after %d registrations, want the cached hub and none", hub, c.Registrations())
	}
	nextTimer(t, fake) // the token's renewal
	d.fallback = &transport.Error{Kind: transport.KindDeviceNotFound, Op: "connect"}
	fake.Advance(time.Minute) // the link stayed up a while: the back-off starts over
	d.conn(0).kill(transport.KindProtocol)
	first := nextTimer(t, fake)
	fake.Advance(first)
	if got := nextTimer(t, fake); got >= window/10 {
		t.Fatalf("the registration after the hub's refusal waits %v, want the policy's delay (well under %v)", got,
			window)
	}
}
