/* The ABI without a hub: version, enum values and names, error strings, and misuse returning the documented
 * errors (NULL arguments, bad sizes, destroyed and foreign handles, closed clients, bad payloads). */
#include <string.h>

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
		       IOTCONN_EPROTOCOL == -13 && IOTCONN_ETHROTTLED == -14,
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
	CHECK(strcmp(iotconn_strerror(IOTCONN_ESTORE - 1), "unknown error") == 0 && strcmp(iotconn_strerror(1), "unknown error") == 0);
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
	test_retry_policy_misuse();
	test_message_copy();
	test_last_error_is_thread_local();
	return test_done("api");
}
