package core

import (
	"time"

	"github.com/iotconn/iotconn/core/transport"
)

// classification is what the engine does about a transport failure of one kind.
type classification struct {
	fatal  bool
	reason ConnectionStatusChangeReason
	code   Code
}

// classify maps a transport kind to transient or fatal, the status reason and the error code an app sees.
// Fatal kinds are those retrying cannot fix: the credential, the device's registration, an untrusted hub.
func classify(k transport.Kind) classification {
	switch k {
	case transport.KindNetwork:
		return classification{false, ReasonNoNetwork, CodeNetwork}
	case transport.KindAuth:
		return classification{true, ReasonBadCredential, CodeAuth}
	case transport.KindDeviceDisabled, transport.KindDeviceNotFound:
		return classification{true, ReasonDeviceDisabled, CodeDeviceDisabled}
	case transport.KindUntrusted, transport.KindHubNotFound: // the hub is not the one meant, or gone for good
		return classification{true, ReasonCommunicationError, CodeProtocol}
	case transport.KindThrottled, transport.KindQuota:
		return classification{false, ReasonCommunicationError, CodeThrottled}
	case transport.KindTooLarge:
		return classification{false, ReasonCommunicationError, CodeTooLarge}
	case transport.KindTimeout:
		return classification{false, ReasonCommunicationError, CodeTimeout}
	default: // protocol, server busy, and anything a transport did not classify
		return classification{false, ReasonCommunicationError, CodeProtocol}
	}
}

// resolve settles a kind that the wire leaves ambiguous with what the engine knows of the device. IoT Hub refuses
// a disabled device with MQTT's CONNACK 3 "server unavailable", and may refuse a throttled connect the same way
// (its answer is not documented): from a device that connected before with the same credentials it is taken for
// throttling, since a fleet that gave up for good on a busy hub would stay offline until restarted; from one that
// never did, for a disabled device (fatal).
//
// IoT Hub answers AMQP with com.microsoft:iot-hub-not-found-error both for a hub that does not exist and while a
// hub fails over (.NET SDK issue #1312). From a device that connected before it is taken for a failover, the
// hub busy (transient, on the policy's jittered back-off) for at most FailoverWindow (see hubGone); from one that
// never did, for a wrong host name (fatal).
func resolve(k transport.Kind, knownGood bool) transport.Kind {
	switch {
	case k == transport.KindHubNotFound && knownGood:
		return transport.KindServerBusy
	case k != transport.KindServerUnavailable:
		return k
	case knownGood:
		return transport.KindThrottled
	}
	return transport.KindDeviceDisabled
}

// FailoverWindow bounds how long a device that connected before keeps retrying a hub that answers "not found":
// a failover completes well within it, a deleted hub stays gone.
const FailoverWindow = 15 * time.Minute
