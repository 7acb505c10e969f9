package iothub

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// IoT Hub's documented message limits (iot-hub-devguide-messages-construct, iot-hub-devguide-quotas-throttling).
const (
	// MaxMessageSize bounds a device-to-cloud message as the hub measures it: the body, the values of the system
	// properties and the names and values of the application properties.
	MaxMessageSize = 256 << 10
	// MaxMessageIDLength bounds message-id, which holds only ASCII letters, digits and messageIDSpecials.
	MaxMessageIDLength = 128
	// MaxGeneratedMessageIDLength bounds the message ids an engine makes for messages sent without one; limits
	// are checked with this length for them, so a message never grows past a limit once its id is made.
	MaxGeneratedMessageIDLength = 48
)

const messageIDSpecials = "-:.+%_#*?!(),=@;$'"

// CreationTimeProperty is the one application property in IoT Hub's "iothub-" namespace a device may set.
const CreationTimeProperty = "iothub-creation-time-utc"

// ReservedPropertyKey reports whether an application property named key would be read by the hub as something
// else: "$." names are MQTT system properties ($.mid, $.cid, $.ct, $.ce, $.to, $.exp, $.uid, ...) and "iothub-"
// names are the hub's own (iothub-ack, iothub-connection-device-id, ...). Both compare without case.
func ReservedPropertyKey(key string) bool {
	if strings.HasPrefix(key, "$.") {
		return true
	}
	const ns = "iothub-"
	return len(key) >= len(ns) && strings.EqualFold(key[:len(ns)], ns) && !strings.EqualFold(key, CreationTimeProperty)
}

// CheckMessageID says why id cannot be a message-id, nil when it can; tooLong tells a length problem apart.
func CheckMessageID(id string) (err error, tooLong bool) {
	if len(id) > MaxMessageIDLength {
		return fmt.Errorf("message id is %d bytes long; IoT Hub allows %d", len(id), MaxMessageIDLength), true
	}
	for i := 0; i < len(id); i++ {
		if b := id[i]; !isASCIIAlnum(b) && strings.IndexByte(messageIDSpecials, b) < 0 {
			return fmt.Errorf("message id %q has %q at byte %d; IoT Hub allows ASCII letters, digits and %s",
				id, b, i, messageIDSpecials), false
		}
	}
	return nil, false
}

func isASCIIAlnum(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// CheckText says why a string field of a message cannot be carried unchanged, nil when it can: every protocol
// IoT Hub speaks carries these as UTF-8 text, and C strings end at NUL.
func CheckText(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%s contains a NUL byte", what)
	}
	return nil
}

// EscapedLen is len(Escape(s)) without building it: every byte but the unreserved ones takes three.
func EscapedLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) {
			n += 2
		}
	}
	return n
}

func unreserved(b byte) bool {
	return isASCIIAlnum(b) || b == '-' || b == '_' || b == '.' || b == '~'
}

// EncodedPropertiesLen is len(EncodeProperties(pairs)) without building it.
func EncodedPropertiesLen(pairs [][2]string) int {
	n, count := 0, 0
	for _, p := range pairs {
		if p[0] == "" {
			continue
		}
		n += EscapedLen(p[0]) + 1 + EscapedLen(p[1])
		count++
	}
	return n + max(count-1, 0)
}
