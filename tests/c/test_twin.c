/* Twins and direct methods through the C ABI, against hubsim: get the twin; a reported patch shows in hubsim's
 * twin with the version the reported callback got; a desired patch made through the control API reaches the
 * desired callback with its version; a method invoked through the control API gets the application's status and
 * payload, also after a reconnect, while a call of a link that ended cannot be answered; a client without twin
 * or method callbacks does not subscribe; misuse codes; a module (ModuleId) sends, gets and patches its own twin
 * and answers its own method calls while its device is connected too, and bad module ids get their codes; across
 * outages (outage()): desired changes made while offline arrive once, latest wins, reported patches made during
 * an outage go out after it in order with one completion each, requests in flight at a cut link end once, and a
 * method call that comes while an earlier one waits is answered, as is the earlier one; desired changes made while
 * the device is offline for a token renewal arrive once, latest wins (renewal()). */
#include <string.h>

#include "harness.h"

#define WAIT_MS 60000
#define MAX_RESULTS 32

static hubsim_t hub;

typedef struct twins {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	iotconn_client_t *client;
	int connected; /* Connected / Connection_Ok events */
	int retrying;  /* Disconnected_Retrying events */
	int renewals;  /* Disconnected_Retrying / Expired_SAS_Token events */
	int nstatus;   /* every status event, in order (the first MAX_RESULTS) */
	iotconn_status_t statuses[MAX_RESULTS];
	iotconn_reason_t reasons[MAX_RESULTS];
	int64_t status_ms[MAX_RESULTS];

	int ntwin, twin_code;
	uint64_t twin_id;
	char twin[4096];

	int nreported, reported_code;
	uint64_t reported_id;
	int64_t reported_version;

	int ndesired, desired_sorted; /* desired_sorted: every version above the one before */
	int64_t desired_version, fan_version; /* the last version, and that of the patch that set "fan" */

	/* every twin result, reported completion and desired version, in arrival order (the first MAX_RESULTS) */
	uint64_t twin_ids[MAX_RESULTS], rep_ids[MAX_RESULTS];
	int twin_codes[MAX_RESULTS], rep_codes[MAX_RESULTS];
	int64_t rep_versions[MAX_RESULTS], desired_versions[MAX_RESULTS];
	char desired_last[512];

	int nsent; /* delivered sends */
	int nmethod, hold; /* hold: record calls without answering them */
	char method_rid[128], method_name[64], method_payload[256];
	int bad_json_rc, answer_rc, second_rc; /* iotconn_method_respond inside the callback */
} twins_t;

static void notify(twins_t *s)
{
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

static void on_status(iotconn_status_t st, iotconn_reason_t r, void *user)
{
	twins_t *s = user;
	pthread_mutex_lock(&s->mu);
	s->connected += st == IOTCONN_STATUS_CONNECTED && r == IOTCONN_REASON_CONNECTION_OK;
	s->retrying += st == IOTCONN_STATUS_DISCONNECTED_RETRYING;
	s->renewals += st == IOTCONN_STATUS_DISCONNECTED_RETRYING && r == IOTCONN_REASON_EXPIRED_SAS_TOKEN;
	if (s->nstatus < MAX_RESULTS)
		s->statuses[s->nstatus] = st, s->reasons[s->nstatus] = r, s->status_ms[s->nstatus] = now_ms();
	s->nstatus++;
	notify(s);
}

static void on_twin(uint64_t id, const char *json, size_t len, int code, void *user)
{
	twins_t *s = user;
	pthread_mutex_lock(&s->mu);
	if (s->ntwin < MAX_RESULTS)
		s->twin_ids[s->ntwin] = id, s->twin_codes[s->ntwin] = code;
	s->ntwin++;
	s->twin_id = id;
	s->twin_code = code;
	/* the library's JSON is also a C string */
	if (json && len < sizeof s->twin && strlen(json) == len)
		memcpy(s->twin, json, len + 1);
	notify(s);
}

static void on_reported(uint64_t id, int64_t version, int code, void *user)
{
	twins_t *s = user;
	pthread_mutex_lock(&s->mu);
	if (s->nreported < MAX_RESULTS)
		s->rep_ids[s->nreported] = id, s->rep_versions[s->nreported] = version, s->rep_codes[s->nreported] = code;
	s->nreported++;
	s->reported_id = id;
	s->reported_version = version;
	s->reported_code = code;
	notify(s);
}

static void on_desired(int64_t version, const char *json, size_t len, void *user)
{
	twins_t *s = user;
	pthread_mutex_lock(&s->mu);
	s->desired_sorted &= version > s->desired_version;
	if (s->ndesired < MAX_RESULTS)
		s->desired_versions[s->ndesired] = version;
	snprintf(s->desired_last, sizeof s->desired_last, "%.*s", (int)len, json);
	s->ndesired++;
	s->desired_version = version;
	if (strlen(json) == len && strstr(json, "\"fan\":true"))
		s->fan_version = version;
	notify(s);
}

static void on_method(const char *rid, const char *name, const char *json, size_t len, void *user)
{
	twins_t *s = user;
	pthread_mutex_lock(&s->mu);
	int hold = s->hold;
	snprintf(s->method_rid, sizeof s->method_rid, "%s", rid);
	snprintf(s->method_name, sizeof s->method_name, "%s", name);
	snprintf(s->method_payload, sizeof s->method_payload, "%.*s", (int)len, json);
	pthread_mutex_unlock(&s->mu);
	int bad = 0, answer = 0, second = 0;
	if (!hold) {
		/* refused before anything else: the call still takes the right answer, and only one */
		bad = iotconn_method_respond(s->client, rid, 500, "{oops", 5);
		answer = iotconn_method_respond(s->client, rid, 201, "{\"ok\":true}", 11);
		second = iotconn_method_respond(s->client, rid, 200, NULL, 0);
	}
	pthread_mutex_lock(&s->mu);
	s->bad_json_rc = bad, s->answer_rc = answer, s->second_rc = second;
	s->nmethod++;
	notify(s);
}

static void on_send(uint64_t id, int result, int code, void *user)
{
	twins_t *s = user;
	(void)id, (void)code;
	pthread_mutex_lock(&s->mu);
	s->nsent += result == IOTCONN_SEND_DELIVERED;
	notify(s);
}

/* Waits until *counter >= want, at most WAIT_MS. */
static int wait_for(twins_t *s, const int *counter, int want)
{
	int64_t deadline = now_ms() + WAIT_MS;
	pthread_mutex_lock(&s->mu);
	while (*counter < want && now_ms() < deadline) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&s->cond, &s->mu, &ts);
	}
	int have = *counter;
	pthread_mutex_unlock(&s->mu);
	if (have >= want)
		return 0;
	fprintf(stderr, "timed out waiting for %d (have %d)\n", want, have);
	return -1;
}

/* The "$version" that follows "section" in a twin's JSON, or -1. */
static int64_t version_in(const char *json, const char *section)
{
	const char *p = json ? strstr(json, section) : NULL;
	p = p ? strstr(p, "\"$version\":") : NULL;
	return p ? atoll(p + strlen("\"$version\":")) : -1;
}

/* Invokes method `name` on `device` through the control API; returns the HTTP status and the malloc'd body. */
static int invoke(const char *device, const char *name, int timeout_s, char **body)
{
	char path[256];
	snprintf(path, sizeof path, "/devices/%s/methods/%s?timeout=%d", device, name, timeout_s);
	return hub_http(&hub, "POST", path, "{\"delay\":1}", body);
}

/* A method call "hold" on `device` made on a thread of its own (the control API blocks until the answer). */
typedef struct held_call {
	pthread_t thread;
	const char *device;
	int timeout_s, http_status;
	char *body;
} held_call_t;

static void *invoke_held(void *arg)
{
	held_call_t *h = arg;
	h->http_status = invoke(h->device, "hold", h->timeout_s, &h->body);
	return NULL;
}

static void misuse_before_connect(iotconn_client_t *c)
{
	uint64_t id = 0;
	CHECK_RC(iotconn_twin_get(NULL, &id), IOTCONN_EBADHANDLE);
	CHECK_RC(iotconn_twin_report(c, NULL, 0, &id), IOTCONN_EINVAL);
	CHECK_RC(iotconn_twin_report(c, "not json", 8, &id), IOTCONN_EINVAL);
	CHECK_RC(iotconn_twin_report(c, "[1,2]", 5, &id), IOTCONN_EINVAL);
	CHECK_RC(iotconn_twin_report(c, "{\"a\":\"\xff\"}", 9, &id), IOTCONN_EINVAL);
	enum { BIG = 40000 };
	char *big = malloc(BIG + 16);
	int n = snprintf(big, 16, "{\"big\":\"");
	memset(big + n, 'x', BIG);
	memcpy(big + n + BIG, "\"}", 2);
	CHECK_RC(iotconn_twin_report(c, big, (size_t)n + BIG + 2, &id), IOTCONN_ETOOLARGE);
	free(big);
	CHECK(id == 0);
	CHECK_RC(iotconn_method_respond(c, NULL, 200, NULL, 0), IOTCONN_EINVAL);
	CHECK_RC(iotconn_method_respond(c, "no-such-call", 200, NULL, 0), IOTCONN_EINVAL);
	CHECK_RC(iotconn_method_respond(c, "no-such-call", 200, NULL, 5), IOTCONN_EINVAL);
	CHECK_RC(iotconn_method_respond(NULL, "no-such-call", 200, NULL, 0), IOTCONN_EBADHANDLE);
}

/* Creates a client of identity `id` with options o (NULL: hubsim's) and every callback registered on s (before
 * connecting: the links subscribe to twins and methods). */
static void twins_init_with(twins_t *s, const char *id, const iotconn_options_t *o)
{
	memset(s, 0, sizeof *s);
	s->desired_sorted = 1;
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);

	iotconn_options_t defaults = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, id), o ? o : &defaults, &s->client), 0);
	iotconn_client_t *c = s->client;
	CHECK_RC(iotconn_register_status_callback(c, on_status, s), 0);
	CHECK_RC(iotconn_register_send_callback(c, on_send, s), 0);
	CHECK_RC(iotconn_register_twin_callback(c, on_twin, s), 0);
	CHECK_RC(iotconn_register_reported_callback(c, on_reported, s), 0);
	CHECK_RC(iotconn_register_desired_callback(c, on_desired, s), 0);
	CHECK_RC(iotconn_register_method_callback(c, on_method, s), 0);
}

static void twins_init(twins_t *s, const char *id) { twins_init_with(s, id, NULL); }

static void twins_and_methods(void)
{
	twins_t s;
	twins_init(&s, "dev-twin");
	iotconn_client_t *c = s.client;
	misuse_before_connect(c);
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	CHECK(wait_for(&s, &s.connected, 1) == 0);

	/* get the twin */
	uint64_t id = 0;
	CHECK_RC(iotconn_twin_get(c, &id), 0);
	CHECK(wait_for(&s, &s.ntwin, 1) == 0);
	CHECK(s.twin_id == id && s.twin_code == 0);
	CHECK(version_in(s.twin, "\"desired\"") >= 0 && version_in(s.twin, "\"reported\"") >= 0);

	/* a reported patch: hubsim's twin shows it, with the version the callback got */
	CHECK_RC(iotconn_twin_report(c, "{\"temp\":21}", 11, &id), 0);
	CHECK(wait_for(&s, &s.nreported, 1) == 0);
	CHECK(s.reported_id == id && s.reported_code == 0 && s.reported_version > 0);
	char *body = NULL;
	CHECK(hub_http(&hub, "GET", "/devices/dev-twin/twin", NULL, &body) == 200);
	CHECK(body && strstr(body, "\"temp\":21"));
	CHECK(version_in(body, "\"reported\"") == s.reported_version);
	free(body);

	/* a desired patch through the control API reaches the callback with its version */
	body = NULL;
	CHECK(hub_http(&hub, "PATCH", "/devices/dev-twin/twin/desired", "{\"fan\":true}", &body) == 200);
	int64_t desired_version = version_in(body, "\"desired\"");
	free(body);
	CHECK(desired_version > 0);
	int64_t deadline = now_ms() + WAIT_MS;
	pthread_mutex_lock(&s.mu);
	while (s.fan_version < desired_version && now_ms() < deadline) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&s.cond, &s.mu, &ts);
	}
	CHECK(s.fan_version == desired_version);
	CHECK(s.desired_sorted);
	pthread_mutex_unlock(&s.mu);

	/* a method call is answered with the application's status and payload, once */
	body = NULL;
	CHECK(invoke("dev-twin", "reboot", 30, &body) == 200);
	CHECK(body && strstr(body, "\"status\":201") && strstr(body, "\"ok\":true"));
	free(body);
	CHECK(wait_for(&s, &s.nmethod, 1) == 0);
	CHECK(strcmp(s.method_name, "reboot") == 0 && strstr(s.method_payload, "\"delay\":1"));
	CHECK(s.bad_json_rc == IOTCONN_EINVAL && s.answer_rc == 0 && s.second_rc == IOTCONN_EINVAL);

	/* a call whose link ended cannot be answered (the hub forgot it); after the reconnect calls are answered */
	pthread_mutex_lock(&s.mu);
	s.hold = 1;
	pthread_mutex_unlock(&s.mu);
	held_call_t held = {.device = "dev-twin", .timeout_s = 5};
	CHECK(pthread_create(&held.thread, NULL, invoke_held, &held) == 0);
	CHECK(wait_for(&s, &s.nmethod, 2) == 0);
	CHECK(hub_fault(&hub, "{\"kind\":\"kill-tcp\",\"device\":\"dev-twin\"}") == 0);
	CHECK(wait_for(&s, &s.connected, 2) == 0);
	pthread_mutex_lock(&s.mu);
	char rid[sizeof s.method_rid];
	memcpy(rid, s.method_rid, sizeof rid);
	s.hold = 0;
	pthread_mutex_unlock(&s.mu);
	CHECK_RC(iotconn_method_respond(c, rid, 200, NULL, 0), IOTCONN_ESTATE);
	pthread_join(held.thread, NULL);
	free(held.body);
	CHECK(held.http_status != 200);
	body = NULL;
	CHECK(invoke("dev-twin", "reboot", 30, &body) == 200);
	CHECK(body && strstr(body, "\"status\":201"));
	free(body);

	CHECK_RC(iotconn_close(c), 0);
	CHECK_RC(iotconn_twin_get(c, &id), IOTCONN_ECLOSED);
	CHECK_RC(iotconn_twin_report(c, "{\"temp\":22}", 11, &id), IOTCONN_ECLOSED);
	CHECK_RC(iotconn_method_respond(c, rid, 200, NULL, 0), IOTCONN_ECLOSED);
	CHECK_RC(iotconn_client_destroy(c), 0);
	CHECK_RC(iotconn_twin_get(c, &id), IOTCONN_EBADHANDLE);
}

/* A client without twin or method callbacks (one registered and removed again counts as none) refuses twin
 * requests and does not subscribe: hubsim finds no one to take a method call. */
static void without_callbacks(void)
{
	iotconn_client_t *c = NULL;
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, "dev-plain"), &o, &c), 0);
	CHECK_RC(iotconn_register_method_callback(c, on_method, NULL), 0);
	CHECK_RC(iotconn_register_method_callback(c, NULL, NULL), 0);
	CHECK_RC(iotconn_register_twin_callback(c, on_twin, NULL), 0);
	CHECK_RC(iotconn_register_twin_callback(c, NULL, NULL), 0);
	uint64_t id = 0;
	CHECK_RC(iotconn_twin_get(c, &id), IOTCONN_ESTATE);
	CHECK_RC(iotconn_twin_report(c, "{\"temp\":21}", 11, &id), IOTCONN_ESTATE);
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	CHECK(invoke("dev-plain", "reboot", 5, NULL) == 404);
	CHECK_RC(iotconn_client_destroy(c), 0);
}

/* Patches the device's desired properties with {"n":n,"kN":true}; returns the new desired $version. */
static int64_t patch_desired(const char *device, int n)
{
	char patch[64], path[128], *body = NULL;
	snprintf(patch, sizeof patch, "{\"n\":%d,\"k%d\":true}", n, n);
	snprintf(path, sizeof path, "/devices/%s/twin/desired", device);
	CHECK(hub_http(&hub, "PATCH", path, patch, &body) == 200);
	int64_t v = version_in(body, "\"desired\"");
	free(body);
	return v;
}

/* How often id is among the first n of ids. */
static int count_id(const uint64_t *ids, int n, uint64_t id)
{
	int k = 0;
	for (int i = 0; i < n && i < MAX_RESULTS; i++)
		k += ids[i] == id;
	return k;
}

/* The outage cases through the C ABI: a 3 s hub-down, during which desired properties change three times,
 * five reported patches are queued and the twin is asked for; then requests in flight at a TCP reset; then a method
 * call that comes while an earlier one waits for its answer. */
static void outage(void)
{
	twins_t s;
	twins_init(&s, "dev-outage");
	iotconn_client_t *c = s.client;
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	CHECK(wait_for(&s, &s.ndesired, 1) == 0); /* the desired section after connecting */

	CHECK(hub_fault(&hub, "{\"kind\":\"hub-down\",\"seconds\":3}") == 0);
	CHECK(wait_for(&s, &s.retrying, 1) == 0);
	int64_t latest = 0;
	for (int i = 0; i < 3; i++)
		latest = patch_desired("dev-outage", i);
	uint64_t reports[5], get = 0;
	for (int i = 0; i < 5; i++) {
		char patch[32];
		int n = snprintf(patch, sizeof patch, "{\"seq\":%d}", i);
		CHECK_RC(iotconn_twin_report(c, patch, (size_t)n, &reports[i]), 0);
	}
	CHECK_RC(iotconn_twin_get(c, &get), 0);
	CHECK(wait_for(&s, &s.connected, 2) == 0);
	CHECK(wait_for(&s, &s.nreported, 5) == 0 && wait_for(&s, &s.ntwin, 1) == 0);
	CHECK(wait_for(&s, &s.ndesired, 2) == 0);
	/* the next desired update is the next patch: the changes made offline came once, as one update */
	int64_t next = patch_desired("dev-outage", 9);
	CHECK(wait_for(&s, &s.ndesired, 3) == 0);
	pthread_mutex_lock(&s.mu);
	CHECK(s.ndesired == 3 && s.desired_versions[1] == latest && s.desired_versions[2] == next && s.desired_sorted);
	CHECK(s.nreported == 5 && s.ntwin == 1 && s.twin_ids[0] == get && s.twin_codes[0] == 0);
	for (int i = 0; i < 5; i++)
		CHECK(s.rep_ids[i] == reports[i] && s.rep_codes[i] == 0 &&
		      (i == 0 || s.rep_versions[i] > s.rep_versions[i - 1]));
	int64_t reported_version = s.rep_versions[4];
	pthread_mutex_unlock(&s.mu);
	char *body = NULL;
	CHECK(hub_http(&hub, "GET", "/devices/dev-outage/twin", NULL, &body) == 200 && strstr(body, "\"seq\":4"));
	CHECK(version_in(body, "\"reported\"") == reported_version);
	free(body);

	/* requests in flight when the link is cut end in one result each (sent again on the next link) */
	uint64_t gets[3], cuts[3];
	for (int i = 0; i < 3; i++) {
		char patch[32];
		int n = snprintf(patch, sizeof patch, "{\"cut\":%d}", i);
		CHECK_RC(iotconn_twin_get(c, &gets[i]), 0);
		CHECK_RC(iotconn_twin_report(c, patch, (size_t)n, &cuts[i]), 0);
	}
	CHECK(hub_fault(&hub, "{\"kind\":\"kill-tcp\",\"device\":\"dev-outage\"}") == 0);
	CHECK(wait_for(&s, &s.connected, 3) == 0);
	CHECK(wait_for(&s, &s.ntwin, 4) == 0 && wait_for(&s, &s.nreported, 8) == 0);
	uint64_t last = 0;
	CHECK_RC(iotconn_twin_get(c, &last), 0);
	CHECK(wait_for(&s, &s.ntwin, 5) == 0);
	pthread_mutex_lock(&s.mu);
	for (int i = 0; i < 3; i++)
		CHECK(count_id(s.twin_ids, s.ntwin, gets[i]) == 1 && count_id(s.rep_ids, s.nreported, cuts[i]) == 1);
	CHECK(s.ntwin == 5 && s.twin_ids[4] == last && s.nreported == 8);
	for (int i = 0; i < s.ntwin; i++)
		CHECK(s.twin_codes[i] == 0);
	for (int i = 0; i < s.nreported; i++)
		CHECK(s.rep_codes[i] == 0);

	/* a call that comes while an earlier one waits for its answer is answered; so is the earlier one, later */
	s.hold = 1;
	int calls = s.nmethod;
	pthread_mutex_unlock(&s.mu);
	held_call_t held = {.device = "dev-outage", .timeout_s = 30};
	CHECK(pthread_create(&held.thread, NULL, invoke_held, &held) == 0);
	CHECK(wait_for(&s, &s.nmethod, calls + 1) == 0);
	pthread_mutex_lock(&s.mu);
	char rid[sizeof s.method_rid];
	memcpy(rid, s.method_rid, sizeof rid);
	s.hold = 0;
	pthread_mutex_unlock(&s.mu);
	body = NULL;
	CHECK(invoke("dev-outage", "quick", 30, &body) == 200 && body && strstr(body, "\"status\":201"));
	free(body);
	CHECK_RC(iotconn_method_respond(c, rid, 202, "{\"late\":true}", 13), 0);
	pthread_join(held.thread, NULL);
	CHECK(held.http_status == 200 && held.body && strstr(held.body, "\"status\":202") &&
	      strstr(held.body, "\"late\":true"));
	free(held.body);
	CHECK_RC(iotconn_client_destroy(c), 0);
}

/* A module is an identity of its own beside its device: its telemetry, its twin, its method calls. */
static void module_identity(void)
{
	iotconn_client_t *dev = NULL;
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, "dev-mod"), &o, &dev), 0);
	CHECK_RC(iotconn_connect(dev, WAIT_MS), 0);
	twins_t s;
	twins_init(&s, "dev-mod/m1");
	iotconn_client_t *c = s.client;
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	char *body = NULL;
	CHECK(hub_http(&hub, "GET", "/devices/dev-mod", NULL, &body) == 200 && strstr(body, "\"connected\":true"));
	free(body);

	uint64_t id = 0;
	CHECK_RC(send_text(c, "from the module", "mod-1", &id), 0);
	CHECK(wait_for(&s, &s.nsent, 1) == 0);
	size_t total = 0, distinct = 0;
	CHECK(hub_count_messages(&hub, "dev-mod/modules/m1", &total, &distinct) == 0 && total == 1);
	CHECK(hub_count_messages(&hub, "dev-mod", &total, &distinct) == 0 && total == 0);

	CHECK_RC(iotconn_twin_report(c, "{\"role\":\"module\"}", 17, &id), 0);
	CHECK(wait_for(&s, &s.nreported, 1) == 0);
	CHECK(s.reported_id == id && s.reported_code == 0);
	CHECK_RC(iotconn_twin_get(c, &id), 0);
	CHECK(wait_for(&s, &s.ntwin, 1) == 0);
	CHECK(s.twin_id == id && strstr(s.twin, "\"role\":\"module\""));
	body = NULL;
	CHECK(hub_http(&hub, "GET", "/devices/dev-mod/twin", NULL, &body) == 200 && !strstr(body, "role"));
	free(body);

	body = NULL;
	CHECK(invoke("dev-mod/modules/m1", "reboot", 30, &body) == 200);
	CHECK(body && strstr(body, "\"status\":201"));
	free(body);
	CHECK(invoke("dev-mod", "reboot", 5, NULL) == 404); /* the device has no method callback */
	CHECK_RC(iotconn_client_destroy(c), 0);
	CHECK_RC(iotconn_client_destroy(dev), 0);

	/* bad module ids: a code and a message, no client */
	const char *key = strstr(hubsim_conn_str(&hub, "dev-mod"), "SharedAccessKey=");
	char long_id[130];
	memset(long_id, 'm', 129);
	long_id[129] = 0;
	struct {
		const char *module;
		int rc;
	} bad[] = {{"", IOTCONN_EINVAL}, {"a/b", IOTCONN_EINVAL}, {"a#b", IOTCONN_EINVAL}, {long_id, IOTCONN_ETOOLARGE}};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char cs[512];
		snprintf(cs, sizeof cs, "HostName=localhost;DeviceId=dev-mod;ModuleId=%s;%s", bad[i].module, key);
		iotconn_client_t *none = NULL;
		CHECK_RC(iotconn_client_create(cs, &o, &none), bad[i].rc);
		CHECK(none == NULL && strstr(iotconn_last_error(), "ModuleId"));
	}
}

/* Desired changes made while the device is offline for a token renewal arrive once, latest wins; the next change
 * comes next, a method call is answered, and the statuses are Connected, Disconnected_Retrying / Expired_SAS_Token,
 * Connected. The renewal's reconnect dials within milliseconds of its status event, before any hubsim fault armed
 * after it; a connect budget of one token per renewal period + 3 s holds that dial instead: the first connect takes
 * the token, the renewal waits about 3 s for the next one with the device offline. */
static void renewal(void)
{
	enum { PERIOD_S = IOTCONN_MIN_SAS_RENEW_INTERVAL_S, HOLD_S = 3 };
	iotconn_admission_t *budget = NULL;
	CHECK_RC(iotconn_admission_create(1.0 / (PERIOD_S + HOLD_S), 1, &budget), 0);
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	o.sas_lifetime_s = IOTCONN_MIN_SAS_LIFETIME_S; /* the shortest period the floors allow: renewed after 30 s */
	o.sas_renew_margin_s = IOTCONN_MIN_SAS_LIFETIME_S - PERIOD_S;
	o.admission = budget;
	twins_t s;
	twins_init_with(&s, "dev-renew", &o);
	CHECK_RC(iotconn_admission_destroy(budget), 0); /* the client keeps it */
	iotconn_client_t *c = s.client;
	uint64_t from = hubsim_lines(&hub);
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	CHECK(wait_for(&s, &s.ndesired, 1) == 0); /* the desired section after connecting */
	CHECK(wait_for(&s, &s.renewals, 1) == 0);
	CHECK(hubsim_wait_line(&hub, from, "hubsim: disconnect dev-renew ", WAIT_MS) == 0); /* the old link is gone */
	int64_t made[3];
	for (int i = 0; i < 3; i++)
		made[i] = patch_desired("dev-renew", i);
	char *body = NULL;
	CHECK(hub_http(&hub, "GET", "/devices/dev-renew", NULL, &body) == 200 && body);
	CHECK(body && strstr(body, "\"connected\":false") && strstr(body, "\"connections\":1,")); /* made offline */
	free(body);

	CHECK(wait_for(&s, &s.ndesired, 2) == 0);
	pthread_mutex_lock(&s.mu);
	CHECK(strstr(s.desired_last, "\"n\":2") && strstr(s.desired_last, "\"k0\":true") &&
	      strstr(s.desired_last, "\"k2\":true"));
	pthread_mutex_unlock(&s.mu);
	int64_t next = patch_desired("dev-renew", 9);
	CHECK(wait_for(&s, &s.ndesired, 3) == 0);
	body = NULL;
	CHECK(invoke("dev-renew", "after", 30, &body) == 200 && body && strstr(body, "\"status\":201"));
	free(body);
	pthread_mutex_lock(&s.mu);
	/* one update for the latest version, none for the older ones, none twice; the next change came next */
	CHECK(s.ndesired == 3 && s.desired_versions[1] == made[2] && s.desired_versions[2] == next && s.desired_sorted);
	CHECK(s.nstatus == 3 && s.statuses[0] == IOTCONN_STATUS_CONNECTED && s.reasons[0] == IOTCONN_REASON_CONNECTION_OK &&
	      s.statuses[1] == IOTCONN_STATUS_DISCONNECTED_RETRYING && s.reasons[1] == IOTCONN_REASON_EXPIRED_SAS_TOKEN &&
	      s.statuses[2] == IOTCONN_STATUS_CONNECTED && s.reasons[2] == IOTCONN_REASON_CONNECTION_OK);
	if (s.nstatus >= 3)
		fprintf(stderr, "renewal %.1f s after connecting, offline %.2f s; desired versions %lld %lld %lld, made "
				"offline %lld %lld %lld\n",
			(s.status_ms[1] - s.status_ms[0]) / 1000.0, (s.status_ms[2] - s.status_ms[1]) / 1000.0,
			(long long)s.desired_versions[0], (long long)s.desired_versions[1],
			(long long)s.desired_versions[2], (long long)made[0], (long long)made[1], (long long)made[2]);
	pthread_mutex_unlock(&s.mu);
	CHECK_RC(iotconn_client_destroy(c), 0);
}

int main(void)
{
	const char *devices[] = {"dev-twin", "dev-plain", "dev-mod", "dev-mod/m1", "dev-outage", "dev-renew", NULL};
	if (hubsim_start(&hub, devices) != 0)
		return 1;
	twins_and_methods();
	without_callbacks();
	module_identity();
	outage();
	renewal();
	hubsim_stop(&hub);
	return test_done("twin");
}
