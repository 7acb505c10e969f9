package hubsim

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// connectTimeout bounds the TLS handshake and the wait for the first packet of a new connection.
	connectTimeout = 30 * time.Second
	// writeTimeout bounds one write to a device that stopped reading; the connection is cut when it passes.
	writeTimeout = 10 * time.Second
)

// hubConn is an accepted TCP connection that the fault layer can cut or stall, whatever protocol runs on it.
type hubConn struct {
	net.Conn // the raw TCP connection
	gate     *gate
	hubDone  <-chan struct{}
	killed   chan struct{}
	killOnce sync.Once
	listener string
	top      atomic.Value // protoConn: the TLS or WebSocket connection running on this one
}

// protoConn holds the protocol-level connection in an atomic.Value (which needs one concrete type).
type protoConn struct{ net.Conn }

func (c *hubConn) setTop(top net.Conn) { c.top.Store(protoConn{top}) }

// closeGracefully closes at the protocol level (TLS close_notify, WebSocket close) and then the socket (FIN).
func (c *hubConn) closeGracefully() {
	if top, ok := c.top.Load().(protoConn); ok {
		_ = top.Close()
	}
	_ = c.Close()
}

// Read stalls data that arrived during a blackhole until it ends, so the device sees no answer.
func (c *hubConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.gate.waitOpen(c.killed, c.hubDone)
	return n, err
}

func (c *hubConn) Write(b []byte) (int, error) {
	c.gate.waitOpen(c.killed, c.hubDone)
	_ = c.Conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	n, err := c.Conn.Write(b)
	if err != nil {
		c.kill()
	}
	return n, err
}

// kill cuts the connection with a TCP reset: no protocol goodbye, no FIN.
func (c *hubConn) kill() {
	c.killOnce.Do(func() {
		close(c.killed)
		if tc, ok := c.Conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Conn.Close()
	})
}

func (c *hubConn) Close() error {
	c.killOnce.Do(func() { close(c.killed) })
	return c.Conn.Close()
}

// hubConnOf finds the TCP connection under a protocol connection (TLS, WebSocket).
func hubConnOf(c net.Conn) *hubConn {
	switch c := c.(type) {
	case *hubConn:
		return c
	case *tls.Conn:
		return hubConnOf(c.NetConn())
	case *wsConn:
		return c.hc
	}
	return nil
}

// gate is the accept-side fault state: blackhole, throttling, failover and per-device refusals. It knows no
// protocol.
type gate struct {
	mu        sync.Mutex
	open      chan struct{} // closed while traffic flows; a fresh channel while blackholed
	held      []net.Conn    // connections accepted during a blackhole, never answered
	rate      int           // connects allowed per second; 0 = unlimited
	rateUntil time.Time
	answer    ThrottleAnswer // how a connect over the budget is refused
	second    int64
	count     int
	failover  time.Time // connects are refused as during a failover until then
}

func newGate() *gate {
	g := &gate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gate) waitOpen(killed, hubDone <-chan struct{}) {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
	case <-killed:
	case <-hubDone:
	}
}

// hold keeps a new connection unanswered if a blackhole is on.
func (g *gate) hold(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		return false
	default:
		g.held = append(g.held, c)
		return true
	}
}

func (g *gate) startBlackhole() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

// endBlackhole lets stalled traffic flow again and closes the connections accepted meanwhile.
func (g *gate) endBlackhole() {
	g.mu.Lock()
	held := g.held
	g.held = nil
	select {
	case <-g.open:
	default:
		close(g.open)
	}
	g.mu.Unlock()
	for _, c := range held {
		_ = c.Close()
	}
}

func (g *gate) setThrottle(rate int, until time.Time, answer ThrottleAnswer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rate, g.rateUntil, g.count, g.answer = rate, until, 0, answer
}

func (g *gate) setFailover(until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failover = until
}

// inFailover reports whether a failover fault is refusing connects.
func (g *gate) inFailover(now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return now.Before(g.failover)
}

// allowConnect counts a connect attempt against the throttle's per-second budget; a refused one is answered as
// the throttle says.
func (g *gate) allowConnect(now time.Time) (bool, ThrottleAnswer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.rate <= 0 || (!g.rateUntil.IsZero() && now.After(g.rateUntil)) {
		return true, ""
	}
	if s := now.Unix(); s != g.second {
		g.second, g.count = s, 0
	}
	g.count++
	return g.count <= g.rate, g.answer
}

// listener is one listening socket of the hub. Its address survives a close so hub-down and restart reopen the
// same port.
type listener struct {
	name  string // "mqtts", "tcp", "ws"
	addr  atomic.Value
	serve func(*hubConn)

	mu sync.Mutex
	ln net.Listener // nil while closed
}

func (l *listener) address() string { return l.addr.Load().(string) }

// server is what the hub and the DPS front share: it owns their goroutines, their live connections and the
// accept-side fault state.
type server struct {
	gate *gate
	done chan struct{} // closed when Close begins
	wg   sync.WaitGroup

	connMu  sync.Mutex
	conns   map[*hubConn]struct{}
	closing bool
}

func newServer() server {
	return server{gate: newGate(), done: make(chan struct{}), conns: map[*hubConn]struct{}{}}
}

// spawn runs fn in a goroutine Close waits for; once Close has begun it runs nothing and returns false.
func (h *server) spawn(fn func()) bool {
	h.connMu.Lock()
	defer h.connMu.Unlock()
	if h.closing {
		return false
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		fn()
	}()
	return true
}

// beginClose stops spawning and tells every goroutine to end; the caller then shuts listeners and waits on wg.
func (h *server) beginClose() {
	close(h.done)
	h.connMu.Lock()
	h.closing = true
	h.connMu.Unlock()
}

// open binds the listener and starts its accept loop.
func (h *server) open(l *listener) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", l.address())
	if err != nil {
		return err
	}
	if !h.spawn(func() { h.acceptLoop(l, ln) }) {
		_ = ln.Close()
		return ErrClosed
	}
	l.ln = ln
	l.addr.Store(ln.Addr().String())
	return nil
}

// stop closes listeners and cuts every connection (clean protocol closes when graceful): hub-down, DPS down.
func (h *server) stop(ls []*listener, graceful bool) {
	for _, l := range ls {
		l.shut()
	}
	h.killConns(graceful)
}

// reopen opens listeners again on their addresses, logging those that fail, and tells waiters they are back.
func (h *server) reopen(ls []*listener, events *eventBus) {
	for _, l := range ls {
		if err := h.open(l); err != nil {
			events.logf("reopening %s listener on %s: %v", l.name, l.address(), err)
		}
	}
	events.emit(Event{Kind: EventFault, Reason: "listeners reopened"})
}

// present drops the listeners that are off (nil).
func present(ls ...*listener) []*listener {
	var out []*listener
	for _, l := range ls {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}

// shut closes the listening socket; connections already accepted are left to the caller.
func (l *listener) shut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		_ = l.ln.Close()
		l.ln = nil
	}
}

func (h *server) acceptLoop(l *listener, ln net.Listener) {
	for {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		if h.gate.hold(raw) {
			continue
		}
		hc := &hubConn{Conn: raw, gate: h.gate, hubDone: h.done, killed: make(chan struct{}), listener: l.name}
		_ = raw.SetDeadline(time.Now().Add(connectTimeout))
		if !h.track(hc) || !h.spawn(func() {
			defer h.untrack(hc)
			defer hc.kill()
			l.serve(hc)
		}) {
			h.untrack(hc)
			_ = raw.Close()
		}
	}
}

// track records a live connection; false once the hub is closing.
func (h *server) track(hc *hubConn) bool {
	h.connMu.Lock()
	defer h.connMu.Unlock()
	if h.closing {
		return false
	}
	h.conns[hc] = struct{}{}
	return true
}

func (h *server) untrack(hc *hubConn) {
	h.connMu.Lock()
	defer h.connMu.Unlock()
	delete(h.conns, hc)
}

// killConns cuts every live connection accepted on the named listeners (all when none are named).
func (h *server) killConns(graceful bool, listeners ...string) {
	h.connMu.Lock()
	var victims []*hubConn
	for hc := range h.conns {
		if len(listeners) == 0 || contains(listeners, hc.listener) {
			victims = append(victims, hc)
		}
	}
	h.connMu.Unlock()
	for _, hc := range victims {
		if graceful {
			hc.closeGracefully()
		} else {
			hc.kill()
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
