// Package amqp is the IoT Hub AMQP 1.0 transport on github.com/Azure/go-amqp: TLS on 5671, or a WebSocket on 443
// (wss://{host}/$iothub/websocket, subprotocol AMQPWSB10). A device authenticates with a CBS put-token on its
// connection's $cbs links, and renews it there in place before it expires: the link stays up and the application
// sees no status change. Each device has a session of its own with its links (telemetry, C2D, twin, methods).
//
// Connections come from core/transport/pool: NewDialer gives every device a connection of its own, NewPooled lets
// up to pool.MaxDevices devices share one (one CBS link per connection, one session per device). Either way a
// connection that ends fails every device on it at once and leaves the pool, so each device's next dial (by its
// own engine, on its own retry policy) opens a new connection with a fresh DNS lookup: an IoT Hub failover keeps
// the name and changes the address.
package amqp

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/internal/netdial"
	"github.com/iotconn/iotconn/core/transport/pool"
)

const (
	defaultTimeout = 30 * time.Second // a dial whose context has no deadline
	wsSubprotocol  = "AMQPWSB10"
	// closeWait bounds the goodbye (end, close) a Close sends: the engine waits for Close.
	closeWait = 2 * time.Second
)

// NewDialer returns a dialer that opens a connection of its own for every device.
func NewDialer() *pool.Pool { return pool.New(open, limits{}, 1) }

// NewPooled returns a dialer whose devices share connections, at most maxDevices on each (0 or more than
// pool.MaxDevices: pool.MaxDevices). Devices share only when they agree on the host, the WebSocket choice and
// the TLS identity (see pool); an X.509 device always gets its own.
func NewPooled(maxDevices int) *pool.Pool { return pool.New(open, limits{}, maxDevices) }

// limits: AMQP carries every device id IoT Hub allows, and the engine refuses what a property map cannot hold
// (a repeated application property name).
type limits struct{}

func (limits) CheckIdentity(_, _ string) error                      { return nil }
func (limits) CheckMessage(_, _ string, _ *transport.Message) error { return nil }

// open is the pool's Opener: TLS or WebSocket, the AMQP open with SASL ANONYMOUS (the devices authenticate
// through CBS), then the $cbs links. A ctx without a deadline gets 30 s.
func open(ctx context.Context, p transport.DialParams) (pool.Shared, error) {
	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	nc, err := dialNet(ctx, p)
	if err != nil {
		return nil, classify(ctx, "connect", err)
	}
	idle := p.KeepAlive
	if idle <= 0 {
		idle = iothub.DefaultKeepAlive
	}
	ac, err := goamqp.NewConn(ctx, nc, &goamqp.ConnOptions{
		HostName:    hostOnly(hubHost(p)),
		IdleTimeout: min(idle, iothub.MaxKeepAlive),
		SASLType:    goamqp.SASLTypeAnonymous(),
		Properties:  map[string]any{"com.microsoft:client-version": clientVersion},
	})
	if err != nil { // NewConn closed nc
		return nil, classify(ctx, "connect", err)
	}
	s, err := newShared(ctx, ac)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// clientVersion names iotconn to the hub, as the SDKs' com.microsoft:client-version does.
const clientVersion = "iotconn/1"

// dialNet opens the byte stream: TLS to host:5671, or a WebSocket over TLS to host:443.
func dialNet(ctx context.Context, p transport.DialParams) (net.Conn, error) {
	port := "5671"
	if p.WebSocket {
		port = "443"
	}
	host := p.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, port)
	}
	conf := p.TLS
	if conf == nil {
		conf = &tls.Config{}
	}
	conf = conf.Clone()
	conf.MinVersion = max(conf.MinVersion, tls.VersionTLS12)
	if conf.ServerName == "" {
		conf.ServerName, _, _ = net.SplitHostPort(host)
	}
	dialTLS := func(ctx context.Context, addr string) (net.Conn, error) {
		return netdial.DialTLS(ctx, addr, conf, nil)
	}
	if !p.WebSocket {
		return dialTLS(ctx, host)
	}
	u := url.URL{Scheme: "wss", Host: host, Path: netdial.WebSocketPath}
	return netdial.DialWebSocket(ctx, u.String(), wsSubprotocol, dialTLS)
}

// hubHost is the hub's name (host[:port]) as the engine signs tokens for it.
func hubHost(p transport.DialParams) string {
	if p.HubHost != "" {
		return p.HubHost
	}
	return p.Host
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}
