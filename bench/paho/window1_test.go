package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotconn/iotconn/bench/internal/pahodevice"
	"github.com/iotconn/iotconn/core"
	"github.com/iotconn/iotconn/hubsim"
)

var (
	hubConnStr = flag.String("hub-connstr", "", "a device of a running hub (default: an in-process hubsim)")
	hubCA      = flag.String("hub-ca", "", "that hub's CA file")
)

// BenchmarkWindow1 is bench/run.sh's window1 case at the Go level, for CPU profiles and execution traces of the
// engine's path from Send to the completion handler: send one QoS 1 message of 256 bytes, wait for its
// completion, then the next, through core.Client (what the C ABI adds: the cgo call into iotconn_send, the
// callback into C and the wake-up of the C thread) and through raw paho (Publish, wait for the token). The hub is
// an in-process hubsim, or a running one given with -args -hub-connstr CS -hub-ca FILE.
//
//	go test -run - -bench Window1 -benchtime 5000x -count 5 ./bench/paho/
//	go test -run - -bench Window1/iotconn -benchtime 5000x -trace w1.trace -cpuprofile w1.cpu ./bench/paho/
func BenchmarkWindow1(b *testing.B) {
	cs, ca := *hubConnStr, *hubCA
	if cs == "" {
		hub, err := hubsim.Start(hubsim.Config{Dir: b.TempDir(), MQTTAddr: "127.0.0.1:0"})
		if err != nil {
			b.Fatal(err)
		}
		defer hub.Close()
		if _, err := hub.AddDevice("dev1", ""); err != nil {
			b.Fatal(err)
		}
		if cs, err = hub.ConnectionString("dev1"); err != nil {
			b.Fatal(err)
		}
		ca = hub.CAFile()
	}
	payload := []byte(strings.Repeat("x", 256))

	b.Run("paho", func(b *testing.B) {
		client, topic, err := pahodevice.Connect(cs, ca)
		if err != nil {
			b.Fatal(err)
		}
		defer client.Disconnect(250)
		window1(b, func() error {
			t := client.Publish(topic, 1, false, payload)
			t.Wait()
			return t.Error()
		})
	})

	b.Run("iotconn", func(b *testing.B) {
		c, err := core.NewClient(cs, core.Options{CAFile: ca})
		if err != nil {
			b.Fatal(err)
		}
		defer func() {
			c.Close()
			<-c.Done()
		}()
		done := make(chan core.SendResult, 1)
		c.SetHandlers(core.Handlers{OnSendComplete: func(_ uint64, res core.SendResult, _ *core.Error) { done <- res }})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Connect(ctx); err != nil {
			b.Fatal(err)
		}
		msg := &core.Message{Payload: payload}
		window1(b, func() error {
			if _, err := c.Send(msg); err != nil {
				return err
			}
			if res := <-done; res != core.SendDelivered {
				return fmt.Errorf("send result %d", res)
			}
			return nil
		})
	})
}

// window1 runs one b.N times, one after the other, and reports msgs/s and the p50 and p99 of its durations.
func window1(b *testing.B, one func() error) {
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range lat {
		t0 := time.Now()
		if err := one(); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t0)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(quantile(lat, 0.50), "p50-us")
	b.ReportMetric(quantile(lat, 0.99), "p99-us")
}
