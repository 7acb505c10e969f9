package core

import (
	"errors"
	"strconv"
	"time"

	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
)

// Floors of the SAS token options: a shorter token, a thinner margin or a shorter gap between renewals makes a
// device reconnect in a loop (on MQTT every renewal is a reconnect) rather than stay connected.
const (
	MinSASLifetime      = 60 * time.Second
	MinSASRenewMargin   = 5 * time.Second
	MinSASRenewInterval = 30 * time.Second
)

// checkSASFloors refuses token options below the floors; tests against the emulator may waive them.
func checkSASFloors(o *Options) *Error {
	lifetime, margin := o.SASLifetime, o.SASRenewMargin
	switch {
	case o.shortTokensForTests:
		if margin >= lifetime {
			return Errorf(CodeInvalidArgument, "SAS renewal margin %v must be shorter than the token lifetime %v",
				margin, lifetime)
		}
	case lifetime < MinSASLifetime:
		return Errorf(CodeInvalidArgument, "SAS token lifetime %v is below the floor of %v", lifetime, MinSASLifetime)
	case margin < MinSASRenewMargin:
		return Errorf(CodeInvalidArgument, "SAS renewal margin %v is below the floor of %v", margin, MinSASRenewMargin)
	case lifetime-margin < MinSASRenewInterval:
		return Errorf(CodeInvalidArgument, "SAS token lifetime %v minus renewal margin %v leaves %v between renewals; "+
			"the floor is %v", lifetime, margin, lifetime-margin, MinSASRenewInterval)
	}
	return nil
}

// checkMessage says why msg cannot reach the hub exactly as given, before Send accepts it: IoT Hub's rules for
// every protocol first, then the transport's own wire limits. Nothing is ever truncated or rewritten later.
func (c *Client) checkMessage(msg *Message, wire *transport.Message) *Error {
	if msg.TTL < 0 {
		return Errorf(CodeInvalidArgument, "time-to-live %v is negative", msg.TTL)
	}
	size := len(msg.Payload) + len(msg.MessageID)
	if msg.MessageID == "" {
		size += iothub.MaxGeneratedMessageIDLength
	} else if err, tooLong := iothub.CheckMessageID(msg.MessageID); err != nil {
		return &Error{Code: codeFor(tooLong), Msg: err.Error(), Err: err}
	}
	for _, f := range [...]struct{ what, value string }{
		{"correlation id", msg.CorrelationID}, {"content type", msg.ContentType},
		{"content encoding", msg.ContentEncoding},
	} {
		if err := iothub.CheckText(f.what, f.value); err != nil {
			return &Error{Code: CodeInvalidArgument, Msg: err.Error(), Err: err}
		}
		size += len(f.value)
	}
	for i, p := range msg.Properties {
		if err := checkProperty(i, p); err != nil {
			return err
		}
		size += len(p.Key) + len(p.Value)
	}
	if i, j := repeatedKey(msg.Properties); j >= 0 { // IoT Hub keeps one value per name: one would replace the other
		return Errorf(CodeInvalidArgument, "property %d repeats the key %q of property %d", j, msg.Properties[j].Key, i)
	}
	if size > iothub.MaxMessageSize {
		return Errorf(CodeTooLarge, "the message is %d bytes as IoT Hub counts it (payload, system property values, "+
			"application property names and values%s); IoT Hub accepts at most %d", size, generatedIDNote(msg),
			iothub.MaxMessageSize)
	}
	if err := c.dialer.CheckMessage(c.ident().cs.DeviceID, c.ident().cs.ModuleID, wire); err != nil {
		kind := transport.KindOf(err)
		return &Error{Code: codeFor(kind == transport.KindTooLarge), Msg: errors.Unwrap(err).Error(), Err: err}
	}
	return nil
}

// checkProperty applies the rules for application property i.
func checkProperty(i int, p Property) *Error {
	what := "property " + strconv.Itoa(i)
	switch {
	case p.Key == "":
		return Errorf(CodeInvalidArgument, "%s has an empty key", what)
	case iothub.ReservedPropertyKey(p.Key):
		return Errorf(CodeInvalidArgument, "%s is named %q: names starting with \"$.\" or \"iothub-\" are IoT Hub's "+
			"system properties (set message_id, correlation_id, content_type and content_encoding instead)", what, p.Key)
	}
	if err := iothub.CheckText(what+" key", p.Key); err != nil {
		return &Error{Code: CodeInvalidArgument, Msg: err.Error(), Err: err}
	}
	if err := iothub.CheckText(what+" value", p.Value); err != nil {
		return &Error{Code: CodeInvalidArgument, Msg: err.Error(), Err: err}
	}
	return nil
}

// repeatedKey returns the first property j whose key an earlier property i has, or j = -1.
func repeatedKey(props []Property) (i, j int) {
	if len(props) <= 16 { // most messages: no map
		for j := 1; j < len(props); j++ {
			for i := 0; i < j; i++ {
				if props[i].Key == props[j].Key {
					return i, j
				}
			}
		}
		return -1, -1
	}
	seen := make(map[string]int, len(props))
	for j, p := range props {
		if i, ok := seen[p.Key]; ok {
			return i, j
		}
		seen[p.Key] = j
	}
	return -1, -1
}

func codeFor(tooLarge bool) Code {
	if tooLarge {
		return CodeTooLarge
	}
	return CodeInvalidArgument
}

func generatedIDNote(msg *Message) string {
	if msg.MessageID != "" {
		return ""
	}
	return ", with " + strconv.Itoa(iothub.MaxGeneratedMessageIDLength) + " bytes for the message id to be generated"
}
