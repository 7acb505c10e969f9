package amqp

import (
	"bytes"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
)

// TestMessageInterop: a message go-amqp encodes decodes here with every section, ids in their wire types and
// application properties in wire order; one encoded here decodes in go-amqp.
func TestMessageInterop(t *testing.T) {
	id := goamqp.UUID{1, 2, 3}
	ct := "application/json"
	in := goamqp.NewMessage([]byte("body"))
	in.Properties = &goamqp.MessageProperties{MessageID: id, CorrelationID: uint64(7), ContentType: &ct}
	in.ApplicationProperties = map[string]any{"a": "1"}
	in.Annotations = goamqp.Annotations{"iothub-interface-id": "x"}
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	m, err := UnmarshalMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Properties.MessageID != UUID(id) || m.Properties.CorrelationID != uint64(7) || m.Properties.ContentType != Symbol(ct) {
		t.Fatalf("properties %+v", m.Properties)
	}
	if v, _ := m.ApplicationProperties.Get("a"); v != "1" {
		t.Fatalf("application properties %v", m.ApplicationProperties)
	}
	if v, _ := m.MessageAnnotations.Get(Symbol("iothub-interface-id")); v != "x" || !bytes.Equal(m.Body(), []byte("body")) {
		t.Fatalf("annotations %v, body %q", m.MessageAnnotations, m.Body())
	}

	out := &Message{Properties: &Properties{CorrelationID: UUID(id), To: "cbs", AbsoluteExpiry: time.UnixMilli(5)},
		ApplicationProperties: Map{{"status-code", int32(200)}}, MessageAnnotations: Map{{Symbol("status"), int32(204)}},
		Value: "v", HasValue: true}
	b, err = out.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var g goamqp.Message
	if err := g.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if g.Properties.CorrelationID != id || g.ApplicationProperties["status-code"] != int32(200) ||
		g.Annotations["status"] != int32(204) || g.Value != "v" || *g.Properties.To != "cbs" {
		t.Fatalf("go-amqp read %+v %+v", g, g.Properties)
	}
}
