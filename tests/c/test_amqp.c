/* The AMQP transports through the C ABI against hubsim: connect, send and a C2D message over AMQP and AMQP over
 * WebSocket, each alone and pooled (amqp_pool: four clients on two shared connections), in both dispatch modes'
 * default (thread); amqp_pool with MQTT is refused. */
#include <string.h>

#include "harness.h"

#define WAIT_MS 20000
#define N 20

static hubsim_t hub;

static void run(const char *device, int transport, uint32_t pool)
{
	char cs[1024];
	const char *conn = hubsim_amqp_conn_str(&hub, device, transport == IOTCONN_TRANSPORT_AMQP_WS, cs, sizeof cs);
	CHECK(conn != NULL);
	if (conn == NULL)
		return;
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	o.transport = transport;
	o.amqp_pool = pool;
	iotconn_client_t *c = NULL;
	recorder_t r;
	recorder_init(&r, N);
	CHECK_RC(iotconn_client_create(conn, &o, &c), 0);
	if (c == NULL) {
		recorder_free(&r);
		return;
	}
	recorder_attach(&r, c);
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	CHECK(recorder_wait_status(&r, 0, IOTCONN_STATUS_CONNECTED, IOTCONN_REASON_CONNECTION_OK, WAIT_MS) == 0);
	for (int i = 0; i < N; i++)
		CHECK_RC(send_text(c, "over amqp", NULL, NULL), 0);
	CHECK(recorder_wait_completions(&r, N, WAIT_MS) == 0);
	CHECK(r.nfailed == 0);
	size_t total = 0, distinct = 0;
	CHECK(hub_count_messages(&hub, device, &total, &distinct) == 0 && distinct == N);

	char path[128];
	snprintf(path, sizeof path, "/devices/%s/c2d", device);
	char *body = NULL;
	CHECK(hub_http(&hub, "POST", path,
		       "{\"payload\":\"hello amqp\",\"messageId\":\"c2d-1\",\"properties\":{\"color\":\"blue\"}}",
		       &body) == 202);
	free(body);
	CHECK(recorder_wait_messages(&r, 1, WAIT_MS) == 0);
	pthread_mutex_lock(&r.mu);
	iotconn_message_t *m = r.last_message;
	CHECK(m != NULL && m->payload_len == strlen("hello amqp") && memcmp(m->payload, "hello amqp", m->payload_len) == 0 &&
	      strcmp(m->message_id, "c2d-1") == 0 && m->property_count == 1 &&
	      strcmp(m->properties[0].key, "color") == 0 && strcmp(m->properties[0].value, "blue") == 0);
	pthread_mutex_unlock(&r.mu);

	CHECK_RC(iotconn_close(c), 0);
	CHECK(recorder_wait_status(&r, 1, IOTCONN_STATUS_DISABLED, IOTCONN_REASON_CLIENT_CLOSE, WAIT_MS) == 1);
	CHECK_RC(iotconn_client_destroy(c), 0);
	recorder_free(&r);
}

int main(void)
{
	const char *devices[] = {"amqp-1", "amqp-2", "ws-1", "ws-2", "pool-1", "pool-2", "pool-3", "pool-4", NULL};
	if (hubsim_start(&hub, devices) != 0)
		return 1;
	run("amqp-1", IOTCONN_TRANSPORT_AMQP, 0);
	run("ws-1", IOTCONN_TRANSPORT_AMQP_WS, 0);
	run("pool-1", IOTCONN_TRANSPORT_AMQP, 2);
	run("pool-2", IOTCONN_TRANSPORT_AMQP_WS, 2);

	/* four pooled clients at once, two to a connection */
	iotconn_client_t *cs[4] = {0};
	const char *ids[4] = {"amqp-2", "ws-2", "pool-3", "pool-4"};
	for (int i = 0; i < 4; i++) {
		char buf[1024];
		iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
		o.transport = IOTCONN_TRANSPORT_AMQP;
		o.amqp_pool = 2;
		CHECK_RC(iotconn_client_create(hubsim_amqp_conn_str(&hub, ids[i], 0, buf, sizeof buf), &o, &cs[i]), 0);
		if (cs[i] != NULL)
			CHECK_RC(iotconn_connect(cs[i], WAIT_MS), 0);
	}
	for (int i = 0; i < 4; i++)
		if (cs[i] != NULL)
			CHECK_RC(iotconn_client_destroy(cs[i]), 0);

	/* pooling is for AMQP only */
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	o.amqp_pool = 2;
	iotconn_client_t *bad = NULL;
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, "amqp-1"), &o, &bad), IOTCONN_EINVAL);
	CHECK(bad == NULL && strstr(iotconn_last_error(), "AMQP") != NULL);

	hubsim_stop(&hub);
	return test_done("test_amqp");
}
