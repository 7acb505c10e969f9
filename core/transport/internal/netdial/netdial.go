// Package netdial is what the MQTT and AMQP transports share below their protocols: TCP + TLS and WebSocket
// dials that honour a context, use no proxy from the environment (a library sees no configuration from it), and
// classify each stage's failure:
//
//	TCP connect        any failure (DNS, refused, unreachable, i/o timeout)  -> KindNetwork
//	                   the dial context was cancelled                        -> KindTimeout
//	TLS handshake      hub certificate not verified                          -> KindUntrusted
//	                   the hub refused our client certificate (TLS alert)    -> KindAuth
//	                   the dial context ended                                -> KindTimeout
//	                   anything else (EOF, reset, not TLS at all)            -> KindProtocol
//	WebSocket upgrade  not answered with 101                                 -> KindProtocol
//
// A handshake that fails after TCP connected met a live peer that does not speak TLS as a hub does (a plain TCP
// port, a proxy whose backend is gone): the network works, the peer does not, so it is not KindNetwork
// (No_Network) but KindProtocol (Communication_Error), still retried. An untrusted hub certificate is not KindAuth
// (the device's credential is fine) nor KindNetwork (retrying cannot fix it): it is KindUntrusted, fatal.
package netdial

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/iotconn/iotconn/core/transport"
)

// WebSocketPath is where IoT Hub serves MQTT and AMQP over WebSocket.
const WebSocketPath = "/$iothub/websocket"

// Error is a failure before the protocol's own handshake began, already classified.
type Error struct {
	Kind transport.Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// DialTLS connects to addr and runs the TLS handshake within ctx. watch, if not nil, gets the TCP socket before
// the handshake (the MQTT transport closes it when its dial context ends later on).
func DialTLS(ctx context.Context, addr string, conf *tls.Config, watch func(raw net.Conn)) (*tls.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, tcpError(ctx, err)
	}
	if watch != nil {
		watch(raw)
	}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, handshakeError(ctx, err)
	}
	return tc, nil
}

// DialWebSocket opens a WebSocket with subprotocol at url (wss://...) through dialTLS, and returns it as a byte
// stream.
func DialWebSocket(ctx context.Context, url, subprotocol string,
	dialTLS func(ctx context.Context, addr string) (net.Conn, error)) (net.Conn, error) {
	d := &websocket.Dialer{
		NetDialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dialTLS(ctx, addr) },
		Subprotocols:      []string{subprotocol},
	}
	ws, resp, err := d.DialContext(ctx, url, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return nil, upgradeError(ctx, err, status)
	}
	return &wsConn{Conn: ws}, nil
}

// tcpError classifies a failed TCP connect: the network's failure, unless the dial was cancelled (Close, a
// cancelled Connect), which says nothing about the network.
func tcpError(ctx context.Context, err error) *Error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return &Error{transport.KindTimeout, fmt.Errorf("TCP connect: %w", ctx.Err())}
	}
	return &Error{transport.KindNetwork, err}
}

// handshakeError classifies a failed TLS handshake.
func handshakeError(ctx context.Context, err error) *Error {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		alert    tls.AlertError
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		return &Error{transport.KindUntrusted, fmt.Errorf("hub certificate not trusted: %w", err)}
	case errors.As(err, &alert) && (alert == 42 || alert == 43 || alert == 44 || alert == 45 || alert == 46 ||
		alert == 48 || alert == 116): // bad/unsupported/revoked/expired/unknown certificate, unknown CA, certificate required
		return &Error{transport.KindAuth, fmt.Errorf("hub refused the client certificate: %w", err)}
	case ctx.Err() != nil:
		return &Error{transport.KindTimeout, fmt.Errorf("TLS handshake: %w", ctx.Err())}
	}
	return &Error{transport.KindProtocol, fmt.Errorf("TLS handshake with a live peer failed (is it a TLS "+
		"endpoint of IoT Hub?): %w", err)}
}

// upgradeError classifies a failed WebSocket upgrade; TCP and TLS failures come through already classified.
func upgradeError(ctx context.Context, err error, status int) *Error {
	var de *Error
	switch {
	case errors.As(err, &de):
		return de
	case ctx.Err() != nil:
		return &Error{transport.KindTimeout, fmt.Errorf("WebSocket upgrade: %w", ctx.Err())}
	case errors.Is(err, websocket.ErrBadHandshake):
		return &Error{transport.KindProtocol, fmt.Errorf("WebSocket upgrade answered with HTTP %d", status)}
	}
	return &Error{transport.KindProtocol, fmt.Errorf("WebSocket upgrade: %w", err)}
}

// wsConn carries a protocol over a WebSocket as a net.Conn: every write is one binary message, and reads run
// across message boundaries.
type wsConn struct {
	*websocket.Conn
	readMu  sync.Mutex
	current io.Reader // the message being read, nil between messages
	writeMu sync.Mutex
}

func (w *wsConn) Read(p []byte) (int, error) {
	w.readMu.Lock()
	defer w.readMu.Unlock()
	for {
		if w.current == nil {
			var err error
			if _, w.current, err = w.NextReader(); err != nil {
				return 0, err
			}
		}
		n, err := w.current.Read(p)
		if err == io.EOF {
			w.current = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message; gorilla allows one writer at a time, and a protocol's writer and pinger
// may share it.
func (w *wsConn) Write(p []byte) (int, error) {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	if err := w.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *wsConn) SetDeadline(t time.Time) error {
	if err := w.SetReadDeadline(t); err != nil {
		return err
	}
	return w.SetWriteDeadline(t)
}
