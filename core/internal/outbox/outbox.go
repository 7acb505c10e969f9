// Package outbox is a client's outbound queue: every message and reported-properties patch the client accepted,
// from Add to its one completion. It keeps the queue's invariants; the client's supervisor decides when to call
// what, and reports completions to the application.
//
// The life of an entry:
//
//	Add        accepted: an id (1, 2, ... per client) and, for a message without one, a generated message id; in
//	           durable mode written to disk first ("writing"), then queued
//	Ready      handed to the live link, oldest first: in flight, and from now on "sent" (it may reach the hub)
//	Complete   its one completion; later calls for the same entry do nothing
//
// On link loss (Requeue): entries in flight go back to the head of the queue in id order, to be sent again with
// the same message id (at least once); one whose deadline passed meanwhile is due at once instead, never resent.
// On reconnect (Ready): queued entries go out in id order; one whose deadline passed is due instead.
// While a link lives, an entry in flight waits for its acknowledgement even past its deadline: Due never returns
// it, since it may still be delivered.
// A reported patch is a request with an answer, not a publish with an acknowledgement: once Ready handed it out it
// belongs to the caller's request layer (deadline, retry on the next link with a new request id) until Complete,
// so Requeue leaves it in flight. Its place in the queue, its limits and its record on disk are the outbox's as
// for a message.
// DropOldest makes room by dropping the oldest queued entries that were never sent (nor are still being written).
//
// All methods are safe for concurrent use. Callbacks (Config.Queued, Config.WrittenAfterClose, Config.Logf) run
// with no lock of the outbox held.
package outbox

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/iotconn/iotconn/core/store"
	"github.com/iotconn/iotconn/core/transport"
)

// Entry is an accepted message or reported patch until its one completion.
type Entry struct {
	ID       uint64
	Kind     store.Kind
	Wire     transport.Message // a reported patch: its JSON in Payload, nothing else
	Deadline time.Time

	key  uint64 // durable mode: its record in the store
	size int64  // payload bytes, counted against MaxBytes

	// Guarded by Outbox.mu.
	inFlight bool // on the live link, waiting for its acknowledgement
	sent     bool // handed to a link (or recovered from disk, where it may have been) and not acknowledged
	writing  bool // durable mode: counted against the limits, not yet on disk, so not yet queued
	done     bool
}

// Config is an outbox's limits and the client's callbacks.
type Config struct {
	MaxMessages int
	MaxBytes    int64
	DropOldest  bool   // when full: drop the oldest never-sent entries instead of refusing
	MIDPrefix   string // generated message ids are MIDPrefix + the entry's id
	Dir         string // durable mode: the queue directory; "" = memory only
	// Now is the client's clock. Ready, Requeue and Due read it under the outbox's lock, so an entry one of them
	// found past its deadline is never found sendable by a later one.
	Now func() time.Time

	// Queued is called when entries joined the queue from the disk writer (not from Add, whose caller knows).
	Queued func()
	// WrittenAfterClose gets the entries whose write finished after Close: they stay on disk, and the caller
	// completes them as closed.
	WrittenAfterClose func([]*Entry)
	Logf              func(format string, args ...any)
}

// ErrClosed is Add's error after Close.
var ErrClosed = errors.New("client closed")

// FullError is Add's error when the queue is at a limit and nothing can be dropped.
type FullError struct{ Msg string }

func (e *FullError) Error() string { return e.Msg }

// Outbox is the queue. See the package documentation for its rules.
type Outbox struct {
	cfg     Config
	backend backend

	mu        sync.Mutex
	closed    bool
	nextID    uint64
	pending   map[uint64]*Entry // accepted, not yet completed
	queue     []*Entry          // waiting to be sent, in id order; completed entries are skipped
	bytes     int64             // payload bytes of pending entries
	recovered int
	// soonest is the earliest deadline queued since NextDeadline last rescanned, so that a rescan happens only
	// when a shorter time-to-live came in.
	soonest time.Time
}

// backend is where accepted entries wait besides memory.
type backend interface {
	// put schedules e's write; the channel says when it is on disk (nil when it is at once: memory mode).
	put(e *Entry) <-chan error
	// remove forgets e's record, once e can never be sent again.
	remove(e *Entry)
	close()
}

// memory is the backend of memory mode: nothing to write.
type memory struct{}

func (memory) put(*Entry) <-chan error { return nil }
func (memory) remove(*Entry)           {}
func (memory) close()                  {}

// New makes an outbox; in durable mode it opens cfg.Dir and queues what a previous client left there, as the
// ids 1..Recovered(), with their message ids, counted as possibly sent.
func New(cfg Config) (*Outbox, error) {
	o := &Outbox{cfg: cfg, pending: map[uint64]*Entry{}, backend: memory{}}
	if cfg.Dir == "" {
		return o, nil
	}
	st, recs, err := store.Open(cfg.Dir)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		o.nextID++
		e := &Entry{ID: o.nextID, Kind: r.Kind, key: r.Key, Wire: r.Msg, size: int64(len(r.Msg.Payload)),
			Deadline: r.Deadline, sent: true} // it may have gone out before the previous client ended
		o.pending[e.ID] = e
		o.bytes += e.size
		o.enqueueLocked(e)
	}
	o.recovered = len(recs)
	o.backend = newJournal(o, st, recs)
	return o, nil
}

// TakeID gives an operation that the queue does not hold (a twin GET) an id of the same sequence, so that one id
// names one operation of the client whatever its kind.
func (o *Outbox) TakeID() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.nextID++
	return o.nextID
}

// Recovered is how many entries New loaded from the queue directory.
func (o *Outbox) Recovered() int { return o.recovered }

// Durable says whether entries are kept on disk.
func (o *Outbox) Durable() bool { return o.cfg.Dir != "" }

// MayHaveArrived says whether e was handed to a link (or recovered from disk) without an acknowledgement.
func (o *Outbox) MayHaveArrived(e *Entry) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return e.sent
}

// Add accepts wire of kind (its payload owned by the outbox from now on) with its deadline. It returns the entry,
// the entries dropped to make room (already finished: the caller completes them as dropped) and, in durable mode,
// where its write is reported: until then the entry is not queued, and on an error it is gone.
func (o *Outbox) Add(kind store.Kind, wire transport.Message, deadline time.Time) (e *Entry, dropped []*Entry,
	written <-chan error, err error) {
	size := int64(len(wire.Payload))
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil, nil, nil, ErrClosed
	}
	if dropped, err = o.makeRoomLocked(size); err != nil {
		o.mu.Unlock()
		return nil, nil, nil, err
	}
	o.nextID++
	e = &Entry{ID: o.nextID, Kind: kind, Wire: wire, size: size, Deadline: deadline}
	if kind == store.KindMessage && e.Wire.MessageID == "" {
		e.Wire.MessageID = o.cfg.MIDPrefix + strconv.FormatUint(e.ID, 10)
	}
	o.pending[e.ID] = e
	o.bytes += size
	if written = o.backend.put(e); written == nil { // durable: queued once on disk, in the order of puts
		o.enqueueLocked(e)
	}
	o.mu.Unlock()
	for _, d := range dropped {
		o.backend.remove(d)
	}
	return e, dropped, written, nil
}

// enqueueLocked appends an accepted entry to the queue.
func (o *Outbox) enqueueLocked(e *Entry) {
	o.queue = append(o.queue, e)
	if o.soonest.IsZero() || e.Deadline.Before(o.soonest) {
		o.soonest = e.Deadline
	}
}

// makeRoomLocked checks that one more entry of size bytes fits the limits. With DropOldest it takes the oldest
// queued entries out (never one that may have reached the hub, nor one still being written) until the new one
// fits and returns them, finished.
func (o *Outbox) makeRoomLocked(size int64) ([]*Entry, error) {
	maxCount, maxBytes := o.cfg.MaxMessages, o.cfg.MaxBytes
	fits := func(count int, bytes int64) bool { return count < maxCount && bytes+size <= maxBytes }
	count, bytes := len(o.pending), o.bytes
	if fits(count, bytes) {
		return nil, nil
	}
	full := &FullError{fmt.Sprintf("%d messages and reported patches of %d bytes are waiting; the limits are %d "+
		"entries and %d bytes", count, bytes, maxCount, maxBytes)}
	if !o.cfg.DropOldest || size > maxBytes {
		return nil, full
	}
	var dropped []*Entry
	n, kept := 0, false // kept: an entry that may have reached the hub stays in the queue's head
	for ; n < len(o.queue) && !fits(count, bytes); n++ {
		switch e := o.queue[n]; {
		case e.done:
		case e.sent:
			kept = true
		default:
			dropped = append(dropped, e)
			count--
			bytes -= e.size
		}
	}
	if !fits(count, bytes) {
		full.Msg += " (the rest may have reached the hub already or are being written, so none can be dropped)"
		return nil, full
	}
	for _, e := range dropped {
		o.finishLocked(e)
	}
	if kept {
		o.queue = slices.DeleteFunc(o.queue, func(e *Entry) bool { return e.done })
	} else {
		o.queue = o.queue[n:]
	}
	return dropped, nil
}

// Complete finishes e; it returns false when e was already finished, so each entry has one completion. forget
// also removes e from disk: for an entry that can never be sent again (delivered, expired, dropped), not for one
// a close or a give-up failed, which the next client on the same directory sends.
func (o *Outbox) Complete(e *Entry, forget bool) bool {
	o.mu.Lock()
	first := o.finishLocked(e)
	o.mu.Unlock()
	if first && forget {
		o.backend.remove(e)
	}
	return first
}

func (o *Outbox) finishLocked(e *Entry) bool {
	if e.done {
		return false
	}
	e.done = true
	delete(o.pending, e.ID)
	o.bytes -= e.size
	return true
}

// Ready takes every queued entry for the live link: the returned send entries are in flight (in id order); due
// ones passed their deadline and must expire instead.
func (o *Outbox) Ready() (send, due []*Entry) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.cfg.Now()
	batch := o.queue
	o.queue = nil
	n := 0
	for _, e := range batch {
		switch {
		case e.done:
		case !e.Deadline.After(now):
			due = append(due, e)
		default:
			e.inFlight, e.sent = true, true
			batch[n] = e
			n++
		}
	}
	return batch[:n], due
}

// Requeue is the end of the live link: messages in flight go back to the head of the queue, in id order, except
// those past their deadline, which are returned due. Reported patches stay with the request layer.
func (o *Outbox) Requeue() (due []*Entry) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.cfg.Now()
	var back []*Entry
	for _, e := range o.pending {
		switch {
		case !e.inFlight || e.Kind == store.KindReported:
		case e.Deadline.After(now):
			e.inFlight = false
			back = append(back, e)
			if o.soonest.IsZero() || e.Deadline.Before(o.soonest) {
				o.soonest = e.Deadline
			}
		default:
			e.inFlight = false
			due = append(due, e)
		}
	}
	slices.SortFunc(back, byID)
	o.queue = append(back, o.queue...)
	slices.SortFunc(due, byID)
	return due
}

// expirable: neither being written to disk nor waiting for its acknowledgement on the live link.
func expirable(e *Entry) bool { return !e.writing && !e.inFlight }

// Due returns the entries past their deadline that may expire now, oldest first, and drops finished entries
// from the queue (those of earlier calls among them), which would otherwise grow while the link is down.
func (o *Outbox) Due() []*Entry {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.cfg.Now()
	o.queue = slices.DeleteFunc(o.queue, func(e *Entry) bool { return e.done })
	var due []*Entry
	for _, e := range o.pending {
		if expirable(e) && !e.Deadline.After(now) {
			due = append(due, e)
		}
	}
	slices.SortFunc(due, byID)
	return due
}

// NextDeadline is the earliest deadline among entries that may expire (zero: none), for an expiry timer now
// armed at armed (zero: none). rescan is false when no sooner deadline came in since the last call, so the
// armed timer stands and nothing was scanned.
func (o *Outbox) NextDeadline(armed time.Time) (next time.Time, rescan bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	soonest := o.soonest
	o.soonest = time.Time{}
	if !armed.IsZero() && (soonest.IsZero() || !soonest.Before(armed)) {
		return time.Time{}, false
	}
	for _, e := range o.pending {
		if expirable(e) && (next.IsZero() || e.Deadline.Before(next)) {
			next = e.Deadline
		}
	}
	return next, true
}

// TakeAll empties the queue and returns every pending entry, oldest first, for a failed completion. Entries
// still being written are left to the writer, which queues them (or hands them to WrittenAfterClose).
func (o *Outbox) TakeAll() []*Entry {
	o.mu.Lock()
	defer o.mu.Unlock()
	all := make([]*Entry, 0, len(o.pending))
	for _, e := range o.pending {
		if !e.writing {
			all = append(all, e)
		}
	}
	o.queue = nil
	slices.SortFunc(all, byID)
	return all
}

// Close refuses every later Add; entries written from now on go to WrittenAfterClose.
func (o *Outbox) Close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
}

// Shutdown commits what the disk writer still holds and releases the queue directory. Called once, after Close.
func (o *Outbox) Shutdown() { o.backend.close() }

func byID(a, b *Entry) int {
	switch {
	case a.ID < b.ID:
		return -1
	case a.ID > b.ID:
		return 1
	}
	return 0
}
