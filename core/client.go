package core

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotconn/iotconn/core/auth"
	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/internal/notify"
	"github.com/iotconn/iotconn/core/internal/outbox"
	"github.com/iotconn/iotconn/core/internal/reqresp"
	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/store"
	"github.com/iotconn/iotconn/core/transport"
)

// Defaults and limits; Options' zero values mean these.
const (
	DefaultKeepAlive        = iothub.DefaultKeepAlive
	MaxKeepAlive            = iothub.MaxKeepAlive
	DefaultSASLifetime      = iothub.DefaultSASLifetime
	DefaultQueueMaxMessages = 10000
	DefaultQueueMaxBytes    = 64 << 20
	DefaultOperationTimeout = 4 * time.Minute
	// DefaultBackoffResetAfter: a hub that accepts and drops every connection at once is retried at the policy's
	// growing delays (aws-c-mqtt resets after 30 s too), not at its first one for ever.
	DefaultBackoffResetAfter = 30 * time.Second
)

// Client is one device's connection to IoT Hub. See api.go for the contract of its methods and doc.go for its
// goroutines and locks.
type Client struct {
	// Set by NewClient, never changed.
	opts   Options
	dialer transport.Dialer
	clk    clock.Clock
	events *eventQueue
	out    *outbox.Outbox // the outbound queue: every accepted message and reported patch until its one completion
	reqs   *reqresp.Table // twin and method requests, from their sending to their one result

	// Guarded by mu.
	mu         sync.Mutex
	cur        state
	handlers   Handlers
	policy     retry.Policy
	closed     bool
	connecting map[*connectRequest]context.CancelFunc // Connect calls in progress, for CancelConnect
	desired    desiredState                           // desired updates delivered and waiting (desired.go)

	// sendMu serialises handing messages and requests to the live link (flush), which the loop, Send and the
	// request calls all do; live is that link, published by the loop, nil while there is none, liveGen its
	// generation; methods are the open method calls, by request id, with the generation of their link, and
	// heldCalls those of a link not yet published (methods.go). Taken with no other lock held.
	sendMu    sync.Mutex
	live      transport.Conn
	liveGen   uint64
	methods   map[string]uint64
	heldCalls []heldCall

	// Channels into the loop, and the loop's end. The loop's own state is loopState (link.go).
	connectReqs chan *connectRequest
	kick        chan struct{} // capacity 1: "the queue changed"
	resync      chan struct{} // capacity 1: "the GET after connecting failed"
	lost        chan lostLink
	stopCtx     context.Context // ended by Close; aborts a dial or renewal in progress
	stopCancel  context.CancelFunc
	stop        <-chan struct{} // stopCtx.Done()
	loopDone    chan struct{}

	// Dispatch and Close.
	dispatcherDone chan struct{} // thread mode: closed once the last event was dispatched; nil in poll mode
	pollMu         sync.Mutex

	forbidden atomic.Int64 // transitions the status table refused: engine bugs
	closeOnce sync.Once

	// id is who the client connects as, and where: set by NewClient; a provisioned client's loop replaces it
	// with each assignment (prov, provisioned.go; nil for a connection-string client).
	id   atomic.Pointer[identity]
	prov *provisioner
}

// identity is a device identity at one hub: its connection string, credential and TLS settings.
type identity struct {
	cs   *auth.ConnectionString
	cred auth.Credential
	tls  *tls.Config
}

// ident is the identity the client connects as now.
func (c *Client) ident() *identity { return c.id.Load() }

// NewClient validates the connection string and options; it does not connect.
func NewClient(connectionString string, opts Options) (*Client, error) {
	return newClient(connectionString, opts, nil)
}

// newClient lets tests supply the transport.
func newClient(connectionString string, opts Options, dialer transport.Dialer) (*Client, error) {
	if err := applyDefaults(&opts); err != nil {
		return nil, err
	}
	id, err := newIdentity(connectionString, &opts)
	if err != nil {
		return nil, err
	}
	return startClient(id, opts, dialer, nil)
}

// newIdentity parses a connection string and builds its credential and TLS settings; opts has its defaults.
func newIdentity(connectionString string, opts *Options) (*identity, error) {
	cs, err := auth.ParseConnectionString(connectionString)
	if err != nil {
		code := CodeInvalidArgument
		if errors.Is(err, auth.ErrTooLong) {
			code = CodeTooLarge
		}
		return nil, &Error{Code: code, Msg: "connection string: " + err.Error(), Err: err}
	}
	return identityFor(cs, opts)
}

// identityFor builds a connection string's credential and TLS settings.
func identityFor(cs *auth.ConnectionString, opts *Options) (*identity, error) {
	cred, err := auth.NewCredential(cs, opts.SASLifetime)
	if err != nil {
		return nil, &Error{Code: CodeInvalidArgument, Msg: err.Error(), Err: err}
	}
	tlsConf, err := buildTLS(cs, opts)
	if err != nil {
		return nil, err
	}
	return &identity{cs: cs, cred: cred, tls: tlsConf}, nil
}

// startClient checks the identity with the transport and starts the client's goroutines.
func startClient(id *identity, opts Options, dialer transport.Dialer, prov *provisioner) (*Client, error) {
	var err error
	if dialer == nil {
		dialer = protocols[opts.Transport].dialer(opts.AMQPPool)
	}
	if err := dialer.CheckIdentity(id.cs.DeviceID, id.cs.ModuleID); err != nil {
		return nil, &Error{Code: CodeInvalidArgument, Msg: "connection string: " + errors.Unwrap(err).Error(), Err: err}
	}
	c := &Client{
		opts: opts, dialer: dialer, clk: opts.Clock, events: newEventQueue(), prov: prov,
		reqs: reqresp.NewTable(), methods: map[string]uint64{},
		cur: state{StatusDisconnected, ReasonConnectionOk}, policy: ownPolicy(opts.RetryPolicy),
		connectReqs: make(chan *connectRequest), connecting: map[*connectRequest]context.CancelFunc{},
		kick: make(chan struct{}, 1), resync: make(chan struct{}, 1), lost: make(chan lostLink, 4),
		loopDone: make(chan struct{}),
	}
	c.id.Store(id)
	if d := opts.Dispatcher; d != nil {
		if err := d.attach(c); err != nil {
			return nil, err
		}
		c.events.forward = func() { d.signal(c) }
	}
	c.out, err = outbox.New(outbox.Config{
		MaxMessages: opts.QueueMaxMessages, MaxBytes: opts.QueueMaxBytes,
		DropOldest: opts.QueueOverflow == OverflowDropOldest,
		MIDPrefix:  rand.Text() + ".", // generated $.mid values unique across clients and restarts: 130 random bits
		Dir:        opts.QueueDir,
		Now:        opts.Clock.Now,
		Queued:     func() { notify.Raise(c.kick) },
		WrittenAfterClose: func(es []*outbox.Entry) {
			for _, e := range es {
				c.complete(e, SendFailed, 0, c.closedError())
			}
		},
		Logf: func(format string, args ...any) { c.logf(LogWarn, format, args...) },
	})
	if err != nil {
		if d := opts.Dispatcher; d != nil {
			d.leave(c)
		}
		return nil, &Error{Code: CodeStore, Msg: "queue directory: " + err.Error(), Err: err}
	}
	if n := c.out.Recovered(); n > 0 {
		c.logf(LogInfo, "recovered %d undelivered messages from %s as ids 1..%d", n, opts.QueueDir, n)
	}
	c.stopCtx, c.stopCancel = context.WithCancel(context.Background())
	c.stop = c.stopCtx.Done()
	if opts.Dispatch == DispatchThread {
		c.dispatcherDone = make(chan struct{})
		if opts.Dispatcher == nil {
			go c.runDispatcher()
		}
	}
	go c.loop()
	return c, nil
}

func applyDefaults(o *Options) error {
	_, known := protocols[o.Transport]
	switch {
	case !known:
		return Errorf(CodeInvalidArgument, "unknown transport %d", o.Transport)
	case o.Dispatch != DispatchThread && o.Dispatch != DispatchPoll:
		return Errorf(CodeInvalidArgument, "unknown dispatch mode %d", o.Dispatch)
	case o.Dispatcher != nil && o.Dispatch != o.Dispatcher.mode && o.Dispatch != DispatchThread:
		return Errorf(CodeInvalidArgument, "the dispatch mode conflicts with the dispatcher's")
	case o.KeepAlive < 0 || o.SASLifetime < 0 || o.SASRenewMargin < 0 || o.OperationTimeout < 0:
		return Errorf(CodeInvalidArgument, "durations must not be negative")
	case o.ReconnectSpread < 0:
		return Errorf(CodeInvalidArgument, "ReconnectSpread %v must not be negative (0 turns the fleet hint off)",
			o.ReconnectSpread)
	case o.BackoffResetAfter < 0:
		return Errorf(CodeInvalidArgument, "BackoffResetAfter %v must not be negative (0 means the default, %v)",
			o.BackoffResetAfter, DefaultBackoffResetAfter)
	case o.AMQPPool < 0:
		return Errorf(CodeInvalidArgument, "AMQPPool %d must not be negative (0 turns pooling off)", o.AMQPPool)
	case o.AMQPPool > 0 && !protocols[o.Transport].pools:
		return Errorf(CodeInvalidArgument, "AMQPPool needs an AMQP transport; transport %d has no pooling", o.Transport)
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
	if o.BackoffResetAfter == 0 {
		o.BackoffResetAfter = DefaultBackoffResetAfter
	}
	if o.RetryPolicy == nil {
		o.RetryPolicy = retry.DefaultExponential()
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.Dispatcher != nil {
		o.Dispatch = o.Dispatcher.mode
	}
	return nil
}

// rootCache shares one parsed pool per distinct set of trusted CAs among a process's clients: a fleet of
// thousands of clients with the same CA file would otherwise parse and keep it once each (about 4 KiB per client,
// bench/memory). A pool is never changed once made, so sharing it is safe.
type rootCache struct {
	mu    sync.Mutex
	pools map[[sha256.Size]byte]*x509.CertPool
}

const maxCachedRootPools = 64

var trustedRoots = rootCache{pools: map[[sha256.Size]byte]*x509.CertPool{}}

var (
	errNoCAInFile = errors.New("no PEM certificate in the CA file")
	errNoCAInPEM  = errors.New("no PEM certificate in the CA PEM")
)

// get returns the pool of filePEM's and extraPEM's certificates; each one given must hold at least one.
func (rc *rootCache) get(filePEM, extraPEM []byte) (*x509.CertPool, error) {
	h := sha256.New()
	for _, part := range [][]byte{filePEM, extraPEM} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part))) // the length keeps (a, bc) apart from (ab, c)
		h.Write(n[:])
		h.Write(part)
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if pool, ok := rc.pools[key]; ok {
		return pool, nil
	}
	pool := x509.NewCertPool()
	if len(filePEM) > 0 && !pool.AppendCertsFromPEM(filePEM) {
		return nil, errNoCAInFile
	}
	if len(extraPEM) > 0 && !pool.AppendCertsFromPEM(extraPEM) {
		return nil, errNoCAInPEM
	}
	if len(rc.pools) >= maxCachedRootPools {
		clear(rc.pools) // CAs rotated many times over: start again rather than keep every old pool
	}
	rc.pools[key] = pool
	return pool, nil
}

func buildTLS(cs *auth.ConnectionString, o *Options) (*tls.Config, error) {
	host := cs.ConnectHost()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if o.CAFile != "" || len(o.CAPEM) > 0 {
		var filePEM []byte
		if o.CAFile != "" {
			var err error
			if filePEM, err = os.ReadFile(o.CAFile); err != nil {
				return nil, Errorf(CodeInvalidArgument, "CA file: %v", err)
			}
			if len(filePEM) == 0 {
				return nil, Errorf(CodeInvalidArgument, "CA file %s holds no PEM certificate", o.CAFile)
			}
		}
		pool, err := trustedRoots.get(filePEM, o.CAPEM)
		if err != nil {
			if errors.Is(err, errNoCAInFile) {
				return nil, Errorf(CodeInvalidArgument, "CA file %s holds no PEM certificate", o.CAFile)
			}
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
		files, err := auth.NewCertificateFiles(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, &Error{Code: CodeInvalidArgument, Msg: err.Error(), Err: err}
		}
		conf.GetClientCertificate = files.GetClientCertificate // a rotated file is presented on the next connect
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
	c.policy = ownPolicy(p)
	return nil
}

// ownPolicy gives the client its own copy of a built-in policy whose delays depend on the ones before (decorrelated
// jitter), so that clients sharing a policy value do not share its chain.
func ownPolicy(p retry.Policy) retry.Policy {
	if e, ok := p.(*retry.Exponential); ok {
		return e.Clone()
	}
	return p
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
	return c.enqueue(store.KindMessage, wire, c.clk.Now().Add(ttl))
}

// enqueue accepts a message or a reported patch into the outbound queue and hands it to the live link, if any.
func (c *Client) enqueue(kind store.Kind, wire transport.Message, deadline time.Time) (uint64, error) {
	e, dropped, written, err := c.out.Add(kind, wire, deadline)
	var full *outbox.FullError
	switch {
	case errors.Is(err, outbox.ErrClosed):
		return 0, Errorf(CodeClosed, "client closed")
	case errors.As(err, &full):
		return 0, Errorf(CodeQueueFull, "%s", full.Msg)
	}
	for _, d := range dropped {
		c.completed(d, SendFailed, 0, Errorf(CodeDropped, "dropped to make room for %d: the queue was full", e.ID))
	}
	if written != nil { // the journal wakes the loop once the entry is queued
		if err := <-written; err != nil {
			return 0, &Error{Code: CodeStore, Msg: "queue directory: " + err.Error(), Err: err}
		}
		return e.ID, nil
	}
	if !c.flush() {
		notify.Raise(c.kick) // queued: the loop arms its expiry timer and sends it once a link is up
	}
	return e.ID, nil
}

// Recovered says how many undelivered messages and reported patches NewClient loaded from Options.QueueDir. They
// took the ids 1..Recovered() in their original order, messages keep their $.mid; they go out once connected,
// each with its one completion (OnSendComplete or OnReported). 0 in memory mode.
func (c *Client) Recovered() int { return c.out.Recovered() }

// complete ends an accepted entry with its one completion; later calls for the same entry do nothing. In durable
// mode an entry leaves the disk once it can never be sent: delivered, expired or dropped (for a reported patch,
// SendDelivered means that the hub answered it, err says if it refused). One that a give-up (Retry_Expired, a
// connect timeout, a fatal error) or Close failed stays for the next client on the same directory: an outage
// must not empty a durable queue. version is a reported patch's new twin version.
func (c *Client) complete(e *outbox.Entry, result SendResult, version int64, err *Error) {
	if c.out.Complete(e, result != SendFailed || err.Code == CodeDropped) {
		c.completed(e, result, version, err)
	}
}

// completed queues the completion event of a finished entry, by its kind.
func (c *Client) completed(e *outbox.Entry, result SendResult, version int64, err *Error) {
	if e.Kind == store.KindReported {
		c.events.push(event{kind: evReported, id: e.ID, version: version, err: err})
		return
	}
	c.events.push(event{kind: evSendComplete, id: e.ID, result: result, err: err})
}

// closedError is the completion of a message or reported patch Close ended.
func (c *Client) closedError() *Error {
	if c.out.Durable() {
		return Errorf(CodeClosed, "client closed; it stays in %s for the next client", c.opts.QueueDir)
	}
	return Errorf(CodeClosed, "client closed")
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
		if d := c.opts.Dispatcher; d != nil {
			d.closing(c)
		}
		c.out.Close()
		c.stopCancel()
	})
	<-c.loopDone
	return nil
}

// Done is closed once the client is closed and every goroutine of it ended: in thread dispatch mode, after the
// last handler returned; in poll mode, the final events wait for Poll (Client.Poll or its Dispatcher's).
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
