package hubsim

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotconn/iotconn/hubsim/amqp"
)

// AMQP limits and names. IoT Hub allows 999 tokens (devices) per connection.
const (
	amqpIdleTimeout   = 4 * time.Minute
	amqpMaxDevices    = 999
	amqpLinkCredit    = 100
	amqpMaxDelivery   = 4 * maxD2CSize // a C SDK batch carries several messages in one delivery
	amqpBatchFormat   = 0x80013700     // the C SDK's batched telemetry: each data section is a whole message
	cbsStatusCode     = "status-code"
	cbsStatusDesc     = "status-description"
	condLinkConflict  = amqp.Symbol("com.microsoft:link-creation-conflict")
	condThrottled     = amqp.Symbol("com.microsoft:device-container-throttled")
	condHubNotFound   = amqp.Symbol("com.microsoft:iot-hub-not-found-error")
	amqpTokenTypeSB   = "servicebus.windows.net:sastoken"
	amqpTokenTypeIoTH = "azure-devices.net:sastoken"
)

// amqpNode is what a link address names.
type amqpNode int

const (
	nodeCBS amqpNode = iota + 1
	nodeEvents
	nodeC2D
	nodeMethods
	nodeTwin
)

var nodeNames = map[amqpNode]string{nodeCBS: "$cbs", nodeEvents: "events", nodeC2D: "c2d", nodeMethods: "methods",
	nodeTwin: "twin"}

// parseNode reads a link address: "$cbs", or "[amqps://{host}]/devices/{d}[/modules/{m}]/" followed by
// "messages/events", "messages/devicebound", "methods/devicebound" or "twin". SDKs differ in the scheme, the host
// and the case of the fixed segments (.NET writes deviceBound), so those are matched leniently; ids are exact.
func parseNode(addr string) (amqpNode, identity, bool) {
	if addr == "$cbs" {
		return nodeCBS, identity{}, true
	}
	lower := strings.ToLower(addr)
	for _, scheme := range []string{"amqps://", "amqp://"} {
		if strings.HasPrefix(lower, scheme) {
			rest := addr[len(scheme):]
			i := strings.IndexByte(rest, '/')
			if i < 0 {
				return 0, identity{}, false
			}
			addr = rest[i:]
		}
	}
	segs := strings.Split(strings.TrimPrefix(addr, "/"), "/")
	if len(segs) < 3 || !strings.EqualFold(segs[0], "devices") || segs[1] == "" {
		return 0, identity{}, false
	}
	id := identity{device: segs[1]}
	rest := segs[2:]
	if len(rest) > 2 && strings.EqualFold(rest[0], "modules") && rest[1] != "" {
		id.module, rest = rest[1], rest[2:]
	}
	switch strings.ToLower(strings.Join(rest, "/")) {
	case "messages/events":
		return nodeEvents, id, true
	case "messages/devicebound":
		return nodeC2D, id, id.module == ""
	case "methods/devicebound":
		return nodeMethods, id, true
	case "twin":
		return nodeTwin, id, true
	}
	return 0, identity{}, false
}

// audienceIdentity reads a put-token audience "{host}/devices/{d}[/modules/{m}]" (Node sends the token's sr,
// URL-encoded).
func audienceIdentity(aud string) (identity, bool) {
	if u, err := url.QueryUnescape(aud); err == nil {
		aud = u
	}
	aud = strings.TrimPrefix(strings.TrimPrefix(aud, "amqps://"), "https://")
	segs := strings.Split(strings.TrimSuffix(aud, "/"), "/")
	if !hostMatches(segs[0], hostNames) {
		return identity{}, false
	}
	switch {
	case len(segs) == 3 && strings.EqualFold(segs[1], "devices") && segs[2] != "":
		return identity{device: segs[2]}, true
	case len(segs) == 5 && strings.EqualFold(segs[1], "devices") && strings.EqualFold(segs[3], "modules") &&
		segs[2] != "" && segs[4] != "":
		return identity{device: segs[2], module: segs[4]}, true
	}
	return identity{}, false
}

// amqpFront serves IoT Hub's AMQP nodes on the hub's connections and holds the AMQP fault state.
type amqpFront struct {
	hub *Hub

	mu         sync.Mutex
	conns      map[*amqpConn]struct{}
	rejects    map[string]amqpReject // identity -> telemetry rejected until
	noCredit   map[string]time.Time  // identity -> credit withheld until
	dropCBSEnd time.Time             // put-token replies dropped until
}

type amqpReject struct {
	cond  amqp.Symbol
	until time.Time
}

func newAMQPFront(h *Hub) *amqpFront {
	return &amqpFront{hub: h, conns: map[*amqpConn]struct{}{}, rejects: map[string]amqpReject{},
		noCredit: map[string]time.Time{}}
}

// linkCredit is the credit a device's links get: none while a withhold-credit fault lasts.
func (f *amqpFront) linkCredit(id identity) uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Now().Before(f.noCredit[id.String()]) {
		return 0
	}
	return amqpLinkCredit
}

// fault injects an AMQP-only fault.
func (f *amqpFront) fault(flt Fault) error {
	h := f.hub
	if flt.Kind == FaultAMQPClose && flt.Device == "" {
		f.mu.Lock()
		conns := make([]*amqpConn, 0, len(f.conns))
		for ac := range f.conns {
			conns = append(conns, ac)
		}
		f.mu.Unlock()
		for _, ac := range conns {
			ac.c.Close(amqp.Errorf(amqp.CondConnectionForced, "fault amqp-close"))
		}
		return nil
	}
	if flt.Kind == FaultAMQPDropCBS {
		if flt.Duration <= 0 {
			return errors.New("amqp-drop-cbs needs a duration")
		}
		f.mu.Lock()
		f.dropCBSEnd = time.Now().Add(flt.Duration)
		f.mu.Unlock()
		h.after(flt.Duration, func() { h.events.emit(Event{Kind: EventFault, Reason: "amqp-drop-cbs ended"}) })
		return nil
	}
	if _, err := h.Device(flt.Device); err != nil {
		return err
	}
	s := h.sessionOf(flt.Device)
	dev, _ := sessionLink(s).(*amqpDevice)
	key := flt.Device
	switch flt.Kind {
	case FaultAMQPReject:
		if flt.Duration <= 0 || flt.Condition == "" {
			return errors.New("amqp-reject needs a duration and a condition")
		}
		f.mu.Lock()
		f.rejects[key] = amqpReject{cond: amqp.Symbol(flt.Condition), until: time.Now().Add(flt.Duration)}
		f.mu.Unlock()
		return nil
	case FaultAMQPWithholdCredit:
		if flt.Duration <= 0 {
			return errors.New("amqp-withhold-credit needs a duration")
		}
		f.mu.Lock()
		f.noCredit[key] = time.Now().Add(flt.Duration)
		f.mu.Unlock()
		if dev != nil {
			dev.setCredit(0)
		}
		h.after(flt.Duration, func() {
			if d, ok := sessionLink(h.sessionOf(key)).(*amqpDevice); ok {
				d.setCredit(f.linkCredit(d.id))
			}
			h.events.emit(Event{Kind: EventFault, Device: key, Reason: "amqp-withhold-credit ended"})
		})
		return nil
	}
	if dev == nil {
		return fmt.Errorf("%w over AMQP: %s", ErrNotConnected, flt.Device)
	}
	if flt.Kind == FaultAMQPClose {
		dev.drop(dropGraceful)
		return nil
	}
	cond := amqp.Symbol(flt.Condition)
	if cond == "" {
		cond = amqp.CondDetachForced
	}
	dev.detachLinks(amqp.Errorf(cond, "fault amqp-detach"))
	return nil
}

// sessionLink is a session's transport link, nil without a session.
func sessionLink(s *session) link {
	if s == nil {
		return nil
	}
	return s.link
}

// plainAuth is the identity a SASL PLAIN exchange proved: user "{device}[/modules/{module}]@sas.{hub}" and a
// SAS token as the password.
type plainAuth struct {
	id     identity
	expiry time.Time
}

func (f *amqpFront) sasl(mech amqp.Symbol, initial []byte, _ string) (any, error) {
	if mech != "PLAIN" {
		return nil, nil // ANONYMOUS and MSSBCBS: the device authenticates through $cbs
	}
	_, user, pass, err := amqp.ParsePlain(initial)
	if err != nil {
		return nil, err
	}
	name, _, ok := strings.Cut(user, "@sas.")
	if !ok || name == "" {
		return nil, fmt.Errorf("SASL PLAIN user %q is not {deviceId}@sas.{hubName}", user)
	}
	d, m, _ := strings.Cut(name, "/modules/")
	id := identity{device: d, module: m}
	expiry, r := f.hub.verifyToken(id, pass)
	if r != nil {
		f.hub.events.emit(Event{Kind: EventReject, Device: id.String(), Reason: "amqp sasl plain: " + r.reason, Code: -1})
		return nil, r
	}
	return &plainAuth{id: id, expiry: expiry}, nil
}

// serve runs AMQP on one connection (TLS already wrapped around hc, or a WebSocket).
func (f *amqpFront) serve(hc *hubConn, nc net.Conn) {
	srv := &amqp.Server{
		ContainerID: "hubsim", IdleTimeout: amqpIdleTimeout, MaxMessageSize: amqpMaxDelivery,
		SASLMechanisms: []amqp.Symbol{"MSSBCBS", "ANONYMOUS", "PLAIN"}, SASL: f.sasl,
		Open: func(c *amqp.Conn) (amqp.Handler, *amqp.Error) {
			if f.hub.gate.inFailover(time.Now()) {
				// The address answered says which lookup the client used (a failover to another address).
				f.hub.events.emit(Event{Kind: EventReject, Remote: hc.RemoteAddr().String(), Code: -1,
					Reason: "amqp: iot-hub-not-found (failover in progress) at " + hc.LocalAddr().String()})
				return nil, amqp.Errorf(condHubNotFound, "the hub is failing over")
			}
			ac := &amqpConn{f: f, hc: hc, c: c, devices: map[string]*amqpDevice{}, links: map[*amqp.Link]*amqpDevice{}}
			ac.plain, _ = c.Auth().(*plainAuth)
			f.mu.Lock()
			f.conns[ac] = struct{}{}
			f.mu.Unlock()
			return ac, nil
		},
	}
	_ = srv.Serve(nc)
}

// amqpConn is one AMQP connection: the devices it carries, each authorised by its own token.
type amqpConn struct {
	f     *amqpFront
	hc    *hubConn
	c     *amqp.Conn
	plain *plainAuth

	mu      sync.Mutex
	cbsIn   *amqp.Link // the $cbs link the client sends requests on
	cbsOut  *amqp.Link // the $cbs link the client receives replies on
	devices map[string]*amqpDevice
	links   map[*amqp.Link]*amqpDevice // every accepted device link
}

// amqpDevice is one identity on an AMQP connection; it is the hub core's link for that identity.
type amqpDevice struct {
	conn        *amqpConn
	id          identity
	session     atomic.Pointer[session]
	desired     atomic.Bool             // subscribed to desired-property pushes
	nodes       map[*amqp.Link]amqpNode // guarded by conn.mu
	methodCalls map[amqp.UUID]string    // method calls awaiting an answer: correlation-id -> rid; guarded by conn.mu
}

func (ac *amqpConn) remote() string { return ac.c.RemoteAddr().String() }

func (ac *amqpConn) Attach(l *amqp.Link) *amqp.Error {
	node, id, ok := parseNode(l.Address())
	if !ok {
		return amqp.Errorf(amqp.CondNotFound, "no node %q", l.Address())
	}
	if node == nodeCBS {
		ac.mu.Lock()
		if l.Receiving() {
			ac.cbsIn = l
		} else {
			ac.cbsOut = l
		}
		ac.mu.Unlock()
		if l.Receiving() {
			l.SetCredit(amqpLinkCredit)
		}
		return nil
	}
	if (node == nodeEvents && !l.Receiving()) || (node == nodeC2D && l.Receiving()) {
		return amqp.Errorf(amqp.CondNotAllowed, "%s does not take a link of that direction", l.Address())
	}
	dev, refusal := ac.authorised(id)
	if refusal != nil {
		return refusal
	}
	ac.mu.Lock()
	dev.nodes[l] = node
	ac.links[l] = dev
	ac.mu.Unlock()
	dir := "hub sends"
	if l.Receiving() {
		dir = "device sends"
	}
	ac.f.hub.events.logf("amqp link attached: %s %s, %s", id, nodeNames[node], dir)
	if l.Receiving() {
		l.SetCredit(ac.f.linkCredit(id))
	} else if node == nodeC2D {
		// queued messages go out once the attach is answered and the device grants credit
		ac.f.hub.flushC2D(id.String())
	}
	return nil
}

// authorised returns the identity's device on this connection, made from the SASL PLAIN identity on its first
// link, or why the link is refused.
func (ac *amqpConn) authorised(id identity) (*amqpDevice, *amqp.Error) {
	ac.mu.Lock()
	dev := ac.devices[id.String()]
	ac.mu.Unlock()
	if dev != nil {
		return dev, nil
	}
	if ac.plain != nil && ac.plain.id == id && time.Now().Before(ac.plain.expiry.Add(ac.f.hub.cfg.ClockSkew)) {
		return ac.authorise(id, ac.plain.expiry)
	}
	return nil, amqp.Errorf(amqp.CondUnauthorized, "no valid token for %s on this connection", id)
}

// authorise records a valid token for id: a device already on the connection is renewed in place, a new one
// becomes the identity's live session (replacing one on another connection).
func (ac *amqpConn) authorise(id identity, expiry time.Time) (*amqpDevice, *amqp.Error) {
	h := ac.f.hub
	ac.mu.Lock()
	if dev := ac.devices[id.String()]; dev != nil {
		ac.mu.Unlock()
		if s := dev.session.Load(); s != nil {
			h.renew(s, expiry)
		}
		return dev, nil
	}
	if len(ac.devices) >= amqpMaxDevices {
		ac.mu.Unlock()
		return nil, amqp.Errorf(amqp.CondResourceLimit, "more than %d devices on one connection", amqpMaxDevices)
	}
	if ok, _ := h.gate.allowConnect(time.Now()); !ok {
		ac.mu.Unlock()
		h.events.emit(Event{Kind: EventReject, Device: id.String(), Remote: ac.remote(),
			Reason: "amqp: throttled: too many connects per second", Code: -1})
		return nil, amqp.Errorf(condThrottled, "too many device connections per second")
	}
	dev := &amqpDevice{conn: ac, id: id, nodes: map[*amqp.Link]amqpNode{}, methodCalls: map[amqp.UUID]string{}}
	ac.devices[id.String()] = dev
	ac.mu.Unlock()
	dev.session.Store(h.attach(id, dev, ac.remote(), expiry))
	return dev, nil
}

func (ac *amqpConn) Transfer(l *amqp.Link, d *amqp.Delivery) amqp.DeliveryState {
	node, _, _ := parseNode(l.Address())
	if node == nodeCBS {
		return ac.putToken(d)
	}
	ac.mu.Lock()
	dev := ac.links[l]
	ac.mu.Unlock()
	if dev == nil {
		return amqp.Rejected{Error: amqp.Errorf(amqp.CondUnauthorized, "link is no longer authorised")}
	}
	switch node {
	case nodeEvents:
		return dev.telemetry(d)
	case nodeTwin:
		return dev.twinRequest(d)
	case nodeMethods:
		return dev.methodAnswer(d)
	}
	return amqp.Rejected{Error: amqp.Errorf(amqp.CondNotAllowed, "%s takes no messages", l.Address())}
}

func (ac *amqpConn) Detached(l *amqp.Link, _ *amqp.Error) {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	if ac.cbsOut == l {
		ac.cbsOut = nil
	}
	if ac.cbsIn == l {
		ac.cbsIn = nil
	}
	if dev := ac.links[l]; dev != nil {
		delete(dev.nodes, l)
		delete(ac.links, l)
	}
}

func (ac *amqpConn) Closed(err error) {
	ac.f.mu.Lock()
	delete(ac.f.conns, ac)
	ac.f.mu.Unlock()
	cause := "connection closed by the device"
	if err != nil {
		cause = err.Error()
	}
	ac.mu.Lock()
	devs := make([]*amqpDevice, 0, len(ac.devices))
	for _, dev := range ac.devices {
		devs = append(devs, dev)
	}
	ac.devices = map[string]*amqpDevice{}
	ac.mu.Unlock()
	for _, dev := range devs {
		ac.f.hub.detach(dev, cause)
	}
}

// putToken answers a CBS put-token request on the $cbs link the client receives on; the reply's correlation-id is
// the request's message-id in its wire type and its status-code an AMQP int, as every SDK expects. A throttled
// device connection rejects the request itself, as IoT Hub's device-container-throttled outcome does.
func (ac *amqpConn) putToken(d *amqp.Delivery) amqp.DeliveryState {
	h := ac.f.hub
	status, desc := 200, "OK"
	req, err := amqp.UnmarshalMessage(d.Payload)
	if err != nil {
		return amqp.Rejected{Error: amqp.Errorf(amqp.CondDecodeError, "%v", err)}
	}
	op, typ, name := appString(req, "operation"), appString(req, "type"), appString(req, "name")
	token, _ := req.Value.(string)
	id, idOK := audienceIdentity(name)
	switch {
	case op != "put-token":
		status, desc = 400, fmt.Sprintf("unknown CBS operation %q", op)
	case typ != amqpTokenTypeSB && typ != amqpTokenTypeIoTH:
		status, desc = 400, fmt.Sprintf("unknown token type %q", typ)
	case !idOK:
		status, desc = 404, fmt.Sprintf("audience %q names no device of this hub", name)
	default:
		expiry, r := h.verifyToken(id, token)
		if r == nil {
			if _, aerr := ac.authorise(id, expiry); aerr != nil && aerr.Condition == condThrottled {
				return amqp.Rejected{Error: aerr}
			} else if aerr != nil {
				status, desc = 403, aerr.Description
			}
		} else {
			status, desc = 401, r.reason
			switch r.kind {
			case rejectIdentifier, rejectDisabled:
				status = 404
			case rejectUnavailable: // refused for a while by a fault-injection message
				status = 503
			}
			h.events.emit(Event{Kind: EventReject, Device: id.String(), Remote: ac.remote(),
				Reason: "amqp put-token: " + r.reason, Code: -1})
		}
	}
	reply := &amqp.Message{
		Properties:            &amqp.Properties{To: replyTo(req)},
		ApplicationProperties: amqp.Map{{Key: cbsStatusCode, Value: int32(status)}, {Key: cbsStatusDesc, Value: desc}},
	}
	if req.Properties != nil {
		reply.Properties.CorrelationID = req.Properties.MessageID
	}
	ac.mu.Lock()
	out := ac.cbsOut
	ac.mu.Unlock()
	ac.f.mu.Lock()
	dropped := time.Now().Before(ac.f.dropCBSEnd)
	ac.f.mu.Unlock()
	if b, err := reply.Marshal(); err == nil && out != nil && !dropped {
		_ = out.Send(b, amqp.SendOptions{})
	}
	return amqp.Accepted{}
}

func replyTo(m *amqp.Message) string {
	if m.Properties == nil {
		return ""
	}
	return m.Properties.ReplyTo
}

// appString reads an application property as a string ("" when absent or not a string).
func appString(m *amqp.Message, key string) string {
	v, _ := m.ApplicationProperties.Get(key)
	s, _ := v.(string)
	return s
}

// telemetry records a D2C delivery: one message, or each message of a C SDK batch.
func (dev *amqpDevice) telemetry(d *amqp.Delivery) amqp.DeliveryState {
	m, err := amqp.UnmarshalMessage(d.Payload)
	if err != nil {
		return amqp.Rejected{Error: amqp.Errorf(amqp.CondDecodeError, "%v", err)}
	}
	msgs := []*amqp.Message{m}
	if d.Format == amqpBatchFormat {
		msgs = msgs[:0]
		for _, part := range m.Data {
			pm, err := amqp.UnmarshalMessage(part)
			if err != nil {
				return amqp.Rejected{Error: amqp.Errorf(amqp.CondDecodeError, "batched message: %v", err)}
			}
			msgs = append(msgs, pm)
		}
	}
	f := dev.conn.f
	f.mu.Lock()
	rej := f.rejects[dev.id.String()]
	f.mu.Unlock()
	if time.Now().Before(rej.until) {
		return amqp.Rejected{Error: amqp.Errorf(rej.cond, "fault amqp-reject")}
	}
	recs := make([]D2CMessage, 0, len(msgs))
	for _, pm := range msgs {
		rec := d2cFromAMQP(pm)
		if n := rec.size(); n > maxD2CSize {
			return amqp.Rejected{Error: amqp.Errorf(amqp.CondMessageSizeExceeded,
				"message of %d bytes exceeds the 256 KB limit", n)}
		}
		recs = append(recs, rec)
	}
	for _, rec := range recs {
		dev.conn.f.hub.receiveD2C(dev.id, rec)
	}
	return amqp.Accepted{}
}

// d2cFromAMQP makes the record of a telemetry message; application properties and annotations that are not
// strings are recorded in their Go form (IoT Hub itself takes strings only).
func d2cFromAMQP(m *amqp.Message) D2CMessage {
	rec := D2CMessage{Payload: m.Body(), Properties: map[string]string{}, PropertyList: [][2]string{},
		ArrivedAt: time.Now()}
	if p := m.Properties; p != nil {
		rec.MessageID, rec.CorrelationID = idString(p.MessageID), idString(p.CorrelationID)
		rec.ContentType, rec.ContentEncoding = string(p.ContentType), string(p.ContentEncoding)
	}
	for _, e := range m.ApplicationProperties {
		k, v := valueString(e.Key), valueString(e.Value)
		rec.Properties[k] = v
		rec.PropertyList = append(rec.PropertyList, [2]string{k, v})
	}
	if len(m.MessageAnnotations) > 0 {
		rec.Annotations = map[string]string{}
		for _, e := range m.MessageAnnotations {
			rec.Annotations[valueString(e.Key)] = valueString(e.Value)
		}
	}
	return rec
}

// idString renders a message or correlation id of any AMQP id type.
func idString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case amqp.UUID:
		return fmt.Sprintf("%x-%x-%x-%x-%x", v[0:4], v[4:6], v[6:8], v[8:10], v[10:])
	case []byte:
		return fmt.Sprintf("%x", v)
	}
	return valueString(v)
}

func valueString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case amqp.Symbol:
		return string(v)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// drop ends the device on this connection. Faults that concern the connection cut or close it (every device on
// it goes); the others detach only this device's links with IoT Hub's condition and forget its token.
func (dev *amqpDevice) drop(cause dropCause) {
	ac := dev.conn
	switch cause {
	case dropKill:
		ac.hc.kill()
		return
	case dropGraceful:
		ac.c.Close(amqp.Errorf(amqp.CondConnectionForced, "the hub closed the connection"))
		return
	}
	cond := map[dropCause]*amqp.Error{
		dropAuth:     amqp.Errorf(amqp.CondUnauthorized, "the device's token is no longer valid"),
		dropDisabled: amqp.Errorf(amqp.CondNotFound, "device %s is disabled", dev.id),
		dropReplaced: amqp.Errorf(condLinkConflict, "a newer connection of %s took over", dev.id),
	}[cause]
	ac.mu.Lock()
	mine := ac.devices[dev.id.String()] == dev
	if mine {
		delete(ac.devices, dev.id.String())
	}
	ac.mu.Unlock()
	if mine {
		dev.detachLinks(cond)
		ac.f.hub.detach(dev, cond.Description)
	}
}

// detachLinks detaches every link of the device with err.
func (dev *amqpDevice) detachLinks(err *amqp.Error) {
	ac := dev.conn
	ac.mu.Lock()
	links := make([]*amqp.Link, 0, len(dev.nodes))
	for l := range dev.nodes {
		links = append(links, l)
		delete(ac.links, l)
	}
	clear(dev.nodes)
	ac.mu.Unlock()
	for _, l := range links {
		l.Detach(err)
	}
}

// setCredit sets the credit of every link the device sends on.
func (dev *amqpDevice) setCredit(n uint32) {
	ac := dev.conn
	ac.mu.Lock()
	var links []*amqp.Link
	for l := range dev.nodes {
		if l.Receiving() {
			links = append(links, l)
		}
	}
	ac.mu.Unlock()
	for _, l := range links {
		l.SetCredit(n)
	}
}

// amqpFaultOps are the AMQP operations of Azure's SDK end-to-end fault-injection messages; "Req" and "Resp" name
// the direction from the device's side (a twin request goes device to hub, a method request hub to device).
var amqpFaultOps = map[string]bool{"KillAmqpConnection": true, "ShutDownAmqp": true, "KillAmqpSession": true,
	"KillAmqpCBSLinkReq": true, "KillAmqpCBSLinkResp": true, "KillAmqpD2CLink": true, "KillAmqpC2DLink": true,
	"KillAmqpTwinLinkReq": true, "KillAmqpTwinLinkResp": true, "KillAmqpMethodReqLink": true,
	"KillAmqpMethodRespLink": true}

// injected applies an operation of amqpFaultOps: the connection closes with amqp:connection:forced, the session
// of the device's telemetry link ends, or the named link detaches, each with amqp:link:detach-forced otherwise.
func (dev *amqpDevice) injected(op string) {
	ac := dev.conn
	forced := amqp.Errorf(amqp.CondDetachForced, "fault injection %s", op)
	if op == "KillAmqpConnection" || op == "ShutDownAmqp" {
		dev.drop(dropGraceful)
		return
	}
	type pick struct {
		node      amqpNode
		receiving bool // the hub receives on it
	}
	want := map[string]pick{"KillAmqpD2CLink": {nodeEvents, true}, "KillAmqpC2DLink": {nodeC2D, false},
		"KillAmqpTwinLinkReq": {nodeTwin, true}, "KillAmqpTwinLinkResp": {nodeTwin, false},
		"KillAmqpMethodReqLink": {nodeMethods, false}, "KillAmqpMethodRespLink": {nodeMethods, true},
		"KillAmqpSession": {nodeEvents, true}}[op]
	var links []*amqp.Link
	ac.mu.Lock()
	switch op {
	case "KillAmqpCBSLinkReq":
		links = append(links, ac.cbsIn)
	case "KillAmqpCBSLinkResp":
		links = append(links, ac.cbsOut)
	default:
		for l, n := range dev.nodes {
			if n == want.node && l.Receiving() == want.receiving {
				links = append(links, l)
			}
		}
	}
	ac.mu.Unlock()
	for _, l := range links {
		switch {
		case l == nil:
		case op == "KillAmqpSession":
			l.Session().End(forced)
		default:
			l.Detach(forced)
		}
	}
}

// outLink is the device's link the hub sends on for node, nil when it has none.
func (dev *amqpDevice) outLink(node amqpNode) *amqp.Link {
	ac := dev.conn
	ac.mu.Lock()
	defer ac.mu.Unlock()
	for l, n := range dev.nodes {
		if n == node && !l.Receiving() {
			return l
		}
	}
	return nil
}

// send encodes m and queues it on the device's link to node.
func (dev *amqpDevice) send(node amqpNode, m *amqp.Message, opts amqp.SendOptions) error {
	l := dev.outLink(node)
	if l == nil {
		return ErrNotConnected
	}
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	return l.Send(b, opts)
}

func (dev *amqpDevice) listensC2D() bool { return dev.outLink(nodeC2D) != nil }

// sendC2D delivers a C2D message with a 16-byte delivery tag (the SDKs' lock token). Accepted completes it,
// rejected dead-letters it (gone from the queue too), released or modified abandons it: it is delivered again.
func (dev *amqpDevice) sendC2D(m C2DMessage) error {
	props := &amqp.Properties{MessageID: m.MessageID, To: "/devices/" + dev.id.device + "/messages/deviceBound",
		ContentType: amqp.Symbol(m.ContentType), ContentEncoding: amqp.Symbol(m.ContentEncoding)}
	if m.CorrelationID != "" {
		props.CorrelationID = m.CorrelationID
	}
	app := amqp.Map{}
	for _, k := range sortedKeys(m.Properties) {
		app = append(app, amqp.MapEntry{Key: k, Value: m.Properties[k]})
	}
	msg := &amqp.Message{Properties: props, ApplicationProperties: app, Data: [][]byte{m.Payload},
		MessageAnnotations: amqp.Map{{Key: amqp.Symbol("iothub-enqueuedtime"), Value: time.Now()}}}
	tag := make([]byte, 16)
	_, _ = rand.Read(tag)
	h, id := dev.conn.f.hub, dev.id.String()
	return dev.send(nodeC2D, msg, amqp.SendOptions{Tag: tag, OnSettled: func(st amqp.DeliveryState, err error) {
		switch st.(type) {
		case nil:
			if err == nil { // sent pre-settled: at most once, as MQTT QoS 0
				h.c2dCompleted(id, m.MessageID)
			} else { // the link ended first: the message waits for the next one
				h.c2dAbandoned(id, m.MessageID)
			}
		case amqp.Accepted, amqp.Rejected:
			h.c2dCompleted(id, m.MessageID)
		case amqp.Released, amqp.Modified:
			h.c2dAbandoned(id, m.MessageID)
		}
	}})
}

// Twin request annotations and resources (IoT Hub's AMQP twin protocol).
const (
	twinOperation       = "operation"
	twinResource        = "resource"
	twinStatus          = "status"
	twinVersion         = "version"
	twinReportedRes     = "/properties/reported"
	twinDesiredNotifRes = "/notifications/twin/properties/desired"
)

// twinRequest answers a request on the device's twin link: GET, PATCH of reported properties, PUT and DELETE of
// the desired-properties subscription. The response goes to the twin link the device receives on with the
// request's correlation-id, an int status and the version.
func (dev *amqpDevice) twinRequest(d *amqp.Delivery) amqp.DeliveryState {
	req, err := amqp.UnmarshalMessage(d.Payload)
	if err != nil {
		return amqp.Rejected{Error: amqp.Errorf(amqp.CondDecodeError, "%v", err)}
	}
	h := dev.conn.f.hub
	op, _ := req.MessageAnnotations.Get(amqp.Symbol(twinOperation))
	res, _ := req.MessageAnnotations.Get(amqp.Symbol(twinResource))
	status, version, body := 400, 0, []byte(`"unsupported twin operation"`)
	switch op {
	case "GET":
		status, body = 200, h.twinGet(dev.id)
	case "PATCH":
		if res == twinReportedRes {
			status, version, body = h.reportedAnswer(dev.id, req.Body())
		}
	case "PUT", "DELETE":
		if res == twinDesiredNotifRes {
			dev.desired.Store(op == "PUT")
			status, body = 200, nil
			h.events.logf("amqp twin desired-property pushes %s: %s", map[bool]string{true: "on", false: "off"}[op == "PUT"],
				dev.id)
		}
	}
	ann := amqp.Map{{Key: amqp.Symbol(twinStatus), Value: int32(status)}}
	if version > 0 {
		ann = append(ann, amqp.MapEntry{Key: amqp.Symbol(twinVersion), Value: int64(version)})
	}
	reply := &amqp.Message{MessageAnnotations: ann, Data: [][]byte{body}}
	if req.Properties != nil {
		reply.Properties = &amqp.Properties{CorrelationID: req.Properties.CorrelationID}
	}
	_ = dev.send(nodeTwin, reply, amqp.SendOptions{})
	return amqp.Accepted{}
}

// sendDesired pushes a desired-properties patch, without correlation-id, once the device subscribed.
func (dev *amqpDevice) sendDesired(version int, patch []byte) {
	if !dev.desired.Load() {
		return
	}
	_ = dev.send(nodeTwin, &amqp.Message{Data: [][]byte{patch},
		MessageAnnotations: amqp.Map{{Key: amqp.Symbol(twinVersion), Value: int64(version)}}}, amqp.SendOptions{})
}

// Method application properties.
const (
	methodName   = "IoThub-methodname"
	methodStatus = "IoThub-status"
)

// sendMethod sends a method call on the device's methods link; its correlation-id is a uuid (the SDKs turn it
// into a string), remembered to find the call again when the answer comes.
func (dev *amqpDevice) sendMethod(name, rid string, payload []byte) bool {
	var corr amqp.UUID
	_, _ = rand.Read(corr[:])
	dev.conn.mu.Lock()
	dev.methodCalls[corr] = rid
	dev.conn.mu.Unlock()
	err := dev.send(nodeMethods, &amqp.Message{Properties: &amqp.Properties{CorrelationID: corr},
		ApplicationProperties: amqp.Map{{Key: methodName, Value: name}}, Data: [][]byte{payload}}, amqp.SendOptions{})
	if err != nil {
		dev.conn.mu.Lock()
		delete(dev.methodCalls, corr)
		dev.conn.mu.Unlock()
	}
	return err == nil
}

// methodAnswer takes a device's method response: the call's correlation-id (as sent, or as a UUID string or 16
// bytes) and an IoThub-status.
func (dev *amqpDevice) methodAnswer(d *amqp.Delivery) amqp.DeliveryState {
	m, err := amqp.UnmarshalMessage(d.Payload)
	if err != nil || m.Properties == nil {
		return amqp.Rejected{Error: amqp.Errorf(amqp.CondDecodeError, "method response without properties")}
	}
	corr, ok := asUUID(m.Properties.CorrelationID)
	dev.conn.mu.Lock()
	rid, known := dev.methodCalls[corr]
	delete(dev.methodCalls, corr)
	dev.conn.mu.Unlock()
	if !ok || !known {
		return amqp.Rejected{Error: amqp.Errorf(amqp.CondNotFound, "no method call with correlation-id %v",
			m.Properties.CorrelationID)}
	}
	status := 500
	switch v, _ := m.ApplicationProperties.Get(methodStatus); v := v.(type) {
	case int32:
		status = int(v)
	case int64:
		status = int(v)
	case string:
		if n, err := strconv.Atoi(v); err == nil {
			status = n
		}
	}
	dev.conn.f.hub.methodResponse(rid, status, m.Body())
	return amqp.Accepted{}
}

func asUUID(v any) (amqp.UUID, bool) {
	var u amqp.UUID
	switch v := v.(type) {
	case amqp.UUID:
		return v, true
	case []byte:
		if len(v) == 16 {
			copy(u[:], v)
			return u, true
		}
	case string:
		b, err := hex.DecodeString(strings.ReplaceAll(v, "-", ""))
		if err == nil && len(b) == 16 {
			copy(u[:], b)
			return u, true
		}
	}
	return u, false
}
