/* The outbound queue through the ABI, against a hubsim process: struct versions, the drop-oldest overflow policy,
 * a message's time-to-live, and durable mode across a destroyed client (queue_dir, iotconn_queue_recovered). */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define WAIT_MS 60000
#define MAX_ID 16

static hubsim_t hub;

/* What the send callback saw, by message id: the completion count, result and error code. */
typedef struct sends {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int count[MAX_ID + 1], result[MAX_ID + 1], code[MAX_ID + 1];
	int total;
} sends_t;

static void on_send(uint64_t id, int result, int error_code, void *user)
{
	sends_t *s = user;
	pthread_mutex_lock(&s->mu);
	if (id <= MAX_ID) {
		s->count[id]++;
		s->result[id] = result;
		s->code[id] = error_code;
	}
	s->total++;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

static void sends_init(sends_t *s)
{
	memset(s, 0, sizeof *s);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cond, NULL);
}

/* Waits until n completions arrived; 0 or -1 on timeout. */
static int sends_wait(sends_t *s, int n)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_MS / 1000;
	int rc = 0;
	pthread_mutex_lock(&s->mu);
	while (s->total < n && rc == 0)
		rc = pthread_cond_timedwait(&s->cond, &s->mu, &until);
	int ok = s->total >= n ? 0 : -1;
	pthread_mutex_unlock(&s->mu);
	if (ok != 0)
		fprintf(stderr, "%d of %d completions\n", s->total, n);
	return ok;
}

static iotconn_client_t *client_with(iotconn_options_t *o, sends_t *s)
{
	iotconn_client_t *c = NULL;
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, "dev-q"), o, &c), 0);
	if (c)
		CHECK_RC(iotconn_register_send_callback(c, on_send, s), 0);
	return c;
}

static size_t hub_distinct(void)
{
	size_t total = 0, distinct = 0;
	CHECK(hub_count_messages(&hub, "dev-q", &total, &distinct) == 0);
	return distinct;
}

static void test_struct_versions(void)
{
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	iotconn_client_t *c = NULL;
	o.queue_overflow = 7;
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, "dev-q"), &o, &c), IOTCONN_EINVAL);
	o.size = offsetof(iotconn_options_t, queue_overflow); /* a program built before the queue fields */
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, "dev-q"), &o, &c), 0);
	o.size = offsetof(iotconn_options_t, queue_overflow) + 1;
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, "dev-q"), &o, &c), IOTCONN_EINVAL);

	iotconn_message_t m = IOTCONN_MESSAGE_INIT;
	m.payload = "x";
	m.payload_len = 1;
	m.size = offsetof(iotconn_message_t, ttl_ms);
	CHECK_RC(iotconn_send(c, &m, NULL), 0);
	m.size = sizeof m + 8;
	CHECK_RC(iotconn_send(c, &m, NULL), IOTCONN_EINVAL);
	uint64_t n = 99;
	CHECK_RC(iotconn_queue_recovered(c, &n), 0);
	CHECK(n == 0);
	CHECK_RC(iotconn_queue_recovered(c, NULL), IOTCONN_EINVAL);
	CHECK_RC(iotconn_client_destroy(c), 0);
	CHECK_RC(iotconn_queue_recovered(c, &n), IOTCONN_EBADHANDLE);
	CHECK(strcmp(iotconn_strerror(IOTCONN_EDROPPED), "unknown error") != 0);
}

static void test_drop_oldest(void)
{
	sends_t s;
	sends_init(&s);
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	o.queue_max_messages = 2;
	o.queue_overflow = IOTCONN_QUEUE_OVERFLOW_DROP_OLDEST;
	iotconn_client_t *c = client_with(&o, &s);
	size_t before = hub_distinct();
	for (int i = 0; i < 3; i++)
		CHECK_RC(send_text(c, "drop", NULL, NULL), 0);
	CHECK(sends_wait(&s, 1) == 0);
	CHECK(s.count[1] == 1 && s.result[1] == IOTCONN_SEND_FAILED && s.code[1] == IOTCONN_EDROPPED);
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	CHECK(sends_wait(&s, 3) == 0);
	CHECK(s.result[2] == IOTCONN_SEND_DELIVERED && s.result[3] == IOTCONN_SEND_DELIVERED);
	CHECK(hub_distinct() == before + 2);
	CHECK_RC(iotconn_client_destroy(c), 0);
}

static void test_time_to_live(void)
{
	sends_t s;
	sends_init(&s);
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	iotconn_client_t *c = client_with(&o, &s);
	iotconn_message_t m = IOTCONN_MESSAGE_INIT;
	m.payload = "ttl";
	m.payload_len = 3;
	m.ttl_ms = 50; /* never connected: it can only expire */
	uint64_t id = 0;
	CHECK_RC(iotconn_send(c, &m, &id), 0);
	CHECK(sends_wait(&s, 1) == 0);
	CHECK(id == 1 && s.result[1] == IOTCONN_SEND_EXPIRED && s.code[1] == IOTCONN_ETIMEOUT);
	CHECK_RC(iotconn_client_destroy(c), 0);
}

static void test_durable_across_destroy(void)
{
	char dir[] = "/tmp/iotconn-queue-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	sends_t s1, s2;
	sends_init(&s1);
	sends_init(&s2);
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	o.queue_dir = dir;
	iotconn_client_t *c1 = client_with(&o, &s1);
	for (int i = 0; i < 5; i++)
		CHECK_RC(send_text(c1, "durable", NULL, NULL), 0);
	iotconn_client_t *other = NULL;
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, "dev-q"), &o, &other), IOTCONN_ESTORE);
	CHECK(strstr(iotconn_last_error(), "in use") != NULL);
	CHECK_RC(iotconn_client_destroy(c1), 0);
	CHECK(s1.total == 5 && s1.code[5] == IOTCONN_ECLOSED);

	size_t before = hub_distinct();
	iotconn_client_t *c2 = client_with(&o, &s2);
	uint64_t n = 0;
	CHECK_RC(iotconn_queue_recovered(c2, &n), 0);
	CHECK(n == 5);
	CHECK_RC(iotconn_connect(c2, WAIT_MS), 0);
	CHECK(sends_wait(&s2, 5) == 0);
	for (int id = 1; id <= 5; id++)
		CHECK(s2.count[id] == 1 && s2.result[id] == IOTCONN_SEND_DELIVERED);
	CHECK(hub_distinct() == before + 5);
	CHECK_RC(iotconn_client_destroy(c2), 0);

	char path[sizeof dir + 16];
	snprintf(path, sizeof path, "%s/queue.db", dir);
	CHECK(unlink(path) == 0 && rmdir(dir) == 0);
}

int main(void)
{
	const char *devices[] = {"dev-q", NULL};
	if (hubsim_start(&hub, devices) != 0)
		return 1;
	test_struct_versions();
	test_drop_oldest();
	test_time_to_live();
	test_durable_across_destroy();
	hubsim_stop(&hub);
	return test_done("queue");
}
