package hubsim

import (
	"testing"

	"github.com/iotconn/iotconn/core/iothub"
)

// BenchmarkTelemetryQoS1 measures D2C messages over TLS, each awaiting its PUBACK, recorded by the hub.
func BenchmarkTelemetryQoS1(b *testing.B) {
	h, err := Start(Config{Dir: b.TempDir(), MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	d, err := h.AddDevice("d1", "")
	if err != nil {
		b.Fatal(err)
	}
	dv, code, err := connect(b, h, validCreds(b, h, d), "")
	if err != nil {
		b.Fatalf("connect: %d %v", code, err)
	}
	defer dv.client.Disconnect(0)
	topic := iothub.TelemetryTopic("d1", "", "%24.mid=x&k=v")
	payload := make([]byte, 256)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if tok := dv.client.Publish(topic, 1, false, payload); !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
			b.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	b.StopTimer()
	if n := len(h.Messages("d1")); n != b.N {
		b.Fatalf("recorded %d of %d", n, b.N)
	}
}
