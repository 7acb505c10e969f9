// Package pool makes one transport.Dialer that any number of clients in a process can hold: it puts each device's
// link on a shared connection with room for it (later an AMQP connection with one CBS link and one session per
// device), opening one only when none has room. It knows nothing of the wire; a protocol comes in as an Opener
// of Shared connections.
//
// # Which devices share
//
// Devices share a connection only when they agree on what a connection cannot change per device: Host, HubHost,
// WebSocket and the TLS identity (ServerName, trusted roots, InsecureSkipVerify, minimum and maximum versions).
// Anything else a connection has (keep-alive, cipher suites) comes from the device that opened it.
//
// A device authenticated by an X.509 client certificate gets a connection of its own, never shared: the TLS
// handshake authenticates that one device, so another device's link on it would either be refused or ride on
// that device's identity (IoT Hub's SDKs never multiplex X.509 either). It is not refused, so one pool serves a
// process whatever its devices authenticate with. A TLS configuration whose verification is the application's
// code (VerifyPeerCertificate, VerifyConnection) cannot be compared with another's and gets its own connection
// too.
//
// # Life of a shared connection
//
// A device holds a place on a connection from the moment Dial reserves it until its Conn's Close, so a connection
// is never over-filled and never closed while a device is attaching. Devices that find no room join a connection
// being opened rather than open another: when a connection carrying 500 devices dies and all of them dial again,
// one new connection is opened for them. The pool closes a connection when its last device leaves (a dead shared
// socket must not outlive its clients: .NET SDK issue #1166), and a connection whose Done closed leaves the pool
// at once, so no device attaches to it afterwards and the next one is opened anew (with a fresh DNS lookup: IoT
// Hub's failover keeps the name and changes the address).
//
// The pool keeps no goroutine: openings run in the Dial that needs them, and an ended connection is noticed by
// the next Dial, or closed when its last device leaves.
package pool

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"sync"

	"github.com/iotconn/iotconn/core/transport"
)

// MaxDevices is the most devices one shared connection carries, and the default: IoT Hub accepts at most 999 SAS
// tokens per connection, and the .NET SDK caps its pooled connections at 995.
const MaxDevices = 995

// ErrClosed is the cause of every Dial after Pool.Close.
var ErrClosed = errors.New("pool closed")

// Shared is one connection that carries several devices' links.
//
// When it ends, by a failure or by Close, Done closes first and then every Conn attached to it and not closed
// reports Handler.OnConnectionLost, once: a client redials on that report, and Done closed before it keeps the
// redial off the dead connection. An implementation never holds its own lock while it reports: the client may
// close its Conn, and the pool the Shared, from inside the report.
type Shared interface {
	// Attach opens p's device link on the connection. It fails once the connection has ended or when ctx ends;
	// ctx bounds the attaching only, not the link's life. Calls may be concurrent.
	Attach(ctx context.Context, p transport.DialParams) (transport.Conn, error)
	// Done is closed once the connection has ended.
	Done() <-chan struct{}
	// Close ends the connection and releases what it holds; Done closes. The pool calls it once per connection,
	// possibly after the connection ended on its own, from the Dial or the Conn.Close of whichever client
	// found it ended or left it last, so it must not wait long: that client's supervisor waits for it.
	Close() error
}

// Opener opens a new shared connection as first says (Host, HubHost, WebSocket, TLS), resolving the host
// afresh. ctx bounds the opening only, not the connection's life; the opening gives up when ctx ends. Every
// device is then attached with Attach, first included.
type Opener func(ctx context.Context, first transport.DialParams) (Shared, error)

// Pool is a transport.Dialer that multiplexes device links onto shared connections. Its zero value is not usable;
// see New.
type Pool struct {
	transport.Limits
	open       Opener
	maxDevices int
	ctx        context.Context // ended by Close: ends the openings, attaches and waits in progress
	cancel     context.CancelFunc
	openings   sync.WaitGroup // Dials opening a connection; Close waits for them

	mu     sync.Mutex
	closed bool
	groups map[key][]*entry // live and opening connections, by what their devices must agree on
	ownIDs uint64           // the last key.own given out
}

// key is what devices on one connection must agree on. A connection of its own has a unique own.
type key struct {
	host, hubHost string
	webSocket     bool
	tls           bool
	serverName    string
	minVersion    uint16
	maxVersion    uint16
	insecure      bool
	own           uint64
}

// entry is one connection, live or being opened.
type entry struct {
	key   key
	roots *x509.CertPool // compared with Equal: every client builds its own pool from the same CA file

	// Guarded by Pool.mu.
	devices int    // places reserved: devices attaching or attached
	shared  Shared // nil while opening

	ready     chan struct{} // closed when the opening ended; then shared or err is set
	err       error         // why the opening failed
	cancelled bool          // the opening failed because its Dial's context ended; joiners may try again

	closeOnce sync.Once
	closeErr  error
}

// New returns a pool that opens connections with open and carries at most maxDevices devices on each (0, or
// anything above MaxDevices, means MaxDevices). limits are the protocol's, for the engine's checks.
func New(open Opener, limits transport.Limits, maxDevices int) *Pool {
	if maxDevices <= 0 || maxDevices > MaxDevices {
		maxDevices = MaxDevices
	}
	p := &Pool{Limits: limits, open: open, maxDevices: maxDevices, groups: map[key][]*entry{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// Dial attaches p's device to a live connection with room, to one being opened, or to one it opens. The Conn's
// Close gives the place back; the pool closes a connection when its last device leaves.
func (pl *Pool) Dial(ctx context.Context, p transport.DialParams) (transport.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(pl.ctx, cancel)
	defer stop()
	for {
		e, opener, err := pl.reserve(p)
		if err != nil {
			return nil, err
		}
		if opener {
			err = pl.openEntry(ctx, e, p)
		} else {
			err = pl.await(ctx, e)
		}
		switch {
		case errors.Is(err, errTryAgain):
			continue
		case err != nil:
			return nil, err
		}
		return pl.attach(ctx, e, p)
	}
}

// errTryAgain: the opening this Dial joined ended with its opener's context; the caller's own is alive.
var errTryAgain = errors.New("the opening's dial was cancelled")

// reserve takes a place on a connection with room, live or being opened, or on a new entry that the caller must
// open (opener). Connections it finds ended leave the pool and are closed.
func (pl *Pool) reserve(p transport.DialParams) (e *entry, opener bool, err error) {
	k, own := keyOf(p)
	var ended []*entry
	defer func() {
		for _, d := range ended {
			d.close()
		}
	}()
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed {
		return nil, false, closedError()
	}
	if !own {
		for i := 0; i < len(pl.groups[k]); i++ {
			c := pl.groups[k][i]
			switch {
			case c.shared != nil && isDone(c.shared):
				pl.remove(c)
				ended = append(ended, c)
				i-- // the next one moved into its index
			case c.devices < pl.maxDevices && c.roots.Equal(rootsOf(p)):
				c.devices++
				return c, false, nil
			}
		}
	} else {
		pl.ownIDs++
		k.own = pl.ownIDs
	}
	e = &entry{key: k, roots: rootsOf(p), devices: 1, ready: make(chan struct{})}
	pl.groups[k] = append(pl.groups[k], e)
	pl.openings.Add(1) // under mu with closed false: before Close's Wait
	return e, true, nil
}

// openEntry opens e for the devices that reserved places on it; ctx is the opening Dial's.
func (pl *Pool) openEntry(ctx context.Context, e *entry, p transport.DialParams) error {
	defer pl.openings.Done()
	s, err := pl.open(ctx, p)
	var orphan Shared // opened after Close took the pool's connections
	pl.mu.Lock()
	closed := pl.closed
	if err == nil && !closed {
		e.shared = s
	} else {
		if err == nil {
			orphan = s
		}
		if closed {
			err = closedError()
		}
		pl.remove(e)
		e.devices--
		e.err, e.cancelled = err, ctx.Err() != nil && !closed
	}
	close(e.ready)
	pl.mu.Unlock()
	if orphan != nil {
		orphan.Close()
	}
	return err
}

// await waits for the opening of e that this Dial joined.
func (pl *Pool) await(ctx context.Context, e *entry) error {
	select {
	case <-e.ready:
	case <-ctx.Done():
		pl.release(e)
		return pl.ended(ctx)
	}
	if e.err == nil {
		return nil
	}
	pl.release(e)
	switch {
	case pl.isClosed():
		return closedError()
	case e.cancelled && ctx.Err() == nil:
		return errTryAgain
	}
	return e.err
}

// attach opens the device's link on e, where it holds a place; a failure gives the place back.
func (pl *Pool) attach(ctx context.Context, e *entry, p transport.DialParams) (transport.Conn, error) {
	c, err := e.shared.Attach(ctx, p)
	if err != nil {
		pl.release(e)
		if pl.isClosed() {
			return nil, closedError()
		}
		return nil, err
	}
	return &conn{Conn: c, pool: pl, e: e}, nil
}

// release gives back a place on e; the last device to leave a live connection closes it.
func (pl *Pool) release(e *entry) {
	pl.mu.Lock()
	e.devices--
	last := e.devices == 0 && e.shared != nil
	if last {
		pl.remove(e)
	}
	pl.mu.Unlock()
	if last {
		e.close()
	}
}

// remove takes e out of the pool, if it is still there. Called with mu held.
func (pl *Pool) remove(e *entry) {
	g := pl.groups[e.key]
	if i := slices.Index(g, e); i >= 0 {
		g = slices.Delete(g, i, i+1)
	}
	if len(g) == 0 {
		delete(pl.groups, e.key)
	} else {
		pl.groups[e.key] = g
	}
}

func (e *entry) close() error {
	e.closeOnce.Do(func() { e.closeErr = e.shared.Close() })
	return e.closeErr
}

// ended is how a Dial ends when its context or the pool did.
func (pl *Pool) ended(ctx context.Context) error {
	if pl.isClosed() {
		return closedError()
	}
	return &transport.Error{Kind: transport.KindTimeout, Op: "connect", Err: ctx.Err()}
}

func (pl *Pool) isClosed() bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.closed
}

func closedError() error {
	return &transport.Error{Kind: transport.KindProtocol, Op: "connect", Err: ErrClosed}
}

// Close closes every connection: their devices report OnConnectionLost (close the clients first to avoid that).
// Dials in progress end, and later ones fail with ErrClosed. It returns once no opening is in progress.
func (pl *Pool) Close() error {
	pl.mu.Lock()
	pl.closed = true
	var live []*entry
	for _, g := range pl.groups {
		for _, e := range g {
			if e.shared != nil {
				live = append(live, e)
			}
		}
	}
	pl.groups = map[key][]*entry{}
	pl.mu.Unlock()
	pl.cancel()
	var errs []error
	for _, e := range live {
		errs = append(errs, e.close())
	}
	pl.openings.Wait()
	return errors.Join(errs...)
}

// Stats counts devices (attached or attaching) per connection, most first.
type Stats struct {
	Live    []int // connections up
	Opening []int // connections being opened: the devices waiting for each
	Ended   int   // connections that ended and still hold devices which have not closed their links yet
}

// Stats says how the pool's devices are spread, for tests and benchmarks.
func (pl *Pool) Stats() Stats {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	var s Stats
	for _, g := range pl.groups {
		for _, e := range g {
			switch {
			case e.shared == nil:
				s.Opening = append(s.Opening, e.devices)
			case !isDone(e.shared):
				s.Live = append(s.Live, e.devices)
			default:
				s.Ended++
			}
		}
	}
	slices.Sort(s.Live)
	slices.Reverse(s.Live)
	slices.Sort(s.Opening)
	slices.Reverse(s.Opening)
	return s
}

// conn is a device's link on a shared connection; Close also gives its place back.
type conn struct {
	transport.Conn
	pool *Pool
	e    *entry
	once sync.Once
	err  error
}

func (c *conn) Close() error {
	c.once.Do(func() {
		c.err = c.Conn.Close()
		c.pool.release(c.e)
	})
	return c.err
}

func isDone(s Shared) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

// keyOf says what p's connection must agree on, and whether p needs a connection of its own.
func keyOf(p transport.DialParams) (k key, own bool) {
	k = key{host: p.Host, hubHost: p.HubHost, webSocket: p.WebSocket}
	if p.HubHost == p.Host {
		k.hubHost = "" // "" means Host
	}
	t := p.TLS
	if t == nil {
		return k, false
	}
	k.tls, k.serverName, k.minVersion, k.maxVersion, k.insecure = true, t.ServerName, t.MinVersion, t.MaxVersion,
		t.InsecureSkipVerify
	return k, clientCertificate(t) || t.VerifyPeerCertificate != nil || t.VerifyConnection != nil
}

func clientCertificate(t *tls.Config) bool {
	return len(t.Certificates) > 0 || t.GetClientCertificate != nil
}

func rootsOf(p transport.DialParams) *x509.CertPool {
	if p.TLS == nil {
		return nil
	}
	return p.TLS.RootCAs
}
