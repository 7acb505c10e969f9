package provisioning_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotconn/iotconn/core/provisioning"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/hubsim"
	"github.com/iotconn/iotconn/hubsim/hubsimtest"
)

// These tests register against hubsim's DPS on 127.0.0.1, in process.

func newClient(t *testing.T, env *hubsimtest.Env, cfg provisioning.Config) *provisioning.Client {
	t.Helper()
	cfg.Host, cfg.IDScope, cfg.TLS = env.DPS.MQTTAddr(), env.DPS.IDScope(), env.TLS(t)
	c, err := provisioning.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// An individual enrollment's key and a group member's derived key both register; the assignment names a linked hub,
// where the device now exists with the key the client will sign with; DPS counted one registration each.
func TestRegisterSymmetricKeys(t *testing.T) {
	env := hubsimtest.Start(t, 2, nil)
	ind := env.Enroll(t, hubsim.Enrollment{RegistrationID: "dev-7"})
	grp := env.Enroll(t, hubsim.Enrollment{GroupID: "fleet"})
	for _, tc := range []struct {
		name string
		cfg  provisioning.Config
	}{
		{"individual", provisioning.Config{RegistrationID: "dev-7", SymmetricKey: ind.PrimaryKey}},
		{"group", provisioning.Config{RegistrationID: "member-1", GroupKey: grp.PrimaryKey,
			Payload: []byte(`{"model":"x"}`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, env, tc.cfg)
			res, err := c.RegisterOnce(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != "assigned" || res.DeviceID != tc.cfg.RegistrationID {
				t.Fatalf("result %+v", res)
			}
			hub := hubOf(t, env, res.AssignedHub)
			dev, err := hub.Device(res.DeviceID)
			if err != nil {
				t.Fatal(err)
			}
			if dev.PrimaryKey != c.DeviceKey() {
				t.Fatalf("the hub's device key %q is not the client's %q", dev.PrimaryKey, c.DeviceKey())
			}
			if reg, _ := env.DPS.Registration(tc.cfg.RegistrationID); reg.Count != 1 {
				t.Fatalf("DPS counted %d registrations, want 1", reg.Count)
			}
		})
	}
}

func hubOf(t *testing.T, env *hubsimtest.Env, name string) *hubsim.Hub {
	t.Helper()
	for _, h := range env.Hubs {
		if h.HostName() == name {
			return h
		}
	}
	t.Fatalf("assigned hub %q is none of the linked hubs", name)
	return nil
}

// X.509: a self-signed certificate in an individual enrollment, and a CA-signed one in a group; the registration
// id is the certificate's CN and no token is sent.
func TestRegisterX509(t *testing.T) {
	env := hubsimtest.Start(t, 1, nil)
	dir := t.TempDir()
	solo, soloCert, soloKey := hubsimtest.Mint(t, dir, "solo", hubsim.CertOptions{CommonName: "x-solo"})
	ca, _, _ := hubsimtest.Mint(t, dir, "root", hubsim.CertOptions{CommonName: "fleet root", CA: true})
	_, memberCert, memberKey := hubsimtest.Mint(t, dir, "member", hubsim.CertOptions{CommonName: "x-member", Issuer: &ca})
	env.Enroll(t, hubsim.Enrollment{RegistrationID: "x-solo", Attestation: hubsim.AttestationX509,
		X509: &hubsim.X509Attestation{Thumbprints: []string{solo.Thumbprint}}})
	env.Enroll(t, hubsim.Enrollment{GroupID: "x-fleet", Attestation: hubsim.AttestationX509,
		X509: &hubsim.X509Attestation{CACertificate: ca.CertPEM}})
	for regID, files := range map[string][2]string{"x-solo": {soloCert, soloKey}, "x-member": {memberCert, memberKey}} {
		c := newClient(t, env, provisioning.Config{RegistrationID: regID, CertFile: files[0], KeyFile: files[1]})
		res, err := c.RegisterOnce(ctxT(t))
		if err != nil {
			t.Fatalf("%s: %v", regID, err)
		}
		if res.DeviceID != regID || res.AssignedHub != env.Hubs[0].HostName() {
			t.Fatalf("%s: %+v", regID, res)
		}
	}
}

// DPS's answers map to typed errors: 401 (wrong key, no enrollment) is final for the registration, a 429 and a
// 5xx are transient and carry the retry-after; Register retries those and is assigned once the fault ends.
func TestRegisterErrors(t *testing.T) {
	env := hubsimtest.Start(t, 1, nil)
	e := env.Enroll(t, hubsim.Enrollment{RegistrationID: "dev-1"})
	other := env.Enroll(t, hubsim.Enrollment{RegistrationID: "other"})

	var pe *provisioning.Error
	_, err := newClient(t, env, provisioning.Config{RegistrationID: "dev-1", SymmetricKey: other.PrimaryKey}).
		RegisterOnce(ctxT(t))
	if !errors.As(err, &pe) || pe.Status != 401 || pe.Transient() || pe.Kind() != transport.KindAuth {
		t.Fatalf("wrong key: %v", err)
	}
	_, err = newClient(t, env, provisioning.Config{RegistrationID: "nobody", SymmetricKey: other.PrimaryKey}).
		RegisterOnce(ctxT(t))
	if !errors.As(err, &pe) || pe.Status != 401 || pe.Transient() {
		t.Fatalf("no enrollment: %v", err)
	}

	c := newClient(t, env, provisioning.Config{RegistrationID: "dev-1", SymmetricKey: e.PrimaryKey})
	for _, f := range []struct {
		fault  hubsim.DPSFault
		status int
		kind   transport.Kind
	}{
		{hubsim.DPSFault{Kind: hubsim.DPSFaultThrottle, Count: 1, RetryAfter: 2 * time.Second}, 429,
			transport.KindThrottled},
		{hubsim.DPSFault{Kind: hubsim.DPSFaultError, Count: 1, Status: 503, RetryAfter: time.Second}, 503,
			transport.KindServerBusy},
	} {
		if err := env.DPS.Fault(f.fault); err != nil {
			t.Fatal(err)
		}
		_, err := c.RegisterOnce(ctxT(t))
		if !errors.As(err, &pe) || pe.Status != f.status || !pe.Transient() || pe.Kind() != f.kind ||
			pe.RetryAfter != f.fault.RetryAfter {
			t.Fatalf("%s: %v (%+v)", f.fault.Kind, err, pe)
		}
	}
	if n := env.DPS.Registrations(); n != 0 {
		t.Fatalf("%d registrations after refusals only", n)
	}

	// Two throttled answers, then assigned: Register waits DPS's retry-after (1 s) each time.
	throttle := hubsim.DPSFault{Kind: hubsim.DPSFaultThrottle, Count: 2, RetryAfter: time.Second}
	if err := env.DPS.Fault(throttle); err != nil {
		t.Fatal(err)
	}
	res, err := c.Register(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.AssignedHub != env.Hubs[0].HostName() || env.DPS.Registrations() != 1 {
		t.Fatalf("%+v after %d registrations", res, env.DPS.Registrations())
	}

	// A final error is not retried, and a policy that gives up ends Register too.
	_, err = newClient(t, env, provisioning.Config{RegistrationID: "nobody", SymmetricKey: e.PrimaryKey}).
		Register(ctxT(t))
	if !errors.As(err, &pe) || pe.Status != 401 {
		t.Fatalf("Register of no enrollment: %v", err)
	}
	if err := env.DPS.Fault(hubsim.DPSFault{Kind: hubsim.DPSFaultError, Count: 1}); err != nil {
		t.Fatal(err)
	}
	nc := newClient(t, env, provisioning.Config{RegistrationID: "dev-1", SymmetricKey: e.PrimaryKey,
		Policy: retry.NoRetry{}})
	if _, err := nc.Register(ctxT(t)); !errors.As(err, &pe) || pe.Status != 500 {
		t.Fatalf("NoRetry on a 500: %v", err)
	}
}

// DPS keeps an operation "assigning" for a few polls: the client polls with its retry-after until assigned. A DPS
// that is down is a transient network failure.
func TestRegisterPollsAndDown(t *testing.T) {
	env := hubsimtest.Start(t, 1, func(c *hubsim.DPSConfig) { c.AssigningPolls = 2 })
	e := env.Enroll(t, hubsim.Enrollment{RegistrationID: "dev-1"})
	c := newClient(t, env, provisioning.Config{RegistrationID: "dev-1", SymmetricKey: e.PrimaryKey})
	if _, err := c.RegisterOnce(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := env.DPS.Fault(hubsim.DPSFault{Kind: hubsim.DPSFaultDown, Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	_, err := c.RegisterOnce(ctxT(t))
	var pe *provisioning.Error
	if !errors.As(err, &pe) || !pe.Transient() || pe.Kind() != transport.KindNetwork {
		t.Fatalf("DPS down: %v", err)
	}
}

// Bad configurations are refused with a reason, never a panic.
func TestNewRefusesBadConfig(t *testing.T) {
	base := provisioning.Config{Host: "dps.example", IDScope: "0ne1", RegistrationID: "d", SymmetricKey: "a2V5"}
	for name, tc := range map[string]struct {
		mod  func(*provisioning.Config)
		want string
	}{
		"no host":     {func(c *provisioning.Config) { c.Host = "" }, "host"},
		"no scope":    {func(c *provisioning.Config) { c.IDScope = "" }, "scope"},
		"no id":       {func(c *provisioning.Config) { c.RegistrationID = "" }, "registration id"},
		"bad id":      {func(c *provisioning.Config) { c.RegistrationID = "a/b" }, "allowed"},
		"long id":     {func(c *provisioning.Config) { c.RegistrationID = strings.Repeat("a", 129) }, "128"},
		"two keys":    {func(c *provisioning.Config) { c.GroupKey = "a2V5" }, "exactly one"},
		"no key":      {func(c *provisioning.Config) { c.SymmetricKey = "" }, "exactly one"},
		"bad key":     {func(c *provisioning.Config) { c.SymmetricKey = "!!" }, "base64"},
		"bad group":   {func(c *provisioning.Config) { c.SymmetricKey, c.GroupKey = "", "!!" }, "base64"},
		"bad payload": {func(c *provisioning.Config) { c.Payload = []byte("{") }, "JSON"},
		"missing cert": {func(c *provisioning.Config) {
			c.SymmetricKey, c.CertFile, c.KeyFile = "", "/nonexistent", "/x"
		}, "certificate"},
	} {
		cfg := base
		tc.mod(&cfg)
		if _, err := provisioning.New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, tc.want)
		}
	}
}

// The cache round-trips, is replaced atomically (no temporary file left), belongs to one registration only, and a
// torn or foreign file is an error, not an assignment.
func TestAssignmentCache(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, provisioning.CacheFile)
	if a, err := provisioning.LoadCache(path); a != nil || err != nil {
		t.Fatalf("no file: %v %v", a, err)
	}
	cfg := provisioning.Config{Host: "dps", IDScope: "0ne1", RegistrationID: "Dev-1"}
	a := provisioning.Assignment{Host: "dps", IDScope: "0ne1", RegistrationID: "dev-1", AssignedHub: "hub1",
		DeviceID: "dev-1", At: time.Unix(1700000000, 0).UTC()}
	for _, hub := range []string{"hub1", "hub2"} {
		a.AssignedHub = hub
		if err := provisioning.SaveCache(path, a); err != nil {
			t.Fatal(err)
		}
	}
	got, err := provisioning.LoadCache(path)
	if err != nil || *got != a || !got.Matches(cfg) {
		t.Fatalf("loaded %+v, %v", got, err)
	}
	other := cfg
	other.IDScope = "0ne2"
	if got.Matches(other) {
		t.Fatal("an assignment of another id scope matched")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("%d files in the directory, want the cache only", len(entries))
	}
	if err := os.WriteFile(path, []byte(`{"assignedHub":`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := provisioning.LoadCache(path); err == nil {
		t.Fatal("a torn cache loaded")
	}
}
