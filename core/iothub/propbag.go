package iothub

import (
	"fmt"
	"net/url"
	"strings"
)

// System property keys in an MQTT topic's property bag.
const (
	PropMessageID       = "$.mid"
	PropCorrelationID   = "$.cid"
	PropContentType     = "$.ct"
	PropContentEncoding = "$.ce"
	PropTo              = "$.to"
)

// EncodeProperties renders key/value pairs as IoT Hub's property bag "k1=v1&k2=v2", each part percent-encoded.
// Order is kept. A pair with an empty key is skipped.
func EncodeProperties(pairs [][2]string) string {
	var b strings.Builder
	for _, p := range pairs {
		if p[0] == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(Escape(p[0]))
		b.WriteByte('=')
		b.WriteString(Escape(p[1]))
	}
	return b.String()
}

// DecodeProperties parses a property bag. A key without '=' has an empty value; '+' stays '+' because the SDKs
// encode a space as %20.
func DecodeProperties(bag string) ([][2]string, error) {
	bag = strings.TrimPrefix(bag, "?")
	if bag == "" {
		return nil, nil
	}
	var out [][2]string
	for _, part := range strings.Split(bag, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		dk, err := url.PathUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("property key %q: %w", k, err)
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("property %q value: %w", dk, err)
		}
		out = append(out, [2]string{dk, dv})
	}
	return out, nil
}

// SystemProperties are the system properties of a message that iotconn carries.
type SystemProperties struct {
	MessageID, CorrelationID, ContentType, ContentEncoding string
}

// SplitProperties separates a decoded property bag into the system properties above and the application
// properties, in order. Other system keys (ReservedPropertyKey) are dropped; CreationTimeProperty, which a device
// may set, stays an application property so the hub records it as the device sent it.
func SplitProperties(pairs [][2]string) (SystemProperties, [][2]string) {
	var sys SystemProperties
	var app [][2]string
	for _, p := range pairs {
		switch p[0] {
		case PropMessageID:
			sys.MessageID = p[1]
		case PropCorrelationID:
			sys.CorrelationID = p[1]
		case PropContentType:
			sys.ContentType = p[1]
		case PropContentEncoding:
			sys.ContentEncoding = p[1]
		default:
			if !ReservedPropertyKey(p[0]) {
				app = append(app, p)
			}
		}
	}
	return sys, app
}
