package hubsim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/iotconn/iotconn/core/iothub"
)

// maxD2CSize is IoT Hub's device-to-cloud message size limit, counted as D2CMessage.size does; a bigger message
// closes the connection.
const maxD2CSize = iothub.MaxMessageSize

// mqttConnackCode is the MQTT 3.1.1 CONNACK return code for each rejection (README: CONNACK table), given as the
// MQTT 5 code mochi translates for 3.1.1 clients; ok false means the connection closes without a CONNACK.
func mqttConnackCode(k rejectKind) (code packets.Code, v3 int, ok bool) {
	switch k {
	case rejectBadUsernameOrPassword:
		return packets.ErrMalformedUsername, 4, true
	case rejectNotAuthorized:
		return packets.ErrBadUsernameOrPassword, 5, true
	case rejectIdentifier:
		return packets.ErrClientIdentifierNotValid, 2, true
	case rejectDisabled, rejectServerUnavailable:
		return packets.ErrServerUnavailable, 3, true
	}
	return packets.Code{}, -1, false
}

// mqttFront runs the MQTT protocol (mochi's broker engine) over the hub's connections. mochi does the packet work;
// the hook below decides everything IoT Hub decides. Messages are never routed between clients.
type mqttFront struct {
	hub   *Hub
	srv   atomic.Pointer[mqtt.Server] // replaced on restart, which forgets MQTT sessions
	links sync.Map                    // net.Conn given to mochi -> *mqttLink, once authenticated
}

func newMQTTFront(h *Hub) (*mqttFront, error) {
	f := &mqttFront{hub: h}
	return f, f.reset()
}

// reset starts a fresh broker engine.
func (f *mqttFront) reset() error {
	srv, err := newBroker(2*maxD2CSize, func(srv *mqtt.Server) mqtt.Hook { return &mqttHook{f: f, srv: srv} })
	if err != nil {
		return err
	}
	f.srv.Store(srv)
	return nil
}

// newBroker returns a mochi broker engine set up as Azure's MQTT endpoints behave (QoS 1 at most, no logging)
// with one hook that decides everything; the hub front and the DPS front run on it.
func newBroker(maxPacket uint32, hook func(*mqtt.Server) mqtt.Hook) (*mqtt.Server, error) {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumQos = 1 // Azure grants QoS 1 at most
	caps.MaximumPacketSize = maxPacket
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err := srv.AddHook(hook(srv), nil); err != nil {
		return nil, err
	}
	return srv, nil
}

// serve runs one connection until it ends.
func (f *mqttFront) serve(listener string, c net.Conn) {
	_ = f.srv.Load().EstablishConnection(listener, c)
	// mochi skips OnDisconnect when the CONNACK write fails; forget such a link here.
	if l, ok := f.links.LoadAndDelete(c); ok {
		f.hub.detach(l.(*mqttLink), "connection ended during connect")
	}
}

func (f *mqttFront) link(cl *mqtt.Client) *mqttLink {
	if l, ok := f.links.Load(cl.Net.Conn); ok {
		return l.(*mqttLink)
	}
	return nil
}

type mqttHook struct {
	mqtt.HookBase
	f   *mqttFront
	srv *mqtt.Server
}

func (k *mqttHook) ID() string { return "hubsim" }

func (k *mqttHook) Provides(b byte) bool {
	return bytes.IndexByte([]byte{
		mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablish,
		mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnPacketRead, mqtt.OnPublish, mqtt.OnSubscribed,
	}, b) >= 0
}

// OnConnect authenticates: mochi sends its own CONNACK only for success, so rejections are answered here.
func (k *mqttHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	h := k.f.hub
	clientID := pk.Connect.ClientIdentifier
	refuse := func(r *rejection) error {
		code, v3, ok := mqttConnackCode(r.kind)
		if ok {
			_ = k.srv.SendConnack(cl, code, false, nil)
		}
		h.events.emit(Event{Kind: EventReject, Device: clientID, Remote: cl.Net.Remote, Reason: r.reason, Code: v3})
		return r
	}
	if pk.ProtocolVersion > 4 {
		_ = k.srv.SendConnack(cl, packets.ErrUnsupportedProtocolVersion, false, nil)
		h.events.emit(Event{Kind: EventReject, Device: clientID, Remote: cl.Net.Remote, Reason: "MQTT 5 is not supported", Code: 1})
		return packets.ErrUnsupportedProtocolVersion
	}
	if h.gate.inFailover(time.Now()) {
		return refuse(reject(rejectServerUnavailable, "failover in progress"))
	}
	if ok, answer := h.gate.allowConnect(time.Now()); !ok {
		kind := rejectUnavailable
		if answer == ThrottleServerUnavailable {
			kind = rejectServerUnavailable
		}
		return refuse(reject(kind, "throttled: too many connects per second"))
	}
	id, expiry, r := h.authenticate(credentials{
		clientID: clientID, username: string(pk.Connect.Username), password: string(pk.Connect.Password),
		certs: peerCertificates(cl.Net.Conn),
	})
	if r != nil {
		return refuse(r)
	}
	l := &mqttLink{f: k.f, cl: cl, hc: hubConnOf(cl.Net.Conn), id: id, expiry: expiry, c2dInFlight: map[uint16]string{}}
	if pk.Connect.WillFlag {
		l.will = &mqtt.Will{TopicName: pk.Connect.WillTopic, Payload: pk.Connect.WillPayload}
	}
	k.f.links.Store(cl.Net.Conn, l)
	return nil
}

func (k *mqttHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	return k.f.link(cl) != nil
}

// OnACLCheck allows everything: topics are checked in OnPacketRead, where a violation can close the connection.
func (k *mqttHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (k *mqttHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if l := k.f.link(cl); l != nil {
		l.session.Store(k.f.hub.attach(l.id, l, cl.Net.Remote, l.expiry))
	}
}

// OnSessionEstablished runs after the CONNACK: the link may now be published to, and a device resuming a session
// gets its queued C2D messages.
func (k *mqttHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if l := k.f.link(cl); l != nil {
		l.connacked.Store(true)
		k.f.hub.flushC2D(l.id.String())
	}
}

func (k *mqttHook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	v, ok := k.f.links.LoadAndDelete(cl.Net.Conn)
	if !ok {
		return
	}
	l := v.(*mqttLink)
	l.recordWill()
	cause := "device disconnected"
	var ne net.Error
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		cause = "connection closed by the device"
	case errors.As(err, &ne) && ne.Timeout():
		cause = "keep-alive timeout"
	default:
		cause = err.Error()
	}
	k.f.hub.detach(l, cause)
}

// OnPacketRead enforces IoT Hub's limits; returning ErrRejectPacket makes mochi close the connection.
func (k *mqttHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	l := k.f.link(cl)
	if l == nil {
		return pk, nil
	}
	violation := ""
	switch pk.FixedHeader.Type {
	case packets.Publish:
		switch {
		case pk.FixedHeader.Qos > 1:
			violation = "QoS 2 publish is not supported"
		case !l.mayPublish(pk.TopicName):
			violation = "publish to a topic the device may not use: " + pk.TopicName
		case len(pk.Payload) > maxD2CSize:
			violation = fmt.Sprintf("message of %d bytes exceeds the 256 KB limit", len(pk.Payload))
		}
		if bag, ok := l.telemetryBag(pk.TopicName); ok && violation == "" {
			if m, err := d2cFromBag(pk.Payload, bag); err != nil {
				violation = "bad property bag: " + err.Error()
			} else if n := m.size(); n > maxD2CSize {
				violation = fmt.Sprintf("message of %d bytes (body, system property values, application property "+
					"names and values) exceeds the 256 KB limit", n)
			}
		}
		pk.FixedHeader.Retain = false // IoT Hub keeps no retained messages
	case packets.Subscribe:
		for _, sub := range pk.Filters {
			if !l.maySubscribe(sub.Filter) {
				violation = "subscribe to a topic the device may not use: " + sub.Filter
			}
		}
	case packets.Puback:
		l.acked(pk.PacketID)
	case packets.Disconnect:
		l.goodbye.Store(true)
	}
	if violation != "" {
		if s := l.current(); s != nil {
			k.f.hub.markDrop(s, violation)
		}
		return pk, fmt.Errorf("%s: %w", violation, packets.ErrRejectPacket)
	}
	return pk, nil
}

// OnPublish handles what a device sends; CodeSuccessIgnore keeps mochi's PUBACK but stops routing.
func (k *mqttHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	l := k.f.link(cl)
	if l == nil {
		return pk, packets.ErrRejectPacket
	}
	h := k.f.hub
	topic := pk.TopicName
	switch {
	case strings.HasPrefix(topic, iothub.TopicTwinGet):
		l.sendTwinResponse(ridOf(topic), 200, 0, h.twinGet(l.id))
	case strings.HasPrefix(topic, iothub.TopicTwinReported):
		status, v, body := h.reportedAnswer(l.id, pk.Payload)
		l.sendTwinResponse(ridOf(topic), status, v, body)
	case strings.HasPrefix(topic, iothub.TopicMethodsRes):
		status, _, _ := strings.Cut(strings.TrimPrefix(topic, iothub.TopicMethodsRes), "/")
		code, err := strconv.Atoi(status)
		if err != nil {
			code = 500
		}
		h.methodResponse(ridOf(topic), code, pk.Payload)
	default:
		if bag, ok := l.telemetryBag(topic); ok {
			m, _ := d2cFromBag(pk.Payload, bag) // validated in OnPacketRead
			h.receiveD2C(l.id, m)
		}
	}
	return pk, packets.CodeSuccessIgnore
}

func (k *mqttHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	l := k.f.link(cl)
	if l == nil {
		return
	}
	for _, sub := range pk.Filters {
		if topicMatches(sub.Filter, iothub.C2DPrefix(l.id.device)+"x") {
			k.f.hub.flushC2D(l.id.String())
			return
		}
	}
}

// d2cFromBag makes the record of a telemetry message: the property bag split into system properties and
// application properties, the latter also in wire order (never nil, so the control API lists none as []).
func d2cFromBag(payload []byte, bag string) (D2CMessage, error) {
	pairs, err := iothub.DecodeProperties(bag)
	if err != nil {
		return D2CMessage{}, err
	}
	sys, app := iothub.SplitProperties(pairs)
	m := D2CMessage{Payload: append([]byte(nil), payload...), MessageID: sys.MessageID, CorrelationID: sys.CorrelationID,
		ContentType: sys.ContentType, ContentEncoding: sys.ContentEncoding, Properties: map[string]string{},
		PropertyList: append([][2]string{}, app...), ArrivedAt: time.Now()}
	for _, p := range app {
		m.Properties[p[0]] = p[1]
	}
	return m, nil
}

// ridOf returns the $rid of a topic's query exactly as the device wrote it, since devices match it verbatim.
func ridOf(topic string) string {
	rid, _ := iothub.TopicQuery(topic, "$rid")
	return rid
}

// topicMatches applies an MQTT topic filter (with + and #) to a topic name.
func topicMatches(filter, topic string) bool {
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) || (f != "+" && f != ts[i]) {
			return false
		}
	}
	return len(fs) == len(ts)
}

// mqttLink is one authenticated MQTT connection.
type mqttLink struct {
	f       *mqttFront
	cl      *mqtt.Client
	hc      *hubConn
	id      identity
	expiry  time.Time
	session atomic.Pointer[session]
	will    *mqtt.Will  // from CONNECT; nil without one
	goodbye atomic.Bool // the device sent DISCONNECT, which discards the will
	// connacked: the CONNACK was written. The session is live from OnSessionEstablish, before it, and holds the
	// subscriptions of a resumed session; a PUBLISH written first breaks the connect ([MQTT-3.2.0-1]).
	connacked atomic.Bool

	mu          sync.Mutex
	c2dInFlight map[uint16]string // packet id -> C2D message id awaiting PUBACK
}

func (l *mqttLink) current() *session { return l.session.Load() }

// recordWill records the will as telemetry, as IoT Hub does, when the connection ends without DISCONNECT. mochi's
// own will handling is not used: it skips the will of a connection the hub drops before its read loop starts.
func (l *mqttLink) recordWill() {
	if l.will == nil || l.goodbye.Load() {
		return
	}
	if bag, ok := l.telemetryBag(l.will.TopicName); ok {
		if m, err := d2cFromBag(l.will.Payload, bag); err == nil {
			l.f.hub.receiveD2C(l.id, m)
		}
	}
}

// telemetryBag returns the property bag of a telemetry topic of this identity.
func (l *mqttLink) telemetryBag(topic string) (bag string, ok bool) {
	base := iothub.TelemetryTopic(l.id.device, l.id.module, "")
	if topic == strings.TrimSuffix(base, "/") {
		return "", true
	}
	return strings.CutPrefix(topic, base)
}

func (l *mqttLink) mayPublish(topic string) bool {
	if _, ok := l.telemetryBag(topic); ok {
		return true
	}
	for _, p := range []string{iothub.TopicTwinGet, iothub.TopicTwinReported, iothub.TopicMethodsRes} {
		if strings.HasPrefix(topic, p) {
			return true
		}
	}
	return false
}

// maySubscribe allows the $iothub request topics and filters inside the identity's own topic tree; SDKs differ
// here (the C# SDK subscribes to devices/{d}/modules/{m}/#), and nothing but the hub publishes anyway.
func (l *mqttLink) maySubscribe(filter string) bool {
	own := "devices/" + l.id.device + "/"
	if l.id.module != "" {
		own += "modules/" + l.id.module + "/"
	}
	for _, p := range []string{iothub.TopicTwinRes, iothub.TopicTwinDesired, iothub.TopicMethodsPost, own} {
		if strings.HasPrefix(filter, p) || filter+"/" == p {
			return true
		}
	}
	return false
}

// grantedQoS is the QoS the device receives topic at, capped at 1; ok false when no subscription matches, or
// before the CONNACK: nothing may reach the device until then.
func (l *mqttLink) grantedQoS(topic string) (qos byte, ok bool) {
	if !l.connacked.Load() {
		return 0, false
	}
	return grantedQoS(l.cl, topic)
}

func grantedQoS(cl *mqtt.Client, topic string) (qos byte, ok bool) {
	for _, sub := range cl.State.Subscriptions.GetAll() {
		if topicMatches(sub.Filter, topic) {
			qos, ok = max(qos, min(sub.Qos, 1)), true
		}
	}
	return qos, ok
}

var errNotSubscribed = errors.New("device has not subscribed to the topic")

// publish writes a PUBLISH at the granted QoS (at most maxQoS); onID runs with the packet id before the write so a
// fast PUBACK is never missed.
func (l *mqttLink) publish(topic string, payload []byte, maxQoS byte, onID func(uint16, byte)) error {
	qos, ok := l.grantedQoS(topic)
	if !ok {
		return errNotSubscribed
	}
	return writePublish(l.cl, topic, payload, min(qos, maxQoS), onID)
}

// publishGranted is publish for a client with no hub link (DPS's), which it answers only after its CONNACK.
func publishGranted(cl *mqtt.Client, topic string, payload []byte, maxQoS byte, onID func(uint16, byte)) error {
	qos, ok := grantedQoS(cl, topic)
	if !ok {
		return errNotSubscribed
	}
	return writePublish(cl, topic, payload, min(qos, maxQoS), onID)
}

// writePublish writes a PUBLISH at qos; onID runs with the packet id before the write.
func writePublish(cl *mqtt.Client, topic string, payload []byte, qos byte, onID func(uint16, byte)) error {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     payload,
	}
	if pk.FixedHeader.Qos > 0 {
		id, err := cl.NextPacketID()
		if err != nil {
			return err
		}
		pk.PacketID = uint16(id)
	}
	if onID != nil {
		onID(pk.PacketID, pk.FixedHeader.Qos)
	}
	return cl.WritePacket(pk)
}

func (l *mqttLink) drop(cause dropCause) {
	if cause == dropGraceful {
		l.hc.closeGracefully()
	} else {
		l.hc.kill()
	}
	l.cl.Stop(errDropped)
}

var errDropped = errors.New("connection dropped by the hub")

func (l *mqttLink) listensC2D() bool {
	if l.id.module != "" {
		return false
	}
	_, ok := l.grantedQoS(iothub.C2DPrefix(l.id.device) + "x")
	return ok
}

func (l *mqttLink) sendC2D(m C2DMessage) error {
	pairs := [][2]string{{iothub.PropMessageID, m.MessageID}, {iothub.PropTo, "/devices/" + l.id.device + "/messages/deviceBound"}}
	if m.CorrelationID != "" {
		pairs = append(pairs, [2]string{iothub.PropCorrelationID, m.CorrelationID})
	}
	if m.ContentType != "" {
		pairs = append(pairs, [2]string{iothub.PropContentType, m.ContentType})
	}
	if m.ContentEncoding != "" {
		pairs = append(pairs, [2]string{iothub.PropContentEncoding, m.ContentEncoding})
	}
	for _, k := range sortedKeys(m.Properties) {
		pairs = append(pairs, [2]string{k, m.Properties[k]})
	}
	topic := iothub.C2DPrefix(l.id.device) + iothub.EncodeProperties(pairs)
	atMostOnce := false
	err := l.publish(topic, m.Payload, 1, func(id uint16, qos byte) {
		if qos == 0 {
			atMostOnce = true
			return
		}
		l.mu.Lock()
		l.c2dInFlight[id] = m.MessageID
		l.mu.Unlock()
	})
	if err == nil && atMostOnce {
		l.f.hub.c2dCompleted(l.id.String(), m.MessageID)
	}
	return err
}

// acked completes the C2D message a PUBACK acknowledges.
func (l *mqttLink) acked(packetID uint16) {
	l.mu.Lock()
	msgID, ok := l.c2dInFlight[packetID]
	delete(l.c2dInFlight, packetID)
	l.mu.Unlock()
	if ok {
		l.f.hub.c2dCompleted(l.id.String(), msgID)
	}
}

func (l *mqttLink) sendTwinResponse(rid string, status, version int, body []byte) {
	_ = l.publish(iothub.TwinResponseTopic(status, rid, int64(version)), body, 0, nil)
}

func (l *mqttLink) sendDesired(version int, patch []byte) {
	_ = l.publish(iothub.DesiredTopic(int64(version)), patch, 0, nil)
}

func (l *mqttLink) sendMethod(name, rid string, payload []byte) bool {
	return l.publish(iothub.MethodRequestTopic(name, rid), payload, 0, nil) == nil
}
