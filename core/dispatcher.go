package core

import (
	"runtime"
	"sync"
	"time"

	"github.com/iotconn/iotconn/core/internal/notify"
)

// Dispatcher runs the handlers of many clients from one place, as librdkafka forwards many queues to one: a
// process with thousands of device identities needs one dispatch goroutine, kept on one OS thread
// (DispatchThread), or one polling thread (DispatchPoll, Dispatcher.Poll) instead of one per client.
// Options.Dispatcher attaches a client.
//
// Each client keeps its own event FIFO, so its handlers still run in order and one at a time; the dispatcher
// keeps the clients that have events waiting, in the order they got them, and serves each client's whole batch
// in turn. A client whose queue is finished (closed, final events dispatched) leaves the dispatcher.
type Dispatcher struct {
	mode DispatchMode

	mu      sync.Mutex
	ready   []*Client            // clients with events waiting, oldest first, each at most once
	queued  map[*Client]struct{} // the clients in ready
	clients map[*Client]bool     // attached and not finished: whether each is closed
	closed  bool

	wake    chan struct{} // capacity 1: "ready may be non-empty, or the dispatcher closed"
	pollMu  sync.Mutex
	runDone chan struct{} // thread mode: closed when the goroutine ended
}

// NewDispatcher returns a dispatcher of mode; in DispatchThread mode it starts its goroutine, which Close stops.
func NewDispatcher(mode DispatchMode) (*Dispatcher, error) {
	if mode != DispatchThread && mode != DispatchPoll {
		return nil, Errorf(CodeInvalidArgument, "unknown dispatch mode %d", mode)
	}
	d := &Dispatcher{mode: mode, queued: map[*Client]struct{}{}, clients: map[*Client]bool{},
		wake: make(chan struct{}, 1)}
	if mode == DispatchThread {
		d.runDone = make(chan struct{})
		go d.run()
	}
	return d, nil
}

// Mode is the dispatch mode of every client attached.
func (d *Dispatcher) Mode() DispatchMode { return d.mode }

// attach counts c in until its queue finished; refused once the dispatcher is closed.
func (d *Dispatcher) attach(c *Client) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return Errorf(CodeClosed, "dispatcher closed")
	}
	d.clients[c] = false
	return nil
}

// closing records that c was closed: Close may then go ahead once c's final events are dispatched.
func (d *Dispatcher) closing(c *Client) {
	d.mu.Lock()
	if _, in := d.clients[c]; in {
		d.clients[c] = true
	}
	d.mu.Unlock()
}

// leave counts c out: its queue finished and was dispatched, or it was never made. It says whether c was
// still in.
func (d *Dispatcher) leave(c *Client) bool {
	d.mu.Lock()
	_, in := d.clients[c]
	delete(d.clients, c)
	d.mu.Unlock()
	notify.Raise(d.wake)
	return in
}

// signal marks c as having events (or a finished queue) to serve; its event queue calls it on every push.
func (d *Dispatcher) signal(c *Client) {
	d.mu.Lock()
	_, in := d.queued[c]
	if !in {
		d.queued[c] = struct{}{}
		d.ready = append(d.ready, c)
	}
	d.mu.Unlock()
	if !in {
		notify.Raise(d.wake)
	}
}

// next takes the oldest client with events waiting, nil if none.
func (d *Dispatcher) next() *Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.ready) == 0 {
		d.ready = nil // let a burst's backing array go
		return nil
	}
	c := d.ready[0]
	d.ready[0] = nil
	d.ready = d.ready[1:]
	delete(d.queued, c)
	return c
}

// serve dispatches what c has queued and says how many events ran. A client whose queue is finished and drained
// leaves: its dispatcherDone closes (thread mode).
func (d *Dispatcher) serve(c *Client) int {
	batch, done := c.events.take()
	for _, e := range batch {
		c.dispatch(e)
	}
	switch {
	case done:
		if d.leave(c) && c.dispatcherDone != nil {
			close(c.dispatcherDone)
		}
	case c.events.isFinished():
		d.signal(c) // come back for the end: finish signalled before this batch was taken
	}
	return len(batch)
}

// drained says whether the dispatcher is closed and nothing is left to serve.
func (d *Dispatcher) drained() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed && len(d.clients) == 0 && len(d.ready) == 0
}

// run is the thread-mode goroutine: it serves clients until Close and every attached client finished. It keeps
// one OS thread, so that C callbacks of every client run on the same thread (thread-local state stays put).
func (d *Dispatcher) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(d.runDone)
	for {
		c := d.next()
		if c != nil {
			d.serve(c)
			continue
		}
		if d.drained() {
			return
		}
		<-d.wake
	}
}

// Poll runs the handlers of every client with queued events, on the calling goroutine, waiting up to timeout
// for the first. It returns how many events it dispatched, and CodeClosed once the dispatcher is closed and
// every attached client's final events were dispatched. DispatchPoll only.
func (d *Dispatcher) Poll(timeout time.Duration) (int, error) {
	if d.mode != DispatchPoll {
		return 0, Errorf(CodeState, "Poll needs a dispatcher in the poll dispatch mode")
	}
	d.pollMu.Lock()
	defer d.pollMu.Unlock()
	var deadline <-chan time.Time
	n := 0
	for {
		for c := d.next(); c != nil; c = d.next() {
			n += d.serve(c)
		}
		if n > 0 {
			return n, nil
		}
		if d.drained() {
			return 0, Errorf(CodeClosed, "dispatcher closed and every event dispatched")
		}
		if timeout <= 0 {
			return 0, nil
		}
		if deadline == nil {
			t := time.NewTimer(timeout)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-d.wake:
		case <-deadline:
			return 0, nil
		}
	}
}

// Close refuses new clients. It fails with CodeState while a client attached to it is not closed (close the
// clients first); in thread mode it then waits until the goroutine dispatched every final event and ended
// (not from inside a handler of this dispatcher's). A poll-mode dispatcher's final events wait for Poll, which
// returns CodeClosed after them. Idempotent.
func (d *Dispatcher) Close() error {
	d.mu.Lock()
	open := 0
	for _, closed := range d.clients {
		if !closed {
			open++
		}
	}
	if open > 0 {
		d.mu.Unlock()
		return Errorf(CodeState, "%d clients attached to the dispatcher are not closed; close them first", open)
	}
	d.closed = true // in the critical section of the check: no client attaches in between
	d.mu.Unlock()
	notify.Raise(d.wake)
	if d.runDone != nil {
		<-d.runDone
	}
	return nil
}
