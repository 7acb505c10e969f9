package core

import "github.com/iotconn/iotconn/core/transport"

// state is one point of the status machine the application sees.
type state struct {
	status ConnectionStatus
	reason ConnectionStatusChangeReason
}

// fatalReasons end a link: the engine stops retrying and stays Disconnected until Connect is called again.
var fatalReasons = []ConnectionStatusChangeReason{
	ReasonBadCredential, ReasonDeviceDisabled, ReasonRetryExpired, ReasonExpiredSASToken, ReasonCommunicationError,
}

// retryingReasons are why a link that is being retried went down.
var retryingReasons = []ConnectionStatusChangeReason{ReasonNoNetwork, ReasonCommunicationError, ReasonExpiredSASToken}

// allowed is the transition table: for each status, the states the client may move to. Every status change
// goes through transition, which refuses anything not listed here.
var allowed = func() map[ConnectionStatus]map[state]bool {
	t := map[ConnectionStatus]map[state]bool{}
	add := func(from ConnectionStatus, to ConnectionStatus, reasons ...ConnectionStatusChangeReason) {
		if t[from] == nil {
			t[from] = map[state]bool{}
		}
		for _, r := range reasons {
			t[from][state{to, r}] = true
		}
	}
	for _, from := range []ConnectionStatus{StatusDisconnected, StatusConnected, StatusDisconnectedRetrying} {
		add(from, StatusDisconnected, fatalReasons...)
		add(from, StatusDisabled, ReasonClientClose)
		add(from, StatusDisconnectedRetrying, retryingReasons...)
		if from != StatusConnected {
			add(from, StatusConnected, ReasonConnectionOk)
		}
	}
	return t
}()

// transitionAllowed reports whether the client may go from its current state to next. Staying in the same
// state is not a transition.
func transitionAllowed(cur, next state) bool {
	return cur != next && allowed[cur.status][next]
}

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
