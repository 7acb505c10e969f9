package mqtt

import (
	"fmt"
	"strings"

	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
)

// MaxTopicLength is MQTT's limit on a topic name, which carries IoT Hub's property bag: a two-byte length.
const MaxTopicLength = 65535

// CheckIdentity refuses ids that cannot appear in an MQTT topic name: IoT Hub allows '+' and '#' in device and
// module ids, but MQTT reserves them as wildcards, so no PUBLISH or SUBSCRIBE could name the device.
func (d *Dialer) CheckIdentity(deviceID, moduleID string) error {
	for _, f := range [][2]string{{"DeviceId", deviceID}, {"ModuleId", moduleID}} {
		if strings.ContainsAny(f[1], "+#") {
			return &transport.Error{Kind: transport.KindProtocol, Op: "check",
				Err: fmt.Errorf("%s %q has '+' or '#', which MQTT topics cannot carry; use AMQP for it", f[0], f[1])}
		}
	}
	return nil
}

// CheckMessage refuses a message whose topic would pass MaxTopicLength.
func (d *Dialer) CheckMessage(deviceID, moduleID string, m *transport.Message) error {
	if n := topicLen(iothub.TelemetryTopic(deviceID, moduleID, ""), m); n > MaxTopicLength {
		return &transport.Error{Kind: transport.KindTooLarge, Op: "check", Err: fmt.Errorf(
			"its MQTT topic (the system and application properties, percent-encoded) would be %d bytes; "+
				"MQTT allows %d", n, MaxTopicLength)}
	}
	return nil
}

// topicLen is len(prefix + the property bag of m) without building it; an empty MessageID counts as the
// longest id the engine generates.
func topicLen(prefix string, m *transport.Message) int {
	var buf [8][2]string
	pairs := bagPairs(m, buf[:0])
	n := len(prefix) + iothub.EncodedPropertiesLen(pairs)
	if m.MessageID == "" {
		n += iothub.EscapedLen(iothub.PropMessageID) + 1 + iothub.MaxGeneratedMessageIDLength
		if len(pairs) > 0 {
			n++ // its '&'
		}
	}
	return n
}
