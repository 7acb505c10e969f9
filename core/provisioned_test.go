package core

import (
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/clock"
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
