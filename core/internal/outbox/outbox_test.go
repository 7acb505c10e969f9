package outbox

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/store"
	"github.com/iotconn/iotconn/core/transport"
)

var t0 = time.Unix(1700000000, 0)

// now is the tests' clock: t0 until a test moves it.
var now = t0

func clock() time.Time { return now }

func newMemory(t *testing.T, maxMessages int, dropOldest bool) *Outbox {
	t.Helper()
	now = t0
	o, err := New(Config{MaxMessages: maxMessages, MaxBytes: 1 << 20, DropOldest: dropOldest, MIDPrefix: "p.",
		Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func add(t *testing.T, o *Outbox, mid string, ttl time.Duration) *Entry {
	t.Helper()
	return addKind(t, o, store.KindMessage, transport.Message{Payload: []byte("x"), MessageID: mid}, ttl)
}

// addKind adds an entry of kind that expires ttl after t0 and waits until it is written (durable mode).
func addKind(t *testing.T, o *Outbox, kind store.Kind, m transport.Message, ttl time.Duration) *Entry {
	t.Helper()
	e, _, written, err := o.Add(kind, m, t0.Add(ttl))
	if err != nil {
		t.Fatal(err)
	}
	if written != nil {
		if err := <-written; err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func ids(es []*Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func TestIDsAndGeneratedMessageIDs(t *testing.T) {
	o := newMemory(t, 10, false)
	a, b := add(t, o, "", time.Minute), add(t, o, "mine", time.Minute)
	if a.ID != 1 || b.ID != 2 || a.Wire.MessageID != "p.1" || b.Wire.MessageID != "mine" {
		t.Fatalf("entries %d %q, %d %q", a.ID, a.Wire.MessageID, b.ID, b.Wire.MessageID)
	}
}

func TestLinkLossRequeuesInOrderAndExpiresWhatPassedItsDeadline(t *testing.T) {
	o := newMemory(t, 10, false)
	short, long := add(t, o, "short", 10*time.Second), add(t, o, "long", time.Hour)
	send, due := o.Ready()
	if !slices.Equal(ids(send), []uint64{1, 2}) || len(due) != 0 {
		t.Fatalf("ready %v, due %v", ids(send), ids(due))
	}
	// While the link lives, an entry in flight waits for its acknowledgement past its deadline.
	now = t0.Add(time.Minute)
	if due := o.Due(); len(due) != 0 {
		t.Fatalf("due in flight: %v", ids(due))
	}
	if next, _ := o.NextDeadline(time.Time{}); !next.IsZero() {
		t.Fatalf("an expiry deadline %v for entries in flight", next)
	}
	// The link ends after short's deadline: short is due (not resent), long goes back to the queue.
	if due := o.Requeue(); !slices.Equal(ids(due), []uint64{short.ID}) {
		t.Fatalf("due after the link ended: %v", ids(due))
	}
	if !o.MayHaveArrived(short) || !o.MayHaveArrived(long) {
		t.Fatal("sent entries are not marked as possibly arrived")
	}
	o.Complete(short, true)
	if send, _ := o.Ready(); !slices.Equal(ids(send), []uint64{long.ID}) {
		t.Fatalf("resent %v", ids(send))
	}
}

func TestCompleteOnceAndDropOldestKeepsWhatMayHaveArrived(t *testing.T) {
	o := newMemory(t, 2, true)
	sent := add(t, o, "sent", time.Hour)
	o.Ready()
	o.Requeue() // back in the queue, unacknowledged
	queued := add(t, o, "queued", time.Hour)
	newest, dropped, _, err := o.Add(store.KindMessage, transport.Message{Payload: []byte("x")}, t0.Add(time.Hour))
	if err != nil || !slices.Equal(ids(dropped), []uint64{queued.ID}) {
		t.Fatalf("dropped %v (%v), want only %d", ids(dropped), err, queued.ID)
	}
	if o.Complete(queued, true) {
		t.Fatal("a dropped entry completed again")
	}
	if !o.Complete(sent, true) || o.Complete(sent, true) {
		t.Fatal("Complete is not once")
	}
	o.Ready() // newest is in flight
	if _, _, _, err = o.Add(store.KindMessage, transport.Message{Payload: []byte("x")}, t0.Add(time.Hour)); err != nil {
		t.Fatalf("room after a completion: %v", err)
	}
	o.Ready()
	_, _, _, err = o.Add(store.KindMessage, transport.Message{Payload: []byte("x")}, t0.Add(time.Hour))
	var full *FullError
	if !errors.As(err, &full) {
		t.Fatalf("over the limit with %d and the next in flight: %v, want a FullError", newest.ID, err)
	}
}

func TestNextDeadlineRescansOnlyForASoonerOne(t *testing.T) {
	o := newMemory(t, 10, false)
	add(t, o, "a", time.Minute)
	next, rescan := o.NextDeadline(time.Time{})
	if !rescan || !next.Equal(t0.Add(time.Minute)) {
		t.Fatalf("first: %v %v", next, rescan)
	}
	add(t, o, "later", time.Hour)
	if _, rescan := o.NextDeadline(next); rescan {
		t.Fatal("rescanned for a later deadline")
	}
	add(t, o, "sooner", time.Second)
	if next, rescan := o.NextDeadline(next); !rescan || !next.Equal(t0.Add(time.Second)) {
		t.Fatalf("sooner: %v %v", next, rescan)
	}
}

func TestDurableEntriesSurviveAndCountAsPossiblySent(t *testing.T) {
	dir := t.TempDir()
	var afterClose []*Entry
	cfg := Config{MaxMessages: 10, MaxBytes: 1 << 20, MIDPrefix: "p.", Dir: dir, Now: clock, Queued: func() {},
		WrittenAfterClose: func(es []*Entry) { afterClose = append(afterClose, es...) },
		Logf:              func(string, ...any) {}}
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kept, delivered := add(t, o, "kept", time.Hour), add(t, o, "delivered", time.Hour)
	o.Complete(delivered, true)
	o.Complete(kept, false) // failed by a close: stays on disk
	o.Close()
	if _, _, _, err := o.Add(store.KindMessage, transport.Message{Payload: []byte("x")}, t0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v", err)
	}
	o.Shutdown()
	again, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Shutdown()
	all := again.TakeAll()
	if again.Recovered() != 1 || len(all) != 1 || all[0].Wire.MessageID != "kept" || !again.MayHaveArrived(all[0]) {
		t.Fatalf("recovered %d: %v", again.Recovered(), all)
	}
	if len(afterClose) != 0 {
		t.Fatalf("%d entries written after close", len(afterClose))
	}
}

func addPatch(t *testing.T, o *Outbox, patch string) *Entry {
	t.Helper()
	return addKind(t, o, store.KindReported, transport.Message{Payload: []byte(patch)}, time.Hour)
}

// Reported patches share the queue, its ids and its limits with messages; once handed out they are the request
// layer's, so a lost link requeues only the messages. On disk they keep their kind.
func TestReportedPatchesShareTheQueueAndStayWithTheRequestLayer(t *testing.T) {
	dir := t.TempDir()
	now = t0
	cfg := Config{MaxMessages: 3, MaxBytes: 1 << 20, MIDPrefix: "p.", Dir: dir, Now: clock, Queued: func() {},
		WrittenAfterClose: func([]*Entry) {}, Logf: func(string, ...any) {}}
	o, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	msg, patch := add(t, o, "", time.Hour), addPatch(t, o, `{"a":1}`)
	if get := o.TakeID(); msg.ID != 1 || patch.ID != 2 || get != 3 || patch.Wire.MessageID != "" {
		t.Fatalf("ids %d %d %d, patch message id %q", msg.ID, patch.ID, get, patch.Wire.MessageID)
	}
	addPatch(t, o, "{}")
	var full *FullError
	if _, _, _, err := o.Add(store.KindReported, transport.Message{}, t0); !errors.As(err, &full) {
		t.Fatalf("a patch over the count limit: %v", err)
	}
	if send, _ := o.Ready(); !slices.Equal(ids(send), []uint64{1, 2, 4}) {
		t.Fatalf("ready %v", ids(send))
	}
	o.Requeue()
	if send, _ := o.Ready(); !slices.Equal(ids(send), []uint64{msg.ID}) {
		t.Fatalf("after a lost link ready %v, want the message alone", ids(send))
	}
	o.Close()
	o.Shutdown()
	again, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Shutdown()
	all := again.TakeAll()
	if len(all) != 3 || all[0].Kind != store.KindMessage || all[1].Kind != store.KindReported ||
		string(all[1].Wire.Payload) != `{"a":1}` || all[2].Kind != store.KindReported {
		t.Fatalf("recovered %+v", all)
	}
}
