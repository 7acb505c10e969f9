package amqp

import (
	"time"
)

// Section descriptors of a message (part 3, section 3.2).
const (
	descHeader      = 0x70
	descDeliveryAnn = 0x71
	descMessageAnn  = 0x72
	descProperties  = 0x73
	descAppProps    = 0x74
	descData        = 0x75
	descSequence    = 0x76
	descValue       = 0x77
	descFooter      = 0x78
)

// Message is a bare message with its annotations: the sections of a delivery's payload. Maps keep their wire
// order and ids their wire type, so a reply can echo a message-id exactly.
type Message struct {
	Header                []any // the header's fields as sent, nil when absent
	DeliveryAnnotations   Map
	MessageAnnotations    Map
	Properties            *Properties
	ApplicationProperties Map
	Data                  [][]byte // data sections
	Sequence              [][]any  // amqp-sequence sections
	Value                 any      // the amqp-value section's value when HasValue
	HasValue              bool
	Footer                Map
}

// Properties is the properties section; ids are string, uint64, UUID or []byte as the sender chose.
type Properties struct {
	MessageID       any
	UserID          []byte
	To              string
	Subject         string
	ReplyTo         string
	CorrelationID   any
	ContentType     Symbol
	ContentEncoding Symbol
	AbsoluteExpiry  time.Time
	CreationTime    time.Time
	GroupID         string
	GroupSequence   *uint32
	ReplyToGroupID  string
}

// Body is the message's data sections joined, or an amqp-value holding binary or a string.
func (m *Message) Body() []byte {
	if m.HasValue {
		switch v := m.Value.(type) {
		case []byte:
			return v
		case string:
			return []byte(v)
		}
	}
	var out []byte
	for _, d := range m.Data {
		out = append(out, d...)
	}
	return out
}

// UnmarshalMessage decodes a delivery's payload.
func UnmarshalMessage(b []byte) (*Message, error) {
	m := &Message{}
	for off := 0; off < len(b); {
		v, n, err := Decode(b[off:])
		if err != nil {
			return nil, err
		}
		off += n
		d, ok := v.(Described)
		if !ok {
			return nil, decodeErr("message section is %T", v)
		}
		code, _ := d.Descriptor.(uint64)
		var bad bool
		switch code {
		case descHeader:
			m.Header, bad = d.Value.([]any)
			bad = !bad
		case descDeliveryAnn:
			m.DeliveryAnnotations, bad = sectionMap(d.Value)
		case descMessageAnn:
			m.MessageAnnotations, bad = sectionMap(d.Value)
		case descAppProps:
			m.ApplicationProperties, bad = sectionMap(d.Value)
		case descFooter:
			m.Footer, bad = sectionMap(d.Value)
		case descProperties:
			if m.Properties, err = propertiesFrom(v); err != nil {
				return nil, err
			}
		case descData:
			data, ok := d.Value.([]byte)
			bad = !ok
			m.Data = append(m.Data, data)
		case descSequence:
			seq, ok := d.Value.([]any)
			bad = !ok
			m.Sequence = append(m.Sequence, seq)
		case descValue:
			m.Value, m.HasValue = d.Value, true
		default:
			return nil, decodeErr("unknown message section %v", d.Descriptor)
		}
		if bad {
			return nil, decodeErr("message section 0x%02x holds %T", code, d.Value)
		}
	}
	return m, nil
}

func sectionMap(v any) (Map, bool) {
	if v == nil {
		return nil, false
	}
	m, ok := v.(Map)
	return m, !ok
}

func propertiesFrom(v any) (*Properties, error) {
	f, _, err := fieldsOf(v, descProperties)
	if err != nil {
		return nil, err
	}
	p := &parser{f: f}
	props := &Properties{MessageID: f.at(0), UserID: p.binary(1), To: p.addr(2), Subject: p.str(3),
		ReplyTo: p.addr(4), CorrelationID: f.at(5), ContentType: p.sym(6), ContentEncoding: p.sym(7),
		AbsoluteExpiry: p.time(8), CreationTime: p.time(9), GroupID: p.str(10), ReplyToGroupID: p.str(12)}
	if gs, ok := p.optU32(11); ok {
		props.GroupSequence = &gs
	}
	return props, p.err
}

// addr reads an address field, a string by the spec; some clients send a symbol.
func (p *parser) addr(i int) string {
	if s, ok := p.f.at(i).(Symbol); ok {
		return string(s)
	}
	return p.str(i)
}

func (p *parser) sym(i int) Symbol {
	s, err := p.f.symbol(i, false)
	p.fail(err)
	return s
}

func (p *parser) time(i int) time.Time {
	switch v := p.f.at(i).(type) {
	case nil:
	case time.Time:
		return v
	default:
		p.fail(decodeErr("field %d is %T, not timestamp", i, v))
	}
	return time.Time{}
}

// Marshal encodes the message's sections in the spec's order.
func (m *Message) Marshal() ([]byte, error) {
	var sections []any
	if m.Header != nil {
		sections = append(sections, Described{Descriptor: uint64(descHeader), Value: m.Header})
	}
	for _, s := range []struct {
		code uint64
		m    Map
	}{{descDeliveryAnn, m.DeliveryAnnotations}, {descMessageAnn, m.MessageAnnotations}} {
		if s.m != nil {
			sections = append(sections, Described{Descriptor: s.code, Value: s.m})
		}
	}
	if p := m.Properties; p != nil {
		var gs any
		if p.GroupSequence != nil {
			gs = *p.GroupSequence
		}
		sections = append(sections, describe(descProperties, p.MessageID, p.UserID, nilIfEmpty(p.To),
			nilIfEmpty(p.Subject), nilIfEmpty(p.ReplyTo), p.CorrelationID, symOrNil(p.ContentType),
			symOrNil(p.ContentEncoding), timeOrNil(p.AbsoluteExpiry), timeOrNil(p.CreationTime),
			nilIfEmpty(p.GroupID), gs, nilIfEmpty(p.ReplyToGroupID)))
	}
	if m.ApplicationProperties != nil {
		sections = append(sections, Described{Descriptor: uint64(descAppProps), Value: m.ApplicationProperties})
	}
	for _, d := range m.Data {
		sections = append(sections, Described{Descriptor: uint64(descData), Value: d})
	}
	for _, s := range m.Sequence {
		sections = append(sections, Described{Descriptor: uint64(descSequence), Value: s})
	}
	if m.HasValue {
		sections = append(sections, Described{Descriptor: uint64(descValue), Value: m.Value})
	}
	if m.Footer != nil {
		sections = append(sections, Described{Descriptor: uint64(descFooter), Value: m.Footer})
	}
	var b []byte
	var err error
	for _, s := range sections {
		if b, err = Append(b, s); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func symOrNil(s Symbol) any {
	if s == "" {
		return nil
	}
	return s
}

func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}
