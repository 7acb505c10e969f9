/* Callbacks in both dispatch modes: THREAD runs them on a library thread; POLL runs them only inside
 * iotconn_poll(), on the caller's thread. Also C2D messages with properties, and callbacks that call back into
 * the library (send and close from inside a callback; destroy there is refused). */
#include <string.h>

#include "harness.h"

#define WAIT_MS 60000
#define N 20

static hubsim_t hub;
static pthread_t main_thread;

typedef struct seen {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int dispatch;
	int in_poll;       /* set by the main thread around iotconn_poll() */
	int wrong_thread;  /* callbacks that ran where the mode forbids */
	int connected, closed, completions, delivered, messages, chained_sent;
	iotconn_client_t *client;
	uint64_t close_after; /* THREAD: the completion of this id closes the client from inside the callback */
	int destroy_rc;       /* what iotconn_client_destroy returned inside a callback */
	iotconn_message_t *c2d; /* copy of the C2D message */
} seen_t;

static void check_thread(seen_t *s)
{
	int on_main = pthread_equal(pthread_self(), main_thread);
	if (s->dispatch == IOTCONN_DISPATCH_THREAD ? on_main : !(on_main && s->in_poll))
		s->wrong_thread++;
}

static void on_status(iotconn_status_t st, iotconn_reason_t r, void *user)
{
	seen_t *s = user;
	pthread_mutex_lock(&s->mu);
	check_thread(s);
	if (st == IOTCONN_STATUS_CONNECTED && r == IOTCONN_REASON_CONNECTION_OK)
		s->connected++;
	if (st == IOTCONN_STATUS_DISABLED && r == IOTCONN_REASON_CLIENT_CLOSE)
		s->closed++;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

static void on_send(uint64_t id, int result, int code, void *user)
{
	(void)code;
	seen_t *s = user;
	pthread_mutex_lock(&s->mu);
	check_thread(s);
	s->completions++;
	s->delivered += result == IOTCONN_SEND_DELIVERED;
	int close_now = id == s->close_after;
	int chain = id == 1;
	pthread_mutex_unlock(&s->mu);
	/* Calls back into the library from inside the callback, without holding our lock. */
	if (chain) {
		uint64_t chained = 0;
		if (send_text(s->client, "sent from inside a callback", NULL, &chained) == 0) {
			pthread_mutex_lock(&s->mu);
			s->chained_sent++;
			pthread_mutex_unlock(&s->mu);
		}
		int rc = iotconn_client_destroy(s->client);
		pthread_mutex_lock(&s->mu);
		s->destroy_rc = rc;
		pthread_mutex_unlock(&s->mu);
	}
	if (close_now)
		iotconn_close(s->client);
	pthread_mutex_lock(&s->mu);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

static void on_message(const iotconn_message_t *msg, void *user)
{
	seen_t *s = user;
	iotconn_message_t *copy = NULL;
	iotconn_message_copy(msg, &copy);
	pthread_mutex_lock(&s->mu);
	check_thread(s);
	s->messages++;
	iotconn_free(s->c2d);
	s->c2d = copy;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

/* Waits for *counter >= want: THREAD mode waits on the condition variable, POLL mode polls (the callbacks run
 * inside). Bounded by WAIT_MS either way. */
static int wait_for(seen_t *s, const int *counter, int want)
{
	int64_t deadline = now_ms() + WAIT_MS;
	for (;;) {
		pthread_mutex_lock(&s->mu);
		int done = *counter >= want;
		pthread_mutex_unlock(&s->mu);
		if (done)
			return 0;
		int64_t left = deadline - now_ms();
		if (left <= 0)
			break;
		if (s->dispatch == IOTCONN_DISPATCH_POLL) {
			s->in_poll = 1;
			int n = iotconn_poll(s->client, (uint32_t)(left < 200 ? left : 200));
			s->in_poll = 0;
			if (n < 0) {
				fprintf(stderr, "iotconn_poll: %d %s\n", n, iotconn_last_error());
				return -1;
			}
		} else {
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += 1;
			pthread_mutex_lock(&s->mu);
			if (*counter < want)
				pthread_cond_timedwait(&s->cond, &s->mu, &ts);
			pthread_mutex_unlock(&s->mu);
		}
	}
	fprintf(stderr, "timed out waiting for %d (have %d)\n", want, *counter);
	return -1;
}

static void run(int dispatch, const char *device)
{
	seen_t s;
	memset(&s, 0, sizeof s);
	pthread_mutex_init(&s.mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s.cond, &ca);
	s.dispatch = dispatch;
	s.destroy_rc = 1;

	iotconn_options_t o = hubsim_options(&hub, dispatch);
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, device), &o, &s.client), 0);
	CHECK_RC(iotconn_register_status_callback(s.client, on_status, &s), 0);
	CHECK_RC(iotconn_register_send_callback(s.client, on_send, &s), 0);
	CHECK_RC(iotconn_register_message_callback(s.client, on_message, &s), 0);
	CHECK_RC(iotconn_poll(s.client, 0), dispatch == IOTCONN_DISPATCH_POLL ? 0 : IOTCONN_ESTATE);

	CHECK_RC(iotconn_connect(s.client, WAIT_MS), 0);
	CHECK(wait_for(&s, &s.connected, 1) == 0);

	for (int i = 0; i < N; i++)
		CHECK_RC(send_text(s.client, "dispatch", NULL, NULL), 0);
	/* N sends plus the one chained from inside the first completion */
	CHECK(wait_for(&s, &s.completions, N + 1) == 0);
	CHECK(s.delivered == N + 1);
	CHECK(s.chained_sent == 1);
	CHECK(s.destroy_rc == IOTCONN_ESTATE);

	char path[128];
	snprintf(path, sizeof path, "/devices/%s/c2d", device);
	char *body = NULL;
	CHECK(hub_http(&hub, "POST", path,
		       "{\"payload\":\"hello device\",\"messageId\":\"c2d-1\",\"correlationId\":\"corr-1\","
		       "\"properties\":{\"color\":\"blue\"}}",
		       &body) == 202);
	free(body);
	CHECK(wait_for(&s, &s.messages, 1) == 0);
	if (s.c2d) {
		CHECK(s.c2d->payload_len == strlen("hello device") &&
		      memcmp(s.c2d->payload, "hello device", s.c2d->payload_len) == 0);
		CHECK(strcmp(s.c2d->message_id, "c2d-1") == 0 && strcmp(s.c2d->correlation_id, "corr-1") == 0);
		int found = 0;
		for (size_t i = 0; i < s.c2d->property_count; i++)
			found |= strcmp(s.c2d->properties[i].key, "color") == 0 &&
				 strcmp(s.c2d->properties[i].value, "blue") == 0;
		CHECK(found);
	}

	if (dispatch == IOTCONN_DISPATCH_THREAD) {
		/* close from inside a completion callback: the client ends Disabled / Client_Close */
		pthread_mutex_lock(&s.mu);
		s.close_after = N + 2;
		pthread_mutex_unlock(&s.mu);
		CHECK_RC(send_text(s.client, "the last one", NULL, NULL), 0);
	} else {
		CHECK_RC(iotconn_close(s.client), 0);
	}
	CHECK(wait_for(&s, &s.closed, 1) == 0);
	CHECK(s.closed == 1);
	CHECK(s.wrong_thread == 0);
	CHECK_RC(iotconn_client_destroy(s.client), 0);
	iotconn_free(s.c2d);
}

int main(void)
{
	main_thread = pthread_self();
	const char *devices[] = {"dev-thread", "dev-poll", NULL};
	if (hubsim_start(&hub, devices) != 0)
		return 1;
	run(IOTCONN_DISPATCH_THREAD, "dev-thread");
	run(IOTCONN_DISPATCH_POLL, "dev-poll");
	hubsim_stop(&hub);
	return test_done("dispatch");
}
