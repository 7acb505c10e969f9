// Command paho-bench is the baseline of bench/run.sh: raw paho.mqtt.golang publishing QoS 1 telemetry as IoT
// Hub expects it (same user name, SAS token and topic as iotconn, and the same C2D SUBSCRIBE after CONNECT). It
// prints one line per round, in the format of the C ABI benchmark (bench/c/throughput.c) for the same mode:
//
//	pipelined: publish N, then wait for the N tokens
//	  round=R msgs=N seconds=S rate=MSG_PER_S
//	window1: publish one message and wait for its token, then the next; latency = Publish to the token's end
//	  round=R msgs=N seconds=S rate=MSG_PER_S p50_us=US p99_us=US
//	connect: every round is one fresh client, from the connection string to the SUBACK (SAS token, CA file, TLS
//	configuration, CONNECT, SUBSCRIBE), then Disconnect (not timed)
//	  round=R connect_us=US
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotconn/iotconn/bench/internal/pahodevice"
)

func main() {
	mode := flag.String("mode", "pipelined", "pipelined, window1 or connect")
	connStr := flag.String("connstr", "", "device connection string (HostName=...;DeviceId=...;SharedAccessKey=...)")
	caFile := flag.String("ca", "", "PEM file of the broker's CA")
	n := flag.Int("n", 20000, "messages per round (unused by connect)")
	rounds := flag.Int("rounds", 5, "rounds (connect: fresh clients)")
	size := flag.Int("payload", 256, "payload bytes")
	flag.Parse()
	var err error
	switch *mode {
	case "pipelined", "window1":
		err = runSends(*mode, *connStr, *caFile, *n, *rounds, *size)
	case "connect":
		err = runConnects(*connStr, *caFile, *rounds)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "paho-bench:", err)
		os.Exit(1)
	}
}

func runConnects(connStr, caFile string, rounds int) error {
	for r := 1; r <= rounds; r++ {
		start := time.Now()
		client, _, err := pahodevice.Connect(connStr, caFile)
		if err != nil {
			return err
		}
		elapsed := time.Since(start)
		client.Disconnect(250)
		fmt.Printf("round=%d connect_us=%.0f\n", r, float64(elapsed.Nanoseconds())/1e3)
	}
	return nil
}

func runSends(mode, connStr, caFile string, n, rounds, size int) error {
	client, topic, err := pahodevice.Connect(connStr, caFile)
	if err != nil {
		return err
	}
	defer client.Disconnect(250)
	payload := []byte(strings.Repeat("x", size))
	tokens := make([]mqtt.Token, n)
	lat := make([]time.Duration, n)
	wait := func(t mqtt.Token) error {
		if !t.WaitTimeout(5*time.Minute) || t.Error() != nil {
			return fmt.Errorf("publish: %v", t.Error())
		}
		return nil
	}
	for r := 1; r <= rounds; r++ {
		start := time.Now()
		if mode == "window1" {
			for i := range lat {
				t0 := time.Now()
				if err := wait(client.Publish(topic, 1, false, payload)); err != nil {
					return err
				}
				lat[i] = time.Since(t0)
			}
		} else {
			for i := range tokens {
				tokens[i] = client.Publish(topic, 1, false, payload)
			}
			for _, t := range tokens {
				if err := wait(t); err != nil {
					return err
				}
			}
		}
		elapsed := time.Since(start).Seconds()
		fmt.Printf("round=%d msgs=%d seconds=%.3f rate=%.0f", r, n, elapsed, float64(n)/elapsed)
		if mode == "window1" {
			fmt.Printf(" p50_us=%.1f p99_us=%.1f", quantile(lat, 0.50), quantile(lat, 0.99))
		}
		fmt.Println()
	}
	return nil
}

// quantile is the q-quantile (nearest rank) of v, which it sorts, in microseconds.
func quantile(v []time.Duration, q float64) float64 {
	slices.Sort(v)
	rank := max(int(math.Ceil(q*float64(len(v)))), 1)
	return float64(v[rank-1].Nanoseconds()) / 1e3
}
