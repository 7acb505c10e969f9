package core

// ConnectionStatus and ConnectionStatusChangeReason mirror include/iotconn.h, the source of truth for the
// numbers; capi has a test that compares them.

// ConnectionStatus is the state of a client's connection as the application sees it.
type ConnectionStatus int

const (
	StatusDisconnected         ConnectionStatus = 0
	StatusConnected            ConnectionStatus = 1
	StatusDisconnectedRetrying ConnectionStatus = 2
	StatusDisabled             ConnectionStatus = 3
)

var statusNames = [...]string{"Disconnected", "Connected", "Disconnected_Retrying", "Disabled"}

func (s ConnectionStatus) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "Unknown"
}

// ConnectionStatusChangeReason says why the status last changed.
type ConnectionStatusChangeReason int

const (
	ReasonConnectionOk       ConnectionStatusChangeReason = 0
	ReasonExpiredSASToken    ConnectionStatusChangeReason = 1
	ReasonDeviceDisabled     ConnectionStatusChangeReason = 2
	ReasonBadCredential      ConnectionStatusChangeReason = 3
	ReasonRetryExpired       ConnectionStatusChangeReason = 4
	ReasonNoNetwork          ConnectionStatusChangeReason = 5
	ReasonCommunicationError ConnectionStatusChangeReason = 6
	ReasonClientClose        ConnectionStatusChangeReason = 7
)

var reasonNames = [...]string{
	"Connection_Ok", "Expired_SAS_Token", "Device_Disabled", "Bad_Credential",
	"Retry_Expired", "No_Network", "Communication_Error", "Client_Close",
}

func (r ConnectionStatusChangeReason) String() string {
	if r >= 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "Unknown"
}
