/* Many threads send on one client at once: every send gets a distinct id and every id completes exactly once,
 * delivered; the hub records every message. */
#include <string.h>

#include "harness.h"

#define THREADS 8
#define PER_THREAD 250
#define TOTAL (THREADS * PER_THREAD)
#define WAIT_MS 120000

static hubsim_t hub;
static iotconn_client_t *client;
static int returned[TOTAL + 1]; /* how often send returned each id */
static pthread_mutex_t returned_mu = PTHREAD_MUTEX_INITIALIZER;
static int send_errors;

static void *sender(void *arg)
{
	int t = (int)(intptr_t)arg;
	char mid[48], payload[64];
	for (int i = 0; i < PER_THREAD; i++) {
		snprintf(mid, sizeof mid, "stress-%d-%d", t, i);
		snprintf(payload, sizeof payload, "{\"thread\":%d,\"seq\":%d}", t, i);
		uint64_t id = 0;
		int rc = send_text(client, payload, mid, &id);
		pthread_mutex_lock(&returned_mu);
		if (rc != 0 || id < 1 || id > TOTAL)
			send_errors++;
		else
			returned[id]++;
		pthread_mutex_unlock(&returned_mu);
	}
	return NULL;
}

int main(void)
{
	const char *devices[] = {"dev-stress", NULL};
	if (hubsim_start(&hub, devices) != 0)
		return 1;
	recorder_t rec;
	recorder_init(&rec, TOTAL);
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, "dev-stress"), &o, &client), 0);
	recorder_attach(&rec, client);
	CHECK_RC(iotconn_connect(client, WAIT_MS), 0);

	pthread_t threads[THREADS];
	for (int t = 0; t < THREADS; t++)
		pthread_create(&threads[t], NULL, sender, (void *)(intptr_t)t);
	for (int t = 0; t < THREADS; t++)
		pthread_join(threads[t], NULL);
	CHECK(send_errors == 0);

	CHECK(recorder_wait_completions(&rec, TOTAL, WAIT_MS) == 0);
	int bad = 0;
	for (int id = 1; id <= TOTAL; id++)
		bad += returned[id] != 1 || rec.completions[id] != 1 || rec.results[id] != IOTCONN_SEND_DELIVERED;
	if (bad)
		fprintf(stderr, "%d ids not returned once and delivered once\n", bad);
	CHECK(bad == 0);
	CHECK(rec.ncompleted == TOTAL && rec.nfailed == 0);

	size_t total = 0, distinct = 0;
	CHECK(hub_count_messages(&hub, "dev-stress", &total, &distinct) == 0);
	CHECK(distinct == TOTAL);

	CHECK_RC(iotconn_client_destroy(client), 0);
	recorder_free(&rec);
	hubsim_stop(&hub);
	return test_done("stress");
}
