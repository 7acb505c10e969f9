// Package provisioning is the Device Provisioning Service's device client: one registration over MQTT/TLS
// (register, then poll the operation with DPS's retry-after until it is assigned), the attestations (an individual
// symmetric key, a group key the device key is derived from, an X.509 certificate), typed errors that say whether
// to retry, and the assignment cache a device reuses after a restart instead of registering again. The wire names
// are core/iothub's (dps.go), shared with hubsim's DPS. The engine's provisioned client (core/provisioned.go) runs
// RegisterOnce inside its supervisor, under its one retry policy; Register is the standalone client's loop.
package provisioning

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/iotconn/iotconn/core/auth"
	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/iothub"
	"github.com/iotconn/iotconn/core/retry"
	"github.com/iotconn/iotconn/core/transport"
	"github.com/iotconn/iotconn/core/transport/mqtt"
)

// Defaults; Config's zero values mean these.
const (
	// DefaultPollInterval is the wait between status polls when DPS names no retry-after (it names 3 s).
	DefaultPollInterval = 3 * time.Second
	// DefaultTimeout bounds Register, all of its attempts together.
	DefaultTimeout = 4 * time.Minute
	// attemptTimeout bounds one registration: its connect, the register request and the polls.
	attemptTimeout = 2 * time.Minute
	// maxPolls bounds the status polls of one operation (DPS admits 5 every 10 s a device).
	maxPolls = 40
	// answerTimeout is how long a request waits for DPS's answer before the attempt fails as a timeout.
	answerTimeout = 30 * time.Second
)

// Config says whom to register and how. Exactly one attestation: SymmetricKey, GroupKey or CertFile + KeyFile.
type Config struct {
	Host           string // the global device endpoint host[:port], e.g. global.azure-devices-provisioning.net
	IDScope        string
	RegistrationID string
	SymmetricKey   string // an individual enrollment's key (base64)
	GroupKey       string // an enrollment group's key: the device's key is derived from it (DeriveDeviceKey)
	CertFile       string // X.509: the device certificate (PEM), whose CN is the registration id
	KeyFile        string // its private key (PEM)
	Payload        []byte // optional JSON sent with the registration ("payload"); nil = none
	TLS            *tls.Config
	WebSocket      bool          // MQTT over WebSocket on port 443
	SASLifetime    time.Duration // of the registration token; default 1 h
	Clock          clock.Clock   // default the real clock
	// Policy decides Register's retries of transient failures; a retry-after DPS names wins over its delay.
	// Default retry.DefaultExponential().
	Policy  retry.Policy
	Timeout time.Duration // Register's bound, every attempt included; default DefaultTimeout
}

// Result is an assignment: where the device now belongs.
type Result struct {
	RegistrationID string          `json:"registrationId"`
	AssignedHub    string          `json:"assignedHub"`
	DeviceID       string          `json:"deviceId"`
	Status         string          `json:"status"`
	Substatus      string          `json:"substatus,omitempty"`
	CreatedAt      string          `json:"createdDateTimeUtc,omitempty"`
	LastUpdated    string          `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag           string          `json:"etag,omitempty"`
	Payload        json.RawMessage `json:"payload,omitempty"` // a custom allocation's answer, if any
	ErrorCode      int             `json:"errorCode,omitempty"`
	ErrorMessage   string          `json:"errorMessage,omitempty"`
}

// Error is a failed registration. Status is DPS's answer (401, 404, 429, 5xx, ...), 0 when the connection itself
// failed (then Err is the transport's *transport.Error).
type Error struct {
	Status     int
	ErrorCode  int // DPS's errorCode, e.g. 401002; 0 when none
	Message    string
	RetryAfter time.Duration // DPS's retry-after; 0 when none
	Err        error
}

func (e *Error) Error() string {
	switch {
	case e.Status == 0:
		return "DPS registration: " + e.Message
	case e.ErrorCode != 0:
		return fmt.Sprintf("DPS registration: %d (errorCode %d): %s", e.Status, e.ErrorCode, e.Message)
	}
	return fmt.Sprintf("DPS registration: %d: %s", e.Status, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Kind is the failure as a transport kind, so the engine classifies it as it does a hub's: 401/403 KindAuth,
// 404 KindDeviceNotFound, a disabled enrollment KindDeviceDisabled, 429 KindThrottled, 5xx KindServerBusy,
// another answer KindProtocol; a connection failure keeps its own kind.
func (e *Error) Kind() transport.Kind {
	switch {
	case e.Status == 0:
		return transport.KindOf(e.Err)
	case e.Status == 401 || e.Status == 403:
		if e.ErrorCode == errorCodeDisabled {
			return transport.KindDeviceDisabled
		}
		return transport.KindAuth
	case e.Status == 404:
		return transport.KindDeviceNotFound
	case e.Status == 429:
		return transport.KindThrottled
	case e.Status >= 500:
		return transport.KindServerBusy
	}
	return transport.KindProtocol
}

// Transient says whether registering again may succeed: 429, 5xx and connection failures that are not about the
// credential or DPS's certificate. 401, 403, 404, 400 and a disabled or failed registration are final for this
// registration.
func (e *Error) Transient() bool {
	if e.Status != 0 {
		return e.Status == 429 || e.Status >= 500
	}
	switch transport.KindOf(e.Err) {
	case transport.KindAuth, transport.KindDeviceNotFound, transport.KindDeviceDisabled, transport.KindUntrusted:
		return false
	}
	return true
}

// TransportError is e as the engine's classification takes it: its kind and DPS's retry-after.
func (e *Error) TransportError() *transport.Error {
	return &transport.Error{Kind: e.Kind(), Op: "provision", RetryAfter: e.RetryAfter, Err: e}
}

// errorCodeDisabled is the errorCode of a disabled enrollment's registration.
const errorCodeDisabled = 401010

// Client registers one device. Safe for concurrent use; registrations of one Client do not overlap in DPS's
// eyes only if the caller does not run them together.
type Client struct {
	cfg       Config
	deviceKey string // the key the device signs with: the individual key, or the one derived from the group key
	tls       *tls.Config
	rid       atomic.Uint64
}

// New validates cfg and returns a client; it does not connect.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.Host == "":
		return nil, errors.New("provisioning host is empty")
	case cfg.IDScope == "":
		return nil, errors.New("id scope is empty")
	case cfg.RegistrationID == "":
		return nil, errors.New("registration id is empty")
	case len(cfg.RegistrationID) > 128:
		return nil, fmt.Errorf("registration id is %d characters; DPS allows 128", len(cfg.RegistrationID))
	case !validRegistrationID(cfg.RegistrationID):
		return nil, fmt.Errorf("registration id %q: only letters, digits and - . _ : are allowed", cfg.RegistrationID)
	case cfg.SASLifetime < 0 || cfg.Timeout < 0:
		return nil, errors.New("durations must not be negative")
	case len(cfg.Payload) > 0 && !json.Valid(cfg.Payload):
		return nil, errors.New("payload is not valid JSON")
	}
	x509 := cfg.CertFile != "" || cfg.KeyFile != ""
	n := 0
	for _, set := range []bool{cfg.SymmetricKey != "", cfg.GroupKey != "", x509} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("give exactly one attestation: a symmetric key, a group key, or a certificate and key file")
	}
	c := &Client{cfg: cfg}
	if c.cfg.SASLifetime == 0 {
		c.cfg.SASLifetime = iothub.DefaultSASLifetime
	}
	if c.cfg.Timeout == 0 {
		c.cfg.Timeout = DefaultTimeout
	}
	if c.cfg.Clock == nil {
		c.cfg.Clock = clock.Real()
	}
	if c.cfg.Policy == nil {
		c.cfg.Policy = retry.DefaultExponential()
	}
	if e, ok := c.cfg.Policy.(*retry.Exponential); ok {
		c.cfg.Policy = e.Clone()
	}
	c.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLS != nil {
		c.tls = cfg.TLS.Clone()
	}
	c.tls.ServerName = "" // the transport sets DPS's host; a hub's name given here would fail verification
	switch {
	case cfg.GroupKey != "":
		key, err := iothub.DeriveDeviceKey(cfg.GroupKey, cfg.RegistrationID)
		if err != nil {
			return nil, err
		}
		c.deviceKey = key
	case cfg.SymmetricKey != "":
		c.deviceKey = cfg.SymmetricKey
	default:
		files, err := auth.NewCertificateFiles(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		c.tls.Certificates, c.tls.GetClientCertificate = nil, files.GetClientCertificate
	}
	if c.deviceKey != "" {
		if _, err := iothub.BuildSAS("x", c.deviceKey, "", time.Unix(1, 0)); err != nil {
			return nil, fmt.Errorf("symmetric key: %w", err)
		}
	}
	return c, nil
}

func validRegistrationID(id string) bool {
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_', r == ':':
		default:
			return false
		}
	}
	return true
}

// DeviceKey is the key the device signs its hub tokens with after assignment: the individual enrollment's key or
// the one derived from the group key; "" with X.509.
func (c *Client) DeviceKey() string { return c.deviceKey }

// X509 reports whether the device attests with a certificate.
func (c *Client) X509() bool { return c.deviceKey == "" }

// Config returns the configuration with its defaults applied.
func (c *Client) Config() Config { return c.cfg }

// answer is one response DPS published.
type answer struct {
	status, retryAfter int
	rid                string
	body               []byte
}

// operation is DPS's answer body: an operation in progress or done, or an error.
type operation struct {
	OperationID       string  `json:"operationId"`
	Status            string  `json:"status"`
	RegistrationState *Result `json:"registrationState"`
	ErrorCode         int     `json:"errorCode"`
	Message           string  `json:"message"`
}

// RegisterOnce makes one registration: connect, register, poll until DPS says assigned, and returns the
// assignment or an *Error. It retries nothing: every failure is returned at once, with DPS's retry-after when it
// named one. ctx (and at most 2 minutes) bounds it.
func (c *Client) RegisterOnce(ctx context.Context) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	token := ""
	if c.deviceKey != "" {
		var err error
		exp := c.cfg.Clock.Now().Add(c.cfg.SASLifetime)
		token, err = iothub.BuildSAS(iothub.DPSResource(c.cfg.IDScope, c.cfg.RegistrationID), c.deviceKey,
			iothub.DPSSASKeyName, exp)
		if err != nil {
			return nil, &Error{Message: err.Error(), Err: &transport.Error{Kind: transport.KindAuth, Op: "token", Err: err}}
		}
	}
	answers := make(chan answer, 8)
	conn, err := mqtt.DialDPS(ctx, mqtt.DPSParams{
		Host: c.cfg.Host, IDScope: c.cfg.IDScope, RegistrationID: c.cfg.RegistrationID, Token: token, TLS: c.tls,
		WebSocket: c.cfg.WebSocket,
		OnResponse: func(topic string, payload []byte) {
			status, rid, retryAfter, ok := iothub.ParseDPSResponse(topic)
			if !ok {
				return
			}
			select {
			case answers <- answer{status, retryAfter, rid, payload}:
			default: // nothing waits for more than one answer at a time: a surplus one is stale
			}
		},
	})
	if err != nil {
		return nil, &Error{Message: "connect: " + err.Error(), Err: err}
	}
	defer conn.Close()

	body := map[string]any{"registrationId": c.cfg.RegistrationID}
	if len(c.cfg.Payload) > 0 {
		body["payload"] = json.RawMessage(c.cfg.Payload)
	}
	req, _ := json.Marshal(body) // strings and valid JSON only
	a, err := c.request(ctx, conn, answers, func(rid string) string { return iothub.DPSRegisterTopic(rid) }, req)
	for polls := 0; ; polls++ {
		if err != nil {
			return nil, err
		}
		op, err := c.read(a)
		if err != nil {
			return nil, err
		}
		if a.status == 200 {
			return assigned(op)
		}
		if polls == maxPolls {
			return nil, &Error{Status: 202, Message: fmt.Sprintf("still %q after %d status polls", op.Status, polls),
				Err: &transport.Error{Kind: transport.KindTimeout, Op: "provision"}}
		}
		if op.OperationID == "" {
			return nil, &Error{Status: a.status, Message: "202 without an operation id",
				Err: &transport.Error{Kind: transport.KindProtocol, Op: "provision"}}
		}
		wait := DefaultPollInterval
		if a.retryAfter > 0 {
			wait = time.Duration(a.retryAfter) * time.Second
		}
		if err := c.sleep(ctx, conn, wait); err != nil {
			return nil, err
		}
		opID := op.OperationID
		a, err = c.request(ctx, conn, answers, func(rid string) string { return iothub.DPSStatusTopic(rid, opID) },
			[]byte(" "))
	}
}

// request publishes one request and waits for its answer (answers to other request ids are stale and skipped).
func (c *Client) request(ctx context.Context, conn *mqtt.DPSConn, answers <-chan answer, topic func(string) string,
	body []byte) (answer, error) {
	rid := strconv.FormatUint(c.rid.Add(1), 10)
	if err := conn.Publish(ctx, topic(rid), body); err != nil {
		return answer{}, &Error{Message: "request: " + err.Error(), Err: err}
	}
	t := c.cfg.Clock.NewTimer(answerTimeout)
	defer t.Stop()
	for {
		select {
		case a := <-answers:
			if a.rid == rid {
				return a, nil
			}
		case <-conn.Down():
			err := conn.Err()
			return answer{}, &Error{Message: "connection lost: " + err.Error(), Err: err}
		case <-t.C():
			return answer{}, &Error{Message: fmt.Sprintf("no answer within %v", answerTimeout),
				Err: &transport.Error{Kind: transport.KindTimeout, Op: "provision"}}
		case <-ctx.Done():
			return answer{}, ctxError(ctx)
		}
	}
}

func (c *Client) sleep(ctx context.Context, conn *mqtt.DPSConn, d time.Duration) error {
	t := c.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-conn.Down():
		err := conn.Err()
		return &Error{Message: "connection lost: " + err.Error(), Err: err}
	case <-ctx.Done():
		return ctxError(ctx)
	}
}

func ctxError(ctx context.Context) *Error {
	return &Error{Message: ctx.Err().Error(), Err: &transport.Error{Kind: transport.KindTimeout, Op: "provision",
		Err: ctx.Err()}}
}

// read decodes an answer: 200 and 202 carry an operation, anything else an error.
func (c *Client) read(a answer) (*operation, error) {
	var op operation
	if err := json.Unmarshal(a.body, &op); err != nil && (a.status == 200 || a.status == 202) {
		return nil, &Error{Status: a.status, Message: "answer is not JSON: " + err.Error(),
			Err: &transport.Error{Kind: transport.KindProtocol, Op: "provision"}}
	}
	if a.status == 200 || a.status == 202 {
		return &op, nil
	}
	e := &Error{Status: a.status, ErrorCode: op.ErrorCode, Message: op.Message}
	if e.Message == "" {
		e.Message = string(a.body)
	}
	if a.retryAfter > 0 {
		e.RetryAfter = time.Duration(a.retryAfter) * time.Second
	}
	return nil, e
}

// assigned turns a finished operation into the assignment, or the error of a registration that ended otherwise.
func assigned(op *operation) (*Result, error) {
	st := op.RegistrationState
	switch {
	case st == nil:
		return nil, &Error{Status: 200, Message: fmt.Sprintf("operation %q: no registration state", op.Status),
			Err: &transport.Error{Kind: transport.KindProtocol, Op: "provision"}}
	case st.Status == "assigned" && st.AssignedHub != "" && st.DeviceID != "":
		return st, nil
	case st.Status == "disabled":
		return nil, &Error{Status: 401, ErrorCode: errorCodeDisabled, Message: "enrollment disabled: " + st.ErrorMessage}
	}
	return nil, &Error{Status: 400, ErrorCode: st.ErrorCode, Message: fmt.Sprintf("registration %s: %s", st.Status,
		st.ErrorMessage)}
}

// Register registers, retrying transient failures (429, 5xx, a lost or refused connection) as the policy says,
// with DPS's retry-after when it names one, until it is assigned, a failure is final, the policy gives up, or
// ctx or the Timeout ends.
func (c *Client) Register(ctx context.Context) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	for n := 1; ; n++ {
		res, err := c.RegisterOnce(ctx)
		if err == nil {
			return res, nil
		}
		var e *Error
		if !errors.As(err, &e) || !e.Transient() || ctx.Err() != nil {
			return nil, err
		}
		again, delay := c.cfg.Policy.ShouldRetry(n, e)
		if !again {
			return nil, err
		}
		if e.RetryAfter > 0 {
			delay = e.RetryAfter
		}
		t := c.cfg.Clock.NewTimer(delay)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w; gave up: %v", err, ctx.Err())
		}
	}
}
