package amqp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitLimit bounds every wait of these tests.
const waitLimit = 10 * time.Second

func ctxLimit(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// testHandler serves a few nodes: "events" and "echo" take deliveries (echo sends each back on the "echo" link
// the peer receives on), "reject" rejects them, "nocredit" grants none, "refuse" refuses the attach. Everything
// it sees goes into channels.
type testHandler struct {
	mu        sync.Mutex
	senders   map[string]*Link
	got       chan *Delivery
	attached  chan *Link
	detached  chan *Error
	closed    chan error
	settleOut chan DeliveryState
}

func newTestHandler() *testHandler {
	return &testHandler{senders: map[string]*Link{}, got: make(chan *Delivery, 100), attached: make(chan *Link, 100),
		detached: make(chan *Error, 100), closed: make(chan error, 100), settleOut: make(chan DeliveryState, 100)}
}

func (h *testHandler) Attach(l *Link) *Error {
	switch l.Address() {
	case "refuse":
		return Errorf(CondNotFound, "no node %s", l.Address())
	case "nocredit":
	default:
		l.SetCredit(10)
	}
	if !l.Receiving() {
		h.mu.Lock()
		h.senders[l.Address()] = l
		h.mu.Unlock()
	}
	h.attached <- l
	return nil
}

func (h *testHandler) Transfer(l *Link, d *Delivery) DeliveryState {
	h.got <- d
	switch l.Address() {
	case "reject":
		return Rejected{Error: Errorf("com.example:nope", "rejected")}
	case "echo":
		h.mu.Lock()
		out := h.senders["echo"]
		h.mu.Unlock()
		if out != nil {
			_ = out.Send(d.Payload, SendOptions{OnSettled: func(s DeliveryState, _ error) { h.settleOut <- s }})
		}
	}
	return nil
}

func (h *testHandler) Detached(_ *Link, err *Error) { h.detached <- err }
func (h *testHandler) Closed(err error)             { h.closed <- err }

// serve runs srv on a 127.0.0.1 listener until the test ends; every connection gets h.
func serve(t *testing.T, srv *Server, h *testHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if srv.Open == nil {
		srv.Open = func(*Conn) (Handler, *Error) { return h, nil }
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = srv.Serve(nc)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string, opts *goamqp.ConnOptions) *goamqp.Conn {
	t.Helper()
	c, err := goamqp.Dial(ctxLimit(t), "amqp://"+addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func session(t *testing.T, c *goamqp.Conn) *goamqp.Session {
	t.Helper()
	s, err := c.NewSession(ctxLimit(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sender(t *testing.T, s *goamqp.Session, addr string, opts *goamqp.SenderOptions) *goamqp.Sender {
	t.Helper()
	snd, err := s.NewSender(ctxLimit(t), addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	return snd
}

func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatal("nothing arrived")
		var zero T
		return zero
	}
}

func decodeMessage(t *testing.T, b []byte) *goamqp.Message {
	t.Helper()
	var m goamqp.Message
	if err := m.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	return &m
}

// TestSASLAndBare: go-amqp connects with SASL ANONYMOUS, with SASL PLAIN (checked by the server), and with no
// SASL at all, and sends a message each time; a wrong PLAIN password fails the connect.
func TestSASLAndBare(t *testing.T) {
	h := newTestHandler()
	srv := &Server{SASLMechanisms: []Symbol{"ANONYMOUS", "PLAIN"}}
	srv.SASL = func(mech Symbol, initial []byte, _ string) (any, error) {
		if mech != "PLAIN" {
			return nil, nil
		}
		_, user, pass, err := ParsePlain(initial)
		if err != nil || pass != "secret" {
			return nil, errors.New("bad password")
		}
		return user, nil
	}
	addr := serve(t, srv, h)
	for _, c := range []struct {
		name string
		sasl goamqp.SASLType
	}{{"anonymous", goamqp.SASLTypeAnonymous()}, {"plain", goamqp.SASLTypePlain("dev", "secret")}, {"bare", nil}} {
		conn := dial(t, addr, &goamqp.ConnOptions{SASLType: c.sasl})
		snd := sender(t, session(t, conn), "events", nil)
		if err := snd.Send(ctxLimit(t), goamqp.NewMessage([]byte(c.name)), nil); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if m := decodeMessage(t, receive(t, h.got).Payload); string(m.GetData()) != c.name {
			t.Fatalf("%s: got %q", c.name, m.GetData())
		}
	}
	if c, err := goamqp.Dial(ctxLimit(t), "amqp://"+addr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("dev", "wrong")}); err == nil {
		_ = c.Close()
		t.Fatal("wrong password connected")
	}
}

// TestMultiFrameEcho: with 512-byte frames both ways, a 5000-byte message arrives whole (the client split it),
// and the server's copy back arrives whole (the server split it), settled as the client accepted it.
func TestMultiFrameEcho(t *testing.T) {
	h := newTestHandler()
	addr := serve(t, &Server{MaxFrameSize: 512}, h)
	conn := dial(t, addr, &goamqp.ConnOptions{MaxFrameSize: 512})
	s := session(t, conn)
	rcv, err := s.NewReceiver(ctxLimit(t), "echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	receive(t, h.attached)
	body := bytes.Repeat([]byte("0123456789"), 500)
	msg := goamqp.NewMessage(body)
	msg.ApplicationProperties = map[string]any{"k": "v"}
	if err := sender(t, s, "echo", nil).Send(ctxLimit(t), msg, nil); err != nil {
		t.Fatal(err)
	}
	if d := receive(t, h.got); !bytes.Equal(decodeMessage(t, d.Payload).GetData(), body) {
		t.Fatal("server got a different body")
	}
	back, err := rcv.Receive(ctxLimit(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.GetData(), body) || back.ApplicationProperties["k"] != "v" {
		t.Fatal("echo differs")
	}
	if err := rcv.AcceptMessage(ctxLimit(t), back); err != nil {
		t.Fatal(err)
	}
	if st := receive(t, h.settleOut); st != (Accepted{}) {
		t.Fatalf("outcome %#v", st)
	}
}

// TestOutcomes: the server's outcome reaches the client (rejected with its condition), a receiver-settle-mode
// second sender completes, and the client's accept, reject and release of server deliveries reach the server.
func TestOutcomes(t *testing.T) {
	h := newTestHandler()
	addr := serve(t, &Server{}, h)
	conn := dial(t, addr, nil)
	s := session(t, conn)
	err := sender(t, s, "reject", nil).Send(ctxLimit(t), goamqp.NewMessage([]byte("x")), nil)
	var ae *goamqp.Error
	if !errors.As(err, &ae) || ae.Condition != "com.example:nope" {
		t.Fatalf("send to reject: %v", err)
	}
	second := goamqp.ReceiverSettleModeSecond
	if err := sender(t, s, "events", &goamqp.SenderOptions{RequestedReceiverSettleMode: &second}).
		Send(ctxLimit(t), goamqp.NewMessage([]byte("y")), nil); err != nil {
		t.Fatal(err)
	}
	receive(t, h.got)
	receive(t, h.got)

	rcv, err := s.NewReceiver(ctxLimit(t), "out", &goamqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	out := receive(t, h.attached)
	for len(h.attached) > 0 {
		out = <-h.attached
	}
	settle := []func(*goamqp.Message) error{
		func(m *goamqp.Message) error { return rcv.AcceptMessage(ctxLimit(t), m) },
		func(m *goamqp.Message) error { return rcv.RejectMessage(ctxLimit(t), m, nil) },
		func(m *goamqp.Message) error { return rcv.ReleaseMessage(ctxLimit(t), m) },
	}
	want := []DeliveryState{Accepted{}, Rejected{}, Released{}}
	for i, f := range settle {
		payload, _ := goamqp.NewMessage([]byte{byte(i)}).MarshalBinary()
		got := make(chan DeliveryState, 1)
		tag := []byte("0123456789abcdef")
		tag[0] = byte(i)
		if err := out.Send(payload, SendOptions{Tag: tag, OnSettled: func(s DeliveryState, _ error) { got <- s }}); err != nil {
			t.Fatal(err)
		}
		m, err := rcv.Receive(ctxLimit(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.DeliveryTag, tag) {
			t.Fatalf("tag % x", m.DeliveryTag)
		}
		if err := f(m); err != nil {
			t.Fatal(err)
		}
		if st := receive(t, got); st != want[i] {
			t.Fatalf("outcome %d: %#v", i, st)
		}
	}
}

// TestCredit: a link the server grants no credit does not deliver until it grants some, and the server sends
// no more deliveries than the client's credit.
func TestCredit(t *testing.T) {
	h := newTestHandler()
	addr := serve(t, &Server{}, h)
	conn := dial(t, addr, nil)
	s := session(t, conn)
	snd := sender(t, s, "nocredit", nil)
	in := receive(t, h.attached)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := snd.Send(ctx, goamqp.NewMessage([]byte("a")), nil)
	cancel()
	var ae *goamqp.Error // go-amqp's answer to a send that found no credit before ctx ended
	if !errors.As(err, &ae) || ae.Condition != goamqp.ErrCondTransferLimitExceeded {
		t.Fatalf("send without credit: %v", err)
	}
	in.SetCredit(1)
	if err := snd.Send(ctxLimit(t), goamqp.NewMessage([]byte("b")), nil); err != nil {
		t.Fatal(err)
	}

	rcv, err := s.NewReceiver(ctxLimit(t), "out", &goamqp.ReceiverOptions{Credit: -1})
	if err != nil {
		t.Fatal(err)
	}
	out := receive(t, h.attached)
	for i := range 3 {
		payload, _ := goamqp.NewMessage([]byte{byte(i)}).MarshalBinary()
		if err := out.Send(payload, SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := rcv.IssueCredit(2); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		m, err := rcv.Receive(ctxLimit(t), nil)
		if err != nil || m.GetData()[0] != byte(i) {
			t.Fatalf("message %d: %v", i, err)
		}
		_ = rcv.AcceptMessage(ctxLimit(t), m)
	}
	if p := rcv.Prefetched(); p != nil {
		t.Fatal("a third message came without credit")
	}
	if err := rcv.IssueCredit(1); err != nil {
		t.Fatal(err)
	}
	if m, err := rcv.Receive(ctxLimit(t), nil); err != nil || m.GetData()[0] != 2 {
		t.Fatalf("third message: %v", err)
	}
}

// TestDetachAndClose: a refused attach fails with the server's condition; a link the server detaches fails the
// client's next send with the condition; a client detach reaches the handler; the server's close with an error
// reaches the client.
func TestDetachAndClose(t *testing.T) {
	h := newTestHandler()
	addr := serve(t, &Server{}, h)
	conn := dial(t, addr, nil)
	s := session(t, conn)
	_, err := s.NewSender(ctxLimit(t), "refuse", nil)
	var ae *goamqp.Error
	if !errors.As(err, &ae) || ae.Condition != goamqp.ErrCondNotFound {
		t.Fatalf("refused attach: %v", err)
	}
	snd := sender(t, s, "events", nil)
	l := receive(t, h.attached)
	l.Detach(Errorf("amqp:unauthorized-access", "token expired"))
	if e := receive(t, h.detached); e == nil || e.Condition != CondUnauthorized {
		t.Fatalf("Detached: %v", e)
	}
	err = snd.Send(ctxLimit(t), goamqp.NewMessage([]byte("x")), nil)
	var le *goamqp.LinkError
	if !errors.As(err, &le) || le.RemoteErr == nil || le.RemoteErr.Condition != goamqp.ErrCondUnauthorizedAccess {
		t.Fatalf("send on a detached link: %v", err)
	}
	snd2 := sender(t, s, "events", nil)
	l2 := receive(t, h.attached)
	if err := snd2.Close(ctxLimit(t)); err != nil {
		t.Fatal(err)
	}
	if e := receive(t, h.detached); e != nil {
		t.Fatalf("client detach reported %v", e)
	}
	l2.Session().Conn().Close(Errorf(CondConnectionForced, "bye"))
	select {
	case <-conn.Done():
	case <-time.After(waitLimit):
		t.Fatal("connection not closed")
	}
	var ce *goamqp.ConnError
	if !errors.As(conn.Err(), &ce) || ce.RemoteErr == nil || ce.RemoteErr.Condition != goamqp.ErrCondConnectionForced {
		t.Fatalf("close: %v", conn.Err())
	}
	receive(t, h.closed)
}

// rawConn speaks frames directly, for what go-amqp never sends: silence, garbage.
type rawConn struct {
	t  *testing.T
	nc net.Conn
}

func rawOpen(t *testing.T, addr string, idle time.Duration) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	r := &rawConn{t: t, nc: nc}
	r.write(headerAMQP)
	r.frame(&open{containerID: "raw", maxFrameSize: 65536, idleTimeout: idle})
	hdr := make([]byte, 8)
	_ = nc.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := io.ReadFull(nc, hdr); err != nil || !bytes.Equal(hdr, headerAMQP) {
		t.Fatalf("header % x: %v", hdr, err)
	}
	if _, ok := r.read().(*open); !ok {
		t.Fatal("no open")
	}
	return r
}

func (r *rawConn) write(b []byte) {
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) frame(p performer) {
	b, err := appendFrame(nil, frameAMQP, 0, p, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(b)
}

// read returns the next frame's performative (nil for a heartbeat).
func (r *rawConn) read() any {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(waitLimit))
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(r.nc, hdr); err != nil {
		r.t.Fatal(err)
	}
	buf := make([]byte, binary.BigEndian.Uint32(hdr))
	copy(buf, hdr)
	if _, err := io.ReadFull(r.nc, buf[8:]); err != nil {
		r.t.Fatal(err)
	}
	fr, err := parseFrame(buf)
	if err != nil {
		r.t.Fatal(err)
	}
	return fr.body
}

// readClose reads until the close frame and returns its error.
func (r *rawConn) readClose() *Error {
	for range 100 {
		if cl, ok := r.read().(*closeFrame); ok {
			return cl.err
		}
	}
	r.t.Fatal("no close")
	return nil
}

// TestIdleTimeout: the server sends heartbeats at half the client's idle timeout, and closes a client that stays
// silent past its own with amqp:resource-limit-exceeded; go-amqp, which heartbeats at half the server's, stays
// connected through three of the server's idle timeouts without sending anything.
func TestIdleTimeout(t *testing.T) {
	h := newTestHandler()
	addr := serve(t, &Server{IdleTimeout: time.Second}, h)
	conn := dial(t, addr, &goamqp.ConnOptions{IdleTimeout: time.Second})
	snd := sender(t, session(t, conn), "events", nil)
	select {
	case <-conn.Done():
		t.Fatalf("idle connection closed: %v", conn.Err())
	case <-time.After(3 * time.Second):
	}
	if err := snd.Send(ctxLimit(t), goamqp.NewMessage([]byte("still here")), nil); err != nil {
		t.Fatal(err)
	}
	r := rawOpen(t, addr, 100*time.Millisecond)
	for range 3 {
		if b := r.read(); b != nil {
			t.Fatalf("%T, not a heartbeat", b)
		}
	}
	if e := r.readClose(); e == nil || e.Condition != CondResourceLimit {
		t.Fatalf("close: %v", e)
	}
}

// TestMalformedFrame: a frame whose body does not decode closes the connection with amqp:decode-error, and a
// frame beyond the max frame size with a framing error.
func TestMalformedFrame(t *testing.T) {
	h := newTestHandler()
	addr := serve(t, &Server{MaxFrameSize: 512}, h)
	r := rawOpen(t, addr, 0)
	r.write([]byte{0, 0, 0, 14, 2, 0, 0, 0, 0x00, 0x53, 0x11, 0xd0, 0xff, 0xff})
	if e := r.readClose(); e == nil || e.Condition != CondDecodeError {
		t.Fatalf("close: %v", e)
	}
	r.frame(&closeFrame{})
	receive(t, h.closed)
	r = rawOpen(t, addr, 0)
	r.write([]byte{0, 0, 4, 0, 2, 0, 0, 0})
	if e := r.readClose(); e == nil || e.Condition != CondFramingError {
		t.Fatalf("close: %v", e)
	}
}

// echoHandler accepts every link and sends every delivery back on every link the peer receives on; it never
// blocks, so a fuzz input may send any number of deliveries.
type echoHandler struct{ out []*Link }

func (h *echoHandler) Attach(l *Link) *Error {
	l.SetCredit(5)
	if !l.Receiving() {
		h.out = append(h.out, l)
	}
	return nil
}

func (h *echoHandler) Transfer(_ *Link, d *Delivery) DeliveryState {
	for _, l := range h.out {
		_ = l.Send(d.Payload, SendOptions{})
	}
	return Released{}
}

func (h *echoHandler) Detached(*Link, *Error) {}
func (h *echoHandler) Closed(error)           {}

// FuzzServe feeds arbitrary bytes after a valid header and open to a server whose handler accepts every link and
// echoes every delivery: Serve must end (the input ends with EOF) without panicking, whatever the frames say.
func FuzzServe(f *testing.F) {
	open, _ := appendFrame(append([]byte(nil), headerAMQP...), frameAMQP, 0, &open{containerID: "fuzz", maxFrameSize: 65536}, nil)
	var seed []byte
	one := uint32(1)
	for _, p := range []performer{
		&begin{nextOutgoingID: 0, incomingWindow: 100, outgoingWindow: 100},
		&attach{name: "in", handle: 0, role: roleSender, target: &terminus{address: "echo"}},
		&attach{name: "out", handle: 1, role: roleReceiver, source: &terminus{address: "echo"}},
		&flow{incomingWindow: 100, nextOutgoingID: 0, outgoingWindow: 100, handle: &one, linkCredit: &one},
		&transfer{handle: 0, deliveryID: new(uint32), deliveryTag: []byte{1}, more: true},
		&transfer{handle: 0},
		&disposition{role: roleReceiver, first: 0, settled: true, state: Accepted{}},
		&detach{handle: 0, closed: true}, &end{},
	} {
		seed, _ = appendFrame(seed, frameAMQP, 0, p, []byte("x"))
	}
	f.Add(seed)
	f.Add([]byte{0, 0, 0, 8, 2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		srv := &Server{IdleTimeout: time.Minute, Open: func(*Conn) (Handler, *Error) { return &echoHandler{}, nil }}
		server, client := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- srv.Serve(server) }()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		_, _ = client.Write(append(append([]byte(nil), open...), b...))
		_ = client.Close()
		select {
		case <-done:
		case <-time.After(waitLimit):
			t.Fatal("Serve did not end after the input did")
		}
	})
}

// TestPipelinedAndEnd: a client may send its header, open, begin and attach in one write before reading anything
// (the spec allows pipelining); the server answers each in order. Ending the session reports its links detached.
func TestPipelinedAndEnd(t *testing.T) {
	h := newTestHandler()
	addr := serve(t, &Server{}, h)
	nc, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	r := &rawConn{t: t, nc: nc}
	b := append([]byte(nil), headerAMQP...)
	for _, p := range []performer{
		&open{containerID: "pipelined", maxFrameSize: 65536},
		&begin{incomingWindow: 100, outgoingWindow: 100},
		&attach{name: "l", handle: 7, role: roleSender, target: &terminus{address: "events"}},
	} {
		if b, err = appendFrame(b, frameAMQP, 3, p, nil); err != nil {
			t.Fatal(err)
		}
	}
	r.write(b)
	hdr := make([]byte, 8)
	_ = nc.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := io.ReadFull(nc, hdr); err != nil || !bytes.Equal(hdr, headerAMQP) {
		t.Fatalf("header % x: %v", hdr, err)
	}
	if _, ok := r.read().(*open); !ok {
		t.Fatal("no open")
	}
	if bg, ok := r.read().(*begin); !ok || bg.remoteChannel == nil || *bg.remoteChannel != 3 {
		t.Fatal("no begin answering channel 3")
	}
	if at, ok := r.read().(*attach); !ok || at.handle != 7 || at.role != roleReceiver || at.target == nil {
		t.Fatal("no attach answering handle 7")
	}
	if fl, ok := r.read().(*flow); !ok || fl.linkCredit == nil || *fl.linkCredit != 10 {
		t.Fatal("no initial credit")
	}
	receive(t, h.attached)
	b, _ = appendFrame(nil, frameAMQP, 3, &end{err: Errorf("com.example:bye", "gone")}, nil)
	r.write(b)
	if e := receive(t, h.detached); e == nil || e.Condition != "com.example:bye" {
		t.Fatalf("Detached after end: %v", e)
	}
	if _, ok := r.read().(*end); !ok {
		t.Fatal("end not answered")
	}
}

// TestSASLRefused: a SASL header to a server that offers no mechanism gets the AMQP header and the connection
// ends, as the spec says for an unsupported protocol.
func TestSASLRefused(t *testing.T) {
	addr := serve(t, &Server{}, newTestHandler())
	nc, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write(headerSASL); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(waitLimit))
	got, err := io.ReadAll(nc)
	if err != nil || !bytes.Equal(got, headerAMQP) {
		t.Fatalf("got % x, %v", got, err)
	}
}

// TestSASLMSSBCBS: the C SDK's SASL exchange: the server offers MSSBCBS among its mechanisms, the client picks it
// with an empty initial response, the outcome is ok and the AMQP header and open follow on the same socket.
func TestSASLMSSBCBS(t *testing.T) {
	addr := serve(t, &Server{SASLMechanisms: []Symbol{"MSSBCBS", "ANONYMOUS"}}, newTestHandler())
	nc, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	r := &rawConn{t: t, nc: nc}
	init, _ := appendFrame(append([]byte(nil), headerSASL...), frameSASL, 0, &saslInit{mechanism: "MSSBCBS"}, nil)
	r.write(init)
	hdr := make([]byte, 8)
	_ = nc.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := io.ReadFull(nc, hdr); err != nil || !bytes.Equal(hdr, headerSASL) {
		t.Fatalf("header % x: %v", hdr, err)
	}
	mechs, _, err := Decode(r.rawBody())
	want := describe(descSASLMechs, Array{Symbol("MSSBCBS"), Symbol("ANONYMOUS")})
	if err != nil || !reflect.DeepEqual(mechs, want) {
		t.Fatalf("mechanisms %#v, %v", mechs, err)
	}
	if out, _, err := Decode(r.rawBody()); err != nil || !reflect.DeepEqual(out, describe(descSASLOutcome, uint8(saslOK))) {
		t.Fatalf("outcome %#v, %v", out, err)
	}
	r.write(headerAMQP)
	if _, err := io.ReadFull(nc, hdr); err != nil || !bytes.Equal(hdr, headerAMQP) {
		t.Fatalf("header % x: %v", hdr, err)
	}
	r.frame(&open{containerID: "c-sdk", maxFrameSize: 65536})
	if _, ok := r.read().(*open); !ok {
		t.Fatal("no open after SASL")
	}
}

// rawBody reads one frame and returns its body, for the SASL frames the server's parser refuses to read.
func (r *rawConn) rawBody() []byte {
	r.t.Helper()
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(r.nc, hdr); err != nil {
		r.t.Fatal(err)
	}
	buf := make([]byte, binary.BigEndian.Uint32(hdr)-8)
	if _, err := io.ReadFull(r.nc, buf); err != nil {
		r.t.Fatal(err)
	}
	return buf[int(hdr[4])*4-8:]
}
