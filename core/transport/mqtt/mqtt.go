// Package mqtt is the IoT Hub MQTT 3.1.1 transport on github.com/eclipse/paho.mqtt.golang. Every Dial makes a new
// paho client with its own reconnect and connect retry off: the engine alone decides about reconnecting.
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
)

const (
	defaultKeepAlive = 240 * time.Second
	maxKeepAlive     = 1177 * time.Second // IoT Hub's limit
	defaultTimeout   = 30 * time.Second   // a dial whose context has no deadline
	// publishWait bounds how long a publish may wait for paho's writer; a link that stalls this long is torn
	// down (the engine resends on the next one), and Close never waits longer than this for a blocked publish.
	publishWait = 10 * time.Second
	// disconnectQuiesce is how long Close lets paho send DISCONNECT, in milliseconds.
	disconnectQuiesce = 100
)

// Dialer opens IoT Hub MQTT connections.
type Dialer struct{}

// NewDialer returns the MQTT dialer.
func NewDialer() *Dialer { return &Dialer{} }

// Dial connects as p says, subscribes to cloud-to-device messages (devices only: IoT Hub has no C2D for modules)
// and returns the live link. The TLS handshake and the CONNECT exchange both end when ctx does.
func (d *Dialer) Dial(ctx context.Context, p transport.DialParams) (transport.Conn, error) {
	if p.Host == "" || p.DeviceID == "" || p.Handler == nil {
		return nil, &transport.Error{Kind: transport.KindProtocol, Op: "connect",
			Err: errors.New("host, device id and handler are required")}
	}
	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	c := newConn(p)
	opts := c.options(ctx, p)
	c.client = paho.NewClient(opts)
	tok := c.client.Connect()
	<-tok.Done() // bounded: ctx closes the socket, and paho's connect timeout is the time ctx has left
	c.stopDialWatch()
	if err := tok.Error(); err != nil {
		c.Close()
		return nil, connectError(ctx, tok.(*paho.ConnectToken).ReturnCode(), err)
	}
	if p.ModuleID == "" {
		sub := c.client.Subscribe(iothub.C2DPrefix(p.DeviceID)+"#", 1, c.onC2D)
		var err error
		select {
		case <-sub.Done():
			err = sub.Error()
		case <-ctx.Done():
			err = &transport.Error{Kind: transport.KindTimeout, Op: "subscribe", Err: ctx.Err()}
		case <-c.down:
			err = c.downErr
		}
		if err != nil {
			c.Close()
			if te, ok := err.(*transport.Error); ok {
				return nil, te
			}
			return nil, &transport.Error{Kind: transport.KindProtocol, Op: "subscribe", Err: err}
		}
	}
	if err := c.establish(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// options builds the paho client options for one connection.
func (c *conn) options(ctx context.Context, p transport.DialParams) *paho.ClientOptions {
	keepAlive := p.KeepAlive
	if keepAlive <= 0 {
		keepAlive = defaultKeepAlive
	}
	keepAlive = min(keepAlive, maxKeepAlive)
	deadline, _ := ctx.Deadline()
	host := p.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		if p.WebSocket {
			host = net.JoinHostPort(host, "443")
		} else {
			host = net.JoinHostPort(host, "8883")
		}
	}
	broker := &url.URL{Scheme: "tls", Host: host}
	if p.WebSocket {
		broker = &url.URL{Scheme: "wss", Host: host, Path: "/$iothub/websocket"}
	}
	tlsConf := p.TLS
	if tlsConf == nil {
		tlsConf = &tls.Config{}
	}
	tlsConf = tlsConf.Clone()
	tlsConf.MinVersion = max(tlsConf.MinVersion, tls.VersionTLS12)
	if tlsConf.ServerName == "" {
		tlsConf.ServerName, _, _ = net.SplitHostPort(host)
	}
	hubHost := p.HubHost
	if hubHost == "" {
		hubHost = p.Host
	}
	return paho.NewClientOptions().
		AddBroker(broker.String()).
		SetClientID(iothub.ClientID(p.DeviceID, p.ModuleID)).
		SetUsername(iothub.Username(hubHost, p.DeviceID, p.ModuleID)).
		SetPassword(p.Token).
		SetProtocolVersion(4). // no fallback to 3.1 after a refusal
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(keepAlive).
		SetConnectTimeout(max(time.Until(deadline), time.Millisecond)).
		SetWriteTimeout(publishWait).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			return c.open(ctx, u, tlsConf)
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) { c.lose(lostError(err)) })
}

// open dials TCP+TLS (or WebSocket over TLS) within ctx, and keeps watching ctx until the MQTT handshake is over.
func (c *conn) open(ctx context.Context, u *url.URL, tlsConf *tls.Config) (net.Conn, error) {
	var nc net.Conn
	var err error
	if u.Scheme == "wss" {
		deadline, _ := ctx.Deadline()
		nc, err = paho.NewWebsocket(u.String(), tlsConf, max(time.Until(deadline), time.Millisecond), nil, nil)
	} else {
		d := &tls.Dialer{Config: tlsConf}
		nc, err = d.DialContext(ctx, "tcp", u.Host)
	}
	if err != nil {
		return nil, classifyDial(err)
	}
	c.mu.Lock()
	c.dialWatch = context.AfterFunc(ctx, func() { nc.Close() })
	c.mu.Unlock()
	return nc, nil
}

func (c *conn) stopDialWatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dialWatch != nil {
		c.dialWatch()
		c.dialWatch = nil
	}
}

// onC2D turns a cloud-to-device publish into a transport message. A property bag the hub should never send
// (a bad escape) still delivers the payload, without properties.
func (c *conn) onC2D(_ paho.Client, m paho.Message) {
	out := &transport.Message{Payload: m.Payload()}
	bag, _ := strings.CutPrefix(m.Topic(), c.c2dPrefix)
	props, _ := iothub.DecodeProperties(bag)
	var sys iothub.SystemProperties
	sys, out.Properties = iothub.SplitProperties(props)
	out.MessageID, out.CorrelationID, out.ContentType, out.ContentEncoding =
		sys.MessageID, sys.CorrelationID, sys.ContentType, sys.ContentEncoding
	c.handler.OnMessage(out)
}

// telemetryTopic renders m's topic: the telemetry prefix and the property bag, system properties first.
func (c *conn) telemetryTopic(m *transport.Message) string {
	var b strings.Builder
	b.Grow(len(c.eventsPrefix) + 64)
	b.WriteString(c.eventsPrefix)
	first := true
	add := func(k, v string) {
		if !first {
			b.WriteByte('&')
		}
		first = false
		b.WriteString(iothub.Escape(k))
		b.WriteByte('=')
		b.WriteString(iothub.Escape(v))
	}
	for _, sys := range [...][2]string{
		{iothub.PropMessageID, m.MessageID}, {iothub.PropCorrelationID, m.CorrelationID},
		{iothub.PropContentType, m.ContentType}, {iothub.PropContentEncoding, m.ContentEncoding},
	} {
		if sys[1] != "" {
			add(sys[0], sys[1])
		}
	}
	for _, p := range m.Properties {
		if p[0] != "" {
			add(p[0], p[1])
		}
	}
	return b.String()
}
