package iothub

import (
	"encoding/base64"
	"reflect"
	"strings"
	"testing"
	"time"
)

// pairsOf splits fuzz input into key/value pairs: fields separated by NUL alternate key, value (a missing last
// value is ""). NUL never needs to appear inside a property for the encoder to be exercised on every byte.
func pairsOf(s string) [][2]string {
	if s == "" {
		return nil
	}
	fields := strings.Split(s, "\x00")
	var pairs [][2]string
	for i := 0; i < len(fields); i += 2 {
		p := [2]string{fields[i], ""}
		if i+1 < len(fields) {
			p[1] = fields[i+1]
		}
		pairs = append(pairs, p)
	}
	return pairs
}

// withoutEmptyKeys is what EncodeProperties keeps of pairs.
func withoutEmptyKeys(pairs [][2]string) [][2]string {
	var out [][2]string
	for _, p := range pairs {
		if p[0] != "" {
			out = append(out, p)
		}
	}
	return out
}

// FuzzPropertyBagRoundTrip: any pairs (any bytes, including '&', '=', '%', '+', '?', invalid UTF-8) encode to a
// bag that uses none of the bag's separators unescaped and decodes back to the same pairs in the same order.
// Seeds are in testdata/fuzz/FuzzPropertyBagRoundTrip.
func FuzzPropertyBagRoundTrip(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		pairs := pairsOf(s)
		bag := EncodeProperties(pairs)
		if strings.Count(bag, "&") != max(len(withoutEmptyKeys(pairs))-1, 0) {
			t.Fatalf("bag %q of %q has a stray '&'", bag, pairs)
		}
		// The bag is the last segment of an MQTT topic: no '/', no wildcard, no NUL, no space.
		if strings.ContainsAny(bag, " +?#/\x00") {
			t.Fatalf("bag %q of %q has an unescaped character", bag, pairs)
		}
		got, err := DecodeProperties(bag)
		if err != nil {
			t.Fatalf("decoding our own bag %q: %v", bag, err)
		}
		if want := withoutEmptyKeys(pairs); !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip of %q through %q gave %q", want, bag, got)
		}
	})
}

// FuzzDecodeProperties: any bag a hub sends either fails with an error or decodes to pairs that encode and
// decode again to themselves (empty keys aside), and splitting them loses nothing but other system keys.
// Seeds are in testdata/fuzz/FuzzDecodeProperties.
func FuzzDecodeProperties(f *testing.F) {
	f.Fuzz(func(t *testing.T, bag string) {
		pairs, err := DecodeProperties(bag)
		if err != nil {
			if pairs != nil {
				t.Fatalf("error %v with pairs %q", err, pairs)
			}
			return
		}
		kept := withoutEmptyKeys(pairs)
		again, err := DecodeProperties(EncodeProperties(kept))
		if err != nil || !reflect.DeepEqual(again, kept) {
			t.Fatalf("re-encoding %q decoded to %q, %v", kept, again, err)
		}
		_, app := SplitProperties(pairs)
		for _, p := range app {
			if ReservedPropertyKey(p[0]) {
				t.Fatalf("system key %q among the application properties of %q", p[0], bag)
			}
		}
		if len(app) > len(pairs) {
			t.Fatalf("%d application properties out of %d pairs", len(app), len(pairs))
		}
	})
}

// FuzzSASRoundTrip: a token built for any resource, key and key name parses back to the same resource, key name
// and expiry, verifies with its key and not with another. Seeds are in testdata/fuzz/FuzzSASRoundTrip.
func FuzzSASRoundTrip(f *testing.F) {
	f.Fuzz(func(t *testing.T, resource string, key []byte, keyName string, expiry int64) {
		b64 := base64.StdEncoding.EncodeToString(key)
		tok, err := BuildSAS(resource, b64, keyName, time.Unix(expiry, 0))
		if len(key) == 0 {
			if err == nil {
				t.Fatal("BuildSAS accepted an empty key")
			}
			return
		}
		if err != nil {
			t.Fatalf("BuildSAS(%q, %q, %q, %d): %v", resource, b64, keyName, expiry, err)
		}
		sas, err := ParseSAS(tok)
		if expiry <= 0 || resource == "" {
			// se must be positive and sr present: the parser refuses what a hub would refuse.
			if err == nil {
				t.Fatalf("ParseSAS accepted %q (expiry %d, resource %q)", tok, expiry, resource)
			}
			return
		}
		if err != nil {
			t.Fatalf("ParseSAS of our own token %q: %v", tok, err)
		}
		if sas.Resource != resource || sas.KeyName != keyName || sas.Expiry.Unix() != expiry {
			t.Fatalf("token %q parsed into %+v", tok, sas)
		}
		if !sas.Verify(b64) {
			t.Fatalf("token %q does not verify with its own key", tok)
		}
		other := append([]byte{key[0] ^ 1}, key[1:]...)
		if sas.Verify(base64.StdEncoding.EncodeToString(other)) {
			t.Fatalf("token %q verifies with another key", tok)
		}
	})
}
