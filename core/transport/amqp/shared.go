package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotconn/iotconn/core/transport"
)

// CBS (claims-based security) names, as IoT Hub and the SDKs use them.
const (
	cbsAddress   = "$cbs"
	cbsReplyTo   = "cbs"
	cbsTokenType = "servicebus.windows.net:sastoken"
)

// shared is one AMQP connection with its CBS links, carrying the sessions of any number of devices.
//
// Goroutines, both stopped by the connection's end (which Close causes): cbsReader takes put-token replies;
// watch waits for the end, then closes done and fails every device on the connection.
type shared struct {
	conn   *goamqp.Conn
	cbsSnd *goamqp.Sender
	cbsRcv *goamqp.Receiver
	done   chan struct{} // closed when the connection ended; endErr is set before
	wg     sync.WaitGroup

	mu      sync.Mutex
	endErr  *transport.Error
	nextID  uint64
	waiting map[uint64]chan cbsReply // put-tokens awaiting their reply, by message-id
	devices map[*device]struct{}
}

type cbsReply struct {
	status int32
	desc   string
}

// newShared attaches the $cbs links on a session of their own, as .NET and Java do; it closes ac on failure.
func newShared(ctx context.Context, ac *goamqp.Conn) (*shared, error) {
	fail := func(err error) (*shared, error) {
		ac.Close()
		return nil, classify(ctx, "connect", err)
	}
	sess, err := ac.NewSession(ctx, nil)
	if err != nil {
		return fail(err)
	}
	snd, err := sess.NewSender(ctx, cbsAddress, nil)
	if err != nil {
		return fail(err)
	}
	rcv, err := sess.NewReceiver(ctx, cbsAddress, &goamqp.ReceiverOptions{Credit: 100})
	if err != nil {
		return fail(err)
	}
	s := &shared{conn: ac, cbsSnd: snd, cbsRcv: rcv, done: make(chan struct{}), waiting: map[uint64]chan cbsReply{},
		devices: map[*device]struct{}{}}
	s.wg.Add(2)
	go s.cbsReader()
	go s.watch()
	return s, nil
}

func (s *shared) Done() <-chan struct{} { return s.done }

// Close closes the connection; its devices, if any are left, report the loss.
func (s *shared) Close() error {
	s.conn.Close() // bounded by go-amqp's write timeout; ends the reader and the watcher
	s.wg.Wait()
	return nil
}

// watch waits for the connection's end, then fails everything on it: Done first, so that a device redialling
// from its report finds the connection gone.
func (s *shared) watch() {
	defer s.wg.Done()
	<-s.conn.Done()
	err := onLiveLink(classify(nil, "connection lost", s.conn.Err()))
	s.mu.Lock()
	s.endErr = err
	devs := s.devices
	s.devices = nil
	s.mu.Unlock()
	close(s.done)
	for d := range devs {
		d.lose(err)
	}
}

// cbsReader hands each put-token reply to its waiter. It ends with the connection.
func (s *shared) cbsReader() {
	defer s.wg.Done()
	ctx := context.Background() // the receive ends with the connection
	for {
		m, err := s.cbsRcv.Receive(ctx, nil)
		if err != nil {
			return
		}
		_ = s.cbsRcv.AcceptMessage(ctx, m)
		id, ok := correlation(m).(uint64)
		if !ok {
			continue // not ours: nothing waits for it
		}
		r := cbsReply{desc: fmt.Sprint(m.ApplicationProperties["status-description"])}
		switch v := m.ApplicationProperties["status-code"].(type) {
		case int32:
			r.status = v
		case int64:
			r.status = int32(v)
		}
		s.mu.Lock()
		ch := s.waiting[id]
		delete(s.waiting, id)
		s.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

func correlation(m *goamqp.Message) any {
	if m.Properties == nil {
		return nil
	}
	return m.Properties.CorrelationID
}

// errConnEnded: the connection ended while a put-token waited for its reply.
var errConnEnded = errors.New("the connection ended")

// putToken authorises audience with token on this connection, the first time or to renew it in place, and waits
// for the hub's reply. The message-id is a ulong (as the C SDK's), which the hub echoes in its type.
func (s *shared) putToken(ctx context.Context, op, audience, token string) error {
	ch := make(chan cbsReply, 1)
	s.mu.Lock()
	if s.endErr != nil {
		err := s.endErr
		s.mu.Unlock()
		return &transport.Error{Kind: err.Kind, Op: op, Err: err}
	}
	s.nextID++
	id := s.nextID
	s.waiting[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiting, id)
		s.mu.Unlock()
	}()
	to, replyTo := cbsAddress, cbsReplyTo
	req := &goamqp.Message{
		Properties: &goamqp.MessageProperties{MessageID: id, To: &to, ReplyTo: &replyTo},
		ApplicationProperties: map[string]any{"operation": "put-token", "type": cbsTokenType,
			"name": audience},
		Value: token,
	}
	if err := s.cbsSnd.Send(ctx, req, nil); err != nil {
		return classify(ctx, op, fmt.Errorf("put-token: %w", err))
	}
	select {
	case r := <-ch:
		if kind, good := statusKind(r.status); !good {
			return &transport.Error{Kind: kind, Op: op,
				Err: fmt.Errorf("put-token for %s answered %d: %s", audience, r.status, r.desc)}
		}
		return nil
	case <-ctx.Done():
		return &transport.Error{Kind: transport.KindTimeout, Op: op,
			Err: fmt.Errorf("no put-token reply: %w", ctx.Err())}
	case <-s.done:
		return s.ended(op)
	}
}

func (s *shared) ended(op string) *transport.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &transport.Error{Kind: s.endErr.Kind, Op: op, Err: fmt.Errorf("%w: %w", errConnEnded, s.endErr)}
}

// register adds d to the devices the connection fails when it ends; false if it ended already.
func (s *shared) register(d *device) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.devices == nil {
		return false
	}
	s.devices[d] = struct{}{}
	return true
}

func (s *shared) unregister(d *device) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.devices, d)
}
