package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotconn/iotconn/core/internal/notify"
	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
)

// IoT Hub's AMQP link properties, annotations and application properties for twins and methods.
const (
	propAPIVersion   = "com.microsoft:api-version"
	propChannelCorr  = "com.microsoft:channel-correlation-id"
	annOperation     = "operation"
	annResource      = "resource"
	annStatus        = "status"
	annVersion       = "version"
	resReported      = "/properties/reported"
	resDesiredNotify = "/notifications/twin/properties/desired"
	appMethodName    = "IoThub-methodname"
	appMethodStatus  = "IoThub-status"
	// c2dCredit: IoT Hub keeps at most 50 C2D messages per device waiting; the hub may send that many before the
	// application handled one.
	c2dCredit = 50
	// maxInFlight bounds the telemetry handed to go-amqp and not yet settled, per device; past it the writer waits.
	// The hub's link credit (100 on hubsim) usually bounds it first; a pooled connection carries up to 995 of
	// these buffers.
	maxInFlight = 256
)

// device is one device's session on a shared connection: its links, and the goroutines that serve them.
//
// Goroutines, all stopped by the device's end (lose, which Close calls), and waited for by Close: writer hands
// telemetry and requests to go-amqp in order; settler completes telemetry in order as the hub settles it; one
// receive loop per inbound link (C2D, twin, methods); acker settles C2D messages once the application handled
// them. After the end, closer ends the session and leaves the connection.
type device struct {
	s        *shared
	sess     *goamqp.Session
	handler  transport.Handler
	audience string
	events   *goamqp.Sender
	c2d      *goamqp.Receiver
	twinSnd  *goamqp.Sender
	twinRcv  *goamqp.Receiver
	methSnd  *goamqp.Sender
	methRcv  *goamqp.Receiver

	ctx    context.Context // the link's life: cancelled by lose
	cancel context.CancelFunc
	wg     sync.WaitGroup
	acks   chan *goamqp.Message // C2D messages the application handled, to settle
	sent   chan sentSend        // telemetry handed to go-amqp, in order, awaiting the hub's outcome
	wake   chan struct{}        // capacity 1: the queue has work

	mu          sync.Mutex
	queue       []*pendingSend // accepted, not yet handed to go-amqp
	downErr     *transport.Error
	established bool
	closed      bool
}

type pendingSend struct {
	msg  *transport.Message
	req  *transport.Request
	done func(error)
}

type sentSend struct {
	receipt goamqp.SendReceipt
	done    func(error)
}

// Attach authorises p's device on the connection with a put-token, begins its session and attaches the links of
// the features p asks for; the twin's desired-property subscription is answered before it returns.
func (s *shared) Attach(ctx context.Context, p transport.DialParams) (transport.Conn, error) {
	if p.Host == "" || p.DeviceID == "" || p.Handler == nil {
		return nil, &transport.Error{Kind: transport.KindProtocol, Op: "connect",
			Err: errors.New("host, device id and handler are required")}
	}
	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	d := &device{s: s, handler: p.Handler, audience: iothub.ResourceURI(hubHost(p), p.DeviceID, p.ModuleID),
		acks: make(chan *goamqp.Message, c2dCredit), sent: make(chan sentSend, maxInFlight),
		wake: make(chan struct{}, 1)}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if p.Token != "" { // X.509: the TLS handshake authenticated the device
		if err := s.putToken(ctx, "connect", d.audience, p.Token); err != nil {
			d.cancel()
			return nil, err
		}
	}
	if err := d.attachLinks(ctx, p); err != nil {
		d.cancel()
		if d.sess != nil {
			d.closeSession()
		}
		return nil, classify(ctx, "connect", err)
	}
	if !s.register(d) {
		d.cancel()
		d.closeSession()
		return nil, s.ended("connect")
	}
	d.start()
	if err := d.establish(); err != nil { // the connection ended during the attach, unreported
		d.Close()
		return nil, &transport.Error{Kind: err.Kind, Op: "connect", Err: err}
	}
	return d, nil
}

// establish marks the link as handed to the engine, unless it ended already: from now on a loss is reported.
func (d *device) establish() *transport.Error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.downErr != nil {
		return d.downErr
	}
	d.established = true
	return nil
}

// attachLinks begins the session and attaches every link. Addresses are bare paths, as Node's and Java's.
func (d *device) attachLinks(ctx context.Context, p transport.DialParams) error {
	var err error
	if d.sess, err = d.s.conn.NewSession(ctx, nil); err != nil {
		return err
	}
	base := "/devices/" + p.DeviceID
	if p.ModuleID != "" {
		base += "/modules/" + p.ModuleID
	}
	props := map[string]any{propAPIVersion: iothub.APIVersion}
	if d.events, err = d.sess.NewSender(ctx, base+"/messages/events", &goamqp.SenderOptions{
		Properties: props}); err != nil {
		return err
	}
	if p.Features&transport.FeatureC2D != 0 && p.ModuleID == "" {
		if d.c2d, err = d.sess.NewReceiver(ctx, base+"/messages/devicebound", &goamqp.ReceiverOptions{
			Credit: c2dCredit, Properties: props}); err != nil {
			return err
		}
	}
	if p.Features&transport.FeatureTwin != 0 {
		if d.twinSnd, d.twinRcv, err = d.pair(ctx, base+"/twin", "twin:"); err != nil {
			return err
		}
		if err = d.subscribeDesired(ctx); err != nil {
			return err
		}
	}
	if p.Features&transport.FeatureMethods != 0 {
		if d.methSnd, d.methRcv, err = d.pair(ctx, base+"/methods/devicebound", "methods:"); err != nil {
			return err
		}
	}
	return nil
}

// pair attaches the sender and receiver of a request/response node, tied by one channel-correlation-id; the
// sender's transfers go settled, as the SDKs send them (the answer is the acknowledgement that matters).
func (d *device) pair(ctx context.Context, addr, corrPrefix string) (*goamqp.Sender, *goamqp.Receiver, error) {
	props := map[string]any{propAPIVersion: iothub.APIVersion, propChannelCorr: corrPrefix + newUUID()}
	settled := goamqp.SenderSettleModeSettled
	snd, err := d.sess.NewSender(ctx, addr, &goamqp.SenderOptions{Properties: props, SettlementMode: &settled})
	if err != nil {
		return nil, nil, err
	}
	rcv, err := d.sess.NewReceiver(ctx, addr, &goamqp.ReceiverOptions{Credit: 100, Properties: props})
	if err != nil {
		return nil, nil, err
	}
	return snd, rcv, nil
}

// subscribeDesired asks for desired-property pushes and waits for the answer: nothing else can arrive on the twin
// link before it.
func (d *device) subscribeDesired(ctx context.Context) error {
	m := twinMessage("PUT", resDesiredNotify, newUUID(), nil)
	if err := d.twinSnd.Send(ctx, m, nil); err != nil {
		return err
	}
	reply, err := d.twinRcv.Receive(ctx, nil)
	if err != nil {
		return err
	}
	_ = d.twinRcv.AcceptMessage(ctx, reply)
	if st := intAnnotation(reply, annStatus); st < 200 || st > 299 {
		return &transport.Error{Kind: transport.KindProtocol, Op: "subscribe",
			Err: fmt.Errorf("the desired-property subscription was answered %d", st)}
	}
	return nil
}

func (d *device) start() {
	d.wg.Add(2)
	go d.writer()
	go d.settler()
	if d.c2d != nil {
		d.wg.Add(2)
		go d.receive(d.c2d, d.onC2D)
		go d.acker()
	}
	if d.twinRcv != nil {
		d.wg.Add(1)
		go d.receive(d.twinRcv, d.onTwin)
	}
	if d.methRcv != nil {
		d.wg.Add(1)
		go d.receive(d.methRcv, d.onMethod)
	}
}

// Send queues m and returns at once; done gets nil once the hub accepted it.
func (d *device) Send(m *transport.Message, done func(error)) {
	if m == nil {
		done(&transport.Error{Kind: transport.KindProtocol, Op: "send", Err: errors.New("nil message")})
		return
	}
	d.enqueue(&pendingSend{msg: m, done: done})
}

// Request queues r behind the sends before it; done gets nil once it was written.
func (d *device) Request(r *transport.Request, done func(error)) {
	switch {
	case r == nil:
		done(&transport.Error{Kind: transport.KindProtocol, Op: "request", Err: errors.New("nil request")})
		return
	case r.Kind == transport.RequestMethodResponse && d.methSnd == nil, r.Kind != transport.RequestMethodResponse && d.twinSnd == nil:
		done(&transport.Error{Kind: transport.KindProtocol, Op: "request",
			Err: errors.New("the link was made without the feature this request needs")})
		return
	}
	d.enqueue(&pendingSend{req: r, done: done})
}

func (d *device) enqueue(ps *pendingSend) {
	d.mu.Lock()
	if d.downErr != nil {
		err := d.sendErrLocked()
		d.mu.Unlock()
		ps.done(err)
		return
	}
	d.queue = append(d.queue, ps)
	d.mu.Unlock()
	notify.Raise(d.wake)
}

func (d *device) sendErrLocked() *transport.Error {
	return &transport.Error{Kind: d.downErr.Kind, Op: "send", Err: d.downErr}
}

// writer hands queued sends and requests to go-amqp in order: telemetry unsettled (the settler waits for the
// hub's outcome), requests settled. At the link's end it fails what is still queued.
func (d *device) writer() {
	defer d.wg.Done()
	defer close(d.sent)
	for {
		d.mu.Lock()
		batch := d.queue
		d.queue = nil
		down := d.downErr != nil
		d.mu.Unlock()
		if down {
			d.failAll(batch)
			return
		}
		for i, ps := range batch {
			if err := d.write(ps); err != nil {
				d.lose(err)
				ps.done(err)
				d.failAll(batch[i+1:])
				break
			}
		}
		select {
		case <-d.wake:
		case <-d.ctx.Done():
		}
	}
}

// write hands one send or request to go-amqp; an error ends the link.
func (d *device) write(ps *pendingSend) *transport.Error {
	if ps.req != nil {
		snd, m := d.requestMessage(ps.req)
		if err := snd.Send(d.ctx, m, nil); err != nil {
			return d.linkError("request", err)
		}
		ps.done(nil)
		return nil
	}
	r, err := d.events.SendWithReceipt(d.ctx, telemetryMessage(ps.msg), nil)
	if err != nil {
		return d.linkError("send", err)
	}
	d.sent <- sentSend{receipt: r, done: ps.done} // blocks while maxInFlight wait: the link's back-pressure
	return nil
}

// linkError is the error of an operation that failed on the link: the link's end when it ended first.
func (d *device) linkError(op string, err error) *transport.Error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.downErr != nil {
		return d.sendErrLocked()
	}
	return onLiveLink(classify(nil, op, err))
}

func (d *device) failAll(rest []*pendingSend) {
	if len(rest) == 0 {
		return
	}
	d.mu.Lock()
	err := d.sendErrLocked()
	d.mu.Unlock()
	for _, ps := range rest {
		ps.done(err)
	}
}

// settler completes telemetry in send order with the hub's outcome. A rejection ends the link with the hub's
// condition (throttled, quota, ...): the engine sends the message again on the next link, on its schedule.
func (d *device) settler() {
	defer d.wg.Done()
	for ss := range d.sent {
		st, err := ss.receipt.Wait(d.ctx)
		if rej, ok := st.(*goamqp.StateRejected); ok && err == nil {
			err = rej.Error
			if err == nil {
				err = errors.New("the hub rejected the message without an error")
			}
		}
		if err == nil {
			ss.done(nil)
			continue
		}
		te := d.linkError("send", err)
		d.lose(te)
		ss.done(te)
	}
}

// receive runs one inbound link until the device's end; a link the hub detaches ends the device.
func (d *device) receive(r *goamqp.Receiver, handle func(*goamqp.Message)) {
	defer d.wg.Done()
	for {
		m, err := r.Receive(d.ctx, nil)
		if err != nil {
			d.lose(d.linkError("connection lost", err))
			return
		}
		handle(m)
	}
}

// onC2D hands a C2D message to the engine; it is accepted once the application's handler returned (Ack), so a
// message whose handler never ran is delivered again after a lost link.
func (d *device) onC2D(m *goamqp.Message) {
	out := &transport.Message{Payload: body(m), Ack: func() {
		select {
		case d.acks <- m:
		default: // more acks than credit cannot happen; a lost one is redelivered by the hub
		}
	}}
	if p := m.Properties; p != nil {
		out.MessageID, out.CorrelationID = idString(p.MessageID), idString(p.CorrelationID)
		if p.ContentType != nil {
			out.ContentType = *p.ContentType
		}
		if p.ContentEncoding != nil {
			out.ContentEncoding = *p.ContentEncoding
		}
	}
	keys := make([]string, 0, len(m.ApplicationProperties))
	for k := range m.ApplicationProperties {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a map has no order; sorted, a message reads the same every time
	for _, k := range keys {
		out.Properties = append(out.Properties, [2]string{k, valueString(m.ApplicationProperties[k])})
	}
	d.handler.OnMessage(out)
}

// acker settles handled C2D messages until the device's end; those left are released by the link's end.
func (d *device) acker() {
	defer d.wg.Done()
	for {
		select {
		case m := <-d.acks:
			if err := d.c2d.AcceptMessage(d.ctx, m); err != nil {
				return // the link ended: the receive loop reports it
			}
		case <-d.ctx.Done():
			return
		}
	}
}

// onTwin hands a twin answer (it has a correlation-id) or a desired-property push (it has none) to the engine.
func (d *device) onTwin(m *goamqp.Message) {
	_ = d.twinRcv.AcceptMessage(d.ctx, m)
	in := &transport.Inbound{Kind: transport.InboundDesired, Version: int64(intAnnotation(m, annVersion)),
		Payload: body(m)}
	if rid := idString(correlation(m)); rid != "" {
		in.Kind, in.RID, in.Status = transport.InboundTwinResponse, rid, intAnnotation(m, annStatus)
	}
	d.handler.OnInbound(in)
}

// onMethod hands a method call to the engine; its request id is the call's correlation-id as a string (IoT Hub
// sends a uuid), which the answer carries back.
func (d *device) onMethod(m *goamqp.Message) {
	_ = d.methRcv.AcceptMessage(d.ctx, m)
	name, _ := m.ApplicationProperties[appMethodName].(string)
	rid := idString(correlation(m))
	if name == "" || rid == "" {
		return // no call the engine could answer
	}
	d.handler.OnInbound(&transport.Inbound{Kind: transport.InboundMethod, Method: name, RID: rid, Payload: body(m)})
}

// lose ends the link once: the session closes, what waits fails, and the handler hears of it unless Close
// caused it or Attach had not returned the link yet.
func (d *device) lose(err *transport.Error) {
	d.mu.Lock()
	if d.downErr != nil {
		d.mu.Unlock()
		return
	}
	d.downErr = err
	report := d.established && !d.closed
	d.wg.Add(1) // before cancel: the goroutines cancel ends must not bring the count to 0 while Close waits
	d.mu.Unlock()
	d.cancel()
	go func() { // the session's end waits for the hub; the caller may be one of the device's goroutines
		defer d.wg.Done()
		d.closeSession()
	}()
	if report {
		d.handler.OnConnectionLost(err)
	}
}

func (d *device) closeSession() {
	d.s.unregister(d)
	ctx, cancel := context.WithTimeout(context.Background(), closeWait)
	defer cancel()
	_ = d.sess.Close(ctx)
}

// RenewToken puts the new token on the device's connection: the session and its links stay up.
func (d *device) RenewToken(ctx context.Context, token string) error {
	d.mu.Lock()
	down := d.downErr
	d.mu.Unlock()
	if down != nil {
		return &transport.Error{Kind: down.Kind, Op: "renew", Err: down}
	}
	return d.s.putToken(ctx, "renew", d.audience, token)
}

// Close ends the session and waits for the device's goroutines; pending sends fail with KindProtocol.
func (d *device) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.lose(&transport.Error{Kind: transport.KindProtocol, Op: "close", Err: errors.New("connection closed")})
	d.wg.Wait()
	return nil
}

// telemetryMessage carries m's system properties in the AMQP properties and its application properties as
// strings, as IoT Hub takes them.
func telemetryMessage(m *transport.Message) *goamqp.Message {
	out := goamqp.NewMessage(m.Payload)
	props := &goamqp.MessageProperties{}
	if m.MessageID != "" {
		props.MessageID = m.MessageID
	}
	if m.CorrelationID != "" {
		props.CorrelationID = m.CorrelationID
	}
	if m.ContentType != "" {
		props.ContentType = &m.ContentType
	}
	if m.ContentEncoding != "" {
		props.ContentEncoding = &m.ContentEncoding
	}
	out.Properties = props
	if len(m.Properties) > 0 {
		out.ApplicationProperties = make(map[string]any, len(m.Properties))
		for _, p := range m.Properties {
			out.ApplicationProperties[p[0]] = p[1]
		}
	}
	return out
}

// requestMessage is the link and message of a twin or method request.
func (d *device) requestMessage(r *transport.Request) (*goamqp.Sender, *goamqp.Message) {
	switch r.Kind {
	case transport.RequestTwinGet:
		return d.twinSnd, twinMessage("GET", "", r.RID, nil)
	case transport.RequestTwinReport:
		return d.twinSnd, twinMessage("PATCH", resReported, r.RID, r.Payload)
	}
	m := goamqp.NewMessage(r.Payload)
	m.Properties = &goamqp.MessageProperties{CorrelationID: methodCorrelation(r.RID)}
	m.ApplicationProperties = map[string]any{appMethodStatus: int32(r.Status)}
	return d.methSnd, m
}

func twinMessage(op, resource, rid string, payload []byte) *goamqp.Message {
	if payload == nil {
		payload = []byte(" ") // as the C SDK: IoT Hub wants a body
	}
	m := goamqp.NewMessage(payload)
	m.Properties = &goamqp.MessageProperties{CorrelationID: rid}
	m.Annotations = goamqp.Annotations{annOperation: op}
	if resource != "" {
		m.Annotations[annResource] = resource
	}
	return m
}

// methodCorrelation gives a method call's id back in the type the hub sent: a uuid, or the string.
func methodCorrelation(rid string) any {
	if b, err := hex.DecodeString(strings.ReplaceAll(rid, "-", "")); err == nil && len(b) == 16 && len(rid) == 36 {
		return goamqp.UUID(b)
	}
	return rid
}

func body(m *goamqp.Message) []byte {
	if len(m.Data) == 1 {
		return m.Data[0]
	}
	var b []byte
	for _, part := range m.Data {
		b = append(b, part...)
	}
	if b == nil {
		if s, ok := m.Value.(string); ok {
			b = []byte(s)
		}
	}
	return b
}

// intAnnotation reads an integer annotation; decoded keys are symbols.
func intAnnotation(m *goamqp.Message, key string) int {
	v, ok := m.Annotations[goamqp.Symbol(key)]
	if !ok {
		v = m.Annotations[key]
	}
	switch v := v.(type) {
	case int32:
		return int(v)
	case int64:
		return int(v)
	case int:
		return v
	}
	return 0
}

// idString renders a message or correlation id of any AMQP id type; a uuid in its canonical form.
func idString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case goamqp.UUID:
		return v.String()
	case []byte:
		return hex.EncodeToString(v)
	}
	return valueString(v)
}

func valueString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

func newUUID() string {
	var u goamqp.UUID
	_, _ = rand.Read(u[:])
	u[6], u[8] = u[6]&0x0f|0x40, u[8]&0x3f|0x80
	return u.String()
}
