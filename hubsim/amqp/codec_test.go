package amqp

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"
)

// TestRoundTrip encodes one value of every type and decodes it back unchanged.
func TestRoundTrip(t *testing.T) {
	long := string(bytes.Repeat([]byte("x"), 300))
	values := []any{
		nil, true, false, uint8(7), uint16(65535), uint32(0), uint32(200), uint32(1 << 20), uint64(0), uint64(9),
		uint64(1 << 40), int8(-3), int16(-300), int32(-5), int32(-1 << 20), int64(100), int64(-1 << 40),
		float32(1.5), 2.25, Char('é'), time.UnixMilli(1700000000123).UTC(), UUID{1, 2, 3}, Decimal32{1},
		Decimal64{2}, Decimal128{3}, []byte{1, 2}, []byte(long), "hé", long, Symbol("sym"), Symbol(long),
		[]any{}, []any{uint32(1), "a", []any{nil}}, Map{{Symbol("k"), "v"}, {uint64(1), Map{}}},
		Array{uint32(1), uint32(300)}, Array{Symbol("a"), Symbol(long)}, Array{true, false},
		Array{[]any{"a"}, []any{}}, Array{int64(-1), int64(1 << 40)},
		Described{Descriptor: uint64(0x70), Value: []any{"x"}}, Described{Descriptor: Symbol("a:b"), Value: "y"},
	}
	for _, v := range values {
		enc, err := Append(nil, v)
		if err != nil {
			t.Fatalf("%#v: %v", v, err)
		}
		got, n, err := Decode(enc)
		if err != nil || n != len(enc) {
			t.Fatalf("%#v: decode %d of %d bytes: %v", v, n, len(enc), err)
		}
		if !reflect.DeepEqual(got, v) {
			t.Fatalf("round trip of %#v gave %#v", v, got)
		}
	}
}

// TestHostileLengths: lengths and counts larger than the input are errors, not allocations or panics.
func TestHostileLengths(t *testing.T) {
	for _, b := range [][]byte{
		{0xb0, 0xff, 0xff, 0xff, 0xff},                               // binary of 4 GiB
		{0xd0, 0x00, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff},       // list claiming 4 G elements in 4 bytes
		{0xf0, 0x00, 0x00, 0x00, 0x05, 0x7f, 0xff, 0xff, 0xff, 0x40}, // array of 2 G nulls in 5 bytes
		{0xc1, 0x02, 0x01, 0x40},                                     // map with an odd count
		{0x00, 0x00, 0x00},                                           // descriptor nested without end
		{0x56, 0x02},                                                 // boolean 2
		{0x00, 0xa1, 0x01, 0x61, 0x40},                               // string descriptor
		{0xff},                                                       // unknown code
		{},
	} {
		if _, _, err := Decode(b); !errors.Is(err, ErrDecode) {
			t.Errorf("% x: %v", b, err)
		}
	}
	deep := bytes.Repeat([]byte{0xc0, 0x00, 0x01}, 100) // lists nested 100 deep (sizes are wrong too)
	if _, _, err := Decode(deep); err == nil {
		t.Error("deep nesting decoded")
	}
}

// TestSmallestEncoding checks the compact forms other implementations expect.
func TestSmallestEncoding(t *testing.T) {
	for _, c := range []struct {
		v    any
		want []byte
	}{
		{uint32(0), []byte{0x43}}, {uint64(5), []byte{0x53, 5}}, {int32(-1), []byte{0x54, 0xff}},
		{[]any{}, []byte{0x45}}, {[]Symbol{"a"}, []byte{0xe0, 0x04, 0x01, 0xa3, 0x01, 'a'}},
		{math.MaxUint32 + uint64(0), []byte{0x80, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}},
	} {
		got, err := Append(nil, c.v)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("%#v: % x, %v; want % x", c.v, got, err, c.want)
		}
	}
}

// FuzzDecode: any input decodes or fails with ErrDecode, never panics; what decodes re-encodes to bytes that
// decode to the same encoding again; performatives decode or fail cleanly.
func FuzzDecode(f *testing.F) {
	for _, seed := range [][]byte{
		{0x00, 0x53, 0x10, 0xc0, 0x03, 0x01, 0xa1, 0x00},
		{0x00, 0x53, 0x14, 0xc0, 0x08, 0x04, 0x43, 0x43, 0xa0, 0x01, 0x00, 0x43, 0x41},
		{0xf0, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x01, 0x00, 0x53, 0x24, 0x45},
		{0xd1, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x02, 0xa3, 0x01, 'k', 0x40},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, _, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error not wrapping ErrDecode: %v", err)
			}
			return
		}
		if _, err := performative(v); err != nil && !errors.Is(err, ErrDecode) {
			t.Fatalf("performative error not wrapping ErrDecode: %v", err)
		}
		enc, err := Append(nil, v)
		if err != nil {
			return // arrays of described values decode but are not encoded
		}
		v2, n, err := Decode(enc)
		if err != nil || n != len(enc) {
			t.Fatalf("re-encoded %#v does not decode: %v", v, err)
		}
		enc2, err := Append(nil, v2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: % x then % x (%v)", enc, enc2, err)
		}
	})
}
