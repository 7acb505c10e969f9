package core

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/mqtt"
	"github.com/iotconn/iotconn/core/transport/pool"
)

// poolHub opens the shared connections of a pool and plays the hub behind them: it acknowledges every send on a
// live link and counts the messages it received from each device.
type poolHub struct {
	mu     sync.Mutex
	opens  int
	shared []*hubShared
	gate   chan struct{}  // when set, openings wait for it
	got    map[string]int // "device/message id" -> times received
}

func (h *poolHub) open(ctx context.Context, _ transport.DialParams) (pool.Shared, error) {
	h.mu.Lock()
	h.opens++
	gate := h.gate
	h.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, &transport.Error{Kind: transport.KindTimeout, Op: "connect", Err: ctx.Err()}
		}
	}
	s := &hubShared{hub: h, done: make(chan struct{}), links: map[*hubLink]struct{}{}}
	h.mu.Lock()
	h.shared = append(h.shared, s)
	h.mu.Unlock()
	return s, nil
}

func (h *poolHub) state() (opens int, got map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.opens, maps.Clone(h.got)
}

func (h *poolHub) connection(i int) *hubShared {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.shared[i]
}

type hubShared struct {
	hub  *poolHub
	done chan struct{}

	mu     sync.Mutex
	ended  bool
	closed bool
	links  map[*hubLink]struct{}
}

func (s *hubShared) Attach(ctx context.Context, p transport.DialParams) (transport.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return nil, &transport.Error{Kind: transport.KindNetwork, Op: "attach", Err: errors.New("connection ended")}
	}
	l := &hubLink{s: s, p: p}
	s.links[l] = struct{}{}
	return l, nil
}

func (s *hubShared) Done() <-chan struct{} { return s.done }

func (s *hubShared) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.end(&transport.Error{Kind: transport.KindProtocol, Op: "connection closed"})
	return nil
}

// end ends the connection as a pool.Shared must: Done first, then every attached link reports its loss.
func (s *hubShared) end(err *transport.Error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	close(s.done)
	links := s.links
	s.links = nil
	s.mu.Unlock()
	for l := range links {
		l.lose(err)
	}
}

func (s *hubShared) status() (attached int, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.links), s.closed
}

// hubLink is one device's link on a hubShared.
type hubLink struct {
	s *hubShared
	p transport.DialParams

	mu   sync.Mutex
	dead bool
}

// Send records and acknowledges m on a live link and fails it on a dead one, which then never received it.
func (l *hubLink) Send(m *transport.Message, done func(error)) {
	l.mu.Lock()
	dead := l.dead
	if !dead {
		h := l.s.hub
		h.mu.Lock()
		h.got[l.p.DeviceID+"/"+m.MessageID]++
		h.mu.Unlock()
	}
	l.mu.Unlock()
	if dead {
		done(&transport.Error{Kind: transport.KindNetwork, Op: "send", Err: errClosedConn})
		return
	}
	done(nil)
}

func (l *hubLink) Request(_ *transport.Request, done func(error)) { done(nil) }
func (l *hubLink) RenewToken(context.Context, string) error       { return transport.ErrRenewNeedsReconnect }

func (l *hubLink) Close() error {
	l.mu.Lock()
	l.dead = true
	l.mu.Unlock()
	l.s.mu.Lock()
	delete(l.s.links, l)
	l.s.mu.Unlock()
	return nil
}

// lose reports the link's loss, unless the client closed it first.
func (l *hubLink) lose(err *transport.Error) {
	l.mu.Lock()
	wasDead := l.dead
	l.dead = true
	l.mu.Unlock()
	if !wasDead {
		l.p.Handler.OnConnectionLost(err)
	}
}

// Fifty clients share one pool: they connect over one shared connection; when it dies, each of them reconnects
// and the pool opens exactly one new connection for all of them; every message sent before the loss and while
// disconnected is delivered once.
func TestClientsShareAPooledConnection(t *testing.T) {
	const (
		n       = 50
		perStep = 3 // messages each client sends before the loss, and again while disconnected
	)
	hub := &poolHub{got: map[string]int{}}
	pl := pool.New(hub.open, mqtt.NewDialer(), 0)
	t.Cleanup(func() { pl.Close() }) // registered first: runs after the clients' cleanups closed them
	clients := make([]*Client, n)
	recs := make([]*recorder, n)
	for i := range n {
		cs := fmt.Sprintf("HostName=localhost:18883;DeviceId=dev%d;SharedAccessKey=%s", i, testKey)
		c, err := newClient(cs, Options{RetryPolicy: retry.Custom(func(int, error) (bool, time.Duration) {
			return true, 0
		})}, pl)
		if err != nil {
			t.Fatal(err)
		}
		clients[i], recs[i] = c, newRecorder()
		c.SetHandlers(recs[i].handlers())
		t.Cleanup(func() { closeAndCheck(t, c) })
	}
	forAll := func(f func(i int, c *Client) error) {
		t.Helper()
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Go(func() { errs[i] = f(i, c) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
	sendSome := func(i int, c *Client) error {
		for range perStep {
			if _, err := c.Send(&Message{Payload: []byte("x")}); err != nil {
				return err
			}
		}
		return nil
	}
	delivered := func(t *testing.T) {
		t.Helper()
		for i, r := range recs {
			r.expectDelivered(t, perStep, fmt.Sprint("client ", i))
		}
	}

	forAll(func(_ int, c *Client) error { return connect(t, c) })
	for _, r := range recs {
		r.expectStates(t, connected)
	}
	if opens, _ := hub.state(); opens != 1 || !slices.Equal(pl.Stats().Live, []int{n}) {
		t.Fatalf("%d openings, stats %+v; want one connection carrying %d", opens, pl.Stats(), n)
	}
	forAll(sendSome)
	delivered(t)

	gate := make(chan struct{})
	hub.mu.Lock()
	hub.gate = gate // the new connection opens once every client waits for it
	hub.mu.Unlock()
	first := hub.connection(0)
	first.end(&transport.Error{Kind: transport.KindNetwork, Op: "connection lost"})
	for _, r := range recs {
		r.expectStates(t, state{StatusDisconnectedRetrying, ReasonNoNetwork})
	}
	forAll(sendSome) // while disconnected: queued until the clients reconnect
	waitFor(t, func() bool { return slices.Equal(pl.Stats().Opening, []int{n}) })
	close(gate)
	for _, r := range recs {
		r.expectStates(t, connected)
	}
	delivered(t)

	opens, got := hub.state()
	if opens != 2 {
		t.Fatalf("%d openings, want 2: one for all the clients that lost theirs", opens)
	}
	if attached, _ := hub.connection(1).status(); attached != n {
		t.Fatalf("%d clients on the new connection, want %d", attached, n)
	}
	if len(got) != n*2*perStep {
		t.Fatalf("the hub received %d distinct messages, want %d", len(got), n*2*perStep)
	}
	for k, times := range got {
		if times != 1 {
			t.Fatalf("message %s received %d times", k, times)
		}
	}
	for _, r := range recs {
		r.expectNoMoreCompletions(t)
	}
	if _, closed := first.status(); !closed {
		t.Fatal("the pool did not close the dead connection")
	}

	for _, c := range clients {
		closeAndCheck(t, c)
	}
	if _, closed := hub.connection(1).status(); !closed || len(pl.Stats().Live) != 0 {
		t.Fatalf("after every client closed: connection closed %v, stats %+v", closed, pl.Stats())
	}
}
