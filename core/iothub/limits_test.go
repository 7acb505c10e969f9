package iothub

import (
	"strings"
	"testing"
)

// FuzzEscapedLen: the lengths the limits are checked with are those of the strings sent.
func FuzzEscapedLen(f *testing.F) {
	f.Add("a b&c=d%e+f/g?h#i~j-k_l.m", "é\x00\xff")
	f.Fuzz(func(t *testing.T, k, v string) {
		if got, want := EscapedLen(k), len(Escape(k)); got != want {
			t.Fatalf("EscapedLen(%q) = %d, Escape gives %d bytes", k, got, want)
		}
		pairs := [][2]string{{k, v}, {"", "skipped"}, {v, k}}
		if got, want := EncodedPropertiesLen(pairs), len(EncodeProperties(pairs)); got != want {
			t.Fatalf("EncodedPropertiesLen(%q) = %d, EncodeProperties gives %d bytes", pairs, got, want)
		}
	})
}

func TestReservedPropertyKeys(t *testing.T) {
	for _, k := range []string{"$.mid", "$.cid", "$.ct", "$.ce", "$.to", "$.exp", "$.uid", "$.", "iothub-ack",
		"IoTHub-Operation", "iothub-connection-device-id", "IOTHUB-"} {
		if !ReservedPropertyKey(k) {
			t.Errorf("%q is not reserved", k)
		}
	}
	for _, k := range []string{"mid", "$mid", "$", "iothub", "iot-hub-x", "x-iothub-y", CreationTimeProperty,
		strings.ToUpper(CreationTimeProperty)} {
		if ReservedPropertyKey(k) {
			t.Errorf("%q is reserved", k)
		}
	}
}

func TestCheckMessageID(t *testing.T) {
	allowed := "aZ09-:.+%_#*?!(),=@;$'"
	if err, _ := CheckMessageID(allowed + strings.Repeat("x", MaxMessageIDLength-len(allowed))); err != nil {
		t.Fatalf("128 allowed characters refused: %v", err)
	}
	if err, tooLong := CheckMessageID(strings.Repeat("x", MaxMessageIDLength+1)); err == nil || !tooLong {
		t.Fatalf("129 characters: %v, tooLong %v", err, tooLong)
	}
	for _, bad := range []string{"a b", "a/b", "é", "a\x00", "a&b", "<x>"} {
		if err, tooLong := CheckMessageID(bad); err == nil || tooLong {
			t.Errorf("%q: %v, tooLong %v", bad, err, tooLong)
		}
	}
}
