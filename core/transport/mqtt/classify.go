package mqtt

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/internal/netdial"
)

// This file is where MQTT's failures become transport kinds; TCP, TLS and the WebSocket upgrade are classified
// in netdial (its table). Then:
//
//	MQTT CONNECT                 CONNACK code: the connackKinds table
//	                             the dial context ended, or no CONNACK in time         -> KindTimeout
//	                             closed without a CONNACK (how IoT Hub throttles)       -> KindThrottled
//	SUBSCRIBE                    refused (0x80)                                        -> KindProtocol
//	after connect                EOF, reset, missed keep-alive                         -> KindProtocol

// connackKinds is the one table from CONNACK return codes to failure kinds. It agrees with IoT Hub and with
// hubsim/README.md: 5 for a wrong key, expired or wrongly scoped token; 4 for a malformed user name or password;
// 2 for an unknown device or a client id not matching it; 3 "server unavailable" for a disabled device (as
// Azure's C and Java SDKs read it) and possibly for a throttled connect (IoT Hub does not document its answer),
// which the engine tells apart (core/classify.go).
var connackKinds = map[byte]transport.Kind{
	1: transport.KindProtocol, // unacceptable protocol version: only a broken client gets it
	2: transport.KindDeviceNotFound,
	3: transport.KindServerUnavailable,
	4: transport.KindAuth,
	5: transport.KindAuth,
}

var connackNames = map[byte]string{
	1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
	4: "bad user name or password", 5: "not authorized",
}

// connectError classifies a failed MQTT connect: the CONNACK code when there was one, else how the dial or the
// handshake failed.
func connectError(ctx context.Context, code byte, err error) *transport.Error {
	if kind, ok := connackKinds[code]; ok {
		return &transport.Error{Kind: kind, Op: "connect",
			Err: fmt.Errorf("CONNACK %d (%s)", code, connackNames[code])}
	}
	var de *netdial.Error
	var ne net.Error
	switch {
	case errors.As(err, &de):
		return &transport.Error{Kind: de.Kind, Op: "connect", Err: de.Err}
	case ctx.Err() != nil:
		return &transport.Error{Kind: transport.KindTimeout, Op: "connect", Err: fmt.Errorf("no CONNACK: %w", ctx.Err())}
	case errors.As(err, &ne) && ne.Timeout():
		return &transport.Error{Kind: transport.KindTimeout, Op: "connect", Err: fmt.Errorf("no CONNACK: %w", err)}
	}
	// The hub read the CONNECT and closed the connection without a CONNACK: how IoT Hub throttles connects on
	// MQTT 3.1.1, which has no code for it (reference: "the connection is closed by the hub").
	return &transport.Error{Kind: transport.KindThrottled, Op: "connect",
		Err: fmt.Errorf("closed without CONNACK (throttled): %w", err)}
}

// errSubscribeRefused is a SUBACK that refused the C2D subscription.
var errSubscribeRefused = errors.New("the hub refused the C2D subscription")

// subscribeError classifies a C2D subscription that failed, was refused, or got no SUBACK before the dial
// context ended.
func subscribeError(ctx context.Context, err error) *transport.Error {
	if ctx.Err() != nil {
		return &transport.Error{Kind: transport.KindTimeout, Op: "subscribe", Err: ctx.Err()}
	}
	return &transport.Error{Kind: transport.KindProtocol, Op: "subscribe", Err: err}
}

// lostError classifies the end of a live link. A drop (EOF, reset, missed keep-alive) is a protocol failure:
// the network was there a moment ago, and the next dial tells whether it still is.
func lostError(err error) *transport.Error {
	if err == nil {
		err = errors.New("connection closed")
	}
	return &transport.Error{Kind: transport.KindProtocol, Op: "connection lost", Err: err}
}
