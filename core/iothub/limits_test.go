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

func TestTwinSizeCountsAsIoTHubDoes(t *testing.T) {
	for patch, want := range map[string]int{
		`{}`:                          0,
		`{"a":"xyz"}`:                 1 + 3,
		`{"é":"\u0001b"}`:             1 + 1, // characters, less control characters
		`{"n":12345678901,"b":false}`: 1 + 8 + 1 + 4,
		`{"o":{"k":1,"gone":null}}`:   1 + 1 + 8,
		`{"gone":null}`:               0,
		`{"l":[1,"ab"]}`:              1 + 8 + 2,
	} {
		obj, err := CheckJSONObject("patch", []byte(patch))
		if err != nil {
			t.Fatalf("%s: %v", patch, err)
		}
		if got := TwinSize(obj); got != want {
			t.Errorf("TwinSize(%s) = %d, want %d", patch, got, want)
		}
	}
}

func TestCheckReportedPatch(t *testing.T) {
	value := strings.Repeat("v", MaxTwinSectionSize-1)
	if err, _ := CheckReportedPatch([]byte(`{"k":"` + value + `"}`)); err != nil {
		t.Fatalf("a patch of exactly the limit: %v", err)
	}
	if err, tooLarge := CheckReportedPatch([]byte(`{"k":"` + value + `v"}`)); err == nil || !tooLarge {
		t.Fatalf("a patch one over the limit: %v, tooLarge %v", err, tooLarge)
	}
	spaced := `{"k":` + strings.Repeat(" ", 2*MaxTwinSectionSize) + `1}` // whitespace is not counted
	if err, _ := CheckReportedPatch([]byte(spaced)); err != nil {
		t.Fatalf("a small patch with much whitespace: %v", err)
	}
	for _, bad := range []string{``, `null`, `[]`, `"s"`, `{"a":1} {}`, `{"a":1`, "{\"a\":\"\xff\"}", `{"a":1}x`} {
		if err, tooLarge := CheckReportedPatch([]byte(bad)); err == nil || tooLarge {
			t.Errorf("%q: %v, tooLarge %v", bad, err, tooLarge)
		}
	}
}

func TestCheckMethodPayload(t *testing.T) {
	for _, ok := range []string{``, `null`, `1`, `"s"`, `{"a":[1]}`} {
		if err, _ := CheckMethodPayload([]byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{`{`, `x`, "\"\xff\""} {
		if err, tooLarge := CheckMethodPayload([]byte(bad)); err == nil || tooLarge {
			t.Errorf("%q: %v, tooLarge %v", bad, err, tooLarge)
		}
	}
	if err, tooLarge := CheckMethodPayload([]byte(`"` + strings.Repeat("x", MaxMethodPayloadSize) + `"`)); err == nil ||
		!tooLarge {
		t.Fatalf("an oversized payload: %v, tooLarge %v", err, tooLarge)
	}
}
