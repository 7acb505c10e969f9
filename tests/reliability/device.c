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
 *   {"t":..,"ev":"refused","mid":"P-SEQ","rc":RC}          iotconn_send refused it (not accepted: no completion due)
 *   {"t":..,"ev":"done","id":ID,"result":"delivered|expired|failed","error":RC}
 *   {"t":..,"ev":"end","accepted":N,"completions":N,"drained":true|false,"status":S}   before closing
 *   {"t":..,"ev":"exit"}                                   after iotconn_client_destroy (every callback has run)
 *
 *   device --cs CONNECTION_STRING [--ca FILE] [--transport mqtt|ws] [--prefix P] [--rate MSGS_PER_S] [--max N]
 *          [--keepalive S]
 *          [--sas-lifetime S] [--sas-margin S] [--op-timeout MS] [--connect-timeout MS] [--drain-timeout MS]
 *          [--retry-count N] [--retry-min MS] [--retry-max MS] [--retry-delta MS] [--queue-dir DIR]
 *
 * --rate 0 sends nothing (a durable-mode restart that only delivers what it recovered); --max N stops sending
 * after N messages and then waits for the stop signal like the rate loop does.
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
		"device: %s%s\nusage: device --cs CONNECTION_STRING [--ca FILE] [--transport mqtt|ws] [--prefix P]\n"
		"       [--rate MSGS_PER_S] [--max N] [--keepalive S] [--sas-lifetime S] [--sas-margin S]\n"
		"       [--op-timeout MS] [--connect-timeout MS] [--drain-timeout MS] [--retry-count N] [--retry-min MS]\n"
		"       [--retry-max MS] [--retry-delta MS] [--queue-dir DIR]\n",
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
	const char *cs, *ca, *transport, *prefix, *queue_dir;
	long long rate, max, keepalive, sas_lifetime, sas_margin, op_timeout, connect_timeout, drain_timeout;
	long long retry_count, retry_min, retry_max, retry_delta;
} config_t;

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
	if (strcmp(c->transport, "mqtt") != 0 && strcmp(c->transport, "ws") != 0)
		return usage("--transport is mqtt or ws, not ", c->transport);
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

/* stream sends P-1, P-2, ... at c->rate until stopped or c->max messages went out. */
static void stream(iotconn_client_t *client, const config_t *c)
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
		char mid[96], payload[64], seqs[24];
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
		uint64_t id = 0;
		/* Counted before the send so the completion (which may come first) never outruns `accepted`. */
		pthread_mutex_lock(&mu);
		accepted++;
		pthread_mutex_unlock(&mu);
		int rc = iotconn_send(client, &msg, &id);
		if (rc == 0) {
			emit("\"ev\":\"sent\",\"id\":%llu,\"mid\":\"%s\"", (unsigned long long)id, mid);
		} else {
			pthread_mutex_lock(&mu);
			accepted--;
			pthread_mutex_unlock(&mu);
			char q[1024];
			emit("\"ev\":\"refused\",\"mid\":\"%s\",\"rc\":%d,\"message\":%s", mid, rc,
			     json_quote(iotconn_last_error(), q, sizeof q));
		}
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
	opts.transport = strcmp(c.transport, "ws") == 0 ? IOTCONN_TRANSPORT_MQTT_WS : IOTCONN_TRANSPORT_MQTT;
	opts.keepalive_s = (uint32_t)c.keepalive;
	opts.sas_lifetime_s = (uint32_t)c.sas_lifetime;
	opts.sas_renew_margin_s = (uint32_t)c.sas_margin;
	opts.operation_timeout_ms = (uint32_t)c.op_timeout;
	opts.queue_dir = c.queue_dir;
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
	if (rc == 0)
		stream(client, &c);

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
	return rc == 0 ? 0 : 1;
}
