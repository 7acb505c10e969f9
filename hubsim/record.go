package hubsim

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// D2CMessage is one device-to-cloud message as the hub received it.
type D2CMessage struct {
	Payload         []byte
	MessageID       string
	CorrelationID   string
	ContentType     string
	ContentEncoding string
	Properties      map[string]string // application properties by name (a repeated name keeps its last value)
	PropertyList    [][2]string       // application properties in wire order, repeats included
	Annotations     map[string]string // AMQP message annotations (iothub-interface-id, ...); nil over MQTT
	ArrivedAt       time.Time
}

// size is the message's size as IoT Hub counts it against its limit: the body, the values of the system
// properties and the names and values of the application properties.
func (m *D2CMessage) size() int {
	n := len(m.Payload) + len(m.MessageID) + len(m.CorrelationID) + len(m.ContentType) + len(m.ContentEncoding)
	for _, p := range m.PropertyList {
		n += len(p[0]) + len(p[1])
	}
	return n
}

// recorder keeps every D2C message per identity and wakes waiters when one arrives.
type recorder struct {
	mu      sync.Mutex
	msgs    map[string][]D2CMessage
	arrived chan struct{} // closed and replaced on every message
}

func newRecorder() *recorder {
	return &recorder{msgs: map[string][]D2CMessage{}, arrived: make(chan struct{})}
}

func (r *recorder) add(id string, m D2CMessage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs[id] = append(r.msgs[id], m)
	close(r.arrived)
	r.arrived = make(chan struct{})
}

func (r *recorder) list(id string) []D2CMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]D2CMessage(nil), r.msgs[id]...)
}

func (r *recorder) wait(ctx context.Context, id string, n int) ([]D2CMessage, error) {
	for {
		r.mu.Lock()
		got := append([]D2CMessage(nil), r.msgs[id]...)
		arrived := r.arrived
		r.mu.Unlock()
		if len(got) >= n {
			return got, nil
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			return got, fmt.Errorf("%d of %d messages from %s: %w", len(got), n, id, ctx.Err())
		}
	}
}

// EventKind is what happened on the hub.
type EventKind string

// Event kinds.
const (
	EventConnect    EventKind = "connect"
	EventDisconnect EventKind = "disconnect"
	EventReject     EventKind = "reject"
	EventRenew      EventKind = "renew" // a live connection's token renewed in place (AMQP put-token)
	EventFault      EventKind = "fault"
)

// Event is a connect, disconnect, reject, renewal or fault. Code is the CONNACK return code sent with an MQTT
// reject, -1 when the connection was closed without one and for AMQP rejects (the reason says what was answered).
type Event struct {
	Kind   EventKind
	Device string
	Remote string
	Reason string
	Code   int
	Time   time.Time
}

func (e Event) String() string {
	var b strings.Builder
	b.WriteString(string(e.Kind))
	if e.Device != "" {
		b.WriteString(" " + e.Device)
	}
	if e.Remote != "" {
		b.WriteString(" from " + e.Remote)
	}
	if e.Kind == EventReject {
		if e.Code >= 0 {
			fmt.Fprintf(&b, " connack %d", e.Code)
		} else {
			b.WriteString(" no connack")
		}
	}
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	return b.String()
}

// eventBufferSize bounds each subscriber's queue; a subscriber that falls this far behind loses events.
const eventBufferSize = 1024

// eventBus fans events out to subscribers and writes each as one log line.
type eventBus struct {
	mu   sync.Mutex
	log  io.Writer
	subs map[chan Event]struct{}
}

func newEventBus(log io.Writer) *eventBus {
	if log == nil {
		log = io.Discard
	}
	return &eventBus{log: log, subs: map[chan Event]struct{}{}}
}

func (b *eventBus) emit(e Event) {
	e.Time = time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprintf(b.log, "hubsim: %s\n", e)
	for ch := range b.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// logf writes a log line that is not an event (listener moves, errors).
func (b *eventBus) logf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprintf(b.log, "hubsim: "+format+"\n", args...)
}

func (b *eventBus) subscribe() (<-chan Event, func()) {
	ch := make(chan Event, eventBufferSize)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, ch)
			b.mu.Unlock()
		})
	}
}
