package hubsim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/iotconn/iotconn/core/iothub"
)

// DPSConfig configures a Device Provisioning Service front over hubs of the same process.
type DPSConfig struct {
	IDScope     string        // "" = DefaultIDScope
	Hubs        []*Hub        // the linked hubs it assigns devices to; at least one
	Dir         string        // server certificate (signed by the first hub's CA); "" = that hub's state dir + "/dps"
	MQTTAddr    string        // MQTT over TLS; "" = off
	HTTPSAddr   string        // HTTPS, and MQTT over WebSocket (path /$iothub/websocket), as DPS's port 443; "" = off
	ControlAddr string        // HTTP control API; "" = off
	RetryAfter  time.Duration // retry-after of "assigning" answers, whole seconds; 0 = 3 s, as DPS answers
	// AssigningPolls is how many status polls of an operation are answered "assigning" before it shows assigned.
	AssigningPolls int
	// RegistrationsPerMinute caps register requests as DPS's quota does (1 000 a minute per service), answering
	// those over it 429 with the seconds until the next one is admitted; 0 = no cap. A token bucket of that size,
	// refilled evenly, so a burst of a minute's worth passes at once.
	RegistrationsPerMinute int
	ClockSkew              time.Duration // tolerated SAS expiry skew
	Log                    io.Writer     // one line per connect, register, answer and fault; nil = discard
}

// DefaultIDScope is the id scope of a DPS whose config gives none.
const DefaultIDScope = "0ne00000001"

const defaultDPSRetryAfter = 3 * time.Second

// Events of the DPS besides connect, reject and fault.
const (
	EventRegister EventKind = "register" // a registration ended: assigned (Reason names hub and substatus), disabled or failed
)

// Enrollment attestation kinds.
const (
	AttestationSymmetricKey = "symmetricKey"
	AttestationX509         = "x509"
)

// Allocation policies: how an enrollment picks among its hubs.
const (
	AllocationHashed = "hashed" // evenly weighted: a hash of the registration id picks the hub (DPS's default)
	AllocationStatic = "static" // always the enrollment's first hub
)

// Reprovisioning policies: what a registration does when the enrollment now allocates another hub.
const (
	ReprovisionMigrate = "migrate" // move to the new hub with the twin (DPS's default)
	ReprovisionReset   = "reset"   // move to the new hub with a fresh twin
	ReprovisionNever   = "never"   // stay on the hub first assigned
)

// Enrollment is an individual enrollment (RegistrationID set) or an enrollment group (GroupID set).
type Enrollment struct {
	RegistrationID string           `json:"registrationId,omitempty"`
	GroupID        string           `json:"enrollmentGroupId,omitempty"`
	DeviceID       string           `json:"deviceId,omitempty"`    // individual: the hub's device id; "" = the registration id
	Attestation    string           `json:"attestation,omitempty"` // AttestationSymmetricKey ("" too) or AttestationX509
	PrimaryKey     string           `json:"primaryKey,omitempty"`  // symmetric key (a group's members derive theirs); "" = random
	SecondaryKey   string           `json:"secondaryKey,omitempty"`
	IoTHubs        []string         `json:"iotHubs,omitempty"` // host names of the linked hubs to allocate over; empty = all
	Allocation     string           `json:"allocationPolicy,omitempty"`
	Reprovision    string           `json:"reprovisionPolicy,omitempty"`
	Status         string           `json:"provisioningStatus,omitempty"` // StatusEnabled ("" too) or StatusDisabled
	X509           *X509Attestation `json:"x509,omitempty"`               // with AttestationX509
}

// X509Attestation is an X.509 enrollment's trust: an individual enrollment lists the thumbprints of its device's
// certificate (registered on the hub as a self-signed device), a group holds the CA its members' certificates chain
// to (registered on the hub, the members as CA-authenticated devices). The registration id is the certificate's CN.
type X509Attestation struct {
	Thumbprints   []string `json:"thumbprints,omitempty"`
	CACertificate string   `json:"caCertificate,omitempty"` // PEM
}

func (e *Enrollment) isGroup() bool { return e.GroupID != "" }

func (e *Enrollment) name() string {
	if e.isGroup() {
		return "group " + e.GroupID
	}
	return "enrollment " + e.RegistrationID
}

// RegistrationState is a device's registration as DPS reports it in an operation's answer.
type RegistrationState struct {
	RegistrationID string `json:"registrationId"`
	CreatedAt      string `json:"createdDateTimeUtc,omitempty"`
	AssignedHub    string `json:"assignedHub,omitempty"`
	DeviceID       string `json:"deviceId,omitempty"`
	Status         string `json:"status"`              // assigned, failed, disabled
	Substatus      string `json:"substatus,omitempty"` // initialAssignment, deviceDataMigrated, deviceDataReset
	LastUpdated    string `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag           string `json:"etag,omitempty"`
	ErrorCode      int    `json:"errorCode,omitempty"`
	ErrorMessage   string `json:"errorMessage,omitempty"`
}

// Registration is what DPS keeps for a registration id: its state and how many times it registered.
type Registration struct {
	State      RegistrationState `json:"registrationState"`
	Enrollment string            `json:"enrollment"` // "enrollment ID" or "group ID"
	Count      int               `json:"registrations"`
}

// registration is a registration id's record; carry is the twin a move took from the old hub, for a migration.
type registration struct {
	Registration
	carry *twin
}

// operation is one register call, polled by its id.
type operation struct {
	id     string
	regID  string // lower case
	polls  int
	answer RegistrationState
}

// DPS is a running Device Provisioning Service.
type DPS struct {
	server
	cfg       DPSConfig
	tlsConf   *tls.Config
	events    *eventBus
	closeOnce sync.Once

	mqtts, https *listener
	mqtt         *dpsMQTT
	web          *http.Server // serves the HTTPS front's requests
	webConns     chan *servedConn
	control      *http.Server
	controlURL   string

	downMu    sync.Mutex // serialises down faults and their ends
	down      int        // down faults so far; each is ended by the latest one's timer or a clear
	downEnded int        // the last down fault ended

	mu          sync.Mutex
	individuals map[string]*Enrollment   // lower-case registration id ->
	groups      map[string]*Enrollment   // group id ->
	regs        map[string]*registration // lower-case registration id ->
	ops         map[string]*operation    // operation id ->
	lastOp      map[string]string        // lower-case registration id -> its latest operation id
	fault       dpsFaultState
	quota       tokenBucket
	registered  int                 // billable registrations (assignments) since start
	regLog      []RegistrationEvent // the latest maxRegLog of them
}

// StartDPS opens a DPS front over running hubs.
func StartDPS(cfg DPSConfig) (*DPS, error) {
	if len(cfg.Hubs) == 0 {
		return nil, errors.New("hubsim: DPSConfig.Hubs needs at least one hub")
	}
	if cfg.IDScope == "" {
		cfg.IDScope = DefaultIDScope
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = defaultDPSRetryAfter
	}
	if cfg.MQTTAddr == "" && cfg.HTTPSAddr == "" {
		return nil, errors.New("hubsim: DPS needs an MQTT or an HTTPS address")
	}
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(cfg.Hubs[0].cfg.Dir, "dps")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	if err := adoptCA(dir, cfg.Hubs[0].cfg.Dir); err != nil {
		return nil, fmt.Errorf("hubsim: DPS CA: %w", err)
	}
	tlsConf, err := loadOrCreateTLS(dir, nil, listenIPs(cfg.MQTTAddr, cfg.HTTPSAddr)...)
	if err != nil {
		return nil, fmt.Errorf("hubsim: DPS certificates: %w", err)
	}
	d := &DPS{
		server: newServer(), cfg: cfg, tlsConf: tlsConf, events: newEventBus(TagLog(cfg.Log, "dps")),
		individuals: map[string]*Enrollment{}, groups: map[string]*Enrollment{}, regs: map[string]*registration{},
		ops: map[string]*operation{}, lastOp: map[string]string{}, webConns: make(chan *servedConn),
	}
	if d.mqtt, err = newDPSMQTT(d); err != nil { // also serves MQTT over WebSocket on the HTTPS port
		return nil, err
	}
	var toOpen []*listener
	if cfg.MQTTAddr != "" {
		d.mqtts = d.newListener("dps-mqtts", cfg.MQTTAddr, d.mqtt.serveTLS)
		toOpen = append(toOpen, d.mqtts)
	}
	if cfg.HTTPSAddr != "" {
		d.startWeb()
		d.https = d.newListener("dps-https", cfg.HTTPSAddr, d.serveHTTPS)
		toOpen = append(toOpen, d.https)
	}
	for _, l := range toOpen {
		if err := d.open(l); err != nil {
			_ = d.Close()
			return nil, fmt.Errorf("hubsim: %s listener on %s: %w", l.name, l.address(), err)
		}
	}
	if cfg.ControlAddr != "" {
		if err := d.startControl(cfg.ControlAddr); err != nil {
			_ = d.Close()
			return nil, fmt.Errorf("hubsim: DPS control API on %s: %w", cfg.ControlAddr, err)
		}
	}
	return d, nil
}

func (d *DPS) listeners() []*listener { return present(d.mqtts, d.https) }

// Close stops the listeners, cuts every connection and waits for every goroutine of the DPS.
func (d *DPS) Close() error {
	d.closeOnce.Do(func() {
		d.beginClose()
		d.stop(d.listeners(), false) // first, so the HTTPS server has no device request to wait for
		for _, srv := range []*http.Server{d.control, d.web} {
			if srv != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = srv.Shutdown(ctx)
				cancel()
			}
		}
	})
	d.wg.Wait()
	return nil
}

// IDScope is the DPS's id scope.
func (d *DPS) IDScope() string { return d.cfg.IDScope }

// MQTTAddr is the MQTT listener's address, "" when off.
func (d *DPS) MQTTAddr() string { return listenerAddr(d.mqtts) }

// HTTPSAddr is the HTTPS listener's address, "" when off.
func (d *DPS) HTTPSAddr() string { return listenerAddr(d.https) }

// ControlURL is the control API's base URL, "" when off.
func (d *DPS) ControlURL() string { return d.controlURL }

// CAFile is the CA certificate devices must trust, the hubs' one when they share the state dir's CA.
func (d *DPS) CAFile() string { return filepath.Join(d.cfg.Dir, caCertFile) }

// Events subscribes to the DPS's events; call the func to unsubscribe.
func (d *DPS) Events() (<-chan Event, func()) { return d.events.subscribe() }

// Hubs lists the host names of the linked hubs, the values of Enrollment.IoTHubs and of assignedHub.
func (d *DPS) Hubs() []string {
	out := make([]string, len(d.cfg.Hubs))
	for i, h := range d.cfg.Hubs {
		out[i] = h.HostName()
	}
	return out
}

func (d *DPS) hubNamed(name string) *Hub {
	for _, h := range d.cfg.Hubs {
		if strings.EqualFold(h.HostName(), name) {
			return h
		}
	}
	return nil
}

// Errors of the DPS API.
var (
	ErrEnrollmentNotFound = errors.New("no such enrollment")
	errEnrollmentInvalid  = errors.New("invalid enrollment")
)

// SetEnrollment creates or replaces an individual enrollment or an enrollment group and returns it with its keys.
// Registrations made under an earlier version keep their hub until they register again.
func (d *DPS) SetEnrollment(e Enrollment) (Enrollment, error) {
	e = e.copy() // normalise rewrites hub names in place; the caller's slices stay as they were
	if err := d.normalise(&e); err != nil {
		return Enrollment{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	stored := e
	if e.isGroup() {
		d.groups[e.GroupID] = &stored
	} else {
		d.individuals[strings.ToLower(e.RegistrationID)] = &stored
	}
	return stored.copy(), nil
}

func (e Enrollment) copy() Enrollment {
	e.IoTHubs = append([]string(nil), e.IoTHubs...)
	if e.X509 != nil {
		x := *e.X509
		x.Thumbprints = append([]string(nil), x.Thumbprints...)
		e.X509 = &x
	}
	return e
}

// normalise checks an enrollment and fills its defaults.
func (d *DPS) normalise(e *Enrollment) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", errEnrollmentInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case (e.RegistrationID == "") == (e.GroupID == ""):
		return bad("give a registrationId (individual) or an enrollmentGroupId (group), not both")
	case e.isGroup() && e.DeviceID != "":
		return bad("a group's devices take their registration id as device id")
	}
	if e.RegistrationID != "" {
		if err := validateRegistrationID(e.RegistrationID); err != nil {
			return bad("%v", err)
		}
	}
	if e.DeviceID != "" {
		if err := validateDeviceID(e.DeviceID); err != nil {
			return bad("%v", err)
		}
	}
	switch e.Attestation {
	case "", AttestationSymmetricKey:
		e.Attestation = AttestationSymmetricKey
		if e.X509 != nil {
			return bad("x509 given with a symmetric key attestation")
		}
		for _, k := range []*string{&e.PrimaryKey, &e.SecondaryKey} {
			if *k == "" {
				*k = randomKey()
			} else if err := validateKey(*k); err != nil {
				return bad("%v", err)
			}
		}
	case AttestationX509:
		if e.PrimaryKey != "" || e.SecondaryKey != "" {
			return bad("keys given with an x509 attestation")
		}
		if err := e.X509.check(e.isGroup()); err != nil {
			return bad("%v", err)
		}
	default:
		return bad("attestation must be %q or %q", AttestationSymmetricKey, AttestationX509)
	}
	for i, name := range e.IoTHubs {
		h := d.hubNamed(name)
		if h == nil {
			return bad("hub %q is not linked to this DPS (linked: %s)", name, strings.Join(d.Hubs(), ", "))
		}
		e.IoTHubs[i] = h.HostName()
	}
	if e.Allocation == "" {
		e.Allocation = AllocationHashed
	}
	if e.Allocation != AllocationHashed && e.Allocation != AllocationStatic {
		return bad("allocationPolicy must be %q or %q", AllocationHashed, AllocationStatic)
	}
	if e.Reprovision == "" {
		e.Reprovision = ReprovisionMigrate
	}
	if e.Reprovision != ReprovisionMigrate && e.Reprovision != ReprovisionReset && e.Reprovision != ReprovisionNever {
		return bad("reprovisionPolicy must be %q, %q or %q", ReprovisionMigrate, ReprovisionReset, ReprovisionNever)
	}
	if e.Status == "" {
		e.Status = StatusEnabled
	}
	if e.Status != StatusEnabled && e.Status != StatusDisabled {
		return bad("provisioningStatus must be %q or %q", StatusEnabled, StatusDisabled)
	}
	return nil
}

// validateRegistrationID applies DPS's rule: 1..128 ASCII letters, digits and - . _ :
func validateRegistrationID(id string) error { return checkID("registration id", id, "-._:") }

// Enrollment returns an individual enrollment.
func (d *DPS) Enrollment(registrationID string) (Enrollment, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.individuals[strings.ToLower(registrationID)]
	if !ok {
		return Enrollment{}, fmt.Errorf("%w: %s", ErrEnrollmentNotFound, registrationID)
	}
	return e.copy(), nil
}

// EnrollmentGroup returns an enrollment group.
func (d *DPS) EnrollmentGroup(groupID string) (Enrollment, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.groups[groupID]
	if !ok {
		return Enrollment{}, fmt.Errorf("%w: group %s", ErrEnrollmentNotFound, groupID)
	}
	return e.copy(), nil
}

// Enrollments lists the individual enrollments and then the groups, each sorted by id.
func (d *DPS) Enrollments() []Enrollment {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Enrollment
	for _, m := range []map[string]*Enrollment{d.individuals, d.groups} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, m[k].copy())
		}
	}
	return out
}

// DeleteEnrollment removes an individual enrollment; its device's registrations are then refused (401).
func (d *DPS) DeleteEnrollment(registrationID string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := strings.ToLower(registrationID)
	if _, ok := d.individuals[key]; !ok {
		return fmt.Errorf("%w: %s", ErrEnrollmentNotFound, registrationID)
	}
	delete(d.individuals, key)
	return nil
}

// DeleteEnrollmentGroup removes an enrollment group; its members' registrations are then refused (401).
func (d *DPS) DeleteEnrollmentGroup(groupID string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.groups[groupID]; !ok {
		return fmt.Errorf("%w: group %s", ErrEnrollmentNotFound, groupID)
	}
	delete(d.groups, groupID)
	return nil
}

// MoveEnrollment is "the hub was reconfigured" for an individual enrollment: it now allocates to hub only, and
// its device is deleted from the hub it was assigned to, which drops its connection and refuses its connects
// (CONNACK 2, unknown device). The device finds its new hub by registering again (with ReprovisionNever it is
// assigned the old hub again, and recreated there).
func (d *DPS) MoveEnrollment(registrationID, hub string) error {
	return d.move(func() *Enrollment { return d.individuals[strings.ToLower(registrationID)] }, registrationID, hub)
}

// MoveEnrollmentGroup is MoveEnrollment for every member of an enrollment group.
func (d *DPS) MoveEnrollmentGroup(groupID, hub string) error {
	return d.move(func() *Enrollment { return d.groups[groupID] }, "group "+groupID, hub)
}

func (d *DPS) move(find func() *Enrollment, what, hub string) error {
	target := d.hubNamed(hub)
	if target == nil {
		return fmt.Errorf("%w: hub %q is not linked to this DPS (linked: %s)", errEnrollmentInvalid, hub,
			strings.Join(d.Hubs(), ", "))
	}
	victims := map[*Hub]map[string]*registration{} // old hub -> device id -> its registration
	d.mu.Lock()
	e := find()
	if e == nil {
		d.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrEnrollmentNotFound, what)
	}
	e.IoTHubs = []string{target.HostName()}
	n := 0
	for _, r := range d.regs {
		st := r.State
		if r.Enrollment != e.name() || st.AssignedHub == "" || strings.EqualFold(st.AssignedHub, target.HostName()) {
			continue
		}
		if old := d.hubNamed(st.AssignedHub); old != nil {
			if victims[old] == nil {
				victims[old] = map[string]*registration{}
			}
			victims[old][st.DeviceID] = r
			n++
		}
	}
	d.mu.Unlock()
	var errs []error
	for old, regs := range victims {
		ids := make([]string, 0, len(regs))
		for id := range regs {
			ids = append(ids, id)
		}
		twins, _, err := old.removeDevices(ids)
		if err != nil {
			errs = append(errs, err)
		}
		d.mu.Lock()
		for id, r := range regs {
			r.carry = twins[id]
		}
		d.mu.Unlock()
	}
	d.events.emit(Event{Kind: EventFault, Reason: fmt.Sprintf("%s moved to %s (%d devices deleted from their hubs)",
		what, target.HostName(), n)})
	return errors.Join(errs...)
}

// Registration returns what DPS holds for a registration id.
func (d *DPS) Registration(registrationID string) (Registration, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.regs[strings.ToLower(registrationID)]
	if !ok {
		return Registration{}, false
	}
	return r.Registration, true
}

// RegistrationEvent is one assignment, for measuring a fleet's registration rate.
type RegistrationEvent struct {
	RegistrationID string    `json:"registrationId"`
	AssignedHub    string    `json:"assignedHub"`
	At             time.Time `json:"at"`
}

// maxRegLog bounds the registration log; the oldest half goes when it is full.
const maxRegLog = 100_000

// RegistrationLog returns the latest assignments (up to 100 000), oldest first.
func (d *DPS) RegistrationLog() []RegistrationEvent {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]RegistrationEvent(nil), d.regLog...)
}

// Registrations is the number of registrations DPS assigned since it started, the billable operations.
func (d *DPS) Registrations() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.registered
}

// allocate picks the hub of a registration under an enrollment.
func (d *DPS) allocate(e *Enrollment, regID string) *Hub {
	names := e.IoTHubs
	if len(names) == 0 {
		names = d.Hubs()
	}
	i := 0
	if e.Allocation == AllocationHashed {
		f := fnv.New32a()
		_, _ = f.Write([]byte(strings.ToLower(regID)))
		i = int(f.Sum32() % uint32(len(names)))
	}
	return d.hubNamed(names[i])
}

// dpsAnswer is an answer to a device request, whatever the transport: status, JSON body, retry-after seconds (-1 none).
type dpsAnswer struct {
	status     int
	body       []byte
	retryAfter int
}

// dpsError is DPS's error body; errorCode is the HTTP status times 1000 plus a detail.
func dpsError(status, detail int, message string, retryAfter int) dpsAnswer {
	b, _ := json.Marshal(map[string]any{
		"errorCode": status*1000 + detail, "trackingId": newMessageID(), "message": message,
		"timestampUtc": time.Now().UTC().Format(time.RFC3339Nano),
	})
	return dpsAnswer{status: status, body: b, retryAfter: retryAfter}
}

// proof is what a device shows for a request: a SAS token, or the certificate chain of its TLS handshake.
type proof struct {
	token *iothub.SAS
	certs []*x509.Certificate
}

func (d *DPS) retryAfterSeconds() int { return int((d.cfg.RetryAfter + time.Second - 1) / time.Second) }

// admit passes a request through the faults, the registration quota (for registers) and the enrollments; when it
// is refused, ok is false and a is the answer. e is a copy of the enrollment, which a move may change meanwhile.
func (d *DPS) admit(regID string, p proof, remote string, register bool) (e *Enrollment, cred hubCred, a dpsAnswer, ok bool) {
	a, refused := d.faultAnswer()
	if !refused && register {
		if wait, admitted := d.admitRegistration(); !admitted {
			a = dpsError(429, 2, "Too many registrations: over the service's quota", int((wait+time.Second-1)/time.Second))
			refused = true
		}
	}
	if !refused {
		d.mu.Lock()
		found, c, why := d.attest(regID, p)
		if found != nil {
			cp := found.copy()
			e, cred = &cp, c
		}
		d.mu.Unlock()
		if e == nil {
			a, refused = dpsError(401, 2, "Unauthorized: "+why, -1), true
		}
	}
	if refused {
		d.refused(regID, remote, a)
		return nil, hubCred{}, a, false
	}
	return e, cred, dpsAnswer{}, true
}

// register is a device's registration request.
func (d *DPS) register(regID string, p proof, remote string) dpsAnswer {
	e, cred, refusal, ok := d.admit(regID, p, remote, true)
	if !ok {
		return refusal
	}
	key := strings.ToLower(regID)
	now := time.Now().UTC().Format(time.RFC3339Nano)
	deviceID := regID
	if e.DeviceID != "" {
		deviceID = e.DeviceID
	}
	d.mu.Lock()
	r := d.regs[key]
	if r == nil {
		r = &registration{Registration: Registration{State: RegistrationState{RegistrationID: regID, CreatedAt: now}}}
		d.regs[key] = r
	}
	r.Enrollment = e.name()
	prev := r.State
	carry := r.carry
	d.mu.Unlock()

	st := RegistrationState{RegistrationID: regID, CreatedAt: prev.CreatedAt, LastUpdated: now, ETag: newMessageID()}
	if e.Status == StatusDisabled {
		st.Status, st.ErrorCode, st.ErrorMessage = "disabled", 401010, "the enrollment is disabled"
	} else {
		d.assign(&st, e, deviceID, cred, prev, carry)
	}
	op := &operation{id: newOperationID(), regID: key, answer: st}
	d.mu.Lock()
	r.State = st
	if st.Status == "assigned" {
		r.carry = nil
		r.Count++
		d.registered++
		if len(d.regLog) == maxRegLog {
			d.regLog = append(d.regLog[:0], d.regLog[maxRegLog/2:]...)
		}
		d.regLog = append(d.regLog, RegistrationEvent{RegistrationID: regID, AssignedHub: st.AssignedHub, At: time.Now()})
	}
	delete(d.ops, d.lastOp[key])
	d.ops[op.id] = op
	d.lastOp[key] = op.id
	d.mu.Unlock()
	if st.Status == "assigned" {
		d.events.emit(Event{Kind: EventRegister, Device: regID, Remote: remote,
			Reason: fmt.Sprintf("assigned to %s as %s (%s)", st.AssignedHub, st.DeviceID, st.Substatus)})
	} else {
		d.events.emit(Event{Kind: EventRegister, Device: regID, Remote: remote, Reason: st.Status + ": " + st.ErrorMessage})
	}
	b, _ := json.Marshal(map[string]any{"operationId": op.id, "status": "assigning"})
	return dpsAnswer{status: 202, body: b, retryAfter: d.retryAfterSeconds()}
}

// assign picks the registration's hub under the enrollment and its reprovisioning policy, and writes the device
// there (with the twin of its old hub when it migrates); st gets the outcome.
func (d *DPS) assign(st *RegistrationState, e *Enrollment, deviceID string, cred hubCred, prev RegistrationState, carry *twin) {
	target := d.allocate(e, st.RegistrationID)
	old := d.hubNamed(prev.AssignedHub)
	if e.Reprovision == ReprovisionNever && old != nil {
		target = old
	}
	if target == nil { // a linked hub moved (fault move-port) and its old name stayed in the enrollment
		st.Status, st.ErrorCode, st.ErrorMessage = "failed", 500000, "the enrollment names no linked hub"
		return
	}
	var tw *twin
	st.Substatus = "initialAssignment"
	switch {
	case old == nil:
	case old == target:
		st.Substatus, tw = prev.Substatus, carry // carry: a move deleted it there, and "never" brings it back
	case e.Reprovision == ReprovisionMigrate:
		st.Substatus = "deviceDataMigrated"
		if tw = old.twinOf(prev.DeviceID); tw == nil {
			tw = carry
		}
	default:
		st.Substatus = "deviceDataReset"
	}
	if err := target.provision(deviceID, cred, tw); err != nil {
		st.Status, st.ErrorCode, st.ErrorMessage = "failed", 500000, "assigning to "+target.HostName()+": "+err.Error()
		return
	}
	st.Status, st.AssignedHub, st.DeviceID = "assigned", target.HostName(), deviceID
}

// operationStatus answers a poll of an operation of the registration id.
func (d *DPS) operationStatus(regID, opID string, p proof, remote string) dpsAnswer {
	if _, _, refusal, ok := d.admit(regID, p, remote, false); !ok {
		return refusal
	}
	d.mu.Lock()
	op, ok := d.ops[opID]
	if !ok || op.regID != strings.ToLower(regID) {
		d.mu.Unlock()
		a := dpsError(404, 2, "Operation not found", -1)
		d.refused(regID, remote, a)
		return a
	}
	op.polls++
	assigning := op.polls <= d.cfg.AssigningPolls
	st := op.answer
	d.mu.Unlock()
	if assigning {
		b, _ := json.Marshal(map[string]any{"operationId": op.id, "status": "assigning"})
		return dpsAnswer{status: 202, body: b, retryAfter: d.retryAfterSeconds()}
	}
	b, _ := json.Marshal(map[string]any{"operationId": op.id, "status": st.Status, "registrationState": st})
	return dpsAnswer{status: 200, body: b, retryAfter: -1}
}

// statusLookup answers a device's registration status lookup (HTTPS only, free, not counted): its registration
// state, 404 when it never registered.
func (d *DPS) statusLookup(regID string, p proof, remote string) dpsAnswer {
	if _, _, refusal, ok := d.admit(regID, p, remote, false); !ok {
		return refusal
	}
	d.mu.Lock()
	r := d.regs[strings.ToLower(regID)]
	var st RegistrationState
	if r != nil {
		st = r.State
	}
	d.mu.Unlock()
	if r == nil {
		return dpsError(404, 1, "Registration not found", -1)
	}
	b, _ := json.Marshal(st)
	return dpsAnswer{status: 200, body: b, retryAfter: -1}
}

func (d *DPS) refused(regID, remote string, a dpsAnswer) {
	var e struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(a.body, &e)
	d.events.emit(Event{Kind: EventReject, Device: regID, Remote: remote, Code: a.status, Reason: e.Message})
}

// attest finds the enrollment whose attestation the proof satisfies, and the device's hub credentials; d.mu held.
// An individual enrollment takes precedence over the groups, as in DPS.
func (d *DPS) attest(regID string, p proof) (e *Enrollment, cred hubCred, why string) {
	if p.token != nil {
		if why := d.tokenProblem(regID, p.token); why != "" {
			return nil, cred, why
		}
	}
	if ind := d.individuals[strings.ToLower(regID)]; ind != nil {
		if k, ok := ind.verify(regID, p); ok {
			return ind, k, ""
		}
		return nil, cred, "the proof does not match the individual enrollment " + regID
	}
	ids := make([]string, 0, len(d.groups))
	for id := range d.groups {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if k, ok := d.groups[id].verify(regID, p); ok {
			return d.groups[id], k, ""
		}
	}
	return nil, cred, "no enrollment matches " + regID
}

// tokenProblem says what is wrong with a registration token's scope, key name or expiry, "" when nothing; the
// signature is the enrollment's to check.
func (d *DPS) tokenProblem(regID string, tok *iothub.SAS) string {
	switch {
	case tok.Expiry.Add(d.cfg.ClockSkew).Before(time.Now()):
		return "token expired at " + tok.Expiry.UTC().Format(time.RFC3339)
	case !strings.EqualFold(tok.Resource, iothub.DPSResource(d.cfg.IDScope, regID)):
		return "token scope " + tok.Resource + " is not " + iothub.DPSResource(d.cfg.IDScope, regID)
	case tok.KeyName != "" && tok.KeyName != iothub.DPSSASKeyName: // the Python SDK sends none, Node and C "registration"
		return "token key name (skn) must be " + iothub.DPSSASKeyName + " or absent"
	}
	return ""
}

// verify checks a proof against the enrollment's attestation and returns the device's hub credentials.
func (e *Enrollment) verify(regID string, p proof) (hubCred, bool) {
	switch {
	case e.Attestation == AttestationSymmetricKey && p.token != nil:
		keys := [2]string{e.PrimaryKey, e.SecondaryKey}
		if e.isGroup() {
			for i, k := range keys {
				keys[i], _ = iothub.DeriveDeviceKey(k, regID) // the keys were checked when the group was set
			}
		}
		return hubCred{primary: keys[0], secondary: keys[1]}, p.token.Verify(keys[0]) || p.token.Verify(keys[1])
	case e.Attestation == AttestationX509 && len(p.certs) > 0:
		return e.X509.verify(regID, p.certs, e.isGroup())
	}
	return hubCred{}, false
}

func newOperationID() string {
	id := newMessageID()
	return "4." + id[:16] + "." + id[16:]
}

// TagLog returns a writer that marks each "hubsim: " log line written to w with tag ("hubsim: TAG ..."), so the
// lines of a DPS and of several hubs sharing one output tell apart.
func TagLog(w io.Writer, tag string) io.Writer {
	if w == nil {
		return nil
	}
	return tagWriter{w, []byte("hubsim: " + tag + " ")}
}

type tagWriter struct {
	out io.Writer
	tag []byte
}

// Write gets one whole line per call: the event bus formats each line with one Fprintf.
func (w tagWriter) Write(p []byte) (int, error) {
	line, ok := bytes.CutPrefix(p, []byte("hubsim: "))
	if !ok {
		return w.out.Write(p)
	}
	if _, err := w.out.Write(append(append([]byte(nil), w.tag...), line...)); err != nil {
		return 0, err
	}
	return len(p), nil
}
