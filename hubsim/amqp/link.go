package amqp

import (
	"encoding/binary"
	"errors"
)

// handle processes a link-level frame of the session; the caller holds mu. post, when set, runs after mu is
// released: it calls the handler for an attach or a delivery and then finishes the exchange.
func (s *Session) handle(body any, payload []byte) (post func(), err error) {
	c := s.conn
	switch b := body.(type) {
	case *attach:
		return s.onAttach(b)
	case *flow:
		return nil, s.onFlow(b)
	case *transfer:
		return s.onTransfer(b, payload)
	case *disposition:
		return nil, s.onDisposition(b)
	case *detach:
		l := s.links[b.handle]
		if l == nil {
			return nil, Errorf(CondUnattachedHandle, "detach of handle %d", b.handle)
		}
		if l.detachSent {
			c.dropLink(l, l.detachErr, true) // the peer's answer to the server's detach
			return nil, nil
		}
		c.dropLink(l, b.err, true)
		return nil, c.write(frameAMQP, s.channel, &detach{handle: b.handle, closed: b.closed}, nil)
	}
	return nil, Errorf(CondNotAllowed, "unexpected %T", body)
}

func (s *Session) onAttach(a *attach) (func(), error) {
	c := s.conn
	if s.links[a.handle] != nil {
		return nil, Errorf(CondHandleInUse, "handle %d is attached", a.handle)
	}
	l := &Link{sess: s, name: a.name, handle: a.handle, receiving: a.role == roleSender, peerSource: a.source,
		peerTarget: a.target, sndSettle: a.sndSettleMode, rcvSettle: a.rcvSettleMode}
	if l.receiving && a.target != nil {
		l.address = a.target.address
	} else if !l.receiving && a.source != nil {
		l.address = a.source.address
	}
	if l.receiving && a.initialCount != nil {
		l.deliveryCount = *a.initialCount
	}
	s.links[a.handle] = l
	h := c.handler
	return func() {
		refusal := h.Attach(l)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closeSent || l.gone {
			return
		}
		c.reply(l, refusal)
	}, nil
}

// reply answers a peer's attach: accepted, with the initial credit of a receiving link; refused, with a null
// terminus and a detach carrying the error. The caller holds mu.
func (c *Conn) reply(l *Link, refusal *Error) {
	s := l.sess
	r := &attach{name: l.name, handle: l.handle, role: l.receiving, sndSettleMode: l.sndSettle,
		rcvSettleMode: l.rcvSettle, source: l.peerSource, target: l.peerTarget}
	if l.receiving {
		r.maxMessageSize = c.srv.maxMessage()
	} else {
		r.initialCount = new(uint32)
	}
	if refusal != nil {
		if l.receiving {
			r.target = nil
		} else {
			r.source = nil
		}
	}
	if c.write(frameAMQP, s.channel, r, nil) != nil {
		return
	}
	if refusal != nil {
		l.detachSent, l.detachErr = true, refusal
		_ = c.write(frameAMQP, s.channel, &detach{handle: l.handle, closed: true, err: refusal}, nil)
		return
	}
	l.accepted = true
	if l.receiving && l.creditWindow > 0 {
		l.credit = l.creditWindow
		_ = s.writeLinkFlow(l, false)
	}
}

// SetCredit sets how many deliveries the peer may send ahead on a receiving link; the server tops the peer's
// credit back up to n as deliveries arrive. 0 withholds credit: the peer's credit drops to none (a flow may lower
// it) and it gets no more until SetCredit raises it.
func (l *Link) SetCredit(n uint32) {
	c := l.sess.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	l.creditWindow = n
	if l.accepted && !l.gone && !c.closeSent && l.credit != n {
		if n < l.credit {
			l.inFlight += l.credit - n // the peer may have sent on the old credit before it sees the flow
		}
		l.credit = n
		_ = l.sess.writeLinkFlow(l, false)
	}
}

// writeLinkFlow sends the session's window and the link's state; the caller holds mu.
func (s *Session) writeLinkFlow(l *Link, drain bool) error {
	f := s.flowFrame()
	h, dc, credit := l.handle, l.deliveryCount, l.credit
	if !l.receiving {
		credit = l.peerCredit
		avail := uint32(len(l.queue))
		f.available = &avail
	}
	f.handle, f.deliveryCount, f.linkCredit, f.drain = &h, &dc, &credit, drain
	return s.conn.write(frameAMQP, s.channel, f, nil)
}

func (s *Session) flowFrame() *flow {
	next := s.nextIncomingID
	return &flow{nextIncomingID: &next, incomingWindow: s.incomingWindow, nextOutgoingID: s.nextOutgoingID,
		outgoingWindow: 1<<32 - 1}
}

func (s *Session) onFlow(f *flow) error {
	// The peer's incoming window counts from its next-incoming-id; without one it has seen none of ours yet.
	nextIn := uint32(0)
	if f.nextIncomingID != nil {
		nextIn = *f.nextIncomingID
	}
	s.remoteIncomingWindow = nextIn + f.incomingWindow - s.nextOutgoingID
	if f.handle == nil {
		if f.echo {
			if err := s.conn.write(frameAMQP, s.channel, s.flowFrame(), nil); err != nil {
				return err
			}
		}
		return s.flushAll()
	}
	l := s.links[*f.handle]
	if l == nil {
		return Errorf(CondUnattachedHandle, "flow for handle %d", *f.handle)
	}
	if l.receiving {
		if f.echo {
			return s.writeLinkFlow(l, false)
		}
		return nil
	}
	if f.linkCredit != nil {
		// credit = the peer's delivery-count + link-credit - ours (the peer's count may lag behind what was sent)
		peerCount := uint32(0)
		if f.deliveryCount != nil {
			peerCount = *f.deliveryCount
		}
		l.peerCredit = peerCount + *f.linkCredit - l.deliveryCount
	}
	l.drain = f.drain
	if err := s.flush(l); err != nil {
		return err
	}
	if f.echo && !f.drain {
		return s.writeLinkFlow(l, false)
	}
	return s.flushAll()
}

// flushAll sends what every sending link can now send.
func (s *Session) flushAll() error {
	for _, l := range s.links {
		if !l.receiving {
			if err := s.flush(l); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush sends the link's queued deliveries while it has credit and the session window is open, splitting each
// into frames the peer's max-frame-size allows; a drained link then gives up its remaining credit.
func (s *Session) flush(l *Link) error {
	c := s.conn
	if !l.accepted || l.gone || l.detachSent || c.closeSent {
		return nil
	}
	for len(l.queue) > 0 && s.remoteIncomingWindow > 0 {
		d := l.queue[0]
		if !d.started {
			if l.peerCredit == 0 {
				break
			}
			l.peerCredit--
			l.deliveryCount++
			d.id = s.nextDeliveryID
			s.nextDeliveryID++
		}
		for s.remoteIncomingWindow > 0 {
			t := &transfer{handle: l.handle, settled: d.settled}
			if !d.started {
				id, format := d.id, d.format
				t.deliveryID, t.deliveryTag, t.messageFormat = &id, d.tag, &format
			}
			t.more = true
			overhead, err := appendFrame(nil, frameAMQP, s.channel, t, nil)
			if err != nil {
				return err
			}
			room := int(min(c.peerMaxFrame, 1<<24)) - len(overhead)
			if room < 1 {
				return Errorf(CondFramingError, "peer's max frame size %d cannot carry a transfer", c.peerMaxFrame)
			}
			chunk := d.payload[d.sent:]
			if len(chunk) > room {
				chunk = chunk[:room]
			}
			t.more = d.sent+len(chunk) < len(d.payload)
			if err := c.write(frameAMQP, s.channel, t, chunk); err != nil {
				return err
			}
			d.started = true
			d.sent += len(chunk)
			s.nextOutgoingID++
			s.remoteIncomingWindow--
			if !t.more {
				break
			}
		}
		if d.sent < len(d.payload) || !d.started {
			break // the session window closed mid-delivery
		}
		l.queue = l.queue[1:]
		if d.settled {
			c.settleLater(d, nil, nil)
		} else {
			s.unsettledOut[d.id] = d
		}
	}
	if l.drain && len(l.queue) == 0 && l.peerCredit > 0 {
		l.deliveryCount += l.peerCredit
		l.peerCredit = 0
		return s.writeLinkFlow(l, true)
	}
	return nil
}

// SendOptions describe one delivery the server sends.
type SendOptions struct {
	Tag    []byte // delivery tag, unique among the link's unsettled deliveries; nil = a 4-byte counter
	Format uint32 // message-format
	// OnSettled, if set, runs once with the peer's outcome, with (nil, nil) for a delivery sent pre-settled (the
	// link's sender-settle-mode is settled), or with ErrLinkGone when the link ended first.
	OnSettled func(state DeliveryState, err error)
}

// Send queues a delivery (an encoded message) on a link the server sends on; it goes out when the peer's credit
// and session window allow. It fails when the link is gone.
func (l *Link) Send(payload []byte, opts SendOptions) error {
	if l.receiving {
		return errors.New("amqp: Send on a link the server receives on")
	}
	s := l.sess
	c := s.conn
	c.mu.Lock()
	if l.gone || l.detachSent || c.closeSent || c.ended {
		c.mu.Unlock()
		return ErrLinkGone
	}
	d := &outDelivery{l: l, tag: opts.Tag, format: opts.Format, payload: payload,
		settled: l.sndSettle == SenderSettled, onSettled: opts.OnSettled}
	if d.tag == nil {
		d.tag = binary.BigEndian.AppendUint32(nil, l.deliveryCount+uint32(len(l.queue)))
	}
	l.queue = append(l.queue, d)
	_ = s.flush(l)
	calls := c.takeCalls()
	c.mu.Unlock()
	for _, f := range calls {
		f()
	}
	return nil
}

// Detach ends the link with err (nil for a clean detach); Handler.Detached follows once the peer answers.
func (l *Link) Detach(err *Error) {
	c := l.sess.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	if l.gone || l.detachSent || c.closeSent || c.ended {
		return
	}
	l.detachSent, l.detachErr = true, err
	_ = c.write(frameAMQP, l.sess.channel, &detach{handle: l.handle, closed: true, err: err}, nil)
}

func (s *Session) onTransfer(t *transfer, payload []byte) (func(), error) {
	c := s.conn
	if s.incomingWindow == 0 {
		return nil, Errorf(CondSessionWindowViolate, "transfer beyond the session's incoming window")
	}
	s.incomingWindow--
	s.nextIncomingID++
	if s.incomingWindow < sessionWindow/2 {
		s.incomingWindow = sessionWindow
		if err := c.write(frameAMQP, s.channel, s.flowFrame(), nil); err != nil {
			return nil, err
		}
	}
	l := s.links[t.handle]
	if l == nil {
		return nil, Errorf(CondUnattachedHandle, "transfer on handle %d", t.handle)
	}
	if !l.receiving {
		return nil, Errorf(CondNotAllowed, "transfer on handle %d, where the server sends", t.handle)
	}
	if l.detachSent {
		return nil, nil // in flight when the server detached
	}
	if l.partial == nil {
		if t.deliveryID == nil || t.deliveryTag == nil {
			return nil, Errorf(CondNotAllowed, "first transfer of a delivery lacks its id or tag")
		}
		l.deliveryCount++
		switch {
		case l.credit > 0:
			l.credit--
		case l.inFlight > 0:
			// Restate the credit with this delivery counted: a peer that sent it before seeing the flow that took
			// the credit back computed a negative credit from that flow (go-amqp wraps it to 2^32-1).
			l.inFlight--
			if err := s.writeLinkFlow(l, false); err != nil {
				return nil, err
			}
		default:
			l.detachSent, l.detachErr = true, Errorf(CondTransferLimit, "transfer without link credit")
			return nil, c.write(frameAMQP, s.channel, &detach{handle: l.handle, closed: true, err: l.detachErr}, nil)
		}
		format := uint32(0)
		if t.messageFormat != nil {
			format = *t.messageFormat
		}
		l.partial = &Delivery{ID: *t.deliveryID, Tag: t.deliveryTag, Format: format}
		l.partialSettle = false
	}
	d := l.partial
	l.partialSettle = l.partialSettle || t.settled
	if t.aborted {
		l.partial = nil
		return nil, nil
	}
	if uint64(len(d.Payload))+uint64(len(payload)) > c.srv.maxMessage() {
		l.partial = nil
		l.detachSent, l.detachErr = true, Errorf(CondMessageSizeExceeded, "message exceeds %d bytes", c.srv.maxMessage())
		return nil, c.write(frameAMQP, s.channel, &detach{handle: l.handle, closed: true, err: l.detachErr}, nil)
	}
	d.Payload = append(d.Payload, payload...)
	if t.more {
		return nil, nil
	}
	l.partial = nil
	settled := l.partialSettle
	if l.credit <= l.creditWindow/2 && l.creditWindow > 0 {
		l.credit = l.creditWindow
		if err := s.writeLinkFlow(l, false); err != nil {
			return nil, err
		}
	}
	h := c.handler
	return func() {
		state := h.Transfer(l, d)
		if settled {
			return
		}
		if state == nil {
			state = Accepted{}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if l.gone || c.closeSent {
			return
		}
		first := l.rcvSettle == ReceiverFirst
		if !first {
			s.unsettledIn[d.ID] = true
		}
		_ = c.write(frameAMQP, s.channel, &disposition{role: roleReceiver, first: d.ID, settled: first, state: state}, nil)
	}, nil
}

func (s *Session) onDisposition(d *disposition) error {
	c := s.conn
	last := d.first
	if d.last != nil {
		last = *d.last
	}
	if last-d.first > 1<<16 {
		return Errorf(CondNotAllowed, "disposition range %d..%d", d.first, last)
	}
	for id := d.first; ; id++ {
		if d.role == roleSender {
			// the peer settles a delivery the server received in mode second
			if d.settled {
				delete(s.unsettledIn, id)
			}
		} else if od := s.unsettledOut[id]; od != nil && (d.settled || isTerminal(d.state)) {
			delete(s.unsettledOut, id)
			if !d.settled {
				// receiver-settle mode second: the sender settles once the receiver has decided
				if err := c.write(frameAMQP, s.channel, &disposition{role: roleSender, first: id, settled: true,
					state: d.state}, nil); err != nil {
					return err
				}
			}
			c.settleLater(od, d.state, nil)
		}
		if id == last {
			return nil
		}
	}
}

func isTerminal(s DeliveryState) bool {
	switch s.(type) {
	case Accepted, Rejected, Released, Modified:
		return true
	}
	return false
}
