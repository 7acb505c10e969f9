/*
 * Send throughput through the C ABI: one connection, QoS 1, 256-byte payloads, pipelined (send N, then wait for
 * N completions). Prints one line per round:
 *   round=R msgs=N seconds=S rate=MSG_PER_S send_ns=NS_PER_IOTCONN_SEND_CALL
 *
 *   iotconn_bench CONNECTION_STRING CA_FILE N ROUNDS
 */
#include <errno.h>
#include <iotconn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned long completed, failed, target;

static void on_send(uint64_t id, int result, int error_code, void *user)
{
	(void)id, (void)error_code, (void)user;
	pthread_mutex_lock(&mu);
	completed++;
	failed += result != IOTCONN_SEND_DELIVERED;
	if (completed == target) /* wake the sender once per round, not per message */
		pthread_cond_signal(&cond);
	pthread_mutex_unlock(&mu);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s CONNECTION_STRING CA_FILE N ROUNDS\n", argv[0]);
		return 2;
	}
	unsigned long n = strtoul(argv[3], NULL, 10);
	int rounds = atoi(argv[4]);
	iotconn_options_t opts = IOTCONN_OPTIONS_INIT;
	opts.ca_file = argv[2];
	opts.queue_max_messages = (uint32_t)n + 1;
	opts.queue_max_bytes = (uint64_t)(n + 1) * 1024;
	iotconn_client_t *c = NULL;
	if (iotconn_client_create(argv[1], &opts, &c) != 0 || iotconn_register_send_callback(c, on_send, NULL) != 0) {
		fprintf(stderr, "create: %s\n", iotconn_last_error());
		return 1;
	}
	if (iotconn_connect(c, 60000) != 0) {
		fprintf(stderr, "connect: %s\n", iotconn_last_error());
		return 1;
	}
	char payload[256];
	memset(payload, 'x', sizeof payload);
	iotconn_message_t msg = IOTCONN_MESSAGE_INIT;
	msg.payload = payload;
	msg.payload_len = sizeof payload;
	int status = 0;
	for (int r = 1; r <= rounds && status == 0; r++) {
		pthread_mutex_lock(&mu);
		target = completed + n;
		pthread_mutex_unlock(&mu);
		double start = now_s();
		for (unsigned long i = 0; i < n; i++) {
			int rc = iotconn_send(c, &msg, NULL);
			if (rc != 0) {
				fprintf(stderr, "send: %s\n", iotconn_last_error());
				return 1;
			}
		}
		double sent = now_s();
		struct timespec deadline;
		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_sec += 300;
		pthread_mutex_lock(&mu);
		while (completed < target)
			if (pthread_cond_timedwait(&cond, &mu, &deadline) == ETIMEDOUT)
				break;
		int ok = completed >= target && failed == 0;
		pthread_mutex_unlock(&mu);
		double end = now_s();
		if (!ok) {
			fprintf(stderr, "round %d: completions missing or failed\n", r);
			status = 1;
			break;
		}
		printf("round=%d msgs=%lu seconds=%.3f rate=%.0f send_ns=%.0f\n", r, n, end - start,
		       (double)n / (end - start), (sent - start) * 1e9 / (double)n);
		fflush(stdout);
	}
	iotconn_client_destroy(c);
	return status;
}
