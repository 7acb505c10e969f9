// Package hubsim is a local Azure IoT Hub for development and tests: MQTT over TLS with SAS authentication, a
// persisted device registry, telemetry recording, C2D, twins, direct methods and fault injection.
//
// Layers: registry.go (devices), auth.go (credentials), record.go (telemetry and events), twin.go, the hub core
// (this file: sessions, C2D queues, methods), faults.go and listen.go (accept-side faults) know no protocol; mqtt.go
// maps MQTT onto them and control.go serves the HTTP control API.
package hubsim

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iotconn/iotconn/core/iothub"
)

// Config configures a hub. Addresses bind 127.0.0.1 in tests; ":0" ports pick a free one.
type Config struct {
	Dir         string        // state dir: CA + server cert + registry; created if missing
	CADir       string        // take the CA from this state dir, so several hubs (and a DPS) share one; "" = Dir's own
	MQTTAddr    string        // MQTT over TLS; "" = 127.0.0.1:8883
	TCPAddr     string        // optional plain MQTT; "" = off
	WSAddr      string        // optional MQTT over WebSocket (TLS, path /$iothub/websocket); "" = off
	AMQPAddr    string        // optional AMQP 1.0 over TLS (IoT Hub's 5671); "" = off
	AMQPWSAddr  string        // optional AMQP over WebSocket (AMQPWSB10); WSAddr's value serves both there; "" = off
	ControlAddr string        // HTTP control API; "" = off
	HostName    string        // HostName of connection strings; "" = localhost, with the MQTT port unless 8883
	CertNames   []string      // more DNS names the server certificate covers (names a test maps to the hub)
	ClockSkew   time.Duration // tolerated SAS expiry skew
	TokenGrace  time.Duration // a live connection is dropped this long after its token expired
	Log         io.Writer     // one line per connect/disconnect/reject/fault; nil = discard
}

// DefaultMQTTAddr is where the TLS MQTT listener binds when Config.MQTTAddr is empty.
const DefaultMQTTAddr = "127.0.0.1:8883"

// Errors of the Go API; the control API maps them to HTTP statuses.
var (
	ErrNotFound        = errors.New("no such device")
	ErrExists          = errors.New("device already exists")
	ErrNotConnected    = errors.New("device is not connected or does not listen for this request")
	ErrMethodTimeout   = errors.New("device did not answer the method in time")
	ErrClosed          = errors.New("hub is closed")
	errDeviceIDInvalid = errors.New("invalid device id")
)

// hostNames are the names the hub answers to in user names and token scopes; its certificate covers them.
var hostNames = []string{"localhost", "127.0.0.1", "::1"}

// Hub is a running emulator.
type Hub struct {
	server
	cfg     Config
	tlsConf *tls.Config
	events  *eventBus
	rec     *recorder

	deviceCAs *caStore // CAs of CA-authenticated devices

	closeOnce sync.Once

	mqtts, tcp, ws *listener
	amqps, amqpws  *listener
	control        *http.Server
	controlURL     string
	mqtt           *mqttFront
	amqp           *amqpFront
	opMu           sync.Mutex // serialises listener-moving faults (restart, move-port, hub-down)

	mu       sync.Mutex
	reg      *registry
	sessions map[string]*session // the live session of each identity
	live     map[link]*session   // every attached link, including replaced ones not yet gone
	connects map[string]int
	c2d      map[string][]*c2dItem
	c2dAcked chan struct{} // closed and replaced whenever a C2D message completes
	methods  map[string]chan MethodResult
	refused  map[string]time.Time // identity -> connects refused until (fault-injection duration)
	nextRID  uint64
}

// dropCause is how the hub ends a session; each transport maps it to its own goodbye.
type dropCause int

const (
	dropKill     dropCause = iota // cut the connection with a TCP reset
	dropGraceful                  // close the connection cleanly
	dropAuth                      // the credential no longer holds (token expired, keys rotated)
	dropDisabled                  // the device was disabled
	dropReplaced                  // a newer connection of the same identity took over
)

// link is one live device connection as the hub core sees it; each transport implements it.
type link interface {
	// drop ends the device's connection for cause. MQTT closes cleanly for dropGraceful and resets the socket
	// otherwise; AMQP detaches only the device's links for the causes that concern one device.
	drop(cause dropCause)
	// listensC2D reports whether the device subscribed to its C2D messages.
	listensC2D() bool
	sendC2D(m C2DMessage) error
	sendDesired(version int, patch []byte)
	// sendMethod returns false when the device does not listen for method calls.
	sendMethod(name, rid string, payload []byte) bool
}

// session is an authenticated connection of an identity.
type session struct {
	id         identity
	link       link
	remote     string
	done       chan struct{} // closed when the link is gone
	dropReason string        // why the hub ended it; "" when the device or the network did
	expiry     time.Time     // the token's expiry; guarded by Hub.mu
	renewed    chan struct{} // closed and replaced when the token is renewed in place; guarded by Hub.mu
}

// Start creates the state directory if needed, loads the registry and opens the listeners.
func Start(cfg Config) (*Hub, error) {
	if cfg.Dir == "" {
		return nil, errors.New("hubsim: Config.Dir is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	if cfg.MQTTAddr == "" {
		cfg.MQTTAddr = DefaultMQTTAddr
	}
	if cfg.HostName != "" && !hostMatches(cfg.HostName, hostNames) {
		return nil, fmt.Errorf("hubsim: Config.HostName %q is none of %v (the names tokens may be scoped to)",
			cfg.HostName, hostNames)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("hubsim: state dir: %w", err)
	}
	if cfg.CADir != "" {
		if err := adoptCA(dir, cfg.CADir); err != nil {
			return nil, fmt.Errorf("hubsim: CA from %s: %w", cfg.CADir, err)
		}
	}
	tlsConf, err := loadOrCreateTLS(dir, cfg.CertNames, listenIPs(cfg.MQTTAddr, cfg.WSAddr)...)
	if err != nil {
		return nil, fmt.Errorf("hubsim: certificates: %w", err)
	}
	cas, err := loadCAStore(dir)
	if err != nil {
		return nil, fmt.Errorf("hubsim: device CAs: %w", err)
	}
	reg, err := loadRegistry(dir)
	if err != nil {
		return nil, fmt.Errorf("hubsim: %w", err)
	}
	h := &Hub{
		server: newServer(), cfg: cfg, tlsConf: tlsConf, deviceCAs: cas, events: newEventBus(cfg.Log), rec: newRecorder(), reg: reg,
		sessions: map[string]*session{}, live: map[link]*session{}, connects: map[string]int{},
		c2d: map[string][]*c2dItem{}, c2dAcked: make(chan struct{}), methods: map[string]chan MethodResult{}, refused: map[string]time.Time{},
	}
	if h.mqtt, err = newMQTTFront(h); err != nil {
		_ = reg.close()
		return nil, err
	}
	h.mqtts = h.newListener("mqtts", cfg.MQTTAddr, func(hc *hubConn) {
		tc := tls.Server(hc, h.tlsConf)
		hc.setTop(tc)
		h.mqtt.serve("mqtts", tc)
	})
	toOpen := []*listener{h.mqtts}
	if cfg.TCPAddr != "" {
		h.tcp = h.newListener("tcp", cfg.TCPAddr, func(hc *hubConn) { h.mqtt.serve("tcp", hc) })
		toOpen = append(toOpen, h.tcp)
	}
	if cfg.WSAddr != "" {
		protocols := []string{wsMQTT}
		if cfg.AMQPWSAddr == cfg.WSAddr {
			protocols = append(protocols, wsAMQP)
		}
		h.ws = h.newListener("ws", cfg.WSAddr, h.webSocketServer(protocols...))
		toOpen = append(toOpen, h.ws)
	}
	if cfg.AMQPWSAddr != "" && cfg.AMQPWSAddr != cfg.WSAddr {
		h.amqpws = h.newListener("amqpws", cfg.AMQPWSAddr, h.webSocketServer(wsAMQP))
		toOpen = append(toOpen, h.amqpws)
	}
	h.amqp = newAMQPFront(h)
	if cfg.AMQPAddr != "" {
		h.amqps = h.newListener("amqps", cfg.AMQPAddr, func(hc *hubConn) {
			tc := tls.Server(hc, h.tlsConf)
			hc.setTop(tc)
			h.amqp.serve(hc, tc)
		})
		toOpen = append(toOpen, h.amqps)
	}
	for _, l := range toOpen {
		if err := h.open(l); err != nil {
			_ = h.Close()
			return nil, fmt.Errorf("hubsim: %s listener on %s: %w", l.name, l.address(), err)
		}
	}
	if cfg.ControlAddr != "" {
		if err := h.startControl(cfg.ControlAddr); err != nil {
			_ = h.Close()
			return nil, fmt.Errorf("hubsim: control API on %s: %w", cfg.ControlAddr, err)
		}
	}
	return h, nil
}

func (h *server) newListener(name, addr string, serve func(*hubConn)) *listener {
	l := &listener{name: name, serve: serve}
	l.addr.Store(addr)
	return l
}

// Close stops the listeners, cuts every connection and waits for every goroutine of the hub.
func (h *Hub) Close() error {
	h.closeOnce.Do(func() {
		h.beginClose()
		if h.control != nil {
			// Shutdown waits for running handlers; a method call in progress returns once done is closed.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = h.control.Shutdown(ctx)
			cancel()
		}
		for _, l := range h.listeners() {
			l.shut()
		}
		h.killConns(false)
		h.gate.endBlackhole()
	})
	h.wg.Wait()
	return h.reg.close() // after every goroutine that could change the registry; commits what they queued
}

// Addr is the TLS MQTT listener's address.
func (h *Hub) Addr() string { return h.mqtts.address() }

// TCPAddr is the plain MQTT listener's address, "" when off.
func (h *Hub) TCPAddr() string { return listenerAddr(h.tcp) }

// WSAddr is the MQTT-over-WebSocket listener's address, "" when off.
func (h *Hub) WSAddr() string { return listenerAddr(h.ws) }

func listenerAddr(l *listener) string {
	if l == nil {
		return ""
	}
	return l.address()
}

// AMQPAddr is the AMQP-over-TLS listener's address, "" when off.
func (h *Hub) AMQPAddr() string { return listenerAddr(h.amqps) }

// AMQPWSAddr is the address serving AMQP over WebSocket, "" when off.
func (h *Hub) AMQPWSAddr() string {
	if h.cfg.AMQPWSAddr != "" && h.cfg.AMQPWSAddr == h.cfg.WSAddr {
		return h.WSAddr()
	}
	return listenerAddr(h.amqpws)
}

// ControlURL is the control API's base URL, "" when off.
func (h *Hub) ControlURL() string { return h.controlURL }

// CAFile is the path of the CA certificate clients must trust.
func (h *Hub) CAFile() string { return filepath.Join(h.cfg.Dir, caCertFile) }

// CAPool is the CA certificate as a pool, for Go clients' tls.Config.RootCAs.
func (h *Hub) CAPool() (*x509.CertPool, error) {
	pem, err := os.ReadFile(h.CAFile())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", h.CAFile())
	}
	return pool, nil
}

// HostName is the HostName of connection strings and DPS assignments: Config.HostName, else "localhost", or the
// listener's IP when it is a loopback address of its own (127.0.0.2, ...), with the port unless it is 8883. SDKs
// that dial fixed ports (8883, 5671, 443) and refuse a name without a dot get "127.0.0.1" through Config.HostName.
func (h *Hub) HostName() string {
	if h.cfg.HostName != "" {
		return h.cfg.HostName
	}
	host, port, _ := net.SplitHostPort(h.Addr())
	name := "localhost"
	if ownLoopback(host) {
		name = host
	}
	if port == "8883" {
		return name
	}
	return net.JoinHostPort(name, port)
}

// ownLoopback reports whether host is a loopback IP other than 127.0.0.1 and ::1, which name a hub of their own.
func ownLoopback(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback() && !ip.Equal(net.IPv4(127, 0, 0, 1)) && !ip.Equal(net.IPv6loopback)
}

// DeviceSpec is one device for AddDevices.
type DeviceSpec struct {
	ID          string
	Key         string // primary key, base64; "" draws a random 32-byte key
	Disabled    bool
	Auth        string   // "" or AuthSAS: keys; AuthSelfSigned: Thumbprints; AuthCA: a certificate of a CA of AddCA
	Thumbprints []string // AuthSelfSigned: one or two certificate thumbprints (SHA-1 or SHA-256, hex)
}

// AddDevice registers an enabled device; key "" draws a random 32-byte key.
func (h *Hub) AddDevice(id, key string) (Device, error) {
	return only(h.AddDevices([]DeviceSpec{{ID: id, Key: key}}))
}

// AddDevices registers devices in one registry commit, where AddDevice in a loop waits for a commit per device.
// Each spec is checked as AddDevice checks it; a bad one (or an id given twice) fails the batch and none is
// registered. The devices come back in the order of specs.
func (h *Hub) AddDevices(specs []DeviceSpec) ([]Device, error) {
	for _, s := range specs {
		if strings.Contains(s.ID, "/") {
			return nil, fmt.Errorf("%w: %q contains '/'", errDeviceIDInvalid, s.ID)
		}
	}
	return h.addIdentities(specs)
}

// AddModule registers an enabled module identity of an existing device.
func (h *Hub) AddModule(deviceID, moduleID, key string) (Device, error) {
	if err := validateDeviceID(moduleID); err != nil {
		return Device{}, fmt.Errorf("module: %w", err)
	}
	h.mu.Lock()
	_, ok := h.reg.devices[deviceID]
	h.mu.Unlock()
	if !ok {
		return Device{}, fmt.Errorf("%w: %s", ErrNotFound, deviceID)
	}
	return only(h.addIdentities([]DeviceSpec{{ID: deviceID + "/" + moduleID, Key: key}}))
}

// addIdentities registers identities all or none in one commit, so the disk always holds either none or all of
// them; a batch whose commit fails is forgotten.
func (h *Hub) addIdentities(specs []DeviceSpec) ([]Device, error) {
	h.mu.Lock()
	recs, err := h.reg.add(specs)
	if err != nil {
		h.mu.Unlock()
		return nil, err
	}
	saved := h.reg.persist(recs...)
	out := make([]Device, len(recs))
	for i, rec := range recs {
		out[i] = h.deviceLocked(rec)
	}
	h.mu.Unlock()
	if err := saved.wait(); err != nil {
		h.mu.Lock()
		h.reg.forget(recs)
		h.mu.Unlock()
		return nil, fmt.Errorf("saving registry: %w", err)
	}
	return out, nil
}

// only unwraps the answer to a batch of one.
func only(ds []Device, err error) (Device, error) {
	if err != nil {
		return Device{}, err
	}
	return ds[0], nil
}

// Device returns a registered identity ("device" or "device/module") with its connection state.
func (h *Hub) Device(id string) (Device, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rec, ok := h.reg.devices[id]
	if !ok {
		return Device{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return h.deviceLocked(rec), nil
}

// Devices lists every registered identity, sorted by id.
func (h *Hub) Devices() []Device {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Device
	for _, id := range h.reg.ids() {
		out = append(out, h.deviceLocked(h.reg.devices[id]))
	}
	return out
}

func (h *Hub) deviceLocked(rec *deviceRecord) Device {
	status := StatusEnabled
	if rec.Disabled {
		status = StatusDisabled
	}
	auth := rec.Auth
	if auth == "" {
		auth = AuthSAS
	}
	return Device{
		ID: rec.ID, PrimaryKey: rec.PrimaryKey, SecondaryKey: rec.SecondaryKey, Status: status,
		Connected: h.sessions[rec.ID] != nil, Connections: h.connects[rec.ID], PendingC2D: len(h.c2d[rec.ID]),
		Auth: auth, PrimaryThumbprint: nth(rec.Thumbprints, 0), SecondaryThumbprint: nth(rec.Thumbprints, 1),
	}
}

// ConnectionString returns the device's connection string with its primary key.
func (h *Hub) ConnectionString(id string) (string, error) {
	dev, err := h.Device(id)
	if err != nil {
		return "", err
	}
	return h.connectionString(dev), nil
}

func (h *Hub) connectionString(dev Device) string {
	d, m, _ := strings.Cut(dev.ID, "/")
	cs := "HostName=" + h.HostName() + ";DeviceId=" + d
	if m != "" {
		cs += ";ModuleId=" + m
	}
	if dev.Auth != AuthSAS {
		return cs + ";x509=true"
	}
	return cs + ";SharedAccessKey=" + dev.PrimaryKey
}

// SetDeviceEnabled enables or disables an identity; disabling drops its live connection, as IoT Hub does.
func (h *Hub) SetDeviceEnabled(id string, enabled bool) error {
	h.mu.Lock()
	rec, ok := h.reg.devices[id]
	if !ok {
		h.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	rec.Disabled = !enabled
	saved := h.reg.persist(rec)
	s := h.sessions[id]
	h.mu.Unlock()
	err := saved.wait()
	if !enabled && s != nil {
		h.dropSession(s, "device disabled", dropDisabled)
	}
	return err
}

// rotateKey gives an identity new primary and secondary keys and drops its live connection.
func (h *Hub) rotateKey(id string) error {
	h.mu.Lock()
	rec, ok := h.reg.devices[id]
	if !ok {
		h.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	rec.PrimaryKey, rec.SecondaryKey = randomKey(), randomKey()
	saved := h.reg.persist(rec)
	s := h.sessions[id]
	h.mu.Unlock()
	err := saved.wait()
	if s != nil {
		h.dropSession(s, "device keys rotated", dropAuth)
	}
	return err
}

// Messages returns every D2C message received from an identity, in arrival order.
func (h *Hub) Messages(id string) []D2CMessage { return h.rec.list(id) }

// WaitMessages waits until at least n messages arrived from the identity, or ctx ends.
func (h *Hub) WaitMessages(ctx context.Context, id string, n int) ([]D2CMessage, error) {
	return h.rec.wait(ctx, id, n)
}

// Events subscribes to connect, disconnect, reject, renew and fault events; call the func to unsubscribe. A
// subscriber
// that falls more than 1024 events behind loses the overflow.
func (h *Hub) Events() (<-chan Event, func()) { return h.events.subscribe() }

// authenticate checks a connect's credentials against the registry and the fault state.
func (h *Hub) authenticate(c credentials) (identity, time.Time, *rejection) {
	host, id, err := parseUsername(c.username, c.clientID)
	if err != nil {
		return id, time.Time{}, reject(rejectBadUsernameOrPassword, err.Error())
	}
	if !hostMatches(host, hostNames) {
		return id, time.Time{}, reject(rejectBadUsernameOrPassword, "user name host "+host+" is not this hub")
	}
	if c.password == "" && len(c.certs) > 0 {
		return h.authenticateCert(id, c)
	}
	if c.clientID != id.String() {
		return id, time.Time{}, reject(rejectIdentifier, fmt.Sprintf("client id %q does not match user name identity %q", c.clientID, id))
	}
	expiry, r := h.verifyToken(id, c.password)
	return id, expiry, r
}

// verifyToken checks a SAS token presented for id against the registry and the fault state, whatever the
// transport, and returns the token's expiry.
func (h *Hub) verifyToken(id identity, token string) (time.Time, *rejection) {
	tok, err := iothub.ParseSAS(token)
	if err != nil {
		return time.Time{}, reject(rejectBadUsernameOrPassword, "password: "+err.Error())
	}
	h.mu.Lock()
	rec, ok := h.reg.devices[id.String()]
	var keys []string
	var disabled bool
	if ok {
		keys, disabled = []string{rec.PrimaryKey, rec.SecondaryKey}, rec.Disabled
	}
	refusedUntil := h.refused[id.String()]
	h.mu.Unlock()
	if !ok {
		return time.Time{}, reject(rejectIdentifier, "device "+id.String()+" is not registered")
	}
	now := time.Now()
	if r := checkToken(tok, id, keys, hostNames, now, h.cfg.ClockSkew); r != nil {
		return time.Time{}, r
	}
	if disabled {
		return time.Time{}, reject(rejectDisabled, "device "+id.String()+" is disabled")
	}
	if now.Before(refusedUntil) {
		return time.Time{}, reject(rejectUnavailable, "fault injection: connects refused until "+refusedUntil.Format(time.RFC3339))
	}
	return tok.Expiry, nil
}

// attach makes l the identity's live session, dropping the previous one (one connection per device), and drops it
// once its token expires.
func (h *Hub) attach(id identity, l link, remote string, tokenExpiry time.Time) *session {
	key := id.String()
	s := &session{id: id, link: l, remote: remote, done: make(chan struct{}), expiry: tokenExpiry,
		renewed: make(chan struct{})}
	h.mu.Lock()
	old := h.sessions[key]
	h.sessions[key] = s
	h.live[l] = s
	h.connects[key]++
	if old != nil && old.dropReason == "" {
		old.dropReason = "replaced by a new connection of the same device"
	}
	h.mu.Unlock()
	if old != nil {
		old.link.drop(dropReplaced)
	}
	h.events.emit(Event{Kind: EventConnect, Device: key, Remote: remote})
	h.spawn(func() { h.expireSession(s) })
	return s
}

// expireSession drops s once its token expired, following renewals, until s ends.
func (h *Hub) expireSession(s *session) {
	for {
		h.mu.Lock()
		deadline, renewed := s.expiry.Add(h.cfg.ClockSkew+h.cfg.TokenGrace), s.renewed
		h.mu.Unlock()
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-t.C:
			h.dropSession(s, "sas token expired", dropAuth)
			return
		case <-renewed:
			t.Stop()
		case <-s.done:
			t.Stop()
			return
		case <-h.done:
			t.Stop()
			return
		}
	}
}

// renew gives a live session a new token expiry without reconnecting (AMQP's put-token on a live connection).
func (h *Hub) renew(s *session, expiry time.Time) {
	h.mu.Lock()
	s.expiry = expiry
	close(s.renewed)
	s.renewed = make(chan struct{})
	h.mu.Unlock()
	h.events.emit(Event{Kind: EventRenew, Device: s.id.String(), Remote: s.remote,
		Reason: "token valid until " + expiry.UTC().Format(time.RFC3339)})
}

// detach forgets a link that is gone; cause is the transport's view, used when the hub did not end it itself.
func (h *Hub) detach(l link, cause string) {
	h.mu.Lock()
	s, ok := h.live[l]
	if !ok {
		h.mu.Unlock()
		return
	}
	delete(h.live, l)
	key := s.id.String()
	if h.sessions[key] == s {
		delete(h.sessions, key)
	}
	for _, it := range h.c2d[key] {
		if it.sentOn == s {
			it.sentOn = nil
		}
	}
	reason := s.dropReason
	h.mu.Unlock()
	close(s.done)
	if reason == "" {
		reason = cause
	}
	h.events.emit(Event{Kind: EventDisconnect, Device: key, Remote: s.remote, Reason: reason})
}

// dropSession ends a session for reason, unless something else ended it first.
func (h *Hub) dropSession(s *session, reason string, cause dropCause) {
	h.markDrop(s, reason)
	s.link.drop(cause)
}

// markDrop records why the hub is about to end a session.
func (h *Hub) markDrop(s *session, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.dropReason == "" {
		s.dropReason = reason
	}
}

func (h *Hub) sessionOf(id string) *session {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[id]
}

// receiveD2C records a telemetry message and acts on Azure's fault-injection properties.
func (h *Hub) receiveD2C(id identity, m D2CMessage) {
	h.rec.add(id.String(), m)
	if op := m.Properties[faultPropType]; op != "" {
		h.injectFromMessage(id.String(), m.Properties)
	}
}

// C2DMessage is a cloud-to-device message.
type C2DMessage struct {
	Payload         []byte
	MessageID       string // generated when empty
	CorrelationID   string
	ContentType     string
	ContentEncoding string
	Properties      map[string]string
}

// c2dItem is a queued C2D message; sentOn is the session it is in flight on, nil when waiting.
type c2dItem struct {
	msg    C2DMessage
	sentOn *session
}

// SendC2D queues a C2D message; it is delivered at QoS 1 now if the device listens, else when it reconnects, and
// stays queued until the device acknowledges it.
func (h *Hub) SendC2D(id string, m C2DMessage) error {
	if m.MessageID == "" {
		m.MessageID = newMessageID()
	}
	h.mu.Lock()
	if _, ok := h.reg.devices[id]; !ok {
		h.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	h.c2d[id] = append(h.c2d[id], &c2dItem{msg: m})
	h.mu.Unlock()
	h.flushC2D(id)
	return nil
}

// flushC2D sends the identity's queued C2D messages that are not in flight on its live session.
func (h *Hub) flushC2D(id string) {
	s := h.sessionOf(id)
	if s == nil || !s.link.listensC2D() {
		return
	}
	h.mu.Lock()
	var batch []*c2dItem
	for _, it := range h.c2d[id] {
		if it.sentOn != s {
			it.sentOn = s
			batch = append(batch, it)
		}
	}
	h.mu.Unlock()
	for _, it := range batch {
		if err := s.link.sendC2D(it.msg); err != nil {
			h.mu.Lock()
			if it.sentOn == s {
				it.sentOn = nil
			}
			h.mu.Unlock()
		}
	}
}

// c2dAbandoned puts a C2D message the device gave back in the queue again and redelivers it.
func (h *Hub) c2dAbandoned(id, messageID string) {
	h.mu.Lock()
	for _, it := range h.c2d[id] {
		if it.msg.MessageID == messageID {
			it.sentOn = nil
		}
	}
	h.mu.Unlock()
	h.flushC2D(id)
}

// c2dCompleted removes an acknowledged C2D message from the queue.
func (h *Hub) c2dCompleted(id, messageID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.c2d[id]
	for i, it := range q {
		if it.msg.MessageID == messageID && it.sentOn != nil {
			h.c2d[id] = append(q[:i:i], q[i+1:]...)
			close(h.c2dAcked)
			h.c2dAcked = make(chan struct{})
			return
		}
	}
}

// PendingC2D is the number of C2D messages queued for an identity and not yet acknowledged.
func (h *Hub) PendingC2D(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.c2d[id])
}

// WaitC2DDelivered waits until every C2D message queued for the identity has been acknowledged, or ctx ends.
func (h *Hub) WaitC2DDelivered(ctx context.Context, id string) error {
	for {
		h.mu.Lock()
		pending, acked := len(h.c2d[id]), h.c2dAcked
		h.mu.Unlock()
		if pending == 0 {
			return nil
		}
		select {
		case <-acked:
		case <-ctx.Done():
			return fmt.Errorf("%d C2D messages for %s not acknowledged: %w", pending, id, ctx.Err())
		}
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func newMessageID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Twin returns the identity's twin document {"desired":{..,"$version":n},"reported":{..,"$version":n}}.
func (h *Hub) Twin(id string) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rec, ok := h.reg.devices[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return rec.Twin.document(), nil
}

// UpdateDesired merges a desired-properties patch, notifies the device if it listens, and returns the twin.
func (h *Hub) UpdateDesired(id string, patch []byte) ([]byte, error) {
	h.mu.Lock()
	rec, ok := h.reg.devices[id]
	if !ok {
		h.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	version, note, err := rec.Twin.patchDesired(patch)
	if err != nil {
		h.mu.Unlock()
		return nil, err
	}
	doc := rec.Twin.document()
	saved := h.reg.persist(rec)
	s := h.sessions[id]
	h.mu.Unlock()
	saveErr := saved.wait()
	if s != nil && saveErr == nil { // a device never holds a desired version that a restart would forget
		s.link.sendDesired(version, note)
	}
	return doc, saveErr
}

// twinGet answers a device's twin GET.
func (h *Hub) twinGet(id identity) []byte {
	doc, err := h.Twin(id.String())
	if err != nil {
		return []byte("{}")
	}
	return doc
}

// errNotSaved wraps a failed commit of a reported patch, which the device must not see acknowledged.
var errNotSaved = errors.New("saving registry")

// patchReported merges a device's reported-properties patch and returns the new version once it is durable; the
// error is errNotSaved's when the commit failed, otherwise the patch was bad.
func (h *Hub) patchReported(id identity, body []byte) (int, error) {
	h.mu.Lock()
	rec, ok := h.reg.devices[id.String()]
	if !ok {
		h.mu.Unlock()
		return 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	v, err := rec.Twin.patchReported(body)
	if err != nil {
		h.mu.Unlock()
		return 0, err
	}
	saved := h.reg.persist(rec)
	h.mu.Unlock()
	if err := saved.wait(); err != nil {
		h.events.logf("saving registry: %v", err)
		return 0, fmt.Errorf("%w: %v", errNotSaved, err)
	}
	return v, nil
}

// reportedAnswer applies a device's reported-properties patch and returns the twin response: 204 with the new
// version, 400 for a bad patch, 500 when it could not be saved.
func (h *Hub) reportedAnswer(id identity, body []byte) (status, version int, answer []byte) {
	v, err := h.patchReported(id, body)
	switch {
	case errors.Is(err, errNotSaved):
		return 500, 0, []byte(strconv.Quote(err.Error()))
	case err != nil:
		return 400, 0, []byte(strconv.Quote(err.Error()))
	}
	return 204, v, nil
}

// MethodResult is a device's answer to a direct method.
type MethodResult struct {
	Status  int
	Payload []byte
}

// InvokeMethod calls a direct method on a connected device and waits for its answer until ctx ends.
func (h *Hub) InvokeMethod(ctx context.Context, id, name string, payload []byte) (MethodResult, error) {
	h.mu.Lock()
	s := h.sessions[id]
	h.nextRID++
	rid := strconv.FormatUint(h.nextRID, 16)
	answer := make(chan MethodResult, 1)
	h.methods[rid] = answer
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.methods, rid)
		h.mu.Unlock()
	}()
	if s == nil || !s.link.sendMethod(name, rid, payload) {
		return MethodResult{}, fmt.Errorf("%w: %s", ErrNotConnected, id)
	}
	select {
	case r := <-answer:
		return r, nil
	case <-ctx.Done():
		return MethodResult{}, fmt.Errorf("%w: method %s on %s: %v", ErrMethodTimeout, name, id, ctx.Err())
	case <-h.done:
		return MethodResult{}, ErrClosed
	}
}

// methodResponse delivers a device's method answer to the waiting caller, if any.
func (h *Hub) methodResponse(rid string, status int, payload []byte) {
	h.mu.Lock()
	answer := h.methods[rid]
	h.mu.Unlock()
	if answer != nil {
		select {
		case answer <- MethodResult{Status: status, Payload: payload}:
		default:
		}
	}
}
