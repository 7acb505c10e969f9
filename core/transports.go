package core

import (
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/mqtt"
)

// protocol is how the engine reaches one wire protocol.
type protocol struct {
	newDialer func() transport.Dialer
	websocket bool // tunnel it in a WebSocket on port 443
}

// protocols is the registry of the transports a client can use (Options.Transport). TransportAMQP joins it with
// the AMQP transport.
var protocols = map[TransportKind]protocol{
	TransportMQTT:   {newDialer: newMQTTDialer},
	TransportMQTTWS: {newDialer: newMQTTDialer, websocket: true},
}

func newMQTTDialer() transport.Dialer { return mqtt.NewDialer() }
