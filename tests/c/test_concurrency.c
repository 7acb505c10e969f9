/* Concurrency against hubsim, in both dispatch modes:
 *   - many threads send while another closes the client: every accepted id completes exactly once (delivered, or
 *     failed with IOTCONN_ECLOSED), every send after the close returns IOTCONN_ECLOSED, nothing else fails;
 *   - callbacks that send and close while threads send (and, in POLL mode, two threads poll at once);
 *   - 200 create/connect/send/destroy cycles leave no threads or file descriptors behind beyond a small bound
 *     (Go keeps a few idle threads; a leak grows with the cycles).
 * Every wait has a deadline; the sender loops are bounded in count. */
#include <dirent.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define WAIT_MS 60000
#define SENDERS 8
#define PER_SENDER 20000 /* a bound: the close stops the senders long before */
#define MAX_ID (SENDERS * PER_SENDER + 1000)
#define CYCLES 200

static hubsim_t hub;

/* ---- a tracker of ids: what send returned and what the completions said ------------------------------------ */

typedef struct tracker {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	iotconn_client_t *c;
	int dispatch;
	int *accepted, *completed; /* per id */
	uint64_t naccepted, ncompleted, ndelivered, closed_sends, bad;
	int disabled;      /* Disabled / Client_Close events */
	int chain_left;    /* completions that send one more message from inside the callback */
	uint64_t close_at; /* the callback that sees this many completions closes the client (0: never) */
	int stop_polling;
} tracker_t;

static void tracker_init(tracker_t *t, int dispatch)
{
	memset(t, 0, sizeof *t);
	pthread_mutex_init(&t->mu, NULL);
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cond, &a);
	t->dispatch = dispatch;
	t->accepted = calloc(MAX_ID + 1, sizeof *t->accepted);
	t->completed = calloc(MAX_ID + 1, sizeof *t->completed);
}

static void tracker_free(tracker_t *t)
{
	free(t->accepted);
	free(t->completed);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->mu);
}

/* Records what one iotconn_send returned: an id, or IOTCONN_ECLOSED once the client is closed; nothing else. */
static void tracker_sent(tracker_t *t, int rc, uint64_t id)
{
	pthread_mutex_lock(&t->mu);
	if (rc == 0 && id >= 1 && id <= MAX_ID) {
		t->accepted[id]++;
		t->naccepted++;
	} else if (rc == IOTCONN_ECLOSED) {
		t->closed_sends++;
	} else {
		if (t->bad++ < 5)
			fprintf(stderr, "send returned %d (%s), id %llu\n", rc, iotconn_last_error(), (unsigned long long)id);
	}
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->mu);
}

static int send_one(tracker_t *t, const char *text)
{
	uint64_t id = 0;
	int rc = send_text(t->c, text, NULL, &id);
	tracker_sent(t, rc, id);
	return rc;
}

static void on_status(iotconn_status_t s, iotconn_reason_t r, void *user)
{
	tracker_t *t = user;
	pthread_mutex_lock(&t->mu);
	t->disabled += s == IOTCONN_STATUS_DISABLED && r == IOTCONN_REASON_CLIENT_CLOSE;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->mu);
}

static void on_send(uint64_t id, int result, int code, void *user)
{
	tracker_t *t = user;
	pthread_mutex_lock(&t->mu);
	if (id >= 1 && id <= MAX_ID)
		t->completed[id]++;
	t->ncompleted++;
	int delivered = result == IOTCONN_SEND_DELIVERED && code == 0;
	t->ndelivered += delivered;
	/* not delivered: only the close may end a message here */
	if (!delivered && !(result == IOTCONN_SEND_FAILED && code == IOTCONN_ECLOSED) && t->bad++ < 5)
		fprintf(stderr, "completion %llu: result %d code %d\n", (unsigned long long)id, result, code);
	int chain = delivered && t->chain_left > 0;
	t->chain_left -= chain;
	int close_now = t->close_at && t->ncompleted == t->close_at;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->mu);
	/* back into the library from inside the callback, without our lock held */
	if (chain)
		send_one(t, "sent from a completion");
	if (close_now)
		CHECK_RC(iotconn_close(t->c), 0);
}

/* Waits until fn(t) holds, with t->mu held while fn runs; 0 or -1 after ms. */
static int tracker_wait(tracker_t *t, int (*fn)(tracker_t *), int ms)
{
	int64_t deadline = now_ms() + ms;
	pthread_mutex_lock(&t->mu);
	int ok;
	while (!(ok = fn(t))) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += left / 1000 + 1;
		pthread_cond_timedwait(&t->cond, &t->mu, &ts);
	}
	pthread_mutex_unlock(&t->mu);
	return ok ? 0 : -1;
}

static int all_completed(tracker_t *t) { return t->ncompleted >= t->naccepted; }
static int closed_once(tracker_t *t) { return t->disabled >= 1; }

/* Every accepted id completed exactly once, ids are 1..n without gaps, and no completion came for another id. */
static void tracker_check(tracker_t *t, const char *what)
{
	CHECK(tracker_wait(t, all_completed, WAIT_MS) == 0);
	pthread_mutex_lock(&t->mu);
	uint64_t wrong = 0;
	for (uint64_t id = 1; id <= MAX_ID; id++)
		wrong += t->accepted[id] != (id <= t->naccepted) || t->completed[id] != t->accepted[id];
	printf("%s: %llu accepted, %llu delivered, %llu failed by the close, %llu sends refused as closed\n", what,
	       (unsigned long long)t->naccepted, (unsigned long long)t->ndelivered,
	       (unsigned long long)(t->ncompleted - t->ndelivered), (unsigned long long)t->closed_sends);
	if (wrong)
		fprintf(stderr, "%s: %llu ids not accepted once and completed once\n", what, (unsigned long long)wrong);
	CHECK(wrong == 0);
	CHECK(t->ncompleted == t->naccepted);
	CHECK(t->bad == 0);
	CHECK(t->disabled == 1);
	pthread_mutex_unlock(&t->mu);
}

static void *sender(void *arg)
{
	tracker_t *t = arg;
	for (int i = 0; i < PER_SENDER; i++)
		if (send_one(t, "{\"concurrent\":true}") == IOTCONN_ECLOSED)
			break;
	return NULL;
}

/* POLL mode: polls until the client is closed and its final events were delivered. */
static void *poller(void *arg)
{
	tracker_t *t = arg;
	int64_t deadline = now_ms() + 2 * WAIT_MS;
	while (now_ms() < deadline) {
		int n = iotconn_poll(t->c, 100);
		if (n == IOTCONN_ECLOSED)
			return NULL;
		if (n < 0) {
			fprintf(stderr, "iotconn_poll: %d %s\n", n, iotconn_last_error());
			break;
		}
	}
	pthread_mutex_lock(&t->mu);
	t->bad++;
	pthread_mutex_unlock(&t->mu);
	fprintf(stderr, "the poller did not see the end of the client\n");
	return NULL;
}

static iotconn_client_t *connect_client(tracker_t *t, const char *device, int dispatch)
{
	iotconn_options_t o = hubsim_options(&hub, dispatch);
	o.queue_max_messages = MAX_ID;
	o.queue_max_bytes = 1ull << 30;
	iotconn_client_t *c = NULL;
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, device), &o, &c), 0);
	t->c = c;
	CHECK_RC(iotconn_register_status_callback(c, on_status, t), 0);
	CHECK_RC(iotconn_register_send_callback(c, on_send, t), 0);
	return c;
}

static int enough_accepted(tracker_t *t) { return t->naccepted >= 2000; }

/* Senders on many threads; the main thread closes once 2000 were accepted, while they still send. */
static void close_races_senders(int dispatch, const char *device)
{
	tracker_t t;
	tracker_init(&t, dispatch);
	iotconn_client_t *c = connect_client(&t, device, dispatch);
	pthread_t pollers[2], senders[SENDERS];
	int npollers = dispatch == IOTCONN_DISPATCH_POLL ? 1 : 0;
	for (int i = 0; i < npollers; i++)
		pthread_create(&pollers[i], NULL, poller, &t);
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	for (int i = 0; i < SENDERS; i++)
		pthread_create(&senders[i], NULL, sender, &t);
	CHECK(tracker_wait(&t, enough_accepted, WAIT_MS) == 0);
	CHECK_RC(iotconn_close(c), 0);
	for (int i = 0; i < SENDERS; i++)
		pthread_join(senders[i], NULL);
	for (int i = 0; i < npollers; i++)
		pthread_join(pollers[i], NULL);
	CHECK(t.closed_sends >= 1); /* the close did race the senders */
	tracker_check(&t, dispatch == IOTCONN_DISPATCH_POLL ? "close vs senders (poll)" : "close vs senders (thread)");
	CHECK_RC(iotconn_client_destroy(c), 0);
	tracker_free(&t);
}

/* Callbacks send one more message per delivery (500 of them) and the 1500th completion closes the client, while
 * four threads send; in POLL mode two threads poll at once. */
static void callbacks_send_and_close(int dispatch, const char *device)
{
	tracker_t t;
	tracker_init(&t, dispatch);
	t.chain_left = 500;
	t.close_at = 1500;
	iotconn_client_t *c = connect_client(&t, device, dispatch);
	pthread_t pollers[2], senders[4];
	int npollers = dispatch == IOTCONN_DISPATCH_POLL ? 2 : 0;
	for (int i = 0; i < npollers; i++)
		pthread_create(&pollers[i], NULL, poller, &t);
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	for (int i = 0; i < 4; i++)
		pthread_create(&senders[i], NULL, sender, &t);
	CHECK(tracker_wait(&t, closed_once, WAIT_MS) == 0);
	for (int i = 0; i < 4; i++)
		pthread_join(senders[i], NULL);
	for (int i = 0; i < npollers; i++)
		pthread_join(pollers[i], NULL);
	tracker_check(&t, dispatch == IOTCONN_DISPATCH_POLL ? "callbacks send and close (poll)"
							    : "callbacks send and close (thread)");
	CHECK(t.chain_left < 500); /* the callbacks did send */
	CHECK_RC(iotconn_client_destroy(c), 0);
	tracker_free(&t);
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Repeated create/connect/send/destroy: threads and descriptors stay within a bound that does not grow with the
 * number of cycles. Half the cycles destroy with messages still queued, half poll. */
static void create_destroy_cycles(const char *device)
{
	iotconn_client_t *warm = NULL;
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, device), &o, &warm), 0);
	CHECK_RC(iotconn_connect(warm, WAIT_MS), 0); /* the Go runtime's threads exist before the baseline */
	CHECK_RC(iotconn_client_destroy(warm), 0);
	int threads0 = count_entries("/proc/self/task"), fds0 = count_entries("/proc/self/fd");
	for (int i = 0; i < CYCLES; i++) {
		int dispatch = i % 2 ? IOTCONN_DISPATCH_POLL : IOTCONN_DISPATCH_THREAD;
		tracker_t t;
		tracker_init(&t, dispatch);
		iotconn_client_t *c = connect_client(&t, device, dispatch);
		CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
		for (int k = 0; k < 3; k++)
			send_one(&t, "cycle");
		if (i % 4 < 2) { /* wait for delivery before destroying (polling in POLL mode) */
			if (dispatch == IOTCONN_DISPATCH_POLL)
				for (int k = 0; k < 100 && t.ncompleted < 3; k++)
					iotconn_poll(c, 100);
			CHECK(tracker_wait(&t, all_completed, WAIT_MS) == 0);
		}
		CHECK_RC(iotconn_client_destroy(c), 0);
		CHECK(t.bad == 0);
		tracker_free(&t);
		if (test_failures)
			break;
	}
	int threads1 = count_entries("/proc/self/task"), fds1 = count_entries("/proc/self/fd");
	printf("create/destroy x%d: threads %d -> %d, fds %d -> %d\n", CYCLES, threads0, threads1, fds0, fds1);
	CHECK(fds1 <= fds0 + 2);
	CHECK(threads1 <= threads0 + 8);
}

int main(void)
{
	const char *devices[] = {"dev-race-t", "dev-race-p", "dev-cb-t", "dev-cb-p", "dev-cycle", NULL};
	if (hubsim_start(&hub, devices) != 0)
		return 1;
	close_races_senders(IOTCONN_DISPATCH_THREAD, "dev-race-t");
	close_races_senders(IOTCONN_DISPATCH_POLL, "dev-race-p");
	callbacks_send_and_close(IOTCONN_DISPATCH_THREAD, "dev-cb-t");
	callbacks_send_and_close(IOTCONN_DISPATCH_POLL, "dev-cb-p");
	create_destroy_cycles("dev-cycle");
	hubsim_stop(&hub);
	return test_done("concurrency");
}
