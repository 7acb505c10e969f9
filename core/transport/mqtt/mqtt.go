// Package mqtt is the IoT Hub MQTT 3.1.1 transport on github.com/eclipse/paho.mqtt.golang. Every Dial makes a new
// paho client with its own reconnect and connect retry off: the engine alone decides about reconnecting.
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/internal/netdial"
)

const (
	defaultTimeout = 30 * time.Second // a dial whose context has no deadline
	// publishWait bounds how long paho's Publish waits to hand a packet to paho's writer (which never blocks on
	// the socket: see batchWriter); a publish that waited this long fails and ends the link.
	publishWait = 10 * time.Second
	// disconnectQuiesce is how long Close lets paho send DISCONNECT, in milliseconds.
	disconnectQuiesce = 100
)

// Dialer opens IoT Hub MQTT connections.
type Dialer struct{}

// NewDialer returns the MQTT dialer.
func NewDialer() *Dialer { return &Dialer{} }

// Dial connects as p says, subscribes to cloud-to-device messages (devices only: IoT Hub has no C2D for modules)
// and returns the live link. TCP, TLS, the WebSocket upgrade, CONNECT and SUBSCRIBE all end when ctx does; a
// ctx without a deadline gets 30 s.
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
	c.client = paho.NewClient(c.options(ctx, p))
	subs := c.subscriptions(p)
	for _, sub := range subs {
		// Routed before CONNECT: a resumed session gets queued C2D messages right after the CONNACK, before our
		// SUBSCRIBE, and paho neither delivers nor acknowledges a message it has no route for.
		c.client.AddRoute(sub.filter, sub.handler)
	}
	tok := c.client.Connect()
	<-tok.Done() // bounded: ctx closes the socket, and paho's connect timeout is the time ctx has left
	if err := tok.Error(); err != nil {
		c.Close()
		return nil, connectError(ctx, tok.(*paho.ConnectToken).ReturnCode(), err)
	}
	if err := c.subscribe(ctx, subs); err != nil {
		c.Close()
		return nil, err
	}
	c.stopDialWatch()
	if err := c.establish(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// subscription is one topic filter a feature needs, with its QoS and the handler of what arrives on it.
type subscription struct {
	filter  string
	qos     byte
	handler paho.MessageHandler
}

// subscriptions are the filters of the features p asks for. IoT Hub has no C2D for modules, and takes twin and
// method traffic at QoS 0.
func (c *conn) subscriptions(p transport.DialParams) []subscription {
	var subs []subscription
	if p.Features&transport.FeatureC2D != 0 && p.ModuleID == "" {
		subs = append(subs, subscription{c.c2dPrefix + "#", 1, c.onC2D})
	}
	if p.Features&transport.FeatureTwin != 0 {
		subs = append(subs, subscription{iothub.TopicTwinRes + "#", 0, c.onTwinResponse},
			subscription{iothub.TopicTwinDesired + "#", 0, c.onDesired})
	}
	if p.Features&transport.FeatureMethods != 0 {
		subs = append(subs, subscription{iothub.TopicMethodsPost + "#", 0, c.onMethod})
	}
	return subs
}

// subscribe sends one SUBSCRIBE for subs and waits for the SUBACK; a refused filter fails the dial.
func (c *conn) subscribe(ctx context.Context, subs []subscription) *transport.Error {
	if len(subs) == 0 {
		return nil
	}
	filters := make(map[string]byte, len(subs))
	for _, sub := range subs {
		filters[sub.filter] = sub.qos
	}
	tok := c.client.SubscribeMultiple(filters, nil) // the routes are already there
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return subscribeError(ctx, err)
		}
		for filter, granted := range tok.(*paho.SubscribeToken).Result() {
			if granted > 2 {
				return subscribeError(ctx, fmt.Errorf("%w: %s", errSubscribeRefused, filter))
			}
		}
		return nil
	case <-ctx.Done():
		return subscribeError(ctx, ctx.Err())
	case <-c.down:
		return c.downErr
	}
}

// options builds the paho client options for one hub connection.
func (c *conn) options(ctx context.Context, p transport.DialParams) *paho.ClientOptions {
	hubHost := p.HubHost
	if hubHost == "" {
		hubHost = p.Host
	}
	return c.pahoOptions(ctx, endpoint{host: p.Host, webSocket: p.WebSocket, tls: p.TLS, keepAlive: p.KeepAlive,
		clientID: iothub.ClientID(p.DeviceID, p.ModuleID), username: iothub.Username(hubHost, p.DeviceID, p.ModuleID),
		password: p.Token})
}

// endpoint is whom one paho client connects to, and as whom: a hub, or DPS (dps.go).
type endpoint struct {
	host                         string // host[:port]; 8883, or 443 over WebSocket, when no port
	webSocket                    bool
	tls                          *tls.Config
	keepAlive                    time.Duration
	clientID, username, password string
}

// pahoOptions builds the paho client options for one connection: no reconnect or connect retry of paho's own,
// the socket opened by open within ctx.
func (c *conn) pahoOptions(ctx context.Context, e endpoint) *paho.ClientOptions {
	keepAlive := e.keepAlive
	if keepAlive <= 0 {
		keepAlive = iothub.DefaultKeepAlive
	}
	keepAlive = min(keepAlive, iothub.MaxKeepAlive)
	deadline, _ := ctx.Deadline()
	host := e.host
	if _, _, err := net.SplitHostPort(host); err != nil {
		if e.webSocket {
			host = net.JoinHostPort(host, "443")
		} else {
			host = net.JoinHostPort(host, "8883")
		}
	}
	broker := &url.URL{Scheme: "ssl", Host: host}
	if e.webSocket {
		broker = &url.URL{Scheme: "wss", Host: host, Path: netdial.WebSocketPath}
	}
	tlsConf := e.tls
	if tlsConf == nil {
		tlsConf = &tls.Config{}
	}
	tlsConf = tlsConf.Clone()
	tlsConf.MinVersion = max(tlsConf.MinVersion, tls.VersionTLS12)
	if tlsConf.ServerName == "" {
		tlsConf.ServerName, _, _ = net.SplitHostPort(host)
	}
	return paho.NewClientOptions().
		AddBroker(broker.String()).
		SetClientID(e.clientID).
		SetUsername(e.username).
		SetPassword(e.password).
		SetProtocolVersion(4). // no fallback to 3.1 after a refusal
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(keepAlive).
		SetConnectTimeout(max(time.Until(deadline), time.Millisecond)).
		SetWriteTimeout(publishWait).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			nc, err := c.open(ctx, u, tlsConf)
			if err != nil {
				return nil, err
			}
			w := newBatchWriter(nc)
			c.mu.Lock()
			c.writer = w
			c.mu.Unlock()
			return w, nil
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) { c.onConnectionLost(err) })
}

// open dials TCP+TLS, or WebSocket over TLS, within ctx. The socket stays watched until the dial is over, so
// cancelling ctx also ends the WebSocket upgrade, CONNECT and SUBSCRIBE.
func (c *conn) open(ctx context.Context, u *url.URL, tlsConf *tls.Config) (net.Conn, error) {
	dialTLS := func(ctx context.Context, addr string) (net.Conn, error) {
		tc, err := netdial.DialTLS(ctx, addr, tlsConf, func(raw net.Conn) { c.watchDial(ctx, raw) })
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.netConn = tc
		c.mu.Unlock()
		return tc, nil
	}
	if u.Scheme != "wss" {
		return dialTLS(ctx, u.Host)
	}
	return netdial.DialWebSocket(ctx, u.String(), "mqtt", dialTLS)
}

// watchDial closes raw if ctx ends before the dial is over.
func (c *conn) watchDial(ctx context.Context, raw net.Conn) {
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	c.mu.Lock()
	c.dialWatch = stop
	c.mu.Unlock()
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

// onTwinResponse hands a twin answer to the handler; one the hub should never send (no status or $rid) is
// dropped: nothing waits for it.
func (c *conn) onTwinResponse(_ paho.Client, m paho.Message) {
	if status, rid, version, ok := iothub.ParseTwinResponse(m.Topic()); ok {
		c.handler.OnInbound(&transport.Inbound{Kind: transport.InboundTwinResponse, RID: rid, Status: status,
			Version: version, Payload: m.Payload()})
	}
}

func (c *conn) onDesired(_ paho.Client, m paho.Message) {
	if version, ok := iothub.ParseDesired(m.Topic()); ok {
		c.handler.OnInbound(&transport.Inbound{Kind: transport.InboundDesired, Version: version, Payload: m.Payload()})
	}
}

func (c *conn) onMethod(_ paho.Client, m paho.Message) {
	if name, rid, ok := iothub.ParseMethodRequest(m.Topic()); ok {
		c.handler.OnInbound(&transport.Inbound{Kind: transport.InboundMethod, Method: name, RID: rid,
			Payload: m.Payload()})
	}
}

// telemetryTopic renders m's topic: system properties first, then the application properties.
func (c *conn) telemetryTopic(m *transport.Message) string {
	var buf [8][2]string // most messages fit without allocating
	return c.eventsPrefix + iothub.EncodeProperties(bagPairs(m, buf[:0]))
}

// requestTopic is the topic of a twin or method request.
func requestTopic(r *transport.Request) string {
	switch r.Kind {
	case transport.RequestTwinGet:
		return iothub.TwinGetTopic(r.RID)
	case transport.RequestTwinReport:
		return iothub.TwinReportedTopic(r.RID)
	}
	return iothub.MethodResponseTopic(r.Status, r.RID)
}

// bagPairs appends m's property bag to buf: the system properties that are set, then the application properties.
func bagPairs(m *transport.Message, buf [][2]string) [][2]string {
	for _, p := range [...][2]string{
		{iothub.PropMessageID, m.MessageID}, {iothub.PropCorrelationID, m.CorrelationID},
		{iothub.PropContentType, m.ContentType}, {iothub.PropContentEncoding, m.ContentEncoding},
	} {
		if p[1] != "" { // an empty system property is left out
			buf = append(buf, p)
		}
	}
	return append(buf, m.Properties...)
}
