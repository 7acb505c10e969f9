package core

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotconn/iotconn/core/auth"
	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/internal/notify"
	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/store"
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/mqtt"
)

// Defaults and limits; Options' zero values mean these.
const (
	DefaultKeepAlive        = iothub.DefaultKeepAlive
	MaxKeepAlive            = iothub.MaxKeepAlive
	DefaultSASLifetime      = iothub.DefaultSASLifetime
	DefaultQueueMaxMessages = 10000
	DefaultQueueMaxBytes    = 64 << 20
	DefaultOperationTimeout = 4 * time.Minute
)

// Client is one device's connection to IoT Hub. See api.go for the contract of its methods and doc.go for its
// goroutines and locks.
type Client struct {
	// Set by NewClient, never changed.
	opts   Options
	cs     *auth.ConnectionString
	cred   auth.Credential
	tls    *tls.Config
	dialer transport.Dialer
	clk    clock.Clock
	events *eventQueue
	// midPrefix makes generated $.mid values unique across clients and restarts: 130 random bits, then the id.
	midPrefix string
	journal   *journal // durable mode's writer; nil in memory mode
	recovered int      // durable mode: messages loaded from the queue directory at creation (ids 1..recovered)

	// Guarded by mu.
	mu       sync.Mutex
	cur      state
	handlers Handlers
	policy   retry.Policy
	closed   bool
	nextID   uint64
	pending  map[uint64]*outMessage // accepted, not yet completed
	queue    []*outMessage          // waiting to be sent, in id order; completed entries are skipped
	bytes    int64                  // payload bytes of pending messages
	// soonest is the earliest deadline of the messages queued since the loop last armed its expiry timer, so
	// that the loop rescans the pending messages only when a shorter time-to-live came in.
	soonest    time.Time
	connecting map[*connectRequest]context.CancelFunc // Connect calls in progress, for CancelConnect

	// Channels into the loop, and the loop's end. The loop's own state is loopState (link.go).
	connectReqs chan *connectRequest
	kick        chan struct{} // capacity 1: "the queue changed"
	lost        chan lostLink
	stopCtx     context.Context // ended by Close; aborts a dial or renewal in progress
	stopCancel  context.CancelFunc
	stop        <-chan struct{} // stopCtx.Done()
	loopDone    chan struct{}

	// Dispatch and Close.
	dispatcherDone chan struct{} // closed when the thread-mode dispatcher ends; nil in poll mode
	pollMu         sync.Mutex

	forbidden atomic.Int64 // transitions the status table refused: engine bugs
	closeOnce sync.Once
}

// outMessage is an accepted message until its one completion.
type outMessage struct {
	id       uint64
	key      uint64 // durable mode: its record in the store
	wire     transport.Message
	size     int64
	deadline time.Time
	inFlight bool // on the live link, waiting for its acknowledgement
	// sent: it was handed to a link (or recovered from disk, where it may have been) and not acknowledged, so it
	// may have reached the hub. It never completes as if it certainly did not.
	sent    bool
	writing bool // durable mode: counted against the limits, not yet on disk, so not yet in the queue
	done    bool
}

// NewClient validates the connection string and options; it does not connect.
func NewClient(connectionString string, opts Options) (*Client, error) {
	return newClient(connectionString, opts, nil)
}

// newClient lets tests supply the transport.
func newClient(connectionString string, opts Options, dialer transport.Dialer) (*Client, error) {
	cs, err := auth.ParseConnectionString(connectionString)
	if err != nil {
		code := CodeInvalidArgument
		if errors.Is(err, auth.ErrTooLong) {
			code = CodeTooLarge
		}
		return nil, &Error{Code: code, Msg: "connection string: " + err.Error(), Err: err}
	}
	if err := applyDefaults(&opts); err != nil {
		return nil, err
	}
	cred, err := auth.NewCredential(cs, opts.SASLifetime)
	if err != nil {
		return nil, &Error{Code: CodeInvalidArgument, Msg: err.Error(), Err: err}
	}
	tlsConf, err := buildTLS(cs, &opts)
	if err != nil {
		return nil, err
	}
	if dialer == nil {
		dialer = mqtt.NewDialer()
	}
	if err := dialer.CheckIdentity(cs.DeviceID, cs.ModuleID); err != nil {
		return nil, &Error{Code: CodeInvalidArgument, Msg: "connection string: " + errors.Unwrap(err).Error(), Err: err}
	}
	c := &Client{
		opts: opts, cs: cs, cred: cred, tls: tlsConf, dialer: dialer, clk: opts.Clock, events: newEventQueue(),
		cur: state{StatusDisconnected, ReasonConnectionOk}, policy: opts.RetryPolicy,
		pending: map[uint64]*outMessage{}, midPrefix: rand.Text() + ".",
		connectReqs: make(chan *connectRequest), connecting: map[*connectRequest]context.CancelFunc{}, kick: make(chan struct{}, 1), lost: make(chan lostLink, 4),
		loopDone: make(chan struct{}),
	}
	c.stopCtx, c.stopCancel = context.WithCancel(context.Background())
	c.stop = c.stopCtx.Done()
	if opts.QueueDir != "" {
		st, recs, err := store.Open(opts.QueueDir)
		if err != nil {
			c.stopCancel()
			return nil, &Error{Code: CodeStore, Msg: "queue directory: " + err.Error(), Err: err}
		}
		c.recover(recs)
		c.journal = newJournal(c, st, recs)
	}
	go c.loop()
	if opts.Dispatch == DispatchThread {
		c.dispatcherDone = make(chan struct{})
		go c.runDispatcher()
	}
	return c, nil
}

func applyDefaults(o *Options) error {
	switch {
	case o.Transport == TransportAMQP:
		return Errorf(CodeInvalidArgument, "the AMQP transport is not available yet; use MQTT or MQTT over WebSocket")
	case o.Transport != TransportMQTT && o.Transport != TransportMQTTWS:
		return Errorf(CodeInvalidArgument, "unknown transport %d", o.Transport)
	case o.Dispatch != DispatchThread && o.Dispatch != DispatchPoll:
		return Errorf(CodeInvalidArgument, "unknown dispatch mode %d", o.Dispatch)
	case o.KeepAlive < 0 || o.SASLifetime < 0 || o.SASRenewMargin < 0 || o.OperationTimeout < 0:
		return Errorf(CodeInvalidArgument, "durations must not be negative")
	case o.QueueMaxMessages < 0 || o.QueueMaxBytes < 0:
		return Errorf(CodeInvalidArgument, "queue limits must not be negative")
	case o.QueueOverflow != OverflowReject && o.QueueOverflow != OverflowDropOldest:
		return Errorf(CodeInvalidArgument, "unknown queue overflow policy %d", o.QueueOverflow)
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	o.KeepAlive = min(o.KeepAlive, MaxKeepAlive)
	if o.SASLifetime == 0 {
		o.SASLifetime = DefaultSASLifetime
	}
	if o.SASRenewMargin == 0 {
		o.SASRenewMargin = o.SASLifetime / 10
	}
	if err := checkSASFloors(o); err != nil {
		return err
	}
	if o.QueueMaxMessages == 0 {
		o.QueueMaxMessages = DefaultQueueMaxMessages
	}
	if o.QueueMaxBytes == 0 {
		o.QueueMaxBytes = DefaultQueueMaxBytes
	}
	if o.OperationTimeout == 0 {
		o.OperationTimeout = DefaultOperationTimeout
	}
	if o.RetryPolicy == nil {
		o.RetryPolicy = retry.DefaultExponential()
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	return nil
}

func buildTLS(cs *auth.ConnectionString, o *Options) (*tls.Config, error) {
	host := cs.ConnectHost()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if o.CAFile != "" || len(o.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, Errorf(CodeInvalidArgument, "CA file: %v", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, Errorf(CodeInvalidArgument, "CA file %s holds no PEM certificate", o.CAFile)
			}
		}
		if len(o.CAPEM) > 0 && !pool.AppendCertsFromPEM(o.CAPEM) {
			return nil, Errorf(CodeInvalidArgument, "CA PEM holds no certificate")
		}
		conf.RootCAs = pool
	}
	switch {
	case cs.X509 && (o.CertFile == "" || o.KeyFile == ""):
		return nil, Errorf(CodeInvalidArgument, "x509=true needs a client certificate and key file")
	case !cs.X509 && (o.CertFile != "" || o.KeyFile != ""):
		return nil, Errorf(CodeInvalidArgument, "a client certificate needs x509=true in the connection string")
	case cs.X509:
		cert, err := auth.LoadClientCertificate(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, &Error{Code: CodeInvalidArgument, Msg: err.Error(), Err: err}
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// SetHandlers replaces the application's callbacks; events already queued go to the new ones.
func (c *Client) SetHandlers(h Handlers) {
	c.mu.Lock()
	c.handlers = h
	c.mu.Unlock()
}

// SetRetryPolicy replaces the retry policy; it applies from the next failure on.
func (c *Client) SetRetryPolicy(p retry.Policy) error {
	if p == nil {
		return Errorf(CodeInvalidArgument, "retry policy is nil")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Errorf(CodeClosed, "client closed")
	}
	c.policy = p
	return nil
}

func (c *Client) currentPolicy() retry.Policy {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.policy
}

// Status returns the current status and the reason of its last change.
func (c *Client) Status() (ConnectionStatus, ConnectionStatusChangeReason) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.status, c.cur.reason
}

// Send accepts msg for delivery and returns its id at once. Exactly one completion follows: Delivered when the
// hub acknowledged it, Expired when its time-to-live (default OperationTimeout) passed first, or Failed with
// CodeDropped (the drop-oldest overflow policy), the code of a fatal disconnect (the queue is emptied then, so
// the app knows at once) or CodeClosed. Messages accepted while disconnected wait and go out in order once
// connected; a message whose acknowledgement was lost with a link is sent again with the same $.mid, so delivery
// is at least once. In durable mode Send returns only after the message is committed to disk; concurrent Sends
// share one commit.
func (c *Client) Send(msg *Message) (uint64, error) {
	if msg == nil {
		return 0, Errorf(CodeInvalidArgument, "message is nil")
	}
	wire := transport.Message{
		MessageID: msg.MessageID, CorrelationID: msg.CorrelationID,
		ContentType: msg.ContentType, ContentEncoding: msg.ContentEncoding,
	}
	if len(msg.Properties) > 0 {
		wire.Properties = make([][2]string, len(msg.Properties))
		for i, p := range msg.Properties {
			wire.Properties[i] = [2]string{p.Key, p.Value}
		}
	}
	if err := c.checkMessage(msg, &wire); err != nil {
		return 0, err
	}
	wire.Payload = append([]byte(nil), msg.Payload...)
	ttl := msg.TTL
	if ttl == 0 {
		ttl = c.opts.OperationTimeout
	}
	size := int64(len(wire.Payload))
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, Errorf(CodeClosed, "client closed")
	}
	dropped, err := c.makeRoom(size)
	if err != nil {
		c.mu.Unlock()
		return 0, err
	}
	c.nextID++
	m := &outMessage{id: c.nextID, wire: wire, size: size, deadline: c.clk.Now().Add(ttl)}
	if m.wire.MessageID == "" {
		m.wire.MessageID = c.midPrefix + strconv.FormatUint(m.id, 10)
	}
	c.pending[m.id] = m
	c.bytes += size
	var written <-chan *Error
	if c.journal != nil {
		written = c.journal.put(m) // queued once on disk, in id order: the journal keeps the order of puts
	} else {
		c.enqueueLocked(m)
	}
	c.mu.Unlock()
	for _, d := range dropped {
		c.completed(d, SendFailed, Errorf(CodeDropped, "dropped for message %d: the queue was full", m.id))
	}
	if written != nil {
		if err := <-written; err != nil {
			return 0, err
		}
		return m.id, nil
	}
	notify.Raise(c.kick)
	return m.id, nil
}

// enqueueLocked appends an accepted message to the send queue.
func (c *Client) enqueueLocked(m *outMessage) {
	c.queue = append(c.queue, m)
	if c.soonest.IsZero() || m.deadline.Before(c.soonest) {
		c.soonest = m.deadline
	}
}

// makeRoom checks that one more message of size bytes fits the queue's limits. Under OverflowDropOldest it
// takes the oldest queued messages out (never one that may have reached the hub, nor one still being written)
// until the new one fits and returns them, finished, for their Failed completion. Called with c.mu held.
func (c *Client) makeRoom(size int64) ([]*outMessage, *Error) {
	maxCount, maxBytes := c.opts.QueueMaxMessages, c.opts.QueueMaxBytes
	fits := func(count int, bytes int64) bool { return count < maxCount && bytes+size <= maxBytes }
	count, bytes := len(c.pending), c.bytes
	if fits(count, bytes) {
		return nil, nil
	}
	full := Errorf(CodeQueueFull, "%d messages of %d bytes are waiting; the limits are %d messages and %d bytes",
		count, bytes, maxCount, maxBytes)
	if c.opts.QueueOverflow != OverflowDropOldest || size > maxBytes {
		return nil, full
	}
	var dropped []*outMessage
	n, kept := 0, false // kept: a message that may have reached the hub stays in the queue's head
	for ; n < len(c.queue) && !fits(count, bytes); n++ {
		switch m := c.queue[n]; {
		case m.done:
		case m.sent:
			kept = true
		default:
			dropped = append(dropped, m)
			count--
			bytes -= m.size
		}
	}
	if !fits(count, bytes) {
		full.Msg += " (the rest may have reached the hub already or are being written, so none can be dropped)"
		return nil, full
	}
	for _, m := range dropped {
		c.finishLocked(m)
	}
	if kept {
		c.queue = slices.DeleteFunc(c.queue, func(m *outMessage) bool { return m.done })
	} else {
		c.queue = c.queue[n:]
	}
	return dropped, nil
}

// Recovered says how many undelivered messages NewClient loaded from Options.QueueDir. They took the ids
// 1..Recovered() in their original order and keep their $.mid; they go out once connected, each with its one
// completion. 0 in memory mode.
func (c *Client) Recovered() int { return c.recovered }

// recover puts the messages a previous client left in the queue directory back in the queue, before any Send.
func (c *Client) recover(recs []store.Record) {
	for _, r := range recs {
		c.nextID++
		m := &outMessage{id: c.nextID, key: r.Key, wire: r.Msg, size: int64(len(r.Msg.Payload)), deadline: r.Deadline,
			sent: true} // it may have gone out before the previous client ended
		c.pending[m.id] = m
		c.bytes += m.size
		c.enqueueLocked(m)
	}
	c.recovered = len(recs)
	if len(recs) > 0 {
		c.logf(LogInfo, "recovered %d undelivered messages from %s as ids 1..%d", len(recs), c.opts.QueueDir, len(recs))
	}
}

// complete ends a pending message with its one completion; later calls for the same message do nothing.
func (c *Client) complete(m *outMessage, result SendResult, err *Error) {
	c.mu.Lock()
	first := c.finishLocked(m)
	c.mu.Unlock()
	if first {
		c.completed(m, result, err)
	}
}

// finishLocked takes m out of the pending messages; false when it already was. Called with c.mu held.
func (c *Client) finishLocked(m *outMessage) bool {
	if m.done {
		return false
	}
	m.done = true
	delete(c.pending, m.id)
	c.bytes -= m.size
	return true
}

// completed reports the completion of a finished message and, in durable mode, removes it from disk once it
// can never be sent: delivered, expired or dropped. One that a give-up (Retry_Expired, a connect timeout, a
// fatal error) or Close failed stays for the next client on the same directory: an outage must not empty a
// durable queue.
func (c *Client) completed(m *outMessage, result SendResult, err *Error) {
	if c.journal != nil && (result != SendFailed || err.Code == CodeDropped) {
		c.journal.remove(m.key)
	}
	c.events.push(event{kind: evSendComplete, id: m.id, result: result, err: err})
}

// Connect links the client to the hub and returns once it is connected, or with an *Error when a fatal error
// happened, the retry policy gave up, ctx ended or was cancelled (CodeCanceled, also by CancelConnect) or
// OperationTimeout passed (then the client stops trying and is Disconnected/Retry_Expired). Once connected, the engine keeps the link up by itself. Connecting an already
// connected client returns nil at once.
func (c *Client) Connect(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &connectRequest{ctx: ctx, result: make(chan error, 1)}
	c.mu.Lock()
	c.connecting[req] = cancel
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.connecting, req)
		c.mu.Unlock()
	}()
	if ctx.Err() != nil { // a ready channel below would race an ended context
		return contextEnded(ctx)
	}
	select {
	case c.connectReqs <- req:
	case <-c.stop:
		return Errorf(CodeClosed, "client closed")
	case <-ctx.Done():
		return contextEnded(ctx)
	}
	return <-req.result
}

func contextEnded(ctx context.Context) *Error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return &Error{Code: CodeCanceled, Msg: "connect cancelled", Err: ctx.Err()}
	}
	return &Error{Code: CodeTimeout, Msg: "connect: " + ctx.Err().Error(), Err: ctx.Err()}
}

// CancelConnect makes every Connect call in progress return CodeCanceled at once; the client stops trying,
// ends Disconnected/Retry_Expired as after a connect timeout, and stays usable: Connect may be called again.
// Calls made later are not affected.
func (c *Client) CancelConnect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cancel := range c.connecting {
		cancel()
	}
}

// Close ends the link, fails every pending message with CodeClosed, moves to Disabled/Client_Close and stops
// every goroutine of the client but the thread-mode dispatcher, which ends once it ran the handlers of the
// final events: wait for Done to know that no handler runs any more (not from inside a handler, which Done
// waits for). Close itself never waits for a handler, so handlers may call it. Idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.stopCancel()
	})
	<-c.loopDone
	return nil
}

// Done is closed once the client is closed and every goroutine of it ended: in thread dispatch mode, after the
// last handler returned; in poll mode, the final events wait for Poll.
func (c *Client) Done() <-chan struct{} {
	if c.dispatcherDone != nil {
		return c.dispatcherDone
	}
	return c.loopDone
}

// transition moves the status machine and emits its one event. Staying in the same state is no transition; one
// the table does not list is an engine bug: refused, logged and counted (the tests fail on it).
func (c *Client) transition(to ConnectionStatus, reason ConnectionStatusChangeReason) {
	next := state{to, reason}
	c.mu.Lock()
	if cur := c.cur; !transitionAllowed(cur, next) {
		c.mu.Unlock()
		if cur != next {
			c.forbidden.Add(1)
			c.logf(LogError, "internal error: the status machine refused %v/%v -> %v/%v", cur.status, cur.reason,
				to, reason)
		}
		return
	}
	c.cur = next
	c.events.push(event{kind: evStatus, state: next}) // under the lock, so events keep the order of changes
	c.mu.Unlock()
}

func (c *Client) logf(level LogLevel, format string, args ...any) {
	c.events.push(event{kind: evLog, level: level, text: fmt.Sprintf(format, args...)})
}
