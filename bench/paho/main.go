// Command paho-bench is the baseline of bench/run.sh: raw paho.mqtt.golang publishing QoS 1 telemetry as IoT
// Hub expects it (same user name, SAS token and topic as iotconn), pipelined: publish N, then wait for N acks.
// It prints one line per round, in the format of the C ABI benchmark:
//
//	round=R msgs=N seconds=S rate=MSG_PER_S
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotconn/iotconn/core/iothub"
)

func main() {
	connStr := flag.String("connstr", "", "device connection string (HostName=...;DeviceId=...;SharedAccessKey=...)")
	caFile := flag.String("ca", "", "PEM file of the broker's CA")
	n := flag.Int("n", 20000, "messages per round")
	rounds := flag.Int("rounds", 5, "rounds")
	size := flag.Int("payload", 256, "payload bytes")
	flag.Parse()
	if err := run(*connStr, *caFile, *n, *rounds, *size); err != nil {
		fmt.Fprintln(os.Stderr, "paho-bench:", err)
		os.Exit(1)
	}
}

func parseConnStr(s string) (map[string]string, error) {
	fields := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("connection string part %q has no '='", part)
		}
		fields[k] = v
	}
	for _, k := range []string{"HostName", "DeviceId", "SharedAccessKey"} {
		if fields[k] == "" {
			return nil, fmt.Errorf("connection string has no %s", k)
		}
	}
	return fields, nil
}

func run(connStr, caFile string, n, rounds, size int) error {
	cs, err := parseConnStr(connStr)
	if err != nil {
		return err
	}
	host, device := cs["HostName"], cs["DeviceId"]
	token, err := iothub.BuildSAS(iothub.ResourceURI(host, device, ""), cs["SharedAccessKey"], "",
		time.Now().Add(time.Hour))
	if err != nil {
		return err
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return errors.New("no certificate in " + caFile)
	}
	serverName, _, _ := strings.Cut(host, ":")
	opts := mqtt.NewClientOptions().
		AddBroker("ssl://" + host).
		SetClientID(iothub.ClientID(device, "")).
		SetUsername(iothub.Username(host, device, "")).
		SetPassword(token).
		SetTLSConfig(&tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetCleanSession(false)
	client := mqtt.NewClient(opts)
	if t := client.Connect(); !t.WaitTimeout(time.Minute) || t.Error() != nil {
		return fmt.Errorf("connect: %v", t.Error())
	}
	defer client.Disconnect(250)

	topic := iothub.TelemetryTopic(device, "", "")
	payload := []byte(strings.Repeat("x", size))
	tokens := make([]mqtt.Token, n)
	for r := 1; r <= rounds; r++ {
		start := time.Now()
		for i := range tokens {
			tokens[i] = client.Publish(topic, 1, false, payload)
		}
		for _, t := range tokens {
			if !t.WaitTimeout(5*time.Minute) || t.Error() != nil {
				return fmt.Errorf("publish: %v", t.Error())
			}
		}
		elapsed := time.Since(start).Seconds()
		fmt.Printf("round=%d msgs=%d seconds=%.3f rate=%.0f\n", r, n, elapsed, float64(n)/elapsed)
	}
	return nil
}
