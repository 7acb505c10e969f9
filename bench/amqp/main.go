// Command amqp-bench is the AMQP baseline of bench/run.sh: raw github.com/Azure/go-amqp sending telemetry as IoT
// Hub expects it (TLS, SASL ANONYMOUS, a CBS put-token on $cbs, one session and the events sender link, as
// iotconn's AMQP transport does). It prints one line per round in the format of the C ABI benchmark
// (bench/c/throughput.c):
//
//	pipelined: send N with a receipt each, then wait for the N settlements
//	  round=R msgs=N seconds=S rate=MSG_PER_S
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/iotconn/iotconn/core/iothub"
)

func main() {
	connStr := flag.String("connstr", "", "HostName=...;DeviceId=...;SharedAccessKey=...[;GatewayHostName=host:port]")
	caFile := flag.String("ca", "", "PEM file of the hub's CA")
	n := flag.Int("n", 20000, "messages per round")
	rounds := flag.Int("rounds", 5, "rounds")
	size := flag.Int("payload", 256, "payload bytes")
	flag.Parse()
	if err := run(*connStr, *caFile, *n, *rounds, *size); err != nil {
		fmt.Fprintln(os.Stderr, "amqp-bench:", err)
		os.Exit(1)
	}
}

func run(connStr, caFile string, n, rounds, size int) error {
	cs := map[string]string{}
	for _, part := range strings.Split(connStr, ";") {
		k, v, _ := strings.Cut(part, "=")
		cs[k] = v
	}
	host, device, addr := cs["HostName"], cs["DeviceId"], cs["GatewayHostName"]
	if addr == "" {
		addr = host
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return errors.New("no certificate in " + caFile)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	serverName, _, _ := net.SplitHostPort(addr)
	conn, err := goamqp.Dial(ctx, "amqps://"+addr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypeAnonymous(),
		HostName: serverName, TLSConfig: &tls.Config{RootCAs: roots, ServerName: serverName}})
	if err != nil {
		return err
	}
	defer conn.Close()
	aud := iothub.ResourceURI(host, device, "")
	token, err := iothub.BuildSAS(aud, cs["SharedAccessKey"], "", time.Now().Add(time.Hour))
	if err != nil {
		return err
	}
	if err := putToken(ctx, conn, aud, token); err != nil {
		return err
	}
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		return err
	}
	snd, err := sess.NewSender(ctx, "/devices/"+device+"/messages/events", nil)
	if err != nil {
		return err
	}
	payload := []byte(strings.Repeat("x", size))
	receipts := make([]goamqp.SendReceipt, n)
	for r := 1; r <= rounds; r++ {
		start := time.Now()
		for i := range receipts {
			m := goamqp.NewMessage(payload)
			m.Properties = &goamqp.MessageProperties{MessageID: fmt.Sprintf("b%d-%d", r, i)}
			if receipts[i], err = snd.SendWithReceipt(context.Background(), m, nil); err != nil {
				return err
			}
		}
		for i := range receipts {
			st, err := receipts[i].Wait(context.Background())
			if err != nil {
				return err
			}
			if _, ok := st.(*goamqp.StateAccepted); !ok {
				return fmt.Errorf("message %d settled %T", i, st)
			}
		}
		elapsed := time.Since(start).Seconds()
		fmt.Printf("round=%d msgs=%d seconds=%.3f rate=%.0f\n", r, n, elapsed, float64(n)/elapsed)
	}
	return nil
}

// putToken authorises the device on the connection: a put-token on $cbs and its 200.
func putToken(ctx context.Context, conn *goamqp.Conn, audience, token string) error {
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		return err
	}
	snd, err := sess.NewSender(ctx, "$cbs", nil)
	if err != nil {
		return err
	}
	rcv, err := sess.NewReceiver(ctx, "$cbs", nil)
	if err != nil {
		return err
	}
	to, replyTo := "$cbs", "cbs"
	req := &goamqp.Message{Value: token, Properties: &goamqp.MessageProperties{MessageID: uint64(1), To: &to,
		ReplyTo: &replyTo}, ApplicationProperties: map[string]any{"operation": "put-token",
		"type": "servicebus.windows.net:sastoken", "name": audience}}
	if err := snd.Send(ctx, req, nil); err != nil {
		return err
	}
	reply, err := rcv.Receive(ctx, nil)
	if err != nil {
		return err
	}
	if st := reply.ApplicationProperties["status-code"]; st != int32(200) {
		return fmt.Errorf("put-token answered %v", st)
	}
	return nil
}
