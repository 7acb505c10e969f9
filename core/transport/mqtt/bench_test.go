package mqtt

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/transporttest"
	"github.com/iotconn/iotconn/hubsim"
)

// benchHub is a fresh hub per run: hubsim keeps every message, and a fuller hub is a slower one.
func benchHub(b *testing.B) (*hubsim.Hub, string) {
	h := startHub(b, hubsim.Config{})
	return h, transporttest.AddDevice(b, h, "dev1")
}

// BenchmarkPipelinedSend compares QoS 1 telemetry through this transport with raw paho publishing the same
// bytes to the same in-process hubsim: publish b.N messages, then wait for every PUBACK. Run with
// go test -run - -bench PipelinedSend -benchtime 20000x -count 5 ./core/transport/mqtt/
func BenchmarkPipelinedSend(b *testing.B) {
	payload := []byte(strings.Repeat("x", 256))

	b.Run("paho", func(b *testing.B) {
		h, key := benchHub(b)
		p := params(b, h, "dev1", key, nil)
		tlsConf := p.TLS.Clone()
		tlsConf.ServerName = "localhost"
		client := paho.NewClient(paho.NewClientOptions().
			AddBroker("ssl://" + p.Host).
			SetClientID(iothub.ClientID("dev1", "")).
			SetUsername(iothub.Username(p.Host, "dev1", "")).
			SetPassword(p.Token).
			SetTLSConfig(tlsConf).
			SetProtocolVersion(4).
			SetAutoReconnect(false).
			SetConnectRetry(false).
			SetCleanSession(false))
		if tok := client.Connect(); !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
			b.Fatal("connect:", tok.Error())
		}
		defer client.Disconnect(disconnectQuiesce)
		topic := iothub.TelemetryTopic("dev1", "", "")
		tokens := make([]paho.Token, b.N)
		b.ResetTimer()
		for i := range tokens {
			tokens[i] = client.Publish(topic, 1, false, payload)
		}
		for _, tok := range tokens {
			if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
				b.Fatal("publish:", tok.Error())
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})

	same := func(n int) []*transport.Message {
		m := &transport.Message{Payload: payload}
		msgs := make([]*transport.Message, n)
		for i := range msgs {
			msgs[i] = m
		}
		return msgs
	}
	withID := func(n int) []*transport.Message {
		msgs := make([]*transport.Message, n)
		for i := range msgs {
			msgs[i] = &transport.Message{Payload: payload, MessageID: fmt.Sprintf("0123456789abcdef-%d", i)}
		}
		return msgs
	}
	for name, build := range map[string]func(int) []*transport.Message{"transport": same, "transport with $.mid": withID} {
		b.Run(name, func(b *testing.B) {
			h, key := benchHub(b)
			c, err := dial(params(b, h, "dev1", key, transporttest.NewRecorder()))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msgs := build(b.N)
			var left atomic.Int64
			left.Store(int64(b.N))
			var failed atomic.Pointer[error]
			finished := make(chan struct{})
			done := func(err error) {
				if err != nil {
					failed.CompareAndSwap(nil, &err)
				}
				if left.Add(-1) == 0 {
					close(finished)
				}
			}
			b.ResetTimer()
			for _, m := range msgs {
				c.Send(m, done)
			}
			select {
			case <-finished:
			case <-time.After(time.Minute):
				b.Fatalf("%d sends not completed", left.Load())
			}
			if err := failed.Load(); err != nil {
				b.Fatal("send:", *err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
