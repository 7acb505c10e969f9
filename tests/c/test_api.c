/* The ABI without a hub: version, enum values and names, error strings, misuse returning the documented
 * errors (NULL arguments, bad sizes, destroyed and foreign handles, closed clients, bad payloads), the send-side
 * limits and reserved names, SAS floors, and cancelling a connect. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* The numbers are fixed forever (DESIGN.md); a change here is an ABI break. */
_Static_assert(IOTCONN_STATUS_DISCONNECTED == 0 && IOTCONN_STATUS_CONNECTED == 1 &&
		       IOTCONN_STATUS_DISCONNECTED_RETRYING == 2 && IOTCONN_STATUS_DISABLED == 3,
	       "status values");
_Static_assert(IOTCONN_REASON_CONNECTION_OK == 0 && IOTCONN_REASON_EXPIRED_SAS_TOKEN == 1 &&
		       IOTCONN_REASON_DEVICE_DISABLED == 2 && IOTCONN_REASON_BAD_CREDENTIAL == 3 &&
		       IOTCONN_REASON_RETRY_EXPIRED == 4 && IOTCONN_REASON_NO_NETWORK == 5 &&
		       IOTCONN_REASON_COMMUNICATION_ERROR == 6 && IOTCONN_REASON_CLIENT_CLOSE == 7,
	       "reason values");
_Static_assert(IOTCONN_EINVAL == -1 && IOTCONN_EBADHANDLE == -2 && IOTCONN_ECLOSED == -3 &&
		       IOTCONN_EQUEUEFULL == -4 && IOTCONN_ETIMEOUT == -5 && IOTCONN_EAUTH == -6 &&
		       IOTCONN_EDISABLED == -7 && IOTCONN_ERETRYEXPIRED == -8 && IOTCONN_ETOOLARGE == -9 &&
		       IOTCONN_ENETWORK == -10 && IOTCONN_ESTATE == -11 && IOTCONN_EINTERNAL == -12 &&
		       IOTCONN_EPROTOCOL == -13 && IOTCONN_ETHROTTLED == -14 && IOTCONN_EDROPPED == -15 &&
		       IOTCONN_ESTORE == -16 && IOTCONN_ECANCELED == -17 && IOTCONN_EINDOUBT == -18,
	       "error codes");
_Static_assert(offsetof(iotconn_options_t, size) == 0 && offsetof(iotconn_message_t, size) == 0 &&
		       offsetof(iotconn_retry_policy_t, size) == 0,
	       "size comes first");

/* A well-formed connection string to a port nothing listens on: creating a client never connects. */
static const char *CS = "HostName=127.0.0.1:1;DeviceId=dev1;SharedAccessKey=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

static iotconn_client_t *create(const iotconn_options_t *o)
{
	iotconn_client_t *c = NULL;
	CHECK_RC(iotconn_client_create(CS, o, &c), 0);
	CHECK(c != NULL);
	return c;
}

static void test_version_and_names(void)
{
	int major = -1, minor = -1, patch = -1;
	const char *v = iotconn_version(&major, &minor, &patch);
	CHECK(strcmp(v, IOTCONN_VERSION_STRING) == 0);
	CHECK(major == IOTCONN_VERSION_MAJOR && minor == IOTCONN_VERSION_MINOR && patch == IOTCONN_VERSION_PATCH);
	CHECK(iotconn_version(NULL, NULL, NULL) == v);

	const char *statuses[] = {"Disconnected", "Connected", "Disconnected_Retrying", "Disabled"};
	for (int i = 0; i < 4; i++)
		CHECK(strcmp(iotconn_status_str(i), statuses[i]) == 0);
	const char *reasons[] = {"Connection_Ok",	"Expired_SAS_Token", "Device_Disabled",	    "Bad_Credential",
				 "Retry_Expired",	"No_Network",	     "Communication_Error", "Client_Close"};
	for (int i = 0; i < 8; i++)
		CHECK(strcmp(iotconn_reason_str(i), reasons[i]) == 0);
	CHECK(strcmp(iotconn_status_str(4), "Unknown") == 0 && strcmp(iotconn_status_str(-1), "Unknown") == 0);
	CHECK(strcmp(iotconn_reason_str(8), "Unknown") == 0);

	CHECK(strcmp(iotconn_strerror(0), "ok") == 0);
	CHECK(strcmp(iotconn_strerror(IOTCONN_EQUEUEFULL), "queue full") == 0);
	for (int code = IOTCONN_ESTORE; code <= IOTCONN_EINVAL; code++)
		CHECK(strcmp(iotconn_strerror(code), "unknown error") != 0);
	CHECK(strcmp(iotconn_strerror(IOTCONN_EINDOUBT - 1), "unknown error") == 0 && strcmp(iotconn_strerror(1), "unknown error") == 0);
}

static void test_create_misuse(void)
{
	iotconn_client_t *c = NULL;
	CHECK_RC(iotconn_client_create(NULL, NULL, &c), IOTCONN_EINVAL);
	CHECK(strstr(iotconn_last_error(), "NULL") != NULL);
	CHECK_RC(iotconn_client_create(CS, NULL, NULL), IOTCONN_EINVAL);
	CHECK_RC(iotconn_client_create("HostName=;nonsense", NULL, &c), IOTCONN_EINVAL);
	CHECK_RC(iotconn_client_create("", NULL, &c), IOTCONN_EINVAL);
	CHECK(c == NULL);

	iotconn_options_t o = IOTCONN_OPTIONS_INIT;
	o.size = 0;
	CHECK_RC(iotconn_client_create(CS, &o, &c), IOTCONN_EINVAL);
	CHECK(strstr(iotconn_last_error(), "size") != NULL);
	o.size = sizeof o + 8;
	CHECK_RC(iotconn_client_create(CS, &o, &c), IOTCONN_EINVAL);
	o = (iotconn_options_t)IOTCONN_OPTIONS_INIT;
	o.dispatch = 7;
	CHECK_RC(iotconn_client_create(CS, &o, &c), IOTCONN_EINVAL);
	o = (iotconn_options_t)IOTCONN_OPTIONS_INIT;
	o.transport = 99;
	CHECK_RC(iotconn_client_create(CS, &o, &c), IOTCONN_EINVAL);
	CHECK(c == NULL);
}

static void test_handles(void)
{
	int foreign = 0;
	iotconn_client_t *bogus = (iotconn_client_t *)&foreign;
	uint64_t id = 0;
	for (int i = 0; i < 2; i++) {
		iotconn_client_t *h = i ? bogus : NULL;
		CHECK_RC(iotconn_connect(h, 10), IOTCONN_EBADHANDLE);
		CHECK_RC(send_text(h, "x", NULL, &id), IOTCONN_EBADHANDLE);
		CHECK_RC(iotconn_poll(h, 0), IOTCONN_EBADHANDLE);
		CHECK_RC(iotconn_close(h), IOTCONN_EBADHANDLE);
		CHECK_RC(iotconn_get_status(h, NULL, NULL), IOTCONN_EBADHANDLE);
		CHECK_RC(iotconn_register_status_callback(h, NULL, NULL), IOTCONN_EBADHANDLE);
		CHECK_RC(iotconn_client_destroy(h), IOTCONN_EBADHANDLE);
	}
	CHECK(foreign == 0);

	iotconn_client_t *c = create(NULL);
	iotconn_status_t s = IOTCONN_STATUS_CONNECTED;
	iotconn_reason_t r = IOTCONN_REASON_CLIENT_CLOSE;
	CHECK_RC(iotconn_get_status(c, &s, &r), 0);
	CHECK(s == IOTCONN_STATUS_DISCONNECTED);
	CHECK_RC(iotconn_poll(c, 0), IOTCONN_ESTATE); /* thread dispatch: nothing to poll */
	CHECK_RC(iotconn_client_destroy(c), 0);
	/* use after destroy, destroy twice */
	CHECK_RC(send_text(c, "x", NULL, &id), IOTCONN_EBADHANDLE);
	CHECK_RC(iotconn_connect(c, 10), IOTCONN_EBADHANDLE);
	CHECK_RC(iotconn_close(c), IOTCONN_EBADHANDLE);
	CHECK_RC(iotconn_client_destroy(c), IOTCONN_EBADHANDLE);
	CHECK(strstr(iotconn_last_error(), "handle") != NULL);

	/* a new client never gets a destroyed client's handle */
	iotconn_client_t *c2 = create(NULL);
	CHECK(c2 != c);
	CHECK_RC(iotconn_client_destroy(c2), 0);
}

static void test_send_misuse(void)
{
	iotconn_options_t o = IOTCONN_OPTIONS_INIT;
	o.queue_max_messages = 2;
	iotconn_client_t *c = create(&o);
	uint64_t id = 0;
	iotconn_message_t m = IOTCONN_MESSAGE_INIT;

	CHECK_RC(iotconn_send(c, NULL, &id), IOTCONN_EINVAL);
	m.payload = "x";
	m.payload_len = 0;
	CHECK_RC(iotconn_send(c, &m, &id), IOTCONN_EINVAL); /* zero-length payload */
	CHECK(strstr(iotconn_last_error(), "empty") != NULL);
	m.payload = NULL;
	m.payload_len = 3;
	CHECK_RC(iotconn_send(c, &m, &id), IOTCONN_EINVAL);
	m.payload = "abc";
	m.size = sizeof m - 1;
	CHECK_RC(iotconn_send(c, &m, &id), IOTCONN_EINVAL);
	m.size = sizeof m;
	iotconn_property_t bad[] = {{"k", NULL}};
	m.properties = bad;
	m.property_count = 1;
	CHECK_RC(iotconn_send(c, &m, &id), IOTCONN_EINVAL);
	m.properties = NULL;
	CHECK_RC(iotconn_send(c, &m, &id), IOTCONN_EINVAL);
	m.property_count = 0;

	/* over the hub's 256 KiB message limit */
	size_t big = 256 * 1024 + 1;
	char *payload = calloc(1, big);
	m.payload = payload;
	m.payload_len = big;
	CHECK_RC(iotconn_send(c, &m, &id), IOTCONN_ETOOLARGE);
	free(payload);

	/* the queue holds two messages while disconnected; the third is refused */
	CHECK_RC(send_text(c, "one", NULL, &id), 0);
	CHECK(id == 1);
	CHECK_RC(send_text(c, "two", NULL, NULL), 0);
	CHECK_RC(send_text(c, "three", NULL, &id), IOTCONN_EQUEUEFULL);
	CHECK(id == 1);

	CHECK_RC(iotconn_close(c), 0);
	CHECK_RC(iotconn_close(c), 0); /* idempotent */
	iotconn_status_t s;
	iotconn_reason_t r;
	CHECK_RC(iotconn_get_status(c, &s, &r), 0);
	CHECK(s == IOTCONN_STATUS_DISABLED && r == IOTCONN_REASON_CLIENT_CLOSE);
	CHECK_RC(send_text(c, "late", NULL, &id), IOTCONN_ECLOSED);
	CHECK_RC(iotconn_client_destroy(c), 0);
}

/* Whatever cannot reach the hub exactly as given is refused before it is accepted, saying which limit. */
static void test_send_limits(void)
{
	iotconn_client_t *c = create(NULL);
	uint64_t id = 0;
	iotconn_message_t m = IOTCONN_MESSAGE_INIT;
	iotconn_property_t props[2] = {{"k", "v"}, {"k2", "v2"}};
	m.properties = props;
	m.property_count = 1;

	/* exactly IOTCONN_MAX_MESSAGE_SIZE as IoT Hub counts it (payload + id + property name and value) fits */
	size_t big = IOTCONN_MAX_MESSAGE_SIZE - strlen("m1") - strlen("kv");
	char *payload = calloc(1, big + 1);
	m.payload = payload;
	m.payload_len = big;
	m.message_id = "m1";
	CHECK_RC(iotconn_send(c, &m, &id), 0);
	m.payload_len = big + 1;
	CHECK_RC(iotconn_send(c, &m, &id), IOTCONN_ETOOLARGE);
	CHECK(strstr(iotconn_last_error(), "262144") != NULL);
	free(payload);
	m.payload = "x";
	m.payload_len = 1;

	/* a property bag whose percent-encoded topic passes MQTT's 65535 bytes */
	char *amps = malloc(30001);
	memset(amps, '&', 30000);
	amps[30000] = 0;
	props[0].value = amps;
	CHECK_RC(iotconn_send(c, &m, &id), IOTCONN_ETOOLARGE);
	CHECK(strstr(iotconn_last_error(), "65535") != NULL);
	free(amps);

	const char *reserved[] = {"$.mid", "$.cid", "$.ct", "$.ce", "$.to", "iothub-ack", "IoTHub-Operation"};
	for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
		props[0].key = reserved[i];
		props[0].value = "forged";
		CHECK_RC(iotconn_send(c, &m, &id), IOTCONN_EINVAL);
		CHECK(strstr(iotconn_last_error(), reserved[i]) != NULL);
	}
	props[0].key = "iothub-creation-time-utc"; /* the one IoT Hub lets devices set */
	props[0].value = "2026-11-27T06:00:00Z";
	CHECK_RC(iotconn_send(c, &m, &id), 0);
	props[0].key = props[1].key = "same";
	m.property_count = 2;
	CHECK_RC(iotconn_send(c, &m, &id), IOTCONN_EINVAL);
	m.property_count = 0;
	m.message_id = "not allowed: spaces";
	CHECK_RC(iotconn_send(c, &m, &id), IOTCONN_EINVAL);
	m.content_type = "\xff";
	m.message_id = NULL;
	CHECK_RC(iotconn_send(c, &m, &id), IOTCONN_EINVAL);
	CHECK_RC(iotconn_client_destroy(c), 0);

	iotconn_options_t o = IOTCONN_OPTIONS_INIT;
	o.sas_lifetime_s = 1;
	iotconn_client_t *short_lived = NULL;
	CHECK_RC(iotconn_client_create(CS, &o, &short_lived), IOTCONN_EINVAL);
	o.sas_lifetime_s = IOTCONN_MIN_SAS_LIFETIME_S;
	o.sas_renew_margin_s = IOTCONN_MIN_SAS_LIFETIME_S - IOTCONN_MIN_SAS_RENEW_INTERVAL_S;
	CHECK_RC(iotconn_client_create(CS, &o, &short_lived), 0);
	CHECK_RC(iotconn_client_destroy(short_lived), 0);
}

struct connect_call {
	iotconn_client_t *client;
	int rc, done;
};

static void *connect_thread(void *arg)
{
	struct connect_call *call = arg;
	call->rc = iotconn_connect(call->client, 0); /* the operation timeout: 4 minutes */
	__atomic_store_n(&call->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* A listener that completes TCP handshakes and never answers: a TLS handshake with it never ends. */
static int silent_listener(char *cs, size_t cs_len)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 8) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) != 0)
		return -1;
	snprintf(cs, cs_len, "HostName=127.0.0.1:%d;DeviceId=dev1;SharedAccessKey=%s", ntohs(a.sin_port),
		 strstr(CS, "SharedAccessKey=") + strlen("SharedAccessKey="));
	return fd;
}

/* iotconn_connect_cancel ends a blocked connect with IOTCONN_ECANCELED; the client can connect again. */
static void test_connect_cancel(void)
{
	char cs[256];
	int fd = silent_listener(cs, sizeof cs);
	CHECK(fd >= 0);
	iotconn_client_t *c = NULL;
	CHECK_RC(iotconn_client_create(cs, NULL, &c), 0);
	for (int round = 0; round < 2; round++) { /* the second round: still usable after a cancelled connect */
		struct connect_call call = {c, 0, 0};
		pthread_t t;
		pthread_create(&t, NULL, connect_thread, &call);
		/* The thread may not be inside iotconn_connect yet: cancel until it returns, within 10 s. */
		int64_t start = now_ms();
		while (!__atomic_load_n(&call.done, __ATOMIC_ACQUIRE) && now_ms() - start < 10000) {
			CHECK_RC(iotconn_connect_cancel(c), 0);
			usleep(5000);
		}
		CHECK(__atomic_load_n(&call.done, __ATOMIC_ACQUIRE));
		pthread_join(t, NULL);
		CHECK(call.rc == IOTCONN_ECANCELED);
		iotconn_status_t s;
		iotconn_reason_t r;
		CHECK_RC(iotconn_get_status(c, &s, &r), 0);
		CHECK(s == IOTCONN_STATUS_DISCONNECTED && r == IOTCONN_REASON_RETRY_EXPIRED);
	}
	CHECK_RC(iotconn_connect_cancel(c), 0); /* nothing in progress */
	CHECK_RC(iotconn_client_destroy(c), 0);
	CHECK_RC(iotconn_connect_cancel(c), IOTCONN_EBADHANDLE);
	close(fd);
}

static int never(uint32_t attempt, int code, const char *msg, uint32_t *delay, void *user)
{
	(void)attempt, (void)code, (void)msg, (void)delay, (void)user;
	return 0;
}

static void test_retry_policy_misuse(void)
{
	iotconn_client_t *c = create(NULL);
	iotconn_retry_policy_t p = IOTCONN_RETRY_POLICY_INIT;
	CHECK_RC(iotconn_set_retry_policy(c, &p), 0);
	CHECK_RC(iotconn_set_retry_policy(c, NULL), IOTCONN_EINVAL);
	p.size = 4;
	CHECK_RC(iotconn_set_retry_policy(c, &p), IOTCONN_EINVAL);
	p = (iotconn_retry_policy_t)IOTCONN_RETRY_POLICY_INIT;
	p.min_backoff_ms = 5000;
	p.max_backoff_ms = 100;
	CHECK_RC(iotconn_set_retry_policy(c, &p), IOTCONN_EINVAL);
	p = (iotconn_retry_policy_t)IOTCONN_RETRY_POLICY_INIT;
	p.jitter = 9;
	CHECK_RC(iotconn_set_retry_policy(c, &p), IOTCONN_EINVAL);
	p = (iotconn_retry_policy_t)IOTCONN_RETRY_POLICY_INIT;
	p.retry_count = -2;
	CHECK_RC(iotconn_set_retry_policy(c, &p), IOTCONN_EINVAL);
	p = (iotconn_retry_policy_t)IOTCONN_RETRY_POLICY_INIT;
	p.kind = 42;
	CHECK_RC(iotconn_set_retry_policy(c, &p), IOTCONN_EINVAL);
	p.kind = IOTCONN_RETRY_CUSTOM;
	CHECK_RC(iotconn_set_retry_policy(c, &p), IOTCONN_EINVAL); /* no callback */
	p.custom = never;
	CHECK_RC(iotconn_set_retry_policy(c, &p), 0);
	p = (iotconn_retry_policy_t)IOTCONN_RETRY_POLICY_INIT;
	p.kind = IOTCONN_RETRY_NONE;
	CHECK_RC(iotconn_set_retry_policy(c, &p), 0);
	p = (iotconn_retry_policy_t)IOTCONN_RETRY_POLICY_INIT;
	p.jitter = IOTCONN_JITTER_FULL;
	p.retry_count = 3;
	CHECK_RC(iotconn_set_retry_policy(c, &p), 0);
	p = (iotconn_retry_policy_t)IOTCONN_RETRY_POLICY_INIT;
	p.jitter = IOTCONN_JITTER_DECORRELATED;
	CHECK_RC(iotconn_set_retry_policy(c, &p), 0);
	p.min_backoff_ms = 0; /* decorrelated jitter grows every delay from min */
	CHECK_RC(iotconn_set_retry_policy(c, &p), IOTCONN_EINVAL);
	CHECK(strstr(iotconn_last_error(), "minimum backoff") != NULL);
	CHECK_RC(iotconn_client_destroy(c), 0);
}

static void test_message_copy(void)
{
	iotconn_property_t props[] = {{"a", "1"}, {"b", "two"}};
	iotconn_message_t m = IOTCONN_MESSAGE_INIT;
	m.payload = "\x00\x01payload";
	m.payload_len = 9;
	m.message_id = "mid";
	m.correlation_id = "cid";
	m.content_type = "application/octet-stream";
	m.properties = props;
	m.property_count = 2;
	iotconn_message_t *copy = NULL;
	CHECK_RC(iotconn_message_copy(&m, &copy), 0);
	CHECK(copy != NULL && copy->size == sizeof *copy);
	CHECK(copy->payload_len == 9 && memcmp(copy->payload, m.payload, 9) == 0);
	CHECK(strcmp(copy->message_id, "mid") == 0 && strcmp(copy->correlation_id, "cid") == 0);
	CHECK(strcmp(copy->content_type, "application/octet-stream") == 0 && strcmp(copy->content_encoding, "") == 0);
	CHECK(copy->property_count == 2 && strcmp(copy->properties[1].key, "b") == 0 &&
	      strcmp(copy->properties[1].value, "two") == 0);
	iotconn_free(copy);
	iotconn_free(NULL);
	CHECK_RC(iotconn_message_copy(NULL, &copy), IOTCONN_EINVAL);
	CHECK_RC(iotconn_message_copy(&m, NULL), IOTCONN_EINVAL);
}

/* iotconn_last_error() is per thread: a failure on one thread is not another thread's message. */
static void *other_thread(void *arg)
{
	const char **seen = arg;
	*seen = strdup(iotconn_last_error());
	return NULL;
}

static void test_last_error_is_thread_local(void)
{
	CHECK_RC(iotconn_client_create(NULL, NULL, NULL), IOTCONN_EINVAL);
	CHECK(iotconn_last_error()[0] != 0);
	const char *seen = NULL;
	pthread_t t;
	pthread_create(&t, NULL, other_thread, &seen);
	pthread_join(t, NULL);
	CHECK(seen && seen[0] == 0);
	free((void *)seen);
}

int main(void)
{
	test_version_and_names();
	test_create_misuse();
	test_handles();
	test_send_misuse();
	test_send_limits();
	test_connect_cancel();
	test_retry_policy_misuse();
	test_message_copy();
	test_last_error_is_thread_local();
	return test_done("api");
}
