package hubsim

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iotconn/iotconn/core/iothub"
)

// dpsMaxPacket bounds a DPS MQTT packet; a registration request is a small JSON document.
const dpsMaxPacket = 64 << 10

// dpsMQTT is the DPS device endpoint over MQTT, on the same broker engine as the hub's front.
type dpsMQTT struct {
	dps   *DPS
	srv   *mqtt.Server
	links sync.Map // net.Conn given to mochi -> *dpsLink, once the CONNECT was accepted
}

// dpsLink is one accepted registration connection.
type dpsLink struct {
	regID string
	proof proof
}

func newDPSMQTT(d *DPS) (*dpsMQTT, error) {
	f := &dpsMQTT{dps: d}
	srv, err := newBroker(dpsMaxPacket, func(srv *mqtt.Server) mqtt.Hook { return &dpsHook{f: f, srv: srv} })
	if err != nil {
		return nil, err
	}
	f.srv = srv
	return f, nil
}

func (f *dpsMQTT) serveTLS(hc *hubConn) {
	tc := tls.Server(hc, f.dps.tlsConf)
	hc.setTop(tc)
	_ = f.srv.EstablishConnection("dps-mqtts", tc)
	f.links.Delete(tc)
}

func (f *dpsMQTT) link(cl *mqtt.Client) *dpsLink {
	if l, ok := f.links.Load(cl.Net.Conn); ok {
		return l.(*dpsLink)
	}
	return nil
}

type dpsHook struct {
	mqtt.HookBase
	f   *dpsMQTT
	srv *mqtt.Server
}

func (k *dpsHook) ID() string { return "hubsim-dps" }

func (k *dpsHook) Provides(b byte) bool {
	return bytes.IndexByte([]byte{
		mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnDisconnect, mqtt.OnPacketRead,
		mqtt.OnPublish,
	}, b) >= 0
}

// OnConnect checks the user name and the token's form, scope and expiry, or that the client certificate's CN is
// the registration id. The signature and the certificate are checked against the enrollments on each request, which DPS answers 401 when it does not match (MicrosoftDocs/azure-docs#43157: a
// device connected with a token and was refused on register).
func (k *dpsHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	d := k.f.dps
	clientID := pk.Connect.ClientIdentifier
	refuse := func(kind rejectKind, reason string) error {
		code, v3, _ := mqttConnackCode(kind)
		_ = k.srv.SendConnack(cl, code, false, nil)
		d.events.emit(Event{Kind: EventReject, Device: clientID, Remote: cl.Net.Remote, Reason: reason, Code: v3})
		return reject(kind, reason)
	}
	if pk.ProtocolVersion > 4 {
		_ = k.srv.SendConnack(cl, packets.ErrUnsupportedProtocolVersion, false, nil)
		d.events.emit(Event{Kind: EventReject, Device: clientID, Remote: cl.Net.Remote, Reason: "MQTT 5 is not supported", Code: 1})
		return packets.ErrUnsupportedProtocolVersion
	}
	scope, regID, ok := parseDPSUsername(string(pk.Connect.Username))
	switch {
	case !ok:
		return refuse(rejectBadUsernameOrPassword, "user name must be {idScope}/registrations/{registrationId}/api-version=...")
	case regID != clientID:
		return refuse(rejectIdentifier, fmt.Sprintf("client id %q is not the registration id %q", clientID, regID))
	case scope != d.cfg.IDScope:
		return refuse(rejectNotAuthorized, "id scope "+scope+" is not this DPS's "+d.cfg.IDScope)
	}
	var p proof
	if certs := peerCertificates(cl.Net.Conn); len(pk.Connect.Password) == 0 && len(certs) > 0 {
		if cn := certs[0].Subject.CommonName; cn != regID {
			return refuse(rejectNotAuthorized, fmt.Sprintf("certificate CN %q is not the registration id", cn))
		}
		p.certs = certs
	} else {
		tok, err := iothub.ParseSAS(string(pk.Connect.Password))
		if err != nil {
			return refuse(rejectBadUsernameOrPassword, "password: "+err.Error())
		}
		if why := d.tokenProblem(regID, tok); why != "" {
			return refuse(rejectNotAuthorized, why)
		}
		p.token = tok
	}
	k.f.links.Store(cl.Net.Conn, &dpsLink{regID: regID, proof: p})
	d.events.emit(Event{Kind: EventConnect, Device: regID, Remote: cl.Net.Remote})
	return nil
}

// parseDPSUsername reads "{idScope}/registrations/{registrationId}/api-version=...[&ClientVersion=...]".
func parseDPSUsername(u string) (scope, regID string, ok bool) {
	parts := strings.SplitN(u, "/", 4)
	if len(parts) != 4 || parts[0] == "" || parts[1] != "registrations" || parts[2] == "" ||
		!strings.HasPrefix(parts[3], "api-version=") {
		return "", "", false
	}
	return parts[0], parts[2], true
}

func (k *dpsHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	return k.f.link(cl) != nil
}

// OnACLCheck allows everything: topics are checked in OnPacketRead, where a violation can close the connection.
func (k *dpsHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (k *dpsHook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	if v, ok := k.f.links.LoadAndDelete(cl.Net.Conn); ok {
		reason := "device disconnected"
		if err != nil {
			reason = err.Error()
		}
		k.f.dps.events.emit(Event{Kind: EventDisconnect, Device: v.(*dpsLink).regID, Remote: cl.Net.Remote, Reason: reason})
	}
}

// OnPacketRead closes the connection of a device that publishes or subscribes outside DPS's topics.
func (k *dpsHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	violation := ""
	switch pk.FixedHeader.Type {
	case packets.Publish:
		switch {
		case pk.FixedHeader.Qos > 1:
			violation = "QoS 2 publish is not supported"
		case !strings.HasPrefix(pk.TopicName, iothub.TopicDPSRegister) && !strings.HasPrefix(pk.TopicName, iothub.TopicDPSStatus):
			violation = "publish to a topic DPS does not serve: " + pk.TopicName
		}
		pk.FixedHeader.Retain = false
	case packets.Subscribe:
		for _, sub := range pk.Filters {
			if !strings.HasPrefix(sub.Filter, iothub.TopicDPSResponses) && sub.Filter+"/" != iothub.TopicDPSResponses {
				violation = "subscribe to a topic DPS does not serve: " + sub.Filter
			}
		}
	}
	if violation != "" {
		if l := k.f.link(cl); l != nil {
			k.f.dps.events.logf("closing %s: %s", l.regID, violation)
		}
		return pk, fmt.Errorf("%s: %w", violation, packets.ErrRejectPacket)
	}
	return pk, nil
}

// OnPublish serves a register or status request; CodeSuccessIgnore keeps mochi's PUBACK but stops routing.
func (k *dpsHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	l := k.f.link(cl)
	if l == nil {
		return pk, packets.ErrRejectPacket
	}
	d := k.f.dps
	topic := pk.TopicName
	rid := ridOf(topic)
	var a dpsAnswer
	if strings.HasPrefix(topic, iothub.TopicDPSRegister) {
		var req struct {
			RegistrationID string `json:"registrationId"`
		}
		if err := json.Unmarshal(pk.Payload, &req); len(bytes.TrimSpace(pk.Payload)) > 0 && err != nil {
			a = dpsError(400, 4, "request body is not JSON: "+err.Error(), -1)
		} else if req.RegistrationID != "" && req.RegistrationID != l.regID {
			a = dpsError(400, 4, "registrationId "+req.RegistrationID+" is not the connection's "+l.regID, -1)
		} else {
			a = d.register(l.regID, l.proof, cl.Net.Remote)
		}
	} else {
		opID, _ := iothub.TopicQuery(topic, "operationId")
		a = d.operationStatus(l.regID, opID, l.proof, cl.Net.Remote)
	}
	_ = publishGranted(cl, iothub.DPSResponseTopic(a.status, rid, a.retryAfter), a.body, 0, nil)
	return pk, packets.CodeSuccessIgnore
}
