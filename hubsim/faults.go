package hubsim

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Telemetry application properties of Azure's SDK end-to-end fault injection.
const (
	faultPropType        = "AzIoTHub_FaultOperationType"
	faultPropDelaySecs   = "AzIoTHub_FaultOperationDelayInSecs"
	faultPropDurationSec = "AzIoTHub_FaultOperationDurationInSecs"
)

// FaultKind names a fault; the strings are also the control API's "kind" values.
type FaultKind string

// Fault kinds.
const (
	FaultKillTCP          FaultKind = "kill-tcp"          // cut a device's TCP connection (all when Device is ""), no goodbye
	FaultShutdownListener FaultKind = "shutdown-listener" // close listeners and connections cleanly; reopen after Duration
	FaultHubDown          FaultKind = "hub-down"          // cut every connection and refuse connects for Duration
	FaultBlackhole        FaultKind = "blackhole"         // accept but never answer, and stall live traffic, for Duration
	FaultThrottle         FaultKind = "throttle"          // allow Rate connects per second (0 lifts it), for Duration or until changed
	FaultExpireToken      FaultKind = "expire-token"      // treat the device's token as expired now: drop its connection
	FaultRotateKey        FaultKind = "rotate-key"        // give the device new keys and drop its connection
	FaultDisableDevice    FaultKind = "disable-device"    // disable the device and drop its connection
	FaultMovePort         FaultKind = "move-port"         // move Listener (default the TLS MQTT one) to Addr ("" = a free port)
	FaultRestart          FaultKind = "restart"           // restart the hub: drop everything, reload the registry, reopen
	// FaultFailover closes every connection; for Duration AMQP opens are answered with
	// com.microsoft:iot-hub-not-found-error and MQTT connects with CONNACK 3; then it accepts again. With Addr,
	// Listener (default the AMQP TLS one, or the MQTT one without AMQP) opens there at once and its old address
	// answers as above until Duration has passed, then refuses: a hub failing over to another address, whose
	// name re-resolves there while clients' stale lookups still reach the old one.
	FaultFailover FaultKind = "failover"
)

// AMQP-only faults; Condition is an AMQP error condition.
const (
	// FaultAMQPDetach detaches Device's links with Condition (default amqp:link:detach-forced).
	FaultAMQPDetach FaultKind = "amqp-detach"
	// FaultAMQPReject rejects Device's telemetry with Condition for Duration.
	FaultAMQPReject FaultKind = "amqp-reject"
	// FaultAMQPWithholdCredit takes back the credit of Device's links and grants none for Duration.
	FaultAMQPWithholdCredit FaultKind = "amqp-withhold-credit"
	// FaultAMQPDropCBS applies put-tokens but sends no reply, for Duration.
	FaultAMQPDropCBS FaultKind = "amqp-drop-cbs"
	// FaultAMQPClose closes Device's AMQP connection (every one when Device is "") with amqp:connection:forced.
	FaultAMQPClose FaultKind = "amqp-close"
)

// ThrottleAnswer is how the throttle fault refuses a connect over its budget. IoT Hub does not document its
// answer on MQTT: it closes the connection, and may answer CONNACK 3 "server unavailable", which it also answers a
// disabled device; hubsim offers both, so a client's handling of each can be tested.
type ThrottleAnswer string

// Throttle answers; the strings are also the control API's "answer" values.
const (
	ThrottleClose             ThrottleAnswer = "close"              // close without CONNACK (the default)
	ThrottleServerUnavailable ThrottleAnswer = "server-unavailable" // CONNACK 3
)

// Fault is one fault to inject.
type Fault struct {
	Kind      FaultKind
	Device    string
	Duration  time.Duration
	Rate      int
	Addr      string
	Listener  string         // move-port and failover: which listener moves ("mqtts", "ws", "amqps", "amqpws")
	Answer    ThrottleAnswer // throttle only: "" is ThrottleClose
	Condition string         // amqp-detach and amqp-reject: the AMQP error condition
}

// Fault injects f. Timed faults return at once and end on their own; Close ends them early.
func (h *Hub) Fault(f Fault) error {
	select {
	case <-h.done:
		return ErrClosed
	default:
	}
	if f.Duration < 0 || f.Rate < 0 {
		return errors.New("fault duration and rate must not be negative")
	}
	switch {
	case f.Answer != "" && f.Kind != FaultThrottle:
		return fmt.Errorf("an answer applies to the throttle fault only, not %q", f.Kind)
	case f.Answer == "":
		f.Answer = ThrottleClose
	case f.Answer != ThrottleClose && f.Answer != ThrottleServerUnavailable:
		return fmt.Errorf("unknown throttle answer %q (want %q or %q)", f.Answer, ThrottleClose,
			ThrottleServerUnavailable)
	}
	if err := h.applyFault(f); err != nil {
		return err
	}
	addr := h.Addr()
	if l, err := h.movedListener(f); err == nil && l != nil {
		addr = l.address()
	}
	h.events.emit(Event{Kind: EventFault, Device: f.Device, Reason: describeFault(f, addr)})
	return nil
}

// movedListener is the listener f moves: Listener by name for move-port and failover (nil for failover without
// Addr); by default the TLS MQTT one for move-port, the AMQP TLS one (else the MQTT one) for failover.
func (h *Hub) movedListener(f Fault) (*listener, error) {
	switch {
	case f.Kind != FaultMovePort && f.Kind != FaultFailover:
		if f.Listener != "" {
			return nil, fmt.Errorf("a listener applies to move-port and failover only, not %q", f.Kind)
		}
		return nil, nil
	case f.Kind == FaultFailover && f.Addr == "":
		return nil, nil
	case f.Listener == "" && f.Kind == FaultFailover && h.amqps != nil:
		return h.amqps, nil
	case f.Listener == "":
		return h.mqtts, nil
	}
	for _, l := range h.listeners() {
		if l.name == f.Listener {
			return l, nil
		}
	}
	if f.Listener == "amqpws" && h.cfg.AMQPWSAddr != "" && h.cfg.AMQPWSAddr == h.cfg.WSAddr {
		return h.ws, nil // one WebSocket listener serves MQTT and AMQP
	}
	return nil, fmt.Errorf("no %q listener (want one of mqtts, tcp, ws, amqps, amqpws that is on)", f.Listener)
}

func describeFault(f Fault, addr string) string {
	s := string(f.Kind)
	if f.Duration > 0 {
		s += " for " + f.Duration.String()
	}
	switch f.Kind {
	case FaultThrottle:
		s += fmt.Sprintf(" at %d connects/s, answered %s", f.Rate, f.Answer)
	case FaultMovePort:
		s += " to " + addr
	case FaultFailover:
		if f.Addr != "" {
			s += " to " + addr
		}
	}
	if f.Condition != "" {
		s += " with " + f.Condition
	}
	return s
}

func (h *Hub) applyFault(f Fault) error {
	if _, err := h.movedListener(f); err != nil {
		return err
	}
	needDevice := func() (*session, error) {
		if _, err := h.Device(f.Device); err != nil {
			return nil, err
		}
		return h.sessionOf(f.Device), nil
	}
	switch f.Kind {
	case FaultKillTCP:
		if f.Device == "" {
			h.killConns(false)
			return nil
		}
		s, err := needDevice()
		if err != nil {
			return err
		}
		if s == nil {
			return fmt.Errorf("%w: %s", ErrNotConnected, f.Device)
		}
		h.dropSession(s, "fault kill-tcp", dropKill)
	case FaultExpireToken:
		s, err := needDevice()
		if err != nil {
			return err
		}
		if s == nil {
			return fmt.Errorf("%w: %s", ErrNotConnected, f.Device)
		}
		h.dropSession(s, "sas token expired (fault expire-token)", dropAuth)
	case FaultRotateKey:
		return h.rotateKey(f.Device)
	case FaultDisableDevice:
		return h.SetDeviceEnabled(f.Device, false)
	case FaultThrottle:
		var until time.Time
		if f.Duration > 0 {
			until = time.Now().Add(f.Duration)
		}
		h.gate.setThrottle(f.Rate, until, f.Answer)
	case FaultBlackhole:
		if f.Duration <= 0 {
			return errors.New("blackhole needs a duration")
		}
		h.gate.startBlackhole()
		h.after(f.Duration, func() {
			h.gate.endBlackhole()
			h.events.emit(Event{Kind: EventFault, Reason: "blackhole ended"})
		})
	case FaultHubDown:
		if f.Duration <= 0 {
			return errors.New("hub-down needs a duration")
		}
		h.stopListeners(false)
		h.after(f.Duration, h.reopenListeners)
	case FaultShutdownListener:
		h.stopListeners(true)
		if f.Duration == 0 {
			h.reopenListeners()
		} else {
			h.after(f.Duration, h.reopenListeners)
		}
	case FaultMovePort:
		l, err := h.movedListener(f)
		if err != nil {
			return err
		}
		return h.movePort(l, f.Addr)
	case FaultRestart:
		return h.restart()
	case FaultFailover:
		return h.failover(f)
	case FaultAMQPDetach, FaultAMQPReject, FaultAMQPWithholdCredit, FaultAMQPDropCBS, FaultAMQPClose:
		return h.amqp.fault(f)
	default:
		return fmt.Errorf("unknown fault kind %q", f.Kind)
	}
	return nil
}

// after runs fn once d has passed, unless the hub closes first.
func (h *server) after(d time.Duration, fn func()) {
	h.spawn(func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			fn()
		case <-h.done:
		}
	})
}

func (h *Hub) listeners() []*listener {
	var out []*listener
	for _, l := range []*listener{h.mqtts, h.tcp, h.ws, h.amqps, h.amqpws} {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}

// stopListeners closes every device listener and connection.
func (h *Hub) stopListeners(graceful bool) {
	h.opMu.Lock()
	defer h.opMu.Unlock()
	h.stop(h.listeners(), graceful)
}

// reopenListeners ends hub-down and shutdown-listener; the fault event tells waiters the hub is back.
func (h *Hub) reopenListeners() {
	h.opMu.Lock()
	defer h.opMu.Unlock()
	h.reopen(h.listeners(), h.events)
}

// movePort moves a listener, as a failover to another hub address would, resetting its connections.
func (h *Hub) movePort(l *listener, addr string) error {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	h.opMu.Lock()
	defer h.opMu.Unlock()
	old := l.address()
	l.shut()
	h.killConns(false, l.name)
	l.addr.Store(addr)
	if err := h.open(l); err != nil {
		l.addr.Store(old)
		if reopenErr := h.open(l); reopenErr != nil {
			h.events.logf("reopening %s listener on %s: %v", l.name, old, reopenErr)
		}
		return fmt.Errorf("moving the %s listener to %s: %w", l.name, addr, err)
	}
	return nil
}

// failover cuts every connection and answers connects as a hub failing over does until f.Duration has passed.
// With f.Addr the listener opens there at once; its old socket keeps answering until the end, then closes.
func (h *Hub) failover(f Fault) error {
	if f.Duration <= 0 {
		return errors.New("failover needs a duration")
	}
	l, err := h.movedListener(f)
	if err != nil {
		return err
	}
	h.gate.setFailover(time.Now().Add(f.Duration))
	h.killConns(false)
	var old net.Listener
	if l != nil {
		if old, err = h.moveKeepingOld(l, f.Addr); err != nil {
			return err
		}
	}
	started := h.spawn(func() {
		t := time.NewTimer(f.Duration)
		defer t.Stop()
		select {
		case <-t.C:
		case <-h.done:
		}
		if old != nil {
			_ = old.Close() // ends its accept loop; what it accepted was refused or is served on
		}
		select {
		case <-h.done:
		default:
			h.events.emit(Event{Kind: EventFault, Reason: "failover ended"})
		}
	})
	if !started && old != nil {
		_ = old.Close() // the hub is closing: nothing else would end its accept loop
	}
	return nil
}

// moveKeepingOld opens l on addr and returns its previous socket still open, its accept loop still serving.
func (h *Hub) moveKeepingOld(l *listener, addr string) (net.Listener, error) {
	h.opMu.Lock()
	defer h.opMu.Unlock()
	prevAddr := l.address()
	l.mu.Lock()
	old := l.ln
	l.ln = nil
	l.mu.Unlock()
	l.addr.Store(addr)
	if err := h.open(l); err != nil {
		l.mu.Lock()
		l.ln = old
		l.mu.Unlock()
		l.addr.Store(prevAddr)
		return nil, fmt.Errorf("moving the %s listener to %s: %w", l.name, addr, err)
	}
	return old, nil
}

// restart drops every connection and MQTT session, reloads the registry from disk and reopens on the same ports.
// Recorded telemetry and queued C2D messages survive, as IoT Hub's do.
func (h *Hub) restart() error {
	h.opMu.Lock()
	defer h.opMu.Unlock()
	for _, l := range h.listeners() {
		l.shut()
	}
	h.killConns(false)
	h.mu.Lock()
	err := h.reg.reload()
	h.mu.Unlock()
	if err != nil {
		return err
	}
	if err := h.mqtt.reset(); err != nil {
		return err
	}
	for _, l := range h.listeners() {
		if err := h.open(l); err != nil {
			return fmt.Errorf("reopening %s listener on %s: %w", l.name, l.address(), err)
		}
	}
	return nil
}

// injectFromMessage honours the fault-injection properties Azure's SDK end-to-end tests send in telemetry: after
// DelayInSecs the device's connection is cut (KillTcp) or closed cleanly (ShutDownMqtt), or over AMQP the
// connection, a session or a link of the device is closed (KillAmqp..., ShutDownAmqp), and its connects are
// refused for DurationInSecs.
func (h *Hub) injectFromMessage(id string, props map[string]string) {
	op := props[faultPropType]
	cause := dropKill
	switch {
	case op == "KillTcp":
	case op == "ShutDownMqtt":
		cause = dropGraceful
	case amqpFaultOps[op]:
	default:
		h.events.logf("fault injection %s from %s ignored: not a fault hubsim knows", op, id)
		return
	}
	delay := secondsProp(props[faultPropDelaySecs])
	duration := secondsProp(props[faultPropDurationSec])
	h.events.emit(Event{Kind: EventFault, Device: id, Reason: fmt.Sprintf("%s requested by message (delay %s, duration %s)", op, delay, duration)})
	h.after(delay, func() {
		h.mu.Lock()
		h.refused[id] = time.Now().Add(duration)
		s := h.sessions[id]
		h.mu.Unlock()
		if s == nil {
			return
		}
		if !amqpFaultOps[op] {
			h.dropSession(s, "fault injection "+op, cause)
		} else if dev, ok := s.link.(*amqpDevice); ok {
			dev.injected(op)
		} else {
			h.events.logf("fault injection %s on %s ignored: the device is not on AMQP", op, id)
		}
	})
}

func secondsProp(v string) time.Duration {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}
