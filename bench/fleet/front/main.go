// Command fleet-front is bench/fleet's counting TCP front: a plain TCP proxy on 127.0.0.1 before hubsim's MQTT
// port that records every connection it accepts, so that attempts are counted even while the "hub" is down.
// TLS passes through untouched: devices verify hubsim's own certificate.
//
//	fleet-front -upstream 127.0.0.1:HUBPORT -log FILE [-listen 127.0.0.1:0] [-control 127.0.0.1:0]
//
// It prints "front: listen ADDR", "front: control http://ADDR", then "front: ready". Control (HTTP, POST):
//
//	/down          reset every forwarded connection; from then on accept and reset at once (still counted)
//	/up?rate=R     forward again, at most R new connections in any one second (the rest reset); no rate: all
//	/kill-all      reset every forwarded connection at once and stay up
//	GET /stats     the counts so far, as JSON
//
// The log has one line per accepted connection, "MS VERDICT" (f forwarded, d reset while down, t reset over the
// admission rate), "MS x" when forwarding one failed at hubsim's side (the device got a reset), and "MS # EVENT"
// for each control command. MS is CLOCK_MONOTONIC in milliseconds, the clock the C driver stamps its events with,
// so both logs share one time line. The log is complete once the front exited (SIGTERM or SIGINT).
package main

import (
	"bufio"
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
)

// stats are the counts GET /stats reports.
type stats struct {
	Attempts       int `json:"attempts"`
	Forwarded      int `json:"forwarded"`
	ResetDown      int `json:"resetDown"`
	ResetThrottled int `json:"resetThrottled"`
	UpstreamFailed int `json:"upstreamFailed"`
	AcceptErrors   int `json:"acceptErrors"`
	Live           int `json:"live"`
}

type front struct {
	ln       net.Listener
	upstream string
	clock    monoClock

	mu     sync.Mutex
	out    *bufio.Writer
	down   bool
	rate   int         // admissions in any one second; 0 = unlimited
	window []time.Time // the last `rate` admission times, a ring: a sliding one-second window
	next   int         // the ring's oldest entry once it is full
	live   map[*pair]struct{}
	counts stats
	closed bool
	wg     sync.WaitGroup
}

// pair is one forwarded connection: the device's side and hubsim's.
type pair struct{ dev, hub net.Conn }

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
		if f.verdict(time.Now()) != verdictForward {
			reset(c)
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.forward(c)
		}()
	}
}

// verdict decides and logs one accepted connection.
func (f *front) verdict(now time.Time) string {
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
	return v
}

func (f *front) logLocked(now time.Time, what string) {
	fmt.Fprintf(f.out, "%.3f %s\n", f.clock.ms(now), what)
}

// forward connects c to hubsim and copies both ways until either side ends or the pair is killed.
func (f *front) forward(c net.Conn) {
	hub, err := net.DialTimeout("tcp", f.upstream, 10*time.Second)
	if err != nil {
		f.mu.Lock()
		f.counts.UpstreamFailed++
		f.logLocked(time.Now(), upstreamFailed)
		f.mu.Unlock()
		reset(c)
		return
	}
	p := &pair{dev: c, hub: hub}
	f.mu.Lock()
	if f.down || f.closed { // went down while this one was dialling
		f.mu.Unlock()
		p.kill()
		return
	}
	f.live[p] = struct{}{}
	f.mu.Unlock()

	done := make(chan struct{})
	go func() {
		copyPlain(hub, c)
		close(done)
	}()
	copyPlain(c, hub)
	_ = c.Close() // ends the other copy too
	_ = hub.Close()
	<-done
	f.mu.Lock()
	delete(f.live, p)
	f.mu.Unlock()
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

func (f *front) setUp(rate int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down, f.rate, f.window, f.next = false, rate, nil, 0
	f.logLocked(time.Now(), "# up rate="+strconv.Itoa(rate))
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
		rate := 0
		if s := r.URL.Query().Get("rate"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				http.Error(w, "rate must be a whole number >= 0", http.StatusBadRequest)
				return
			}
			rate = n
		}
		f.setUp(rate)
		writeJSON(w, map[string]int{"rate": rate})
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
