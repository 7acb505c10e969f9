// Package transporttest gives the transports' tests one transport.Handler that keeps what arrives, and the waits
// for it, so each transport's tests check the same things the same way.
package transporttest

import (
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/transport"
)

// WaitLimit bounds every wait of a Recorder.
const WaitLimit = 10 * time.Second

// Recorder is a transport.Handler that keeps what arrives, in order, on its channels.
type Recorder struct {
	Msgs    chan *transport.Message
	Inbound chan *transport.Inbound
	Lost    chan *transport.Error
}

// NewRecorder returns a Recorder whose channels hold 64 messages, 64 inbound events and 4 losses.
func NewRecorder() *Recorder {
	return &Recorder{Msgs: make(chan *transport.Message, 64), Inbound: make(chan *transport.Inbound, 64),
		Lost: make(chan *transport.Error, 4)}
}

func (r *Recorder) OnMessage(m *transport.Message)      { r.Msgs <- m }
func (r *Recorder) OnInbound(in *transport.Inbound)     { r.Inbound <- in }
func (r *Recorder) OnConnectionLost(e *transport.Error) { r.Lost <- e }

// ExpectLoss waits for the connection's loss report.
func (r *Recorder) ExpectLoss(t *testing.T) *transport.Error {
	t.Helper()
	select {
	case e := <-r.Lost:
		return e
	case <-time.After(WaitLimit):
		t.Fatal("connection loss not reported")
		return nil
	}
}

// ExpectNoLoss fails if a loss was reported by now.
func (r *Recorder) ExpectNoLoss(t *testing.T) {
	t.Helper()
	select {
	case e := <-r.Lost:
		t.Fatalf("unexpected loss report: %v", e)
	default:
	}
}

// ExpectMessage waits for the next C2D message.
func (r *Recorder) ExpectMessage(t *testing.T) *transport.Message {
	t.Helper()
	select {
	case m := <-r.Msgs:
		return m
	case <-time.After(WaitLimit):
		t.Fatal("no C2D message")
		return nil
	}
}

// ExpectInbound waits for the next inbound event and fails unless it is of kind.
func (r *Recorder) ExpectInbound(t *testing.T, kind transport.InboundKind) *transport.Inbound {
	t.Helper()
	select {
	case in := <-r.Inbound:
		if in.Kind != kind {
			t.Fatalf("inbound %+v, want kind %d", in, kind)
		}
		return in
	case <-time.After(WaitLimit):
		t.Fatalf("no inbound of kind %d", kind)
		return nil
	}
}
