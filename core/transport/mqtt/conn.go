package mqtt

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
)

// conn is one live MQTT link. Sends are pipelined without a goroutine per message: Send only queues; one
// publisher goroutine hands messages to paho in order, and one waiter goroutine drains their tokens in the same
// order and calls each done. Close stops both.
type conn struct {
	client       paho.Client
	handler      transport.Handler
	eventsPrefix string
	c2dPrefix    string

	mu          sync.Mutex
	dialWatch   func() bool // stops closing the socket when the dial context ends
	netConn     net.Conn    // the TLS connection, once dialled
	established bool        // Dial returned this conn: a loss is reported from now on
	closed      bool
	outbox      []pendingSend // accepted by Send, not yet published
	downErr     *transport.Error

	down      chan struct{} // closed when the link ends, lost or closed
	wake      chan struct{} // capacity 1: "outbox may be non-empty"
	closing   chan struct{}
	published chan pendingSend // publisher -> waiter, in publish order; the publisher closes it
	workers   sync.WaitGroup
}

type pendingSend struct {
	msg  *transport.Message
	tok  paho.Token
	done func(error)
}

// publishedBacklog is how many published messages may wait for their acknowledgement before the publisher
// waits for the waiter; paho allows 65535 in flight.
const publishedBacklog = 4096

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
		closing:      make(chan struct{}),
		published:    make(chan pendingSend, publishedBacklog),
	}
	c.workers.Add(2)
	go c.publish()
	go c.await()
	return c
}

// Send queues m for publishing at QoS 1 and returns at once; done gets nil on PUBACK. On a closed conn, and for
// a nil m, done is called before Send returns.
func (c *conn) Send(m *transport.Message, done func(error)) {
	if m == nil {
		done(&transport.Error{Kind: transport.KindProtocol, Op: "send", Err: errNilMessage})
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		done(&transport.Error{Kind: transport.KindProtocol, Op: "send", Err: errClosed})
		return
	}
	c.outbox = append(c.outbox, pendingSend{msg: m, done: done})
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// publish is the publisher goroutine.
func (c *conn) publish() {
	defer c.workers.Done()
	defer close(c.published)
	var batch []pendingSend
	for {
		select {
		case <-c.wake:
		case <-c.closing:
			c.mu.Lock()
			rest := c.outbox
			c.outbox = nil
			c.mu.Unlock()
			c.fail(rest)
			return
		}
		c.mu.Lock()
		batch, c.outbox = c.outbox, batch[:0] // the two slices take turns, so a steady stream does not allocate
		c.mu.Unlock()
		c.publishBatch(batch)
		clear(batch) // drop the references to sent messages
	}
}

// publishBatch hands batch to paho and the waiter in order; what cannot go out any more fails at once.
func (c *conn) publishBatch(batch []pendingSend) {
	for i := range batch {
		select {
		case <-c.down: // paho would refuse them one by one
			c.fail(batch[i:])
			return
		default:
		}
		batch[i].tok = c.client.Publish(c.telemetryTopic(batch[i].msg), 1, false, batch[i].msg.Payload)
		select {
		case c.published <- batch[i]:
		case <-c.closing:
			c.fail(batch[i:])
			return
		}
	}
}

// await is the waiter goroutine: it completes published messages in order.
func (c *conn) await() {
	defer c.workers.Done()
	for ps := range c.published {
		select {
		case <-ps.tok.Done():
		case <-c.down:
		}
		ps.done(c.result(ps.tok))
	}
}

// result is a published message's outcome. A publish that failed (paho's writer stalled past publishWait)
// ends the link: the engine then sends the message again on a new one.
func (c *conn) result(tok paho.Token) error {
	select {
	case <-tok.Done():
		err := tok.Error()
		if err == nil {
			return nil
		}
		c.breakLink()
		return &transport.Error{Kind: transport.KindProtocol, Op: "send", Err: err}
	default:
		return c.linkErr()
	}
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
	return &transport.Error{Kind: c.downErr.Kind, Op: "send", Err: c.downErr}
}

func (c *conn) fail(batch []pendingSend) {
	if len(batch) == 0 {
		return
	}
	err := c.linkErr()
	for _, ps := range batch {
		ps.done(err)
	}
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

// Close disconnects, fails every unacknowledged send with KindProtocol and waits for the conn's goroutines.
// It does not report OnConnectionLost. It is idempotent.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.workers.Wait()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.lose(&transport.Error{Kind: transport.KindProtocol, Op: "close", Err: errClosed})
	close(c.closing)
	c.stopDialWatch()
	if c.client != nil {
		c.client.Disconnect(disconnectQuiesce)
	}
	c.workers.Wait()
	return nil
}
