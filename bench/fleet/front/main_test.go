package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// echoServer stands in for hubsim: it echoes whatever a connection sends until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.Copy(c, c)
				_ = c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func startFront(t *testing.T, log io.Writer) *front {
	t.Helper()
	f, err := newFront("127.0.0.1:0", echoServer(t), log)
	if err != nil {
		t.Fatal(err)
	}
	go f.serve()
	return f
}

func dial(t *testing.T, f *front) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", f.ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// roundTrip reports nil when c is forwarded (its bytes come back), the read error otherwise.
func roundTrip(c net.Conn) error {
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	_, err := io.ReadFull(c, buf)
	return err
}

func wantReset(t *testing.T, c net.Conn) {
	t.Helper()
	buf := make([]byte, 1)
	if _, err := c.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("want a TCP reset, got %v", err)
	}
}

// wantDialReset connects to f and wants the front to reset the connection. The reset may come before the dial
// returns: on loopback the front can accept and reset before the client's connect has collected its result.
func wantDialReset(t *testing.T, f *front) {
	t.Helper()
	c, err := net.DialTimeout("tcp", f.ln.Addr().String(), 5*time.Second)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("want a TCP reset, got %v", err)
		}
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	wantReset(t, c)
}

// verdicts is the sequence of per-connection verdicts and events in the log, markers as their first word.
func verdicts(log string) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		fields := strings.Fields(line)
		if fields[1] == "#" {
			out = append(out, fields[2])
		} else {
			out = append(out, fields[1])
		}
	}
	return out
}

func TestDownCountsResetsAndUpAdmitsAtRate(t *testing.T) {
	var log bytes.Buffer
	f := startFront(t, &log)

	live := dial(t, f)
	if err := roundTrip(live); err != nil {
		t.Fatalf("forwarding: %v", err)
	}
	if n := f.setDown(); n != 1 {
		t.Fatalf("down killed %d connections, want 1", n)
	}
	wantReset(t, live)
	wantDialReset(t, f) // accepted, counted, reset

	f.setUp(2, false, 0)
	for i := 0; i < 2; i++ {
		if err := roundTrip(dial(t, f)); err != nil {
			t.Fatalf("admitted connection %d: %v", i, err)
		}
	}
	wantDialReset(t, f) // the third within a second is over the rate

	s := f.stats()
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	want := stats{Attempts: 5, Forwarded: 3, ResetDown: 1, ResetThrottled: 1, Live: 2}
	if s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
	got := strings.Join(verdicts(log.String()), " ")
	if got != "f down d up f f t" {
		t.Fatalf("log verdicts %q, want %q; log:\n%s", got, "f down d up f f t", log.String())
	}
}

func TestKillAllResetsEveryConnectionAndStaysUp(t *testing.T) {
	var log bytes.Buffer
	f := startFront(t, &log)
	conns := []net.Conn{dial(t, f), dial(t, f), dial(t, f)}
	for _, c := range conns {
		if err := roundTrip(c); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.killAll(); n != 3 {
		t.Fatalf("kill-all killed %d, want 3", n)
	}
	for _, c := range conns {
		wantReset(t, c)
	}
	if err := roundTrip(dial(t, f)); err != nil {
		t.Fatalf("after kill-all the front must still forward: %v", err)
	}
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(verdicts(log.String()), " "); got != "f f f kill-all f" {
		t.Fatalf("log verdicts %q; log:\n%s", got, log.String())
	}
}

// The driver stamps with clock_gettime(CLOCK_MONOTONIC); the front's times must be on the same line.
func TestLogTimesAreMonotonicMilliseconds(t *testing.T) {
	c := newMonoClock()
	time.Sleep(20 * time.Millisecond) // let Go's readings and the kernel's drift apart, if they would
	now := time.Now()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	kernel := float64(ts.Nano()) / 1e6
	if d := kernel - c.ms(now); d < 0 || d > 5 {
		t.Fatalf("front clock %.3f ms vs CLOCK_MONOTONIC %.3f ms", c.ms(now), kernel)
	}
}

// up?drop_ms=D: a hub that accepts and drops. The connection live before is dropped, each new one is forwarded
// and then reset; a plain up stops the drop timers of what is live.
func TestUpWithDropResetsEachConnectionAfterItsAccept(t *testing.T) {
	var log bytes.Buffer
	f := startFront(t, &log)
	before := dial(t, f)
	if err := roundTrip(before); err != nil {
		t.Fatal(err)
	}
	f.setUp(0, false, 50*time.Millisecond)
	wantReset(t, before)
	after := dial(t, f)
	wantReset(t, after)

	f.setUp(0, false, time.Hour)
	kept := dial(t, f)
	if err := roundTrip(kept); err != nil {
		t.Fatalf("forwarding under drop_ms: %v", err)
	}
	f.setUp(0, false, 0)
	f.mu.Lock()
	for p := range f.live {
		if p.drop.Stop() {
			t.Error("a live connection's drop timer still ran after an up without drop_ms")
		}
	}
	f.mu.Unlock()
	if err := roundTrip(kept); err != nil {
		t.Fatalf("after an up without drop_ms: %v", err)
	}

	s := f.stats()
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	if want := (stats{Attempts: 3, Forwarded: 3, Dropped: 2, Live: 1}); s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
	want := "f up r f r up f up"
	if got := strings.Join(verdicts(log.String()), " "); got != want {
		t.Fatalf("log verdicts %q, want %q; log:\n%s", got, want, log.String())
	}
}

// selfSigned is a throwaway server certificate standing in for hubsim's.
func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// Over the rate with refuse=mqtt, an attempt gets what IoT Hub gives a throttled MQTT connect: the TLS handshake
// succeeds, the CONNECT is read, and the connection closes without a CONNACK.
func TestUpRefusingTheMQTTWayClosesAfterTheConnect(t *testing.T) {
	var log bytes.Buffer
	f := startFront(t, &log)
	f.tls = selfSigned(t)
	f.setUp(1, true, 0)
	if err := roundTrip(dial(t, f)); err != nil {
		t.Fatalf("admitted connection: %v", err)
	}
	c := tls.Client(dial(t, f), &tls.Config{InsecureSkipVerify: true}) // the second within a second: over
	if err := c.Handshake(); err != nil {
		t.Fatalf("the refused attempt's TLS handshake: %v", err)
	}
	connect := []byte{0x10, 0x0c, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 0} // CONNECT, empty client id
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 4)); err != io.EOF {
		t.Fatalf("after the CONNECT: %d bytes, %v; want the connection closed without an answer", n, err)
	}
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(verdicts(log.String()), " "); got != "up f t" {
		t.Fatalf("log verdicts %q, want %q", got, "up f t")
	}
}
