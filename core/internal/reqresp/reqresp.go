// Package reqresp correlates requests a client makes over its link (twin GET and reported-property PATCH, method
// responses, DPS register and poll) with the responses the hub sends back, by request id ($rid on MQTT,
// correlation-id on AMQP). Twins, methods and DPS sit on it; the transport carries the bytes.
//
// Every request ends in exactly one result: its response, its deadline (CodeTimeout-like: ErrTimeout), or the
// link's loss, where its Kind decides: a Retry request is sent again on the next link with a new request id
// (its deadline still bounds it), a FailOnLoss request fails with the link's error (the hub no longer knows
// it: a method response, a DPS poll of an operation). A response whose request id is unknown (late, after a
// timeout, or from a previous link) is dropped.
//
// The supervisor owns the timer: it arms one at NextDeadline and calls Expire when it fires. All methods are
// safe for concurrent use; results are delivered by the caller, with no lock of the table held.
package reqresp

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Kind says what happens to an outstanding request when its link ends.
type Kind int

const (
	// Retry: sent again on the next link (idempotent requests: a twin GET, a reported-properties PATCH).
	Retry Kind = iota
	// FailOnLoss: failed with the link's error (the hub forgot it with the link).
	FailOnLoss
)

// ErrTimeout is the result of a request whose deadline passed before its response.
var ErrTimeout = errors.New("no response before the request's deadline")

// ErrClosed is Add's error once Close ran.
var ErrClosed = errors.New("request table closed")

// Response is what the hub answered: a status (200, 204, 429, ...), a body and, for twin answers that carry one,
// the twin's new $version.
type Response struct {
	Status  int
	Payload []byte
	Version int64
}

// Request is one request in flight. Op, Payload and Data are the caller's (the transport reads the first two;
// Data says what to do with the result); RID is set by the table and changes when a Retry request is sent again.
type Request struct {
	Op       string
	Payload  []byte
	Data     any
	Kind     Kind
	Deadline time.Time
	RID      string

	seq  uint64 // its place in the order requests were added
	sent bool   // handed to a link since it was added or requeued
}

// Result is a finished request with its response, or the error that ended it.
type Result struct {
	Req  *Request
	Resp Response
	Err  error
}

// Table holds the outstanding requests of one client.
type Table struct {
	mu      sync.Mutex
	closed  bool
	lastSeq uint64
	lastRID uint64
	byRID   map[string]*Request
	waiting []*Request // not yet on a link, in the order added
}

// NewTable returns an empty table.
func NewTable() *Table { return &Table{byRID: map[string]*Request{}} }

// Add registers r and gives it a request id; it waits for Ready. After Close it refuses r with ErrClosed.
func (t *Table) Add(r *Request) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	t.lastSeq++
	r.seq = t.lastSeq
	t.assignLocked(r)
	t.waiting = append(t.waiting, r)
	return nil
}

func (t *Table) assignLocked(r *Request) {
	t.lastRID++
	r.RID, r.sent = strconv.FormatUint(t.lastRID, 10), false
	t.byRID[r.RID] = r
}

// Ready takes the requests waiting for a link, in the order added, and marks them sent.
func (t *Table) Ready() []*Request {
	t.mu.Lock()
	defer t.mu.Unlock()
	ready := t.waiting
	t.waiting = nil
	for _, r := range ready {
		r.sent = true
	}
	return ready
}

// Resolve matches a response to its request; ok is false for an unknown request id, which is dropped.
func (t *Table) Resolve(rid string, resp Response) (res Result, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.byRID[rid]
	if !ok || !r.sent {
		return Result{}, false
	}
	delete(t.byRID, rid)
	return Result{Req: r, Resp: resp}, true
}

// LinkLost applies each request's Kind: Retry requests get a new request id and wait for the next link, in
// their order; FailOnLoss requests that were sent are returned failed with err. A request not yet sent waits.
func (t *Table) LinkLost(err error) (failed []Result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var again []*Request
	for rid, r := range t.byRID {
		if !r.sent {
			continue
		}
		delete(t.byRID, rid)
		if r.Kind == FailOnLoss {
			failed = append(failed, Result{Req: r, Err: err})
			continue
		}
		again = append(again, r)
	}
	slices.SortFunc(again, bySeq)
	for _, r := range again {
		t.assignLocked(r)
	}
	t.waiting = append(again, t.waiting...)
	slices.SortFunc(failed, bySeqResult)
	return failed
}

// Expire ends every request whose deadline is not after now with ErrTimeout, oldest first.
func (t *Table) Expire(now time.Time) (expired []Result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for rid, r := range t.byRID {
		if !r.Deadline.After(now) {
			delete(t.byRID, rid)
			expired = append(expired, Result{Req: r, Err: ErrTimeout})
		}
	}
	t.waiting = slices.DeleteFunc(t.waiting, func(r *Request) bool { return t.byRID[r.RID] != r })
	slices.SortFunc(expired, bySeqResult)
	return expired
}

// FailAll ends every outstanding request with err (a fatal error, the retry policy giving up), oldest first.
func (t *Table) FailAll(err error) []Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failAllLocked(err)
}

// Close ends every outstanding request with err, oldest first, and refuses every later Add, so that no request
// is left without a result once the client closed.
func (t *Table) Close(err error) []Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	return t.failAllLocked(err)
}

func (t *Table) failAllLocked(err error) (failed []Result) {
	for _, r := range t.byRID {
		failed = append(failed, Result{Req: r, Err: err})
	}
	clear(t.byRID)
	t.waiting = nil
	slices.SortFunc(failed, bySeqResult)
	return failed
}

// NextDeadline is the earliest deadline of an outstanding request; zero when none.
func (t *Table) NextDeadline() (next time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range t.byRID {
		if next.IsZero() || r.Deadline.Before(next) {
			next = r.Deadline
		}
	}
	return next
}

func bySeq(a, b *Request) int { return cmp.Compare(a.seq, b.seq) }

func bySeqResult(a, b Result) int { return bySeq(a.Req, b.Req) }
