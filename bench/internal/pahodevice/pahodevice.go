// Package pahodevice connects raw paho.mqtt.golang to IoT Hub the way iotconn does on the wire, as the baseline
// the benchmarks compare against.
package pahodevice

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotconn/iotconn/core/iothub"
)

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

// Connect does what iotconn_client_create + iotconn_connect do on the wire: a fresh client with a fresh SAS
// token, CONNECT, then the device's C2D SUBSCRIBE at QoS 1, waiting for the SUBACK. It returns the client and the
// device's telemetry topic.
func Connect(connStr, caFile string) (mqtt.Client, string, error) {
	cs, err := parseConnStr(connStr)
	if err != nil {
		return nil, "", err
	}
	host, device := cs["HostName"], cs["DeviceId"]
	token, err := iothub.BuildSAS(iothub.ResourceURI(host, device, ""), cs["SharedAccessKey"], "",
		time.Now().Add(time.Hour))
	if err != nil {
		return nil, "", err
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, "", err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, "", errors.New("no certificate in " + caFile)
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
		return nil, "", fmt.Errorf("connect: %v", t.Error())
	}
	if t := client.Subscribe(iothub.C2DPrefix(device)+"#", 1, nil); !t.WaitTimeout(time.Minute) || t.Error() != nil {
		client.Disconnect(250)
		return nil, "", fmt.Errorf("subscribe: %v", t.Error())
	}
	return client, iothub.TelemetryTopic(device, "", ""), nil
}
