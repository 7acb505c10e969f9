package core

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/retry/retrytest"
	"github.com/iotconn/iotconn/core/transport"
)

// A publisher that raced a link's loss into paho's Publish stays there for up to publishWait: paho offers no
// way to abort a Publish. Everything else must be gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/eclipse/paho%2emqtt%2egolang.(*client).Publish"))
}

const waitLimit = 10 * time.Second

var testKey = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func testConnStr() string {
	return "HostName=localhost:18883;DeviceId=dev1;SharedAccessKey=" + testKey
}

type completion struct {
	id     uint64
	result SendResult
	code   Code
}

// recorder collects what a client's handlers see.
type recorder struct {
	states      chan state
	completions chan completion
	messages    chan *Message
}

func newRecorder() *recorder {
	return &recorder{states: make(chan state, 100), completions: make(chan completion, 20000),
		messages: make(chan *Message, 100)}
}

func (r *recorder) handlers() Handlers {
	return Handlers{
		OnStatus:  func(s ConnectionStatus, why ConnectionStatusChangeReason) { r.states <- state{s, why} },
		OnMessage: func(m *Message) { r.messages <- m },
		OnSendComplete: func(id uint64, res SendResult, err *Error) {
			c := completion{id: id, result: res}
			if err != nil {
				c.code = err.Code
			}
			r.completions <- c
		},
	}
}

func (r *recorder) expectStates(t *testing.T, want ...state) {
	t.Helper()
	for _, w := range want {
		select {
		case got := <-r.states:
			if got != w {
				t.Fatalf("status %v/%v, want %v/%v", got.status, got.reason, w.status, w.reason)
			}
		case <-time.After(waitLimit):
			t.Fatalf("no status event; want %v/%v", w.status, w.reason)
		}
	}
}

func (r *recorder) expectCompletions(t *testing.T, n int) []completion {
	t.Helper()
	out := make([]completion, 0, n)
	for len(out) < n {
		select {
		case c := <-r.completions:
			out = append(out, c)
		case <-time.After(waitLimit):
			t.Fatalf("%d of %d completions", len(out), n)
		}
	}
	return out
}

// expectDelivered waits for n completions, every one Delivered; of names the sender in a failure.
func (r *recorder) expectDelivered(t *testing.T, n int, of string) {
	t.Helper()
	for _, comp := range r.expectCompletions(t, n) {
		if comp.result != SendDelivered {
			t.Fatalf("%s: message %d ended %v (code %v)", of, comp.id, comp.result, comp.code)
		}
	}
}

func (r *recorder) expectNoMoreCompletions(t *testing.T) {
	t.Helper()
	select {
	case c := <-r.completions:
		t.Fatalf("extra completion %+v", c)
	default:
	}
}

func newTestClient(t *testing.T, d transport.Dialer, opts Options) (*Client, *recorder) {
	t.Helper()
	c, err := newClient(testConnStr(), opts, d)
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	c.SetHandlers(r.handlers())
	t.Cleanup(func() { closeAndCheck(t, c) })
	return c, r
}

// closeAndWait closes c and waits until its last handler returned.
func closeAndWait(c *Client) {
	c.Close()
	<-c.Done()
}

// closeAndCheck closes c and fails the test if its status machine ever refused a transition.
func closeAndCheck(t testing.TB, c *Client) {
	closeAndWait(c)
	if n := c.forbidden.Load(); n > 0 {
		t.Errorf("the status machine refused %d transitions (see the log events)", n)
	}
}

// goroutineID returns the id of the calling goroutine, to tell which goroutine ran a handler.
func goroutineID() uint64 {
	var buf [32]byte
	n := runtime.Stack(buf[:], false) // "goroutine 123 [running]:..."
	id, _, _ := strings.Cut(string(buf[len("goroutine "):n]), " ")
	v, _ := strconv.ParseUint(id, 10, 64)
	return v
}

func connect(t *testing.T, c *Client) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	return c.Connect(ctx)
}

func codeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeOK
}

var (
	connected = state{StatusConnected, ReasonConnectionOk}
	disabled  = state{StatusDisabled, ReasonClientClose}
)

// statusEvents counts the status events queued on a poll-mode client.
func statusEvents(c *Client) int {
	c.events.mu.Lock()
	defer c.events.mu.Unlock()
	n := 0
	for _, e := range c.events.items {
		if e.kind == evStatus {
			n++
		}
	}
	return n
}

func TestTransitionTableIsWalked(t *testing.T) {
	statuses := []ConnectionStatus{StatusDisconnected, StatusConnected, StatusDisconnectedRetrying, StatusDisabled}
	var all []state
	for _, s := range statuses {
		for r := ReasonConnectionOk; r <= ReasonClientClose; r++ {
			all = append(all, state{s, r})
		}
	}
	c, _ := newTestClient(t, newFakeDialer(), Options{Dispatch: DispatchPoll})
	var moves, refusals int
	for _, from := range all {
		for _, to := range all {
			c.mu.Lock()
			c.cur = from
			c.mu.Unlock()
			before := statusEvents(c)
			c.transition(to.status, to.reason)
			got, _ := c.Status()
			emitted := statusEvents(c) - before
			if transitionAllowed(from, to) {
				moves++
				if got != to.status || emitted != 1 {
					t.Fatalf("%v -> %v: status %v, %d events", from, to, got, emitted)
				}
			} else {
				refusals++
				if got != from.status || emitted != 0 {
					t.Fatalf("refused %v -> %v changed status to %v or emitted %d events", from, to, got, emitted)
				}
			}
		}
	}
	// Spot checks of the table's shape.
	for _, bad := range [][2]state{
		{connected, connected},
		{{StatusDisabled, ReasonClientClose}, connected},
		{{StatusDisconnected, ReasonConnectionOk}, {StatusConnected, ReasonNoNetwork}},
		{connected, {StatusDisconnectedRetrying, ReasonBadCredential}},
	} {
		if transitionAllowed(bad[0], bad[1]) {
			t.Errorf("table allows %v -> %v", bad[0], bad[1])
		}
	}
	if moves == 0 || refusals == 0 {
		t.Fatalf("walked %d moves, %d refusals", moves, refusals)
	}
	if got, want := c.forbidden.Swap(0), int64(refusals-len(all)); got != want { // staying put is no refusal
		t.Fatalf("%d refusals counted as engine bugs, want %d", got, want)
	}
	c.mu.Lock()
	c.cur = state{StatusDisconnected, ReasonConnectionOk} // let Close walk to Disabled
	c.mu.Unlock()
}

func TestConnectSendClose(t *testing.T) {
	d := newFakeDialer()
	c, r := newTestClient(t, d, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	if err := connect(t, c); err != nil {
		t.Fatalf("second Connect: %v", err)
	}
	for i := 1; i <= 3; i++ {
		id, err := c.Send(&Message{Payload: []byte("hi"), Properties: []Property{{"k", fmt.Sprint(i)}}})
		if err != nil || id != uint64(i) {
			t.Fatalf("Send = %d, %v", id, err)
		}
	}
	for i, comp := range r.expectCompletions(t, 3) {
		if comp.id != uint64(i+1) || comp.result != SendDelivered {
			t.Fatalf("completion %d: %+v", i, comp)
		}
	}
	sent := d.conn(0).sent
	if len(sent) != 3 || sent[2].Properties[0] != [2]string{"k", "3"} || sent[0].MessageID == "" ||
		sent[0].MessageID == sent[1].MessageID {
		t.Fatalf("wire messages %+v", sent)
	}
	if p := d.conn(0).params; p.DeviceID != "dev1" || p.Host != "localhost:18883" || p.KeepAlive != DefaultKeepAlive ||
		p.TLS.ServerName != "localhost" || !strings.HasPrefix(p.Token, "SharedAccessSignature ") {
		t.Fatalf("dial params %+v", p)
	}
	c.Close()
	r.expectStates(t, disabled)
	if err := c.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := c.Send(&Message{Payload: []byte("late")}); codeOf(err) != CodeClosed {
		t.Fatalf("Send after Close: %v", err)
	}
	if err := connect(t, c); codeOf(err) != CodeClosed {
		t.Fatalf("Connect after Close: %v", err)
	}
}

func TestLostLinkResendsUnacknowledgedInOrderOnce(t *testing.T) {
	d := newFakeDialer()
	d.manual = true
	c, r := newTestClient(t, d, Options{RetryPolicy: retry.Custom(func(int, error) (bool, time.Duration) { return true, 0 })})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	for i := 0; i < 5; i++ {
		if _, err := c.Send(&Message{Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	first := d.conn(0)
	waitFor(t, func() bool { return len(first.sentIDs()) == 5 })
	first.kill(transport.KindProtocol)
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError}, connected)
	second := d.conn(1)
	waitFor(t, func() bool { return len(second.sentIDs()) == 5 })
	if fmt.Sprint(second.sentIDs()) != fmt.Sprint(first.sentIDs()) {
		t.Fatalf("resent %v, first sent %v", second.sentIDs(), first.sentIDs())
	}
	second.ackAll()
	first.ackAll() // late acknowledgements of the dead link must not complete anything twice
	for i, comp := range r.expectCompletions(t, 5) {
		if comp.id != uint64(i+1) || comp.result != SendDelivered {
			t.Fatalf("completion %+v", comp)
		}
	}
	r.expectNoMoreCompletions(t)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond) // polling a fake's state; no event exists to wait on
	}
}

func TestFatalKindsStopAtOnceAndFailPending(t *testing.T) {
	for _, tc := range []struct {
		kind   transport.Kind
		reason ConnectionStatusChangeReason
		code   Code
	}{
		{transport.KindAuth, ReasonBadCredential, CodeAuth},
		{transport.KindDeviceDisabled, ReasonDeviceDisabled, CodeDeviceDisabled},
		{transport.KindDeviceNotFound, ReasonDeviceDisabled, CodeDeviceDisabled},
		{transport.KindServerUnavailable, ReasonDeviceDisabled, CodeDeviceDisabled}, // never connected: disabled
		{transport.KindUntrusted, ReasonCommunicationError, CodeProtocol},
		{transport.KindHubNotFound, ReasonCommunicationError, CodeProtocol}, // never connected: a wrong host
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			d := newFakeDialer()
			d.fallback = &transport.Error{Kind: tc.kind, Op: "connect"}
			c, r := newTestClient(t, d, Options{})
			for i := 0; i < 2; i++ {
				if _, err := c.Send(&Message{Payload: []byte("x")}); err != nil {
					t.Fatal(err)
				}
			}
			if err := connect(t, c); codeOf(err) != tc.code {
				t.Fatalf("Connect: %v, want code %v", err, tc.code)
			}
			r.expectStates(t, state{StatusDisconnected, tc.reason})
			for _, comp := range r.expectCompletions(t, 2) {
				if comp.result != SendFailed || comp.code != tc.code {
					t.Fatalf("completion %+v", comp)
				}
			}
			if d.dials != 1 {
				t.Fatalf("%d dials; a fatal error must not be retried", d.dials)
			}
		})
	}
}

func TestNoRetryAndFinitePolicyEndInRetryExpired(t *testing.T) {
	finite, err := retry.NewExponential(3, 0, 0, 0, retry.JitterDefault)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		policy retry.Policy
		dials  int
	}{"NoRetry": {retry.NoRetry{}, 1}, "three retries": {finite, 4}} {
		t.Run(name, func(t *testing.T) {
			fake := clock.NewFake(time.Unix(1700000000, 0))
			d := newFakeDialer()
			d.fallback = &transport.Error{Kind: transport.KindNetwork, Op: "connect"}
			c, r := newTestClient(t, d, Options{RetryPolicy: tc.policy, Clock: fake})
			res := make(chan error, 1)
			go func() { res <- connect(t, c) }()
			advanceTimers(t, fake, tc.dials-1)
			if err := <-res; codeOf(err) != CodeRetryExpired {
				t.Fatalf("Connect: %v", err)
			}
			if tc.dials > 1 {
				r.expectStates(t, state{StatusDisconnectedRetrying, ReasonNoNetwork})
			}
			r.expectStates(t, state{StatusDisconnected, ReasonRetryExpired})
			if d.dials != tc.dials {
				t.Fatalf("%d dials, want %d", d.dials, tc.dials)
			}
		})
	}
}

// advanceTimers lets n back-off timers elapse and returns the delays they asked for.
func advanceTimers(t *testing.T, fake *clock.Fake, n int) []time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	delays := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		d, err := fake.NextTimer(ctx)
		if err != nil {
			t.Fatalf("timer %d: %v", i, err)
		}
		delays = append(delays, d)
		fake.Advance(d)
	}
	return delays
}

func TestHubDownAtStartThenUp(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 0))
	refused := &transport.Error{Kind: transport.KindNetwork, Op: "connect"}
	d := newFakeDialer(refused, refused)
	c, r := newTestClient(t, d, Options{Clock: fake})
	res := make(chan error, 1)
	go func() { res <- connect(t, c) }()
	advanceTimers(t, fake, 2)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonNoNetwork}, connected)
}

// delaysFor runs a client whose every dial fails with err and returns the first n delays the engine waited.
func delaysFor(t *testing.T, policy retry.Policy, err error, n int) []time.Duration {
	t.Helper()
	fake := clock.NewFake(time.Unix(1700000000, 0))
	d := newFakeDialer()
	d.fallback = err
	c, _ := newTestClient(t, d, Options{RetryPolicy: policy, Clock: fake, OperationTimeout: 1000 * time.Hour})
	go connect(t, c)
	delays := advanceTimers(t, fake, n)
	c.Close()
	return delays
}

func TestDelaysFollowThePolicies(t *testing.T) {
	network := &transport.Error{Kind: transport.KindNetwork, Op: "connect"}
	t.Run("exponential with jitter", func(t *testing.T) {
		p, err := retry.NewExponential(retry.Unlimited, 2*time.Second, 60*time.Second, time.Second, retry.JitterDefault)
		if err != nil {
			t.Fatal(err)
		}
		for sample := 0; sample < 5; sample++ {
			for i, got := range delaysFor(t, p, network, 8) {
				lo, hi, _ := retrytest.DefaultRange(i+1, 2*time.Second, time.Minute, time.Second)
				if got < lo || got > hi {
					t.Fatalf("attempt %d waited %v, want [%v, %v]", i+1, got, lo, hi)
				}
			}
		}
	})
	t.Run("full jitter", func(t *testing.T) {
		p, err := retry.NewExponential(retry.Unlimited, 2*time.Second, 60*time.Second, time.Second, retry.JitterFull)
		if err != nil {
			t.Fatal(err)
		}
		distinct := map[time.Duration]bool{}
		for sample := 0; sample < 5; sample++ {
			for i, got := range delaysFor(t, p, network, 6) {
				hi := min(2*time.Second+time.Duration(1<<i-1)*time.Second, time.Minute)
				if i == 0 {
					hi = 2800 * time.Millisecond
				}
				if got < 2*time.Second || got > hi {
					t.Fatalf("attempt %d waited %v, want [2s, %v]", i+1, got, hi)
				}
				distinct[got] = true
			}
		}
		if len(distinct) < 10 {
			t.Fatalf("only %d distinct delays in 30 samples: no jitter", len(distinct))
		}
	})
	// An instant failure is followed by the guard's floor and its random spread, never by the bare floor. Delays
	// are drawn with nanosecond resolution over 2 s: two equal ones out of 10 would take a 1-in-10^7 chance.
	t.Run("one second guard", func(t *testing.T) {
		zero := retry.Custom(func(int, error) (bool, time.Duration) { return true, 0 })
		for name, p := range map[string]retry.Policy{"zero": zero, "default": retry.DefaultExponential()} {
			delays := delaysFor(t, p, network, 5)[:3] // the default policy asks for less than 1 s up to attempt 5
			delays = append(delays, delaysFor(t, p, network, 5)[:3]...)
			distinct := map[time.Duration]bool{}
			for i, got := range delays {
				if got < retry.MinAttemptSpacing || got > retry.MinAttemptSpacing+retry.GuardSpread {
					t.Fatalf("%s policy, attempt %d: waited %v after an instant failure, want [%v, %v]", name, i%3+1,
						got, retry.MinAttemptSpacing, retry.MinAttemptSpacing+retry.GuardSpread)
				}
				distinct[got] = true
			}
			if len(distinct) < len(delays) {
				t.Fatalf("%s policy: the guard repeated a delay: %v", name, delays)
			}
		}
	})
	t.Run("custom policy delays are kept", func(t *testing.T) {
		var attempts []int
		var mu sync.Mutex
		custom := retry.Custom(func(a int, err error) (bool, time.Duration) {
			mu.Lock()
			attempts = append(attempts, a)
			mu.Unlock()
			return true, time.Duration(a) * 3 * time.Second
		})
		for i, got := range delaysFor(t, custom, network, 4) {
			if want := time.Duration(i+1) * 3 * time.Second; got != want {
				t.Fatalf("attempt %d waited %v, want %v", i+1, got, want)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(attempts[:4]) != "[1 2 3 4]" {
			t.Fatalf("policy asked with attempts %v", attempts)
		}
	})
	t.Run("throttling schedule", func(t *testing.T) {
		throttled := &transport.Error{Kind: transport.KindThrottled, Op: "connect"}
		for i, got := range delaysFor(t, retry.DefaultExponential(), throttled, 6) {
			if want := throttleDelayRange(i + 1); got < want[0] || got > want[1] {
				t.Fatalf("throttled attempt %d waited %v, want %v", i+1, got, want)
			}
		}
		after := &transport.Error{Kind: transport.KindThrottled, Op: "connect", RetryAfter: 17 * time.Second}
		for _, got := range delaysFor(t, retry.DefaultExponential(), after, 3) {
			if got != 17*time.Second {
				t.Fatalf("waited %v; the server's retry-after of 17s must win", got)
			}
		}
	})
}

// nextTimer returns the duration of the next timer the engine creates.
func nextTimer(t *testing.T, fake *clock.Fake) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	d, err := fake.NextTimer(ctx)
	if err != nil {
		t.Fatal("no timer:", err)
	}
	return d
}

// The no-network guard spaces only dials that failed fast. After a healthy link drops, the first retry is the
// policy's (issue 11: kill-tcp waited the guard's 1 s where the default policy says 100 ms); so is the retry
// after a dial that took longer than the guard's floor.
func TestGuardOnlyAfterADialThatFailedFast(t *testing.T) {
	firstLo, firstHi := 100*time.Millisecond, 180*time.Millisecond // the default policy's first delay
	t.Run("lost link", func(t *testing.T) {
		for range 5 {
			fake := clock.NewFake(time.Unix(1700000000, 0))
			d := newFakeDialer()
			c, r := newTestClient(t, d, Options{Clock: fake})
			if err := connect(t, c); err != nil {
				t.Fatal(err)
			}
			r.expectStates(t, connected)
			nextTimer(t, fake) // the token's renewal
			d.conn(0).kill(transport.KindProtocol)
			if got := nextTimer(t, fake); got < firstLo || got > firstHi {
				t.Fatalf("the first retry after a lost link waits %v, want the policy's [%v, %v]", got, firstLo, firstHi)
			}
			fake.Advance(firstHi)
			r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError}, connected)
		}
	})
	t.Run("slow dial failure", func(t *testing.T) {
		fake := clock.NewFake(time.Unix(1700000000, 0))
		d := newFakeDialer()
		d.fallback = &transport.Error{Kind: transport.KindTimeout, Op: "connect"}
		d.during = func() { fake.Advance(retry.MinAttemptSpacing) }
		c, _ := newTestClient(t, d, Options{Clock: fake, OperationTimeout: time.Hour})
		go connect(t, c)
		if got := nextTimer(t, fake); got < firstLo || got > firstHi {
			t.Fatalf("after a dial that failed in %v the retry waits %v, want the policy's [%v, %v]",
				retry.MinAttemptSpacing, got, firstLo, firstHi)
		}
	})
}

// defaultDelayRange is the default policy's delay before retry attempt n (JitterDefault: 100 ms, 10 s, 100 ms).
func defaultDelayRange(n int) (lo, hi time.Duration) {
	lo, hi, _ = retrytest.DefaultRange(n, 100*time.Millisecond, 10*time.Second, 100*time.Millisecond)
	return lo, hi
}

// throttleDelayRange is the throttling schedule's delay before the n-th throttled retry in a row.
func throttleDelayRange(n int) [2]time.Duration {
	lo, hi, _ := retrytest.DefaultRange(n, 10*time.Second, time.Minute, 5*time.Second)
	return [2]time.Duration{lo, hi}
}

// The back-off starts over only after a link stayed up BackoffResetAfter (issue 11: it reset on every connect, so
// a hub that accepts and drops at once was retried at the first delay for ever).
func TestBackoffResetsOnlyAfterTheLinkStayedUp(t *testing.T) {
	// up runs the client's link for uptime, cuts it and returns the retry's delay after the wait elapsed and the
	// next link came up.
	up := func(t *testing.T, fake *clock.Fake, d *fakeDialer, r *recorder, link int, uptime time.Duration) time.Duration {
		t.Helper()
		nextTimer(t, fake) // the link's token renewal
		fake.Advance(uptime)
		d.conn(link).kill(transport.KindProtocol)
		delay := nextTimer(t, fake)
		fake.Advance(delay)
		r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError}, connected)
		return delay
	}
	expect := func(t *testing.T, what string, delay time.Duration, attempt int) {
		t.Helper()
		if lo, hi := defaultDelayRange(attempt); delay < lo || delay > hi {
			t.Fatalf("%s: waited %v, want attempt %d's [%v, %v]", what, delay, attempt, lo, hi)
		}
	}
	start := func(t *testing.T, opts Options) (*clock.Fake, *fakeDialer, *recorder) {
		fake := clock.NewFake(time.Unix(1700000000, 0))
		opts.Clock = fake
		d := newFakeDialer()
		c, r := newTestClient(t, d, opts)
		if err := connect(t, c); err != nil {
			t.Fatal(err)
		}
		r.expectStates(t, connected)
		return fake, d, r
	}
	t.Run("default 30 s", func(t *testing.T) {
		fake, d, r := start(t, Options{})
		expect(t, "the first loss", up(t, fake, d, r, 0, time.Minute), 1)
		expect(t, "a loss 29 s after reconnecting", up(t, fake, d, r, 1, 29*time.Second), 2)
		expect(t, "the next loss 1 s later", up(t, fake, d, r, 2, time.Second), 3)
		expect(t, "a loss 30 s after reconnecting", up(t, fake, d, r, 3, 30*time.Second), 1)
	})
	t.Run("configured", func(t *testing.T) {
		fake, d, r := start(t, Options{BackoffResetAfter: 5 * time.Minute})
		expect(t, "the first loss", up(t, fake, d, r, 0, time.Second), 1)
		expect(t, "a loss 4 min after reconnecting", up(t, fake, d, r, 1, 4*time.Minute), 2)
		expect(t, "a loss 5 min after reconnecting", up(t, fake, d, r, 2, 5*time.Minute), 1)
	})
	// A hub that accepts and drops every connection at once: the delays grow to the policy's cap, so the attempts
	// per minute are bounded by the cap (at most 60 / 4 s), not by the first delay or the guard.
	t.Run("accepted and dropped at once", func(t *testing.T) {
		fake, d, r := start(t, Options{})
		for link := 0; link < 12; link++ {
			expect(t, fmt.Sprintf("loss %d", link+1), up(t, fake, d, r, link, 0), link+1)
		}
	})
}

// CONNACK 3 "server unavailable" from a device that connected before with the same credentials is taken for
// throttling (IoT Hub may answer a throttled connect so; it also answers a disabled device so): the slower
// schedule, not a fatal Device_Disabled. TestFatalKindsStopAtOnceAndFailPending has the device that never did.
func TestServerUnavailableAfterAConnectIsThrottling(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 0))
	unavailable := &transport.Error{Kind: transport.KindServerUnavailable, Op: "connect"}
	d := newFakeDialer(nil, unavailable, unavailable)
	c, r := newTestClient(t, d, Options{Clock: fake})
	logs := make(chan string, 100)
	h := r.handlers()
	h.OnLog = func(_ LogLevel, msg string) { logs <- msg }
	c.SetHandlers(h)
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	nextTimer(t, fake) // the token's renewal
	d.conn(0).kill(transport.KindProtocol)
	fake.Advance(nextTimer(t, fake)) // the first retry: CONNACK 3
	for i, want := range [][2]time.Duration{throttleDelayRange(1), throttleDelayRange(2)} {
		got := nextTimer(t, fake)
		if got < want[0] || got > want[1] {
			t.Fatalf("throttled retry %d waits %v, want the throttling schedule's [%v, %v]", i+1, got, want[0], want[1])
		}
		fake.Advance(got)
	}
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError}, connected)
	for deadline := time.After(waitLimit); ; {
		select {
		case msg := <-logs:
			if strings.Contains(msg, "taken for throttling") {
				return
			}
		case <-deadline:
			t.Fatal("no log line says the CONNACK 3 was taken for throttling")
		}
	}
}

// The throttling schedule counts the throttled attempts in a row: a device throttled after an outage starts it at
// its first step, not at the step of its overall attempt count.
func TestThrottleScheduleCountsThrottledAttemptsInARow(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 0))
	network := &transport.Error{Kind: transport.KindNetwork, Op: "connect"}
	throttled := &transport.Error{Kind: transport.KindThrottled, Op: "connect"}
	d := newFakeDialer(network, network, network, throttled, throttled, network, throttled)
	c, _ := newTestClient(t, d, Options{Clock: fake, OperationTimeout: time.Hour})
	res := make(chan error, 1)
	go func() { res <- connect(t, c) }()
	delays := advanceTimers(t, fake, 7)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	for i, want := range map[int][2]time.Duration{
		3: throttleDelayRange(1), 4: throttleDelayRange(2), 6: throttleDelayRange(1),
	} {
		if got := delays[i]; got < want[0] || got > want[1] {
			t.Fatalf("attempt %d (throttled) waited %v, want [%v, %v]; all delays %v", i+1, got, want[0], want[1], delays)
		}
	}
}

func TestPollModeRunsHandlersAndCustomPolicyOnTheCaller(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 0))
	d := newFakeDialer(&transport.Error{Kind: transport.KindNetwork, Op: "connect"})
	caller := goroutineID()
	var onWrongThread []string
	var asked int
	policy := retry.Custom(func(a int, err error) (bool, time.Duration) {
		asked++
		if goroutineID() != caller {
			onWrongThread = append(onWrongThread, "policy")
		}
		return true, 5 * time.Second
	})
	c, err := newClient(testConnStr(), Options{Dispatch: DispatchPoll, RetryPolicy: policy, Clock: fake}, d)
	if err != nil {
		t.Fatal(err)
	}
	var seen []state
	c.SetHandlers(Handlers{OnStatus: func(s ConnectionStatus, r ConnectionStatusChangeReason) {
		if goroutineID() != caller {
			onWrongThread = append(onWrongThread, "status")
		}
		seen = append(seen, state{s, r})
	}})
	res := make(chan error, 1)
	go func() { res <- connect(t, c) }()
	for asked == 0 { // the policy question waits in the queue until this goroutine polls
		if _, err := c.Poll(waitLimit); err != nil {
			t.Fatal(err)
		}
	}
	// The loop has the answer once it is retrying; until then its timer is the Connect's deadline.
	waitFor(t, func() bool { s, _ := c.Status(); return s == StatusDisconnectedRetrying })
	advanceTimers(t, fake, 1)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	c.Close()
	for {
		_, err := c.Poll(waitLimit)
		if codeOf(err) == CodeClosed {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	want := []state{{StatusDisconnectedRetrying, ReasonNoNetwork}, connected, disabled}
	if fmt.Sprint(seen) != fmt.Sprint(want) || len(onWrongThread) > 0 {
		t.Fatalf("saw %v (want %v); ran off the polling goroutine: %v", seen, want, onWrongThread)
	}
	thread, _ := newTestClient(t, newFakeDialer(), Options{})
	if _, err := thread.Poll(0); codeOf(err) != CodeState {
		t.Fatalf("Poll in thread mode: %v", err)
	}
}

func TestConnectTimesOutWhilePollModePolicyIsUnanswered(t *testing.T) {
	d := newFakeDialer()
	d.fallback = &transport.Error{Kind: transport.KindNetwork, Op: "connect"}
	policy := retry.Custom(func(int, error) (bool, time.Duration) { return true, time.Millisecond })
	c, _ := newTestClient(t, d, Options{Dispatch: DispatchPoll, RetryPolicy: policy})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- c.Connect(ctx) }() // nobody polls, so the policy is never answered
	select {
	case err := <-res:
		if codeOf(err) != CodeTimeout {
			t.Fatalf("connect: %v, want a timeout", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("connect ignored its deadline while the policy question waited for Poll")
	}
	if s, why := c.Status(); s != StatusDisconnected || why != ReasonRetryExpired {
		t.Fatalf("status %v/%v, want Disconnected/Retry_Expired", s, why)
	}
}

func TestCloseFromInsideStatusHandler(t *testing.T) {
	c, err := newClient(testConnStr(), Options{}, newFakeDialer())
	if err != nil {
		t.Fatal(err)
	}
	returned := make(chan struct{})
	states := make(chan state, 10)
	c.SetHandlers(Handlers{OnStatus: func(s ConnectionStatus, r ConnectionStatusChangeReason) {
		states <- state{s, r}
		if s == StatusConnected {
			c.Close()
			close(returned)
		}
	}})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
	case <-time.After(waitLimit):
		t.Fatal("Close called from the status handler did not return")
	}
	if got := <-states; got != connected {
		t.Fatalf("first %v", got)
	}
	select {
	case got := <-states:
		if got != disabled {
			t.Fatalf("final %v", got)
		}
	case <-time.After(waitLimit):
		t.Fatal("no Disabled event after Close from a handler")
	}
	closeAndWait(c) // from outside: the dispatcher ends
}

func TestSendValidationAndQueueLimits(t *testing.T) {
	c, r := newTestClient(t, newFakeDialer(), Options{QueueMaxMessages: 2, QueueMaxBytes: 10})
	if _, err := c.Send(nil); codeOf(err) != CodeInvalidArgument {
		t.Fatalf("nil: %v", err)
	}
	if _, err := c.Send(&Message{Payload: make([]byte, iothub.MaxMessageSize+1)}); codeOf(err) != CodeTooLarge {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := c.Send(&Message{Payload: []byte("x"), Properties: []Property{{"", "v"}}}); codeOf(err) != CodeInvalidArgument {
		t.Fatalf("empty property key: %v", err)
	}
	if _, err := c.Send(&Message{Payload: make([]byte, 11)}); codeOf(err) != CodeQueueFull {
		t.Fatalf("over the byte limit: %v", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := c.Send(&Message{Payload: []byte("abc")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Send(&Message{Payload: []byte("abc")}); codeOf(err) != CodeQueueFull {
		t.Fatalf("over the count limit: %v", err)
	}
	c.Close()
	for _, comp := range r.expectCompletions(t, 2) {
		if comp.result != SendFailed || comp.code != CodeClosed {
			t.Fatalf("completion after Close %+v", comp)
		}
	}
}

func TestUndeliveredMessagesExpire(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 0))
	c, r := newTestClient(t, newFakeDialer(), Options{Clock: fake, OperationTimeout: time.Minute})
	if _, err := c.Send(&Message{Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	advanceTimers(t, fake, 1)
	if comp := r.expectCompletions(t, 1)[0]; comp.result != SendExpired || comp.code != CodeTimeout {
		t.Fatalf("%+v", comp)
	}
}

func TestOptionsValidation(t *testing.T) {
	for name, o := range map[string]Options{
		"pool on mqtt":  {AMQPPool: 5},
		"negative pool": {Transport: TransportAMQP, AMQPPool: -1},
		"transport":     {Transport: 9},
		"dispatch":      {Dispatch: 5},
		"negative":      {KeepAlive: -1},
		"margin":        {SASLifetime: time.Minute, SASRenewMargin: time.Minute},
		"queue":         {QueueMaxMessages: -1},
		"reset after":   {BackoffResetAfter: -time.Second},
		"ca file":       {CAFile: "/nonexistent/ca.pem"},
		"ca pem":        {CAPEM: []byte("not pem")},
		"client cert":   {CertFile: "c.pem", KeyFile: "k.pem"},
	} {
		if _, err := newClient(testConnStr(), o, newFakeDialer()); codeOf(err) != CodeInvalidArgument {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := NewClient("HostName=;DeviceId=", Options{}); codeOf(err) != CodeInvalidArgument {
		t.Errorf("bad connection string: %v", err)
	}
	c, err := newClient(testConnStr(), Options{KeepAlive: time.Hour}, newFakeDialer())
	if err != nil {
		t.Fatal(err)
	}
	defer closeAndWait(c)
	if c.opts.KeepAlive != MaxKeepAlive {
		t.Fatalf("keep-alive %v not capped", c.opts.KeepAlive)
	}
}

func TestRenewalReconnectsWithoutLosingMessages(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 0)) // whole seconds, as SAS expiries are
	d := newFakeDialer()
	d.manual = true
	c, r := newTestClient(t, d, Options{Clock: fake, SASLifetime: time.Hour, SASRenewMargin: 6 * time.Minute, OperationTimeout: 2 * time.Hour})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if renewIn, err := fake.NextTimer(ctx); err != nil || renewIn != 54*time.Minute {
		t.Fatalf("renewal timer %v, %v; want 54m", renewIn, err)
	}
	if _, err := c.Send(&Message{Payload: []byte("during renewal")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(d.conn(0).sentIDs()) == 1 })
	fake.Advance(54 * time.Minute)
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonExpiredSASToken}, connected)
	second := d.conn(1)
	waitFor(t, func() bool { return len(second.sentIDs()) == 1 })
	second.ackAll()
	if comp := r.expectCompletions(t, 1)[0]; comp.result != SendDelivered {
		t.Fatalf("%+v", comp)
	}
	tok, err := iothub.ParseSAS(second.params.Token)
	if err != nil || !tok.Expiry.After(fake.Now().Add(59*time.Minute)) {
		t.Fatalf("second link's token %v, %v is not fresh", tok, err)
	}
}

func TestUserTokenThatCannotBeRenewedEndsExpired(t *testing.T) {
	fake := clock.NewFake(time.Now())
	token, err := iothub.BuildSAS("localhost:18883/devices/dev1", testKey, "", fake.Now().Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	c, err := newClient("HostName=localhost:18883;DeviceId=dev1;SharedAccessSignature="+token, Options{Clock: fake}, newFakeDialer())
	if err != nil {
		t.Fatal(err)
	}
	defer closeAndWait(c)
	r := newRecorder()
	c.SetHandlers(r.handlers())
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	advanceTimers(t, fake, 1)
	r.expectStates(t, connected, state{StatusDisconnected, ReasonExpiredSASToken})
}
