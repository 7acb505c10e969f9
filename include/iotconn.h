/*
 * iotconn.h - the C interface of libiotconn, one Azure IoT Hub device-connectivity engine.
 *
 * This header is written by hand and is the source of truth for every number in it: the Go engine, the Python
 * and C# bindings each have a test that compares their names and values with this file.
 *
 * Conventions
 *   - Functions return int: 0 (IOTCONN_OK) or more on success, a negative IOTCONN_E* code on failure. After a
 *     failure, iotconn_last_error() on the same thread says what went wrong.
 *   - Structs passed in (options, messages, retry policies) start with a `size` field: set it with the
 *     matching *_INIT macro so that fields appended later keep old programs working.
 *   - Pointers passed in are borrowed: the library copies what it keeps before the call returns, unless a
 *     function says otherwise. Pointers handed to callbacks are valid only until the callback returns.
 *   - Callbacks take a trailing `void *user`, the value given when they were registered.
 *   - Every function is safe to call from any thread, and from inside the library's callbacks, unless its
 *     comment says otherwise.
 *
 * Limits of any Go shared library: do not fork() after loading it (posix_spawn and fork+exec are fine), do not
 * unload it (dlclose), and load at most one Go runtime per process.
 */
#ifndef IOTCONN_H
#define IOTCONN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version ------------------------------------------------------------------------------------------------ */

#define IOTCONN_VERSION_MAJOR 1
#define IOTCONN_VERSION_MINOR 1
#define IOTCONN_VERSION_PATCH 0
#define IOTCONN_VERSION_STRING "1.1.0"
/* One number for compile-time comparisons: 0xMMmmpp. */
#define IOTCONN_VERSION_NUMBER \
	((IOTCONN_VERSION_MAJOR << 16) | (IOTCONN_VERSION_MINOR << 8) | IOTCONN_VERSION_PATCH)

/* ---- enums (values are fixed forever; new ones are only appended) --------------------------------------------- */

/* The state of a client's connection as the application sees it. */
typedef enum iotconn_status {
	IOTCONN_STATUS_DISCONNECTED = 0,
	IOTCONN_STATUS_CONNECTED = 1,
	IOTCONN_STATUS_DISCONNECTED_RETRYING = 2,
	IOTCONN_STATUS_DISABLED = 3
} iotconn_status_t;

/* Why the status last changed. */
typedef enum iotconn_reason {
	IOTCONN_REASON_CONNECTION_OK = 0,
	IOTCONN_REASON_EXPIRED_SAS_TOKEN = 1,
	IOTCONN_REASON_DEVICE_DISABLED = 2,
	IOTCONN_REASON_BAD_CREDENTIAL = 3,
	IOTCONN_REASON_RETRY_EXPIRED = 4,
	IOTCONN_REASON_NO_NETWORK = 5,
	IOTCONN_REASON_COMMUNICATION_ERROR = 6,
	IOTCONN_REASON_CLIENT_CLOSE = 7
} iotconn_reason_t;

/* ---- error codes ---------------------------------------------------------------------------------------------- */

#define IOTCONN_OK 0
#define IOTCONN_EINVAL (-1)         /* bad argument: NULL, bad size, malformed connection string or option */
#define IOTCONN_EBADHANDLE (-2)     /* unknown, destroyed or foreign client handle */
#define IOTCONN_ECLOSED (-3)        /* the client was closed */
#define IOTCONN_EQUEUEFULL (-4)     /* the outbound queue is at its message-count or byte limit */
#define IOTCONN_ETIMEOUT (-5)       /* the operation or connect timeout elapsed (EXPIRED completion: never sent) */
#define IOTCONN_EAUTH (-6)          /* bad credential: wrong key, expired or wrongly scoped token */
#define IOTCONN_EDISABLED (-7)      /* the device is disabled or unknown to the hub */
#define IOTCONN_ERETRYEXPIRED (-8)  /* the retry policy gave up */
#define IOTCONN_ETOOLARGE (-9)      /* payload or message over the hub's limit */
#define IOTCONN_ENETWORK (-10)      /* network-level failure: DNS, refused, unreachable */
#define IOTCONN_ESTATE (-11)        /* not allowed in the current state or dispatch mode */
#define IOTCONN_EINTERNAL (-12)     /* a bug in the library: please report it with iotconn_last_error() */
#define IOTCONN_EPROTOCOL (-13)     /* the peer broke the protocol or closed the connection */
#define IOTCONN_ETHROTTLED (-14)    /* the hub throttled the device (a connect closed without CONNACK, or CONNACK 3 once it had connected) */
#define IOTCONN_EDROPPED (-15)      /* dropped by IOTCONN_QUEUE_OVERFLOW_DROP_OLDEST to make room for a newer message */
#define IOTCONN_ESTORE (-16)        /* queue_dir cannot be used: not writable, corrupt, or in use by another client */
#define IOTCONN_ECANCELED (-17)     /* iotconn_connect_cancel() abandoned the connect */
#define IOTCONN_EINDOUBT (-18)      /* handed to the network but never acknowledged: it may have reached the hub */

/* ---- limits (checked by iotconn_send before it accepts a message; nothing is ever truncated) ----------------- */

/* IoT Hub's device-to-cloud limit, counted as the hub counts it: payload + the values of message_id,
 * correlation_id, content_type and content_encoding + the names and values of the application properties.
 * Over it: IOTCONN_ETOOLARGE. A message without message_id counts the id the library generates (at most
 * IOTCONN_MAX_GENERATED_MESSAGE_ID_LENGTH bytes). */
#define IOTCONN_MAX_MESSAGE_SIZE 262144
/* message_id: at most 128 ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ ' (IoT Hub's rule).
 * Longer: IOTCONN_ETOOLARGE; another character: IOTCONN_EINVAL. */
#define IOTCONN_MAX_MESSAGE_ID_LENGTH 128
#define IOTCONN_MAX_GENERATED_MESSAGE_ID_LENGTH 48
/* MQTT carries the message's system and application properties, percent-encoded, in the PUBLISH topic
 * ("devices/{id}/messages/events/{properties}"), which MQTT limits to 65535 bytes: IOTCONN_ETOOLARGE past it. */
#define IOTCONN_MAX_MQTT_TOPIC_LENGTH 65535
/* SAS tokens the library makes: sas_lifetime_s at least 60, sas_renew_margin_s at least 5, and at least 30 s
 * between renewals (lifetime - margin). Below: IOTCONN_EINVAL from iotconn_client_create. */
#define IOTCONN_MIN_SAS_LIFETIME_S 60
#define IOTCONN_MIN_SAS_RENEW_MARGIN_S 5
#define IOTCONN_MIN_SAS_RENEW_INTERVAL_S 30

/* ---- enums of the API ---------------------------------------------------------------------------------------- */

/* iotconn_options_t.transport */
#define IOTCONN_TRANSPORT_MQTT 0    /* MQTT over TLS, port 8883 (default) */
#define IOTCONN_TRANSPORT_MQTT_WS 1 /* MQTT over WebSocket over TLS, port 443 */
#define IOTCONN_TRANSPORT_AMQP 2    /* AMQP 1.0 over TLS, port 5671; renews tokens in place; pooling: amqp_pool */
#define IOTCONN_TRANSPORT_AMQP_WS 3 /* AMQP over WebSocket over TLS, port 443 (wss://host/$iothub/websocket) */

/* iotconn_options_t.amqp_pool: the most devices one shared AMQP connection carries (IoT Hub takes at most 999
 * tokens on a connection; the .NET SDK caps its pools at 995). */
#define IOTCONN_AMQP_POOL_MAX 995

/* iotconn_options_t.dispatch: which thread runs the callbacks. */
#define IOTCONN_DISPATCH_THREAD 0 /* a library thread calls them (default) */
#define IOTCONN_DISPATCH_POLL 1   /* they run only inside iotconn_poll(), on the thread that calls it */

/* iotconn_options_t.queue_overflow: what iotconn_send() does when the outbound queue is at a limit. */
#define IOTCONN_QUEUE_OVERFLOW_REJECT 0      /* return IOTCONN_EQUEUEFULL (default) */
#define IOTCONN_QUEUE_OVERFLOW_DROP_OLDEST 1 /* the oldest queued messages never handed to the network complete
						IOTCONN_SEND_FAILED / IOTCONN_EDROPPED until the new one fits */

/* The `result` of a send completion: every message iotconn_send() accepted ends in exactly one of these. */
#define IOTCONN_SEND_DELIVERED 0 /* the hub acknowledged it */
#define IOTCONN_SEND_EXPIRED 1   /* its time-to-live (default the operation timeout) passed before delivery */
#define IOTCONN_SEND_FAILED 2    /* a fatal error, close or DROP_OLDEST ended it; the error code says which */
/* A completion says only what the library knows. A message handed to the network waits for the hub's
 * acknowledgement while its link lives, even past its time-to-live: DELIVERED if it comes. If the link ends
 * first, the message is sent again (same message_id) unless its time-to-live passed: then it completes EXPIRED
 * with error code IOTCONN_EINDOUBT, "it may have reached the hub" (never sent again). A never-sent message
 * expires with IOTCONN_ETIMEOUT: it certainly did not arrive. A message ended FAILED (close, a fatal error, a
 * connect that gave up) after it was sent unacknowledged keeps its code (IOTCONN_ECLOSED, ...), and
 * iotconn_last_error() in the callback says it may have reached the hub. Messages recovered from queue_dir count
 * as sent: the previous process may have sent them. */

/* The `level` of a log callback. */
#define IOTCONN_LOG_ERROR 0
#define IOTCONN_LOG_WARN 1
#define IOTCONN_LOG_INFO 2
#define IOTCONN_LOG_DEBUG 3

/* iotconn_retry_policy_t.kind */
#define IOTCONN_RETRY_EXPONENTIAL 0 /* exponential back-off with jitter (the default policy) */
#define IOTCONN_RETRY_NONE 1        /* never retry: the first failure is final */
#define IOTCONN_RETRY_CUSTOM 2      /* ask the application's callback */

/* iotconn_retry_policy_t.jitter: how the delay before retry n (1 for the first) is drawn. U[a, b] is a fresh uniform
 * draw; every delay but FULL's is capped at c = U[max(min, 0.8 max), max], so even capped delays stay random. */
#define IOTCONN_JITTER_DEFAULT 0      /* the .NET SDK's term x = min(min + (2^(n-1) - 1) x U[0.8 delta, 1.2 delta], c),
					 drawn over its upper half: U[max(min, x/2), x]; the first: min(min + U[0, 0.8 delta], c) */
#define IOTCONN_JITTER_FULL 1         /* U[min, min(min + (2^(n-1) - 1) x delta, max)]; the first as DEFAULT's */
#define IOTCONN_JITTER_DECORRELATED 2 /* AWS's: min(U[min, 3 x the previous delay], c), the first's previous
					 being min; delta unused; min_backoff_ms must be above 0 */

/* iotconn_retry_policy_t.retry_count: retry forever. */
#define IOTCONN_RETRY_UNLIMITED (-1)

/* ---- types -------------------------------------------------------------------------------------------------- */

/* A client: one device identity and its connection. Opaque; never dereferenced, not even by the library. */
typedef struct iotconn_client iotconn_client_t;

/* A dispatcher: runs the callbacks of many clients from one library thread (DISPATCH_THREAD) or inside
 * iotconn_dispatcher_poll() (DISPATCH_POLL), so a process with thousands of device identities needs one callback
 * thread, not one per client. Opaque, like a client handle. See iotconn_dispatcher_create(). */
typedef struct iotconn_dispatcher iotconn_dispatcher_t;

/* An admission budget: a connect rate shared by clients of one process. See iotconn_admission_create(). */
typedef struct iotconn_admission iotconn_admission_t;

/* Options of iotconn_client_create(). Zero (or NULL) in any field means the default noted beside it. */
typedef struct iotconn_options {
	size_t size;                   /* sizeof(iotconn_options_t); set by IOTCONN_OPTIONS_INIT */
	int transport;                 /* IOTCONN_TRANSPORT_*; default MQTT */
	const char *ca_file;           /* PEM file of trusted roots; with ca_pem NULL too: the system roots */
	const char *ca_pem;            /* PEM text of trusted roots, added to ca_file's */
	const char *cert_file;         /* X.509 client certificate (PEM), with x509=true in the connection string */
	const char *key_file;          /* its private key (PEM) */
	uint32_t keepalive_s;          /* MQTT keep-alive, AMQP idle timeout (a pooled connection takes its
					  first device's); default 240, capped at 1177 */
	uint32_t sas_lifetime_s;       /* lifetime of generated SAS tokens; default 3600, at least 60 */
	uint32_t sas_renew_margin_s;   /* renew this long before expiry; default 10 % of the lifetime, at least 5;
					  renewals (lifetime - margin apart, never less) at least 30 s apart */
	uint32_t queue_max_messages;   /* outbound queue bound in messages; default 10000 */
	uint64_t queue_max_bytes;      /* outbound queue bound in payload bytes; default 64 MiB */
	uint32_t operation_timeout_ms; /* connect and send give up after this; default 240000 (4 min) */
	int dispatch;                  /* IOTCONN_DISPATCH_*; default THREAD */
	int queue_overflow;            /* IOTCONN_QUEUE_OVERFLOW_*; default REJECT */
	/* Durable mode: a directory (created if missing) that keeps the outbound queue on disk; NULL = memory only.
	 * iotconn_send() returns only once the message is written and fsynced there (concurrent sends share one
	 * fsync). A message leaves the disk only when it completes delivered, expired or dropped. One failed by
	 * iotconn_close(), a fatal error or a connect that gave up stays: the next client created on the directory,
	 * in this or a later process (also after a crash or kill -9), loads what was not delivered and sends it
	 * after connecting (iotconn_queue_recovered).
	 * One client per directory at a time: another gets IOTCONN_ESTORE after waiting 1 s for the lock. */
	const char *queue_dir;
	/* The retry policy's attempt count, and with it the back-off, starts over only once a link stayed up this
	 * long; a link lost sooner counts as one more failed attempt, so a hub that accepts and drops every connection
	 * at once is retried at the policy's growing delays, not at its first one for ever. Default 30000 (30 s). */
	uint32_t backoff_reset_after_ms;
	/* Run this client's callbacks on the dispatcher's thread (or in iotconn_dispatcher_poll()) together with
	 * every other client created with it; `dispatch` then takes the dispatcher's mode (a different explicit
	 * POLL is IOTCONN_EINVAL). The dispatcher must outlive the client. NULL: the client dispatches its own. */
	iotconn_dispatcher_t *dispatcher;
	/* The fleet hint: how long the fleet sharing this device's hub needs to be admitted, about
	 * 1.1 x devices / the hub's connect rate (IoT Hub S1: about 100 per second per unit, so 10 000 devices:
	 * 110000). The first retry after a lost link or a failed connect waits the policy's delay plus a uniform
	 * draw over this window, so a fleet that lost its hub together comes back spread evenly over it; later
	 * retries wait at least a draw from [window, 1.05 x window], or after a throttling
	 * refusal the throttling schedule alone (the device is where the hub admits now). A server's retry-after still
	 * wins. 0 (default): off. */
	uint32_t reconnect_spread_ms;
	/* Every connection attempt of this client takes a token from this budget, shared with the other clients of
	 * the process created with it, and waits for one when there is none (iotconn_admission_create). NULL: no
	 * budget. */
	iotconn_admission_t *admission;
	/* AMQP transports only: share AMQP connections with the other clients of the process that set the same
	 * value, at most this many devices on each (above IOTCONN_AMQP_POOL_MAX: that), with one CBS link per
	 * connection and one session per device. A connection that fails (a hub failover, a dropped socket) fails
	 * every device on it at once and is closed; each device then reconnects on its own retry policy and fleet
	 * settings, on a new connection with a fresh DNS lookup. Devices share only with the same host, transport
	 * and trusted roots; an X.509 device always gets a connection of its own. 0 (default): a connection of its
	 * own. Set with MQTT: IOTCONN_EINVAL. */
	uint32_t amqp_pool;
} iotconn_options_t;

#define IOTCONN_OPTIONS_INIT {sizeof(iotconn_options_t), IOTCONN_TRANSPORT_MQTT, NULL, NULL, NULL, NULL, \
			      0, 0, 0, 0, 0, 0, IOTCONN_DISPATCH_THREAD, IOTCONN_QUEUE_OVERFLOW_REJECT, NULL, 0, NULL, 0, NULL, \
			      0}

/* Device Provisioning Service parameters (iotconn_client_create_dps, iotconn_dps_register). The attestation is
 * one of symmetric_key, group_key, or X.509: the options' cert_file and key_file (the certificate's CN is the
 * registration id), used with DPS and then with the hub. Strings are copied. */
typedef struct iotconn_dps_params {
	size_t size;                   /* sizeof(iotconn_dps_params_t); set by IOTCONN_DPS_PARAMS_INIT */
	const char *provisioning_host; /* the global device endpoint, host[:port]: global.azure-devices-provisioning.net */
	const char *id_scope;          /* e.g. "0ne00000001" */
	const char *registration_id;   /* at most 128 letters, digits and - . _ : */
	const char *symmetric_key;     /* an individual enrollment's key (base64) */
	const char *group_key;         /* an enrollment group's key: the device key is derived from it */
	const char *payload_json;      /* optional JSON sent with each registration; NULL = none */
	/* Where the assignment is kept across restarts (written atomically); NULL = queue_dir/dps-assignment.json,
	 * or no cache when the options have no queue_dir either (every start then registers). */
	const char *cache_file;
	uint32_t reprovision_after_failures; /* register again after this many reconnects failed in a row; 0 = 10 */
	uint32_t reprovision_after_s;        /* ... or after this long without a connection; 0 = 900 (15 min) */
} iotconn_dps_params_t;

#define IOTCONN_DPS_PARAMS_INIT {sizeof(iotconn_dps_params_t), NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0}

/* One application property of a message (key and value are NUL-terminated UTF-8). */
typedef struct iotconn_property {
	const char *key;
	const char *value;
} iotconn_property_t;

/* A device-to-cloud message (iotconn_send) or a cloud-to-device message (the message callback). */
typedef struct iotconn_message {
	size_t size;                          /* sizeof(iotconn_message_t); set by IOTCONN_MESSAGE_INIT */
	const void *payload;                  /* the body; may be NULL only when payload_len is 0 */
	size_t payload_len;                   /* bytes in payload; iotconn_send() needs at least one */
	const char *message_id;               /* NULL: the library generates a unique one */
	const char *correlation_id;           /* may be NULL */
	const char *content_type;             /* e.g. "application/json"; may be NULL */
	const char *content_encoding;         /* e.g. "utf-8"; may be NULL */
	const iotconn_property_t *properties; /* property_count entries; order is kept; may be NULL when count is 0 */
	size_t property_count;
	uint32_t ttl_ms; /* time-to-live from iotconn_send(); 0 = the options' operation_timeout_ms. Not yet delivered
			    then, it completes IOTCONN_SEND_EXPIRED and is never sent after. 0 in received messages. */
} iotconn_message_t;

#define IOTCONN_MESSAGE_INIT {sizeof(iotconn_message_t), NULL, 0, NULL, NULL, NULL, NULL, NULL, 0, 0}

/*
 * A custom retry policy: the library calls it after attempt number `attempt` (1 for the first failure) failed
 * with `error_code` (an IOTCONN_E* code) and `error_message` (valid during the call only). Return nonzero to try
 * again after *delay_ms milliseconds, 0 to give up (the client then ends Disconnected / Retry_Expired).
 * In IOTCONN_DISPATCH_THREAD mode a library thread calls it; in IOTCONN_DISPATCH_POLL mode it runs only inside
 * iotconn_poll(), on the polling thread, so a reconnect waits for the application to poll.
 * It must not block for long and must not call iotconn_client_destroy().
 */
typedef int (*iotconn_retry_cb)(uint32_t attempt, int error_code, const char *error_message, uint32_t *delay_ms,
				void *user);

/* A retry policy for iotconn_set_retry_policy(). Durations are in milliseconds. */
typedef struct iotconn_retry_policy {
	size_t size;               /* sizeof(iotconn_retry_policy_t); set by IOTCONN_RETRY_POLICY_INIT */
	int kind;                  /* IOTCONN_RETRY_EXPONENTIAL, _NONE or _CUSTOM */
	int32_t retry_count;       /* EXPONENTIAL: attempts before giving up; IOTCONN_RETRY_UNLIMITED = forever */
	uint32_t min_backoff_ms;   /* EXPONENTIAL: the smallest delay */
	uint32_t max_backoff_ms;   /* EXPONENTIAL: the largest delay */
	uint32_t delta_backoff_ms; /* EXPONENTIAL: the growth step */
	int jitter;                /* EXPONENTIAL: IOTCONN_JITTER_DEFAULT, _FULL or _DECORRELATED */
	iotconn_retry_cb custom;   /* CUSTOM: the callback; must not be NULL */
	void *user;                /* CUSTOM: handed to the callback; owned by the application */
} iotconn_retry_policy_t;

/* The default policy, as in the .NET SDK: unlimited, 100 ms to 10 s, 100 ms delta, default jitter. */
#define IOTCONN_RETRY_POLICY_INIT {sizeof(iotconn_retry_policy_t), IOTCONN_RETRY_EXPONENTIAL, \
				   IOTCONN_RETRY_UNLIMITED, 100, 10000, 100, IOTCONN_JITTER_DEFAULT, NULL, NULL}

/* Called once per status change, in order. */
typedef void (*iotconn_status_cb)(iotconn_status_t status, iotconn_reason_t reason, void *user);

/* Called for each cloud-to-device message. `msg` and everything it points to belong to the library and are valid
 * until the callback returns; keep a copy with iotconn_message_copy(). */
typedef void (*iotconn_message_cb)(const iotconn_message_t *msg, void *user);

/* Called exactly once for each message iotconn_send() accepted (or iotconn_client_create recovered from queue_dir):
 * `id` is the id it returned, `result` one of
 * IOTCONN_SEND_*, `error_code` 0 when delivered, else an IOTCONN_E* code; iotconn_last_error() inside the
 * callback gives its message. */
typedef void (*iotconn_send_cb)(uint64_t id, int result, int error_code, void *user);

/* Called with the library's log lines; `message` is valid until the callback returns. */
typedef void (*iotconn_log_cb)(int level, const char *message, void *user);

/* Twins and direct methods. JSON crosses the interface as len bytes of UTF-8 (not counting the NUL the library
 * puts after the JSON it hands to callbacks); the library's JSON is valid only until the callback returns. */

/* Called exactly once for each iotconn_twin_get() that returned 0: `id` is the id it stored; on success
 * `error_code` is 0 and `twin_json` the whole twin as the hub sent it,
 * {"desired":{...,"$version":n},"reported":{...,"$version":n}}; on failure `twin_json` is NULL, `len` 0 and
 * `error_code` an IOTCONN_E* code (IOTCONN_ETIMEOUT, IOTCONN_ECLOSED, or the hub's refusal), whose message
 * iotconn_last_error() gives inside the callback. */
typedef void (*iotconn_twin_cb)(uint64_t id, const char *twin_json, size_t len, int error_code, void *user);

/* Called exactly once for each iotconn_twin_report() that returned 0: on success `error_code` is 0 and `version`
 * the twin's new reported $version; on failure `version` is 0 and `error_code` an IOTCONN_E* code (as a send's:
 * IOTCONN_ETIMEOUT never sent, IOTCONN_EINDOUBT sent and unanswered, IOTCONN_ECLOSED, IOTCONN_EDROPPED, or the
 * hub's refusal: IOTCONN_EINVAL, IOTCONN_ETOOLARGE, ...); iotconn_last_error() inside the callback gives its
 * message. */
typedef void (*iotconn_reported_cb)(uint64_t id, int64_t version, int error_code, void *user);

/* Called with desired properties and their $version (also inside the JSON, as "$version"); each version at most
 * once, in increasing order: the hub's patches, and after every connect (the first, after a lost link, after a
 * token renewal) the whole desired section if its version moved past the last one delivered, so that nothing
 * changed while offline is missed. */
typedef void (*iotconn_desired_cb)(int64_t version, const char *patch_json, size_t len, void *user);

/* Called for each direct method call: answer it with iotconn_method_respond(request_id, ...), from inside the
 * callback or later from any thread (copy request_id: it is valid only during the call). Calls keep arriving
 * while earlier ones wait for their answer. `payload_json` is the call's payload (len 0 when it has none). The hub
 * forgets a call when the link it came on ends. */
typedef void (*iotconn_method_cb)(const char *request_id, const char *method_name, const char *payload_json,
				  size_t len, void *user);

/* ---- functions ---------------------------------------------------------------------------------------------- */

/* The library's capi layer compiles this header with IOTCONN_CAPI_BUILD: cgo writes its own prototypes for the
 * functions it exports (without const), and a test compares both against the library's exported symbols. */
#ifndef IOTCONN_CAPI_BUILD

/* The library's version string, e.g. "1.0.0" (static storage: do not free). Stores the numbers in the non-NULL
 * arguments. Compare with IOTCONN_VERSION_* to detect a library older than the header. Thread-safe. */
const char *iotconn_version(int *major, int *minor, int *patch);

/* The message of the last failed call made on this thread (thread-local storage owned by the library: valid
 * until the next iotconn_* call on this thread; do not free). "" when there was none. Successful calls do not
 * clear it. Thread-safe. */
const char *iotconn_last_error(void);

/* A short static description of an IOTCONN_E* code ("queue full"); never NULL, do not free. Thread-safe. */
const char *iotconn_strerror(int code);

/* The enum names exactly as in the .NET SDK ("Disconnected_Retrying", "Bad_Credential"), or "Unknown".
 * Static storage: do not free. Thread-safe. */
const char *iotconn_status_str(int status);
const char *iotconn_reason_str(int reason);

/* Creates a client for a device connection string ("HostName=...;DeviceId=...;SharedAccessKey=..."); it does not
 * connect. `opts` may be NULL for all defaults; both strings and the struct are copied. On success stores the new
 * handle in *out_client and returns 0; destroy it with iotconn_client_destroy(). Thread-safe.
 * A module identity's connection string adds ModuleId ("HostName=...;DeviceId=d;ModuleId=m;SharedAccessKey=<the
 * module's key>"): the client then is module m of device d, apart from the device and its other modules (a
 * connection of its own, its own telemetry, twin and method calls; IoT Hub has no C2D messages for modules, so the
 * message callback stays silent). Every other call works the same.
 * Errors: IOTCONN_EINVAL (NULL argument, bad opts->size, malformed connection string or option, SAS options below
 * the IOTCONN_MIN_SAS_* floors, an empty device or module id, one with a character IoT Hub does not allow ('/',
 * spaces, non-ASCII) or with '+' or '#', which MQTT topics cannot carry),
 * IOTCONN_ETOOLARGE (a device or module id over 128 characters, a host name over 253), IOTCONN_ESTORE
 * (queue_dir cannot be created, read or locked, or its file is corrupt). */
int iotconn_client_create(const char *connection_string, const iotconn_options_t *opts,
			  iotconn_client_t **out_client);

/* Closes the client if needed (as iotconn_close), waits until no callback of it runs any more, and frees it.
 * In DISPATCH_THREAD mode the final events of the close still reach the callbacks; in DISPATCH_POLL mode, close
 * and poll first to see them. The handle is invalid afterwards: using it again gives IOTCONN_EBADHANDLE, including
 * a second destroy. Registered `user` pointers are not touched; the application frees them after this returns.
 * Thread-safe, but not from inside any iotconn callback (IOTCONN_ESTATE): close there, destroy later, and not
 * while another thread still uses the handle. */
int iotconn_client_destroy(iotconn_client_t *client);

/* Connects and blocks until the client is Connected (0), a fatal error (IOTCONN_EAUTH, IOTCONN_EDISABLED, ...),
 * the retry policy gives up (IOTCONN_ERETRYEXPIRED), or timeout_ms passes (IOTCONN_ETIMEOUT; 0 = the options'
 * operation timeout). Once connected, the library keeps the connection up by itself; status changes arrive on
 * the status callback. Returns 0 at once when already connected; IOTCONN_ECLOSED after iotconn_close().
 * iotconn_connect_cancel() from another thread ends it with IOTCONN_ECANCELED.
 * Thread-safe. In POLL mode with a custom retry policy, another thread must poll while this blocks (the policy
 * runs inside iotconn_poll()). */
int iotconn_connect(iotconn_client_t *client, uint32_t timeout_ms);

/* Makes every iotconn_connect() in progress on this client return IOTCONN_ECANCELED within milliseconds (the dial
 * in progress is abandoned). The client then stops trying and ends Disconnected / Retry_Expired, as after a
 * connect timeout (queued messages complete IOTCONN_SEND_FAILED / IOTCONN_ECANCELED), and stays usable:
 * iotconn_connect() may be called again. A connect that starts after this call is not affected. Returns 0 also
 * when no connect was in progress. Thread-safe, also from inside callbacks. Errors: IOTCONN_EBADHANDLE. */
int iotconn_connect_cancel(iotconn_client_t *client);

/* Queues a message and returns at once (in durable mode, once it is on disk: see queue_dir); `msg` and all it
 * points to are copied. Stores the message's id (1, 2,
 * ... per client) in *out_id when out_id is not NULL. The send callback later reports its one completion.
 * Messages sent while disconnected wait in the outbound queue and go out in order after reconnecting.
 * Nothing is truncated or rewritten: what the hub cannot receive exactly as given is refused here.
 * Thread-safe. Errors: IOTCONN_EINVAL (NULL msg, bad msg->size, empty payload, NULL property key or value; a
 * message_id with a character IoT Hub does not allow; a property key that is empty, repeated, or reserved by IoT
 * Hub: "$." (MQTT's system properties: $.mid, $.cid, $.ct, $.ce, $.to, ...) or "iothub-" (any case) except
 * "iothub-creation-time-utc"; any string that is not valid UTF-8), IOTCONN_ETOOLARGE (over
 * IOTCONN_MAX_MESSAGE_SIZE, IOTCONN_MAX_MESSAGE_ID_LENGTH or IOTCONN_MAX_MQTT_TOPIC_LENGTH;
 * iotconn_last_error() names the limit), IOTCONN_EQUEUEFULL, IOTCONN_ECLOSED, IOTCONN_ESTORE (durable mode: the
 * write failed; the message was not accepted). */
int iotconn_send(iotconn_client_t *client, const iotconn_message_t *msg, uint64_t *out_id);

/* Durable mode: stores in *out_count how many undelivered messages iotconn_client_create() loaded from queue_dir
 * (0 without queue_dir). They took the ids 1..count in their original order and keep their message_id; new
 * sends start at count+1. They go out after connecting, each with its one send completion (register the send
 * callback before iotconn_connect() to see them). Thread-safe. Errors: IOTCONN_EINVAL (NULL out_count). */
int iotconn_queue_recovered(iotconn_client_t *client, uint64_t *out_count);

/* Replaces the retry policy (the default is IOTCONN_RETRY_POLICY_INIT's). `policy` is copied; for CUSTOM, the
 * callback and its `user` must stay valid until the client is destroyed or the policy replaced. Thread-safe.
 * Errors: IOTCONN_EINVAL (NULL, bad size, kind or jitter, min > max, DECORRELATED with min 0, CUSTOM without a
 * callback). */
int iotconn_set_retry_policy(iotconn_client_t *client, const iotconn_retry_policy_t *policy);

/* Register (or, with cb NULL, remove) a callback; the last registration wins. `user` is handed to it untouched
 * and stays owned by the application; keep it valid until the client is destroyed or the callback replaced.
 * Register before iotconn_connect() to see every event. Callbacks run on a library thread (DISPATCH_THREAD) or
 * inside iotconn_poll() (DISPATCH_POLL), one at a time per client, and may call iotconn_send and iotconn_close
 * on the same client. Thread-safe. */
int iotconn_register_status_callback(iotconn_client_t *client, iotconn_status_cb cb, void *user);
int iotconn_register_message_callback(iotconn_client_t *client, iotconn_message_cb cb, void *user);
int iotconn_register_send_callback(iotconn_client_t *client, iotconn_send_cb cb, void *user);
int iotconn_register_log_callback(iotconn_client_t *client, iotconn_log_cb cb, void *user);

/* The twin and method callbacks, registered as the ones above. Each connection subscribes to twin answers and
 * desired patches only if a twin, reported or desired callback is registered when it is made, and to method calls
 * only if a method callback is: register them before iotconn_connect() (a registration takes effect from the next
 * connection). A client that registers none never subscribes, as a device of a Basic-tier IoT Hub (no twins, no
 * methods) must not: that hub drops it. With a desired callback, every connect also GETs the twin (see
 * iotconn_desired_cb). */
int iotconn_register_twin_callback(iotconn_client_t *client, iotconn_twin_cb cb, void *user);
int iotconn_register_reported_callback(iotconn_client_t *client, iotconn_reported_cb cb, void *user);
int iotconn_register_desired_callback(iotconn_client_t *client, iotconn_desired_cb cb, void *user);
int iotconn_register_method_callback(iotconn_client_t *client, iotconn_method_cb cb, void *user);

/* Asks for the whole twin and returns at once, storing the request's id (from the sequence iotconn_send() uses)
 * in *out_id when out_id is not NULL; the twin callback reports its one result. Asked while disconnected, it
 * waits for a connection; a connection lost before the answer asks again on the next one; the operation timeout
 * from now bounds it (IOTCONN_ETIMEOUT). Thread-safe. Errors: IOTCONN_ESTATE (no twin callback registered),
 * IOTCONN_ECLOSED, IOTCONN_EBADHANDLE. */
int iotconn_twin_get(iotconn_client_t *client, uint64_t *out_id);

/* Queues a reported-properties patch: `patch_json`, len bytes of one UTF-8 JSON object (a null value deletes a
 * property), copied before the call returns. Stores its id in *out_id when out_id is not NULL; the reported
 * callback reports its one result. Patches wait in the outbound queue with the messages, in order, count against
 * its limits and overflow policy, and are durable with queue_dir, as iotconn_send()'s messages; a connection lost
 * before the answer sends the patch again on the next one. Thread-safe. Errors: IOTCONN_EINVAL (NULL patch_json,
 * not one JSON object, not UTF-8), IOTCONN_ETOOLARGE (over IoT Hub's 32 KB of reported properties, counted as the
 * hub counts them), IOTCONN_ESTATE (no reported callback registered), IOTCONN_EQUEUEFULL, IOTCONN_ESTORE,
 * IOTCONN_ECLOSED, IOTCONN_EBADHANDLE. */
int iotconn_twin_report(iotconn_client_t *client, const char *patch_json, size_t len, uint64_t *out_id);

/* Answers the method call `request_id` (from the method callback) with `status` and `payload_json` (len bytes of
 * one UTF-8 JSON value, or NULL with len 0 for none), and blocks until the answer is written to the connection
 * the call came on, or the operation timeout passes. Each call takes one answer. Thread-safe, also from inside the
 * method callback. Errors: IOTCONN_EINVAL (NULL request_id; a payload that is not one JSON value or not UTF-8,
 * after which the call still waits for its answer; an unknown request_id, or one answered already),
 * IOTCONN_ETOOLARGE (payload over 128 KB), IOTCONN_ESTATE (the call's connection ended before the answer was
 * written: the hub forgot the call, its caller gets a timeout), IOTCONN_ETIMEOUT, IOTCONN_ECLOSED,
 * IOTCONN_EBADHANDLE. */
int iotconn_method_respond(iotconn_client_t *client, const char *request_id, int status, const char *payload_json,
			   size_t len);

/* DISPATCH_POLL only: runs the client's pending callbacks on the calling thread, waiting up to timeout_ms for the
 * first one (0 = do not wait). Returns how many callbacks ran (>= 0); IOTCONN_ECLOSED once the client is closed
 * and its final events were all delivered (stop polling then); IOTCONN_ESTATE in DISPATCH_THREAD mode.
 * Concurrent calls on one client run one after the other. */
int iotconn_poll(iotconn_client_t *client, uint32_t timeout_ms);

/* Creates a dispatcher of mode `dispatch` (IOTCONN_DISPATCH_THREAD: one library thread runs the callbacks of its
 * clients; IOTCONN_DISPATCH_POLL: they run inside iotconn_dispatcher_poll()). Clients join it through
 * iotconn_options_t.dispatcher. Each client's callbacks still run in order and one at a time; the clients with
 * events waiting are served in turn. Stores the handle in *out_dispatcher and returns 0. Thread-safe.
 * Errors: IOTCONN_EINVAL (NULL out_dispatcher, unknown mode). */
int iotconn_dispatcher_create(int dispatch, iotconn_dispatcher_t **out_dispatcher);

/* DISPATCH_POLL dispatchers only: runs the pending callbacks of any of its clients on the calling thread, waiting
 * up to timeout_ms for the first (0 = do not wait). Returns how many ran (>= 0); IOTCONN_ESTATE for a
 * DISPATCH_THREAD dispatcher. iotconn_poll() on one of its clients is IOTCONN_ESTATE: poll the dispatcher.
 * A client's final events (after iotconn_close: failed sends, then Disabled / Client_Close, the last) arrive
 * here too: to see them, poll until that status before destroying the client. Concurrent calls run one after
 * the other; not from inside a callback (IOTCONN_ESTATE). */
int iotconn_dispatcher_poll(iotconn_dispatcher_t *dispatcher, uint32_t timeout_ms);

/* Destroys the dispatcher once every client created with it is closed (IOTCONN_ESTATE before that: close or
 * destroy the clients first; the handle stays valid). A DISPATCH_THREAD dispatcher first delivers every final
 * event; a DISPATCH_POLL one leaves them undelivered. The handle is invalid afterwards (IOTCONN_EBADHANDLE).
 * Thread-safe, but not from inside any iotconn callback (IOTCONN_ESTATE). */
int iotconn_dispatcher_destroy(iotconn_dispatcher_t *dispatcher);

/* Creates a connect budget of per_second connection attempts per second, at most `burst` at once, for the clients
 * of this process that name it in iotconn_options_t.admission (a gateway or simulator with many identities): the
 * process never asks the hub for more, however many of them lost their link together. Within one process this
 * spreads reconnects exactly where reconnect_spread_ms spreads them at random. Thread-safe.
 * Errors: IOTCONN_EINVAL (NULL out_admission, per_second not above 0 or not finite, burst 0). */
int iotconn_admission_create(double per_second, uint32_t burst, iotconn_admission_t **out_admission);

/* Releases the handle; clients created with the budget keep sharing it until they are destroyed. Thread-safe.
 * Errors: IOTCONN_EBADHANDLE. */
int iotconn_admission_destroy(iotconn_admission_t *admission);

/* Stores the current status and reason in the non-NULL arguments. Thread-safe. */
int iotconn_get_status(iotconn_client_t *client, iotconn_status_t *status, iotconn_reason_t *reason);

/* Closes the connection: the status becomes Disabled / Client_Close, messages not yet delivered complete with
 * IOTCONN_SEND_FAILED / IOTCONN_ECLOSED (in durable mode they stay in queue_dir for the next client; one that
 * was sent but not yet acknowledged may have reached the hub, and its iotconn_last_error() says so), and later
 * sends return IOTCONN_ECLOSED. Idempotent; the handle stays
 * valid until iotconn_client_destroy(). Thread-safe, also from inside the client's callbacks. */
int iotconn_close(iotconn_client_t *client);

/* ---- Device Provisioning Service ---------------------------------------------------------------------------- */

/*
 * Creates a client that finds its hub through DPS instead of a connection string; it does not connect. The first
 * iotconn_connect() registers, unless the assignment cache (params->cache_file, or queue_dir) holds one of this
 * registration: then it connects to the cached hub without calling DPS. The library then follows Microsoft's
 * guidance: transient failures (network, throttling, a busy hub) are retried on the same hub with the retry policy;
 * the client registers again (one registration, then the hub it names) when a hub it connected to before refuses
 * the device (wrong credential, disabled, unknown: the device was moved or deleted), or after
 * reprovision_after_failures reconnects failed in a row, or reprovision_after_s without a connection; never for
 * throttling. A registration is one attempt of the retry policy; DPS's retry-after is honoured with a random part
 * added. DPS refusing the registration is fatal: Disconnected / Bad_Credential (401, 403) or Device_Disabled (404,
 * a disabled enrollment). A reprovision shows as Disconnected_Retrying (Communication_Error when the hub refused
 * the device), a log line naming the reason and the new hub, and iotconn_dps_registrations(). Messages queued
 * before or during it go to the new hub. DPS is reached over MQTT on port 8883 of provisioning_host (a port in it
 * wins), or over MQTT on WebSocket (443) with a WebSocket transport, whatever protocol the hub link uses. Every
 * other call works as for iotconn_client_create().
 * Errors: IOTCONN_EINVAL (NULL params or out_client, bad sizes, no or two attestations, a bad registration id,
 * key, host, payload or option), IOTCONN_ESTORE (queue_dir). Thread-safe.
 */
int iotconn_client_create_dps(const iotconn_dps_params_t *params, const iotconn_options_t *opts,
			      iotconn_client_t **out_client);

/* Stores in *out_count how many DPS registrations (each billed by DPS) the client made since it was created: 0
 * while it uses a cached assignment, 1 after the first, one more per reprovision. 0 for a client of a connection
 * string. Thread-safe. Errors: IOTCONN_EINVAL (NULL out_count), IOTCONN_EBADHANDLE. */
int iotconn_dps_registrations(iotconn_client_t *client, uint64_t *out_count);

/* Stores the hub and device id the client connects as now in *out_hub and *out_device_id (either may be NULL),
 * as strings the caller frees with iotconn_free(); NULL before the first assignment and for a client of a
 * connection string. Thread-safe. Errors: IOTCONN_EBADHANDLE. */
int iotconn_dps_assignment(iotconn_client_t *client, char **out_hub, char **out_device_id);

/* Registers once with DPS outside any client (as the SDKs' ProvisioningDeviceClient.register): blocks until
 * assigned, retrying 429, 5xx and connection failures with the default retry policy and DPS's retry-after, for at
 * most timeout_ms (0 = the options' operation timeout). On success stores the registration state as JSON in
 * *out_result_json ({"registrationId","assignedHub","deviceId","status","substatus","createdDateTimeUtc",
 * "lastUpdatedDateTimeUtc","etag"}), which the caller frees with iotconn_free(). params->cache_file and the
 * reprovision fields are not used. Not from inside a callback (it blocks). Errors: IOTCONN_EINVAL, IOTCONN_EAUTH
 * (401/403), IOTCONN_EDISABLED (404, a disabled enrollment), IOTCONN_ETIMEOUT, IOTCONN_ENETWORK,
 * IOTCONN_ETHROTTLED, IOTCONN_EPROTOCOL; iotconn_last_error() gives DPS's status, errorCode and message. */
int iotconn_dps_register(const iotconn_dps_params_t *params, const iotconn_options_t *opts, uint32_t timeout_ms,
			 char **out_result_json);

/* Copies a message (for example one handed to the message callback) into one block the caller owns: free it
 * with iotconn_free(*out_copy). Thread-safe. Errors: IOTCONN_EINVAL. */
int iotconn_message_copy(const iotconn_message_t *msg, iotconn_message_t **out_copy);

/* Frees memory the library handed over (iotconn_message_copy). NULL is a no-op. Thread-safe. */
void iotconn_free(void *ptr);

#endif /* IOTCONN_CAPI_BUILD */

#ifdef __cplusplus
}
#endif

#endif /* IOTCONN_H */
