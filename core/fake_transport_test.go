package core

import (
	"context"
	"slices"
	"sync"

	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/mqtt"
)

// fakeDialer is a scripted transport: each Dial takes the next scripted error (nil = success) or, with the
// script exhausted, fallback. It has MQTT's limits.
type fakeDialer struct {
	transport.Limits
	mu       sync.Mutex
	script   []error
	fallback error
	dials    int
	conns    []*fakeConn
	manual   bool   // when set, connections do not acknowledge sends by themselves
	during   func() // when set, runs inside each Dial (a test moves its fake clock: the dial takes time)
	dialed   chan int
}

func newFakeDialer(script ...error) *fakeDialer {
	return &fakeDialer{Limits: mqtt.NewDialer(), script: script, dialed: make(chan int, 1000)}
}

func (d *fakeDialer) Dial(ctx context.Context, p transport.DialParams) (transport.Conn, error) {
	d.mu.Lock()
	d.dials++
	n := d.dials
	err := d.fallback
	if len(d.script) > 0 {
		err, d.script = d.script[0], d.script[1:]
	}
	var conn *fakeConn
	if err == nil {
		conn = &fakeConn{params: p, manual: d.manual}
		d.conns = append(d.conns, conn)
	}
	during := d.during
	d.mu.Unlock()
	if during != nil {
		during()
	}
	d.dialed <- n
	if err != nil {
		return nil, err
	}
	return conn, nil
}

func (d *fakeDialer) conn(i int) *fakeConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns[i]
}

type fakeConn struct {
	params transport.DialParams
	manual bool

	mu       sync.Mutex
	sent     []transport.Message
	requests []transport.Request
	waiting  []func(error)
	closed   bool
}

func (c *fakeConn) Send(m *transport.Message, done func(error)) {
	c.record(func() { c.sent = append(c.sent, *m) }, done)
}

// Request is recorded and, unless the connection is manual, written at once (ackAll writes the others); the fake
// hub answers only when a test calls answer.
func (c *fakeConn) Request(r *transport.Request, done func(error)) {
	c.record(func() { c.requests = append(c.requests, *r) }, done)
}

// record runs keep under the lock, then completes done at once, or, on a manual or closed connection, keeps it
// for ackAll or Close.
func (c *fakeConn) record(keep func(), done func(error)) {
	c.mu.Lock()
	keep()
	if c.manual || c.closed {
		c.waiting = append(c.waiting, done)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	done(nil)
}

func (c *fakeConn) sentRequests() []transport.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.requests)
}

// answer delivers the hub's answer to the request rid as a transport would.
func (c *fakeConn) answer(rid string, status int, version int64, payload string) {
	c.params.Handler.OnInbound(&transport.Inbound{Kind: transport.InboundTwinResponse, RID: rid, Status: status,
		Version: version, Payload: []byte(payload)})
}

// ackAll acknowledges every send, and writes every request, still waiting.
func (c *fakeConn) ackAll() {
	c.mu.Lock()
	w := c.waiting
	c.waiting = nil
	c.mu.Unlock()
	for _, done := range w {
		done(nil)
	}
}

func (c *fakeConn) sentIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]string, len(c.sent))
	for i, m := range c.sent {
		ids[i] = m.MessageID
	}
	return ids
}

// kill reports the link lost as a transport would.
func (c *fakeConn) kill(kind transport.Kind) {
	c.params.Handler.OnConnectionLost(&transport.Error{Kind: kind, Op: "connection lost"})
}

func (c *fakeConn) RenewToken(ctx context.Context, token string) error {
	return transport.ErrRenewNeedsReconnect
}

func (c *fakeConn) Close() error {
	c.mu.Lock()
	c.closed = true
	w := c.waiting
	c.waiting = nil
	c.mu.Unlock()
	for _, done := range w {
		done(&transport.Error{Kind: transport.KindProtocol, Op: "send", Err: errClosedConn})
	}
	return nil
}

var errClosedConn = context.Canceled

// callMethod delivers a direct method call as a transport would.
func (c *fakeConn) callMethod(rid, name, payload string) {
	c.params.Handler.OnInbound(&transport.Inbound{Kind: transport.InboundMethod, RID: rid, Method: name,
		Payload: []byte(payload)})
}
