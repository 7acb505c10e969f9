package hubsim

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// BenchmarkReportedPatches10k sends b.N reported-properties patches, spread over 10 000 registered devices, from 64
// goroutines (a fleet reporting its twin at connect), while a control API client lists the devices in a loop. Each
// patch is timed until hubsim would answer 204, as the MQTT front calls patchReported; the metrics are the patches'
// and the GET /devices' latencies.
func BenchmarkReportedPatches10k(b *testing.B) {
	const devices, workers = 10000, 64
	h := startHub(b, func(c *Config) { c.ControlAddr = "127.0.0.1:0" })
	specs := fleet(devices)
	if _, err := h.AddDevices(specs); err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	listed := make(chan []time.Duration)
	go func() {
		var lat []time.Duration
		for {
			select {
			case <-stop:
				listed <- lat
				return
			default:
			}
			start := time.Now()
			resp, err := http.Get(h.ControlURL() + "/devices")
			if err != nil {
				b.Error(err)
				listed <- lat
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			lat = append(lat, time.Since(start))
		}
	}()
	patched := make([][]time.Duration, workers)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				body := []byte(fmt.Sprintf(`{"seq":%d,"fw":"1.2.3","battery":{"level":87,"charging":false}}`, i))
				start := time.Now()
				if _, err := h.patchReported(identity{device: specs[i%devices].ID}, body); err != nil {
					b.Error(err)
					return
				}
				patched[w] = append(patched[w], time.Since(start))
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(stop)
	lists := <-listed
	reportLatencies(b, "patch", slices.Concat(patched...))
	reportLatencies(b, "list", lists)
}

// reportLatencies reports the median, the 99th percentile and the worst of lat, in milliseconds.
func reportLatencies(b *testing.B, name string, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(lat[len(lat)/2]), name+"-p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), name+"-p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), name+"-max-ms")
}
