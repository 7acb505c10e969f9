package core

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotconn/iotconn/core/auth"
	"github.com/iotconn/iotconn/core/provisioning"
	"github.com/iotconn/iotconn/core/transport"
)

// A provisioned client finds its hub through the Device Provisioning Service and follows Microsoft's guidance
// for when to go back to it (DESIGN.md rule 7; reference section C5), as a policy of the supervisor:
//
//   - connect to the cached hub: the assignment is kept in a file (Provisioning.CacheFile, or QueueDir) and reused
//     after a restart without calling DPS; register only when there is none;
//   - on transient failures (network, throttling, 5xx) keep retrying that hub with the retry policy and the fleet
//     rules, as any client;
//   - reprovision (one registration, then connect to the hub it names) when the hub refuses the device (wrong
//     credential, disabled, unknown: 401/403/404) on an assignment a link came up on before, or after
//     ReprovisionAfterFailures reconnects failed in a row, or ReprovisionAfter without a connection; never for
//     throttling or a busy hub;
//   - a registration is an attempt like a dial: it takes the policy's back-off, and DPS's retry-after with a
//     random part added (a fleet DPS throttled together must not come back in the same second); 401/403/404 from
//     DPS itself are fatal (Bad_Credential, Device_Disabled).
//
// The outbound queue stays through a reprovision, so what was queued goes to the new hub. The application sees a
// reprovision as a Disconnected_Retrying status (the failure's reason; Communication_Error for the hub's refusal,
// which is otherwise fatal), a log line that says why and where the device went, and Registrations().

// Provisioning says how a client registers with the Device Provisioning Service (NewProvisionedClient).
// Attestation: SymmetricKey, GroupKey, or X.509 with Options.CertFile and KeyFile (used with DPS and the hub).
type Provisioning struct {
	Host           string // global device endpoint host[:port], e.g. global.azure-devices-provisioning.net
	IDScope        string
	RegistrationID string
	SymmetricKey   string // an individual enrollment's key
	GroupKey       string // an enrollment group's key: the device key is derived from it
	Payload        []byte // optional JSON sent with every registration
	// CacheFile keeps the assignment across restarts; "" = QueueDir/dps-assignment.json, or no cache when QueueDir
	// is "" too (every start registers then).
	CacheFile string
	// ReprovisionAfterFailures: reconnects failed in a row (throttling and busy hubs aside) before registering
	// again; default 10.
	ReprovisionAfterFailures int
	// ReprovisionAfter: time without a connection before registering again; default 15 min.
	ReprovisionAfter time.Duration
}

// Defaults of Provisioning's zero values.
const (
	DefaultReprovisionAfterFailures = 10
	DefaultReprovisionAfter         = 15 * time.Minute
)

// provisionTimeout bounds one registration (connect, register, polls) inside an attempt.
const provisionTimeout = 2 * time.Minute

// provisioner is a provisioned client's DPS state. registrations and the assignment (under mu) are read by any
// goroutine; the rest belongs to the loop.
type provisioner struct {
	cfg           Provisioning
	dps           *provisioning.Client
	cache         string // "" = no cache
	registrations atomic.Int64

	mu             sync.Mutex
	hub, deviceID  string
	pendingLogLine string // what NewProvisionedClient has to say once the client can log

	pending  bool      // register before the next dial
	fresh    bool      // the assignment came from DPS and no link came up on it yet
	failures int       // reconnects failed in a row, throttling aside
	since    time.Time // the last good connection ended, or the assignment was taken
}

// NewProvisionedClient makes a client that finds its hub through DPS (see Provisioning). It registers at the first
// Connect unless the cache holds an assignment of this registration; it does not connect.
func NewProvisionedClient(p Provisioning, opts Options) (*Client, error) {
	return newProvisionedClient(p, opts, nil)
}

func newProvisionedClient(p Provisioning, opts Options, dialer transport.Dialer) (*Client, error) {
	if err := applyDefaults(&opts); err != nil {
		return nil, err
	}
	switch {
	case p.ReprovisionAfterFailures < 0 || p.ReprovisionAfter < 0:
		return nil, Errorf(CodeInvalidArgument, "ReprovisionAfterFailures and ReprovisionAfter must not be negative "+
			"(0 means the defaults, %d and %v)", DefaultReprovisionAfterFailures, DefaultReprovisionAfter)
	case strings.ContainsAny(p.Host, "; /\t"):
		return nil, Errorf(CodeInvalidArgument, "provisioning host %q: want host or host:port", p.Host)
	}
	if p.ReprovisionAfterFailures == 0 {
		p.ReprovisionAfterFailures = DefaultReprovisionAfterFailures
	}
	if p.ReprovisionAfter == 0 {
		p.ReprovisionAfter = DefaultReprovisionAfter
	}
	dps, placeholder, err := newDPSClientIdentity(p, &opts)
	if err != nil {
		return nil, err
	}
	pr := &provisioner{cfg: p, dps: dps, cache: p.CacheFile, pending: true}
	if pr.cache == "" && opts.QueueDir != "" {
		pr.cache = filepath.Join(opts.QueueDir, provisioning.CacheFile)
	}
	id := placeholder
	if cached, note := pr.loadCache(); cached != nil {
		if hubID, err := pr.hubIdentity(cached.AssignedHub, cached.DeviceID, &opts); err == nil {
			id, pr.pending, pr.since = hubID, false, opts.Clock.Now()
			pr.setAssignment(cached.AssignedHub, cached.DeviceID)
			pr.pendingLogLine = fmt.Sprintf("provisioning: connecting to the cached assignment, hub %s as device %s "+
				"(%s), without registering", cached.AssignedHub, cached.DeviceID, pr.cache)
		} else {
			pr.pendingLogLine = fmt.Sprintf("provisioning: the cached assignment in %s is unusable (%v); registering",
				pr.cache, err)
		}
	} else if note != "" {
		pr.pendingLogLine = note
	}
	c, err := startClient(id, opts, dialer, pr)
	if err != nil {
		return nil, err
	}
	if pr.pendingLogLine != "" {
		c.logf(LogInfo, "%s", pr.pendingLogLine)
	}
	return c, nil
}

// newDPSClientIdentity makes the registration client, and the identity a client has until it is assigned: the
// registration at the DPS host, never dialled as a hub, which checks the options (CA, certificate) and gives the
// TLS settings DPS is reached with.
func newDPSClientIdentity(p Provisioning, opts *Options) (*provisioning.Client, *identity, error) {
	if (opts.CertFile != "") != (opts.KeyFile != "") {
		return nil, nil, Errorf(CodeInvalidArgument, "X.509 needs both a certificate and a key file")
	}
	x509 := opts.CertFile != ""
	ph := &auth.ConnectionString{HostName: p.Host, DeviceID: p.RegistrationID, X509: x509}
	if !x509 {
		ph.SharedAccessKey = "AA=="
	}
	placeholder, err := identityFor(ph, opts)
	if err != nil {
		return nil, nil, err
	}
	dps, err := provisioning.New(provisioning.Config{
		Host: p.Host, IDScope: p.IDScope, RegistrationID: p.RegistrationID, SymmetricKey: p.SymmetricKey,
		GroupKey: p.GroupKey, CertFile: opts.CertFile, KeyFile: opts.KeyFile, Payload: p.Payload,
		TLS: placeholder.tls, WebSocket: protocols[opts.Transport].websocket, SASLifetime: opts.SASLifetime,
		Clock: opts.Clock, Policy: opts.RetryPolicy,
	})
	if err != nil {
		return nil, nil, &Error{Code: CodeInvalidArgument, Msg: "provisioning: " + err.Error(), Err: err}
	}
	return dps, placeholder, nil
}

// loadCache returns the cached assignment of this registration, if any, or a note on why a cache was not used.
func (p *provisioner) loadCache() (*provisioning.Assignment, string) {
	if p.cache == "" {
		return nil, ""
	}
	a, err := provisioning.LoadCache(p.cache)
	switch {
	case err != nil:
		return nil, fmt.Sprintf("provisioning: %v; registering", err)
	case a == nil:
		return nil, ""
	case !a.Matches(p.dps.Config()):
		return nil, fmt.Sprintf("provisioning: %s holds another registration's assignment (%s in %s at %s); "+
			"registering", p.cache, a.RegistrationID, a.IDScope, a.Host)
	}
	return a, ""
}

// hubIdentity is the device's identity at an assigned hub: the key it registered with (individual, or derived
// from the group key), or its certificate.
func (p *provisioner) hubIdentity(hub, deviceID string, opts *Options) (*identity, error) {
	if hub == "" || deviceID == "" || strings.ContainsAny(hub, "; /") {
		return nil, fmt.Errorf("assigned hub %q, device %q", hub, deviceID)
	}
	return identityFor(&auth.ConnectionString{HostName: hub, DeviceID: deviceID,
		SharedAccessKey: p.dps.DeviceKey(), X509: p.dps.X509()}, opts)
}

func (p *provisioner) setAssignment(hub, deviceID string) {
	p.mu.Lock()
	p.hub, p.deviceID = hub, deviceID
	p.mu.Unlock()
}

// Registrations is how many DPS registrations (billable, each an assignment) this client made; 0 for a client of
// a connection string.
func (c *Client) Registrations() int {
	if c.prov == nil {
		return 0
	}
	return int(c.prov.registrations.Load())
}

// Assignment is the hub and device id a provisioned client connects as, "" before its first assignment and for a
// client of a connection string.
func (c *Client) Assignment() (hub, deviceID string) {
	if c.prov == nil {
		return "", ""
	}
	c.prov.mu.Lock()
	defer c.prov.mu.Unlock()
	return c.prov.hub, c.prov.deviceID
}

// errProvisionIdentity is an assignment the engine cannot connect as.
var errProvisionIdentity = errors.New("DPS assigned an identity the client cannot use")

// provision registers with DPS when the client has no usable assignment, before the attempt's dial. A failure
// is the attempt's, classified as a hub's (provisioning.Error.Kind) with DPS's retry-after; one DPS calls final
// but whose kind the engine would retry (a 400) is taken as a refused credential, since registering again cannot
// help.
func (c *Client) provision(ls *loopState) error {
	p := c.prov
	if p == nil || !p.pending {
		return nil
	}
	ctx, cancel := c.attemptContext(ls, provisionTimeout)
	defer cancel()
	res, err := p.dps.RegisterOnce(ctx)
	if err != nil {
		var pe *provisioning.Error
		if !errors.As(err, &pe) {
			return err
		}
		te := pe.TransportError()
		if !pe.Transient() && !classify(te.Kind).fatal {
			te.Kind = transport.KindAuth
		}
		return te
	}
	id, err := p.hubIdentity(res.AssignedHub, res.DeviceID, &c.opts)
	if err == nil {
		err = c.dialer.CheckIdentity(id.cs.DeviceID, "")
	}
	if err != nil {
		return &transport.Error{Kind: transport.KindAuth, Op: opProvision,
			Err: fmt.Errorf("%w: %v", errProvisionIdentity, err)}
	}
	n := p.registrations.Add(1)
	c.id.Store(id)
	p.setAssignment(res.AssignedHub, res.DeviceID)
	p.pending, p.fresh, p.failures, p.since = false, true, 0, c.clk.Now()
	ls.knownGood = false // a new hub, maybe new credentials: nothing is known of them yet
	c.logf(LogInfo, "provisioning: registration %d assigned hub %s as device %s (%s)", n, res.AssignedHub,
		res.DeviceID, res.Substatus)
	if p.cache != "" {
		a := provisioning.Assignment{Host: p.cfg.Host, IDScope: p.cfg.IDScope, RegistrationID: p.cfg.RegistrationID,
			AssignedHub: res.AssignedHub, DeviceID: res.DeviceID, At: c.clk.Now().UTC()}
		if err := provisioning.SaveCache(p.cache, a); err != nil {
			c.logf(LogWarn, "provisioning: %v; the next start registers again", err)
		}
	}
	return nil
}

// opProvision is the Op of a failed registration's transport error.
const opProvision = "provision"

func isProvisionFailure(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.Op == opProvision
}

// connected notes a link that came up on the assignment.
func (p *provisioner) connected() {
	p.fresh, p.failures = false, 0
}

// linkLost notes when the last good connection ended, from which ReprovisionAfter counts.
func (p *provisioner) linkLost(now time.Time) { p.since = now }

// hubFailed decides, after a failed hub attempt of kind (dialed: a dial failed, not a live link lost), whether the
// next attempt registers again, and says why ("" = not). A refusal of a hub DPS just assigned stays fatal:
// registering again would be answered the same, and billed.
func (p *provisioner) hubFailed(kind transport.Kind, dialed bool, now time.Time) string {
	switch kind {
	case transport.KindAuth, transport.KindDeviceDisabled, transport.KindDeviceNotFound:
		if p.fresh {
			return ""
		}
		p.pending = true
		return fmt.Sprintf("the hub refused the device (%v): it may have been moved", kind)
	case transport.KindThrottled, transport.KindQuota, transport.KindServerBusy:
		return "" // a busy hub is retried, never left
	}
	if !dialed {
		return ""
	}
	p.failures++
	switch {
	case p.failures >= p.cfg.ReprovisionAfterFailures:
		p.pending = true
		return fmt.Sprintf("%d reconnects failed in a row", p.failures)
	case now.Sub(p.since) >= p.cfg.ReprovisionAfter:
		p.pending = true
		return fmt.Sprintf("no connection for %v", now.Sub(p.since).Round(time.Second))
	}
	return ""
}

// attemptContext bounds one attempt's dial or registration: timeout, the first waiting Connect's deadline and
// context, and Close.
func (c *Client) attemptContext(ls *loopState, timeout time.Duration) (context.Context, context.CancelFunc) {
	if ls.waiters.waiting() {
		timeout = min(timeout, max(ls.waiters.deadline.Sub(c.clk.Now()), time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	stopOnClose := context.AfterFunc(c.stopCtx, cancel)
	stopOnCancel := func() bool { return false }
	if w := ls.waiters; w.waiting() {
		stopOnCancel = context.AfterFunc(w.reqs[0].ctx, cancel)
	}
	return ctx, func() {
		stopOnCancel()
		stopOnClose()
		cancel()
	}
}

// RegisterDevice makes one DPS registration outside any client, as the SDKs' ProvisioningDeviceClient does:
// transient failures (429, 5xx, a lost or refused connection) are retried with opts.RetryPolicy (default
// exponential) and DPS's retry-after, within ctx and opts.OperationTimeout. p's cache and reprovisioning fields are
// not used; opts gives the CA, the X.509 certificate files, the transport (MQTT or MQTT over WebSocket) and the
// SAS lifetime. Errors are *Error with the codes a client's connect has: CodeAuth (401/403, or a final 400),
// CodeDeviceDisabled (404, a disabled enrollment), CodeThrottled, CodeNetwork, CodeTimeout, ...
func RegisterDevice(ctx context.Context, p Provisioning, opts Options) (*provisioning.Result, error) {
	if err := applyDefaults(&opts); err != nil {
		return nil, err
	}
	dps, _, err := newDPSClientIdentity(p, &opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.OperationTimeout)
	defer cancel()
	res, err := dps.Register(ctx)
	if err == nil {
		return res, nil
	}
	var pe *provisioning.Error
	if !errors.As(err, &pe) {
		return nil, &Error{Code: CodeInternal, Msg: err.Error(), Err: err}
	}
	te := pe.TransportError()
	cls := classify(te.Kind)
	code := cls.code
	switch {
	case !pe.Transient() && !cls.fatal:
		code = CodeAuth
	case pe.Transient() && ctx.Err() != nil:
		code = CodeTimeout
	}
	return nil, &Error{Code: code, Msg: err.Error(), Err: te}
}
