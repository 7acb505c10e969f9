package core

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/iotconn/iotconn/hubsim"
)

// Twins and methods with the real MQTT transport against the in-process hub emulator.

// twinClient is a client of the identity with the twin handlers, OnDesired included.
func (h hubDevice) twinClient(t *testing.T, opts Options) (*Client, *twinRecorder) {
	t.Helper()
	c, _ := h.client(t, h.cs, opts)
	r := newTwinRecorder()
	r.desired = make(chan twinResult, 100)
	c.SetHandlers(r.handlers())
	return c, r
}

// twinSections reads a twin document: its desired and reported sections, $version included.
func twinSections(t *testing.T, twin []byte) (desired, reported map[string]any) {
	t.Helper()
	var doc struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	}
	if err := json.Unmarshal(twin, &doc); err != nil || doc.Desired == nil || doc.Reported == nil {
		t.Fatalf("twin %s: %v", twin, err)
	}
	return doc.Desired, doc.Reported
}

// hubTwin is the identity's twin as the hub keeps it.
func (h hubDevice) hubTwin(t *testing.T) (desired, reported map[string]any) {
	t.Helper()
	twin, err := h.hub.Twin(h.id)
	if err != nil {
		t.Fatal(err)
	}
	return twinSections(t, twin)
}

func (h hubDevice) updateDesired(t *testing.T, patch string) int64 {
	t.Helper()
	twin, err := h.hub.UpdateDesired(h.id, []byte(patch))
	if err != nil {
		t.Fatal(err)
	}
	desired, _ := twinSections(t, twin)
	return int64(desired["$version"].(float64))
}

// expectRetrying skips status events until one is Disconnected_Retrying, and returns it.
func (r *recorder) expectRetrying(t *testing.T) state {
	t.Helper()
	for {
		if s := receive(t, r.states, "Disconnected_Retrying"); s.status == StatusDisconnectedRetrying {
			return s
		}
	}
}

// expectDesiredValue waits for desired updates until one of version want and returns its properties; each
// update's version must be above the one before, and its $version must be its version.
func expectDesiredValue(t *testing.T, r *twinRecorder, after, want int64) map[string]any {
	t.Helper()
	for {
		got := receive(t, r.desired, fmt.Sprintf("desired update of version %d", want))
		var props map[string]any
		if err := json.Unmarshal([]byte(got.twin), &props); err != nil || props["$version"] != float64(got.version) {
			t.Fatalf("desired update %+v: %v", got, err)
		}
		if got.version <= after || got.version > want {
			t.Fatalf("desired version %d after %d, want up to %d", got.version, after, want)
		}
		if got.version == want {
			return props
		}
		after = got.version
	}
}

func TestHubGetTwinAndReportedPatch(t *testing.T) {
	h := startHub(t)
	c, r := h.twinClient(t, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	id := mustPatch(t, c, `{"fw":"1.2","net":{"rssi":-60}}`)
	got := receive(t, r.reported, "reported completion")
	_, reported := h.hubTwin(t)
	if got.id != id || got.code != CodeOK || reported["fw"] != "1.2" || float64(got.version) != reported["$version"] {
		t.Fatalf("completion %+v; the hub's reported section %v", got, reported)
	}
	get := mustGetTwin(t, c)
	twin := receive(t, r.twins, "twin")
	if twin.id != get || twin.code != CodeOK {
		t.Fatalf("twin %+v", twin)
	}
	if _, rep := twinSections(t, []byte(twin.twin)); rep["net"].(map[string]any)["rssi"] != float64(-60) {
		t.Fatalf("twin %s", twin.twin)
	}
}

// The desired section reaches the application once after connecting, then each patch of the control API with
// its version.
func TestHubDesiredPatchesReachTheHandler(t *testing.T) {
	h := startHub(t)
	h.updateDesired(t, `{"rate":1}`)
	c, r := h.twinClient(t, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	if props := expectDesiredValue(t, r, 0, 2); props["rate"] != float64(1) {
		t.Fatalf("desired section after connecting %v", props)
	}
	v := h.updateDesired(t, `{"rate":5}`)
	if props := expectDesiredValue(t, r, 2, v); props["rate"] != float64(5) {
		t.Fatalf("desired patch %v", props)
	}
}

// Desired changes made while the device is offline reach the application once after it is back, the latest
// version winning; none is delivered twice, none lost.
func TestHubDesiredChangesWhileDisconnectedArriveOnceAfterReconnect(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		// offline: the changes are certainly made while the device is off, so one update must bring both
		offline bool
		// outage takes the device off the hub (or starts doing so) and returns once it is
		outage func(t *testing.T, h hubDevice, r *twinRecorder)
	}{
		{"hub-down", Options{}, true, func(t *testing.T, h hubDevice, r *twinRecorder) {
			h.fault(t, hubsim.FaultHubDown, 2*time.Second)
			r.expectRetrying(t)
		}},
		{"kill-tcp", Options{}, false, func(t *testing.T, h hubDevice, _ *twinRecorder) {
			h.fault(t, hubsim.FaultKillTCP, 0) // the device may be back before the changes: patches then
		}},
		// A 3 s token renewed 2 s before expiry: the changes land around renewals.
		{"token renewal", Options{SASLifetime: 3 * time.Second, SASRenewMargin: 2 * time.Second,
			shortTokensForTests: true}, false, func(t *testing.T, _ hubDevice, r *twinRecorder) {
			if s := r.expectRetrying(t); s.reason != ReasonExpiredSASToken {
				t.Fatalf("status %v/%v, want a renewal", s.status, s.reason)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHub(t)
			c, r := h.twinClient(t, tc.opts)
			if err := connect(t, c); err != nil {
				t.Fatal(err)
			}
			r.expectStates(t, connected)
			last := expectDesiredValue(t, r, 0, 1)["$version"]
			for round := range 2 {
				tc.outage(t, h, r)
				h.updateDesired(t, fmt.Sprintf(`{"n":%d,"round%d":true}`, 10*round, round))
				v := h.updateDesired(t, fmt.Sprintf(`{"n":%d}`, 10*round+1))
				after := int64(last.(float64))
				if tc.offline {
					after = v - 1 // the first update after the outage is the latest
				}
				props := expectDesiredValue(t, r, after, v)
				if props["n"] != float64(10*round+1) {
					t.Fatalf("round %d: the latest desired update %v", round, props)
				}
				last = props["$version"]
			}
			// The next update is the next event: nothing older came twice in between.
			v := h.updateDesired(t, `{"n":99}`)
			if got := receive(t, r.desired, "desired update"); got.version != v {
				t.Fatalf("desired update %+v, want version %d", got, v)
			}
		})
	}
}

// Reported patches made during an outage go out after it, in order, each with one completion.
func TestHubReportedPatchesDuringAnOutageArriveInOrder(t *testing.T) {
	h := startHub(t)
	c, r := h.twinClient(t, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	h.fault(t, hubsim.FaultHubDown, 2*time.Second)
	r.expectRetrying(t)
	ids := make([]uint64, 5)
	for i := range ids {
		ids[i] = mustPatch(t, c, fmt.Sprintf(`{"seq":%d,"p%d":true}`, i, i))
	}
	var version int64
	for i, id := range ids {
		got := receive(t, r.reported, "reported completion")
		if got.id != id || got.code != CodeOK || got.version <= version {
			t.Fatalf("patch %d: %+v after version %d", i, got, version)
		}
		version = got.version
	}
	_, reported := h.hubTwin(t)
	if reported["seq"] != float64(4) || reported["p0"] != true || reported["$version"] != float64(version) {
		t.Fatalf("the hub's reported section %v, the last completion's version %d", reported, version)
	}
	expectNone(t, r.reported, "reported completion")
}

// Requests in flight when the link is cut end in one result each: answered on the cut link, or sent again.
func TestHubRequestsInFlightAtLinkLossEndOnce(t *testing.T) {
	h := startHub(t)
	c, r := h.twinClient(t, Options{})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	gets, patches := map[uint64]bool{}, map[uint64]bool{}
	for i := range 3 {
		gets[mustGetTwin(t, c)] = true
		patches[mustPatch(t, c, fmt.Sprintf(`{"cut":%d}`, i))] = true
	}
	h.fault(t, hubsim.FaultKillTCP, 0)
	for range 3 {
		if got := receive(t, r.twins, "twin"); !gets[got.id] || got.code != CodeOK {
			t.Fatalf("twin %+v", got)
		} else {
			delete(gets, got.id)
		}
		if got := receive(t, r.reported, "reported completion"); !patches[got.id] || got.code != CodeOK {
			t.Fatalf("patch %+v", got)
		} else {
			delete(patches, got.id)
		}
	}
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError}, connected)
	last := mustGetTwin(t, c) // the next result is this one's: none came twice
	if got := receive(t, r.twins, "twin"); got.id != last {
		t.Fatalf("twin %+v, want %d", got, last)
	}
	expectNone(t, r.reported, "reported completion")
}

// Durable reported patches survive a client's close and go out from the next client on the same directory.
func TestHubDurableReportedPatchesSurviveARestart(t *testing.T) {
	h := startHub(t)
	dir := t.TempDir()
	c, r := h.twinClient(t, Options{QueueDir: dir})
	mustPatch(t, c, `{"boot":1}`)
	sendIDs(t, c, "between")
	mustPatch(t, c, `{"boot":2}`)
	closeAndWait(c)
	for range 2 {
		if got := receive(t, r.reported, "reported completion"); got.code != CodeClosed {
			t.Fatalf("a patch at Close: %+v", got)
		}
	}
	c2, r2 := h.twinClient(t, Options{QueueDir: dir})
	if n := c2.Recovered(); n != 3 {
		t.Fatalf("recovered %d, want 3", n)
	}
	if err := connect(t, c2); err != nil {
		t.Fatal(err)
	}
	first, second := receive(t, r2.reported, "reported completion"), receive(t, r2.reported, "reported completion")
	if first.id != 1 || second.id != 3 || first.code != CodeOK || second.code != CodeOK ||
		second.version <= first.version {
		t.Fatalf("recovered patches ended %+v, %+v", first, second)
	}
	if comp := r2.expectCompletions(t, 1)[0]; comp.id != 2 || comp.result != SendDelivered {
		t.Fatalf("recovered message %+v", comp)
	}
	if _, reported := h.hubTwin(t); reported["boot"] != float64(2) {
		t.Fatalf("the hub's reported section %v", reported)
	}
	closeAndWait(c2)
	if recs := storedMIDs(t, dir); len(recs) != 0 {
		t.Fatalf("%d records left on disk", len(recs))
	}
}

// methodClient is a client of the identity whose OnMethod hands each call to calls.
func (h hubDevice) methodClient(t *testing.T, answer func(c *Client, call methodCall)) (*Client, *recorder,
	chan methodCall) {
	t.Helper()
	c, r := h.client(t, h.cs, Options{})
	calls := make(chan methodCall, 100)
	hs := r.handlers()
	hs.OnMethod = func(rid, name string, payload []byte) {
		call := methodCall{rid, name, string(payload)}
		if answer != nil {
			answer(c, call)
		}
		calls <- call
	}
	c.SetHandlers(hs)
	return c, r, calls
}

// invoke calls a method through the hub and returns where its result comes.
func (h hubDevice) invoke(name, payload string) <-chan hubsim.MethodResult {
	result := make(chan hubsim.MethodResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		res, err := h.hub.InvokeMethod(ctx, h.id, name, []byte(payload))
		if err != nil {
			res = hubsim.MethodResult{Status: -1, Payload: []byte(err.Error())}
		}
		result <- res
	}()
	return result
}

func expectMethodResult(t *testing.T, result <-chan hubsim.MethodResult, status int, payload string) {
	t.Helper()
	if res := receive(t, result, "method result"); res.Status != status || string(res.Payload) != payload {
		t.Fatalf("the caller got %d %s, want %d %s", res.Status, res.Payload, status, payload)
	}
}

// A method call is answered with the application's status and payload, also when it arrives while an earlier
// one is being handled, and after a reconnect.
func TestHubMethodCalls(t *testing.T) {
	h := startHub(t)
	c, r, calls := h.methodClient(t, func(c *Client, call methodCall) {
		if call.name != "slow" {
			if err := c.RespondMethod(call.rid, 200, []byte(`{"echo":`+call.payload+`}`)); err != nil {
				t.Errorf("respond to %s: %v", call.name, err)
			}
		}
	})
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
	r.expectStates(t, connected)
	slowResult := h.invoke("slow", `{"s":1}`)
	slow := receive(t, calls, "method call")
	if slow.name != "slow" || slow.payload != `{"s":1}` {
		t.Fatalf("call %+v", slow)
	}
	quickResult := h.invoke("quick", `2`)
	receive(t, calls, "method call")
	expectMethodResult(t, quickResult, 200, `{"echo":2}`)
	if err := c.RespondMethod(slow.rid, 504, []byte(`{"took":"long"}`)); err != nil {
		t.Fatal(err)
	}
	expectMethodResult(t, slowResult, 504, `{"took":"long"}`)

	h.fault(t, hubsim.FaultKillTCP, 0)
	r.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError}, connected)
	after := h.invoke("after", `"reconnect"`)
	receive(t, calls, "method call")
	expectMethodResult(t, after, 200, `{"echo":"reconnect"}`)
}
