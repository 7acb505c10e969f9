package iothub

import "time"

// APIVersion is the IoT Hub API version iotconn announces in the MQTT user name.
const APIVersion = "2021-04-12"

// Connection conventions.
const (
	// DefaultKeepAlive is the MQTT keep-alive the Azure IoT device SDKs use.
	DefaultKeepAlive = 240 * time.Second
	// MaxKeepAlive is IoT Hub's limit: it closes an MQTT link idle for longer.
	MaxKeepAlive = 1177 * time.Second
	// DefaultSASLifetime is how long a SAS token made from a device key lives, as in the Azure IoT device SDKs.
	DefaultSASLifetime = time.Hour
)

// IoT Hub topics outside a device's own devices/{id}/ tree: twins and direct methods.
const (
	TopicTwinGet      = "$iothub/twin/GET/"
	TopicTwinReported = "$iothub/twin/PATCH/properties/reported/"
	TopicTwinRes      = "$iothub/twin/res/"
	TopicTwinDesired  = "$iothub/twin/PATCH/properties/desired/"
	TopicMethodsPost  = "$iothub/methods/POST/"
	TopicMethodsRes   = "$iothub/methods/res/"
)

// ClientID is the MQTT client id IoT Hub expects: the device id, or "device/module".
func ClientID(deviceID, moduleID string) string {
	if moduleID == "" {
		return deviceID
	}
	return deviceID + "/" + moduleID
}

// Username is the MQTT user name: "{host}/{clientID}/?api-version=...".
func Username(host, deviceID, moduleID string) string {
	return host + "/" + ClientID(deviceID, moduleID) + "/?api-version=" + APIVersion
}

// ResourceURI is the SAS resource a device or module token is scoped to.
func ResourceURI(host, deviceID, moduleID string) string {
	r := host + "/devices/" + deviceID
	if moduleID != "" {
		r += "/modules/" + moduleID
	}
	return r
}

// Topic prefixes for a device (or module: "devices/{d}/modules/{m}/...").
func topicBase(deviceID, moduleID string) string {
	if moduleID == "" {
		return "devices/" + deviceID
	}
	return "devices/" + deviceID + "/modules/" + moduleID
}

// TelemetryTopic is where a device publishes D2C messages; the property bag follows the last '/'.
func TelemetryTopic(deviceID, moduleID, propertyBag string) string {
	return topicBase(deviceID, moduleID) + "/messages/events/" + propertyBag
}

// C2DPrefix is the C2D topic prefix; the hub appends the property bag. Devices subscribe to C2DPrefix + "#".
func C2DPrefix(deviceID string) string {
	return "devices/" + deviceID + "/messages/devicebound/"
}
