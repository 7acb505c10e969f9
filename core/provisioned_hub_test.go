package core

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/hubsim"
	"github.com/iotconn/iotconn/hubsim/hubsimtest"
)

// These tests run provisioned clients with the real MQTT transport against hubsim's hubs and DPS, in process.

func provisionedClient(t *testing.T, env *hubsimtest.Env, p Provisioning, opts Options) (*Client, *recorder) {
	t.Helper()
	p.Host, p.IDScope = env.DPS.MQTTAddr(), env.DPS.IDScope()
	opts.CAFile = env.DPS.CAFile()
	c, err := NewProvisionedClient(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	c.SetHandlers(r.handlers())
	t.Cleanup(func() { closeAndCheck(t, c) })
	return c, r
}

func mustConnect(t *testing.T, c *Client) {
	t.Helper()
	if err := connect(t, c); err != nil {
		t.Fatal(err)
	}
}

// expectConnected skips status events until Connected.
func (r *recorder) expectConnected(t *testing.T) {
	t.Helper()
	for receive(t, r.states, "Connected").status != StatusConnected {
	}
}

// waitHubMessages waits until hub recorded n messages of dev and returns them.
func waitHubMessages(t *testing.T, hub *hubsim.Hub, dev string, n int) []hubsim.D2CMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	msgs, err := hub.WaitMessages(ctx, dev, n)
	if err != nil {
		t.Fatalf("%s on %s: %v", dev, hub.HostName(), err)
	}
	return msgs
}

// The flow: a device provisions and sends; a hub outage is ridden out on the same hub without calling
// DPS; moved to another hub (the old one deletes it and answers CONNACK 2), it registers exactly once more and
// what it queued meanwhile reaches the new hub: every message delivered once, none lost. Restarted on the same
// queue directory, it connects to the cached hub without registering.
func TestProvisionedClientRidesOutHubDownAndFollowsAMove(t *testing.T) {
	env := hubsimtest.Start(t, 2, nil)
	hub0, hub1 := env.Hubs[0], env.Hubs[1]
	e := env.Enroll(t, hubsim.Enrollment{RegistrationID: "dev-p", IoTHubs: []string{hub0.HostName()}})
	dir := t.TempDir()
	p := Provisioning{RegistrationID: "dev-p", SymmetricKey: e.PrimaryKey}
	c, r := provisionedClient(t, env, p, Options{QueueDir: dir})
	if hub, _ := c.Assignment(); hub != "" || c.Registrations() != 0 {
		t.Fatalf("assigned %q after %d registrations before connecting", hub, c.Registrations())
	}
	mustConnect(t, c)
	if hub, dev := c.Assignment(); hub != hub0.HostName() || dev != "dev-p" || c.Registrations() != 1 {
		t.Fatalf("assigned %s as %s after %d registrations", hub, dev, c.Registrations())
	}
	// Each fault waits for the acknowledgements of what came before it: a message the hub recorded but whose
	// acknowledgement the fault cut is sent again, and would reach the hubs twice (at least once, as documented).
	sendAll(t, c, 5, "first")
	r.expectDelivered(t, 5, "dev-p")

	// Hub down: retried on the same hub, no registration.
	if err := hub0.Fault(hubsim.Fault{Kind: hubsim.FaultHubDown, Duration: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	r.expectRetrying(t)
	sendAll(t, c, 5, "outage")
	r.expectConnected(t)
	r.expectDelivered(t, 5, "dev-p")
	if c.Registrations() != 1 || env.DPS.Registrations() != 1 {
		t.Fatalf("%d registrations (DPS counted %d) across a hub outage, want 1", c.Registrations(),
			env.DPS.Registrations())
	}

	// Moved: the old hub deletes the device; the client registers once and sends to the new hub.
	if err := env.DPS.MoveEnrollment("dev-p", hub1.HostName()); err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, 5, "moving")
	r.expectConnected(t)
	sendAll(t, c, 5, "moved")
	waitHubMessages(t, hub1, "dev-p", 5)
	r.expectDelivered(t, 10, "dev-p")
	r.expectNoMoreCompletions(t)
	reg, _ := env.DPS.Registration("dev-p")
	if hub, _ := c.Assignment(); hub != hub1.HostName() || c.Registrations() != 2 || reg.Count != 2 {
		t.Fatalf("on %s after %d registrations (DPS counted %d), want %s after 2", hub, c.Registrations(),
			reg.Count, hub1.HostName())
	}
	// Each message reached one of the hubs: those the old hub acknowledged before its delete took the link there,
	// the rest the new one.
	got := map[string]int{}
	for _, h := range env.Hubs {
		for _, m := range h.Messages("dev-p") {
			got[string(m.Payload)]++
		}
	}
	for _, tag := range []string{"first", "outage", "moving", "moved"} {
		for i := 0; i < 5; i++ {
			if n := got[fmt.Sprintf("%s-%d", tag, i)]; n != 1 {
				t.Errorf("%s-%d reached the hubs %d times", tag, i, n)
			}
		}
	}
	closeAndWait(c)

	// Restarted: the cached assignment, no registration.
	c2, _ := provisionedClient(t, env, p, Options{QueueDir: dir})
	mustConnect(t, c2)
	if hub, _ := c2.Assignment(); hub != hub1.HostName() || c2.Registrations() != 0 || env.DPS.Registrations() != 2 {
		t.Fatalf("restarted on %s after %d registrations (DPS counted %d)", hub, c2.Registrations(),
			env.DPS.Registrations())
	}
}

// After ReprovisionAfterFailures reconnects failed in a row the client registers again, and DPS's new answer (the
// enrollment now allocates another hub) takes it there.
func TestProvisionedClientReprovisionsAfterFailedReconnects(t *testing.T) {
	env := hubsimtest.Start(t, 2, nil)
	hub0, hub1 := env.Hubs[0], env.Hubs[1]
	e := env.Enroll(t, hubsim.Enrollment{GroupID: "fleet", IoTHubs: []string{hub0.HostName()}})
	c, r := provisionedClient(t, env, Provisioning{RegistrationID: "member-1", GroupKey: e.PrimaryKey,
		ReprovisionAfterFailures: 3}, Options{})
	mustConnect(t, c)
	e.IoTHubs = []string{hub1.HostName()} // reconfigured, the device not deleted: only DPS knows
	env.Enroll(t, e)
	if err := hub0.Fault(hubsim.Fault{Kind: hubsim.FaultHubDown, Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	r.expectRetrying(t)
	r.expectConnected(t)
	if hub, _ := c.Assignment(); hub != hub1.HostName() || c.Registrations() != 2 {
		t.Fatalf("on %s after %d registrations", hub, c.Registrations())
	}
	sendAll(t, c, 1, "after")
	waitHubMessages(t, hub1, "member-1", 1)
}

// DPS refusing the registration (a wrong key: 401) is fatal, as a hub's refusal: Bad_Credential, no retry.
func TestProvisionedClientRefusedByDPS(t *testing.T) {
	env := hubsimtest.Start(t, 1, nil)
	env.Enroll(t, hubsim.Enrollment{RegistrationID: "dev-1"})
	c, r := provisionedClient(t, env, Provisioning{RegistrationID: "dev-1", SymmetricKey: testKey}, Options{})
	err := c.Connect(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeAuth {
		t.Fatalf("connect: %v", err)
	}
	r.expectStates(t, state{StatusDisconnected, ReasonBadCredential})
	if c.Registrations() != 0 || env.DPS.Registrations() != 0 {
		t.Fatalf("%d registrations", c.Registrations())
	}
}

// The reprovisioning rule alone: which hub failures make the next attempt register.
func TestReprovisionRule(t *testing.T) {
	now := time.Unix(1000, 0)
	fresh := func() *provisioner {
		return &provisioner{cfg: Provisioning{ReprovisionAfterFailures: 3, ReprovisionAfter: time.Minute}, since: now}
	}
	for _, k := range []transport.Kind{transport.KindAuth, transport.KindDeviceDisabled, transport.KindDeviceNotFound} {
		p := fresh()
		if p.hubFailed(k, true, now) == "" || !p.pending {
			t.Errorf("%v on a hub that took the device before: no reprovision", k)
		}
		p = fresh()
		p.fresh = true
		if p.hubFailed(k, true, now) != "" {
			t.Errorf("%v on a hub DPS just assigned: reprovisioned (it would loop, billed)", k)
		}
	}
	for _, k := range []transport.Kind{transport.KindThrottled, transport.KindQuota, transport.KindServerBusy} {
		p := fresh()
		for i := 0; i < 10; i++ {
			if why := p.hubFailed(k, true, now.Add(time.Hour)); why != "" {
				t.Fatalf("%v: reprovisioned (%s)", k, why)
			}
		}
	}
	if p := fresh(); p.hubFailed(transport.KindHubNotFound, true, now) == "" || !p.pending {
		t.Error("a hub gone past its failover window: no reprovision")
	}
	p := fresh()
	for i := 1; i <= 3; i++ {
		why := p.hubFailed(transport.KindNetwork, true, now)
		if (why != "") != (i == 3) {
			t.Fatalf("failure %d of 3: %q", i, why)
		}
	}
	p = fresh()
	if p.hubFailed(transport.KindProtocol, false, now.Add(time.Hour)) != "" {
		t.Fatal("a lost link counted as a failed reconnect")
	}
	if why := p.hubFailed(transport.KindNetwork, true, now.Add(time.Minute)); why == "" {
		t.Fatal("no reprovision after ReprovisionAfter without a connection")
	}
}

// Bad provisioning parameters are refused at create with a reason.
func TestNewProvisionedClientRefusesBadInput(t *testing.T) {
	ok := Provisioning{Host: "dps.example", IDScope: "0ne1", RegistrationID: "d", SymmetricKey: testKey}
	for name, tc := range map[string]struct {
		p    func(*Provisioning)
		opts Options
	}{
		"no scope":          {func(p *Provisioning) { p.IDScope = "" }, Options{}},
		"no registration":   {func(p *Provisioning) { p.RegistrationID = "" }, Options{}},
		"two attestations":  {func(p *Provisioning) { p.GroupKey = testKey }, Options{}},
		"bad host":          {func(p *Provisioning) { p.Host = "a;b" }, Options{}},
		"negative failures": {func(p *Provisioning) { p.ReprovisionAfterFailures = -1 }, Options{}},
		"cert without key":  {func(p *Provisioning) { p.SymmetricKey = "" }, Options{CertFile: "c.pem"}},
		"bad payload":       {func(p *Provisioning) { p.Payload = []byte("{") }, Options{}},
	} {
		p := ok
		tc.p(&p)
		_, err := NewProvisionedClient(p, tc.opts)
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeInvalidArgument {
			t.Errorf("%s: %v", name, err)
		}
	}
}
