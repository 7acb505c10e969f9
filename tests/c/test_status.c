/* The engine's status sequences seen through the ABI, against a hubsim process: normal connect and close, wrong
 * key, disabled device, and a killed TCP connection mid-stream with every message delivered. */
#include <string.h>

#include "harness.h"

#define WAIT_MS 60000

static hubsim_t hub;

static iotconn_client_t *client_for(const char *conn_str, recorder_t *rec)
{
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	iotconn_client_t *c = NULL;
	CHECK_RC(iotconn_client_create(conn_str, &o, &c), 0);
	if (c)
		recorder_attach(rec, c);
	return c;
}

static int saw_status(recorder_t *r, iotconn_status_t s)
{
	pthread_mutex_lock(&r->mu);
	int n = 0;
	for (int i = 0; i < r->nstatus; i++)
		n += r->status[i].status == s;
	pthread_mutex_unlock(&r->mu);
	return n;
}

static void test_connect_and_close(void)
{
	recorder_t rec;
	recorder_init(&rec, 16);
	iotconn_client_t *c = client_for(hubsim_conn_str(&hub, "dev-ok"), &rec);
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	CHECK(recorder_wait_status(&rec, 0, IOTCONN_STATUS_CONNECTED, IOTCONN_REASON_CONNECTION_OK, WAIT_MS) == 0);
	iotconn_status_t s;
	iotconn_reason_t r;
	CHECK_RC(iotconn_get_status(c, &s, &r), 0);
	CHECK(s == IOTCONN_STATUS_CONNECTED && r == IOTCONN_REASON_CONNECTION_OK);
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0); /* already connected: at once */

	uint64_t id = 0;
	CHECK_RC(send_text(c, "hello", "status-hello", &id), 0);
	CHECK(recorder_wait_completions(&rec, 1, WAIT_MS) == 0);
	CHECK(rec.completions[id] == 1 && rec.results[id] == IOTCONN_SEND_DELIVERED);

	CHECK_RC(iotconn_close(c), 0);
	CHECK(recorder_wait_status(&rec, 1, IOTCONN_STATUS_DISABLED, IOTCONN_REASON_CLIENT_CLOSE, WAIT_MS) == 1);
	CHECK_RC(iotconn_client_destroy(c), 0);
	CHECK(rec.nstatus == 2); /* exactly Connected, then Disabled */
	recorder_free(&rec);
}

/* A credential the hub rejects is final: Disconnected / Bad_Credential, no retrying. */
static void test_wrong_key(void)
{
	char cs[512];
	snprintf(cs, sizeof cs, "%s", hubsim_conn_str(&hub, "dev-ok"));
	char *key = strstr(cs, "SharedAccessKey=");
	CHECK(key != NULL);
	if (!key)
		return;
	snprintf(key, sizeof cs - (size_t)(key - cs), "SharedAccessKey=%s",
		 "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc=");
	recorder_t rec;
	recorder_init(&rec, 4);
	iotconn_client_t *c = client_for(cs, &rec);
	CHECK_RC(iotconn_connect(c, WAIT_MS), IOTCONN_EAUTH);
	CHECK(iotconn_last_error()[0] != 0);
	CHECK(recorder_wait_status(&rec, 0, IOTCONN_STATUS_DISCONNECTED, IOTCONN_REASON_BAD_CREDENTIAL, WAIT_MS) >= 0);
	CHECK(saw_status(&rec, IOTCONN_STATUS_DISCONNECTED_RETRYING) == 0);
	CHECK(saw_status(&rec, IOTCONN_STATUS_CONNECTED) == 0);
	CHECK_RC(iotconn_client_destroy(c), 0);
	recorder_free(&rec);
}

static void test_disabled_device(void)
{
	char *body = NULL;
	CHECK(hub_http(&hub, "PATCH", "/devices/dev-off", "{\"status\":\"disabled\"}", &body) == 200);
	free(body);
	recorder_t rec;
	recorder_init(&rec, 4);
	iotconn_client_t *c = client_for(hubsim_conn_str(&hub, "dev-off"), &rec);
	CHECK_RC(iotconn_connect(c, WAIT_MS), IOTCONN_EDISABLED);
	CHECK(recorder_wait_status(&rec, 0, IOTCONN_STATUS_DISCONNECTED, IOTCONN_REASON_DEVICE_DISABLED, WAIT_MS) >=
	      0);
	CHECK(saw_status(&rec, IOTCONN_STATUS_CONNECTED) == 0);
	CHECK_RC(iotconn_client_destroy(c), 0);
	recorder_free(&rec);
}

/* The TCP connection is killed while messages are in flight: Disconnected_Retrying / Communication_Error, then
 * Connected again, and every message is delivered (the hub's record has every message id). */
static void test_kill_tcp(void)
{
	enum { N = 200 };
	recorder_t rec;
	recorder_init(&rec, N);
	iotconn_client_t *c = client_for(hubsim_conn_str(&hub, "dev-kill"), &rec);
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	char mid[32];
	for (int i = 0; i < N; i++) {
		if (i == N / 2)
			CHECK(hub_fault(&hub, "{\"kind\":\"kill-tcp\",\"device\":\"dev-kill\"}") == 0);
		snprintf(mid, sizeof mid, "kill-%d", i);
		uint64_t id = 0;
		CHECK_RC(send_text(c, "telemetry during a TCP kill", mid, &id), 0);
		CHECK(id == (uint64_t)i + 1);
	}
	int drop = recorder_wait_status(&rec, 1, IOTCONN_STATUS_DISCONNECTED_RETRYING,
					IOTCONN_REASON_COMMUNICATION_ERROR, WAIT_MS);
	CHECK(drop >= 1);
	CHECK(recorder_wait_status(&rec, drop + 1, IOTCONN_STATUS_CONNECTED, IOTCONN_REASON_CONNECTION_OK, WAIT_MS) >
	      drop);
	CHECK(recorder_wait_completions(&rec, N, WAIT_MS) == 0);
	for (int id = 1; id <= N; id++)
		CHECK(rec.completions[id] == 1 && rec.results[id] == IOTCONN_SEND_DELIVERED);
	CHECK(rec.nfailed == 0);
	size_t total = 0, distinct = 0;
	CHECK(hub_count_messages(&hub, "dev-kill", &total, &distinct) == 0);
	CHECK(distinct == N);
	CHECK(total >= N); /* at least once: a message whose ack was lost is sent again */
	CHECK_RC(iotconn_client_destroy(c), 0);
	recorder_free(&rec);
}

int main(void)
{
	const char *devices[] = {"dev-ok", "dev-off", "dev-kill", NULL};
	if (hubsim_start(&hub, devices) != 0)
		return 1;
	test_connect_and_close();
	test_wrong_key();
	test_disabled_device();
	test_kill_tcp();
	hubsim_stop(&hub);
	return test_done("status");
}
