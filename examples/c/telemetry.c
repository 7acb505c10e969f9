/*
 * A small device app: connects with a device connection string, reports a property to its twin, sends a telemetry
 * message every interval, and prints every connection status change, send completion, reported-patch completion
 * and desired-properties update (with its $version); it answers every direct method call with status 200 and
 * {"method":NAME}. At the end it waits for the outstanding completions, closes, and prints what it saw.
 *
 *   telemetry CONNECTION_STRING [CA_FILE] [COUNT] [INTERVAL_MS]
 *
 * CA_FILE is the PEM of the hub's CA (hubsim prints it); "-" or absent means the system roots.
 */
#include <errno.h>
#include <iotconn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct app {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	unsigned long sent, delivered, failed;
	int transitions;
	int reported; /* the reported patch has its completion */
	iotconn_client_t *client;
} app_t;

static void on_status(iotconn_status_t status, iotconn_reason_t reason, void *user)
{
	app_t *app = user;
	pthread_mutex_lock(&app->mu);
	app->transitions++;
	pthread_mutex_unlock(&app->mu);
	printf("status: %s / %s\n", iotconn_status_str(status), iotconn_reason_str(reason));
	fflush(stdout);
}

static void on_send(uint64_t id, int result, int error_code, void *user)
{
	app_t *app = user;
	if (result == IOTCONN_SEND_DELIVERED)
		printf("delivered: id=%llu\n", (unsigned long long)id);
	else
		printf("failed: id=%llu result=%d error=%s (%s)\n", (unsigned long long)id, result,
		       iotconn_strerror(error_code), iotconn_last_error());
	fflush(stdout);
	pthread_mutex_lock(&app->mu);
	if (result == IOTCONN_SEND_DELIVERED)
		app->delivered++;
	else
		app->failed++;
	pthread_cond_broadcast(&app->cond);
	pthread_mutex_unlock(&app->mu);
}

static void on_message(const iotconn_message_t *msg, void *user)
{
	(void)user;
	printf("c2d: %.*s\n", (int)msg->payload_len, (const char *)msg->payload);
	fflush(stdout);
}

static void on_reported(uint64_t id, int64_t version, int error_code, void *user)
{
	app_t *app = user;
	if (error_code == 0)
		printf("reported: id=%llu version=%lld\n", (unsigned long long)id, (long long)version);
	else
		printf("reported: id=%llu failed: %s\n", (unsigned long long)id, iotconn_strerror(error_code));
	fflush(stdout);
	pthread_mutex_lock(&app->mu);
	app->reported = 1;
	pthread_cond_broadcast(&app->cond);
	pthread_mutex_unlock(&app->mu);
}

/* Desired properties: the hub's patches, and after every reconnect what changed while offline. */
static void on_desired(int64_t version, const char *json, size_t len, void *user)
{
	(void)user;
	printf("desired: version=%lld %.*s\n", (long long)version, (int)len, json);
	fflush(stdout);
}

/* Answers at once; a call may also be answered later, from any thread. */
static void on_method(const char *request_id, const char *name, const char *json, size_t len, void *user)
{
	app_t *app = user;
	char answer[256];
	int n = snprintf(answer, sizeof answer, "{\"method\":\"%s\"}", name);
	int rc = iotconn_method_respond(app->client, request_id, 200, answer, (size_t)n);
	printf("method: %s %.*s -> 200 %s\n", name, (int)len, json ? json : "", rc == 0 ? "answered" : iotconn_strerror(rc));
	fflush(stdout);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s CONNECTION_STRING [CA_FILE] [COUNT] [INTERVAL_MS]\n", argv[0]);
		return 2;
	}
	const char *ca = argc > 2 && strcmp(argv[2], "-") != 0 ? argv[2] : NULL;
	long count = argc > 3 ? atol(argv[3]) : 20;
	long interval = argc > 4 ? atol(argv[4]) : 1000;

	app_t app = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	iotconn_options_t opts = IOTCONN_OPTIONS_INIT;
	opts.ca_file = ca;
	iotconn_client_t *client = NULL;
	if (iotconn_client_create(argv[1], &opts, &client) != 0) {
		fprintf(stderr, "create: %s\n", iotconn_last_error());
		return 1;
	}
	iotconn_register_status_callback(client, on_status, &app);
	iotconn_register_send_callback(client, on_send, &app);
	iotconn_register_message_callback(client, on_message, &app);
	/* Registered before connecting: the connection subscribes to twins and method calls. */
	iotconn_register_reported_callback(client, on_reported, &app);
	iotconn_register_desired_callback(client, on_desired, &app);
	iotconn_register_method_callback(client, on_method, &app);
	app.client = client;

	int rc = iotconn_connect(client, 60000);
	if (rc != 0) {
		fprintf(stderr, "connect: %s (%s)\n", iotconn_strerror(rc), iotconn_last_error());
		iotconn_client_destroy(client);
		return 1;
	}
	/* Queued like a message, so it takes the first id; on_reported tells how it ended. */
	char report[96];
	int report_len = snprintf(report, sizeof report, "{\"example\":\"telemetry\",\"interval_ms\":%ld}", interval);
	uint64_t report_id = 0;
	if (iotconn_twin_report(client, report, (size_t)report_len, &report_id) != 0)
		fprintf(stderr, "report: %s\n", iotconn_last_error());
	for (long i = 1; i <= count; i++) {
		char payload[128], mid[64], seq[24];
		snprintf(payload, sizeof payload, "{\"seq\":%ld,\"temperature\":%.1f}", i, 20.0 + (double)(i % 50) / 10);
		snprintf(mid, sizeof mid, "telemetry-%ld", i);
		snprintf(seq, sizeof seq, "%ld", i);
		iotconn_property_t props[] = {{"seq", seq}};
		iotconn_message_t msg = IOTCONN_MESSAGE_INIT;
		msg.payload = payload;
		msg.payload_len = strlen(payload);
		msg.message_id = mid;
		msg.content_type = "application/json";
		msg.content_encoding = "utf-8";
		msg.properties = props;
		msg.property_count = 1;
		uint64_t id = 0;
		rc = iotconn_send(client, &msg, &id);
		if (rc != 0) {
			fprintf(stderr, "send %ld: %s (%s)\n", i, iotconn_strerror(rc), iotconn_last_error());
			continue;
		}
		pthread_mutex_lock(&app.mu);
		app.sent++;
		pthread_mutex_unlock(&app.mu);
		printf("sent: id=%llu %s\n", (unsigned long long)id, mid);
		fflush(stdout);
		if (i < count)
			sleep_ms(interval);
	}

	/* Every accepted message ends in exactly one completion; wait for them (bounded). */
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 120;
	pthread_mutex_lock(&app.mu);
	while (app.delivered + app.failed < app.sent || (report_id && !app.reported))
		if (pthread_cond_timedwait(&app.cond, &app.mu, &deadline) == ETIMEDOUT)
			break;
	unsigned long sent = app.sent, delivered = app.delivered, failed = app.failed;
	pthread_mutex_unlock(&app.mu);

	iotconn_client_destroy(client);
	printf("client: sent=%lu delivered=%lu failed=%lu\n", sent, delivered, failed);
	return delivered == sent ? 0 : 1;
}
