package core

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/iotconn/iotconn/core/auth"
	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/internal/outbox"
	"github.com/iotconn/iotconn/core/retry"
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
	h.c.events.push(event{kind: evMessage, msg: msg})
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

// loopState is owned by the loop goroutine: the live connection and the timers.
type loopState struct {
	conn      transport.Conn
	gen       uint64
	expiry    clock.Timer // fires at the earliest send deadline
	expiryAt  time.Time   // that deadline
	renew     clock.Timer // fires when the token must be renewed (or, if it cannot be, when it expires)
	tokenExp  time.Time
	issuedAt  time.Time // when the engine made the live token
	renewable bool
	waiters   connectWaiters
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
// changes from one place only.
func (c *Client) loop() {
	var ls loopState
	defer close(c.loopDone)
	defer c.shutdown(&ls)
	for {
		select {
		case <-c.stop:
			return
		case req := <-c.connectReqs:
			ls.waiters.add(req, c.clk.Now(), c.opts.OperationTimeout)
			if !c.link(&ls) {
				return
			}
		case <-c.kick:
			c.armExpiry(&ls)
		case <-timerC(ls.expiry):
			c.expire(&ls)
		}
	}
}

// link connects and keeps the link up until a fatal error or the retry policy ends it (true) or Close (false).
func (c *Client) link(ls *loopState) bool {
	attempt := 0
	for {
		attemptStart := c.clk.Now()
		err := c.dial(ls)
		if err == nil {
			attempt = 0
			c.transition(StatusConnected, ReasonConnectionOk)
			ls.waiters.answer(nil)
			c.flush(ls)
			c.armExpiry(ls) // messages recovered from disk have no timer before the first connect or send
			var stopped bool
			if err, stopped = c.serve(ls); stopped {
				return false
			}
			c.dropConn(ls)
			if errors.Is(err, errRenewal) {
				c.transition(StatusDisconnectedRetrying, ReasonExpiredSASToken)
				continue // a fresh token, at once: a renewal is not a failure
			}
			attemptStart = c.clk.Now()
		}
		if errors.Is(err, auth.ErrTokenExpired) {
			return c.giveUp(ls, ReasonExpiredSASToken, &Error{Code: CodeAuth, Msg: err.Error(), Err: err})
		}
		kind := transport.KindOf(err)
		cls := classify(kind)
		if cls.fatal {
			return c.giveUp(ls, cls.reason, &Error{Code: cls.code, Msg: err.Error(), Err: err})
		}
		if ls.waiters.expired(c.clk.Now()) {
			return c.giveUp(ls, ReasonRetryExpired, ls.waiters.connectTimedOut(err))
		}
		attempt++
		again, delay, res := c.askPolicy(ls, attempt, &Error{Code: cls.code, Msg: err.Error(), Err: err}, kind)
		switch res {
		case waitStopped:
			return false
		case waitTimedOut:
			return c.giveUp(ls, ReasonRetryExpired, ls.waiters.connectTimedOut(err))
		}
		if !again {
			return c.giveUp(ls, ReasonRetryExpired, &Error{Code: CodeRetryExpired,
				Msg: "retry policy gave up after " + strconv.Itoa(attempt) + " failures; last error: " + err.Error(), Err: err})
		}
		delay = retry.Spaced(attemptStart, c.clk.Now(), delay)
		c.transition(StatusDisconnectedRetrying, cls.reason)
		c.logf(LogWarn, "attempt %d failed (%v); next in %v", attempt, err, delay)
		switch c.backoff(ls, delay) {
		case waitStopped:
			return false
		case waitTimedOut:
			return c.giveUp(ls, ReasonRetryExpired, ls.waiters.connectTimedOut(err))
		}
	}
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
	token, exp, err := c.cred.Token(now)
	if err != nil {
		return err
	}
	timeout := dialTimeout
	if ls.waiters.waiting() {
		timeout = min(timeout, max(ls.waiters.deadline.Sub(now), time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stopOnClose := context.AfterFunc(c.stopCtx, cancel)
	defer stopOnClose()
	if w := ls.waiters; w.waiting() {
		stopOnCancel := context.AfterFunc(w.reqs[0].ctx, cancel)
		defer stopOnCancel()
	}
	ls.gen++
	conn, err := c.dialer.Dial(ctx, transport.DialParams{
		Host: c.cs.ConnectHost(), HubHost: c.cs.HostName, DeviceID: c.cs.DeviceID, ModuleID: c.cs.ModuleID,
		Token: token, TLS: c.tls, KeepAlive: c.opts.KeepAlive, WebSocket: c.opts.Transport == TransportMQTTWS,
		Handler: linkHandler{c: c, gen: ls.gen},
	})
	if err != nil {
		return err
	}
	ls.conn, ls.tokenExp, ls.issuedAt, ls.renewable = conn, exp, now, c.cred.Renewable()
	c.armRenew(ls)
	return nil
}

var errRenewal = errors.New("token renewal needs a new connection")

// serve runs while connected. It returns the error that ended the link, or stopped=true on Close.
func (c *Client) serve(ls *loopState) (err error, stopped bool) {
	for {
		select {
		case <-c.stop:
			return nil, true
		case l := <-c.lost:
			if l.gen == ls.gen {
				return l.err, false
			}
		case req := <-c.connectReqs:
			req.result <- nil
		case <-c.kick:
			c.flush(ls)
			c.armExpiry(ls)
		case <-timerC(ls.expiry):
			c.expire(ls)
		case <-timerC(ls.renew):
			ls.renew = nil
			if err := c.renewToken(ls); err != nil {
				return err, false
			}
		}
	}
}

// renewToken hands a fresh token to the live link, or reports that the link must be replaced.
func (c *Client) renewToken(ls *loopState) error {
	if !ls.renewable {
		return auth.ErrTokenExpired
	}
	now := c.clk.Now()
	token, exp, err := c.cred.Token(now)
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

type waitResult int

const (
	waitElapsed waitResult = iota
	waitStopped
	waitTimedOut
)

// backoff waits delay between attempts; see waitFor.
func (c *Client) backoff(ls *loopState, delay time.Duration) waitResult {
	t := c.clk.NewTimer(delay)
	defer t.Stop()
	res, _ := c.waitFor(ls, t.C(), c.clk.Now().Add(delay), nil)
	return res
}

// waitFor keeps the queue's deadlines and takes Connect calls until elapsed fires (at horizon) or, with elapsed
// nil, the application's policy answers. A Connect waiting here gives up at its deadline instead of waiting
// past it.
func (c *Client) waitFor(ls *loopState, elapsed <-chan time.Time, horizon time.Time,
	answer <-chan retryAnswer) (waitResult, retryAnswer) {
	var deadline clock.Timer
	armDeadline := func() {
		if ls.waiters.waiting() && (elapsed == nil || ls.waiters.deadline.Before(horizon)) {
			deadline = c.clk.NewTimer(ls.waiters.deadline.Sub(c.clk.Now()))
		}
	}
	armDeadline()
	defer func() { stopTimer(&deadline) }()
	for {
		select {
		case <-c.stop:
			return waitStopped, retryAnswer{}
		case <-elapsed:
			return waitElapsed, retryAnswer{}
		case a := <-answer:
			return waitElapsed, a
		case <-ls.waiters.ctxDone():
			return waitTimedOut, retryAnswer{}
		case <-timerC(deadline):
			return waitTimedOut, retryAnswer{}
		case req := <-c.connectReqs:
			first := !ls.waiters.waiting()
			ls.waiters.add(req, c.clk.Now(), c.opts.OperationTimeout)
			if first {
				armDeadline()
			}
		case <-c.kick:
			c.armExpiry(ls)
		case <-timerC(ls.expiry):
			c.expire(ls)
		}
	}
}

// askPolicy asks the retry policy about attempt. An application's policy is asked inside Poll, on the
// application's thread, in poll mode; meanwhile the loop keeps its chores, and a Connect whose deadline passes
// before the answer ends the wait (waitTimedOut). Built-in policies wait the slower throttling schedule after
// throttling and quota errors; a server's retry-after wins over any policy's delay.
func (c *Client) askPolicy(ls *loopState, attempt int, err error, kind transport.Kind) (again bool, delay time.Duration,
	res waitResult) {
	p := c.currentPolicy()
	builtin := false
	switch p.(type) {
	case *retry.Exponential, retry.NoRetry:
		builtin = true
	}
	if !builtin && c.opts.Dispatch == DispatchPoll {
		q := &retryQuestion{policy: p, attempt: attempt, lastErr: err, answer: make(chan retryAnswer, 1)}
		c.events.push(event{kind: evRetryQuestion, question: q})
		var a retryAnswer
		if res, a = c.waitFor(ls, nil, time.Time{}, q.answer); res != waitElapsed {
			return false, 0, res // a late answer goes into the buffered channel, unread
		}
		again, delay = a.retry, a.delay
	} else {
		again, delay = p.ShouldRetry(attempt, err)
	}
	if !again {
		return false, 0, waitElapsed
	}
	var after time.Duration
	var te *transport.Error
	if errors.As(err, &te) {
		after = te.RetryAfter
	}
	switch {
	case after > 0:
		delay = after
	case builtin && (kind == transport.KindThrottled || kind == transport.KindQuota):
		delay = retry.ThrottleDelay(attempt, 0, nil)
	}
	return true, max(delay, 0), waitElapsed
}

// giveUp ends the link for good: Disconnected with reason, every pending message failed with err, every
// waiting Connect answered with err.
func (c *Client) giveUp(ls *loopState, reason ConnectionStatusChangeReason, err *Error) bool {
	c.dropConn(ls)
	c.transition(StatusDisconnected, reason)
	c.logf(LogError, "%v", err)
	c.failAll(err)
	ls.waiters.answer(err)
	return true
}

// dropConn closes the live connection and puts its unacknowledged messages back at the head of the queue. One
// whose deadline passed while its acknowledgement could still come expires now, as in doubt.
func (c *Client) dropConn(ls *loopState) {
	stopTimer(&ls.renew)
	if ls.conn == nil {
		return
	}
	ls.conn.Close()
	ls.conn = nil
	c.expireAll(c.out.Requeue(c.clk.Now()))
	c.armExpiry(ls)
}

// flush hands every queued message to the live connection without waiting for acknowledgements. A message
// whose deadline passed expires instead: none is sent after its time-to-live.
func (c *Client) flush(ls *loopState) {
	if ls.conn == nil {
		return
	}
	send, due := c.out.Ready(c.clk.Now())
	c.expireAll(due)
	for _, e := range send {
		c.sendOne(ls.conn, e)
	}
}

func (c *Client) sendOne(conn transport.Conn, e *outbox.Entry) {
	conn.Send(&e.Wire, func(err error) {
		if err == nil {
			c.complete(e, SendDelivered, nil)
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
	c.expireAll(c.out.Due(c.clk.Now()))
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
		c.complete(e, SendExpired, err)
	}
}

// failAll completes every pending message with SendFailed and err, oldest first; the message of one that went
// out unacknowledged adds that it may have arrived.
func (c *Client) failAll(err *Error) {
	var inDoubt *Error
	for _, e := range c.out.TakeAll() {
		if !c.out.MayHaveArrived(e) {
			c.complete(e, SendFailed, err)
			continue
		}
		if inDoubt == nil {
			inDoubt = &Error{Code: err.Code, Msg: err.Msg + "; it was sent without an acknowledgement and may have " +
				"reached the hub", Err: err.Err}
		}
		c.complete(e, SendFailed, inDoubt)
	}
}

// shutdown is the loop's last act on Close.
func (c *Client) shutdown(ls *loopState) {
	c.dropConn(ls)
	stopTimer(&ls.expiry)
	c.failAll(c.closedError())
	c.out.Shutdown()
	ls.waiters.answer(Errorf(CodeClosed, "client closed"))
	c.transition(StatusDisabled, ReasonClientClose)
	c.events.finish()
}
