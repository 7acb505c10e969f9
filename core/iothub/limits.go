package iothub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode"
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

// Twin and direct-method limits.
const (
	// MaxTwinSectionSize bounds properties/desired and properties/reported, each counted IoT Hub's way (see
	// TwinSize): "IoT Hub enforces [...] a 32 KB size limit each on the value of properties/desired and
	// properties/reported" and "rejects with an error all operations that would increase the size of [them] above
	// the limit" (iot-hub-devguide-device-twins, "Device twin size").
	MaxTwinSectionSize = 32 << 10
	// MaxMethodPayloadSize bounds a direct method's request and response payloads: "a JSON document up to 128 KB"
	// (iot-hub-devguide-direct-methods; revisions before 2019 said 8 KB).
	MaxMethodPayloadSize = 128 << 10
)

// TwinSize is the size IoT Hub counts for the properties a twin patch sets (iot-hub-devguide-device-twins,
// "Device twin size"): every key and value, keys and strings by their characters less Unicode control
// characters, numbers as 8 bytes, booleans as 4, objects as what they hold. A null deletes a key and counts
// nothing; an array counts its elements. A patch's properties all stay in its section once merged, so a patch
// above MaxTwinSectionSize is one the hub certainly refuses (one below may still overflow the section).
func TwinSize(v any) int {
	switch v := v.(type) {
	case map[string]any:
		n := 0
		for k, e := range v {
			if e != nil {
				n += textSize(k) + TwinSize(e)
			}
		}
		return n
	case []any:
		n := 0
		for _, e := range v {
			n += TwinSize(e)
		}
		return n
	case string:
		return textSize(v)
	case bool:
		return 4
	case nil:
		return 0
	}
	return 8 // a number
}

func textSize(s string) int {
	n := 0
	for _, r := range s {
		if !unicode.IsControl(r) {
			n++
		}
	}
	return n
}

// CheckJSONObject says why b is not one UTF-8 JSON object, nil when it is, and returns the object decoded (numbers
// as json.Number).
func CheckJSONObject(what string, b []byte) (map[string]any, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%s is not valid UTF-8", what)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, fmt.Errorf("%s is not a JSON object", what)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s has more after its JSON object", what)
	}
	return obj, nil
}

// CheckReportedPatch says why patch cannot be sent as a reported-properties patch, nil when it can; tooLarge tells
// the size limit apart.
func CheckReportedPatch(patch []byte) (err error, tooLarge bool) {
	obj, err := CheckJSONObject("the reported patch", patch)
	if err != nil {
		return err, false
	}
	if n := TwinSize(obj); n > MaxTwinSectionSize {
		return fmt.Errorf("the reported patch sets %d bytes of properties as IoT Hub counts them; properties/reported "+
			"holds at most %d", n, MaxTwinSectionSize), true
	}
	return nil, false
}

// CheckMethodPayload says why b cannot be a direct method's response payload, nil when it can: nothing, or one
// UTF-8 JSON value of at most MaxMethodPayloadSize bytes; tooLarge tells the size limit apart.
func CheckMethodPayload(b []byte) (err error, tooLarge bool) {
	switch {
	case len(b) > MaxMethodPayloadSize:
		return fmt.Errorf("the method response payload is %d bytes; IoT Hub accepts at most %d", len(b),
			MaxMethodPayloadSize), true
	case len(b) > 0 && (!utf8.Valid(b) || !json.Valid(b)):
		return fmt.Errorf("the method response payload is not one UTF-8 JSON value"), false
	}
	return nil, false
}
