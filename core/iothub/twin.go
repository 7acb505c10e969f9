package iothub

import (
	"strconv"
	"strings"
)

// The twin and direct-method topics of IoT Hub's MQTT protocol. A device publishes requests with a request id
// ($rid) it chooses and reads the hub's answers, desired-property updates and method calls; the hub emulator
// does the opposite with the same functions.

// TwinGetTopic asks for the whole twin; the answer comes on TwinResponseTopic with the same rid.
func TwinGetTopic(rid string) string { return TopicTwinGet + "?$rid=" + rid }

// TwinReportedTopic carries a reported-properties patch; the answer (204 and the new $version) comes on
// TwinResponseTopic with the same rid.
func TwinReportedTopic(rid string) string { return TopicTwinReported + "?$rid=" + rid }

// TwinResponseTopic is the hub's answer to a twin request; version 0 leaves $version out.
func TwinResponseTopic(status int, rid string, version int64) string {
	t := TopicTwinRes + strconv.Itoa(status) + "/?$rid=" + rid
	if version > 0 {
		t += "&$version=" + strconv.FormatInt(version, 10)
	}
	return t
}

// DesiredTopic carries a desired-properties patch and the twin's new desired $version.
func DesiredTopic(version int64) string {
	return TopicTwinDesired + "?$version=" + strconv.FormatInt(version, 10)
}

// MethodRequestTopic carries a direct method call.
func MethodRequestTopic(name, rid string) string { return TopicMethodsPost + name + "/?$rid=" + rid }

// MethodResponseTopic carries the device's answer to the method call rid.
func MethodResponseTopic(status int, rid string) string {
	return TopicMethodsRes + strconv.Itoa(status) + "/?$rid=" + rid
}

// TopicQuery returns the value of key in a topic's query ("...?$rid=1&$version=2"), exactly as written: devices
// and hubs match request ids verbatim.
func TopicQuery(topic, key string) (string, bool) {
	_, query, _ := strings.Cut(topic, "?")
	for _, part := range strings.Split(query, "&") {
		if v, ok := strings.CutPrefix(part, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// ParseTwinResponse reads TwinResponseTopic; version is 0 when the topic has none.
func ParseTwinResponse(topic string) (status int, rid string, version int64, ok bool) {
	rest, ok := strings.CutPrefix(topic, TopicTwinRes)
	if !ok {
		return 0, "", 0, false
	}
	code, _, _ := strings.Cut(rest, "/")
	status, err := strconv.Atoi(code)
	rid, hasRID := TopicQuery(topic, "$rid")
	if err != nil || !hasRID {
		return 0, "", 0, false
	}
	if v, has := TopicQuery(topic, "$version"); has {
		if version, err = strconv.ParseInt(v, 10, 64); err != nil {
			return 0, "", 0, false
		}
	}
	return status, rid, version, true
}

// ParseDesired reads DesiredTopic.
func ParseDesired(topic string) (version int64, ok bool) {
	if !strings.HasPrefix(topic, TopicTwinDesired) {
		return 0, false
	}
	v, has := TopicQuery(topic, "$version")
	version, err := strconv.ParseInt(v, 10, 64)
	return version, has && err == nil
}

// ParseMethodRequest reads MethodRequestTopic.
func ParseMethodRequest(topic string) (name, rid string, ok bool) {
	rest, ok := strings.CutPrefix(topic, TopicMethodsPost)
	if !ok {
		return "", "", false
	}
	name, _, _ = strings.Cut(rest, "/")
	rid, hasRID := TopicQuery(topic, "$rid")
	return name, rid, name != "" && hasRID
}
