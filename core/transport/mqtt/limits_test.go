package mqtt

import (
	"strings"
	"testing"

	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
)

// FuzzTopicLenMatchesTheTopic: the length CheckMessage limits is the length of the topic Send publishes, for any
// fields; a message without an id counts the longest id the engine generates.
func FuzzTopicLenMatchesTheTopic(f *testing.F) {
	f.Add("m1", "c", "application/json", "utf-8", "k", "v w&x=y")
	f.Add("", "", "", "", "$.mid", "")
	f.Add("", "ü", "%", "+", "a/b?c#", "\xff")
	f.Fuzz(func(t *testing.T, mid, cid, ct, ce, key, value string) {
		c := newConn(transport.DialParams{DeviceID: "dev1", ModuleID: "mod", Handler: nopHandler{}})
		defer c.Close()
		m := &transport.Message{MessageID: mid, CorrelationID: cid, ContentType: ct, ContentEncoding: ce,
			Properties: [][2]string{{key, value}, {"second", key}}}
		want := m
		if mid == "" {
			generated := *m
			generated.MessageID = strings.Repeat("x", iothub.MaxGeneratedMessageIDLength)
			want = &generated
		}
		if got, topic := topicLen(c.eventsPrefix, m), c.telemetryTopic(want); got != len(topic) {
			t.Fatalf("topicLen %d, topic %q is %d bytes", got, topic, len(topic))
		}
	})
}

type nopHandler struct{}

func (nopHandler) OnMessage(*transport.Message)      {}
func (nopHandler) OnInbound(*transport.Inbound)      {}
func (nopHandler) OnConnectionLost(*transport.Error) {}

func TestCheckMessageStopsAtMQTTsTopicLimit(t *testing.T) {
	d := NewDialer()
	prefix := len(iothub.TelemetryTopic("dev1", "", "")) + len("%24.mid=m1&k=")
	fill := func(n int) *transport.Message { // '&' percent-encodes to three bytes, 'a' to one
		v := strings.Repeat("&", n/3) + strings.Repeat("a", n%3)
		return &transport.Message{MessageID: "m1", Properties: [][2]string{{"k", v}}}
	}
	if err := d.CheckMessage("dev1", "", fill(MaxTopicLength-prefix)); err != nil {
		t.Fatalf("a topic of exactly %d bytes: %v", MaxTopicLength, err)
	}
	err := d.CheckMessage("dev1", "", fill(MaxTopicLength-prefix+1))
	if transport.KindOf(err) != transport.KindTooLarge || !strings.Contains(err.Error(), "65535") {
		t.Fatalf("a topic of %d bytes: %v, want too large naming the limit", MaxTopicLength+1, err)
	}
}

func TestCheckIdentityRefusesMQTTWildcards(t *testing.T) {
	d := NewDialer()
	for _, c := range []struct{ device, module, names string }{
		{"a+b", "", "DeviceId"}, {"a#", "", "DeviceId"}, {"dev", "m+", "ModuleId"},
	} {
		err := d.CheckIdentity(c.device, c.module)
		if transport.KindOf(err) != transport.KindProtocol || !strings.Contains(err.Error(), c.names) {
			t.Errorf("%q/%q: %v, want a refusal naming %s", c.device, c.module, err, c.names)
		}
	}
	if err := d.CheckIdentity("dev-1.$'(x)", "mod:1"); err != nil {
		t.Errorf("ordinary ids refused: %v", err)
	}
}
