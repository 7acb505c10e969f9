package core

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/transport"
)

// sendIDs sends one message per id (its $.mid and payload) and returns the local ids Send gave them.
func sendIDs(t *testing.T, c *Client, mids ...string) []uint64 {
	t.Helper()
	ids := make([]uint64, len(mids))
	for i, mid := range mids {
		id, err := c.Send(&Message{Payload: []byte(mid), MessageID: mid})
		if err != nil {
			t.Fatalf("send %s: %v", mid, err)
		}
		ids[i] = id
	}
	return ids
}

// byResult sorts completions into result -> ids, failing on any id completed twice.
func byResult(t *testing.T, comps []completion) map[SendResult][]uint64 {
	t.Helper()
	seen := map[uint64]bool{}
	out := map[SendResult][]uint64{}
	for _, c := range comps {
		if seen[c.id] {
			t.Fatalf("message %d completed twice", c.id)
		}
		seen[c.id] = true
		out[c.result] = append(out[c.result], c.id)
	}
	return out
}

func TestOverflowRejectKeepsTheQueuedMessages(t *testing.T) {
	d := newFakeDialer()
	c, r := newTestClient(t, d, Options{QueueMaxMessages: 3})
	sendIDs(t, c, "a", "b", "c")
	if _, err := c.Send(&Message{Payload: []byte("d")}); codeOf(err) != CodeQueueFull {
		t.Fatalf("fourth send: %v, want CodeQueueFull", err)
	}
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	if got := byResult(t, r.expectCompletions(t, 3)); !slices.Equal(got[SendDelivered], []uint64{1, 2, 3}) {
		t.Fatalf("completions %v", got)
	}
	if got := d.conn(0).sentIDs(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("sent %v", got)
	}
	r.expectNoMoreCompletions(t)
}

func TestOverflowDropOldestFailsTheOldestQueued(t *testing.T) {
	d := newFakeDialer()
	c, r := newTestClient(t, d, Options{QueueMaxMessages: 3, QueueOverflow: OverflowDropOldest})
	sendIDs(t, c, "a", "b", "c", "d", "e") // d drops a, e drops b
	dropped := r.expectCompletions(t, 2)
	for i, comp := range dropped {
		if comp.id != uint64(i+1) || comp.result != SendFailed || comp.code != CodeDropped {
			t.Fatalf("drop completion %d: %+v, want id %d Failed/CodeDropped", i, comp, i+1)
		}
	}
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	if got := byResult(t, r.expectCompletions(t, 3)); !slices.Equal(got[SendDelivered], []uint64{3, 4, 5}) {
		t.Fatalf("completions %v", got)
	}
	if got := d.conn(0).sentIDs(); !slices.Equal(got, []string{"c", "d", "e"}) {
		t.Fatalf("sent %v, want the newest three in order", got)
	}
	r.expectNoMoreCompletions(t)
}

func TestOverflowDropOldestNeverDropsInFlightMessages(t *testing.T) {
	d := newFakeDialer()
	d.manual = true
	c, r := newTestClient(t, d, Options{QueueMaxMessages: 2, QueueOverflow: OverflowDropOldest})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	sendIDs(t, c, "a", "b")
	conn := d.conn(0)
	waitFor(t, func() bool { return len(conn.sentIDs()) == 2 })
	if _, err := c.Send(&Message{Payload: []byte("c")}); codeOf(err) != CodeQueueFull {
		t.Fatalf("send with every message in flight: %v, want CodeQueueFull", err)
	}
	conn.ackAll()
	if got := byResult(t, r.expectCompletions(t, 2)); !slices.Equal(got[SendDelivered], []uint64{1, 2}) {
		t.Fatalf("completions %v", got)
	}
	sendIDs(t, c, "c")
	waitFor(t, func() bool { return len(conn.sentIDs()) == 3 })
	conn.ackAll()
	if comp := r.expectCompletions(t, 1)[0]; comp.id != 3 || comp.result != SendDelivered {
		t.Fatalf("completion %+v", comp) // a rejected send takes no id
	}
}

func TestOverflowDropOldestByBytes(t *testing.T) {
	c, r := newTestClient(t, newFakeDialer(), Options{QueueMaxBytes: 10, QueueOverflow: OverflowDropOldest})
	sendIDs(t, c, "aaaa", "bbbb") // 8 bytes
	if _, err := c.Send(&Message{Payload: make([]byte, 11)}); codeOf(err) != CodeQueueFull {
		t.Fatalf("a message over the byte limit itself: %v, want CodeQueueFull", err)
	}
	r.expectNoMoreCompletions(t) // nothing was dropped for it
	sendIDs(t, c, "cccccc")      // 8+6 > 10: dropping aaaa leaves 4+6
	if comp := r.expectCompletions(t, 1)[0]; comp.id != 1 || comp.code != CodeDropped {
		t.Fatalf("completion %+v, want id 1 dropped", comp)
	}
	r.expectNoMoreCompletions(t)
}

func TestOverflowPolicyIsValidated(t *testing.T) {
	if _, err := newClient(testConnStr(), Options{QueueOverflow: 7}, newFakeDialer()); codeOf(err) != CodeInvalidArgument {
		t.Fatalf("unknown overflow policy: %v", err)
	}
	c, _ := newTestClient(t, newFakeDialer(), Options{})
	if _, err := c.Send(&Message{Payload: []byte("x"), TTL: -time.Second}); codeOf(err) != CodeInvalidArgument {
		t.Fatalf("negative TTL: %v", err)
	}
}

func TestTimeToLiveExpiresEachMessageAtItsOwnDeadline(t *testing.T) {
	fake := clock.NewFake(time.Unix(1700000000, 0))
	d := newFakeDialer()
	c, r := newTestClient(t, d, Options{Clock: fake, OperationTimeout: time.Minute})
	ctx := testContext(t)
	send := func(mid string, ttl time.Duration) {
		if _, err := c.Send(&Message{Payload: []byte(mid), MessageID: mid, TTL: ttl}); err != nil {
			t.Fatal(err)
		}
	}
	send("ten-seconds", 10*time.Second)
	if got, err := fake.NextTimer(ctx); err != nil || got != 10*time.Second {
		t.Fatalf("expiry timer %v %v, want 10s", got, err)
	}
	send("default", 0)
	send("five-seconds", 5*time.Second) // sooner than the armed timer: it is re-armed
	if got, err := fake.NextTimer(ctx); err != nil || got != 5*time.Second {
		t.Fatalf("expiry timer %v %v, want 5s", got, err)
	}
	fake.Advance(5 * time.Second)
	if comp := r.expectCompletions(t, 1)[0]; comp.id != 3 || comp.result != SendExpired || comp.code != CodeTimeout {
		t.Fatalf("completion %+v, want id 3 expired", comp)
	}
	if got, err := fake.NextTimer(ctx); err != nil || got != 5*time.Second {
		t.Fatalf("expiry timer %v %v, want the remaining 5s", got, err)
	}
	fake.Advance(5 * time.Second)
	if comp := r.expectCompletions(t, 1)[0]; comp.id != 1 || comp.result != SendExpired {
		t.Fatalf("completion %+v, want id 1 expired", comp)
	}
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	if comp := r.expectCompletions(t, 1)[0]; comp.id != 2 || comp.result != SendDelivered {
		t.Fatalf("completion %+v, want id 2 delivered", comp)
	}
	if got := d.conn(0).sentIDs(); !slices.Equal(got, []string{"default"}) {
		t.Fatalf("sent %v; expired messages must never be sent", got)
	}
}

func TestDurableCloseKeepsMessagesForTheNextClient(t *testing.T) {
	dir := t.TempDir()
	c1, r1 := newTestClient(t, newFakeDialer(), Options{QueueDir: dir})
	sendIDs(t, c1, "a", "b", "c")
	c1.Close()
	for _, comp := range r1.expectCompletions(t, 3) {
		if comp.result != SendFailed || comp.code != CodeClosed {
			t.Fatalf("completion after Close %+v", comp)
		}
	}
	d := newFakeDialer()
	c2, r2 := newTestClient(t, d, Options{QueueDir: dir})
	if n := c2.Recovered(); n != 3 {
		t.Fatalf("recovered %d, want 3", n)
	}
	if id := sendIDs(t, c2, "d")[0]; id != 4 {
		t.Fatalf("first new id %d, want 4 after 3 recovered", id)
	}
	if err := connect(t, c2); err != nil {
		t.Fatal(err)
	}
	if got := byResult(t, r2.expectCompletions(t, 4)); !slices.Equal(got[SendDelivered], []uint64{1, 2, 3, 4}) {
		t.Fatalf("completions %v", got)
	}
	if got := d.conn(0).sentIDs(); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("sent %v", got)
	}
	c2.Close()
	c3, _ := newTestClient(t, newFakeDialer(), Options{QueueDir: dir})
	if n := c3.Recovered(); n != 0 {
		t.Fatalf("%d delivered messages were still on disk", n)
	}
}

func TestDurableGiveUpKeepsMessagesForTheNextClient(t *testing.T) {
	dir := t.TempDir()
	badKey := &transport.Error{Kind: transport.KindAuth, Op: "connect"}
	c1, r1 := newTestClient(t, newFakeDialer(badKey), Options{QueueDir: dir})
	sendIDs(t, c1, "a", "b")
	if err := connect(t, c1); err == nil {
		t.Fatal("connect succeeded with a refused key")
	}
	for _, comp := range r1.expectCompletions(t, 2) {
		if comp.result != SendFailed || comp.code != CodeAuth {
			t.Fatalf("completion after the fatal error %+v", comp)
		}
	}
	c1.Close()
	d := newFakeDialer()
	c2, r2 := newTestClient(t, d, Options{QueueDir: dir})
	if n := c2.Recovered(); n != 2 {
		t.Fatalf("recovered %d, want the 2 a give-up failed", n)
	}
	if err := connect(t, c2); err != nil {
		t.Fatal(err)
	}
	if got := byResult(t, r2.expectCompletions(t, 2)); !slices.Equal(got[SendDelivered], []uint64{1, 2}) {
		t.Fatalf("completions %v", got)
	}
	if got := d.conn(0).sentIDs(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("sent %v", got)
	}
}

func TestDurableDroppedAndExpiredMessagesLeaveTheDisk(t *testing.T) {
	dir := t.TempDir()
	fake := clock.NewFake(time.Unix(1700000000, 0))
	opts := Options{QueueDir: dir, Clock: fake, QueueMaxMessages: 3, QueueOverflow: OverflowDropOldest}
	c1, r1 := newTestClient(t, newFakeDialer(), opts)
	if _, err := c1.Send(&Message{Payload: []byte("x"), MessageID: "expires", TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	advanceTimers(t, fake, 1)
	if comp := r1.expectCompletions(t, 1)[0]; comp.result != SendExpired {
		t.Fatalf("completion %+v", comp)
	}
	sendIDs(t, c1, "dropped", "kept-1", "kept-2", "kept-3")
	if comp := r1.expectCompletions(t, 1)[0]; comp.code != CodeDropped {
		t.Fatalf("completion %+v", comp)
	}
	c1.Close()
	d := newFakeDialer()
	c2, _ := newTestClient(t, d, opts)
	if n := c2.Recovered(); n != 3 {
		t.Fatalf("recovered %d, want the 3 kept", n)
	}
	if err := connect(t, c2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(d.conn(0).sentIDs()) == 3 })
	if got := d.conn(0).sentIDs(); !slices.Equal(got, []string{"kept-1", "kept-2", "kept-3"}) {
		t.Fatalf("sent %v", got)
	}
}

func TestDurableRecoveredMessagePastItsTTLExpiresUnsent(t *testing.T) {
	dir := t.TempDir()
	fake := clock.NewFake(time.Unix(1700000000, 0))
	c1, _ := newTestClient(t, newFakeDialer(), Options{QueueDir: dir, Clock: fake})
	if _, err := c1.Send(&Message{Payload: []byte("x"), MessageID: "short", TTL: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Send(&Message{Payload: []byte("x"), MessageID: "long", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	c1.Close()
	fake.Advance(time.Minute) // the device was off for a minute
	d := newFakeDialer()
	c2, r2 := newTestClient(t, d, Options{QueueDir: dir, Clock: fake})
	if err := connect(t, c2); err != nil {
		t.Fatal(err)
	}
	got := byResult(t, r2.expectCompletions(t, 2))
	if !slices.Equal(got[SendExpired], []uint64{1}) || !slices.Equal(got[SendDelivered], []uint64{2}) {
		t.Fatalf("completions %v", got)
	}
	if sent := d.conn(0).sentIDs(); !slices.Equal(sent, []string{"long"}) {
		t.Fatalf("sent %v; a message past its TTL must not be sent", sent)
	}
}

func TestDurableConcurrentSendersKeepIDOrderOnTheWire(t *testing.T) {
	const senders, each = 8, 40
	d := newFakeDialer()
	c, r := newTestClient(t, d, Options{QueueDir: t.TempDir()})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for range senders {
		wg.Go(func() {
			for range each {
				if _, err := c.Send(&Message{Payload: []byte("x")}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := byResult(t, r.expectCompletions(t, senders*each)); len(got[SendDelivered]) != senders*each {
		t.Fatalf("completions %v", got)
	}
	var last uint64
	for _, mid := range d.conn(0).sentIDs() { // generated $.mid values end in the local id
		id, err := strconv.ParseUint(mid[strings.LastIndexByte(mid, '.')+1:], 10, 64)
		if err != nil || id <= last {
			t.Fatalf("$.mid %s after id %d: not in id order", mid, last)
		}
		last = id
	}
}

func TestDurableStoreErrorsAreCodeStore(t *testing.T) {
	dir := t.TempDir()
	c1, _ := newTestClient(t, newFakeDialer(), Options{QueueDir: dir})
	if _, err := newClient(testConnStr(), Options{QueueDir: dir}, newFakeDialer()); codeOf(err) != CodeStore ||
		!strings.Contains(err.Error(), "in use") {
		t.Fatalf("second client on a directory in use: %v, want CodeStore", err)
	}
	c1.Close()

	corrupt := t.TempDir()
	writeFile(t, corrupt+"/queue.db", strings.Repeat("garbage!", 1024))
	notADir := t.TempDir() + "/file"
	writeFile(t, notADir, "x")
	for name, dir := range map[string]string{"corrupt file": corrupt, "not a directory": notADir} {
		if _, err := newClient(testConnStr(), Options{QueueDir: dir}, newFakeDialer()); codeOf(err) != CodeStore {
			t.Errorf("%s: %v, want CodeStore", name, err)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}
