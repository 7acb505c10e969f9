package core

import (
	"strings"
	"testing"

	"github.com/iotconn/iotconn/hubsim"
)

// A module (ModuleId in the connection string) is an identity of its own: it sends, gets and patches its own
// twin, takes its desired patches and answers its method calls, while its device is connected beside it.
func TestHubModuleIsAnIdentityOfItsOwn(t *testing.T) {
	h := startHub(t)
	mod := h.module(t, "m1")
	dc, dr := h.client(t, h.cs, Options{})
	if err := connect(t, dc); err != nil {
		t.Fatal(err)
	}
	dr.expectStates(t, connected)
	mc, mr := mod.twinClient(t, Options{})
	hs := mr.handlers()
	hs.OnMethod = func(rid, name string, payload []byte) {
		if err := mc.RespondMethod(rid, 200, []byte(`{"from":"m1","echo":`+string(payload)+`}`)); err != nil {
			t.Errorf("respond to %s: %v", name, err)
		}
	}
	mc.SetHandlers(hs)
	if err := connect(t, mc); err != nil {
		t.Fatal(err)
	}
	mr.expectStates(t, connected)

	sendAll(t, mc, 2, "module")
	mod.expectAllDelivered(t, mr.recorder, 2)
	sendAll(t, dc, 1, "device")
	h.expectAllDelivered(t, dr, 1)
	if got := string(h.hub.Messages(mod.id)[0].Payload); got != "module-0" {
		t.Fatalf("the module's first message %q", got)
	}

	id := mustPatch(t, mc, `{"role":"module"}`)
	if got := receive(t, mr.reported, "reported completion"); got.id != id || got.code != CodeOK {
		t.Fatalf("reported patch %+v", got)
	}
	if _, reported := mod.hubTwin(t); reported["role"] != "module" {
		t.Fatalf("the module's reported section %v", reported)
	}
	if _, reported := h.hubTwin(t); reported["role"] != nil {
		t.Fatalf("the device's reported section %v", reported)
	}
	get := mustGetTwin(t, mc)
	if got := receive(t, mr.twins, "twin"); got.id != get || !strings.Contains(got.twin, `"role":"module"`) {
		t.Fatalf("the module's twin %+v", got)
	}

	expectDesiredValue(t, mr, 0, 1)
	h.updateDesired(t, `{"rate":9}`) // the device's: never the module's
	v := mod.updateDesired(t, `{"rate":3}`)
	if props := expectDesiredValue(t, mr, 1, v); props["rate"] != float64(3) {
		t.Fatalf("the module's desired patch %v", props)
	}

	expectMethodResult(t, mod.invoke("who", `1`), 200, `{"from":"m1","echo":1}`)
	if res := receive(t, h.invoke("who", `1`), "method result"); res.Status != -1 {
		t.Fatalf("the device, which has no method handler, answered %d %s", res.Status, res.Payload)
	}

	// Cutting the module's link leaves the device's alone; the module comes back and answers again.
	mod.fault(t, hubsim.FaultKillTCP, 0)
	mr.expectStates(t, state{StatusDisconnectedRetrying, ReasonCommunicationError}, connected)
	expectMethodResult(t, mod.invoke("who", `2`), 200, `{"from":"m1","echo":2}`)
	expectNone(t, dr.states, "device status")
	if d, err := h.hub.Device("dev1"); err != nil || !d.Connected || d.Connections != 1 {
		t.Fatalf("the device after its module's cut: %+v, %v", d, err)
	}
}

// Bad module ids are refused at create with a code, before anything connects.
func TestModuleIDsAreChecked(t *testing.T) {
	base := "HostName=localhost;DeviceId=dev1;SharedAccessKey=" + testKey + ";ModuleId="
	for _, tc := range []struct {
		module string
		code   Code
	}{
		{"", CodeInvalidArgument},
		{"a/b", CodeInvalidArgument},
		{"a+b", CodeInvalidArgument}, // allowed by IoT Hub, but an MQTT topic cannot carry it
		{"m 1", CodeInvalidArgument},
		{strings.Repeat("m", 129), CodeTooLarge},
	} {
		if _, err := NewClient(base+tc.module, Options{}); codeOf(err) != tc.code {
			t.Errorf("ModuleId %.20q: %v, want code %v", tc.module, err, tc.code)
		}
	}
	c, err := NewClient(base+strings.Repeat("m", 128), Options{})
	if err != nil {
		t.Fatalf("a 128-character module id: %v", err)
	}
	closeAndCheck(t, c)
}
