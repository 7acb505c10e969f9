package core

import (
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/transport"
)

// With the fleet hint (Options.ReconnectSpread), the first retry after a lost link waits the policy's delay plus
// a uniform draw over the window, so a fleet that lost its hub together spreads over it; later retries wait at
// least the window; a server's retry-after still wins. Without the hint every device retries within the
// policy's first 180 ms (issue 11: the whole fleet in one 100 ms bucket).
func TestFleetHintSpreadsTheFirstRetryOverItsWindow(t *testing.T) {
	const window = 20 * time.Second
	firstLo, firstHi := defaultDelayRange(1)
	var firsts []time.Duration
	for range 40 {
		fake := clock.NewFake(time.Unix(1700000000, 0))
		d := newFakeDialer()
		c, r := newTestClient(t, d, Options{Clock: fake, ReconnectSpread: window, OperationTimeout: time.Hour})
		if err := connect(t, c); err != nil {
			t.Fatal(err)
		}
		r.expectStates(t, connected)
		nextTimer(t, fake) // the token's renewal
		d.fallback = &transport.Error{Kind: transport.KindNetwork, Op: "connect"}
		d.conn(0).kill(transport.KindProtocol)
		first := nextTimer(t, fake)
		if first < firstLo || first > firstHi+window {
			t.Fatalf("first retry after a lost link waits %v, want [%v, %v]", first, firstLo, firstHi+window)
		}
		firsts = append(firsts, first)
		fake.Advance(first)
		if later := nextTimer(t, fake); later < window {
			t.Fatalf("a later retry waits %v, want at least the window %v", later, window)
		}
		closeAndCheck(t, c)
	}
	// 40 uniform draws over 20 s: all of them in one 2 s tenth has probability 10 x 0.1^40.
	lo, hi := firsts[0], firsts[0]
	for _, f := range firsts {
		lo, hi = min(lo, f), max(hi, f)
	}
	if hi-lo < window/10 {
		t.Fatalf("first retries all within %v of each other: not spread over %v", hi-lo, window)
	}

	t.Run("retry-after wins", func(t *testing.T) {
		fake := clock.NewFake(time.Unix(1700000000, 0))
		d := newFakeDialer(&transport.Error{Kind: transport.KindThrottled, Op: "connect", RetryAfter: 3 * time.Second})
		c, _ := newTestClient(t, d, Options{Clock: fake, ReconnectSpread: window, OperationTimeout: time.Hour})
		go connect(t, c)
		if got := nextTimer(t, fake); got != 3*time.Second {
			t.Fatalf("retry waits %v, want the server's 3s", got)
		}
	})
	if _, err := newClient(testConnStr(), Options{ReconnectSpread: -time.Second}, newFakeDialer()); codeOf(err) != CodeInvalidArgument {
		t.Fatalf("negative ReconnectSpread: %v, want CodeInvalidArgument", err)
	}
}
