package amqp

import (
	"context"
	"errors"
	"fmt"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/internal/netdial"
)

// This file is where AMQP's failures become transport kinds. TCP, TLS and the WebSocket upgrade are classified
// in netdial; the AMQP open, CBS and links here. Where an error carries an AMQP error condition (a close, an end,
// a detach or a rejected outcome), conditionKinds decides; an end without one (EOF, reset, idle timeout) is
// KindProtocol, as a dropped MQTT connection is.
//
// The engine then maps each kind to transient or fatal (core/classify.go): auth, device disabled and untrusted are
// fatal; throttled and quota take the throttling schedule; the rest retry on the application's policy. The
// official SDKs' choices for each condition are in the reference (iothub-protocols.md, A5); where they call a
// condition fatal that a retry can fix (a forced detach, a hub failing over), iotconn retries.
//
// On a link that was up, unauthorized-access and not-found are retried once (onLiveLink).
//
//	condition                                   kind                engine
//	amqp:unauthorized-access                    KindAuth            fatal, Bad_Credential
//	amqp:not-found                              KindDeviceDisabled  fatal, Device_Disabled
//	com.microsoft:device-container-throttled    KindThrottled       transient, the throttling schedule
//	amqp:resource-limit-exceeded                KindQuota           transient, the throttling schedule
//	com.microsoft:iot-hub-not-found-error       KindHubNotFound     transient after a good connection (a failover),
//	                                                                bounded by core.FailoverWindow; else fatal
//	amqp:link:message-size-exceeded             KindTooLarge        transient (the engine's checks keep it rare)
//	com.microsoft:timeout                       KindTimeout         transient
//	amqp:internal-error, com.microsoft:         KindServerBusy      transient
//	  iot-hub-suspended
//	amqp:connection:forced, framing-error,      KindProtocol        transient, Communication_Error
//	  redirect; amqp:link:detach-forced,
//	  redirect, stolen, transfer-limit-
//	  exceeded; amqp:session:*;
//	  amqp:resource-locked; com.microsoft:
//	  link-creation-conflict; any other
//
// A put-token answered with a status code maps as the .NET SDK maps it to conditions: 401 unauthorized, 404 not
// found (IoT Hub's answer for a disabled or unknown device), 429 throttled, 403 and 5xx the hub's own trouble.
var conditionKinds = map[goamqp.ErrCond]transport.Kind{
	goamqp.ErrCondUnauthorizedAccess:    transport.KindAuth,
	goamqp.ErrCondNotFound:              transport.KindDeviceDisabled,
	condThrottled:                       transport.KindThrottled,
	goamqp.ErrCondResourceLimitExceeded: transport.KindQuota,
	condHubNotFound:                     transport.KindHubNotFound,
	goamqp.ErrCondMessageSizeExceeded:   transport.KindTooLarge,
	condTimeout:                         transport.KindTimeout,
	goamqp.ErrCondInternalError:         transport.KindServerBusy,
	condHubSuspended:                    transport.KindServerBusy,
}

// IoT Hub's own conditions.
const (
	condThrottled    goamqp.ErrCond = "com.microsoft:device-container-throttled"
	condHubNotFound  goamqp.ErrCond = "com.microsoft:iot-hub-not-found-error"
	condTimeout      goamqp.ErrCond = "com.microsoft:timeout"
	condHubSuspended goamqp.ErrCond = "com.microsoft:iot-hub-suspended"
)

// kindOfCondition is the table's kind for cond; KindProtocol for any condition not in it.
func kindOfCondition(cond goamqp.ErrCond) transport.Kind {
	if k, ok := conditionKinds[cond]; ok {
		return k
	}
	return transport.KindProtocol
}

// remoteError is the AMQP error the hub sent with whatever ended err's operation, nil when it sent none.
func remoteError(err error) *goamqp.Error {
	var (
		ce *goamqp.ConnError
		se *goamqp.SessionError
		le *goamqp.LinkError
		ae *goamqp.Error
	)
	switch {
	case errors.As(err, &ce):
		return ce.RemoteErr
	case errors.As(err, &se):
		return se.RemoteErr
	case errors.As(err, &le):
		return le.RemoteErr
	case errors.As(err, &ae):
		return ae
	}
	return nil
}

// classify makes err, which ended op, a *transport.Error. ctx is the operation's: when it ended first, the
// failure is the operation's time running out (or its cancellation), not the hub's answer.
func classify(ctx context.Context, op string, err error) *transport.Error {
	var te *transport.Error
	var de *netdial.Error
	switch {
	case errors.As(err, &te):
		return te
	case errors.As(err, &de):
		return &transport.Error{Kind: de.Kind, Op: op, Err: de.Err}
	}
	if re := remoteError(err); re != nil {
		return &transport.Error{Kind: kindOfCondition(re.Condition), Op: op, Err: err}
	}
	if ctx != nil && ctx.Err() != nil {
		return &transport.Error{Kind: transport.KindTimeout, Op: op, Err: fmt.Errorf("%w (%v)", ctx.Err(), err)}
	}
	return &transport.Error{Kind: transport.KindProtocol, Op: op, Err: err}
}

// onLiveLink reclassifies the end of a link that was up: a detach or close with amqp:unauthorized-access or
// amqp:not-found there means the token or the device changed after the put-token (a revoked token, rotated keys,
// a disabled device). It is retried (KindProtocol), and the next connect's put-token says whether for good, as
// over MQTT the dropped connection and then the CONNACK do: the status sequence is the same on both.
func onLiveLink(te *transport.Error) *transport.Error {
	if te.Kind == transport.KindAuth || te.Kind == transport.KindDeviceDisabled {
		return &transport.Error{Kind: transport.KindProtocol, Op: te.Op, Err: te}
	}
	return te
}

// statusKind maps a put-token status code; ok for 200 and 202.
func statusKind(status int32) (kind transport.Kind, ok bool) {
	switch {
	case status == 200 || status == 202:
		return 0, true
	case status == 401:
		return transport.KindAuth, false
	case status == 404:
		return transport.KindDeviceDisabled, false
	case status == 429:
		return transport.KindThrottled, false
	case status == 403 || status >= 500:
		return transport.KindServerBusy, false
	}
	return transport.KindProtocol, false
}
