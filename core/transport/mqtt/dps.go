package mqtt

import (
	"context"
	"crypto/tls"
	"errors"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
)

// DPSParams say whom a Device Provisioning Service connection registers.
type DPSParams struct {
	Host           string // DPS host[:port]; 8883 (443 over WebSocket) when no port
	IDScope        string
	RegistrationID string
	Token          string // SAS token scoped to the registration; "" with X.509
	TLS            *tls.Config
	WebSocket      bool
	// OnResponse receives every answer DPS publishes, on paho's goroutine; it must not block.
	OnResponse func(topic string, payload []byte)
}

// DPSConn is one MQTT connection to DPS. It dials, and classifies the failures of every stage, exactly as a hub
// link does (classify.go), so a DPS that is down is KindNetwork, an untrusted one KindUntrusted, a refused
// registration token KindAuth; what DPS answers on its topics is the caller's to read.
type DPSConn struct {
	c *conn
}

// dpsLost makes a DPS connection's loss visible to Publish through conn.down; nobody else listens.
type dpsLost struct{ transport.Handler }

func (dpsLost) OnConnectionLost(*transport.Error) {}

// DialDPS connects to DPS as p.RegistrationID and subscribes to its answers. ctx bounds TCP, TLS, CONNECT and
// SUBSCRIBE; a ctx without a deadline gets 30 s.
func DialDPS(ctx context.Context, p DPSParams) (*DPSConn, error) {
	if p.Host == "" || p.IDScope == "" || p.RegistrationID == "" || p.OnResponse == nil {
		return nil, &transport.Error{Kind: transport.KindProtocol, Op: "connect",
			Err: errors.New("DPS host, id scope, registration id and a response handler are required")}
	}
	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	c := &conn{handler: dpsLost{}, down: make(chan struct{}), wake: make(chan struct{}, 1),
		tokenReady: make(chan struct{}, 1)}
	opts := c.pahoOptions(ctx, endpoint{host: p.Host, webSocket: p.WebSocket, tls: p.TLS,
		clientID: p.RegistrationID, username: iothub.DPSUsername(p.IDScope, p.RegistrationID), password: p.Token})
	opts.SetCleanSession(true) // DPS ignores it; nothing of a registration outlives its connection
	c.client = paho.NewClient(opts)
	sub := subscription{iothub.TopicDPSResponses + "#", 1, func(_ paho.Client, m paho.Message) {
		p.OnResponse(m.Topic(), m.Payload())
	}}
	c.client.AddRoute(sub.filter, sub.handler)
	tok := c.client.Connect()
	<-tok.Done()
	if err := tok.Error(); err != nil {
		c.Close()
		return nil, connectError(ctx, tok.(*paho.ConnectToken).ReturnCode(), err)
	}
	if err := c.subscribe(ctx, []subscription{sub}); err != nil {
		c.Close()
		return nil, err
	}
	c.stopDialWatch()
	if err := c.establish(); err != nil {
		c.Close()
		return nil, err
	}
	return &DPSConn{c: c}, nil
}

// Publish sends a request to DPS at QoS 0, as the SDKs do; it returns once paho wrote it, or why not.
func (d *DPSConn) Publish(ctx context.Context, topic string, payload []byte) error {
	tok := d.c.client.Publish(topic, 0, false, payload)
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return lostError(err)
		}
		return nil
	case <-d.c.down:
		return d.c.linkErr()
	case <-ctx.Done():
		return &transport.Error{Kind: transport.KindTimeout, Op: "publish", Err: ctx.Err()}
	}
}

// Down is closed once the connection ended; Err then says why.
func (d *DPSConn) Down() <-chan struct{} { return d.c.down }

// Err is why the connection ended, nil while it is up.
func (d *DPSConn) Err() *transport.Error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	return d.c.downErr
}

// Close ends the connection.
func (d *DPSConn) Close() { d.c.Close() }
