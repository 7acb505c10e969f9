package main

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotconn/iotconn/core"
	"github.com/iotconn/iotconn/hubsim"
)

// These tests drive the handle table through createClient/destroyClient, the Go side of iotconn_client_create
// and iotconn_client_destroy (test files cannot use cgo), against an in-process hubsim on 127.0.0.1.

func startHub(t *testing.T) (*hubsim.Hub, string) {
	t.Helper()
	hub, err := hubsim.Start(hubsim.Config{Dir: t.TempDir(), MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hub.AddDevice("dev1", ""); err != nil {
		hub.Close()
		t.Fatal(err)
	}
	cs, err := hub.ConnectionString("dev1")
	if err != nil {
		hub.Close()
		t.Fatal(err)
	}
	return hub, cs
}

func codeOf(err error) core.Code {
	var ce *core.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return core.CodeInternal
}

// verifyNoGoroutineLeft is goleak's check against the goroutines of before, with the one exception the engine's
// own tests make: paho may still be returning from a Publish that raced the end of a link.
func verifyNoGoroutineLeft(t *testing.T, before goleak.Option) {
	t.Helper()
	goleak.VerifyNone(t, before, goleak.IgnoreTopFunction("github.com/eclipse/paho%2emqtt%2egolang.(*client).Publish"))
}

// 200 create/connect/send/destroy cycles, both dispatch modes, half destroyed with messages still queued: every
// destroyed handle is unknown afterwards (a second destroy too) and no goroutine of any client is left.
func TestCreateDestroyCyclesLeaveNoGoroutine(t *testing.T) {
	before := goleak.IgnoreCurrent()
	hub, cs := startHub(t)
	seen := map[uintptr]bool{}
	for i := range 200 {
		opts := core.Options{CAFile: hub.CAFile(), Dispatch: core.DispatchMode(i % 2)}
		h, err := createClient(cs, opts)
		if err != nil {
			t.Fatalf("cycle %d: create: %v", i, err)
		}
		if seen[h] {
			t.Fatalf("cycle %d: handle %#x given out twice", i, h)
		}
		seen[h] = true
		e, cerr := lookup(h)
		if cerr != nil {
			t.Fatalf("cycle %d: lookup of a new handle: %v", i, cerr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = e.client.Connect(ctx)
		cancel()
		if err != nil {
			t.Fatalf("cycle %d: connect: %v", i, err)
		}
		for range 3 {
			if _, err := e.client.Send(&core.Message{Payload: []byte("cycle")}); err != nil {
				t.Fatalf("cycle %d: send: %v", i, err)
			}
		}
		if err := destroyClient(h); err != nil {
			t.Fatalf("cycle %d: destroy: %v", i, err)
		}
		if err := destroyClient(h); codeOf(err) != core.CodeBadHandle {
			t.Fatalf("cycle %d: second destroy: %v, want a bad handle", i, err)
		}
		if _, cerr := lookup(h); cerr == nil || cerr.Code != core.CodeBadHandle {
			t.Fatalf("cycle %d: lookup after destroy: %v", i, cerr)
		}
	}
	if err := hub.Close(); err != nil {
		t.Fatal(err)
	}
	verifyNoGoroutineLeft(t, before)
}

// Goroutines send through the handle table while another closes the client and then destroys the handle (in
// POLL mode two more poll all along): each send gets an id or CodeClosed, each lookup after the destroy a bad
// handle; ids are distinct; pollers end with CodeClosed; -race sees the table, the entry and the engine used from
// many goroutines at once.
func TestSendsRaceCloseAndDestroy(t *testing.T) {
	before := goleak.IgnoreCurrent()
	hub, cs := startHub(t)
	defer func() {
		hub.Close()
		verifyNoGoroutineLeft(t, before)
	}()
	for _, dispatch := range []core.DispatchMode{core.DispatchThread, core.DispatchPoll} {
		h, err := createClient(cs, core.Options{CAFile: hub.CAFile(), Dispatch: dispatch, QueueMaxMessages: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		e, _ := lookup(h)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := e.client.Connect(ctx); err != nil {
			cancel()
			t.Fatal(err)
		}
		cancel()

		const senders, perSender = 8, 5000 // a bound: the close stops them long before
		var (
			mu       sync.Mutex
			ids      = map[uint64]bool{}
			closed   int
			badCodes []error
			wg       sync.WaitGroup
		)
		pollErrs := make(chan error, 2)
		if dispatch == core.DispatchPoll {
			for range 2 {
				go func() {
					deadline := time.Now().Add(60 * time.Second)
					for time.Now().Before(deadline) {
						if _, err := e.client.Poll(50 * time.Millisecond); err != nil {
							pollErrs <- err
							return
						}
					}
					pollErrs <- errors.New("still polling after 60 s")
				}()
			}
		}
		enough := make(chan struct{})
		var enoughOnce sync.Once
		for range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perSender {
					e, cerr := lookup(h)
					if cerr != nil {
						return // destroyed
					}
					id, err := e.client.Send(&core.Message{Payload: []byte("race")})
					mu.Lock()
					switch {
					case err == nil && !ids[id]:
						ids[id] = true
						if len(ids) == 500 {
							enoughOnce.Do(func() { close(enough) })
						}
					case codeOf(err) == core.CodeClosed:
						closed++
					default:
						badCodes = append(badCodes, err)
					}
					mu.Unlock()
				}
			}()
		}
		select {
		case <-enough:
		case <-time.After(30 * time.Second):
			t.Error("500 sends were not accepted within 30 s")
		}
		if err := e.client.Close(); err != nil {
			t.Error(err)
		}
		if err := destroyClient(h); err != nil {
			t.Error(err)
		}
		wg.Wait()
		if dispatch == core.DispatchPoll {
			for range 2 {
				if err := <-pollErrs; codeOf(err) != core.CodeClosed {
					t.Errorf("a poller ended with %v, want CodeClosed", err)
				}
			}
		}
		if len(badCodes) > 0 {
			t.Errorf("dispatch %d: %d sends failed otherwise than closed, first: %v", dispatch, len(badCodes), badCodes[0])
		}
		if closed == 0 {
			t.Errorf("dispatch %d: no send saw the close (%d accepted)", dispatch, len(ids))
		}
		t.Logf("dispatch %d: %d sends accepted, %d refused as closed", dispatch, len(ids), closed)
	}
}
