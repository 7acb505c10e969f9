// Command fleet-front is bench/fleet's counting TCP front: a plain TCP proxy on 127.0.0.1 before hubsim's MQTT
// port that records every connection it accepts, so that attempts are counted even while the "hub" is down.
// TLS passes through untouched: devices verify hubsim's own certificate.
//
//	fleet-front -upstream 127.0.0.1:HUBPORT -log FILE [-listen 127.0.0.1:0] [-control 127.0.0.1:0]
//	            [-cert hubsim's server.pem -key hubsim's server-key.pem]
//
// It prints "front: listen ADDR", "front: control http://ADDR", then "front: ready". Control (HTTP, POST):
//
//	/down          reset every forwarded connection; from then on accept and reset at once (still counted)
//	/up?rate=R&drop_ms=D&refuse=HOW
//	               forward again, at most R new connections in any one second; no rate: all. The rest are
//	               refused as HOW says: "tcp" (the default) resets them at once, as a load balancer would;
//	               "mqtt" answers as IoT Hub does, completing the TLS handshake (with -cert and -key), reading
//	               the CONNECT and closing without a CONNACK, which a device takes for throttling.
//	               With drop_ms, reset each forwarded connection D ms after it was accepted (one accepted longer
//	               ago than that, at once): a hub that accepts and drops every connection. Without it, a live
//	               connection stays up.
//	/kill-all      reset every forwarded connection at once and stay up
//	GET /stats     the counts so far, as JSON
//
// The log has one line per accepted connection, "MS VERDICT" (f forwarded, d reset while down, t reset over the
// admission rate), "MS x" when forwarding one failed at hubsim's side (the device got a reset), "MS r" when a
// forwarded one was reset drop_ms after its accept, and "MS # EVENT" for each control command. MS is
// CLOCK_MONOTONIC in milliseconds, the clock the C driver stamps its events with, so both logs share one time
// line. The log is complete once the front exited (SIGTERM or SIGINT).
package main

import (
	"bufio"
	"cmp"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fleet-front:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("fleet-front", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address the devices connect to")
	control := fs.String("control", "127.0.0.1:0", "HTTP control address")
	upstream := fs.String("upstream", "", "hubsim's MQTT (TLS) address (required)")
	logPath := fs.String("log", "", "attempt log file (required)")
	certFile := fs.String("cert", "", "hubsim's server certificate, for refuse=mqtt")
	keyFile := fs.String("key", "", "hubsim's server key, for refuse=mqtt")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *upstream == "" || *logPath == "" || fs.NArg() > 0 {
		return errors.New("usage: fleet-front -upstream HOST:PORT -log FILE [-listen ADDR] [-control ADDR]")
	}
	file, err := os.Create(*logPath)
	if err != nil {
		return err
	}
	f, err := newFront(*listen, *upstream, file)
	if err != nil {
		return err
	}
	if *certFile != "" || *keyFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			f.close()
			return err
		}
		f.tls = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	cln, err := net.Listen("tcp", *control)
	if err != nil {
		f.close()
		return err
	}
	srv := &http.Server{Handler: f.handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(cln) }()
	go f.serve()
	fmt.Printf("front: listen %s\nfront: control http://%s\nfront: ready\n", f.ln.Addr(), cln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	_ = srv.Close()
	if err := f.close(); err != nil {
		return err
	}
	return file.Close()
}

// monoClock reads CLOCK_MONOTONIC cheaply: one system call at start, then Go's own monotonic readings.
type monoClock struct {
	base  time.Duration
	start time.Time
}

func newMonoClock() monoClock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail on Linux with a valid pointer
	return monoClock{base: time.Duration(ts.Nano()), start: time.Now()}
}

func (c monoClock) ms(t time.Time) float64 { return float64(c.base+t.Sub(c.start)) / 1e6 }

// Verdicts on an accepted connection, as written in the log.
const (
	verdictForward   = "f"
	verdictDown      = "d"
	verdictThrottled = "t"
	upstreamFailed   = "x"
	dropped          = "r"
)

// stats are the counts GET /stats reports.
type stats struct {
	Attempts       int `json:"attempts"`
	Forwarded      int `json:"forwarded"`
	ResetDown      int `json:"resetDown"`
	ResetThrottled int `json:"resetThrottled"`
	UpstreamFailed int `json:"upstreamFailed"`
	Dropped        int `json:"dropped"`
	AcceptErrors   int `json:"acceptErrors"`
	Live           int `json:"live"`
}

type front struct {
	ln       net.Listener
	upstream string
	clock    monoClock
	tls      *tls.Config // hubsim's certificate, for refusals the MQTT way; nil: refuse=mqtt is unavailable

	mu     sync.Mutex
	out    *bufio.Writer
	down   bool
	rate   int           // admissions in any one second; 0 = unlimited
	mqtt   bool          // refuse over the rate the MQTT way (see /up); else with a reset
	drop   time.Duration // reset each forwarded connection this long after its accept; 0 = never
	window []time.Time   // the last `rate` admission times, a ring: a sliding one-second window
	next   int           // the ring's oldest entry once it is full
	live   map[*pair]struct{}
	counts stats
	closed bool
	wg     sync.WaitGroup
}

// pair is one forwarded connection: the device's side and hubsim's. Its forwarder owns the drop timer, which
// fires f.drop after accepted while the front drops connections, and is stopped otherwise.
type pair struct {
	dev, hub net.Conn
	accepted time.Time
	drop     *time.Timer
}

// armDropLocked sets p's drop timer for the front's drop_ms, or stops it when there is none; f.mu is held.
func (f *front) armDropLocked(p *pair, now time.Time) {
	if f.drop <= 0 {
		p.drop.Stop()
		return
	}
	p.drop.Reset(max(p.accepted.Add(f.drop).Sub(now), 0))
}

func newFront(listen, upstream string, log io.Writer) (*front, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	return &front{ln: ln, upstream: upstream, clock: newMonoClock(), out: bufio.NewWriterSize(log, 1<<20),
		live: map[*pair]struct{}{}}, nil
}

// serve accepts until close; the verdict and its log line come before anything else, so a device that sees its
// reset knows the attempt is already counted.
func (f *front) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: the attempt waits in the backlog; count it and retry after a pause, as
			// net/http does, rather than spin.
			f.mu.Lock()
			f.counts.AcceptErrors++
			f.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			continue
		}
		now := time.Now()
		switch v, mqtt := f.verdict(now); {
		case v == verdictThrottled && mqtt:
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.refuseAfterConnect(c)
			}()
			continue
		case v != verdictForward:
			reset(c)
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.forward(c, now)
		}()
	}
}

// verdict decides and logs one accepted connection, and says whether a refusal over the rate is the MQTT way.
func (f *front) verdict(now time.Time) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts.Attempts++
	v := verdictForward
	switch {
	case f.down:
		v = verdictDown
		f.counts.ResetDown++
	case f.rate > 0 && len(f.window) == f.rate && now.Sub(f.window[f.next]) < time.Second:
		v = verdictThrottled
		f.counts.ResetThrottled++
	case f.rate > 0 && len(f.window) < f.rate:
		f.window = append(f.window, now)
	case f.rate > 0:
		f.window[f.next] = now
		f.next = (f.next + 1) % f.rate
	}
	if v == verdictForward {
		f.counts.Forwarded++
	}
	f.logLocked(now, v)
	return v, f.mqtt
}

// refuseAfterConnect refuses c as IoT Hub refuses a connect over its admission rate on MQTT 3.1.1, which has no
// code for it: the TLS handshake completes, the hub reads the CONNECT, and closes the connection unanswered.
func (f *front) refuseAfterConnect(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Server(c, f.tls)
	if tc.Handshake() != nil {
		return
	}
	if readMQTTPacket(bufio.NewReader(tc)) == nil {
		_ = tc.Close()
	}
}

// maxRemainingLength is the largest remaining length MQTT's four length bytes can carry.
const maxRemainingLength = 1<<28 - 1

// readMQTTPacket reads one MQTT control packet: the type byte, the remaining length (base-128, least significant
// group first: the encoding of binary.ReadUvarint), then that many bytes.
func readMQTTPacket(r *bufio.Reader) error {
	if _, err := r.ReadByte(); err != nil {
		return err
	}
	length, err := binary.ReadUvarint(r)
	switch {
	case err != nil:
		return err
	case length > maxRemainingLength:
		return errors.New("malformed remaining length")
	}
	_, err = r.Discard(int(length))
	return err
}

func (f *front) logLocked(now time.Time, what string) {
	fmt.Fprintf(f.out, "%.3f %s\n", f.clock.ms(now), what)
}

// forward connects c, accepted at accepted, to hubsim and copies both ways until either side ends, the pair is
// killed, or its drop timer fires.
func (f *front) forward(c net.Conn, accepted time.Time) {
	hub, err := net.DialTimeout("tcp", f.upstream, 10*time.Second)
	if err != nil {
		f.mu.Lock()
		f.counts.UpstreamFailed++
		f.logLocked(time.Now(), upstreamFailed)
		f.mu.Unlock()
		reset(c)
		return
	}
	p := &pair{dev: c, hub: hub, accepted: accepted, drop: time.NewTimer(time.Hour)} // armed or stopped below
	defer p.drop.Stop()
	f.mu.Lock()
	if f.down || f.closed { // went down while this one was dialling
		f.mu.Unlock()
		p.kill()
		return
	}
	f.live[p] = struct{}{}
	f.armDropLocked(p, time.Now())
	f.mu.Unlock()

	ended := make(chan struct{}, 2)
	go func() {
		copyPlain(hub, c)
		ended <- struct{}{}
	}()
	go func() {
		copyPlain(c, hub)
		ended <- struct{}{}
	}()
	waiting := 2
	select {
	case <-ended:
		waiting--
	case <-p.drop.C:
		f.dropPair(p)
	}
	_ = c.Close() // ends the other copy too
	_ = hub.Close()
	for ; waiting > 0; waiting-- {
		<-ended
	}
	f.mu.Lock()
	delete(f.live, p)
	f.mu.Unlock()
}

// dropPair resets p when its drop timer fired, unless something else ended it first.
func (f *front) dropPair(p *pair) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.live[p]; !ok {
		return
	}
	delete(f.live, p)
	p.kill()
	f.counts.Dropped++
	f.logLocked(now, dropped)
}

// copyPlain copies src to dst through a buffer. io.Copy between two TCP connections splices through a pipe,
// two more file descriptors per direction while it waits: at thousands of connections the front then ran out of
// descriptors (EMFILE) at a third of the devices its limit allows.
func copyPlain(dst io.Writer, src io.Reader) {
	_, _ = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, 4096))
}

// kill resets both sides: the device sees a reset, as when a hub dies, and hubsim drops the session.
func (p *pair) kill() {
	reset(p.dev)
	reset(p.hub)
}

// reset closes c with a TCP RST instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// killAllLocked resets every forwarded connection and says how many there were.
func (f *front) killAllLocked() int {
	n := len(f.live)
	for p := range f.live {
		p.kill()
		delete(f.live, p)
	}
	return n
}

// setDown and killAll stamp their marker before the kills, so that no device's report of its drop precedes it.
func (f *front) setDown() int {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = true
	n := f.killAllLocked()
	f.logLocked(now, "# down killed="+strconv.Itoa(n))
	return n
}

// setUp forwards again at rate, refusing the rest the MQTT way or with a reset, dropping each connection drop
// after its accept (0: never). It re-arms the live connections' drop timers too, so that a hub that starts
// dropping drops what it holds, and one that stops dropping keeps what it holds.
func (f *front) setUp(rate int, mqtt bool, drop time.Duration) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down, f.rate, f.mqtt, f.window, f.next, f.drop = false, rate, mqtt, nil, 0, drop
	for p := range f.live {
		f.armDropLocked(p, now)
	}
	refuse := "tcp"
	if mqtt {
		refuse = "mqtt"
	}
	f.logLocked(now, "# up rate="+strconv.Itoa(rate)+" drop_ms="+strconv.FormatInt(drop.Milliseconds(), 10)+
		" refuse="+refuse)
}

func (f *front) killAll() int {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.killAllLocked()
	f.logLocked(now, "# kill-all killed="+strconv.Itoa(n))
	return n
}

func (f *front) stats() stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.counts
	s.Live = len(f.live)
	return s
}

// close stops accepting, resets what is live, waits for the forwarders and flushes the log.
func (f *front) close() error {
	err := f.ln.Close()
	f.mu.Lock()
	f.closed = true
	f.killAllLocked()
	f.mu.Unlock()
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if ferr := f.out.Flush(); err == nil || errors.Is(err, net.ErrClosed) {
		err = ferr
	}
	return err
}

func (f *front) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]int{"killed": f.setDown()})
	})
	mux.HandleFunc("POST /up", func(w http.ResponseWriter, r *http.Request) {
		var v [2]int
		for i, name := range []string{"rate", "drop_ms"} {
			if s := r.URL.Query().Get(name); s != "" {
				n, err := strconv.Atoi(s)
				if err != nil || n < 0 {
					http.Error(w, name+" must be a whole number >= 0", http.StatusBadRequest)
					return
				}
				v[i] = n
			}
		}
		refuse := r.URL.Query().Get("refuse")
		switch {
		case refuse != "" && refuse != "tcp" && refuse != "mqtt":
			http.Error(w, `refuse must be "tcp" or "mqtt"`, http.StatusBadRequest)
			return
		case refuse == "mqtt" && f.tls == nil:
			http.Error(w, "refuse=mqtt needs the front started with -cert and -key", http.StatusBadRequest)
			return
		}
		f.setUp(v[0], refuse == "mqtt", time.Duration(v[1])*time.Millisecond)
		writeJSON(w, map[string]any{"rate": v[0], "drop_ms": v[1], "refuse": cmp.Or(refuse, "tcp")})
	})
	mux.HandleFunc("POST /kill-all", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]int{"killed": f.killAll()})
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, f.stats()) })
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
