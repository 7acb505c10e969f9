package amqp

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// TestFrameRoundTrip writes each performative the server sends or reads and parses it back.
func TestFrameRoundTrip(t *testing.T) {
	one, two := uint32(1), uint32(2)
	second := ReceiverSecond
	for _, body := range []performer{
		&open{containerID: "c", hostname: "h", maxFrameSize: 512, channelMax: 9, idleTimeout: time.Second,
			properties: Map{{Symbol("p"), "v"}}},
		&begin{remoteChannel: new(uint16), nextOutgoingID: 1, incomingWindow: 2, outgoingWindow: 3, handleMax: 4},
		&attach{name: "l", handle: 3, role: roleReceiver, sndSettleMode: SenderSettled, rcvSettleMode: ReceiverSecond,
			source: &terminus{address: "/a", raw: fields{"/a"}}, target: &terminus{address: "b", raw: fields{"b"}},
			initialCount: &one, maxMessageSize: 1 << 40, properties: Map{{Symbol("k"), int32(1)}}},
		&flow{nextIncomingID: &one, incomingWindow: 5, nextOutgoingID: 6, outgoingWindow: 7, handle: &two,
			deliveryCount: &one, linkCredit: &two, drain: true, echo: true},
		&transfer{handle: 1, deliveryID: &two, deliveryTag: []byte{1}, messageFormat: &one, settled: true, more: true,
			rcvSettleMode: &second, state: Rejected{Error: Errorf(CondNotFound, "x")}, aborted: true},
		&disposition{role: roleReceiver, first: 1, last: &two, settled: true, state: Modified{DeliveryFailed: true}},
		&disposition{role: roleSender, first: 1, state: Received{SectionNumber: 1, SectionOffset: 2}},
		&detach{handle: 4, closed: true, err: &Error{Condition: CondDetachForced, Info: Map{{Symbol("a"), "b"}}}},
		&end{}, &closeFrame{err: Errorf(CondConnectionForced, "bye")},
		&saslInit{mechanism: "PLAIN", initial: []byte("\x00u\x00p"), hostname: "h"},
	} {
		b, err := appendFrame(nil, frameAMQP, 7, body, []byte("payload"))
		if err != nil {
			t.Fatal(err)
		}
		fr, err := parseFrame(b)
		if _, isTransfer := body.(*transfer); !isTransfer {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("%T with a payload: %v", body, err)
			}
			b, _ = appendFrame(nil, frameAMQP, 7, body, nil)
			fr, err = parseFrame(b)
		}
		if err != nil {
			t.Fatalf("%T: %v", body, err)
		}
		if fr.channel != 7 || !reflect.DeepEqual(normalise(fr.body), normalise(body)) {
			t.Fatalf("%#v came back as %#v", body, fr.body)
		}
	}
}

// normalise drops what the parser keeps only for echoing (a terminus's raw fields).
func normalise(p any) any {
	if a, ok := p.(*attach); ok {
		c := *a
		c.source, c.target = &terminus{address: a.source.address}, &terminus{address: a.target.address}
		return &c
	}
	return p
}
