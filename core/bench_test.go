package core

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotconn/iotconn/hubsim"
)

// BenchmarkEngineSend measures QoS 1 telemetry through the whole engine (Send, queue, transport, completion
// event, dispatcher) against an in-process hubsim, pipelined: send b.N, then wait for b.N completions. Compare
// with BenchmarkPipelinedSend in core/transport/mqtt, which runs the transport alone and raw paho. Run with
// go test -run - -bench EngineSend -benchtime 20000x -count 5 ./core/
func BenchmarkEngineSend(b *testing.B) {
	hub, err := hubsim.Start(hubsim.Config{Dir: b.TempDir(), MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer hub.Close()
	if _, err := hub.AddDevice("dev1", ""); err != nil {
		b.Fatal(err)
	}
	cs, err := hub.ConnectionString("dev1")
	if err != nil {
		b.Fatal(err)
	}
	c, err := NewClient(cs, Options{CAFile: hub.CAFile(), QueueMaxMessages: b.N + 1})
	if err != nil {
		b.Fatal(err)
	}
	defer closeAndWait(c)
	var left atomic.Int64
	left.Store(int64(b.N))
	var failed atomic.Int64
	finished := make(chan struct{})
	c.SetHandlers(Handlers{OnSendComplete: func(_ uint64, res SendResult, _ *Error) {
		if res != SendDelivered {
			failed.Add(1)
		}
		if left.Add(-1) == 0 {
			close(finished)
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	msg := &Message{Payload: []byte(strings.Repeat("x", 256))}
	b.ResetTimer()
	for range b.N {
		if _, err := c.Send(msg); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-finished:
	case <-time.After(time.Minute):
		b.Fatalf("%d sends not completed", left.Load())
	}
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d sends not delivered", n)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
