package core

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/retry/retrytest"
	"github.com/iotconn/iotconn/core/transport"
)

// With the fleet hint (Options.ReconnectSpread), the first retry after a lost link waits the policy's delay plus
// a uniform draw over the window, so a fleet that lost its hub together spreads over it; later retries wait a
// draw from [window, 1.05 x window]; a server's retry-after still wins. Without the hint every device retries within the
// policy's first 180 ms (issue 11: the whole fleet in one 100 ms bucket).
func TestFleetHintSpreadsTheFirstRetryOverItsWindow(t *testing.T) {
	const window = 20 * time.Second
	firstLo, firstHi := defaultDelayRange(1)
	var firsts, laters []time.Duration
	for range 40 {
		c, fake := loseSpreadLink(t, window, &transport.Error{Kind: transport.KindNetwork, Op: "connect"})
		first := nextTimer(t, fake)
		if first < firstLo || first > firstHi+window {
			t.Fatalf("first retry after a lost link waits %v, want [%v, %v]", first, firstLo, firstHi+window)
		}
		firsts = append(firsts, first)
		fake.Advance(first)
		later := nextTimer(t, fake)
		if later < window || later > window+window/retry.LaterSpreadDivisor {
			t.Fatalf("a later retry waits %v, want [%v, %v]", later, window, window+window/retry.LaterSpreadDivisor)
		}
		laters = append(laters, later)
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
	// A constant period would keep each device's place exactly, and with it any cluster that formed (rule 7).
	slices.Sort(laters)
	if distinct := len(slices.Compact(laters)); distinct < 20 {
		t.Fatalf("later retries took only %d distinct waits in 40 devices: a constant period", distinct)
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

// Under the fleet hint, a device the hub refuses for throttling once it took its place in the window waits the
// throttling schedule alone: it is where the hub admits now, and the window would send it behind the whole fleet
// (DESIGN.md rule 7 still holds: the schedule is the slower one, and random). A throttling refusal that is the
// first failure of an outage is still spread over the window, or a fleet refused at once would come back at once.
func TestFleetHintLeavesAThrottledRetryToTheThrottlingSchedule(t *testing.T) {
	const window = 60 * time.Second
	throttled := &transport.Error{Kind: transport.KindThrottled, Op: "connect"}
	firstLo, firstHi := defaultDelayRange(1)
	c, fake := loseSpreadLink(t, window, throttled)
	first := nextTimer(t, fake)
	if first < firstLo || first > firstHi+window {
		t.Fatalf("first retry after a lost link waits %v, want [%v, %v]", first, firstLo, firstHi+window)
	}
	fake.Advance(first)
	for n := 1; n <= 3; n++ {
		got := nextTimer(t, fake)
		lo, hi, _ := retrytest.DefaultRange(n, 10*time.Second, 60*time.Second, 5*time.Second)
		if got < lo || got > hi {
			t.Fatalf("throttled refusal %d in a row: next in %v, want the throttling schedule's [%v, %v]", n, got, lo, hi)
		}
		fake.Advance(got)
	}
	closeAndCheck(t, c)

	spread := 0
	for range 20 {
		fake := clock.NewFake(time.Unix(1700000000, 0))
		c, _ := newTestClient(t, newFakeDialer(throttled), Options{Clock: fake, ReconnectSpread: window,
			OperationTimeout: time.Hour})
		go connect(t, c)
		_, hi, _ := retrytest.DefaultRange(1, 10*time.Second, 60*time.Second, 5*time.Second)
		if nextTimer(t, fake) > hi {
			spread++
		}
		closeAndCheck(t, c)
	}
	// The schedule's draw (10-14 s) plus U[0, 60 s] stays under 14 s with probability 4/60 at most.
	if spread < 10 {
		t.Fatalf("only %d of 20 first throttling refusals were spread over the window", spread)
	}
}

// loseSpreadLink connects a client with the fleet hint window on a fake clock, then kills its link; every dial
// after that fails with next. The client's first retry is the next timer.
func loseSpreadLink(t *testing.T, window time.Duration, next *transport.Error) (*Client, *clock.Fake) {
	t.Helper()
	fake := clock.NewFake(time.Unix(1700000000, 0))
	d := newFakeDialer()
	c, r := newTestClient(t, d, Options{Clock: fake, ReconnectSpread: window, OperationTimeout: time.Hour})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	nextTimer(t, fake) // the token's renewal
	d.fallback = next
	d.conn(0).kill(transport.KindProtocol)
	return c, fake
}

// A shared Admission budget paces the connection attempts of every client attached: with 20 per second and a
// burst of 1, the k-th dial of four clients that connect at once comes no sooner than k x 50 ms after the start.
// (A lower bound on the real clock: the budget's timers never fire early, and a slow machine only makes it later. The fake clock cannot serve here:
// moving it over one client's renewal would fire the others' waits at the same instant.)
func TestAdmissionBudgetPacesAttemptsAcrossClients(t *testing.T) {
	budget, err := NewAdmission(20, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := newFakeDialer()
	var mu sync.Mutex
	var dials []time.Time
	d.during = func() {
		mu.Lock()
		dials = append(dials, time.Now())
		mu.Unlock()
	}
	const clients = 4
	results := make(chan error, clients)
	start := time.Now()
	for i := range clients {
		c, err := newClient(fleetConnStr(i), Options{Admission: budget}, d)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { closeAndCheck(t, c) })
		go func() { results <- connect(t, c) }()
	}
	for range clients {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dials) != clients {
		t.Fatalf("%d dials, want %d", len(dials), clients)
	}
	slices.SortFunc(dials, func(a, b time.Time) int { return a.Compare(b) })
	for k, at := range dials {
		if since := at.Sub(start); since < time.Duration(k)*50*time.Millisecond {
			t.Fatalf("dial %d came %v after the start, want at least %v (20 per second)", k, since,
				time.Duration(k)*50*time.Millisecond)
		}
	}
	for _, bad := range []struct {
		rate  float64
		burst int
	}{{0, 1}, {-1, 1}, {1, 0}} {
		if _, err := NewAdmission(bad.rate, bad.burst); codeOf(err) != CodeInvalidArgument {
			t.Fatalf("NewAdmission(%v, %d): %v, want CodeInvalidArgument", bad.rate, bad.burst, err)
		}
	}
}
