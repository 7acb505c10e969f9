package hubsim

import (
	"io"
	"net/http"
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

// BenchmarkAddDevices registers a fleet of 2000 on a fresh hub, one AddDevice per device (a registry write each)
// against one AddDevices call (one write).
func BenchmarkAddDevices(b *testing.B) {
	specs := fleet(2000)
	for _, bc := range []struct {
		name string
		add  func(h *Hub) error
	}{
		{"one-by-one", func(h *Hub) error {
			for _, s := range specs {
				if _, err := h.AddDevice(s.ID, ""); err != nil {
					return err
				}
			}
			return nil
		}},
		{"bulk", func(h *Hub) error {
			_, err := h.AddDevices(specs)
			return err
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				h, err := Start(Config{Dir: b.TempDir(), MQTTAddr: "127.0.0.1:0"})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				err = bc.add(h)
				b.StopTimer()
				_ = h.Close()
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkListDevices10k measures one control API GET /devices with 10 000 registered devices.
func BenchmarkListDevices10k(b *testing.B) {
	h := startHub(b, func(c *Config) { c.ControlAddr = "127.0.0.1:0" })
	if _, err := h.AddDevices(fleet(10000)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := http.Get(h.ControlURL() + "/devices")
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("GET /devices: %d, %v", resp.StatusCode, err)
		}
		b.SetBytes(n)
	}
}
