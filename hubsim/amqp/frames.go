package amqp

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Frame types (part 2, section 2.3).
const (
	frameAMQP = 0
	frameSASL = 1
)

// Descriptor codes of the performatives, SASL frames and the types inside them.
const (
	descOpen        = 0x10
	descBegin       = 0x11
	descAttach      = 0x12
	descFlow        = 0x13
	descTransfer    = 0x14
	descDisposition = 0x15
	descDetach      = 0x16
	descEnd         = 0x17
	descClose       = 0x18
	descError       = 0x1d
	descReceived    = 0x23
	descAccepted    = 0x24
	descRejected    = 0x25
	descReleased    = 0x26
	descModified    = 0x27
	descSource      = 0x28
	descTarget      = 0x29
	descSASLMechs   = 0x40
	descSASLInit    = 0x41
	descSASLChall   = 0x42
	descSASLResp    = 0x43
	descSASLOutcome = 0x44
)

// minMaxFrameSize is the frame size every peer accepts, and the limit before open is exchanged.
const minMaxFrameSize = 512

// Error conditions of the spec used by the engine.
const (
	CondDecodeError          Symbol = "amqp:decode-error"
	CondFramingError         Symbol = "amqp:connection:framing-error"
	CondNotAllowed           Symbol = "amqp:not-allowed"
	CondNotFound             Symbol = "amqp:not-found"
	CondUnauthorized         Symbol = "amqp:unauthorized-access"
	CondResourceLimit        Symbol = "amqp:resource-limit-exceeded"
	CondConnectionForced     Symbol = "amqp:connection:forced"
	CondDetachForced         Symbol = "amqp:link:detach-forced"
	CondTransferLimit        Symbol = "amqp:link:transfer-limit-exceeded"
	CondMessageSizeExceeded  Symbol = "amqp:link:message-size-exceeded"
	CondUnattachedHandle     Symbol = "amqp:session:unattached-handle"
	CondHandleInUse          Symbol = "amqp:session:handle-in-use"
	CondSessionWindowViolate Symbol = "amqp:session:window-violation"
)

// Error is the AMQP error type carried by detach, end, close and rejected outcomes.
type Error struct {
	Condition   Symbol
	Description string
	Info        Map
}

func (e *Error) Error() string {
	if e.Description == "" {
		return string(e.Condition)
	}
	return string(e.Condition) + ": " + e.Description
}

// Errorf makes an *Error with a formatted description.
func Errorf(cond Symbol, format string, args ...any) *Error {
	return &Error{Condition: cond, Description: fmt.Sprintf(format, args...)}
}

func (e *Error) value() any {
	if e == nil {
		return nil
	}
	return describe(descError, e.Condition, e.Description, e.Info)
}

func errorFrom(v any) (*Error, error) {
	f, ok, err := fieldsOf(v, descError)
	if err != nil || !ok {
		return nil, err
	}
	e := &Error{}
	e.Condition, err = f.symbol(0, true)
	if err != nil {
		return nil, err
	}
	if e.Description, err = f.str(1); err != nil {
		return nil, err
	}
	e.Info, err = f.fieldMap(2)
	return e, err
}

// describe builds a described list, dropping trailing nulls as encoders commonly do.
func describe(code uint64, fields ...any) Described {
	n := len(fields)
	for i, f := range fields {
		if isNull(f) {
			fields[i] = nil // a typed nil (no map, no error) is a null field, not an empty value
		}
	}
	for n > 0 && fields[n-1] == nil {
		n--
	}
	return Described{Descriptor: code, Value: fields[:n]}
}

func isNull(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case *Error:
		return v == nil
	case Map:
		return v == nil
	case []Symbol:
		return v == nil
	case []byte:
		return v == nil
	}
	return false
}

// fields are a described list's elements with typed, bounds-checked accessors: a missing field is null.
type fields []any

// fieldsOf unpacks a described list with descriptor code; ok is false for null.
func fieldsOf(v any, code uint64) (fields, bool, error) {
	if v == nil {
		return nil, false, nil
	}
	d, ok := v.(Described)
	if !ok {
		return nil, false, decodeErr("%T where a described 0x%02x was expected", v, code)
	}
	if c, ok := d.Descriptor.(uint64); !ok || c != code {
		return nil, false, decodeErr("descriptor %v where 0x%02x was expected", d.Descriptor, code)
	}
	l, ok := d.Value.([]any)
	if !ok {
		return nil, false, decodeErr("described 0x%02x holds %T, not a list", code, d.Value)
	}
	return l, true, nil
}

func (f fields) at(i int) any {
	if i < len(f) {
		return f[i]
	}
	return nil
}

func (f fields) missing(i int) error { return decodeErr("mandatory field %d missing", i) }

// uint reads an unsigned field of any width into a uint64; ok is false when null.
func (f fields) uint(i int, max uint64) (uint64, bool, error) {
	var u uint64
	switch v := f.at(i).(type) {
	case nil:
		return 0, false, nil
	case uint8:
		u = uint64(v)
	case uint16:
		u = uint64(v)
	case uint32:
		u = uint64(v)
	case uint64:
		u = v
	default:
		return 0, false, decodeErr("field %d is %T, not unsigned", i, v)
	}
	if u > max {
		return 0, false, decodeErr("field %d = %d exceeds %d", i, u, max)
	}
	return u, true, nil
}

func (f fields) u32(i int, mandatory bool) (uint32, bool, error) {
	u, ok, err := f.uint(i, 1<<32-1)
	if err == nil && !ok && mandatory {
		err = f.missing(i)
	}
	return uint32(u), ok, err
}

func (f fields) boolean(i int) (bool, error) {
	switch v := f.at(i).(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	default:
		return false, decodeErr("field %d is %T, not boolean", i, v)
	}
}

func (f fields) str(i int) (string, error) {
	switch v := f.at(i).(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", decodeErr("field %d is %T, not string", i, v)
	}
}

func (f fields) symbol(i int, mandatory bool) (Symbol, error) {
	switch v := f.at(i).(type) {
	case nil:
		if mandatory {
			return "", f.missing(i)
		}
		return "", nil
	case Symbol:
		return v, nil
	default:
		return "", decodeErr("field %d is %T, not symbol", i, v)
	}
}

func (f fields) binary(i int) ([]byte, error) {
	switch v := f.at(i).(type) {
	case nil:
		return nil, nil
	case []byte:
		return v, nil
	default:
		return nil, decodeErr("field %d is %T, not binary", i, v)
	}
}

func (f fields) fieldMap(i int) (Map, error) {
	switch v := f.at(i).(type) {
	case nil:
		return nil, nil
	case Map:
		return v, nil
	default:
		return nil, decodeErr("field %d is %T, not map", i, v)
	}
}

// symbols reads a "symbol multiple" field: a single symbol or an array of them.
func (f fields) symbols(i int) ([]Symbol, error) {
	switch v := f.at(i).(type) {
	case nil:
		return nil, nil
	case Symbol:
		return []Symbol{v}, nil
	case Array:
		out := make([]Symbol, 0, len(v))
		for _, e := range v {
			s, ok := e.(Symbol)
			if !ok {
				return nil, decodeErr("field %d holds %T, not symbol", i, e)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, decodeErr("field %d is %T, not symbols", i, v)
	}
}

// frame is one decoded frame: its channel, performative (nil for a heartbeat) and transfer payload.
type frame struct {
	typ     byte
	channel uint16
	body    any // a performative struct below, nil for an empty frame
	payload []byte
}

// parseFrame decodes a frame whose 8-byte header (already checked for size) is at the start of b.
func parseFrame(b []byte) (frame, error) {
	doff := int(b[4]) * 4
	fr := frame{typ: b[5], channel: binary.BigEndian.Uint16(b[6:8])}
	if doff < 8 || doff > len(b) {
		return fr, Errorf(CondFramingError, "data offset %d", doff)
	}
	if fr.typ != frameAMQP && fr.typ != frameSASL {
		return fr, Errorf(CondFramingError, "frame type %d", fr.typ)
	}
	body := b[doff:]
	if len(body) == 0 {
		return fr, nil
	}
	v, n, err := Decode(body)
	if err != nil {
		return fr, err
	}
	fr.payload = body[n:]
	if fr.body, err = performative(v); err != nil {
		return fr, err
	}
	if _, ok := fr.body.(*transfer); !ok && len(fr.payload) > 0 {
		return fr, decodeErr("%d bytes after a %T", len(fr.payload), fr.body)
	}
	return fr, nil
}

// appendFrame encodes a frame: header, performative and payload.
func appendFrame(b []byte, typ byte, channel uint16, body performer, payload []byte) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 2, typ, byte(channel>>8), byte(channel))
	if body != nil {
		var err error
		if b, err = Append(b, body.value()); err != nil {
			return nil, err
		}
	}
	b = append(b, payload...)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b, nil
}

// performer is a frame body that encodes itself.
type performer interface{ value() Described }

type open struct {
	containerID  string
	hostname     string
	maxFrameSize uint32
	channelMax   uint16
	idleTimeout  time.Duration
	properties   Map
}

func (o *open) value() Described {
	var idle any
	if o.idleTimeout > 0 {
		idle = uint32(o.idleTimeout / time.Millisecond)
	}
	return describe(descOpen, o.containerID, nilIfEmpty(o.hostname), o.maxFrameSize, o.channelMax, idle,
		nil, nil, nil, nil, o.properties)
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

type begin struct {
	remoteChannel  *uint16
	nextOutgoingID uint32
	incomingWindow uint32
	outgoingWindow uint32
	handleMax      uint32
}

func (b *begin) value() Described {
	var rc any
	if b.remoteChannel != nil {
		rc = *b.remoteChannel
	}
	return describe(descBegin, rc, b.nextOutgoingID, b.incomingWindow, b.outgoingWindow, b.handleMax)
}

// Roles and settle modes as the wire spells them.
const (
	roleSender   = false
	roleReceiver = true
)

// SenderSettleMode is the settlement policy of a link's sender.
type SenderSettleMode uint8

// Sender settle modes.
const (
	SenderUnsettled SenderSettleMode = 0
	SenderSettled   SenderSettleMode = 1
	SenderMixed     SenderSettleMode = 2
)

// ReceiverSettleMode is the settlement policy of a link's receiver.
type ReceiverSettleMode uint8

// Receiver settle modes.
const (
	ReceiverFirst  ReceiverSettleMode = 0
	ReceiverSecond ReceiverSettleMode = 1
)

type attach struct {
	name           string
	handle         uint32
	role           bool
	sndSettleMode  SenderSettleMode
	rcvSettleMode  ReceiverSettleMode
	source         *terminus // nil = null
	target         *terminus
	initialCount   *uint32 // sender only
	maxMessageSize uint64
	properties     Map
}

// terminus is a source or target; the engine keeps its address and echoes the rest of a peer's as sent.
type terminus struct {
	address string
	raw     fields // the peer's fields, echoed back
}

func (t *terminus) value(code uint64) any {
	if t == nil {
		return nil
	}
	f := append(fields(nil), t.raw...)
	if len(f) == 0 {
		f = fields{nil}
	}
	if t.address == "" {
		f[0] = nil
	} else {
		f[0] = t.address
	}
	return describe(code, f...)
}

func terminusFrom(v any, code uint64) (*terminus, error) {
	f, ok, err := fieldsOf(v, code)
	if err != nil || !ok {
		return nil, err
	}
	t := &terminus{raw: f}
	switch a := f.at(0).(type) {
	case nil:
	case string:
		t.address = a
	case Symbol: // not what the spec types it as, but seen in the wild
		t.address = string(a)
	default:
		return nil, decodeErr("terminus address is %T", a)
	}
	return t, nil
}

func (a *attach) value() Described {
	var ic, mms any
	if a.initialCount != nil {
		ic = *a.initialCount
	}
	if a.maxMessageSize > 0 {
		mms = a.maxMessageSize
	}
	return describe(descAttach, a.name, a.handle, a.role, uint8(a.sndSettleMode), uint8(a.rcvSettleMode),
		a.source.value(descSource), a.target.value(descTarget), nil, nil, ic, mms, nil, nil, a.properties)
}

type flow struct {
	nextIncomingID *uint32
	incomingWindow uint32
	nextOutgoingID uint32
	outgoingWindow uint32
	handle         *uint32
	deliveryCount  *uint32
	linkCredit     *uint32
	available      *uint32
	drain          bool
	echo           bool
}

func optU32(p *uint32) any {
	if p == nil {
		return nil
	}
	return *p
}

func (f *flow) value() Described {
	return describe(descFlow, optU32(f.nextIncomingID), f.incomingWindow, f.nextOutgoingID, f.outgoingWindow,
		optU32(f.handle), optU32(f.deliveryCount), optU32(f.linkCredit), optU32(f.available), f.drain, f.echo)
}

type transfer struct {
	handle        uint32
	deliveryID    *uint32
	deliveryTag   []byte
	messageFormat *uint32
	settled       bool
	more          bool
	rcvSettleMode *ReceiverSettleMode
	state         DeliveryState
	aborted       bool
}

func (t *transfer) value() Described {
	var st, rsm any
	if t.state != nil {
		st = t.state.value()
	}
	if t.rcvSettleMode != nil {
		rsm = uint8(*t.rcvSettleMode)
	}
	return describe(descTransfer, t.handle, optU32(t.deliveryID), t.deliveryTag, optU32(t.messageFormat),
		t.settled, t.more, rsm, st, nil, t.aborted)
}

type disposition struct {
	role    bool
	first   uint32
	last    *uint32
	settled bool
	state   DeliveryState
}

func (d *disposition) value() Described {
	var st any
	if d.state != nil {
		st = d.state.value()
	}
	return describe(descDisposition, d.role, d.first, optU32(d.last), d.settled, st)
}

type detach struct {
	handle uint32
	closed bool
	err    *Error
}

func (d *detach) value() Described { return describe(descDetach, d.handle, d.closed, d.err.value()) }

type end struct{ err *Error }

func (e *end) value() Described { return describe(descEnd, e.err.value()) }

type closeFrame struct{ err *Error }

func (c *closeFrame) value() Described { return describe(descClose, c.err.value()) }

type saslMechanisms struct{ mechanisms []Symbol }

func (s *saslMechanisms) value() Described { return describe(descSASLMechs, s.mechanisms) }

type saslInit struct {
	mechanism Symbol
	initial   []byte
	hostname  string
}

func (s *saslInit) value() Described {
	return describe(descSASLInit, s.mechanism, s.initial, nilIfEmpty(s.hostname))
}

// SASL outcome codes.
const (
	saslOK   = 0
	saslAuth = 1
)

type saslOutcome struct{ code uint8 }

func (s *saslOutcome) value() Described { return describe(descSASLOutcome, s.code) }

// DeliveryState is a delivery's state or outcome: Accepted, Rejected, Released, Modified or Received.
type DeliveryState interface{ value() Described }

// Accepted is the outcome of a delivery the receiver took.
type Accepted struct{}

// Rejected is the outcome of a delivery the receiver refused, with why.
type Rejected struct{ Error *Error }

// Released is the outcome of a delivery the receiver gave back unprocessed.
type Released struct{}

// Modified is the outcome of a delivery given back with changes.
type Modified struct {
	DeliveryFailed     bool
	UndeliverableHere  bool
	MessageAnnotations Map
}

// Received is the non-terminal state of a partly received delivery.
type Received struct {
	SectionNumber uint32
	SectionOffset uint64
}

func (Accepted) value() Described   { return describe(descAccepted) }
func (r Rejected) value() Described { return describe(descRejected, r.Error.value()) }
func (Released) value() Described   { return describe(descReleased) }
func (m Modified) value() Described {
	return describe(descModified, m.DeliveryFailed, m.UndeliverableHere, m.MessageAnnotations)
}
func (r Received) value() Described { return describe(descReceived, r.SectionNumber, r.SectionOffset) }

func stateFrom(v any) (DeliveryState, error) {
	if v == nil {
		return nil, nil
	}
	d, ok := v.(Described)
	if !ok {
		return nil, decodeErr("delivery state is %T", v)
	}
	code, _ := d.Descriptor.(uint64)
	f, _, err := fieldsOf(v, code)
	if err != nil {
		return nil, err
	}
	switch code {
	case descAccepted:
		return Accepted{}, nil
	case descReleased:
		return Released{}, nil
	case descRejected:
		e, err := errorFrom(f.at(0))
		return Rejected{Error: e}, err
	case descModified:
		var m Modified
		if m.DeliveryFailed, err = f.boolean(0); err != nil {
			return nil, err
		}
		if m.UndeliverableHere, err = f.boolean(1); err != nil {
			return nil, err
		}
		m.MessageAnnotations, err = f.fieldMap(2)
		return m, err
	case descReceived:
		n, _, err := f.u32(0, true)
		if err != nil {
			return nil, err
		}
		off, _, err := f.uint(1, 1<<64-1)
		return Received{SectionNumber: n, SectionOffset: off}, err
	}
	return nil, decodeErr("delivery state with descriptor %v", d.Descriptor)
}

// performative decodes a frame body into its struct.
func performative(v any) (any, error) {
	d, ok := v.(Described)
	if !ok {
		return nil, decodeErr("frame body is %T, not a performative", v)
	}
	code, ok := d.Descriptor.(uint64)
	if !ok {
		return nil, decodeErr("performative descriptor %v", d.Descriptor)
	}
	f, _, err := fieldsOf(v, code)
	if err != nil {
		return nil, err
	}
	p := &parser{f: f}
	var out any
	switch code {
	case descOpen:
		o := &open{}
		o.containerID = p.mandatoryStr(0)
		o.hostname = p.str(1)
		o.maxFrameSize = p.u32or(2, 1<<32-1)
		o.channelMax = uint16(p.uintOr(3, 1<<16-1, 1<<16-1))
		o.idleTimeout = time.Duration(p.u32or(4, 0)) * time.Millisecond
		o.properties = p.fieldMap(9)
		out = o
	case descBegin:
		b := &begin{}
		if rc, ok := p.optU32(0); ok {
			c := uint16(rc)
			if rc > 1<<16-1 {
				p.fail(decodeErr("remote-channel %d", rc))
			}
			b.remoteChannel = &c
		}
		b.nextOutgoingID = p.mandatoryU32(1)
		b.incomingWindow = p.mandatoryU32(2)
		b.outgoingWindow = p.mandatoryU32(3)
		b.handleMax = p.u32or(4, 1<<32-1)
		out = b
	case descAttach:
		a := &attach{}
		a.name = p.mandatoryStr(0)
		a.handle = p.mandatoryU32(1)
		a.role = p.mandatoryBool(2)
		a.sndSettleMode = SenderSettleMode(p.uintOr(3, 2, uint64(SenderMixed)))
		a.rcvSettleMode = ReceiverSettleMode(p.uintOr(4, 1, 0))
		a.source = p.terminus(5, descSource)
		a.target = p.terminus(6, descTarget)
		if ic, ok := p.optU32(9); ok {
			a.initialCount = &ic
		}
		a.maxMessageSize = p.uintOr(10, 1<<64-1, 0)
		a.properties = p.fieldMap(13)
		out = a
	case descFlow:
		fl := &flow{}
		if v, ok := p.optU32(0); ok {
			fl.nextIncomingID = &v
		}
		fl.incomingWindow = p.mandatoryU32(1)
		fl.nextOutgoingID = p.mandatoryU32(2)
		fl.outgoingWindow = p.mandatoryU32(3)
		for i, dst := range []**uint32{&fl.handle, &fl.deliveryCount, &fl.linkCredit, &fl.available} {
			if v, ok := p.optU32(4 + i); ok {
				*dst = &v
			}
		}
		fl.drain = p.boolean(8)
		fl.echo = p.boolean(9)
		out = fl
	case descTransfer:
		t := &transfer{}
		t.handle = p.mandatoryU32(0)
		if v, ok := p.optU32(1); ok {
			t.deliveryID = &v
		}
		t.deliveryTag = p.binary(2)
		if v, ok := p.optU32(3); ok {
			t.messageFormat = &v
		}
		t.settled = p.boolean(4)
		t.more = p.boolean(5)
		if v, ok := p.optU32(6); ok {
			if v > 1 {
				p.fail(decodeErr("rcv-settle-mode %d", v))
			}
			m := ReceiverSettleMode(v)
			t.rcvSettleMode = &m
		}
		t.state = p.state(7)
		t.aborted = p.boolean(9)
		out = t
	case descDisposition:
		d := &disposition{}
		d.role = p.mandatoryBool(0)
		d.first = p.mandatoryU32(1)
		if v, ok := p.optU32(2); ok {
			d.last = &v
		}
		d.settled = p.boolean(3)
		d.state = p.state(4)
		out = d
	case descDetach:
		d := &detach{}
		d.handle = p.mandatoryU32(0)
		d.closed = p.boolean(1)
		d.err = p.error(2)
		out = d
	case descEnd:
		out = &end{err: p.error(0)}
	case descClose:
		out = &closeFrame{err: p.error(0)}
	case descSASLInit:
		s := &saslInit{}
		var err error
		if s.mechanism, err = f.symbol(0, true); err != nil {
			p.fail(err)
		}
		s.initial = p.binary(1)
		s.hostname = p.str(2)
		out = s
	case descSASLResp:
		p.binary(0)
		out = &saslResponse{}
	case descSASLMechs, descSASLChall, descSASLOutcome:
		return nil, decodeErr("SASL frame 0x%02x is for clients", code)
	default:
		return nil, decodeErr("unknown performative 0x%02x", code)
	}
	return out, p.err
}

// saslResponse is a client's answer to a challenge; hubsim's mechanisms never challenge.
type saslResponse struct{}

// parser reads fields and remembers the first error, so a performative decodes in straight-line code.
type parser struct {
	f   fields
	err error
}

func (p *parser) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}

func (p *parser) str(i int) string {
	s, err := p.f.str(i)
	p.fail(err)
	return s
}

func (p *parser) mandatoryStr(i int) string {
	if p.f.at(i) == nil {
		p.fail(p.f.missing(i))
	}
	return p.str(i)
}

func (p *parser) optU32(i int) (uint32, bool) {
	v, ok, err := p.f.u32(i, false)
	p.fail(err)
	return v, ok
}

func (p *parser) mandatoryU32(i int) uint32 {
	v, _, err := p.f.u32(i, true)
	p.fail(err)
	return v
}

func (p *parser) u32or(i int, def uint32) uint32 {
	if v, ok := p.optU32(i); ok {
		return v
	}
	return def
}

func (p *parser) uintOr(i int, max, def uint64) uint64 {
	v, ok, err := p.f.uint(i, max)
	p.fail(err)
	if !ok {
		return def
	}
	return v
}

func (p *parser) boolean(i int) bool {
	v, err := p.f.boolean(i)
	p.fail(err)
	return v
}

func (p *parser) mandatoryBool(i int) bool {
	if p.f.at(i) == nil {
		p.fail(p.f.missing(i))
	}
	return p.boolean(i)
}

func (p *parser) binary(i int) []byte {
	v, err := p.f.binary(i)
	p.fail(err)
	return v
}

func (p *parser) fieldMap(i int) Map {
	v, err := p.f.fieldMap(i)
	p.fail(err)
	return v
}

func (p *parser) terminus(i int, code uint64) *terminus {
	t, err := terminusFrom(p.f.at(i), code)
	p.fail(err)
	return t
}

func (p *parser) state(i int) DeliveryState {
	s, err := stateFrom(p.f.at(i))
	p.fail(err)
	return s
}

func (p *parser) error(i int) *Error {
	e, err := errorFrom(p.f.at(i))
	p.fail(err)
	return e
}
