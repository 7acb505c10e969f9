/*
 * The reliability matrix's device: a client driven through the C ABI that sends at a steady rate until told to
 * stop (stdin closed, SIGTERM or SIGINT), then waits (bounded) for every completion (unless a fatal error left
 * it Disconnected), closes, and exits. It writes one JSON object per line on stdout, each with "t" =
 * CLOCK_MONOTONIC seconds (the same clock as Python's time.monotonic(), so the orchestrator can put its fault
 * times on the same axis):
 *
 *   {"t":..,"ev":"start","prefix":P}                       before connecting
 *   {"t":..,"ev":"recovered","count":N}                    durable mode: messages loaded from --queue-dir
 *   {"t":..,"ev":"connect","rc":RC,"error":".."}           iotconn_connect's result
 *   {"t":..,"ev":"status","status":"Connected","reason":"Connection_Ok"}
 *   {"t":..,"ev":"log","level":L,"msg":".."}               the library's log lines (retry decisions among them)
 *   {"t":..,"ev":"sent","id":ID,"mid":"P-SEQ"}             iotconn_send accepted it ($.mid = P-SEQ)
 *   {"t":..,"ev":"refused","mid":"P-SEQ","rc":RC,"message":".."}   iotconn_send refused it (no completion due)
 *   {"t":..,"ev":"probe","case":C,"rc":RC,"id":ID,"message":".."}  --near-limits: a message one byte over a limit
 *   {"t":..,"ev":"done","id":ID,"result":"delivered|expired|failed","error":RC}
 *   {"t":..,"ev":"report","id":ID,"seq":SEQ}               --twin-every: iotconn_twin_report accepted {"seq":SEQ}
 *   {"t":..,"ev":"reported","id":ID,"version":V,"error":RC}   its one completion (V: the twin's reported $version)
 *   {"t":..,"ev":"desired","version":V,"patch":".."}       --twin-every: a desired update (patch: its JSON)
 *   {"t":..,"ev":"method","name":N,"payload":"..","rc":RC}  --twin-every: a method call, answered 200 with
 *                                                           {"echo":PAYLOAD} (rc: iotconn_method_respond's)
 *   {"t":..,"ev":"end","accepted":N,"completions":N,"drained":true|false,"status":S}   before closing
 *   {"t":..,"ev":"exit"}                                   after iotconn_client_destroy (every callback has run)
 *
 *   device --cs CONNECTION_STRING [--ca FILE] [--transport mqtt|ws|amqp|amqp-ws] [--prefix P] [--rate MSGS_PER_S] [--max N]
 *          [--keepalive S]
 *          [--sas-lifetime S] [--sas-margin S] [--op-timeout MS] [--connect-timeout MS] [--drain-timeout MS]
 *          [--retry-count N] [--retry-min MS] [--retry-max MS] [--retry-delta MS] [--queue-dir DIR]
 *          [--near-limits SENT_FILE] [--backoff-reset-after MS] [--twin-every N]
 *
 * --rate 0 sends nothing (a durable-mode restart that only delivers what it recovered); --max N stops sending
 * after N messages and then waits for the stop signal like the rate loop does. --twin-every N registers the desired
 * and method callbacks (so the links subscribe to twins and methods) and follows every Nth message P-SEQ with the
 * reported patch {"seq":SEQ}, queued with the messages; the drain then also waits for the patches' completions.
 *
 * --near-limits: every message sits at IoT Hub's or MQTT's limits (see near_limit_message; "sent" and "refused"
 * then carry "case"), and each accepted one is written to SENT_FILE as one JSON line, in the field names of
 * hubsim's GET /devices/{id}/messages, so the hub's record can be compared with it byte for byte:
 *   {"messageId":..,"case":..,"payload":"<base64>","correlationId":..,"contentType":..,"contentEncoding":..,
 *    "propertyList":[["name","value"],..]}
 * Before streaming it sends one probe per limit, one byte over it, which iotconn_send must refuse.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <iotconn.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int stop_requested;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

/* The completion bookkeeping the drain waits on. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond;
static uint64_t accepted, completions;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* emit writes one JSON line: {"t":NOW, then the caller's fields, then }. Lines from several threads stay whole. */
static void emit(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pthread_mutex_lock(&out_mu);
	printf("{\"t\":%.6f,", now_s());
	vprintf(fmt, ap);
	fputs("}\n", stdout);
	fflush(stdout);
	pthread_mutex_unlock(&out_mu);
	va_end(ap);
}

/* json_quote writes s as a JSON string into buf (truncated to fit). */
static const char *json_quote(const char *s, char *buf, size_t cap)
{
	size_t n = 0;
	buf[n++] = '"';
	for (; s && *s && n + 8 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			buf[n++] = '\\';
			buf[n++] = (char)ch;
		} else if (ch < 0x20) {
			n += (size_t)snprintf(buf + n, cap - n, "\\u%04x", ch);
		} else {
			buf[n++] = (char)ch;
		}
	}
	buf[n++] = '"';
	buf[n] = 0;
	return buf;
}

static void on_status(iotconn_status_t status, iotconn_reason_t reason, void *user)
{
	(void)user;
	emit("\"ev\":\"status\",\"status\":\"%s\",\"reason\":\"%s\"", iotconn_status_str(status),
	     iotconn_reason_str(reason));
}

static void on_log(int level, const char *message, void *user)
{
	(void)user;
	char q[2048];
	emit("\"ev\":\"log\",\"level\":%d,\"msg\":%s", level, json_quote(message, q, sizeof q));
}

static void on_send(uint64_t id, int result, int error_code, void *user)
{
	(void)user;
	static const char *const names[] = {"delivered", "expired", "failed"};
	const char *name = result >= 0 && result <= 2 ? names[result] : "unknown";
	char q[1024];
	emit("\"ev\":\"done\",\"id\":%llu,\"result\":\"%s\",\"error\":%d,\"message\":%s", (unsigned long long)id, name,
	     error_code, json_quote(error_code ? iotconn_last_error() : "", q, sizeof q));
	pthread_mutex_lock(&mu);
	completions++;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&mu);
}

static void on_reported(uint64_t id, int64_t version, int error_code, void *user)
{
	(void)user;
	char q[1024];
	emit("\"ev\":\"reported\",\"id\":%llu,\"version\":%lld,\"error\":%d,\"message\":%s", (unsigned long long)id,
	     (long long)version, error_code, json_quote(error_code ? iotconn_last_error() : "", q, sizeof q));
	pthread_mutex_lock(&mu);
	completions++;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&mu);
}

static void on_desired(int64_t version, const char *json, size_t len, void *user)
{
	(void)user, (void)len;
	char q[2048];
	emit("\"ev\":\"desired\",\"version\":%lld,\"patch\":%s", (long long)version, json_quote(json, q, sizeof q));
}

static void on_method(const char *rid, const char *name, const char *json, size_t len, void *user)
{
	iotconn_client_t *client = user;
	char answer[512], qn[256], qp[512];
	int n = snprintf(answer, sizeof answer, "{\"echo\":%.*s}", len ? (int)len : 4, len ? json : "null");
	int rc = n < (int)sizeof answer ? iotconn_method_respond(client, rid, 200, answer, (size_t)n) : IOTCONN_ETOOLARGE;
	emit("\"ev\":\"method\",\"name\":%s,\"payload\":%s,\"rc\":%d", json_quote(name, qn, sizeof qn),
	     json_quote(len ? json : "", qp, sizeof qp), rc);
}

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&stop_requested, 1);
}

/* Stops the stream when stdin reaches end of file (the orchestrator closes the pipe, or dies). */
static void *watch_stdin(void *arg)
{
	(void)arg;
	char buf[256];
	for (;;) {
		ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
		if (n == 0 || (n < 0 && errno != EINTR))
			break;
	}
	atomic_store(&stop_requested, 1);
	return NULL;
}

static void sleep_until(const struct timespec *at)
{
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, at, NULL) == EINTR && !atomic_load(&stop_requested)) {
	}
}

static void add_ns(struct timespec *ts, long long ns)
{
	ns += ts->tv_nsec;
	ts->tv_sec += (time_t)(ns / 1000000000LL);
	ts->tv_nsec = (long)(ns % 1000000000LL);
}

static int usage(const char *why, const char *arg)
{
	fprintf(stderr,
		"device: %s%s\nusage: device --cs CONNECTION_STRING [--ca FILE] [--transport mqtt|ws|amqp|amqp-ws] [--prefix P]\n"
		"       [--rate MSGS_PER_S] [--max N] [--keepalive S] [--sas-lifetime S] [--sas-margin S]\n"
		"       [--op-timeout MS] [--connect-timeout MS] [--drain-timeout MS] [--retry-count N] [--retry-min MS]\n"
		"       [--retry-max MS] [--retry-delta MS] [--queue-dir DIR] [--near-limits SENT_FILE]\n"
		"       [--backoff-reset-after MS] [--twin-every N]\n",
		why, arg ? arg : "");
	return 2;
}

/* parse_num reads a whole decimal number in [lo, hi]. */
static int parse_num(const char *s, long long lo, long long hi, long long *out)
{
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

typedef struct config {
	const char *cs, *ca, *transport, *prefix, *queue_dir, *near_limits;
	long long rate, max, keepalive, sas_lifetime, sas_margin, op_timeout, connect_timeout, drain_timeout;
	long long retry_count, retry_min, retry_max, retry_delta, backoff_reset_after, twin_every;
} config_t;

/* The IOTCONN_TRANSPORT_* of a --transport name, -1 for an unknown one. */
static int transport_of(const char *name)
{
	static const struct {
		const char *name;
		int transport;
	} names[] = {{"mqtt", IOTCONN_TRANSPORT_MQTT}, {"ws", IOTCONN_TRANSPORT_MQTT_WS},
		     {"amqp", IOTCONN_TRANSPORT_AMQP}, {"amqp-ws", IOTCONN_TRANSPORT_AMQP_WS}};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strcmp(name, names[i].name) == 0)
			return names[i].transport;
	return -1;
}

static int parse_args(int argc, char **argv, config_t *c)
{
	iotconn_retry_policy_t def = IOTCONN_RETRY_POLICY_INIT;
	*c = (config_t){.transport = "mqtt", .prefix = "m", .rate = 100, .connect_timeout = 30000, .drain_timeout = 60000,
			.retry_count = def.retry_count, .retry_min = def.min_backoff_ms, .retry_max = def.max_backoff_ms,
			.retry_delta = def.delta_backoff_ms};
	struct {
		const char *name;
		long long *num;
		const char **str;
		long long lo, hi;
	} flags[] = {
		{"--cs", NULL, &c->cs, 0, 0},
		{"--ca", NULL, &c->ca, 0, 0},
		{"--transport", NULL, &c->transport, 0, 0},
		{"--prefix", NULL, &c->prefix, 0, 0},
		{"--queue-dir", NULL, &c->queue_dir, 0, 0},
		{"--near-limits", NULL, &c->near_limits, 0, 0},
		{"--rate", &c->rate, NULL, 0, 100000},
		{"--max", &c->max, NULL, 0, 1000000000},
		{"--keepalive", &c->keepalive, NULL, 0, 1177},
		{"--sas-lifetime", &c->sas_lifetime, NULL, 0, 31536000},
		{"--sas-margin", &c->sas_margin, NULL, 0, 31536000},
		{"--op-timeout", &c->op_timeout, NULL, 0, UINT32_MAX},
		{"--connect-timeout", &c->connect_timeout, NULL, 0, UINT32_MAX},
		{"--drain-timeout", &c->drain_timeout, NULL, 0, 3600000},
		{"--retry-count", &c->retry_count, NULL, -1, INT32_MAX},
		{"--retry-min", &c->retry_min, NULL, 0, UINT32_MAX},
		{"--retry-max", &c->retry_max, NULL, 0, UINT32_MAX},
		{"--retry-delta", &c->retry_delta, NULL, 0, UINT32_MAX},
		{"--backoff-reset-after", &c->backoff_reset_after, NULL, 0, UINT32_MAX},
		{"--twin-every", &c->twin_every, NULL, 0, 1000000000},
	};
	for (int i = 1; i < argc; i += 2) {
		size_t f = 0;
		while (f < sizeof flags / sizeof flags[0] && strcmp(argv[i], flags[f].name) != 0)
			f++;
		if (f == sizeof flags / sizeof flags[0])
			return usage("unknown argument: ", argv[i]);
		if (i + 1 >= argc)
			return usage("no value after ", argv[i]);
		if (flags[f].str)
			*flags[f].str = argv[i + 1];
		else if (parse_num(argv[i + 1], flags[f].lo, flags[f].hi, flags[f].num) != 0)
			return usage("not a number in range: ", argv[i]);
	}
	if (!c->cs)
		return usage("--cs is required", NULL);
	if (transport_of(c->transport) < 0)
		return usage("--transport is mqtt, ws, amqp or amqp-ws, not ", c->transport);
	if (strlen(c->prefix) > 64)
		return usage("--prefix is longer than 64 characters", NULL);
	return 0;
}

/* wait_drained waits until every accepted message completed or timeout_ms passed; returns 1 when drained. It stops
 * early when the client is Disconnected: after a fatal error nothing completes until close (which fails the rest). */
static int wait_drained(iotconn_client_t *client, long long timeout_ms)
{
	struct timespec deadline, step;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	add_ns(&deadline, timeout_ms * 1000000LL);
	pthread_mutex_lock(&mu);
	for (;;) {
		if (completions >= accepted)
			break;
		iotconn_status_t status = IOTCONN_STATUS_CONNECTED;
		iotconn_get_status(client, &status, NULL);
		if (status == IOTCONN_STATUS_DISCONNECTED)
			break;
		clock_gettime(CLOCK_MONOTONIC, &step);
		add_ns(&step, 100000000LL);
		if (step.tv_sec > deadline.tv_sec || (step.tv_sec == deadline.tv_sec && step.tv_nsec > deadline.tv_nsec))
			step = deadline;
		if (pthread_cond_timedwait(&cond, &mu, &step) == ETIMEDOUT && step.tv_sec == deadline.tv_sec &&
		    step.tv_nsec == deadline.tv_nsec)
			break;
	}
	int drained = completions >= accepted;
	pthread_mutex_unlock(&mu);
	return drained;
}

/* ---- --near-limits ------------------------------------------------------------------------------------------ */

/* Property names and values with every byte class a property bag must carry unchanged: the bag's separators, '%'
 * that looks like an escape, '+' (a space in form encoding), MQTT's '/' and wildcards, '?', multi-byte UTF-8,
 * control characters, a "$" name and a value that mimics system properties, an empty value, and the one "iothub-"
 * property a device may set. */
static const iotconn_property_t byte_classes[] = {
	{"space key", " leading, inner and trailing spaces "},
	{"amp&key", "a&b&&c&"},
	{"eq=key", "a=b==c="},
	{"pct%key", "100%25 %zz %"},
	{"plus+key", "a+b +"},
	{"slash/key", "/a/b/"},
	{"q?key", "?a=1&b?"},
	{"hash#key", "#a#+"},
	{"utf8 \xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"}, /* ключ; é € 😀 */
	{"controls", "\x01\t\n\x1f\x7f"},
	{"$key", "$.mid=x&$.cid=y"},
	{"empty", ""},
	{"iothub-creation-time-utc", "2026-11-27T06:23:40.1234567Z"},
};
#define N_BYTE_CLASSES (sizeof byte_classes / sizeof byte_classes[0])

/* The characters IoT Hub allows in a message id, specials first so that every one of them appears. */
static const char mid_chars[] = "-:.+%_#*?!(),=@;$'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/* The fill property's value is made of these (1 to 4 bytes, 3 to 12 percent-encoded), then 'x' to the exact length. */
static const char *const fill_units[] = {"&", "=", "%", "+", "/", "?", "#", " ", "\xc3\xa9", "\xe2\x82\xac",
					 "\xf0\x9f\x98\x80", "~", "a"};
#define MAX_FILL_UNIT_ESCAPED 12

enum { NL_MESSAGE_ID, NL_BYTE_CLASSES, NL_SIZE, NL_TOPIC, NL_ALL, NL_CASES };
static const char *const nl_case_names[NL_CASES] = {"message-id", "byte-classes", "size", "topic", "all-limits"};

#define MAX_DEVICE_ID 128
#define QUOTED_CAP (6 * (IOTCONN_MAX_MQTT_TOPIC_LENGTH + 1) + 16) /* any string here quoted as JSON, \u00XX at worst */

/* The message built last and the storage it points into. */
typedef struct near_limits {
	FILE *sent;
	char topic_prefix[64 + MAX_DEVICE_ID];
	iotconn_message_t msg;
	iotconn_property_t props[3 + N_BYTE_CLASSES]; /* seq, case, the byte classes, fill or a probe's extra */
	char mid[IOTCONN_MAX_MESSAGE_ID_LENGTH + 2], cid[64], seq[24];
	char fill[IOTCONN_MAX_MQTT_TOPIC_LENGTH + 1];
	unsigned char payload[IOTCONN_MAX_MESSAGE_SIZE + 1];
	char b64[(IOTCONN_MAX_MESSAGE_SIZE + 3) / 3 * 4 + 1];
	char quoted[QUOTED_CAP];
} near_limits_t;

static int unreserved(unsigned char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
	       ch == '_' || ch == '.' || ch == '~';
}

/* escaped_len is len(s) percent-encoded as IoT Hub's SDKs and the engine do it: all but A-Z a-z 0-9 - _ . ~ take 3. */
static size_t escaped_len(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += unreserved((unsigned char)*s) ? 1 : 3;
	return n;
}

/* topic_len is the length of the MQTT topic that carries m: the prefix, then "k=v" pairs joined by '&', the set
 * system properties first, each name and value percent-encoded. */
static size_t topic_len(const char *prefix, const iotconn_message_t *m)
{
	const char *sys[][2] = {{"$.mid", m->message_id}, {"$.cid", m->correlation_id}, {"$.ct", m->content_type},
				{"$.ce", m->content_encoding}};
	size_t n = strlen(prefix), pairs = 0;
	for (size_t i = 0; i < sizeof sys / sizeof sys[0]; i++) {
		if (sys[i][1] && *sys[i][1]) {
			n += escaped_len(sys[i][0]) + 1 + escaped_len(sys[i][1]);
			pairs++;
		}
	}
	for (size_t i = 0; i < m->property_count; i++, pairs++)
		n += escaped_len(m->properties[i].key) + 1 + escaped_len(m->properties[i].value);
	return n + (pairs ? pairs - 1 : 0);
}

/* hub_size is m's size as IoT Hub counts it: payload, system property values, property names and values (all set
 * in the messages built here). */
static size_t hub_size(const iotconn_message_t *m)
{
	size_t n = m->payload_len + strlen(m->message_id) + strlen(m->correlation_id) + strlen(m->content_type) +
		   strlen(m->content_encoding);
	for (size_t i = 0; i < m->property_count; i++)
		n += strlen(m->properties[i].key) + strlen(m->properties[i].value);
	return n;
}

/* near_limit_message builds message `seq` of case `kase` in nl->msg: each has a correlation id, content type and
 * content encoding that need escaping and the properties "seq" and "case", and
 *   message-id    a message id of exactly IOTCONN_MAX_MESSAGE_ID_LENGTH allowed characters, every special among them
 *   byte-classes  every property of byte_classes and a payload of every byte value
 *   size          a payload that makes the message exactly IOTCONN_MAX_MESSAGE_SIZE bytes as IoT Hub counts it
 *   topic         a "fill" property that makes the MQTT topic exactly IOTCONN_MAX_MQTT_TOPIC_LENGTH bytes
 *   all-limits    all of these at once.
 * `over` puts the case's limits that many bytes further (the probes). Everything but the fill value and the payload
 * takes a few kilobytes at most (the prefix is at most 64 bytes, the device id MAX_DEVICE_ID), so both fit. */
static void near_limit_message(near_limits_t *nl, const char *prefix, int kase, long long seq, size_t over)
{
	int long_id = kase == NL_MESSAGE_ID || kase == NL_ALL, classes = kase == NL_BYTE_CLASSES || kase == NL_ALL;
	iotconn_message_t *m = &nl->msg;
	*m = (iotconn_message_t)IOTCONN_MESSAGE_INIT;
	size_t n = (size_t)snprintf(nl->mid, sizeof nl->mid, "%s-%lld", prefix, seq);
	if (long_id) {
		nl->mid[n++] = '-'; /* the seq ends here, so ids stay unique */
		for (size_t i = 0; n < IOTCONN_MAX_MESSAGE_ID_LENGTH + over; i++)
			nl->mid[n++] = mid_chars[i % (sizeof mid_chars - 1)];
		nl->mid[n] = 0;
	}
	snprintf(nl->cid, sizeof nl->cid, "corr %lld &=%%+/?# \xc3\xa9", seq);
	snprintf(nl->seq, sizeof nl->seq, "%lld", seq);
	m->message_id = nl->mid;
	m->correlation_id = nl->cid;
	m->content_type = "application/vnd.iotconn+json; charset=utf-8";
	m->content_encoding = "utf-8";
	m->properties = nl->props;
	size_t p = 0;
	nl->props[p++] = (iotconn_property_t){"seq", nl->seq};
	nl->props[p++] = (iotconn_property_t){"case", nl_case_names[kase]};
	if (classes)
		for (size_t i = 0; i < N_BYTE_CLASSES; i++)
			nl->props[p++] = byte_classes[i];
	m->property_count = p;
	if (kase == NL_TOPIC || kase == NL_ALL) {
		nl->props[p] = (iotconn_property_t){"fill", ""};
		m->property_count = p + 1;
		size_t left = IOTCONN_MAX_MQTT_TOPIC_LENGTH + over - topic_len(nl->topic_prefix, m), f = 0;
		for (size_t u = 0; left >= MAX_FILL_UNIT_ESCAPED; u++) {
			const char *unit = fill_units[u % (sizeof fill_units / sizeof fill_units[0])];
			memcpy(nl->fill + f, unit, strlen(unit));
			f += strlen(unit);
			left -= escaped_len(unit);
		}
		memset(nl->fill + f, 'x', left);
		nl->fill[f + left] = 0;
		nl->props[p].value = nl->fill;
	}
	m->payload = nl->payload;
	if (kase == NL_MESSAGE_ID || kase == NL_TOPIC) {
		m->payload_len = (size_t)snprintf((char *)nl->payload, 64, "{\"seq\":%lld}", seq);
	} else {
		/* hub_size counts no payload yet. 131 is odd, so any 256 bytes in a row take every value. */
		m->payload_len = kase == NL_BYTE_CLASSES ? 256 : IOTCONN_MAX_MESSAGE_SIZE + over - hub_size(m);
		for (size_t i = 0; i < m->payload_len; i++)
			nl->payload[i] = (unsigned char)(i * 131 + (size_t)seq);
	}
}

static void base64(const unsigned char *in, size_t n, char *out)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
		*out++ = abc[v >> 18];
		*out++ = abc[(v >> 12) & 63];
		*out++ = i + 1 < n ? abc[(v >> 6) & 63] : '=';
		*out++ = i + 2 < n ? abc[v & 63] : '=';
	}
	*out = 0;
}

static void put_json(near_limits_t *nl, const char *s)
{
	fputs(json_quote(s, nl->quoted, sizeof nl->quoted), nl->sent);
}

/* record_sent writes the accepted nl->msg to SENT_FILE (see the top of the file). */
static void record_sent(near_limits_t *nl, const char *kase)
{
	const iotconn_message_t *m = &nl->msg;
	base64(m->payload, m->payload_len, nl->b64);
	fputs("{\"messageId\":", nl->sent);
	put_json(nl, m->message_id);
	fprintf(nl->sent, ",\"case\":\"%s\",\"payload\":\"%s\",\"correlationId\":", kase, nl->b64);
	put_json(nl, m->correlation_id);
	fputs(",\"contentType\":", nl->sent);
	put_json(nl, m->content_type);
	fputs(",\"contentEncoding\":", nl->sent);
	put_json(nl, m->content_encoding);
	fputs(",\"propertyList\":[", nl->sent);
	for (size_t i = 0; i < m->property_count; i++) {
		fputs(i ? ",[" : "[", nl->sent);
		put_json(nl, m->properties[i].key);
		fputc(',', nl->sent);
		put_json(nl, m->properties[i].value);
		fputc(']', nl->sent);
	}
	fputs("]}\n", nl->sent);
}

/* near_limits_open prepares --near-limits: the topic prefix from the connection string's DeviceId, and SENT_FILE. */
static near_limits_t *near_limits_open(const config_t *c)
{
	const char *id = strstr(c->cs, "DeviceId=");
	size_t n = id ? strcspn(id += strlen("DeviceId="), ";") : 0;
	if (n == 0 || n > MAX_DEVICE_ID || strstr(c->cs, "ModuleId=")) {
		fprintf(stderr, "device: --near-limits needs a device connection string (DeviceId of 1 to %d bytes)\n",
			MAX_DEVICE_ID);
		return NULL;
	}
	near_limits_t *nl = calloc(1, sizeof *nl);
	if (!nl || !(nl->sent = fopen(c->near_limits, "w"))) {
		fprintf(stderr, "device: --near-limits %s: %s\n", c->near_limits, strerror(errno));
		free(nl);
		return NULL;
	}
	snprintf(nl->topic_prefix, sizeof nl->topic_prefix, "devices/%.*s/messages/events/", (int)n, id);
	return nl;
}

/* near_limits_close closes SENT_FILE; returns -1 if any write to it failed. */
static int near_limits_close(near_limits_t *nl)
{
	if (!nl)
		return 0;
	int failed = ferror(nl->sent);
	failed |= fclose(nl->sent);
	if (failed)
		fprintf(stderr, "device: writing the --near-limits file failed\n");
	free(nl);
	return failed ? -1 : 0;
}

/* expecting counts a completion due before the call that starts it (a send, a reported patch), so the completion,
 * which may come first, never outruns `accepted`; settled takes it back when the call returned an error. */
static void expecting(void)
{
	pthread_mutex_lock(&mu);
	accepted++;
	pthread_mutex_unlock(&mu);
}

static int settled(int rc)
{
	if (rc != 0) {
		pthread_mutex_lock(&mu);
		accepted--;
		pthread_mutex_unlock(&mu);
	}
	return rc;
}

/* send_counted is iotconn_send with the drain's bookkeeping. */
static int send_counted(iotconn_client_t *client, const iotconn_message_t *msg, uint64_t *id)
{
	expecting();
	return settled(iotconn_send(client, msg, id));
}

/* report_seq queues the reported patch {"seq":SEQ}, with the drain's bookkeeping. */
static void report_seq(iotconn_client_t *client, long long seq)
{
	char patch[48], q[1024];
	int n = snprintf(patch, sizeof patch, "{\"seq\":%lld}", seq);
	uint64_t id = 0;
	expecting();
	int rc = settled(iotconn_twin_report(client, patch, (size_t)n, &id));
	if (rc == 0)
		emit("\"ev\":\"report\",\"id\":%llu,\"seq\":%lld", (unsigned long long)id, seq);
	else
		emit("\"ev\":\"refused\",\"mid\":\"report-%lld\",\"rc\":%d,\"message\":%s", seq, rc,
		     json_quote(iotconn_last_error(), q, sizeof q));
}

/* probe_limits sends one message per limit one byte past it, or with a name reserved to the hub; iotconn_send must
 * refuse each (the matrix checks the code). They use seq 0, which the stream never does. Over AMQP no topic
 * carries the properties, so the MQTT topic's limit is none and its probe is left out. */
static void probe_limits(iotconn_client_t *client, near_limits_t *nl, const char *prefix, int amqp)
{
	static const struct {
		const char *name;
		int kase;
		size_t over;
		const char *extra_key; /* a property added to the case's message */
	} probes[] = {
		{"message-id+1", NL_MESSAGE_ID, 1, NULL},
		{"size+1", NL_SIZE, 1, NULL},
		{"topic+1", NL_TOPIC, 1, NULL},
		{"reserved-key", NL_BYTE_CLASSES, 0, "IoTHub-Ack"},
	};
	for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
		if (amqp && probes[i].kase == NL_TOPIC)
			continue;
		near_limit_message(nl, prefix, probes[i].kase, 0, probes[i].over);
		if (probes[i].extra_key)
			nl->props[nl->msg.property_count++] = (iotconn_property_t){probes[i].extra_key, "full"};
		uint64_t id = 0;
		int rc = send_counted(client, &nl->msg, &id);
		char q[1024];
		emit("\"ev\":\"probe\",\"case\":\"%s\",\"rc\":%d,\"id\":%llu,\"message\":%s", probes[i].name, rc,
		     (unsigned long long)id, json_quote(rc ? iotconn_last_error() : "", q, sizeof q));
	}
}

/* stream sends P-1, P-2, ... at c->rate until stopped or c->max messages went out; with nl, the near-limit cases in
 * turn. */
static void stream(iotconn_client_t *client, const config_t *c, near_limits_t *nl)
{
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	long long seq = 0;
	while (!atomic_load(&stop_requested)) {
		if (c->rate == 0 || (c->max > 0 && seq >= c->max)) {
			add_ns(&next, 50000000LL); /* idle: look at the stop flag every 50 ms */
			sleep_until(&next);
			continue;
		}
		seq++;
		char mid[96], payload[64], seqs[24], case_field[32] = "";
		snprintf(mid, sizeof mid, "%s-%lld", c->prefix, seq);
		snprintf(payload, sizeof payload, "{\"seq\":%lld}", seq);
		snprintf(seqs, sizeof seqs, "%lld", seq);
		iotconn_property_t props[] = {{"seq", seqs}};
		iotconn_message_t msg = IOTCONN_MESSAGE_INIT;
		msg.payload = payload;
		msg.payload_len = strlen(payload);
		msg.message_id = mid;
		msg.content_type = "application/json";
		msg.properties = props;
		msg.property_count = 1;
		const iotconn_message_t *out = &msg;
		int kase = (int)(seq % NL_CASES);
		if (nl) {
			near_limit_message(nl, c->prefix, kase, seq, 0);
			snprintf(case_field, sizeof case_field, ",\"case\":\"%s\"", nl_case_names[kase]);
			out = &nl->msg;
		}
		uint64_t id = 0;
		int rc = send_counted(client, out, &id);
		char qm[512], q[1024];
		json_quote(out->message_id, qm, sizeof qm);
		if (rc == 0) {
			emit("\"ev\":\"sent\",\"id\":%llu,\"mid\":%s%s", (unsigned long long)id, qm, case_field);
			if (nl)
				record_sent(nl, nl_case_names[kase]);
		} else {
			emit("\"ev\":\"refused\",\"mid\":%s%s,\"rc\":%d,\"message\":%s", qm, case_field, rc,
			     json_quote(iotconn_last_error(), q, sizeof q));
		}
		if (c->twin_every > 0 && seq % c->twin_every == 0)
			report_seq(client, seq);
		add_ns(&next, 1000000000LL / c->rate);
		sleep_until(&next);
	}
}

int main(int argc, char **argv)
{
	config_t c;
	int rc = parse_args(argc, argv, &c);
	if (rc != 0)
		return rc;
	near_limits_t *nl = NULL;
	if (c.near_limits && !(nl = near_limits_open(&c)))
		return 2;

	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&cond, &ca);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	pthread_t watcher;
	if (pthread_create(&watcher, NULL, watch_stdin, NULL) != 0)
		return 1;
	pthread_detach(watcher); /* blocked in read() until stdin closes; the process may end first */

	iotconn_options_t opts = IOTCONN_OPTIONS_INIT;
	opts.ca_file = c.ca;
	opts.transport = transport_of(c.transport);
	opts.keepalive_s = (uint32_t)c.keepalive;
	opts.sas_lifetime_s = (uint32_t)c.sas_lifetime;
	opts.sas_renew_margin_s = (uint32_t)c.sas_margin;
	opts.operation_timeout_ms = (uint32_t)c.op_timeout;
	opts.queue_dir = c.queue_dir;
	opts.backoff_reset_after_ms = (uint32_t)c.backoff_reset_after;
	iotconn_client_t *client = NULL;
	char q[1024];
	emit("\"ev\":\"start\",\"prefix\":%s", json_quote(c.prefix, q, sizeof q));
	if (iotconn_client_create(c.cs, &opts, &client) != 0) {
		fprintf(stderr, "device: iotconn_client_create: %s\n", iotconn_last_error());
		return 1;
	}
	iotconn_retry_policy_t policy = IOTCONN_RETRY_POLICY_INIT;
	policy.retry_count = (int32_t)c.retry_count;
	policy.min_backoff_ms = (uint32_t)c.retry_min;
	policy.max_backoff_ms = (uint32_t)c.retry_max;
	policy.delta_backoff_ms = (uint32_t)c.retry_delta;
	if (iotconn_set_retry_policy(client, &policy) != 0) {
		fprintf(stderr, "device: iotconn_set_retry_policy: %s\n", iotconn_last_error());
		iotconn_client_destroy(client);
		return 2;
	}
	iotconn_register_status_callback(client, on_status, NULL);
	iotconn_register_send_callback(client, on_send, NULL);
	iotconn_register_log_callback(client, on_log, NULL);
	if (c.twin_every > 0) { /* before connecting: the links subscribe to twins and method calls */
		iotconn_register_reported_callback(client, on_reported, NULL);
		iotconn_register_desired_callback(client, on_desired, NULL);
		iotconn_register_method_callback(client, on_method, client);
	}
	if (c.queue_dir) {
		uint64_t recovered = 0;
		if (iotconn_queue_recovered(client, &recovered) != 0) {
			fprintf(stderr, "device: iotconn_queue_recovered: %s\n", iotconn_last_error());
			iotconn_client_destroy(client);
			return 1;
		}
		pthread_mutex_lock(&mu);
		accepted += recovered;
		pthread_mutex_unlock(&mu);
		emit("\"ev\":\"recovered\",\"count\":%llu", (unsigned long long)recovered);
	}

	rc = iotconn_connect(client, (uint32_t)c.connect_timeout);
	emit("\"ev\":\"connect\",\"rc\":%d,\"error\":%s", rc, json_quote(rc ? iotconn_last_error() : "", q, sizeof q));
	if (rc == 0 && nl)
		probe_limits(client, nl, c.prefix,
		             opts.transport == IOTCONN_TRANSPORT_AMQP || opts.transport == IOTCONN_TRANSPORT_AMQP_WS);
	if (rc == 0)
		stream(client, &c, nl);

	int drained = wait_drained(client, rc == 0 ? c.drain_timeout : 0);
	pthread_mutex_lock(&mu);
	unsigned long long n_accepted = accepted, n_completed = completions;
	pthread_mutex_unlock(&mu);
	iotconn_status_t status = IOTCONN_STATUS_DISCONNECTED;
	iotconn_get_status(client, &status, NULL);
	emit("\"ev\":\"end\",\"accepted\":%llu,\"completions\":%llu,\"drained\":%s,\"status\":\"%s\"", n_accepted,
	     n_completed, drained ? "true" : "false", iotconn_status_str(status));
	iotconn_client_destroy(client);
	emit("\"ev\":\"exit\"");
	return near_limits_close(nl) == 0 && rc == 0 ? 0 : 1;
}
