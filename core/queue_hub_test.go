package core

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/store"
	"github.com/iotconn/iotconn/hubsim"
)

// hubMIDs is the $.mid of every message the hub recorded, in arrival order.
func (h hubDevice) hubMIDs() []string {
	var mids []string
	for _, m := range h.hub.Messages(h.id) {
		mids = append(mids, m.MessageID)
	}
	return mids
}

func TestHubOverflowPolicies(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   OverflowPolicy
		rejected []string
		dropped  []uint64
		arrived  []string
	}{
		{"reject", OverflowReject, []string{"d", "e"}, nil, []string{"a", "b", "c"}},
		{"drop-oldest", OverflowDropOldest, nil, []uint64{1, 2}, []string{"c", "d", "e"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHub(t)
			c, r := h.client(t, h.cs, Options{QueueMaxMessages: 3, QueueOverflow: tc.policy})
			var rejected []string
			for _, mid := range []string{"a", "b", "c", "d", "e"} {
				_, err := c.Send(&Message{Payload: []byte(mid), MessageID: mid})
				switch codeOf(err) {
				case CodeOK:
				case CodeQueueFull:
					rejected = append(rejected, mid)
				default:
					t.Fatal(err)
				}
			}
			if !slices.Equal(rejected, tc.rejected) {
				t.Fatalf("rejected %v, want %v", rejected, tc.rejected)
			}
			if err := connect(t, c); err != nil {
				t.Fatal(err)
			}
			got := byResult(t, r.expectCompletions(t, 3+len(tc.dropped)))
			if !slices.Equal(got[SendFailed], tc.dropped) || len(got[SendDelivered]) != 3 {
				t.Fatalf("completions %v", got)
			}
			if mids := h.hubMIDs(); !slices.Equal(mids, tc.arrived) {
				t.Fatalf("hub recorded %v, want %v", mids, tc.arrived)
			}
		})
	}
}

// storedMIDs is the $.mid of every message in the queue directory dir, in order: the test reads the generated
// ones. No client may hold dir.
func storedMIDs(t *testing.T, dir string) []string {
	t.Helper()
	st, recs, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mids := make([]string, len(recs))
	for i, r := range recs {
		mids[i] = r.Msg.MessageID
	}
	return mids
}

// expectRecoveredDelivered connects a client on dir to the hub and expects the k messages it recovers to
// arrive with the given $.mid values, in order, each completed once as delivered.
func (h hubDevice) expectRecoveredDelivered(t *testing.T, dir string, mids []string) {
	t.Helper()
	c, r := h.client(t, h.cs, Options{QueueDir: dir})
	if n := c.Recovered(); n != len(mids) {
		t.Fatalf("recovered %d messages, want %d", n, len(mids))
	}
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	got := byResult(t, r.expectCompletions(t, len(mids)))
	if len(got[SendDelivered]) != len(mids) || got[SendDelivered][len(mids)-1] != uint64(len(mids)) {
		t.Fatalf("completions %v", got)
	}
	if arrived := h.hubMIDs(); !slices.Equal(arrived, mids) {
		t.Fatalf("hub recorded %d messages %v,\nwant %d %v", len(arrived), arrived, len(mids), mids)
	}
}

func TestHubDurableQueueSurvivesCloseWhileTheHubIsDown(t *testing.T) {
	const k = 40
	h := startHub(t)
	dir := t.TempDir()
	c, r := h.client(t, h.cs, Options{QueueDir: dir})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	h.fault(t, hubsim.FaultHubDown, 3*time.Second)
	if s := <-r.states; s.status != StatusDisconnectedRetrying {
		t.Fatalf("status %v after the hub went down", s)
	}
	for i := range k {
		msg := &Message{Payload: []byte("x")}
		if i%2 == 0 {
			msg.MessageID = fmt.Sprintf("explicit-%d", i) // the odd ones get generated ids
		}
		if _, err := c.Send(msg); err != nil {
			t.Fatal(err)
		}
	}
	closeAndWait(c)
	mids := storedMIDs(t, dir)
	if len(mids) != k {
		t.Fatalf("%d messages on disk after close, want %d", len(mids), k)
	}
	if n := len(h.hub.Messages("dev1")); n != 0 {
		t.Fatalf("the hub got %d messages while down", n)
	}
	h.expectRecoveredDelivered(t, dir, mids)
}

// TestDurableCrashChild is the device process TestHubDurableQueueSurvivesKill9 kills: it queues crashMessages
// messages in the directory named by the environment, says so, and waits to be killed.
func TestDurableCrashChild(t *testing.T) {
	dir := os.Getenv("IOTCONN_TEST_CRASH_DIR")
	if dir == "" {
		t.Skip("run by TestHubDurableQueueSurvivesKill9")
	}
	c, err := NewClient(testConnStr(), Options{QueueDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, mid := range crashMIDs() {
		if _, err := c.Send(&Message{Payload: []byte(mid), MessageID: mid}); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("queued")
	io.Copy(io.Discard, os.Stdin) // until the parent kills this process (or itself ends)
	t.Fatal("not killed")
}

func crashMIDs() []string {
	mids := make([]string, 25)
	for i := range mids {
		mids[i] = fmt.Sprintf("crash-%02d", i)
	}
	return mids
}

func TestHubDurableQueueSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	child := exec.Command(os.Args[0], "-test.run=^TestDurableCrashChild$", "-test.count=1")
	child.Env = append(os.Environ(), "IOTCONN_TEST_CRASH_DIR="+dir)
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if s != "queued\n" {
			child.Process.Kill()
			child.Wait()
			t.Fatalf("child said %q", s)
		}
	case <-time.After(waitLimit):
		child.Process.Kill()
		child.Wait()
		t.Fatal("the child did not queue its messages in time")
	}
	if err := child.Process.Kill(); err != nil { // SIGKILL: no Close, no deferred code
		t.Fatal(err)
	}
	child.Wait()
	h := startHub(t)
	h.expectRecoveredDelivered(t, dir, crashMIDs())
}
