// Package transport is the boundary between the engine and a wire protocol. It is shaped for one MQTT connection
// per device and for AMQP's several devices on one connection with CBS tokens; nothing MQTT-specific is here.
package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"
)

// Kind classifies a transport failure; the engine maps a kind to transient or fatal and to a status reason.
type Kind int

const (
	KindNetwork        Kind = iota + 1 // DNS, refused, unreachable, TLS handshake to nowhere
	KindProtocol                       // unexpected close, malformed packet, keep-alive timeout
	KindAuth                           // wrong key, expired or wrongly scoped token
	KindDeviceDisabled                 // device disabled
	KindDeviceNotFound                 // device unknown to the hub
	KindThrottled                      // too many requests; RetryAfter may say how long
	KindQuota                          // daily quota exceeded
	KindServerBusy                     // the hub is busy or unavailable
	KindTooLarge                       // message over the hub's limit
	KindTimeout                        // an operation got no answer in time
	KindUntrusted                      // the server's TLS certificate failed verification
	// KindServerUnavailable: the hub refused the connect as unavailable, which IoT Hub also answers a disabled
	// device (MQTT's CONNACK 3); the engine tells the two apart by whether the device connected before.
	KindServerUnavailable
	// KindHubNotFound: the hub answered that it does not exist, which IoT Hub also answers while it fails over
	// to another region; the engine tells the two apart by whether the device connected before.
	KindHubNotFound
)

var kindNames = map[Kind]string{
	KindNetwork: "network", KindProtocol: "protocol", KindAuth: "auth", KindDeviceDisabled: "device disabled",
	KindDeviceNotFound: "device not found", KindThrottled: "throttled", KindQuota: "quota exceeded",
	KindServerBusy: "server busy", KindTooLarge: "message too large", KindTimeout: "timeout",
	KindUntrusted: "server not trusted", KindServerUnavailable: "server unavailable",
	KindHubNotFound: "hub not found",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind %d", int(k))
}

// Error is what a transport returns for every failure.
type Error struct {
	Kind       Kind
	Op         string        // "connect", "send", "subscribe", "connection lost", ...
	RetryAfter time.Duration // a server's requested wait, 0 if none
	Err        error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Op + ": " + e.Kind.String()
	}
	return e.Op + ": " + e.Kind.String() + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of err, or KindProtocol for an error a transport did not classify.
func KindOf(err error) Kind {
	var te *Error
	if errors.As(err, &te) {
		return te.Kind
	}
	return KindProtocol
}

// Message is a message as the transport carries it.
type Message struct {
	Payload         []byte
	MessageID       string
	CorrelationID   string
	ContentType     string
	ContentEncoding string
	Properties      [][2]string // application properties in order
	// Ack, on a received message where the protocol can defer its acknowledgement (AMQP), settles it with the
	// hub; the engine calls it once the application's handler returned. Nil where the transport acknowledged the
	// message on arrival (MQTT). It never blocks.
	Ack func()
}

// Feature is a subscription a device link makes beyond telemetry. Dial subscribes to every feature asked for
// before it returns, so each new link (after a loss, a renewal) has them again.
type Feature uint8

const (
	FeatureC2D     Feature = 1 << iota // cloud-to-device messages (devices only: IoT Hub has none for modules)
	FeatureTwin                        // twin responses (InboundTwinResponse) and desired updates (InboundDesired)
	FeatureMethods                     // direct method calls (InboundMethod)
)

// RequestKind is what a Request asks of the hub.
type RequestKind int

const (
	RequestTwinGet        RequestKind = iota + 1 // the whole twin; answered by InboundTwinResponse
	RequestTwinReport                            // a reported-properties patch; answered by InboundTwinResponse
	RequestMethodResponse                        // the answer to InboundMethod RID; the hub sends nothing back
)

// Request is one request a link sends; RID correlates the hub's answer.
type Request struct {
	Kind    RequestKind
	RID     string
	Status  int    // RequestMethodResponse: the application's status
	Payload []byte // UTF-8 JSON
}

// InboundKind is what an Inbound carries.
type InboundKind int

const (
	InboundTwinResponse InboundKind = iota + 1 // the answer to the request RID: Status, Version, Payload
	InboundDesired                             // a desired-properties patch: Version, Payload
	InboundMethod                              // a direct method call: Method, RID, Payload
)

// Inbound is what the hub sends unasked (desired updates, method calls) or in answer to a Request.
type Inbound struct {
	Kind    InboundKind
	RID     string
	Status  int
	Version int64 // the twin's $version (desired updates; answers to reported patches); 0 when absent
	Method  string
	Payload []byte
}

// DialParams say whom to connect as and how.
type DialParams struct {
	Host      string // host[:port] of the hub or gateway
	HubHost   string // the hub's host[:port] (HostName) when Host is a gateway; "" = Host
	DeviceID  string
	ModuleID  string
	Token     string      // SAS token; "" with X.509
	TLS       *tls.Config // roots, client certificate, ServerName
	KeepAlive time.Duration
	WebSocket bool
	Features  Feature
	Handler   Handler
}

// Handler receives what arrives unasked. Calls come from transport goroutines and must not block.
type Handler interface {
	// OnMessage delivers a cloud-to-device message.
	OnMessage(m *Message)
	// OnInbound delivers what a twin or methods feature receives.
	OnInbound(in *Inbound)
	// OnConnectionLost reports, once per Conn, that it died; the engine decides what happens next.
	OnConnectionLost(err *Error)
}

// Dialer opens device connections. An AMQP dialer may multiplex several devices on one connection.
type Dialer interface {
	Dial(ctx context.Context, p DialParams) (Conn, error)
	Limits
}

// Limits are what a protocol can carry beyond IoT Hub's own rules. The engine asks before it accepts a client or
// a message, so that nothing is cut or refused later on the wire. Errors are *Error: KindTooLarge for a length
// limit, KindProtocol for anything else the protocol cannot express.
type Limits interface {
	// CheckIdentity says whether the device (and module) ids fit the protocol's names and topics.
	CheckIdentity(deviceID, moduleID string) error
	// CheckMessage says whether m fits; an empty MessageID stands for one the engine will generate, at most
	// iothub.MaxGeneratedMessageIDLength bytes long.
	CheckMessage(deviceID, moduleID string, m *Message) error
}

// Conn is one device's live link.
type Conn interface {
	// Send publishes m and returns at once; done is called exactly once, from a transport goroutine, with nil when
	// the hub acknowledged it or with an *Error. Calls may be pipelined.
	Send(m *Message, done func(err error))
	// Request sends r in order with the sends and returns at once; done is called exactly once, with nil when r
	// was written (an answer comes through Handler.OnInbound) or with the *Error that ended the link.
	Request(r *Request, done func(err error))
	// RenewToken hands a fresh SAS token to a live link. It returns ErrRenewNeedsReconnect where the protocol
	// cannot do that in place (MQTT): the engine then reconnects with the new token.
	RenewToken(ctx context.Context, token string) error
	// Close ends the link without reporting OnConnectionLost; pending sends get done(err) with KindProtocol.
	Close() error
}

// ErrRenewNeedsReconnect is returned by RenewToken on protocols that authenticate only at connect.
var ErrRenewNeedsReconnect = errors.New("token renewal needs a reconnect")
