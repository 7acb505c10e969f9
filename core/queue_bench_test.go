package core

import (
	"strings"
	"sync"
	"testing"
)

// BenchmarkQueueSend measures what Send costs its caller with the client never connected, so only the queue is
// measured: memory mode; durable mode with one sender (every Send waits for its own fsync); durable mode with 8
// concurrent senders (a commit carries every Send that waited meanwhile, so they share fsyncs). Run with
// bench/queue.sh, which writes bench/results/queue.txt.
func BenchmarkQueueSend(b *testing.B) {
	for _, tc := range []struct {
		name    string
		durable bool
		senders int
	}{{"memory", false, 1}, {"durable-1-sender", true, 1}, {"durable-8-senders", true, 8}} {
		b.Run(tc.name, func(b *testing.B) {
			opts := Options{QueueMaxMessages: b.N + 1}
			if tc.durable {
				opts.QueueDir = b.TempDir()
			}
			c, err := newClient(testConnStr(), opts, newFakeDialer())
			if err != nil {
				b.Fatal(err)
			}
			defer closeAndWait(c)
			msg := &Message{Payload: []byte(strings.Repeat("x", 256))}
			errs := make(chan error, tc.senders)
			var wg sync.WaitGroup
			b.ResetTimer()
			for s := range tc.senders {
				wg.Go(func() {
					for i := s; i < b.N; i += tc.senders {
						if _, err := c.Send(msg); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
		})
	}
}
