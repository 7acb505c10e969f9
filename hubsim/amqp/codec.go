// Package amqp is a small AMQP 1.0 server: the type system's codec, frames, the connection, session and link
// state machine, SASL and the message format. It knows nothing of IoT Hub; a Handler decides which links exist and
// what deliveries mean. Its Message keeps maps in wire order and ids in their wire type, which go-amqp's Message
// (used by the tests as the client) does not.
package amqp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// AMQP types with no Go type of their own. Decode yields nil, bool, uint8, uint16, uint32, uint64, int8, int16,
// int32, int64, float32, float64, Char, time.Time (timestamp), UUID, []byte (binary), string, Symbol, []any (list),
// Map, Array, Described, Decimal32, Decimal64 and Decimal128; Append takes the same, plus []Symbol (an array of
// symbols) and int (a long).
type (
	// Symbol is an AMQP symbol (ASCII names: conditions, descriptors, annotation keys).
	Symbol string
	// Char is an AMQP char, a UTF-32 code point.
	Char rune
	// UUID is an AMQP uuid.
	UUID [16]byte
	// Decimal32 is an AMQP decimal32, kept as its IEEE 754 bytes.
	Decimal32 [4]byte
	// Decimal64 is an AMQP decimal64, kept as its IEEE 754 bytes.
	Decimal64 [8]byte
	// Decimal128 is an AMQP decimal128, kept as its IEEE 754 bytes.
	Decimal128 [16]byte
	// Map keeps the wire order of its entries and allows any key type.
	Map []MapEntry
	// Array is an AMQP array: every element has the same type.
	Array []any
)

// MapEntry is one key/value pair of a Map.
type MapEntry struct{ Key, Value any }

// Described is a value with a descriptor, a uint64 code or a Symbol.
type Described struct {
	Descriptor any
	Value      any
}

// Get returns the value of the first entry whose key equals key.
func (m Map) Get(key any) (any, bool) {
	for _, e := range m {
		if equalKey(e.Key, key) {
			return e.Value, true
		}
	}
	return nil, false
}

func equalKey(a, b any) bool {
	switch a.(type) {
	case []any, Map, Array, []byte, Described:
		return false // no map key of these types is looked up by the engine
	}
	switch b.(type) {
	case []any, Map, Array, []byte, Described:
		return false
	}
	return a == b
}

// Format codes of the type system (part 1, section 1.6).
const (
	codeDescribed  = 0x00
	codeNull       = 0x40
	codeBoolTrue   = 0x41
	codeBoolFalse  = 0x42
	codeBool       = 0x56
	codeUbyte      = 0x50
	codeUshort     = 0x60
	codeUint       = 0x70
	codeSmallUint  = 0x52
	codeUint0      = 0x43
	codeUlong      = 0x80
	codeSmallUlong = 0x53
	codeUlong0     = 0x44
	codeByte       = 0x51
	codeShort      = 0x61
	codeInt        = 0x71
	codeSmallInt   = 0x54
	codeLong       = 0x81
	codeSmallLong  = 0x55
	codeFloat      = 0x72
	codeDouble     = 0x82
	codeDecimal32  = 0x74
	codeDecimal64  = 0x84
	codeDecimal128 = 0x94
	codeChar       = 0x73
	codeTimestamp  = 0x83
	codeUUID       = 0x98
	codeVbin8      = 0xa0
	codeVbin32     = 0xb0
	codeStr8       = 0xa1
	codeStr32      = 0xb1
	codeSym8       = 0xa3
	codeSym32      = 0xb3
	codeList0      = 0x45
	codeList8      = 0xc0
	codeList32     = 0xd0
	codeMap8       = 0xc1
	codeMap32      = 0xd1
	codeArray8     = 0xe0
	codeArray32    = 0xf0
)

// maxDepth bounds nesting so a hostile input cannot exhaust the stack.
const maxDepth = 64

// ErrDecode wraps every decoding failure.
var ErrDecode = errors.New("amqp: decode error")

func decodeErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDecode, fmt.Sprintf(format, args...))
}

// Decode reads one value from the start of b and returns it with the number of bytes it took.
func Decode(b []byte) (any, int, error) {
	d := decoder{b: b}
	v, err := d.value(0)
	return v, d.off, err
}

type decoder struct {
	b   []byte
	off int
}

func (d *decoder) need(n int) ([]byte, error) {
	if n < 0 || n > len(d.b)-d.off {
		return nil, decodeErr("%d bytes needed at offset %d, %d left", n, d.off, len(d.b)-d.off)
	}
	s := d.b[d.off : d.off+n]
	d.off += n
	return s, nil
}

func (d *decoder) byte() (byte, error) {
	s, err := d.need(1)
	if err != nil {
		return 0, err
	}
	return s[0], nil
}

func (d *decoder) value(depth int) (any, error) {
	code, err := d.byte()
	if err != nil {
		return nil, err
	}
	if code == codeDescribed {
		return d.described(depth)
	}
	return d.body(code, depth)
}

func (d *decoder) described(depth int) (any, error) {
	if depth >= maxDepth {
		return nil, decodeErr("nesting deeper than %d", maxDepth)
	}
	desc, err := d.value(depth + 1)
	if err != nil {
		return nil, err
	}
	switch desc.(type) {
	case uint64, Symbol:
	default:
		return nil, decodeErr("descriptor of type %T", desc)
	}
	v, err := d.value(depth + 1)
	if err != nil {
		return nil, err
	}
	return Described{Descriptor: desc, Value: v}, nil
}

// sizeOf is the width of the fixed-width encodings, -1 for variable ones.
func sizeOf(code byte) int {
	switch code >> 4 {
	case 0x4:
		return 0
	case 0x5:
		return 1
	case 0x6:
		return 2
	case 0x7:
		return 4
	case 0x8:
		return 8
	case 0x9:
		return 16
	}
	return -1
}

// body decodes the value after its constructor code.
func (d *decoder) body(code byte, depth int) (any, error) {
	if w := sizeOf(code); w >= 0 {
		s, err := d.need(w)
		if err != nil {
			return nil, err
		}
		return fixed(code, s)
	}
	var n int
	switch code & 0xf0 {
	case 0xa0, 0xc0, 0xe0:
		b, err := d.byte()
		if err != nil {
			return nil, err
		}
		n = int(b)
	case 0xb0, 0xd0, 0xf0:
		s, err := d.need(4)
		if err != nil {
			return nil, err
		}
		u := binary.BigEndian.Uint32(s)
		if u > math.MaxInt32 {
			return nil, decodeErr("length %d", u)
		}
		n = int(u)
	default:
		return nil, decodeErr("unknown format code 0x%02x", code)
	}
	s, err := d.need(n)
	if err != nil {
		return nil, err
	}
	switch code {
	case codeVbin8, codeVbin32:
		return append([]byte(nil), s...), nil
	case codeStr8, codeStr32:
		return string(s), nil
	case codeSym8, codeSym32:
		return Symbol(s), nil
	}
	if depth >= maxDepth {
		return nil, decodeErr("nesting deeper than %d", maxDepth)
	}
	wide := code&0xf0 != 0xc0 && code&0xf0 != 0xe0
	inner := decoder{b: s}
	count, err := inner.count(wide)
	if err != nil {
		return nil, err
	}
	switch code {
	case codeList8, codeList32:
		return inner.list(count, depth)
	case codeMap8, codeMap32:
		return inner.mapBody(count, depth)
	case codeArray8, codeArray32:
		return inner.array(count, depth)
	}
	return nil, decodeErr("unknown format code 0x%02x", code)
}

// count reads a compound's element count; no element takes less than one byte except in arrays of zero-width
// elements, so a count above the bytes left is refused before anything is allocated.
func (d *decoder) count(wide bool) (int, error) {
	var n int
	if wide {
		s, err := d.need(4)
		if err != nil {
			return 0, err
		}
		n = int(binary.BigEndian.Uint32(s))
	} else {
		b, err := d.byte()
		if err != nil {
			return 0, err
		}
		n = int(b)
	}
	if n > len(d.b)-d.off {
		return 0, decodeErr("count %d exceeds the %d bytes that hold it", n, len(d.b)-d.off)
	}
	return n, nil
}

func (d *decoder) done() error {
	if d.off != len(d.b) {
		return decodeErr("%d bytes after the last element", len(d.b)-d.off)
	}
	return nil
}

func (d *decoder) list(n, depth int) (any, error) {
	out := make([]any, 0, n)
	for range n {
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, d.done()
}

func (d *decoder) mapBody(n, depth int) (any, error) {
	if n%2 != 0 {
		return nil, decodeErr("map with an odd count %d", n)
	}
	out := make(Map, 0, n/2)
	for range n / 2 {
		k, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		out = append(out, MapEntry{k, v})
	}
	return out, d.done()
}

func (d *decoder) array(n, depth int) (any, error) {
	code, err := d.byte()
	if err != nil {
		return nil, err
	}
	var desc any
	if code == codeDescribed {
		if desc, err = d.value(depth + 1); err != nil {
			return nil, err
		}
		if code, err = d.byte(); err != nil {
			return nil, err
		}
	}
	if code == codeDescribed {
		return nil, decodeErr("array of described descriptors")
	}
	out := make(Array, 0, n)
	for range n {
		v, err := d.body(code, depth+1)
		if err != nil {
			return nil, err
		}
		if desc != nil {
			v = Described{Descriptor: desc, Value: v}
		}
		out = append(out, v)
	}
	return out, d.done()
}

// fixed decodes a fixed-width value; s has exactly sizeOf(code) bytes.
func fixed(code byte, s []byte) (any, error) {
	switch code {
	case codeNull:
		return nil, nil
	case codeBoolTrue:
		return true, nil
	case codeBoolFalse:
		return false, nil
	case codeUint0:
		return uint32(0), nil
	case codeUlong0:
		return uint64(0), nil
	case codeList0:
		return []any{}, nil
	case codeBool:
		switch s[0] {
		case 0:
			return false, nil
		case 1:
			return true, nil
		}
		return nil, decodeErr("boolean 0x%02x", s[0])
	case codeUbyte:
		return s[0], nil
	case codeByte:
		return int8(s[0]), nil
	case codeSmallUint:
		return uint32(s[0]), nil
	case codeSmallUlong:
		return uint64(s[0]), nil
	case codeSmallInt:
		return int32(int8(s[0])), nil
	case codeSmallLong:
		return int64(int8(s[0])), nil
	case codeUshort:
		return binary.BigEndian.Uint16(s), nil
	case codeShort:
		return int16(binary.BigEndian.Uint16(s)), nil
	case codeUint:
		return binary.BigEndian.Uint32(s), nil
	case codeInt:
		return int32(binary.BigEndian.Uint32(s)), nil
	case codeFloat:
		return math.Float32frombits(binary.BigEndian.Uint32(s)), nil
	case codeChar:
		return Char(binary.BigEndian.Uint32(s)), nil
	case codeDecimal32:
		return Decimal32(s), nil
	case codeUlong:
		return binary.BigEndian.Uint64(s), nil
	case codeLong:
		return int64(binary.BigEndian.Uint64(s)), nil
	case codeDouble:
		return math.Float64frombits(binary.BigEndian.Uint64(s)), nil
	case codeTimestamp:
		return time.UnixMilli(int64(binary.BigEndian.Uint64(s))).UTC(), nil
	case codeDecimal64:
		return Decimal64(s), nil
	case codeUUID:
		return UUID(s), nil
	case codeDecimal128:
		return Decimal128(s), nil
	}
	return nil, decodeErr("unknown format code 0x%02x", code)
}

// Append encodes v after b, choosing the smallest encoding; it fails on a Go type with no AMQP form.
func Append(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, codeNull), nil
	case bool:
		if v {
			return append(b, codeBoolTrue), nil
		}
		return append(b, codeBoolFalse), nil
	case uint8:
		return append(b, codeUbyte, v), nil
	case uint16:
		return binary.BigEndian.AppendUint16(append(b, codeUshort), v), nil
	case uint32:
		switch {
		case v == 0:
			return append(b, codeUint0), nil
		case v < 256:
			return append(b, codeSmallUint, byte(v)), nil
		}
		return binary.BigEndian.AppendUint32(append(b, codeUint), v), nil
	case uint64:
		switch {
		case v == 0:
			return append(b, codeUlong0), nil
		case v < 256:
			return append(b, codeSmallUlong, byte(v)), nil
		}
		return binary.BigEndian.AppendUint64(append(b, codeUlong), v), nil
	case int8:
		return append(b, codeByte, byte(v)), nil
	case int16:
		return binary.BigEndian.AppendUint16(append(b, codeShort), uint16(v)), nil
	case int32:
		if v >= math.MinInt8 && v <= math.MaxInt8 {
			return append(b, codeSmallInt, byte(v)), nil
		}
		return binary.BigEndian.AppendUint32(append(b, codeInt), uint32(v)), nil
	case int:
		return Append(b, int64(v))
	case int64:
		if v >= math.MinInt8 && v <= math.MaxInt8 {
			return append(b, codeSmallLong, byte(v)), nil
		}
		return binary.BigEndian.AppendUint64(append(b, codeLong), uint64(v)), nil
	case float32:
		return binary.BigEndian.AppendUint32(append(b, codeFloat), math.Float32bits(v)), nil
	case float64:
		return binary.BigEndian.AppendUint64(append(b, codeDouble), math.Float64bits(v)), nil
	case Char:
		return binary.BigEndian.AppendUint32(append(b, codeChar), uint32(v)), nil
	case time.Time:
		return binary.BigEndian.AppendUint64(append(b, codeTimestamp), uint64(v.UnixMilli())), nil
	case UUID:
		return append(append(b, codeUUID), v[:]...), nil
	case Decimal32:
		return append(append(b, codeDecimal32), v[:]...), nil
	case Decimal64:
		return append(append(b, codeDecimal64), v[:]...), nil
	case Decimal128:
		return append(append(b, codeDecimal128), v[:]...), nil
	case []byte:
		return appendVariable(b, codeVbin8, codeVbin32, v), nil
	case string:
		return appendVariable(b, codeStr8, codeStr32, []byte(v)), nil
	case Symbol:
		return appendVariable(b, codeSym8, codeSym32, []byte(v)), nil
	case []Symbol:
		a := make(Array, len(v))
		for i, s := range v {
			a[i] = s
		}
		return Append(b, a)
	case Described:
		b = append(b, codeDescribed)
		b, err := Append(b, v.Descriptor)
		if err != nil {
			return nil, err
		}
		return Append(b, v.Value)
	case []any:
		if len(v) == 0 {
			return append(b, codeList0), nil
		}
		return appendCompound(b, codeList8, codeList32, len(v), func(b []byte) ([]byte, error) {
			var err error
			for _, e := range v {
				if b, err = Append(b, e); err != nil {
					return nil, err
				}
			}
			return b, nil
		})
	case Map:
		return appendCompound(b, codeMap8, codeMap32, 2*len(v), func(b []byte) ([]byte, error) {
			var err error
			for _, e := range v {
				if b, err = Append(b, e.Key); err != nil {
					return nil, err
				}
				if b, err = Append(b, e.Value); err != nil {
					return nil, err
				}
			}
			return b, nil
		})
	case Array:
		return appendArray(b, v)
	}
	return nil, fmt.Errorf("amqp: cannot encode %T", v)
}

func appendVariable(b []byte, small, wide byte, s []byte) []byte {
	if len(s) < 256 {
		b = append(b, small, byte(len(s)))
	} else {
		b = binary.BigEndian.AppendUint32(append(b, wide), uint32(len(s)))
	}
	return append(b, s...)
}

// appendCompound writes a list, map or array: elements first into a scratch buffer, then with the size and count
// in the narrow form when both fit in a byte.
func appendCompound(b []byte, small, wide byte, count int, elems func([]byte) ([]byte, error)) ([]byte, error) {
	body, err := elems(nil)
	if err != nil {
		return nil, err
	}
	if len(body)+1 < 256 && count < 256 {
		b = append(b, small, byte(len(body)+1), byte(count))
	} else {
		b = append(b, wide)
		b = binary.BigEndian.AppendUint32(b, uint32(len(body)+4))
		b = binary.BigEndian.AppendUint32(b, uint32(count))
	}
	return append(b, body...), nil
}

// appendArray encodes an array under one constructor: the elements' own when they all share it (sym8, say),
// otherwise each element's wide form; every element must have the type of element 0.
func appendArray(b []byte, a Array) ([]byte, error) {
	return appendCompound(b, codeArray8, codeArray32, len(a), func(body []byte) ([]byte, error) {
		if len(a) == 0 {
			return append(body, codeNull), nil
		}
		encs := make([][]byte, len(a))
		same := true
		for i, e := range a {
			if _, ok := e.(Described); ok {
				return nil, errors.New("amqp: arrays of described values are not encoded")
			}
			enc, err := Append(nil, e)
			if err != nil {
				return nil, err
			}
			encs[i] = enc
			// zero-width forms (true, uint0, list0) are widened: the decoder bounds a count by the bytes left
			same = same && enc[0] == encs[0][0] && sizeOf(enc[0]) != 0
		}
		if same {
			body = append(body, encs[0][0])
			for _, enc := range encs {
				body = append(body, enc[1:]...)
			}
			return body, nil
		}
		code, _ := widen(encs[0])
		body = append(body, code)
		for i, enc := range encs {
			c, payload := widen(enc)
			if c != code {
				return nil, fmt.Errorf("amqp: array mixes %T with element 0's type", a[i])
			}
			body = append(body, payload...)
		}
		return body, nil
	})
}

// widen turns the compact encoding of a primitive into its array-compatible form (constructor, payload).
func widen(enc []byte) (byte, []byte) {
	switch enc[0] {
	case codeSmallUint, codeUint0:
		var u uint32
		if enc[0] == codeSmallUint {
			u = uint32(enc[1])
		}
		return codeUint, binary.BigEndian.AppendUint32(nil, u)
	case codeSmallUlong, codeUlong0:
		var u uint64
		if enc[0] == codeSmallUlong {
			u = uint64(enc[1])
		}
		return codeUlong, binary.BigEndian.AppendUint64(nil, u)
	case codeSmallInt:
		return codeInt, binary.BigEndian.AppendUint32(nil, uint32(int32(int8(enc[1]))))
	case codeSmallLong:
		return codeLong, binary.BigEndian.AppendUint64(nil, uint64(int64(int8(enc[1]))))
	case codeBoolTrue:
		return codeBool, []byte{1}
	case codeBoolFalse:
		return codeBool, []byte{0}
	case codeVbin8, codeStr8, codeSym8:
		return enc[0] | 0x10, append(binary.BigEndian.AppendUint32(nil, uint32(enc[1])), enc[2:]...)
	case codeList0:
		return codeList32, []byte{0, 0, 0, 4, 0, 0, 0, 0}
	case codeList8, codeMap8, codeArray8:
		size, count := uint32(enc[1]), uint32(enc[2])
		out := binary.BigEndian.AppendUint32(nil, size+3)
		out = binary.BigEndian.AppendUint32(out, count)
		return enc[0] | 0x10, append(out, enc[3:]...)
	}
	return enc[0], enc[1:]
}
