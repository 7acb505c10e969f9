package core

import "github.com/iotconn/iotconn/core/transport"

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
	case transport.KindUntrusted:
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
