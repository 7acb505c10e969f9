package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"github.com/gorilla/websocket"

	"github.com/iotconn/iotconn/core/transport"
)

// This file is the one place where wire failures become transport kinds. The stages of a dial, in order:
//
//	TCP connect                  any failure (DNS, refused, unreachable, i/o timeout)  -> KindNetwork
//	                             the dial context was cancelled                        -> KindTimeout
//	TLS handshake                hub certificate not verified                          -> KindUntrusted
//	                             the hub refused our client certificate (TLS alert)    -> KindAuth
//	                             the dial context ended                                -> KindTimeout
//	                             anything else (EOF, reset, not TLS at all)            -> KindProtocol
//	WebSocket upgrade            not answered with 101                                 -> KindProtocol
//	MQTT CONNECT                 CONNACK code: the connackKinds table
//	                             the dial context ended, or no CONNACK in time         -> KindTimeout
//	                             closed without a CONNACK (how IoT Hub throttles)       -> KindThrottled
//	SUBSCRIBE                    refused (0x80)                                        -> KindProtocol
//	after connect                EOF, reset, missed keep-alive                         -> KindProtocol
//
// A handshake that fails after TCP connected met a live peer that does not speak TLS as a hub does (a plain
// TCP or MQTT port, a proxy whose backend is gone): the network works, the peer does not, so it is not
// KindNetwork (No_Network) but KindProtocol (Communication_Error), still retried.
//
// An untrusted hub certificate is not KindAuth (the device's credential is fine) nor KindNetwork (retrying cannot
// fix it): it is KindUntrusted, which the engine treats as fatal.

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

// dialError marks a failure before the MQTT handshake began (TCP, TLS or WebSocket), already classified.
type dialError struct {
	kind transport.Kind
	err  error
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// tcpError classifies a failed TCP connect: the network's failure, unless the dial was cancelled (Close, a
// cancelled Connect), which says nothing about the network.
func tcpError(ctx context.Context, err error) *dialError {
	if errors.Is(ctx.Err(), context.Canceled) {
		return &dialError{transport.KindTimeout, fmt.Errorf("TCP connect: %w", ctx.Err())}
	}
	return &dialError{transport.KindNetwork, err}
}

// handshakeError classifies a failed TLS handshake.
func handshakeError(ctx context.Context, err error) *dialError {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		alert    tls.AlertError
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		return &dialError{transport.KindUntrusted, fmt.Errorf("hub certificate not trusted: %w", err)}
	case errors.As(err, &alert) && (alert == 42 || alert == 43 || alert == 44 || alert == 45 || alert == 46 ||
		alert == 48 || alert == 116): // bad/unsupported/revoked/expired/unknown certificate, unknown CA, certificate required
		return &dialError{transport.KindAuth, fmt.Errorf("hub refused the client certificate: %w", err)}
	case ctx.Err() != nil:
		return &dialError{transport.KindTimeout, fmt.Errorf("TLS handshake: %w", ctx.Err())}
	}
	return &dialError{transport.KindProtocol, fmt.Errorf("TLS handshake with a live peer failed (is it a TLS "+
		"endpoint of IoT Hub?): %w", err)}
}

// upgradeError classifies a failed WebSocket upgrade; TCP and TLS failures come through already classified.
func upgradeError(ctx context.Context, err error, status int) *dialError {
	var de *dialError
	switch {
	case errors.As(err, &de):
		return de
	case ctx.Err() != nil:
		return &dialError{transport.KindTimeout, fmt.Errorf("WebSocket upgrade: %w", ctx.Err())}
	case errors.Is(err, websocket.ErrBadHandshake):
		return &dialError{transport.KindProtocol, fmt.Errorf("WebSocket upgrade answered with HTTP %d", status)}
	}
	return &dialError{transport.KindProtocol, fmt.Errorf("WebSocket upgrade: %w", err)}
}

// connectError classifies a failed MQTT connect: the CONNACK code when there was one, else how the dial or the
// handshake failed.
func connectError(ctx context.Context, code byte, err error) *transport.Error {
	if kind, ok := connackKinds[code]; ok {
		return &transport.Error{Kind: kind, Op: "connect",
			Err: fmt.Errorf("CONNACK %d (%s)", code, connackNames[code])}
	}
	var de *dialError
	var ne net.Error
	switch {
	case errors.As(err, &de):
		return &transport.Error{Kind: de.kind, Op: "connect", Err: de.err}
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
