package amqp

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Server serves AMQP 1.0 on connections the caller accepts and owns (TLS and WebSocket stay outside).
type Server struct {
	ContainerID    string
	MaxFrameSize   uint32        // advertised in open; 0 = 65536
	IdleTimeout    time.Duration // advertised: a peer silent this long is closed; 0 = none
	MaxMessageSize uint64        // largest delivery a link receives; 0 = 1 MiB
	// SASLMechanisms are offered when a peer sends the SASL protocol header; none refuses SASL.
	SASLMechanisms []Symbol
	// SASL checks a peer's sasl-init; its value becomes Conn.Auth, an error fails the exchange. nil accepts.
	SASL func(mechanism Symbol, initial []byte, hostname string) (any, error)
	// Open is called once the peer's open frame arrived and returns the handler of the connection's links; an
	// error answers open and then closes the connection with it.
	Open func(c *Conn) (Handler, *Error)
}

// Handler is what a server does with a connection's links. Its methods run on the connection's reader goroutine,
// one at a time and never under the engine's lock, so they may call Send, Detach and Close.
type Handler interface {
	// Attach decides on a link the peer attaches: nil accepts it, an error refuses it (attach with a null
	// terminus, then detach with the error). SetCredit may be called here.
	Attach(l *Link) *Error
	// Transfer takes a complete delivery on a link the peer sends on and returns the outcome that settles it
	// (nil accepts). A delivery the peer sent settled gets no disposition whatever is returned.
	Transfer(l *Link, d *Delivery) DeliveryState
	// Detached reports that an accepted link ended while its connection stayed open: err is the peer's error when
	// it detached the link or ended the session, the hub's when the hub called Detach.
	Detached(l *Link, err *Error)
	// Closed reports that the connection ended; no method is called after it.
	Closed(err error)
}

// Delivery is a complete message received on a link.
type Delivery struct {
	ID      uint32
	Tag     []byte
	Format  uint32 // message-format: 0 for a plain message
	Payload []byte // the encoded message sections, every transfer frame joined
}

var (
	headerAMQP = []byte{'A', 'M', 'Q', 'P', 0, 1, 0, 0}
	headerSASL = []byte{'A', 'M', 'Q', 'P', 3, 1, 0, 0}
)

const (
	defaultMaxFrameSize   = 65536
	defaultMaxMessageSize = 1 << 20
	sessionWindow         = 2048            // transfer frames a session takes before it widens its window again
	closeWait             = 2 * time.Second // how long a closing connection waits for the peer's close
	headerTimeout         = 30 * time.Second
)

// Conn is one AMQP connection.
type Conn struct {
	srv     *Server
	nc      net.Conn
	br      *bufio.Reader
	auth    any
	handler Handler

	peerMaxFrame uint32
	peerIdle     time.Duration

	mu        sync.Mutex // guards the state below and serialises writes
	wbuf      []byte
	sessions  map[uint16]*Session
	closeSent bool
	closeBy   time.Time // read deadline once the close frame is out
	ended     bool
	calls     []func() // handler callbacks queued under mu, run by the reader once it is released
}

// Auth is what Server.SASL returned for this connection; nil without SASL.
func (c *Conn) Auth() any { return c.auth }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Session is one session of a connection; the server mirrors the peer's channel numbers and link handles, which
// are unique on the peer's side and so on ours.
type Session struct {
	conn    *Conn
	channel uint16

	nextIncomingID       uint32
	incomingWindow       uint32
	nextOutgoingID       uint32
	remoteIncomingWindow uint32
	nextDeliveryID       uint32
	links                map[uint32]*Link
	unsettledOut         map[uint32]*outDelivery // sent, awaiting the peer's disposition, by delivery id
	unsettledIn          map[uint32]bool         // received in receiver-settle mode second, awaiting the peer's settle
	endSent              bool                    // the server ended the session and awaits the peer's end
	endErr               *Error
}

// Conn is the session's connection.
func (s *Session) Conn() *Conn { return s.conn }

// Link is one attached link. The server is the receiver when the peer sends, and the sender otherwise.
type Link struct {
	sess       *Session
	name       string
	handle     uint32
	receiving  bool // the server receives on this link
	address    string
	peerSource *terminus
	peerTarget *terminus
	sndSettle  SenderSettleMode
	rcvSettle  ReceiverSettleMode

	accepted   bool
	detachSent bool
	detachErr  *Error // the error the server detached with
	gone       bool

	// receiving side
	credit        uint32 // credit the peer holds
	creditWindow  uint32 // credit kept topped up; 0 stops issuing
	inFlight      uint32 // credit taken back by SetCredit that transfers already on their way may still use
	deliveryCount uint32
	partial       *Delivery
	partialSettle bool

	// sending side
	peerCredit uint32
	drain      bool
	queue      []*outDelivery
}

// outDelivery is a delivery the server sends: its frames go out as credit and the session window allow.
type outDelivery struct {
	l         *Link
	tag       []byte
	format    uint32
	payload   []byte
	sent      int  // payload bytes already in frames
	started   bool // the first frame is out
	id        uint32
	settled   bool // sent pre-settled
	onSettled func(DeliveryState, error)
}

// Receiving reports whether the server receives on the link (the peer attached as sender).
func (l *Link) Receiving() bool { return l.receiving }

// Address is the node the link serves: the peer's target when the peer sends, its source when it receives.
func (l *Link) Address() string { return l.address }

// Session is the link's session.
func (l *Link) Session() *Session { return l.sess }

// ErrLinkGone is given to a send's onSettled when the link or connection ended before the peer settled it.
var ErrLinkGone = errors.New("amqp: link ended before the delivery was settled")

// Serve runs the protocol on nc until the connection ends, and closes nc. The caller sets nc's deadline for the
// protocol header; Serve manages read deadlines from then on.
func (s *Server) Serve(nc net.Conn) error {
	c := &Conn{srv: s, nc: nc, br: bufio.NewReaderSize(nc, 4096),
		sessions: map[uint16]*Session{}, peerMaxFrame: 1<<32 - 1}
	err := c.run()
	c.mu.Lock()
	c.ended = true
	for _, sess := range c.sessions {
		for _, l := range sess.links {
			c.dropLink(l, nil, false)
		}
	}
	calls := c.takeCalls()
	c.mu.Unlock()
	_ = nc.Close()
	for _, f := range calls {
		f()
	}
	if c.handler != nil {
		c.handler.Closed(err)
	}
	return err
}

func (s *Server) maxFrame() uint32 {
	if s.MaxFrameSize == 0 {
		return defaultMaxFrameSize
	}
	return max(s.MaxFrameSize, minMaxFrameSize)
}

func (s *Server) maxMessage() uint64 {
	if s.MaxMessageSize == 0 {
		return defaultMaxMessageSize
	}
	return s.MaxMessageSize
}

// run does the protocol header, SASL and open exchanges, then reads frames until the connection ends.
func (c *Conn) run() error {
	hdr, err := c.readHeader()
	if err != nil {
		return err
	}
	if bytes.Equal(hdr, headerSASL) && len(c.srv.SASLMechanisms) > 0 {
		if err := c.sasl(); err != nil {
			return err
		}
		if hdr, err = c.readHeader(); err != nil {
			return err
		}
	}
	if !bytes.Equal(hdr, headerAMQP) {
		// The spec's answer to an unsupported header: the header the server does support, then close.
		_, _ = c.nc.Write(headerAMQP)
		return fmt.Errorf("amqp: unsupported protocol header % x", hdr)
	}
	if _, err := c.nc.Write(headerAMQP); err != nil {
		return err
	}
	fr, err := c.readFrame()
	if err != nil {
		return c.fail(err)
	}
	o, ok := fr.body.(*open)
	if !ok || fr.typ != frameAMQP {
		return c.fail(Errorf(CondNotAllowed, "first frame is not open"))
	}
	c.peerIdle = o.idleTimeout
	c.peerMaxFrame = max(o.maxFrameSize, minMaxFrameSize)
	handler, refusal := c.srv.Open(c)
	c.mu.Lock()
	err = c.write(frameAMQP, 0, &open{containerID: c.srv.ContainerID, maxFrameSize: c.srv.maxFrame(),
		channelMax: 1<<16 - 1, idleTimeout: c.srv.IdleTimeout}, nil)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if refusal != nil {
		return c.fail(refusal)
	}
	c.handler = handler
	if c.peerIdle > 0 {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.heartbeat(stop)
		}()
		defer wg.Wait()
		defer close(stop)
	}
	return c.loop()
}

func (c *Conn) readHeader() ([]byte, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(headerTimeout))
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(c.br, hdr); err != nil {
		return nil, err
	}
	return hdr, nil
}

// heartbeat sends an empty frame at half the peer's idle timeout, so the peer never sees the server idle.
func (c *Conn) heartbeat(stop <-chan struct{}) {
	t := time.NewTicker(c.peerIdle / 2)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.mu.Lock()
			if !c.closeSent {
				_ = c.write(frameAMQP, 0, nil, nil)
			}
			c.mu.Unlock()
		case <-stop:
			return
		}
	}
}

// sasl runs the SASL exchange after the peer's SASL header.
func (c *Conn) sasl() error {
	c.mu.Lock()
	_, err := c.nc.Write(headerSASL)
	if err == nil {
		err = c.write(frameSASL, 0, &saslMechanisms{mechanisms: c.srv.SASLMechanisms}, nil)
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	fr, err := c.readFrame()
	if err != nil {
		return err
	}
	init, ok := fr.body.(*saslInit)
	if !ok || fr.typ != frameSASL {
		return fmt.Errorf("amqp: SASL exchange got %T, not sasl-init", fr.body)
	}
	code := uint8(saslOK)
	var authErr error
	if !containsSymbol(c.srv.SASLMechanisms, init.mechanism) {
		code, authErr = saslAuth, fmt.Errorf("amqp: SASL mechanism %s not offered", init.mechanism)
	} else if c.srv.SASL != nil {
		if c.auth, authErr = c.srv.SASL(init.mechanism, init.initial, init.hostname); authErr != nil {
			code = saslAuth
		}
	}
	c.mu.Lock()
	err = c.write(frameSASL, 0, &saslOutcome{code: code}, nil)
	c.mu.Unlock()
	if authErr != nil {
		return authErr
	}
	return err
}

func containsSymbol(list []Symbol, s Symbol) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ParsePlain splits a SASL PLAIN initial response into its authorisation id, user name and password.
func ParsePlain(initial []byte) (authzid, user, password string, err error) {
	parts := bytes.Split(initial, []byte{0})
	if len(parts) != 3 {
		return "", "", "", errors.New("amqp: SASL PLAIN response is not authzid NUL user NUL password")
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), nil
}

// readFrame reads one frame, enforcing the advertised maximum size.
func (c *Conn) readFrame() (frame, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return frame{}, err
	}
	size := binary.BigEndian.Uint32(hdr[:4])
	if size < 8 || size > c.srv.maxFrame() {
		return frame{}, Errorf(CondFramingError, "frame size %d outside 8..%d", size, c.srv.maxFrame())
	}
	buf := make([]byte, size)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(c.br, buf[8:]); err != nil {
		return frame{}, err
	}
	return parseFrame(buf)
}

// write sends one frame; the caller holds mu. A failed write closes the socket, which ends the reader.
func (c *Conn) write(typ byte, channel uint16, body performer, payload []byte) error {
	b, err := appendFrame(c.wbuf[:0], typ, channel, body, payload)
	if err != nil {
		return err
	}
	c.wbuf = b
	if _, err := c.nc.Write(b); err != nil {
		_ = c.nc.Close()
		return err
	}
	return nil
}

// fail answers a protocol error with close (decode errors as amqp:decode-error) and waits for the peer's close.
func (c *Conn) fail(err error) error {
	var ae *Error
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, ErrDecode):
		ae = &Error{Condition: CondDecodeError, Description: err.Error()}
	default:
		return err // the network: nothing to answer
	}
	c.sendClose(ae)
	c.awaitClose()
	return ae
}

// Close closes the connection with err (nil for a clean close); the reader ends once the peer answers or after a
// short wait.
func (c *Conn) Close(err *Error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent || c.ended {
		return
	}
	c.sendCloseLocked(err)
}

func (c *Conn) sendClose(err *Error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closeSent {
		c.sendCloseLocked(err)
	}
}

func (c *Conn) sendCloseLocked(err *Error) {
	c.closeSent = true
	c.closeBy = time.Now().Add(closeWait)
	_ = c.write(frameAMQP, 0, &closeFrame{err: err}, nil)
	_ = c.nc.SetReadDeadline(c.closeBy)
}

// awaitClose reads and drops frames until the peer's close, so the peer reads the server's close before the
// socket goes (closing with unread input would reset the connection and could lose it).
func (c *Conn) awaitClose() {
	_ = c.nc.SetReadDeadline(time.Now().Add(closeWait))
	for range 1000 {
		fr, err := c.readFrame()
		if err != nil {
			return
		}
		if _, ok := fr.body.(*closeFrame); ok {
			return
		}
	}
}

// loop reads and handles frames until the connection ends.
func (c *Conn) loop() error {
	for {
		c.mu.Lock()
		deadline := c.closeBy
		if !c.closeSent {
			deadline = time.Time{}
			if c.srv.IdleTimeout > 0 {
				deadline = time.Now().Add(c.srv.IdleTimeout)
			}
		}
		c.mu.Unlock()
		_ = c.nc.SetReadDeadline(deadline)
		fr, err := c.readFrame()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && deadline != c.closeBy {
				err = Errorf(CondResourceLimit, "no frame within the idle timeout of %s", c.srv.IdleTimeout)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
				return err
			}
			return c.fail(err)
		}
		if fr.body == nil {
			continue // heartbeat
		}
		if fr.typ != frameAMQP {
			return c.fail(Errorf(CondNotAllowed, "SASL frame after open"))
		}
		done, err := c.handle(fr)
		if err != nil {
			return c.fail(err)
		}
		if done {
			return nil
		}
	}
}

// takeCalls returns and clears the queued callbacks; the caller holds mu.
func (c *Conn) takeCalls() []func() {
	calls := c.calls
	c.calls = nil
	return calls
}

// handle processes one frame; done is true once the connection closed cleanly.
func (c *Conn) handle(fr frame) (done bool, err error) {
	c.mu.Lock()
	if cl, ok := fr.body.(*closeFrame); ok {
		if !c.closeSent {
			c.closeSent = true
			_ = c.write(frameAMQP, 0, &closeFrame{}, nil)
		}
		c.mu.Unlock()
		if cl.err != nil {
			return true, cl.err
		}
		return true, nil
	}
	if c.closeSent {
		c.mu.Unlock()
		return false, nil // the server is closing: everything but the peer's close is moot
	}
	var post func()
	switch b := fr.body.(type) {
	case *open:
		err = Errorf(CondNotAllowed, "second open")
	case *begin:
		err = c.onBegin(fr.channel, b)
	case *end:
		err = c.onEnd(fr.channel, b)
	default:
		sess := c.sessions[fr.channel]
		if sess == nil {
			err = Errorf(CondNotAllowed, "frame %T on channel %d, which has no session", fr.body, fr.channel)
			break
		}
		if !sess.endSent { // once the server ended the session, only the peer's end matters
			post, err = sess.handle(b, fr.payload)
		}
	}
	calls := c.takeCalls()
	c.mu.Unlock()
	for _, f := range calls {
		f()
	}
	if post != nil {
		post()
	}
	return false, err
}

func (c *Conn) onBegin(channel uint16, b *begin) error {
	if b.remoteChannel != nil {
		return Errorf(CondNotAllowed, "begin answers a begin the server never sent")
	}
	if c.sessions[channel] != nil {
		return Errorf(CondNotAllowed, "channel %d already has a session", channel)
	}
	s := &Session{conn: c, channel: channel, nextIncomingID: b.nextOutgoingID, incomingWindow: sessionWindow,
		remoteIncomingWindow: b.incomingWindow, links: map[uint32]*Link{}, unsettledOut: map[uint32]*outDelivery{},
		unsettledIn: map[uint32]bool{}}
	c.sessions[channel] = s
	ch := channel
	return c.write(frameAMQP, channel, &begin{remoteChannel: &ch, incomingWindow: sessionWindow,
		outgoingWindow: 1<<32 - 1, handleMax: 1<<32 - 1}, nil)
}

func (c *Conn) onEnd(channel uint16, e *end) error {
	s := c.sessions[channel]
	if s == nil {
		return Errorf(CondNotAllowed, "end on channel %d, which has no session", channel)
	}
	delete(c.sessions, channel)
	if s.endSent {
		e = &end{err: s.endErr} // the peer's answer to the server's end: the links went for the server's reason
	}
	for _, l := range s.links {
		c.dropLink(l, e.err, true)
	}
	if s.endSent {
		return nil
	}
	return c.write(frameAMQP, channel, &end{}, nil)
}

// End ends the session with err (nil for a clean end); its links are reported detached once the peer answers.
func (s *Session) End(err *Error) {
	c := s.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.endSent || c.closeSent || c.ended || c.sessions[s.channel] != s {
		return
	}
	s.endSent, s.endErr = true, err
	_ = c.write(frameAMQP, s.channel, &end{err: err}, nil)
}

// dropLink forgets a link, fails what it still had to send and queues the Detached callback (report false: the
// whole connection ended, which Closed reports). The caller holds mu.
func (c *Conn) dropLink(l *Link, err *Error, report bool) {
	if l.gone {
		return
	}
	l.gone = true
	delete(l.sess.links, l.handle)
	for id, d := range l.sess.unsettledOut {
		if d.l == l {
			delete(l.sess.unsettledOut, id)
			c.settleLater(d, nil, ErrLinkGone)
		}
	}
	for _, d := range l.queue {
		c.settleLater(d, nil, ErrLinkGone)
	}
	l.queue = nil
	if report && l.accepted && c.handler != nil {
		h := c.handler
		c.calls = append(c.calls, func() { h.Detached(l, err) })
	}
}

func (c *Conn) settleLater(d *outDelivery, state DeliveryState, err error) {
	if d.onSettled != nil {
		f := d.onSettled
		c.calls = append(c.calls, func() { f(state, err) })
	}
}
