package core

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/iotconn/iotconn/core/iothub"
)

// FuzzHubRecordsExactlyWhatSendAccepted: every message Send accepts arrives at the hub byte for byte (payload,
// system properties, application properties); every message it refuses is refused as invalid or too large.
// Seeds sit at the edges: reserved names, separators, percent signs, non-ASCII and invalid UTF-8.
func FuzzHubRecordsExactlyWhatSendAccepted(f *testing.F) {
	f.Add([]byte("{\"t\":21.5}"), "m-1", "c 1", "application/json", "utf-8", "unit", "°C", "a&b=c", "%20+/?#")
	f.Add([]byte{0, 1, 2, 255}, "", "", "", "", "$.mid", "forged", "iothub-ack", "full")
	f.Add([]byte("x"), "$'(),:=@;*?!#%+", "ü", "text/plain; charset=utf-8", "", iothub.CreationTimeProperty,
		"2026-11-27T06:00:00Z", "k", "\xff")
	f.Add([]byte("x"), strings.Repeat("i", 129), "", "", "", "k", "v", "k", "again")
	h := startHub(f)
	c, r := h.client(f, h.cs, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, payload []byte, mid, cid, ct, ce, k1, v1, k2, v2 string) {
		if len(payload) == 0 || strings.HasPrefix(k1, "AzIoTHub_Fault") || strings.HasPrefix(k2, "AzIoTHub_Fault") {
			return // an empty body is refused by the C ABI only; the fault keys are hubsim's test hooks
		}
		msg := &Message{Payload: payload, MessageID: mid, CorrelationID: cid, ContentType: ct, ContentEncoding: ce,
			Properties: []Property{{k1, v1}, {k2, v2}}}
		before := len(h.hub.Messages("dev1"))
		if _, err := c.Send(msg); err != nil {
			if code := codeOf(err); code != CodeInvalidArgument && code != CodeTooLarge {
				t.Fatalf("refused with %v", err)
			}
			return
		}
		if comp := r.expectCompletions(t, 1)[0]; comp.result != SendDelivered {
			t.Fatalf("completion %+v", comp)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		got, err := h.hub.WaitMessages(ctx, "dev1", before+1)
		if err != nil {
			t.Fatal(err)
		}
		rec := got[before]
		if !bytes.Equal(rec.Payload, payload) || rec.CorrelationID != cid || rec.ContentType != ct ||
			rec.ContentEncoding != ce || (mid != "" && rec.MessageID != mid) || rec.MessageID == "" {
			t.Fatalf("sent %q %q %q %q %q, the hub recorded %q %q %q %q %q", payload, mid, cid, ct, ce,
				rec.Payload, rec.MessageID, rec.CorrelationID, rec.ContentType, rec.ContentEncoding)
		}
		if want := [][2]string{{k1, v1}, {k2, v2}}; !slices.Equal(rec.PropertyList, want) {
			t.Fatalf("sent properties %q, the hub recorded %q", want, rec.PropertyList)
		}
	})
}
