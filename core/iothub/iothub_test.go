package iothub

import (
	"encoding/base64"
	"reflect"
	"strings"
	"testing"
	"time"
)

var testKey = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func TestSASRoundTrip(t *testing.T) {
	exp := time.Unix(1900000000, 0)
	tok, err := BuildSAS("localhost:18883/devices/dev 1", testKey, "", exp)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tok, "sr=localhost%3A18883%2Fdevices%2Fdev%201&") {
		t.Fatalf("resource not encoded as encodeURIComponent would: %s", tok)
	}
	s, err := ParseSAS(tok)
	if err != nil {
		t.Fatal(err)
	}
	if s.Resource != "localhost:18883/devices/dev 1" || !s.Expiry.Equal(exp) || s.KeyName != "" {
		t.Fatalf("parsed %+v", s)
	}
	if !s.Verify(testKey) {
		t.Fatal("token does not verify with its own key")
	}
	other := base64.StdEncoding.EncodeToString([]byte("another key of thirty-two bytes!"))
	if s.Verify(other) {
		t.Fatal("token verifies with a different key")
	}
}

func TestSASKnownVector(t *testing.T) {
	// HMAC-SHA256(key, "myhub.azure-devices.net%2Fdevices%2Fd1\n1700000000") computed independently with openssl.
	tok, err := BuildSAS("myhub.azure-devices.net/devices/d1", testKey, "", time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	want := "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fd1&sig=" + sasVectorSig + "&se=1700000000"
	if tok != want {
		t.Fatalf("got  %s\nwant %s", tok, want)
	}
}

func TestParseSASErrors(t *testing.T) {
	for _, bad := range []string{
		"", "sr=a&sig=b&se=1", "SharedAccessSignature sig=YQ%3D%3D&se=1", "SharedAccessSignature sr=a&se=1",
		"SharedAccessSignature sr=a&sig=YQ%3D%3D", "SharedAccessSignature sr=a&sig=YQ%3D%3D&se=x",
		"SharedAccessSignature sr=a&sig=!!!&se=1", "SharedAccessSignature sr=a&sig", "SharedAccessSignature sr=%zz&sig=YQ%3D%3D&se=1",
	} {
		if _, err := ParseSAS(bad); err == nil {
			t.Errorf("ParseSAS(%q) accepted a malformed token", bad)
		}
	}
	if _, err := BuildSAS("r", "not base64!", "", time.Now()); err == nil {
		t.Error("BuildSAS accepted a key that is not base64")
	}
}

func TestPropertyBagRoundTrip(t *testing.T) {
	in := [][2]string{{"$.mid", "m 1"}, {"temp&unit", "21.5=C"}, {"plus", "a+b"}, {"utf8", "é/ü?"}}
	bag := EncodeProperties(in)
	if strings.ContainsAny(bag, " +/?") {
		t.Fatalf("unescaped characters in %q", bag)
	}
	out, err := DecodeProperties(bag)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: got %q want %q", out, in)
	}
	bare, err := DecodeProperties("?$.to=%2Fdevices%2Fd&flag&")
	if err != nil || !reflect.DeepEqual(bare, [][2]string{{"$.to", "/devices/d"}, {"flag", ""}}) {
		t.Fatalf("got %q, %v", bare, err)
	}
	if _, err := DecodeProperties("k=%zz"); err == nil {
		t.Fatal("accepted a bad escape")
	}
}

// URL-encoded "dzJAnPFJ90MvI/GTgtJmLmYOGV7pECdQmoFOEm5tODc=".
const sasVectorSig = "dzJAnPFJ90MvI%2FGTgtJmLmYOGV7pECdQmoFOEm5tODc%3D"

func TestSplitProperties(t *testing.T) {
	sys, app := SplitProperties([][2]string{
		{"$.mid", "m1"}, {"b", "2"}, {"$.cid", "c1"}, {"$.to", "/devices/d"}, {"$.ct", "application/json"},
		{"iothub-ack", "full"}, {"IoTHub-MessageLockToken", "x"},
		{CreationTimeProperty, "2026-11-27T06:23:40Z"}, {"$.ce", "utf-8"}, {"a", "1"},
	})
	want := SystemProperties{MessageID: "m1", CorrelationID: "c1", ContentType: "application/json", ContentEncoding: "utf-8"}
	// The one "iothub-" name a device may set is an application property, kept in place; the hub's own are not.
	wantApp := [][2]string{{"b", "2"}, {CreationTimeProperty, "2026-11-27T06:23:40Z"}, {"a", "1"}}
	if sys != want || !reflect.DeepEqual(app, wantApp) {
		t.Fatalf("got %+v %q", sys, app)
	}
}
