/* Shared dispatchers and admission budgets. One iotconn_dispatcher_t runs the callbacks of many clients. THREAD: every callback of every
 * client on one library thread, never two at once, each client's in order. POLL: only inside
 * iotconn_dispatcher_poll(), on the polling thread. Also the refusals: polling a client of a dispatcher, destroying
 * a dispatcher with open clients, a mode that contradicts the dispatcher's, bad and destroyed handles. */
#include <string.h>

#include "harness.h"

#define WAIT_MS 60000
#define CLIENTS HUB_MAX_DEVICES
#define SENDS 20

static hubsim_t hub;
static pthread_t main_thread;

/* What every callback of every client records: which thread, whether two ran at once, and per client the
 * order of its delivered ids and its final status. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int running, overlapped, threads_seen, off_main, in_poll;
static pthread_t callback_thread;

typedef struct client_seen {
	int index;
	uint64_t next_id; /* the id its next delivery must have */
	int out_of_order, delivered, connected, closed;
} client_seen_t;

static client_seen_t seen[CLIENTS];

static void enter(void)
{
	pthread_mutex_lock(&mu);
	if (running++ > 0)
		overlapped++;
	if (threads_seen == 0) {
		callback_thread = pthread_self();
		threads_seen = 1;
	} else if (!pthread_equal(callback_thread, pthread_self())) {
		threads_seen++;
	}
	if (!(pthread_equal(pthread_self(), main_thread) && in_poll))
		off_main++;
	pthread_mutex_unlock(&mu);
}

static void leave(void)
{
	pthread_mutex_lock(&mu);
	running--;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&mu);
}

static void on_status(iotconn_status_t st, iotconn_reason_t r, void *user)
{
	client_seen_t *s = user;
	enter();
	pthread_mutex_lock(&mu);
	if (st == IOTCONN_STATUS_CONNECTED && r == IOTCONN_REASON_CONNECTION_OK)
		s->connected++;
	if (st == IOTCONN_STATUS_DISABLED && r == IOTCONN_REASON_CLIENT_CLOSE)
		s->closed++;
	pthread_mutex_unlock(&mu);
	leave();
}

static void on_send(uint64_t id, int result, int code, void *user)
{
	(void)code;
	client_seen_t *s = user;
	enter();
	pthread_mutex_lock(&mu);
	if (result == IOTCONN_SEND_DELIVERED) {
		s->out_of_order += id != s->next_id;
		s->next_id = id + 1;
		s->delivered++;
	}
	pthread_mutex_unlock(&mu);
	leave();
}

static void reset_seen(void)
{
	pthread_mutex_lock(&mu);
	running = overlapped = threads_seen = off_main = in_poll = 0;
	for (int i = 0; i < CLIENTS; i++)
		seen[i] = (client_seen_t){.index = i, .next_id = 1};
	pthread_mutex_unlock(&mu);
}

/* Total of a counter over the clients. */
static int total(int (*get)(const client_seen_t *))
{
	pthread_mutex_lock(&mu);
	int n = 0;
	for (int i = 0; i < CLIENTS; i++)
		n += get(&seen[i]);
	pthread_mutex_unlock(&mu);
	return n;
}

static int delivered_of(const client_seen_t *s) { return s->delivered; }
static int closed_of(const client_seen_t *s) { return s->closed; }

/* Waits (THREAD) or polls (POLL) until get's total reaches want; returns 0, or -1 after WAIT_MS. */
static int await_total(iotconn_dispatcher_t *d, int dispatch, int (*get)(const client_seen_t *), int want)
{
	int64_t deadline = now_ms() + WAIT_MS;
	while (total(get) < want) {
		if (now_ms() > deadline)
			return -1;
		if (dispatch == IOTCONN_DISPATCH_POLL) {
			pthread_mutex_lock(&mu);
			in_poll = 1;
			pthread_mutex_unlock(&mu);
			int rc = iotconn_dispatcher_poll(d, 100);
			pthread_mutex_lock(&mu);
			in_poll = 0;
			pthread_mutex_unlock(&mu);
			CHECK(rc >= 0);
		} else {
			pthread_mutex_lock(&mu);
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 100 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&cond, &mu, &ts);
			pthread_mutex_unlock(&mu);
		}
	}
	return 0;
}

/* Connects CLIENTS clients on one dispatcher of mode `dispatch`, sends SENDS each, closes them and checks where
 * and how their callbacks ran. */
static void run(int dispatch)
{
	reset_seen();
	iotconn_dispatcher_t *d = NULL;
	CHECK_RC(iotconn_dispatcher_create(dispatch, &d), 0);
	iotconn_client_t *c[CLIENTS] = {0};
	for (int i = 0; i < CLIENTS; i++) {
		iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD); /* the dispatcher's mode wins */
		o.dispatcher = d;
		CHECK_RC(iotconn_client_create(hub.conn_str[i], &o, &c[i]), 0);
		CHECK_RC(iotconn_register_status_callback(c[i], on_status, &seen[i]), 0);
		CHECK_RC(iotconn_register_send_callback(c[i], on_send, &seen[i]), 0);
	}
	if (dispatch == IOTCONN_DISPATCH_POLL)
		CHECK_RC(iotconn_poll(c[0], 0), IOTCONN_ESTATE); /* its events are the dispatcher's to poll */
	else
		CHECK_RC(iotconn_dispatcher_poll(d, 0), IOTCONN_ESTATE);
	for (int i = 0; i < CLIENTS; i++) {
		CHECK_RC(iotconn_connect(c[i], WAIT_MS), 0);
		for (int k = 0; k < SENDS; k++) {
			uint64_t id;
			CHECK_RC(send_text(c[i], "dispatched", NULL, &id), 0);
		}
	}
	CHECK(await_total(d, dispatch, delivered_of, CLIENTS * SENDS) == 0);
	CHECK_RC(iotconn_dispatcher_destroy(d), IOTCONN_ESTATE); /* its clients are open */
	for (int i = 0; i < CLIENTS; i++)
		CHECK_RC(iotconn_close(c[i]), 0);
	CHECK(await_total(d, dispatch, closed_of, CLIENTS) == 0);
	for (int i = 0; i < CLIENTS; i++)
		CHECK_RC(iotconn_client_destroy(c[i]), 0);
	CHECK_RC(iotconn_dispatcher_destroy(d), 0);
	CHECK_RC(iotconn_dispatcher_destroy(d), IOTCONN_EBADHANDLE);
	CHECK_RC(iotconn_dispatcher_poll(d, 0), IOTCONN_EBADHANDLE);

	pthread_mutex_lock(&mu);
	CHECK(overlapped == 0);
	CHECK(threads_seen == 1); /* one thread ran every callback of every client */
	if (dispatch == IOTCONN_DISPATCH_THREAD)
		CHECK(!pthread_equal(callback_thread, main_thread));
	else
		CHECK(off_main == 0);
	for (int i = 0; i < CLIENTS; i++) {
		CHECK(seen[i].connected == 1);
		CHECK(seen[i].closed == 1);
		CHECK(seen[i].delivered == SENDS);
		CHECK(seen[i].out_of_order == 0);
	}
	pthread_mutex_unlock(&mu);
}

static void refusals(void)
{
	iotconn_dispatcher_t *d = NULL, *thread_d = NULL;
	CHECK_RC(iotconn_dispatcher_create(7, &d), IOTCONN_EINVAL);
	CHECK_RC(iotconn_dispatcher_create(IOTCONN_DISPATCH_THREAD, NULL), IOTCONN_EINVAL);
	CHECK_RC(iotconn_dispatcher_create(IOTCONN_DISPATCH_THREAD, &thread_d), 0);

	iotconn_client_t *c = NULL;
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_POLL);
	o.dispatcher = thread_d;
	CHECK_RC(iotconn_client_create(hub.conn_str[0], &o, &c), IOTCONN_EINVAL); /* POLL on a THREAD dispatcher */
	/* a client handle is not a dispatcher handle, nor the reverse */
	o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	CHECK_RC(iotconn_client_create(hub.conn_str[0], &o, &c), 0);
	CHECK_RC(iotconn_dispatcher_poll((iotconn_dispatcher_t *)c, 0), IOTCONN_EBADHANDLE);
	CHECK_RC(iotconn_poll((iotconn_client_t *)thread_d, 0), IOTCONN_EBADHANDLE);
	iotconn_client_t *other = NULL;
	o.dispatcher = (iotconn_dispatcher_t *)c;
	CHECK_RC(iotconn_client_create(hub.conn_str[1], &o, &other), IOTCONN_EBADHANDLE);
	CHECK_RC(iotconn_client_destroy(c), 0);

	CHECK_RC(iotconn_dispatcher_destroy(thread_d), 0);
	o.dispatcher = thread_d; /* destroyed */
	CHECK_RC(iotconn_client_create(hub.conn_str[1], &o, &other), IOTCONN_EBADHANDLE);
	CHECK_RC(iotconn_dispatcher_destroy(NULL), IOTCONN_EBADHANDLE);
}

/* A budget of 20 connects per second, burst 1, shared by four clients: the four connects that start together take
 * at least 150 ms (a lower bound: the budget never admits early, and a slow machine only makes it later). */
static void admission(void)
{
	iotconn_admission_t *a = NULL;
	CHECK_RC(iotconn_admission_create(0, 1, &a), IOTCONN_EINVAL);
	CHECK_RC(iotconn_admission_create(20, 0, &a), IOTCONN_EINVAL);
	CHECK_RC(iotconn_admission_create(1.0 / 0.0, 1, &a), IOTCONN_EINVAL);
	CHECK_RC(iotconn_admission_create(20, 1, NULL), IOTCONN_EINVAL);
	CHECK_RC(iotconn_admission_create(20, 1, &a), 0);
	iotconn_client_t *c[4] = {0};
	for (int i = 0; i < 4; i++) {
		iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
		o.admission = a;
		CHECK_RC(iotconn_client_create(hub.conn_str[i], &o, &c[i]), 0);
	}
	CHECK_RC(iotconn_admission_destroy(a), 0); /* the clients keep the budget */
	CHECK_RC(iotconn_admission_destroy(a), IOTCONN_EBADHANDLE);
	int64_t start = now_ms();
	for (int i = 0; i < 4; i++)
		CHECK_RC(iotconn_connect(c[i], WAIT_MS), 0);
	CHECK(now_ms() - start >= 150);
	for (int i = 0; i < 4; i++)
		CHECK_RC(iotconn_client_destroy(c[i]), 0);
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	o.admission = a; /* destroyed */
	CHECK_RC(iotconn_client_create(hub.conn_str[0], &o, &c[0]), IOTCONN_EBADHANDLE);
}

int main(void)
{
	main_thread = pthread_self();
	const char *devices[CLIENTS + 1] = {"d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", NULL};
	if (hubsim_start(&hub, devices) != 0)
		return 1;
	run(IOTCONN_DISPATCH_THREAD);
	run(IOTCONN_DISPATCH_POLL);
	refusals();
	admission();
	hubsim_stop(&hub);
	return test_done("dispatcher");
}
