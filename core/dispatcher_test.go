package core

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/transport"
)

// fleetConnStr is a distinct device per client, so that a dispatcher's clients can be told apart.
func fleetConnStr(i int) string {
	return fmt.Sprintf("HostName=localhost:18883;DeviceId=dev%d;SharedAccessKey=%s", i, testKey)
}

// One thread-mode Dispatcher serves 20 clients from one goroutine: no client starts its own, handlers never run
// two at a time, each client's events keep their order, and closing the clients, then the dispatcher, ends it.
func TestSharedThreadDispatcherServesManyClientsInOrder(t *testing.T) {
	disp, err := NewDispatcher(DispatchThread)
	if err != nil {
		t.Fatal(err)
	}
	const clients, sends = 20, 50
	var running, overlapped atomic.Int32
	goroutines := map[uint64]bool{}
	var mu sync.Mutex
	type seen struct {
		states []state
		ids    []uint64
	}
	got := make([]seen, clients)
	all := make([]*Client, clients)
	for i := range all {
		c, err := newClient(fleetConnStr(i), Options{Dispatcher: disp}, newFakeDialer())
		if err != nil {
			t.Fatal(err)
		}
		enter := func() func() {
			if running.Add(1) > 1 {
				overlapped.Add(1)
			}
			mu.Lock()
			goroutines[goroutineID()] = true
			mu.Unlock()
			return func() { running.Add(-1) }
		}
		c.SetHandlers(Handlers{
			OnStatus: func(s ConnectionStatus, r ConnectionStatusChangeReason) {
				defer enter()()
				got[i].states = append(got[i].states, state{s, r})
			},
			OnSendComplete: func(id uint64, res SendResult, _ *Error) {
				defer enter()()
				if res == SendDelivered {
					got[i].ids = append(got[i].ids, id)
				}
			},
		})
		all[i] = c
	}
	if n := dispatcherGoroutines(); n != 0 {
		t.Fatalf("%d clients started their own dispatcher goroutine", n)
	}
	for _, c := range all {
		if err := connect(t, c); err != nil {
			t.Fatal(err)
		}
		for range sends {
			if _, err := c.Send(&Message{Payload: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := disp.Close(); codeOf(err) != CodeState {
		t.Fatalf("Close with open clients: %v, want CodeState", err)
	}
	for _, c := range all {
		c.Close()
	}
	for i, c := range all {
		select {
		case <-c.Done():
		case <-time.After(waitLimit):
			t.Fatalf("client %d: Done not closed", i)
		}
	}
	if err := disp.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := newClient(fleetConnStr(0), Options{Dispatcher: disp}, newFakeDialer()); codeOf(err) != CodeClosed {
		t.Fatalf("a client on a closed dispatcher: %v, want CodeClosed", err)
	}
	if n := overlapped.Load(); n > 0 {
		t.Fatalf("handlers ran concurrently %d times", n)
	}
	if len(goroutines) != 1 {
		t.Fatalf("handlers ran on %d goroutines, want 1", len(goroutines))
	}
	wantStates := fmt.Sprint([]state{connected, disabled})
	for i, g := range got {
		if fmt.Sprint(g.states) != wantStates {
			t.Fatalf("client %d: states %v, want %v", i, g.states, wantStates)
		}
		if len(g.ids) != sends {
			t.Fatalf("client %d: %d delivered, want %d", i, len(g.ids), sends)
		}
		for j, id := range g.ids {
			if id != uint64(j+1) {
				t.Fatalf("client %d: completions out of order: %v", i, g.ids)
			}
		}
	}
}

// dispatcherGoroutines counts running per-client dispatcher goroutines.
func dispatcherGoroutines() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "core.(*Client).runDispatcher(")
}

// A poll-mode Dispatcher runs every client's handlers and custom retry policies inside Dispatcher.Poll, on the
// polling goroutine; Client.Poll is refused for its clients; Poll returns CodeClosed once the dispatcher is closed
// and the clients' final events ran.
func TestSharedPollDispatcherRunsHandlersAndPoliciesOnThePoller(t *testing.T) {
	disp, err := NewDispatcher(DispatchPoll)
	if err != nil {
		t.Fatal(err)
	}
	fake := clock.NewFake(time.Unix(1700000000, 0))
	poller := goroutineID()
	var offPoller []string
	asked := map[int]bool{}
	const clients = 3
	all := make([]*Client, clients)
	seen := make([][]state, clients)
	for i := range all {
		policy := retry.Custom(func(int, error) (bool, time.Duration) {
			if goroutineID() != poller {
				offPoller = append(offPoller, "policy")
			}
			asked[i] = true
			return true, time.Second
		})
		c, err := newClient(fleetConnStr(i), Options{Dispatcher: disp, RetryPolicy: policy, Clock: fake},
			newFakeDialer(&transport.Error{Kind: transport.KindNetwork, Op: "connect"}))
		if err != nil {
			t.Fatal(err)
		}
		c.SetHandlers(Handlers{OnStatus: func(s ConnectionStatus, r ConnectionStatusChangeReason) {
			if goroutineID() != poller {
				offPoller = append(offPoller, "status")
			}
			seen[i] = append(seen[i], state{s, r})
		}})
		all[i] = c
	}
	if _, err := all[0].Poll(0); codeOf(err) != CodeState {
		t.Fatalf("Client.Poll on a dispatcher's client: %v, want CodeState", err)
	}
	results := make(chan error, clients)
	for _, c := range all {
		go func() { results <- connect(t, c) }()
	}
	deadline := time.Now().Add(waitLimit)
	for len(asked) < clients { // each policy question waits until this goroutine polls
		if time.Now().After(deadline) {
			t.Fatalf("policies asked for %d of %d clients", len(asked), clients)
		}
		if _, err := disp.Poll(10 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range all {
		waitFor(t, func() bool { s, _ := c.Status(); return s == StatusDisconnectedRetrying })
	}
	advanceTimers(t, fake, clients)
	for range clients {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range all {
		c.Close()
	}
	if err := disp.Close(); err != nil {
		t.Fatal(err)
	}
	for polls := 0; ; polls++ {
		_, err := disp.Poll(waitLimit)
		if codeOf(err) == CodeClosed {
			break
		}
		if err != nil || polls > 100 {
			t.Fatalf("Poll after close: %v after %d polls", err, polls)
		}
	}
	want := fmt.Sprint([]state{{StatusDisconnectedRetrying, ReasonNoNetwork}, connected, disabled})
	for i, s := range seen {
		if fmt.Sprint(s) != want {
			t.Fatalf("client %d saw %v, want %v", i, s, want)
		}
	}
	if len(offPoller) > 0 {
		t.Fatalf("ran off the polling goroutine: %v", offPoller)
	}
}

func TestDispatcherOptionsValidation(t *testing.T) {
	if _, err := NewDispatcher(DispatchMode(7)); codeOf(err) != CodeInvalidArgument {
		t.Fatalf("unknown mode: %v", err)
	}
	disp, err := NewDispatcher(DispatchThread)
	if err != nil {
		t.Fatal(err)
	}
	defer disp.Close()
	if _, err := newClient(testConnStr(), Options{Dispatcher: disp, Dispatch: DispatchPoll}, newFakeDialer()); codeOf(err) != CodeInvalidArgument {
		t.Fatalf("poll mode with a thread dispatcher: %v, want CodeInvalidArgument", err)
	}
	poll, err := NewDispatcher(DispatchPoll)
	if err != nil {
		t.Fatal(err)
	}
	defer poll.Close()
	if _, err := disp.Poll(0); codeOf(err) != CodeState {
		t.Fatalf("Poll on a thread dispatcher: %v, want CodeState", err)
	}
	if n, err := poll.Poll(0); n != 0 || err != nil {
		t.Fatalf("Poll of an empty dispatcher: %d, %v", n, err)
	}
}
