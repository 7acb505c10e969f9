package core

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/iotconn/iotconn/core/auth"
	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/internal/notify"
	"github.com/iotconn/iotconn/core/internal/outbox"
	"github.com/iotconn/iotconn/core/internal/reqresp"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/store"
	"github.com/iotconn/iotconn/core/transport"
)

// dialTimeout bounds one connection attempt; the retry policy decides about the next.
const dialTimeout = 30 * time.Second

type connectRequest struct {
	ctx    context.Context
	result chan error // capacity 1
}

// connectWaiters are the Connect calls waiting for a link. The first one's context and the operation timeout
// counted from it bound the attempts made while anyone waits.
type connectWaiters struct {
	reqs     []*connectRequest
	deadline time.Time
}

func (w *connectWaiters) add(req *connectRequest, now time.Time, timeout time.Duration) {
	if len(w.reqs) == 0 {
		w.deadline = now.Add(timeout)
	}
	w.reqs = append(w.reqs, req)
}

func (w *connectWaiters) waiting() bool { return len(w.reqs) > 0 }

// ctxDone is the first waiter's cancellation, nil when nobody waits.
func (w *connectWaiters) ctxDone() <-chan struct{} {
	if len(w.reqs) == 0 {
		return nil
	}
	return w.reqs[0].ctx.Done()
}

func (w *connectWaiters) expired(now time.Time) bool {
	return len(w.reqs) > 0 && (w.reqs[0].ctx.Err() != nil || !now.Before(w.deadline))
}

func (w *connectWaiters) answer(err error) {
	for _, r := range w.reqs {
		r.result <- err
	}
	w.reqs = nil
}

type lostLink struct {
	gen uint64
	err error
}

// linkHandler receives what one connection reports; gen tells a stale connection's reports from the live one's.
type linkHandler struct {
	c   *Client
	gen uint64
}

func (h linkHandler) OnMessage(m *transport.Message) {
	msg := &Message{
		Payload: m.Payload, MessageID: m.MessageID, CorrelationID: m.CorrelationID,
		ContentType: m.ContentType, ContentEncoding: m.ContentEncoding,
	}
	for _, p := range m.Properties {
		msg.Properties = append(msg.Properties, Property{Key: p[0], Value: p[1]})
	}
	h.c.events.push(event{kind: evMessage, msg: msg, ack: m.Ack})
}

// OnInbound takes the hub's twin answers; what no feature of this client asked for is dropped, and said so.
func (h linkHandler) OnInbound(in *transport.Inbound) {
	switch in.Kind {
	case transport.InboundTwinResponse:
		h.c.answered(in.RID, reqresp.Response{Status: in.Status, Payload: in.Payload, Version: in.Version})
	case transport.InboundDesired:
		h.c.desiredPatch(in.Version, in.Payload)
	case transport.InboundMethod:
		h.c.methodCalled(h.gen, in.RID, in.Method, in.Payload)
	default:
		h.c.logf(LogWarn, "dropped an unrequested inbound of kind %d (request id %q)", in.Kind, in.RID)
	}
}

func (h linkHandler) OnConnectionLost(err *transport.Error) {
	lost := lostLink{gen: h.gen, err: errors.New("connection lost")}
	if err != nil {
		lost.err = err
	}
	select {
	case h.c.lost <- lost:
	case <-h.c.stop:
	}
}

// phase is what the supervisor is doing. With loopState's live link and timers it is the engine's whole
// internal state; the application sees only the status machine (machine.go), which phases move.
type phase int

const (
	phaseIdle       phase = iota // no link and no attempt: before the first Connect
	phaseDialing                 // an attempt in progress (the loop is inside dial)
	phaseConnected               // a live link
	phaseBackingOff              // an attempt failed; the retry timer starts the next
	phaseAsking                  // an attempt failed; the application's retry policy answers inside Poll
	phaseGaveUp                  // a fatal error, the policy or a Connect's deadline ended the attempts
	phaseClosed                  // Close: the loop has ended
)

// Which events each phase acts on (all phases keep the queue's and the requests' deadlines and take Close):
//
//	idle, gave up   Connect: dial at once
//	connected       Connect: answered at once; a queue kick: send; the link's loss or a renewal: dial again;
//	                the twin GET after connecting failed: ask again after the throttling schedule's delay
//	backing off     the retry timer: dial; Connect: wait with the others, bounded by the first one's deadline
//	asking          the policy's answer: back off or give up; Connect: as backing off
//
// A Connect waiting in backing off or asking gives up at its deadline or its context's end.

// loopState is owned by the loop goroutine: the phase, the live connection, the attempts and every timer.
type loopState struct {
	phase     phase
	conn      transport.Conn
	gen       uint64
	expiry    clock.Timer // fires at the earliest send deadline
	expiryAt  time.Time   // that deadline
	requests  clock.Timer // fires at the earliest deadline of an outstanding request
	requestAt time.Time   // that deadline
	resync    clock.Timer // fires when the GET after connecting that failed is asked again
	syncFails int         // failed GETs after connecting, in a row, on the live link
	renew     clock.Timer // fires when the token must be renewed (or, if it cannot be, when it expires)
	tokenExp  time.Time
	issuedAt  time.Time // when the engine made the live token
	renewable bool
	waiters   connectWaiters
	deadline  clock.Timer // the first waiting Connect's deadline, while not connected

	attempts     int       // failed attempts since a link last stayed up BackoffResetAfter (or since Connect)
	throttled    int       // throttling or quota failures in a row: the throttling schedule's attempt
	knownGood    bool      // a link came up with this client's credentials: the hub knows and accepts the device
	hubGoneSince time.Time // the first "hub not found" since the last link came up; zero when none
	connectedAt  time.Time // when the live link came up
	attemptStart time.Time // when the last dial began; zero after a lost link, whose retry the guard leaves alone
	admitted     bool      // the next attempt's token in Options.Admission is reserved: the retry timer is its wait
	failed       failure   // the last failure, while backing off or asking
	retry        clock.Timer
	retryAt      time.Time         // when retry fires
	answer       chan retryAnswer  // the custom policy's answer, while asking
	features     transport.Feature // the live link's subscriptions
}

// failure is a failed attempt as the policy and the status machine see it.
type failure struct {
	err  *Error
	kind transport.Kind
	cls  classification
	// moved: a hub that knew the device refused it, and the next attempt registers with DPS (provisioned.go). That
	// answer is final, not a hub still coming back, so the registration follows at the policy's delay: the device
	// keeps the place in the fleet's window that its first retry drew, instead of waiting the window again.
	moved bool
}

func timerC(t clock.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C()
}

func stopTimer(t *clock.Timer) {
	if *t != nil {
		(*t).Stop()
		*t = nil
	}
}

// loop is the client's one supervisor goroutine: it owns the link and every timer, so the status machine
// changes from one place only, and every event it handles comes through this one select.
func (c *Client) loop() {
	var ls loopState
	defer close(c.loopDone)
	defer c.shutdown(&ls)
	for {
		select {
		case <-c.stop:
			return
		case req := <-c.connectReqs:
			c.connectRequested(&ls, req)
		case <-c.kick:
			c.flush()
			c.armExpiry(&ls)
			c.armRequests(&ls)
		case <-timerC(ls.expiry):
			c.expire(&ls)
		case <-timerC(ls.requests):
			ls.requests = nil
			c.finishAll(c.reqs.Expire(c.clk.Now()))
			c.armRequests(&ls)
		case <-c.resync:
			if ls.phase == phaseConnected && ls.resync == nil {
				ls.syncFails++
				ls.resync = c.clk.NewTimer(retry.ThrottleDelay(ls.syncFails))
			}
		case <-timerC(ls.resync):
			ls.resync = nil
			c.startSync(ls.features)
			c.flush()
			c.armRequests(&ls)
		case l := <-c.lost:
			if ls.phase == phaseConnected && l.gen == ls.gen {
				c.linkEnded(&ls, l.err)
			}
		case <-timerC(ls.renew):
			ls.renew = nil
			if err := c.renewToken(&ls); err != nil {
				c.linkEnded(&ls, err)
			}
		case <-timerC(ls.retry):
			ls.retry = nil
			c.attempt(&ls)
		case a := <-ls.answer:
			ls.answer = nil
			c.policyAnswered(&ls, a)
		case <-ls.waiters.ctxDone():
			c.giveUp(&ls, ReasonRetryExpired, ls.waiters.connectTimedOut(ls.failed.err.Err))
		case <-timerC(ls.deadline):
			ls.deadline = nil
			c.giveUp(&ls, ReasonRetryExpired, ls.waiters.connectTimedOut(ls.failed.err.Err))
		}
	}
}

// connectRequested handles a Connect call.
func (c *Client) connectRequested(ls *loopState, req *connectRequest) {
	switch ls.phase {
	case phaseConnected:
		req.result <- nil
	case phaseIdle, phaseGaveUp:
		ls.waiters.add(req, c.clk.Now(), c.opts.OperationTimeout)
		ls.attempts = 0 // the policy counts from the first failure of this Connect
		c.attempt(ls)
	default:
		ls.waiters.add(req, c.clk.Now(), c.opts.OperationTimeout)
		c.armDeadline(ls)
	}
}

// armDeadline sets the timer of the first waiting Connect's deadline when it comes before the retry timer (or
// while asking, which has no end of its own); after the retry timer, the next attempt's dial is bounded by it.
func (c *Client) armDeadline(ls *loopState) {
	if ls.deadline != nil || !ls.waiters.waiting() {
		return
	}
	if ls.phase == phaseAsking || ls.waiters.deadline.Before(ls.retryAt) {
		ls.deadline = c.clk.NewTimer(ls.waiters.deadline.Sub(c.clk.Now()))
	}
}

// attempt dials once, after its turn in the process's connect budget (Options.Admission), if any; the link comes
// up or the failure goes to the policy.
func (c *Client) attempt(ls *loopState) {
	if wait := c.admissionWait(ls); wait > 0 {
		ls.phase, ls.retry, ls.retryAt = phaseBackingOff, c.clk.NewTimer(wait), c.clk.Now().Add(wait)
		stopTimer(&ls.deadline)
		c.armDeadline(ls)
		return
	}
	ls.phase, ls.attemptStart = phaseDialing, c.clk.Now()
	if err := c.provision(ls); err != nil {
		c.attemptFailed(ls, err)
		return
	}
	if err := c.dial(ls); err != nil {
		c.attemptFailed(ls, err)
		return
	}
	ls.phase, ls.connectedAt, ls.knownGood, ls.throttled = phaseConnected, c.clk.Now(), true, 0
	ls.hubGoneSince = time.Time{}
	if c.prov != nil {
		c.prov.connected()
	}
	stopTimer(&ls.deadline)
	c.transition(StatusConnected, ReasonConnectionOk)
	ls.waiters.answer(nil)
	c.setLive(ls.conn, ls.gen)
	ls.syncFails = 0
	c.startSync(ls.features)
	c.flush()
	c.armExpiry(ls) // messages recovered from disk have no timer before the first connect or send
	c.armRequests(ls)
}

// admissionWait reserves this attempt's token in the connect budget and says how long to wait for it; 0 when
// there is no budget, a token is free, or the token was reserved before the wait that just ended.
func (c *Client) admissionWait(ls *loopState) time.Duration {
	a := c.opts.Admission
	if a == nil || ls.admitted {
		ls.admitted = false
		return 0
	}
	wait := a.reserve(c.clk.Now())
	ls.admitted = wait > 0
	return wait
}

// linkEnded handles the end of the live link: a renewal dials again at once, anything else is a failure. The
// back-off starts over only after a link that stayed up BackoffResetAfter: one that a hub accepts and drops at
// once is one more failed attempt, so the policy's delays keep growing.
func (c *Client) linkEnded(ls *loopState, err error) {
	c.dropConn(ls, errLinkLost)
	if c.prov != nil {
		c.prov.linkLost(c.clk.Now())
	}
	if c.clk.Now().Sub(ls.connectedAt) >= c.opts.BackoffResetAfter {
		ls.attempts = 0
	}
	if errors.Is(err, errRenewal) {
		c.transition(StatusDisconnectedRetrying, ReasonExpiredSASToken)
		c.attempt(ls) // a fresh token, at once: a renewal is not a failure
		return
	}
	ls.attemptStart = time.Time{} // no dial failed: the link was up, so the network was there
	c.attemptFailed(ls, err)
}

// attemptFailed gives up on a fatal error or a Connect past its deadline, and otherwise asks the retry policy:
// the application's own inside Poll in poll mode (the loop goes on meanwhile), any other at once.
func (c *Client) attemptFailed(ls *loopState, err error) {
	if errors.Is(err, auth.ErrTokenExpired) {
		c.giveUp(ls, ReasonExpiredSASToken, &Error{Code: CodeAuth, Msg: err.Error(), Err: err})
		return
	}
	wire := transport.KindOf(err)
	kind := resolve(wire, ls.knownGood)
	msg := err.Error()
	if wire == transport.KindHubNotFound && kind != wire {
		if ls.hubGoneSince.IsZero() {
			ls.hubGoneSince = c.clk.Now()
		}
		if gone := c.clk.Now().Sub(ls.hubGoneSince); gone >= FailoverWindow {
			kind = wire
			msg += "; the hub has answered \"not found\" for " + gone.String() + ", longer than a failover takes"
		} else {
			msg += "; taken for a failover, as the device connected before"
		}
	}
	cls := classify(kind)
	if wire != kind && kind == transport.KindThrottled {
		msg += "; taken for throttling, as the device connected before with these credentials (IoT Hub answers " +
			"a disabled device the same way)"
	}
	moved := false
	if c.prov != nil && !isProvisionFailure(err) {
		if why := c.prov.hubFailed(kind, !ls.attemptStart.IsZero(), c.clk.Now()); why != "" {
			if cls.fatal { // the hub's refusal: fatal for a hub of its own, for a provisioned device a move
				cls, moved = classification{false, ReasonCommunicationError, cls.code}, true
			}
			c.logf(LogWarn, "provisioning: %s; the next attempt registers with DPS again", why)
		}
	}
	if kind == transport.KindAuth && c.ident().cs.X509 {
		if at, err := auth.CertificateNotAfter(c.opts.CertFile); err == nil && c.clk.Now().After(at) {
			msg += "; the client certificate " + c.opts.CertFile + " expired at " + at.UTC().Format(time.RFC3339)
		}
	}
	ls.failed = failure{err: &Error{Code: cls.code, Msg: msg, Err: err}, kind: kind, cls: cls, moved: moved}
	if kind == transport.KindThrottled || kind == transport.KindQuota {
		ls.throttled++
	} else {
		ls.throttled = 0
	}
	switch {
	case cls.fatal:
		c.giveUp(ls, cls.reason, ls.failed.err)
		return
	case ls.waiters.expired(c.clk.Now()):
		c.giveUp(ls, ReasonRetryExpired, ls.waiters.connectTimedOut(err))
		return
	}
	ls.attempts++
	p := c.currentPolicy()
	if !builtinPolicy(p) && c.opts.Dispatch == DispatchPoll {
		q := &retryQuestion{policy: p, attempt: ls.attempts, lastErr: ls.failed.err, answer: make(chan retryAnswer, 1)}
		c.events.push(event{kind: evRetryQuestion, question: q})
		ls.phase, ls.answer = phaseAsking, q.answer // a late answer, after a give-up, stays in the buffer unread
		stopTimer(&ls.deadline)
		c.armDeadline(ls)
		return
	}
	again, delay := p.ShouldRetry(ls.attempts, ls.failed.err)
	c.policyAnswered(ls, retryAnswer{again, delay})
}

func builtinPolicy(p retry.Policy) bool {
	switch p.(type) {
	case *retry.Exponential, retry.NoRetry:
		return true
	}
	return false
}

// policyAnswered backs off as the policy said, or gives up. Built-in policies wait the slower throttling
// schedule after throttling and quota errors, counted over the throttled attempts in a row (a device throttled
// after an outage starts it at its first step); a server's retry-after wins over any policy's delay. A dial that
// failed fast (no network) is spaced by the CPU guard; the first retry after a lost link is the policy's own.
func (c *Client) policyAnswered(ls *loopState, a retryAnswer) {
	f := ls.failed
	if !a.retry {
		c.giveUp(ls, ReasonRetryExpired, &Error{Code: CodeRetryExpired, Msg: "retry policy gave up after " +
			strconv.Itoa(ls.attempts) + " failures; last error: " + f.err.Msg, Err: f.err.Err})
		return
	}
	delay := max(a.delay, 0) // a custom policy may answer a negative delay
	var te *transport.Error
	serverAsked := errors.As(f.err, &te) && te.RetryAfter > 0
	dpsAsked := serverAsked && te.Op == opProvision
	throttling := false
	switch {
	case serverAsked && !dpsAsked:
		delay = te.RetryAfter
	case builtinPolicy(c.currentPolicy()) && (f.kind == transport.KindThrottled || f.kind == transport.KindQuota):
		delay, throttling = retry.ThrottleDelay(ls.throttled), true
	}
	if dpsAsked {
		// DPS answers every registration over its quota with the seconds until its next admission, the same
		// short wait for a whole fleet: a floor under the engine's own random, spread wait, never the wait itself
		// (measured, bench/provision: 1 000 devices retrying at DPS's retry-after asked it 10 000 times).
		delay = max(delay, retry.Jittered(te.RetryAfter))
	}
	if !ls.attemptStart.IsZero() {
		delay = retry.Spaced(c.clk.Now().Sub(ls.attemptStart), delay)
	}
	// Under the fleet hint, a device the hub refused for throttling once it had its place in the window is where
	// the hub admits now: the throttling schedule alone brings it back; a window more would send it behind the
	// whole fleet (bench/fleet: 2.20 x N/R to be all back instead of 1.7).
	if (!serverAsked || dpsAsked) && !f.moved && !(throttling && ls.attempts > 1) {
		delay = retry.Spread(c.opts.ReconnectSpread, delay, ls.attempts == 1)
	}
	ls.phase, ls.retry, ls.retryAt = phaseBackingOff, c.clk.NewTimer(delay), c.clk.Now().Add(delay)
	stopTimer(&ls.deadline) // each wait arms its own, if the deadline comes first
	c.armDeadline(ls)
	// The status last: whoever sees it (a test moving a fake clock) finds the timers of this wait, and not the
	// asking phase's deadline, which would end the Connect.
	c.transition(StatusDisconnectedRetrying, f.cls.reason)
	c.logf(LogWarn, "attempt %d failed (%v); next in %v", ls.attempts, f.err.Msg, delay)
}

// connectTimedOut is how a Connect ends when its deadline passed or its caller cancelled it.
func (w *connectWaiters) connectTimedOut(last error) *Error {
	if len(w.reqs) > 0 && errors.Is(w.reqs[0].ctx.Err(), context.Canceled) {
		return &Error{Code: CodeCanceled, Msg: "connect cancelled; last error: " + last.Error(), Err: last}
	}
	return &Error{Code: CodeTimeout, Msg: "connect timed out; last error: " + last.Error(), Err: last}
}

// dial makes one connection attempt with a fresh token. Close aborts it.
func (c *Client) dial(ls *loopState) error {
	now := c.clk.Now()
	id := c.ident()
	token, exp, err := id.cred.Token(now)
	if err != nil {
		return err
	}
	ctx, cancel := c.attemptContext(ls, dialTimeout)
	defer cancel()
	ls.gen++
	features := c.features()
	conn, err := c.dialer.Dial(ctx, transport.DialParams{
		Host: id.cs.ConnectHost(), HubHost: id.cs.HostName, DeviceID: id.cs.DeviceID, ModuleID: id.cs.ModuleID,
		Token: token, TLS: id.tls, KeepAlive: c.opts.KeepAlive, WebSocket: protocols[c.opts.Transport].websocket,
		Features: features,
		Handler:  linkHandler{c: c, gen: ls.gen},
	})
	if err != nil {
		return err
	}
	ls.features = features
	ls.conn, ls.tokenExp, ls.issuedAt, ls.renewable = conn, exp, now, id.cred.Renewable()
	c.armRenew(ls)
	return nil
}

var errRenewal = errors.New("token renewal needs a new connection")

// renewToken hands a fresh token to the live link, or reports that the link must be replaced.
func (c *Client) renewToken(ls *loopState) error {
	if !ls.renewable {
		return auth.ErrTokenExpired
	}
	now := c.clk.Now()
	token, exp, err := c.ident().cred.Token(now)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.stopCtx, dialTimeout)
	defer cancel()
	switch err := ls.conn.RenewToken(ctx, token); {
	case errors.Is(err, transport.ErrRenewNeedsReconnect):
		return errRenewal
	case err != nil:
		return err
	}
	ls.tokenExp, ls.issuedAt = exp, now
	c.armRenew(ls)
	c.logf(LogInfo, "SAS token renewed in place")
	return nil
}

// armRenew sets the renewal timer (lifetime - margin) after the live token was made, which also spaces renewals
// by at least that much whatever the clock reads and however long a dial took. A token that cannot be renewed
// gets a timer at its expiry instead, which then ends the link.
func (c *Client) armRenew(ls *loopState) {
	stopTimer(&ls.renew)
	if ls.tokenExp.IsZero() {
		return // X.509: nothing expires
	}
	at := ls.tokenExp
	if ls.renewable {
		at = ls.issuedAt.Add(c.opts.SASLifetime - c.opts.SASRenewMargin)
	}
	ls.renew = c.clk.NewTimer(at.Sub(c.clk.Now()))
}

// giveUp ends the attempts for good: Disconnected with reason, every pending message, patch and request failed
// with err, every waiting Connect answered with err. A later Connect starts again.
func (c *Client) giveUp(ls *loopState, reason ConnectionStatusChangeReason, err *Error) {
	c.dropConn(ls, errLinkLost)
	stopTimer(&ls.retry)
	stopTimer(&ls.deadline)
	ls.phase, ls.answer = phaseGaveUp, nil
	c.transition(StatusDisconnected, reason)
	c.logf(LogError, "%v", err)
	c.failAll(err)
	c.finishAll(c.reqs.FailAll(err))
	c.armRequests(ls)
	ls.waiters.answer(err)
}

// dropConn closes the live connection and puts its unacknowledged messages back at the head of the queue. One
// whose deadline passed while its acknowledgement could still come expires now, as in doubt. Its requests wait
// for the next link or fail with why, as their kind says (reqresp.LinkLost).
func (c *Client) dropConn(ls *loopState, why *Error) {
	stopTimer(&ls.renew)
	stopTimer(&ls.resync)
	if ls.conn == nil {
		return
	}
	c.setLive(nil, ls.gen)
	ls.conn.Close()
	ls.conn = nil
	c.expireAll(c.out.Requeue())
	c.armExpiry(ls)
	c.finishAll(c.reqs.LinkLost(why))
	c.armRequests(ls)
}

// flush hands every waiting request and every queued message and patch to the live link, if any, without waiting
// for acknowledgements or answers, in order (sendMu keeps concurrent flushes from interleaving): waiting requests
// first (a patch among them, sent again after a lost link, left the queue before anything still in it), then the
// queue in id order. A queued entry whose deadline passed expires instead: none is sent after its time-to-live.
// The loop calls it when a link comes up and when the queue changed; Send and the request calls call it too, so
// that they reach a live link without waking the loop. A patch it hands to the request layer wakes the loop,
// which arms the patch's deadline.
func (c *Client) flush() (linked bool) {
	c.sendMu.Lock()
	var due []*outbox.Entry
	patches := false
	conn := c.live
	if conn != nil {
		c.sendRequests(conn)
		var send []*outbox.Entry
		send, due = c.out.Ready()
		for _, e := range send {
			if e.Kind == store.KindReported {
				c.reqs.Add(patchRequest(e)) // never refused: Close ends the table after the last flush
				c.sendRequests(conn)
				patches = true
				continue
			}
			c.sendOne(conn, e)
		}
	}
	c.sendMu.Unlock()
	if patches {
		notify.Raise(c.kick)
	}
	c.expireAll(due)
	return conn != nil
}

// setLive publishes the live link of generation gen to flush, or that link gen ended (nil). Clearing it first
// lets dropConn requeue every message a concurrent flush handed to the old link.
func (c *Client) setLive(conn transport.Conn, gen uint64) {
	c.sendMu.Lock()
	c.live, c.liveGen = conn, gen
	if conn == nil {
		c.forgetMethodsLocked(gen)
	}
	c.releaseCallsLocked(gen, conn != nil)
	c.sendMu.Unlock()
}

func (c *Client) sendOne(conn transport.Conn, e *outbox.Entry) {
	conn.Send(&e.Wire, func(err error) {
		if err == nil {
			c.complete(e, SendDelivered, 0, nil)
		} // a failed send ends its link; the message goes out again on the next one, its deadline still bounds it
	})
}

// armExpiry sets the expiry timer to the earliest deadline among messages that may expire (see the outbox's
// rules). With a timer armed it changes it only when a sooner deadline came in.
func (c *Client) armExpiry(ls *loopState) {
	armed := time.Time{}
	if ls.expiry != nil {
		armed = ls.expiryAt
	}
	next, rescan := c.out.NextDeadline(armed)
	if !rescan {
		return
	}
	stopTimer(&ls.expiry)
	if !next.IsZero() {
		ls.expiry, ls.expiryAt = c.clk.NewTimer(next.Sub(c.clk.Now())), next
	}
}

// expire completes every message whose deadline passed with SendExpired, except those whose acknowledgement
// may still come.
func (c *Client) expire(ls *loopState) {
	ls.expiry = nil
	c.expireAll(c.out.Due())
	c.armExpiry(ls)
}

// expireAll completes due messages with SendExpired, in the order given. One that went out unacknowledged says
// that it may have arrived (CodeInDoubt).
func (c *Client) expireAll(due []*outbox.Entry) {
	for _, e := range due {
		err := Errorf(CodeTimeout, "not delivered within its time-to-live")
		if c.out.MayHaveArrived(e) {
			err = Errorf(CodeInDoubt, "its time-to-live passed after it was sent without an acknowledgement: "+
				"it may have reached the hub; not sent again")
		}
		c.complete(e, SendExpired, 0, err)
	}
}

// failAll completes every pending message with SendFailed and err, oldest first; the message of one that went
// out unacknowledged adds that it may have arrived.
func (c *Client) failAll(err *Error) {
	var inDoubt *Error
	for _, e := range c.out.TakeAll() {
		if !c.out.MayHaveArrived(e) {
			c.complete(e, SendFailed, 0, err)
			continue
		}
		if inDoubt == nil {
			inDoubt = &Error{Code: err.Code, Msg: err.Msg + "; it was sent without an acknowledgement and may have " +
				"reached the hub", Err: err.Err}
		}
		c.complete(e, SendFailed, 0, inDoubt)
	}
}

// shutdown is the loop's last act on Close.
func (c *Client) shutdown(ls *loopState) {
	closed := Errorf(CodeClosed, "client closed")
	c.dropConn(ls, closed)
	ls.phase = phaseClosed
	for _, t := range []*clock.Timer{&ls.expiry, &ls.retry, &ls.deadline, &ls.requests} {
		stopTimer(t)
	}
	c.failAll(c.closedError())
	c.finishAll(c.reqs.Close(closed))
	c.out.Shutdown()
	ls.waiters.answer(closed)
	c.transition(StatusDisabled, ReasonClientClose)
	c.events.finish()
}
