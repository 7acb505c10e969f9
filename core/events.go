package core

import (
	"sync"
	"time"

	"github.com/iotconn/iotconn/core/internal/notify"
	"github.com/iotconn/iotconn/core/retry"
)

type eventKind int

const (
	evStatus eventKind = iota
	evMessage
	evSendComplete
	evLog
	evRetryQuestion
	evTwin
	evReported
	evDesired
	evMethod
)

// event is one entry of the client's single FIFO; fields are used according to kind.
type event struct {
	kind     eventKind
	state    state
	msg      *Message
	ack      func() // settles a received message with the hub once its handler returned; nil if the transport did
	id       uint64
	result   SendResult
	err      *Error
	payload  []byte
	version  int64
	rid      string
	method   string
	level    LogLevel
	text     string
	question *retryQuestion
}

// retryQuestion carries a custom policy's decision back to the engine in poll mode, where the policy may only
// run inside Poll on the application's thread.
type retryQuestion struct {
	policy  retry.Policy
	attempt int
	lastErr error
	answer  chan retryAnswer // buffered, capacity 1
}

type retryAnswer struct {
	retry bool
	delay time.Duration
}

// eventQueue is unbounded so that the engine never blocks on a slow application; finish marks that no more
// events will come.
type eventQueue struct {
	mu       sync.Mutex
	items    []event
	ready    chan struct{} // capacity 1: "items may be non-empty or the queue finished"
	finished bool
	forward  func() // set before the first push for a client of a shared Dispatcher: it signals instead of ready
}

func newEventQueue() *eventQueue { return &eventQueue{ready: make(chan struct{}, 1)} }

func (q *eventQueue) push(e event) {
	q.mu.Lock()
	added := !q.finished
	if added {
		q.items = append(q.items, e)
	}
	q.mu.Unlock()
	if added {
		q.signal()
	}
}

func (q *eventQueue) finish() {
	q.mu.Lock()
	q.finished = true
	q.mu.Unlock()
	q.signal()
}

func (q *eventQueue) signal() {
	if q.forward != nil {
		q.forward()
		return
	}
	notify.Raise(q.ready)
}

func (q *eventQueue) isFinished() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.finished
}

// take returns every queued event and whether the queue is finished and now empty.
func (q *eventQueue) take() (batch []event, done bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch, q.items = q.items, nil
	return batch, q.finished && len(batch) == 0
}

// dispatch runs the application's handler for one event. It is called without any engine lock held.
func (c *Client) dispatch(e event) {
	c.mu.Lock()
	h := c.handlers
	c.mu.Unlock()
	switch e.kind {
	case evStatus:
		if h.OnStatus != nil {
			h.OnStatus(e.state.status, e.state.reason)
		}
	case evMessage:
		if h.OnMessage != nil {
			h.OnMessage(e.msg)
		}
		if e.ack != nil {
			e.ack()
		}
	case evSendComplete:
		if h.OnSendComplete != nil {
			h.OnSendComplete(e.id, e.result, e.err)
		}
	case evLog:
		if h.OnLog != nil {
			h.OnLog(e.level, e.text)
		}
	case evRetryQuestion:
		r, d := e.question.policy.ShouldRetry(e.question.attempt, e.question.lastErr)
		e.question.answer <- retryAnswer{r, d}
	case evTwin:
		if h.OnTwin != nil {
			h.OnTwin(e.id, e.payload, e.err)
		}
	case evReported:
		if h.OnReported != nil {
			h.OnReported(e.id, e.version, e.err)
		}
	case evDesired:
		if h.OnDesired != nil {
			h.OnDesired(e.version, e.payload)
		}
	case evMethod:
		if h.OnMethod != nil {
			h.OnMethod(e.rid, e.method, e.payload)
		}
	}
}

// runDispatcher is the thread-mode dispatcher goroutine; it ends once the queue is finished and drained.
func (c *Client) runDispatcher() {
	defer close(c.dispatcherDone)
	for {
		batch, done := c.events.take()
		if done {
			return
		}
		if len(batch) == 0 {
			<-c.events.ready
			continue
		}
		for _, e := range batch {
			c.dispatch(e)
		}
	}
}

// Poll runs the handlers of every queued event on the calling goroutine, waiting up to timeout for the first.
// It returns how many events it dispatched; once the client is closed and every final event was dispatched it
// returns CodeClosed. Only in DispatchPoll mode.
func (c *Client) Poll(timeout time.Duration) (int, error) {
	switch {
	case c.opts.Dispatch != DispatchPoll:
		return 0, Errorf(CodeState, "Poll needs the poll dispatch mode")
	case c.opts.Dispatcher != nil:
		return 0, Errorf(CodeState, "this client's events are dispatched by its Dispatcher: poll that")
	}
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	batch, done := c.events.take()
	if len(batch) == 0 && !done && timeout > 0 {
		t := time.NewTimer(timeout)
		select {
		case <-c.events.ready:
		case <-t.C:
		}
		t.Stop()
		batch, done = c.events.take()
	}
	for _, e := range batch {
		c.dispatch(e)
	}
	if done {
		return 0, Errorf(CodeClosed, "client closed and every event dispatched")
	}
	return len(batch), nil
}
