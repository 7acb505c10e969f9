package mqtt

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotconn/iotconn/core/internal/notify"
	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
)

// conn is one live MQTT link. Sends are pipelined without a goroutine per message: Send only queues; a publisher
// goroutine hands messages to paho in order, and a waiter goroutine completes them in the same order as their
// PUBACKs arrive. Only the waiter completes a message, so each gets exactly one completion; when the link ends
// it fails every message still unsettled at once, without waiting for the publisher, which paho can hold inside
// Publish for up to publishWait when the link dies under it. Both run only while they have work (the publisher
// while messages wait for paho, the waiter while any is unsettled), so an idle link keeps neither.
type conn struct {
	client       paho.Client
	handler      transport.Handler
	eventsPrefix string
	c2dPrefix    string

	mu          sync.Mutex
	dialWatch   func() bool // stops closing the socket when the dial context ends
	netConn     net.Conn    // the TLS connection, once dialled
	writer      *batchWriter
	established bool // Dial returned this conn: a loss is reported from now on
	closed      bool
	downErr     *transport.Error
	unsettled   []*pendingSend // accepted and not completed, in send order
	handed      int            // unsettled[:handed] went to paho (the last one may still lack its token)

	publishing bool          // a publisher goroutine runs
	waiterDone chan struct{} // non-nil while a waiter goroutine runs; closed when it ends

	down       chan struct{} // closed when the link ends, lost or closed
	wake       chan struct{} // capacity 1: "in-flight room came free"
	tokenReady chan struct{} // capacity 1: "a handed message got its token"
}

// pendingSend is a telemetry message or, with req set, a twin or method request, on its way to paho.
type pendingSend struct {
	msg  *transport.Message
	req  *transport.Request
	done func(error)
	tok  paho.Token // set under conn.mu once paho took the message
}

// publishOne hands ps to paho: telemetry at QoS 1, requests at QoS 0 as IoT Hub takes them (their answer, if any,
// is the acknowledgement that matters).
func (c *conn) publishOne(ps *pendingSend) paho.Token {
	if ps.req != nil {
		return c.client.Publish(requestTopic(ps.req), 0, false, ps.req.Payload)
	}
	return c.client.Publish(c.telemetryTopic(ps.msg), 1, false, ps.msg.Payload)
}

const (
	// maxInFlight is how many messages may wait for their PUBACK; paho has 65535 packet ids.
	maxInFlight = 4096
	// publishRun is how many messages the publisher takes per lock.
	publishRun = 64
)

var (
	errClosed     = errors.New("connection closed")
	errNilMessage = errors.New("nil message")
)

func newConn(p transport.DialParams) *conn {
	c := &conn{
		handler:      p.Handler,
		eventsPrefix: iothub.TelemetryTopic(p.DeviceID, p.ModuleID, ""),
		c2dPrefix:    iothub.C2DPrefix(p.DeviceID),
		down:         make(chan struct{}),
		wake:         make(chan struct{}, 1),
		tokenReady:   make(chan struct{}, 1),
	}
	return c
}

// Send queues m for publishing at QoS 1 and returns at once; done gets nil on PUBACK. On a conn that is down,
// and for a nil m, done is called before Send returns.
func (c *conn) Send(m *transport.Message, done func(error)) {
	if m == nil {
		done(&transport.Error{Kind: transport.KindProtocol, Op: "send", Err: errNilMessage})
		return
	}
	c.enqueue(&pendingSend{msg: m, done: done})
}

// Request queues r behind the sends before it; done gets nil once paho wrote it.
func (c *conn) Request(r *transport.Request, done func(error)) {
	if r == nil {
		done(&transport.Error{Kind: transport.KindProtocol, Op: "request", Err: errNilMessage})
		return
	}
	c.enqueue(&pendingSend{req: r, done: done})
}

func (c *conn) enqueue(ps *pendingSend) {
	c.mu.Lock()
	if c.downErr != nil {
		err := c.sendErrLocked()
		c.mu.Unlock()
		ps.done(err)
		return
	}
	c.unsettled = append(c.unsettled, ps)
	if !c.publishing {
		c.publishing = true
		go c.publish()
	}
	if c.waiterDone == nil {
		c.waiterDone = make(chan struct{})
		go c.await(c.waiterDone)
	}
	c.mu.Unlock()
}

// publish is the publisher goroutine. It ends once paho has every queued message, when the link ends, or, if it
// raced the link's end into paho's Publish, up to publishWait later: paho gives no way to abort a Publish.
func (c *conn) publish() {
	run := make([]*pendingSend, 0, publishRun)
	toks := make([]paho.Token, 0, publishRun)
	for {
		run = c.takeRun(run[:0])
		if run == nil {
			return
		}
		if len(run) == 0 {
			select {
			case <-c.wake:
			case <-c.down:
			}
			continue
		}
		c.writerOf().waitRoom(c.down)
		toks = toks[:0]
		for _, ps := range run {
			toks = append(toks, c.publishOne(ps))
		}
		c.mu.Lock()
		for i, ps := range run {
			ps.tok = toks[i]
		}
		c.mu.Unlock()
		clear(run) // the waiter owns them now
		notify.Raise(c.tokenReady)
	}
}

func (c *conn) writerOf() *batchWriter {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writer
}

// takeRun appends the next messages to publish to run: none while the in-flight window is full, nil (and the
// publisher ends) once the link is down or paho has every queued message.
func (c *conn) takeRun(run []*pendingSend) []*pendingSend {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.downErr != nil || c.handed == len(c.unsettled) {
		c.publishing = false
		return nil
	}
	n := min(len(c.unsettled)-c.handed, publishRun, maxInFlight-c.handed)
	run = append(run, c.unsettled[c.handed:c.handed+n]...)
	c.handed += n
	return run
}

// await is the waiter goroutine: it completes handed messages in order, and everything unsettled when the link
// ends. It ends once nothing is unsettled; done is closed as its last act.
func (c *conn) await(done chan struct{}) {
	defer close(done)
	for {
		head, idle := c.firstWithToken()
		if idle {
			return
		}
		if head == nil {
			select {
			case <-c.tokenReady:
				continue
			case <-c.down:
				c.failUnsettled()
				c.mu.Lock()
				c.waiterDone = nil
				c.mu.Unlock()
				return
			}
		}
		select {
		case <-head.tok.Done():
		case <-c.down:
		}
		for _, ps := range c.settleAcked() {
			ps.done(c.result(ps.tok))
		}
	}
}

// firstWithToken returns the oldest unsettled message if paho has it, else nil; with nothing unsettled it says
// the waiter is idle, and the waiter ends (a later Send starts another).
func (c *conn) firstWithToken() (head *pendingSend, idle bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case len(c.unsettled) == 0:
		c.waiterDone = nil
		return nil, true
	case c.unsettled[0].tok == nil:
		return nil, false
	}
	return c.unsettled[0], false
}

// settleAcked removes the oldest message and those after it that paho finished with, and wakes the publisher
// if they freed in-flight room.
func (c *conn) settleAcked() []*pendingSend {
	c.mu.Lock()
	n := 1
	for n < c.handed && c.unsettled[n].tok != nil && isDone(c.unsettled[n].tok) {
		n++
	}
	settled := make([]*pendingSend, n)
	copy(settled, c.unsettled)
	c.popLocked(n)
	full := c.handed+n >= maxInFlight
	c.mu.Unlock()
	if full {
		notify.Raise(c.wake)
	}
	return settled
}

func (c *conn) popLocked(n int) {
	clear(c.unsettled[:n])
	c.unsettled = c.unsettled[n:]
	c.handed -= n
	if len(c.unsettled) == 0 {
		c.unsettled = c.unsettled[:0:0] // let a long burst's backing array go
	}
}

func isDone(tok paho.Token) bool {
	select {
	case <-tok.Done():
		return true
	default:
		return false
	}
}

// failUnsettled completes everything still unsettled with the link's error; Send refuses new messages by now.
func (c *conn) failUnsettled() {
	c.mu.Lock()
	rest := c.unsettled
	c.unsettled, c.handed = nil, 0
	err := c.sendErrLocked()
	c.mu.Unlock()
	for _, ps := range rest {
		ps.done(err)
	}
}

// result is a handed message's outcome. A publish that failed on a live link (paho's writer stalled past
// publishWait) ends the link: the engine then sends the message again on a new one. On a link that is already
// down, paho's own refusal ("not connected") says less than the reason the link ended.
func (c *conn) result(tok paho.Token) error {
	if !isDone(tok) {
		return c.linkErr()
	}
	err := tok.Error()
	if err == nil {
		return nil
	}
	select {
	case <-c.down:
		return c.linkErr()
	default:
	}
	c.breakLink()
	return &transport.Error{Kind: transport.KindProtocol, Op: "send", Err: err}
}

// breakLink makes paho's reader fail, so paho reports the loss through its own path (from its goroutine, as for
// a dropped socket). Closing the socket would not do: paho takes a read from a closed socket for a planned
// disconnect and would report nothing.
func (c *conn) breakLink() {
	c.mu.Lock()
	nc := c.netConn
	c.mu.Unlock()
	if nc != nil {
		nc.SetReadDeadline(time.Now())
	}
}

func (c *conn) linkErr() *transport.Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendErrLocked()
}

func (c *conn) sendErrLocked() *transport.Error {
	return &transport.Error{Kind: c.downErr.Kind, Op: "send", Err: c.downErr}
}

// lose ends the link once and says whether the handler should hear of it: only for the first end of an
// established link that Close did not cause.
func (c *conn) lose(err *transport.Error) (report bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.downErr != nil {
		return false
	}
	c.downErr = err
	close(c.down)
	return c.established && !c.closed
}

// onConnectionLost is paho's connection-lost handler; paho calls it on a goroutine of its own.
func (c *conn) onConnectionLost(err error) {
	if lost := lostError(err); c.lose(lost) {
		c.handler.OnConnectionLost(lost)
	}
}

// establish marks the link as handed to the engine, unless it died during the dial.
func (c *conn) establish() *transport.Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.downErr != nil {
		return c.downErr
	}
	c.established = true
	return nil
}

// RenewToken cannot work in place on MQTT: IoT Hub reads the token only in CONNECT.
func (c *conn) RenewToken(_ context.Context, _ string) error { return transport.ErrRenewNeedsReconnect }

// Close disconnects, fails every unacknowledged send with KindProtocol and waits until they are completed. It
// does not report OnConnectionLost. It is idempotent.
func (c *conn) Close() error {
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	c.mu.Unlock()
	if first {
		c.lose(&transport.Error{Kind: transport.KindProtocol, Op: "close", Err: errClosed})
		c.stopDialWatch()
		if c.client != nil {
			c.client.Disconnect(disconnectQuiesce)
		}
	}
	c.mu.Lock()
	waiter := c.waiterDone
	c.mu.Unlock()
	if waiter != nil {
		<-waiter
	}
	return nil
}
