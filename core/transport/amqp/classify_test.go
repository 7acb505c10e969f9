package amqp

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/transporttest"
	"github.com/iotconn/iotconn/hubsim"
)

// TestConditionTable: every condition of the documented table, carried by each error go-amqp returns (a rejected
// outcome, a detach, an end, a close), gets its kind; on a link that was up, auth and device conditions are
// retried once.
func TestConditionTable(t *testing.T) {
	for _, tc := range []struct {
		cond goamqp.ErrCond
		kind transport.Kind
	}{
		{"amqp:unauthorized-access", transport.KindAuth},
		{"amqp:not-found", transport.KindDeviceDisabled},
		{"com.microsoft:device-container-throttled", transport.KindThrottled},
		{"amqp:resource-limit-exceeded", transport.KindQuota},
		{"com.microsoft:iot-hub-not-found-error", transport.KindHubNotFound},
		{"amqp:link:message-size-exceeded", transport.KindTooLarge},
		{"com.microsoft:timeout", transport.KindTimeout},
		{"amqp:internal-error", transport.KindServerBusy},
		{"com.microsoft:iot-hub-suspended", transport.KindServerBusy},
		{"amqp:connection:forced", transport.KindProtocol},
		{"amqp:connection:framing-error", transport.KindProtocol},
		{"amqp:link:detach-forced", transport.KindProtocol},
		{"amqp:link:stolen", transport.KindProtocol},
		{"amqp:session:window-violation", transport.KindProtocol},
		{"com.microsoft:link-creation-conflict", transport.KindProtocol},
		{"amqp:not-allowed", transport.KindProtocol},
		{"x-vendor:unheard-of", transport.KindProtocol},
	} {
		remote := &goamqp.Error{Condition: tc.cond, Description: "d"}
		for _, err := range []error{remote, &goamqp.LinkError{RemoteErr: remote}, &goamqp.SessionError{RemoteErr: remote},
			&goamqp.ConnError{RemoteErr: remote}} {
			got := classify(context.Background(), "op", err)
			if got.Kind != tc.kind || !errors.Is(got, remote) {
				t.Errorf("%s in %T: %v (kind %v), want %v", tc.cond, err, got, got.Kind, tc.kind)
			}
			live := onLiveLink(got)
			want := tc.kind
			if want == transport.KindAuth || want == transport.KindDeviceDisabled {
				want = transport.KindProtocol
			}
			if live.Kind != want || !errors.Is(live, remote) {
				t.Errorf("%s on a live link: %v, want %v", tc.cond, live.Kind, want)
			}
		}
	}
	// Ends without a condition: a drop is a protocol failure; an operation whose context ended timed out.
	if k := classify(context.Background(), "op", &goamqp.ConnError{}).Kind; k != transport.KindProtocol {
		t.Errorf("a closed connection without an error: %v", k)
	}
	if k := classify(context.Background(), "op", io.EOF).Kind; k != transport.KindProtocol {
		t.Errorf("EOF: %v", k)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if k := classify(ctx, "op", io.EOF).Kind; k != transport.KindTimeout {
		t.Errorf("EOF after the context ended: %v", k)
	}
}

// TestPutTokenStatusTable: a put-token's status codes as the .NET SDK maps them.
func TestPutTokenStatusTable(t *testing.T) {
	for status, want := range map[int32]transport.Kind{
		200: 0, 202: 0, 400: transport.KindProtocol, 401: transport.KindAuth, 403: transport.KindServerBusy,
		404: transport.KindDeviceDisabled, 429: transport.KindThrottled, 500: transport.KindServerBusy,
		503: transport.KindServerBusy,
	} {
		kind, ok := statusKind(status)
		if ok != (want == 0) || kind != want {
			t.Errorf("status %d: %v %v, want %v", status, kind, ok, want)
		}
	}
}

// TestHubFaults: hubsim's faults over AMQP end the link, or refuse the next dial, with the kind of the table.
func TestHubFaults(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fault    hubsim.Fault // Device is filled in
		lost     transport.Kind
		redial   transport.Kind // 0: the redial succeeds
		sendKind transport.Kind // non-zero: the fault shows on a send, which fails with this kind
	}{
		{name: "amqp-detach", fault: hubsim.Fault{Kind: hubsim.FaultAMQPDetach}, lost: transport.KindProtocol},
		{name: "amqp-close", fault: hubsim.Fault{Kind: hubsim.FaultAMQPClose}, lost: transport.KindProtocol},
		{name: "kill-tcp", fault: hubsim.Fault{Kind: hubsim.FaultKillTCP}, lost: transport.KindProtocol},
		{name: "expire-token", fault: hubsim.Fault{Kind: hubsim.FaultExpireToken}, lost: transport.KindProtocol},
		{name: "rotate-key", fault: hubsim.Fault{Kind: hubsim.FaultRotateKey}, lost: transport.KindProtocol,
			redial: transport.KindAuth},
		{name: "disable-device", fault: hubsim.Fault{Kind: hubsim.FaultDisableDevice}, lost: transport.KindProtocol,
			redial: transport.KindDeviceDisabled},
		{name: "failover", fault: hubsim.Fault{Kind: hubsim.FaultFailover, Duration: time.Minute},
			lost: transport.KindProtocol, redial: transport.KindHubNotFound},
		{name: "throttled", fault: hubsim.Fault{Kind: hubsim.FaultAMQPReject, Duration: time.Minute,
			Condition: "com.microsoft:device-container-throttled"}, lost: transport.KindThrottled,
			sendKind: transport.KindThrottled},
		{name: "quota", fault: hubsim.Fault{Kind: hubsim.FaultAMQPReject, Duration: time.Minute,
			Condition: "amqp:resource-limit-exceeded"}, lost: transport.KindQuota, sendKind: transport.KindQuota},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHub(t)
			key := transporttest.AddDevice(t, h, "dev1")
			r := transporttest.NewRecorder()
			p := params(t, h, "dev1", key, r, time.Hour)
			c := mustDial(t, NewDialer(), p)
			f := tc.fault
			if f.Kind != hubsim.FaultFailover {
				f.Device = "dev1"
			}
			if err := h.Fault(f); err != nil {
				t.Fatal(err)
			}
			if tc.sendKind != 0 {
				if err := send(t, c, &transport.Message{Payload: []byte("x")}); transport.KindOf(err) != tc.sendKind {
					t.Fatalf("send: %v, want kind %v", err, tc.sendKind)
				}
			}
			if e := r.ExpectLoss(t); e.Kind != tc.lost {
				t.Fatalf("loss %v (kind %v), want %v", e, e.Kind, tc.lost)
			}
			if err := send(t, c, &transport.Message{Payload: []byte("x")}); err == nil {
				t.Fatal("a send on the lost link succeeded")
			}
			c.Close()
			if tc.sendKind != 0 {
				return // the rejection lasts; the engine waits on the throttling schedule
			}
			p.Token = token(t, h, "dev1", key, time.Hour) // rotate-key: still the old key
			c2, err := NewDialer().Dial(ctxLimit(t), p)
			if err == nil {
				c2.Close()
			}
			if k := transport.KindOf(err); err != nil && k != tc.redial || err == nil && tc.redial != 0 {
				t.Fatalf("redial: %v (kind %v), want kind %v", err, k, tc.redial)
			}
			r.ExpectNoLoss(t)
		})
	}
}

// TestDroppedPutTokenReplyTimesOut: a put-token the hub never answers ends the dial with KindTimeout when its
// context does.
func TestDroppedPutTokenReplyTimesOut(t *testing.T) {
	h := startHub(t)
	r := transporttest.NewRecorder()
	p := params(t, h, "dev1", transporttest.AddDevice(t, h, "dev1"), r, time.Hour)
	if err := h.Fault(hubsim.Fault{Kind: hubsim.FaultAMQPDropCBS, Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	c, err := NewDialer().Dial(ctx, p)
	if err == nil {
		c.Close()
	}
	if k := transport.KindOf(err); k != transport.KindTimeout {
		t.Fatalf("dial: %v (kind %v), want a timeout", err, k)
	}
}
