package iothub

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Device Provisioning Service conventions, shared by the engine's provisioning client and hubsim's DPS.

// DPSAPIVersion is the DPS device API version the official SDKs announce.
const DPSAPIVersion = "2019-03-31"

// DPS MQTT topics.
const (
	TopicDPSResponses = "$dps/registrations/res/"                            // + {status}/?$rid=..[&retry-after=..]
	TopicDPSRegister  = "$dps/registrations/PUT/iotdps-register/"            // + ?$rid=..
	TopicDPSStatus    = "$dps/registrations/GET/iotdps-get-operationstatus/" // + ?$rid=..&operationId=..
)

// DPSSASKeyName is the skn of a device's registration token.
const DPSSASKeyName = "registration"

// DPSResource is the resource a registration token is scoped to: "{idScope}/registrations/{registrationId}".
func DPSResource(idScope, registrationID string) string {
	return idScope + "/registrations/" + registrationID
}

// DPSUsername is the MQTT user name of a registration connection.
func DPSUsername(idScope, registrationID string) string {
	return DPSResource(idScope, registrationID) + "/api-version=" + DPSAPIVersion
}

// DPSRegisterTopic is where a device publishes its registration request.
func DPSRegisterTopic(rid string) string { return TopicDPSRegister + "?$rid=" + rid }

// DPSStatusTopic is where a device polls an operation's status.
func DPSStatusTopic(rid, operationID string) string {
	return TopicDPSStatus + "?$rid=" + rid + "&operationId=" + operationID
}

// DPSResponseTopic is where DPS answers a request; retryAfter < 0 leaves the retry-after parameter out.
func DPSResponseTopic(status int, rid string, retryAfter int) string {
	t := TopicDPSResponses + strconv.Itoa(status) + "/?$rid=" + rid
	if retryAfter >= 0 {
		t += "&retry-after=" + strconv.Itoa(retryAfter)
	}
	return t
}

// ParseDPSResponse reads a response topic; retryAfter is -1 when the topic has none.
func ParseDPSResponse(topic string) (status int, rid string, retryAfter int, ok bool) {
	rest, found := strings.CutPrefix(topic, TopicDPSResponses)
	if !found {
		return 0, "", 0, false
	}
	code, _, _ := strings.Cut(rest, "/")
	status, err := strconv.Atoi(code)
	if err != nil {
		return 0, "", 0, false
	}
	rid, _ = TopicQuery(topic, "$rid")
	retryAfter = -1
	if s, has := TopicQuery(topic, "retry-after"); has {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			retryAfter = n
		}
	}
	return status, rid, retryAfter, true
}

// DeriveDeviceKey is a group enrollment member's key: Base64(HMAC-SHA256(Base64Decode(groupKey), registrationId)).
func DeriveDeviceKey(groupKey, registrationID string) (string, error) {
	key, err := base64.StdEncoding.DecodeString(groupKey)
	if err != nil {
		return "", fmt.Errorf("group key is not valid base64: %w", err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(registrationID))
	return base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}
