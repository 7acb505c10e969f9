package core

// This file is the engine's public contract, used by capi/ and the tests (doc.go describes the engine behind it);
// signatures here change only together with capi/.

import (
	"time"

	"github.com/iotconn/iotconn/core/clock"
	"github.com/iotconn/iotconn/core/retry"
)

// DispatchMode chooses which thread runs the application's handlers.
type DispatchMode int

const (
	// DispatchThread: a goroutine owned by the client runs the handlers (the C default).
	DispatchThread DispatchMode = 0
	// DispatchPoll: handlers run only inside Poll, on the caller's thread (Python and C# bindings).
	DispatchPoll DispatchMode = 1
)

// TransportKind selects the wire protocol.
type TransportKind int

const (
	TransportMQTT   TransportKind = 0
	TransportMQTTWS TransportKind = 1 // MQTT over WebSocket (wss://host/$iothub/websocket)
	TransportAMQP   TransportKind = 2 // AMQP 1.0 over TLS, port 5671
	TransportAMQPWS TransportKind = 3 // AMQP over WebSocket (wss://host/$iothub/websocket, AMQPWSB10)
)

// Options configure a client. The zero value of every field means "the default" noted beside it.
type Options struct {
	Transport        TransportKind
	CAFile           string        // PEM file of trusted roots; "" and CAPEM empty = system roots
	CAPEM            []byte        // PEM bytes of trusted roots, added to CAFile's
	CertFile         string        // X.509 client certificate (PEM), with x509=true in the connection string
	KeyFile          string        // its private key (PEM)
	KeepAlive        time.Duration // default 240 s, capped at 1177 s
	SASLifetime      time.Duration // default 1 h; at least MinSASLifetime
	SASRenewMargin   time.Duration // renew this long before expiry; default 10 % of the lifetime, at least MinSASRenewMargin
	QueueMaxMessages int           // outbound queue bound; default 10000
	QueueMaxBytes    int64         // default 64 MiB
	OperationTimeout time.Duration // connect and send give up after this; default 4 min
	Dispatch         DispatchMode
	// Dispatcher, when set, runs this client's handlers together with other clients' (see Dispatcher); its mode
	// is the client's, and Dispatch may only repeat it.
	Dispatcher  *Dispatcher
	RetryPolicy retry.Policy // default retry.DefaultExponential()
	Clock       clock.Clock  // default the real clock; tests inject a fake

	// BackoffResetAfter: the retry policy's attempt count, and with it the back-off, starts over only once a link
	// stayed up this long; a link lost sooner counts as one more failed attempt. Default 30 s.
	BackoffResetAfter time.Duration
	// ReconnectSpread is the fleet hint: how long the whole fleet sharing this device's hub takes to be admitted,
	// about 1.1 x devices / the hub's connect rate (IoT Hub S1: 100/s per unit; 10 000 devices: 110 s). The first
	// retry after a lost link or failed connect then waits the policy's delay plus U[0, ReconnectSpread], so a
	// fleet that lost its hub together reconnects spread evenly over the window instead of at once; later retries
	// wait at least a draw from [window, 1.05 x window], or after a throttling refusal the throttling schedule
	// alone (the device is where the hub admits now). A server's retry-after still wins. Default 0: off.
	ReconnectSpread time.Duration
	// Admission, when set, is a connect budget this client shares with others of the process (see Admission):
	// each connection attempt waits for its token.
	Admission *Admission

	// AMQPPool, with an AMQP transport, lets this client share AMQP connections with the process's other clients
	// that set the same value: at most AMQPPool devices on each (above MaxAMQPPool: MaxAMQPPool), one CBS link per
	// connection and one session per device. A connection that fails fails every device on it at once; each then
	// reconnects on its own retry policy, on a new connection. 0 (the default): a connection of its own.
	AMQPPool int

	// QueueOverflow is what Send does when the queue is at a limit; default OverflowReject.
	QueueOverflow OverflowPolicy
	// shortTokensForTests waives the SAS floors (MinSASLifetime, ...) so that tests against the emulator see
	// renewals within seconds.
	shortTokensForTests bool

	// QueueDir turns on durable mode: Send returns only once the message is on disk in this directory (created
	// if missing), and the next client created on the directory sends what was not delivered. "" = memory only.
	QueueDir string
}

// OverflowPolicy chooses what Send does when the outbound queue is at its count or byte limit.
type OverflowPolicy int

const (
	// OverflowReject: Send returns CodeQueueFull (the default).
	OverflowReject OverflowPolicy = 0
	// OverflowDropOldest: the oldest queued messages not yet handed to the transport complete SendFailed with
	// CodeDropped until the new one fits.
	OverflowDropOldest OverflowPolicy = 1
)

// Property is one application property of a message; order is kept on the wire.
type Property struct {
	Key, Value string
}

// Message is a device-to-cloud (send) or cloud-to-device (received) message.
type Message struct {
	Payload         []byte
	MessageID       string // $.mid; the engine generates a unique one when empty
	CorrelationID   string // $.cid
	ContentType     string // $.ct
	ContentEncoding string // $.ce
	Properties      []Property
	TTL             time.Duration // time-to-live from Send; 0 = Options.OperationTimeout
}

// SendResult is how a send ended; every accepted message gets exactly one.
type SendResult int

const (
	SendDelivered SendResult = 0 // the hub acknowledged it (PUBACK)
	SendExpired   SendResult = 1 // its time-to-live passed first; Err is CodeInDoubt if it was sent unacknowledged
	SendFailed    SendResult = 2 // a fatal error or close ended it; Err says which
)

// Handlers are the application's callbacks. Any may be nil. They run on the dispatch thread chosen by
// Options.Dispatch and may call any method of the same client. Each link subscribes to what the handlers set when
// it is made ask for, so set them before Connect.
type Handlers struct {
	OnStatus       func(status ConnectionStatus, reason ConnectionStatusChangeReason)
	OnMessage      func(msg *Message)
	OnSendComplete func(id uint64, result SendResult, err *Error) // err is nil when delivered
	OnLog          func(level LogLevel, msg string)

	// Twins. Setting any of these makes every link subscribe to twin answers and desired patches (a Basic-tier
	// hub has no twins and drops a device that subscribes to them); GetTwin and PatchReported need one.
	//
	// OnTwin completes GetTwin: twin is the whole twin, {"desired":{...,"$version":n},"reported":{...}} as the
	// hub sent it, nil with err.
	OnTwin func(id uint64, twin []byte, err *Error)
	// OnReported completes PatchReported: version is the twin's new reported $version, 0 with err.
	OnReported func(id uint64, version int64, err *Error)
	// OnDesired delivers desired properties with their $version (also inside patch, as "$version"), each version
	// at most once, in increasing order: the hub's patches, and after every connect (first, after a lost link, after
	// a token renewal) the whole desired section when its version moved past the last one delivered, so that
	// nothing changed while offline is missed. A patch not newer than the last version delivered is dropped.
	OnDesired func(version int64, patch []byte)

	// OnMethod delivers a direct method call; setting it makes every link subscribe to method calls. Answer it
	// with RespondMethod(requestID, ...), from the handler or later, on any goroutine: calls keep coming while
	// earlier ones wait for their response. The hub forgets a call when its link ends.
	OnMethod func(requestID string, name string, payload []byte)
}

// LogLevel of an OnLog event.
type LogLevel int

const (
	LogError LogLevel = 0
	LogWarn  LogLevel = 1
	LogInfo  LogLevel = 2
	LogDebug LogLevel = 3
)

// The Client methods below are safe for concurrent use from any goroutine, including from inside handlers.
//
//	NewClient(connectionString string, opts Options) (*Client, error)  // validates; does not connect
//	NewProvisionedClient(p Provisioning, opts Options) (*Client, error) // finds its hub through DPS (provisioned.go)
//	(*Client).Registrations() int                 // DPS registrations this client made (billable); 0 without DPS
//	(*Client).Assignment() (hub, deviceID string) // the hub a provisioned client connects to; "" before one
//	RegisterDevice(ctx, p Provisioning, opts Options) (*provisioning.Result, error) // one registration, no client
//	(*Client).SetHandlers(h Handlers)                                   // before Connect; later calls replace them
//	(*Client).SetRetryPolicy(p retry.Policy) error
//	(*Client).Connect(ctx context.Context) error  // blocks until Connected, a fatal error, the policy giving up,
//	                                              // ctx, or OperationTimeout; the engine then keeps the link up
//	(*Client).CancelConnect()                     // Connect calls in progress return CodeCanceled
//	(*Client).Send(msg *Message) (id uint64, err error) // returns at once; ids start at 1 and increase
//	                                                    // and copies what it keeps: msg may be reused at once
//	(*Client).GetTwin() (id uint64, err error)          // returns at once; OnTwin(id, ...) follows once
//	(*Client).PatchReported(patch []byte) (id uint64, err error) // queued like a message; OnReported(id, ...)
//	                                                    // follows once; one id sequence numbers messages,
//	                                                    // patches and GETs
//	(*Client).RespondMethod(requestID string, status int, payload []byte) error // at most once per call;
//	                                                    // returns once written to the call's link, or why not
//	(*Client).Recovered() int // durable mode: messages and patches loaded from QueueDir; ids 1..Recovered()
//	(*Client).Poll(timeout time.Duration) (dispatched int, err error) // DispatchPoll only; CodeState otherwise
//	(*Client).Status() (ConnectionStatus, ConnectionStatusChangeReason)
//	(*Client).Close() error // ends in Disabled/Client_Close; pending sends, patches and requests end with
//	                        // CodeClosed (durable ones stay on disk); idempotent; never waits for a handler,
//	                        // so handlers may call it
//	NewDispatcher(mode DispatchMode) (*Dispatcher, error) // one dispatch goroutine or polling thread for many clients
//	(*Dispatcher).Poll(timeout time.Duration) (dispatched int, err error) // DispatchPoll only; CodeClosed at the end
//	(*Dispatcher).Close() error // CodeState while an attached client is not closed
//	(*Client).Done() <-chan struct{} // closed once the last handler returned (thread mode) or the loop ended
//
// Errors returned are *Error.
