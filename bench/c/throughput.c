/*
 * Send cost through the C ABI, thread dispatch, QoS 1, 256-byte payloads. One line per round:
 *
 *   pipelined (default): one connection; send N, then wait for the N completions
 *     round=R msgs=N seconds=S rate=MSG_PER_S send_ns=NS_PER_IOTCONN_SEND_CALL
 *   window1: one connection; send one message, wait for its completion (the send callback signals a condition
 *   variable), then the next; latency = from the iotconn_send call to the wake-up after its callback
 *     round=R msgs=N seconds=S rate=MSG_PER_S p50_us=US p99_us=US
 *   connect: every round is one fresh client, iotconn_client_create + iotconn_connect (blocking) until it
 *   returns Connected, then iotconn_client_destroy (not timed); N is unused
 *     round=R connect_us=US
 *
 *   iotconn_bench [-m pipelined|window1|connect] [-t mqtt|amqp] CONNECTION_STRING CA_FILE N ROUNDS
 *
 * -t amqp: over IOTCONN_TRANSPORT_AMQP (the connection string's GatewayHostName names the AMQP listener).
 */
#include <errno.h>
#include <iotconn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned long completed, failed, target;

static void on_send(uint64_t id, int result, int error_code, void *user)
{
	(void)id, (void)error_code, (void)user;
	pthread_mutex_lock(&mu);
	completed++;
	failed += result != IOTCONN_SEND_DELIVERED;
	int wake = completed == target; /* wake the sender once per wait, not per message */
	pthread_mutex_unlock(&mu);
	if (wake) /* after the unlock: a sender woken under the lock would only block on it again */
		pthread_cond_signal(&cond);
}

/* Waits until every completion up to target came (at most timeout_s); says whether all came and were delivered. */
static int wait_target(int timeout_s)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_s;
	pthread_mutex_lock(&mu);
	while (completed < target)
		if (pthread_cond_timedwait(&cond, &mu, &deadline) == ETIMEDOUT)
			break;
	int ok = completed >= target && failed == 0;
	pthread_mutex_unlock(&mu);
	return ok;
}

static void add_target(unsigned long n)
{
	pthread_mutex_lock(&mu);
	target = completed + n;
	pthread_mutex_unlock(&mu);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The q-quantile (nearest rank) of v[0..n), which it sorts. */
static double quantile(double *v, unsigned long n, double q)
{
	qsort(v, n, sizeof *v, cmp_double);
	unsigned long rank = (unsigned long)(q * (double)n + 0.999999);
	return v[(rank == 0 ? 1 : rank) - 1];
}

/* IOTCONN_TRANSPORT_* of the clients (-t). */
static int transport = IOTCONN_TRANSPORT_MQTT;

static iotconn_client_t *create(const char *cs, const char *ca, unsigned long n)
{
	iotconn_options_t opts = IOTCONN_OPTIONS_INIT;
	opts.ca_file = ca;
	opts.transport = transport;
	if (n > 0) {
		opts.queue_max_messages = (uint32_t)n + 1;
		opts.queue_max_bytes = (uint64_t)(n + 1) * 1024;
	}
	iotconn_client_t *c = NULL;
	if (iotconn_client_create(cs, &opts, &c) != 0 || iotconn_register_send_callback(c, on_send, NULL) != 0) {
		fprintf(stderr, "create: %s\n", iotconn_last_error());
		return NULL;
	}
	return c;
}

static int send_one(iotconn_client_t *c, const iotconn_message_t *msg)
{
	if (iotconn_send(c, msg, NULL) != 0) {
		fprintf(stderr, "send: %s\n", iotconn_last_error());
		return -1;
	}
	return 0;
}

/* One round of pipelined sends; prints its line. */
static int round_pipelined(iotconn_client_t *c, const iotconn_message_t *msg, unsigned long n, int r)
{
	add_target(n);
	double start = now_s();
	for (unsigned long i = 0; i < n; i++)
		if (send_one(c, msg) != 0)
			return -1;
	double sent = now_s();
	if (!wait_target(300)) {
		fprintf(stderr, "round %d: completions missing or failed\n", r);
		return -1;
	}
	double end = now_s();
	printf("round=%d msgs=%lu seconds=%.3f rate=%.0f send_ns=%.0f\n", r, n, end - start, (double)n / (end - start),
	       (sent - start) * 1e9 / (double)n);
	return 0;
}

/* One round of window-one sends; lat holds n latencies. */
static int round_window1(iotconn_client_t *c, const iotconn_message_t *msg, unsigned long n, int r, double *lat)
{
	double start = now_s();
	for (unsigned long i = 0; i < n; i++) {
		add_target(1);
		double t0 = now_s();
		if (send_one(c, msg) != 0)
			return -1;
		if (!wait_target(60)) {
			fprintf(stderr, "round %d: message %lu not completed or failed\n", r, i);
			return -1;
		}
		lat[i] = now_s() - t0;
	}
	double end = now_s();
	printf("round=%d msgs=%lu seconds=%.3f rate=%.0f p50_us=%.1f p99_us=%.1f\n", r, n, end - start,
	       (double)n / (end - start), quantile(lat, n, 0.50) * 1e6, quantile(lat, n, 0.99) * 1e6);
	return 0;
}

static int run_connects(const char *cs, const char *ca, int rounds)
{
	for (int r = 1; r <= rounds; r++) {
		double start = now_s();
		iotconn_client_t *c = create(cs, ca, 0);
		if (c == NULL)
			return 1;
		if (iotconn_connect(c, 60000) != 0) {
			fprintf(stderr, "connect: %s\n", iotconn_last_error());
			return 1;
		}
		double end = now_s();
		iotconn_client_destroy(c);
		printf("round=%d connect_us=%.0f\n", r, (end - start) * 1e6);
		fflush(stdout);
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = "pipelined";
	int opt;
	while ((opt = getopt(argc, argv, "m:t:")) != -1) {
		if (opt == 'm')
			mode = optarg;
		else if (opt == 't' && strcmp(optarg, "mqtt") == 0)
			transport = IOTCONN_TRANSPORT_MQTT;
		else if (opt == 't' && strcmp(optarg, "amqp") == 0)
			transport = IOTCONN_TRANSPORT_AMQP;
		else
			goto usage;
	}
	if (argc - optind != 4 ||
	    (strcmp(mode, "pipelined") != 0 && strcmp(mode, "window1") != 0 && strcmp(mode, "connect") != 0))
		goto usage;
	const char *cs = argv[optind], *ca = argv[optind + 1];
	unsigned long n = strtoul(argv[optind + 2], NULL, 10);
	int rounds = atoi(argv[optind + 3]);
	if (strcmp(mode, "connect") == 0)
		return run_connects(cs, ca, rounds);
	if (n == 0)
		goto usage;

	iotconn_client_t *c = create(cs, ca, n);
	if (c == NULL)
		return 1;
	if (iotconn_connect(c, 60000) != 0) {
		fprintf(stderr, "connect: %s\n", iotconn_last_error());
		return 1;
	}
	char payload[256];
	memset(payload, 'x', sizeof payload);
	iotconn_message_t msg = IOTCONN_MESSAGE_INIT;
	msg.payload = payload;
	msg.payload_len = sizeof payload;
	double *lat = strcmp(mode, "window1") == 0 ? malloc(n * sizeof *lat) : NULL;
	int status = 0;
	for (int r = 1; r <= rounds && status == 0; r++) {
		status = lat ? round_window1(c, &msg, n, r, lat) : round_pipelined(c, &msg, n, r);
		fflush(stdout);
	}
	free(lat);
	iotconn_client_destroy(c);
	return status == 0 ? 0 : 1;

usage:
	fprintf(stderr, "usage: %s [-m pipelined|window1|connect] [-t mqtt|amqp] CONNECTION_STRING CA_FILE N ROUNDS\n",
		argv[0]);
	return 2;
}
