/* The Device Provisioning Service through the C ABI, against an iotconn-hubsim process with two hubs and a DPS:
 * a client created from DPS parameters registers once, sends, is moved to the other hub (the old one deletes it)
 * and follows with exactly one more registration, no message lost; recreated on the same queue_dir it connects to
 * the cached hub without registering; iotconn_dps_register alone (a group-derived key), DPS's refusal, misuse. */
#include <string.h>

#include "harness.h"

#define N 10

static int64_t dps_registrations(const hubsim_t *h, const char *id)
{
	char path[128], *body = NULL;
	snprintf(path, sizeof path, "/registrations/%s", id);
	int64_t n = -1;
	if (http_request(h->dps_control_port, "GET", path, NULL, &body) == 200 && body) {
		const char *p = strstr(body, "\"registrations\":");
		if (p)
			n = strtoll(p + strlen("\"registrations\":"), NULL, 10);
	}
	free(body);
	return n;
}

static void send_n(iotconn_client_t *c, int n, const char *tag)
{
	for (int i = 0; i < n; i++) {
		char text[64];
		snprintf(text, sizeof text, "%s-%d", tag, i);
		uint64_t id;
		CHECK_RC(send_text(c, text, NULL, &id), IOTCONN_OK);
	}
}

static void check_assignment(iotconn_client_t *c, const char *want_hub)
{
	char *hub = NULL, *dev = NULL;
	CHECK_RC(iotconn_dps_assignment(c, &hub, &dev), IOTCONN_OK);
	CHECK(hub && strcmp(hub, want_hub) == 0);
	CHECK(dev && strcmp(dev, "dev-c") == 0);
	if (hub && strcmp(hub, want_hub) != 0)
		fprintf(stderr, "assigned %s, want %s\n", hub, want_hub);
	iotconn_free(hub);
	iotconn_free(dev);
}

static void test_move(hubsim_t *h, const char *hub1)
{
	char qdir[] = "/tmp/iotconn-dps-XXXXXX";
	CHECK(mkdtemp(qdir) != NULL);
	iotconn_dps_params_t p = IOTCONN_DPS_PARAMS_INIT;
	p.provisioning_host = h->dps_mqtt_addr;
	p.id_scope = h->id_scope;
	p.registration_id = "dev-c";
	p.symmetric_key = hubsim_enrollment_key(h, "dev-c");
	p.payload_json = "{\"model\":\"c-test\"}";
	iotconn_options_t o = hubsim_options(h, IOTCONN_DISPATCH_THREAD);
	o.queue_dir = qdir;
	iotconn_client_t *c = NULL;
	CHECK_RC(iotconn_client_create_dps(&p, &o, &c), IOTCONN_OK);
	if (!c)
		return;
	recorder_t r;
	recorder_init(&r, 4 * N);
	recorder_attach(&r, c);
	uint64_t regs = 99;
	CHECK_RC(iotconn_dps_registrations(c, &regs), IOTCONN_OK);
	CHECK(regs == 0);
	CHECK_RC(iotconn_connect(c, 60000), IOTCONN_OK);
	CHECK_RC(iotconn_dps_registrations(c, &regs), IOTCONN_OK);
	CHECK(regs == 1);
	check_assignment(c, hub1);
	send_n(c, N, "before");
	CHECK(recorder_wait_completions(&r, N, 30000) == 0);

	/* Moved to hub 2: hub 1 deletes the device and drops it; the client follows with one registration. */
	char json[256];
	snprintf(json, sizeof json, "{\"iotHub\":\"%s\"}", h->hub2_host);
	CHECK(http_request(h->dps_control_port, "POST", "/enrollments/dev-c/move", json, NULL) == 200);
	send_n(c, N, "moving");
	int at = recorder_wait_status(&r, 1, IOTCONN_STATUS_CONNECTED, IOTCONN_REASON_CONNECTION_OK, 60000);
	CHECK(at > 1);
	CHECK(recorder_wait_completions(&r, 2 * N, 60000) == 0);
	CHECK(r.nfailed == 0);
	CHECK_RC(iotconn_dps_registrations(c, &regs), IOTCONN_OK);
	CHECK(regs == 2);
	CHECK(dps_registrations(h, "dev-c") == 2);
	check_assignment(c, h->hub2_host);
	if (test_failures)
		recorder_dump(&r);
	CHECK_RC(iotconn_client_destroy(c), IOTCONN_OK);
	recorder_free(&r);

	/* Recreated on the same queue_dir: the cached hub, no registration. */
	CHECK_RC(iotconn_client_create_dps(&p, &o, &c), IOTCONN_OK);
	CHECK_RC(iotconn_connect(c, 60000), IOTCONN_OK);
	CHECK_RC(iotconn_dps_registrations(c, &regs), IOTCONN_OK);
	CHECK(regs == 0);
	CHECK(dps_registrations(h, "dev-c") == 2);
	check_assignment(c, h->hub2_host);
	CHECK_RC(iotconn_client_destroy(c), IOTCONN_OK);
}

static void test_register_alone(hubsim_t *h)
{
	iotconn_dps_params_t p = IOTCONN_DPS_PARAMS_INIT;
	p.provisioning_host = h->dps_mqtt_addr;
	p.id_scope = h->id_scope;
	p.registration_id = "member-7";
	p.group_key = hubsim_enrollment_key(h, "fleet");
	iotconn_options_t o = hubsim_options(h, IOTCONN_DISPATCH_POLL);
	char *json = NULL;
	CHECK_RC(iotconn_dps_register(&p, &o, 60000, &json), IOTCONN_OK);
	CHECK(json && strstr(json, "\"assignedHub\":\"") && strstr(json, "\"deviceId\":\"member-7\"") &&
	      strstr(json, "\"status\":\"assigned\""));
	iotconn_free(json);

	/* DPS refuses a wrong key (401): IOTCONN_EAUTH, with DPS's answer in the message. */
	p.group_key = NULL;
	p.symmetric_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
	json = NULL;
	CHECK_RC(iotconn_dps_register(&p, &o, 60000, &json), IOTCONN_EAUTH);
	CHECK(json == NULL);
	CHECK(strstr(iotconn_last_error(), "401") != NULL);

	/* A client of a refused registration: Disconnected / Bad_Credential, no registration counted. */
	iotconn_client_t *c = NULL;
	CHECK_RC(iotconn_client_create_dps(&p, &o, &c), IOTCONN_OK);
	CHECK_RC(iotconn_connect(c, 60000), IOTCONN_EAUTH);
	iotconn_status_t st;
	iotconn_reason_t why;
	CHECK_RC(iotconn_get_status(c, &st, &why), IOTCONN_OK);
	CHECK(st == IOTCONN_STATUS_DISCONNECTED && why == IOTCONN_REASON_BAD_CREDENTIAL);
	uint64_t regs = 99;
	CHECK_RC(iotconn_dps_registrations(c, &regs), IOTCONN_OK);
	CHECK(regs == 0);
	CHECK_RC(iotconn_client_destroy(c), IOTCONN_OK);
}

static void test_misuse(void)
{
	iotconn_dps_params_t p = IOTCONN_DPS_PARAMS_INIT;
	iotconn_client_t *c = NULL;
	char *json = NULL;
	CHECK_RC(iotconn_client_create_dps(NULL, NULL, &c), IOTCONN_EINVAL);
	CHECK_RC(iotconn_client_create_dps(&p, NULL, NULL), IOTCONN_EINVAL);
	CHECK_RC(iotconn_client_create_dps(&p, NULL, &c), IOTCONN_EINVAL); /* no host, scope, id or attestation */
	p.provisioning_host = "dps.example";
	p.id_scope = "0ne1";
	p.registration_id = "bad/id";
	p.symmetric_key = "a2V5";
	CHECK_RC(iotconn_client_create_dps(&p, NULL, &c), IOTCONN_EINVAL);
	p.registration_id = "ok";
	p.group_key = "a2V5";
	CHECK_RC(iotconn_client_create_dps(&p, NULL, &c), IOTCONN_EINVAL); /* two attestations */
	p.group_key = NULL;
	p.payload_json = "{";
	CHECK_RC(iotconn_client_create_dps(&p, NULL, &c), IOTCONN_EINVAL);
	p.payload_json = NULL;
	p.size = 8;
	CHECK_RC(iotconn_client_create_dps(&p, NULL, &c), IOTCONN_EINVAL);
	CHECK_RC(iotconn_dps_register(&p, NULL, 1000, &json), IOTCONN_EINVAL);
	p.size = sizeof p;
	CHECK_RC(iotconn_dps_register(&p, NULL, 1000, NULL), IOTCONN_EINVAL);
	CHECK(c == NULL);
	uint64_t n;
	CHECK_RC(iotconn_dps_registrations(NULL, &n), IOTCONN_EBADHANDLE);
	CHECK_RC(iotconn_dps_assignment(NULL, NULL, NULL), IOTCONN_EBADHANDLE);

	/* A client of a connection string: no registrations, no assignment. */
	CHECK_RC(iotconn_client_create("HostName=h.example;DeviceId=d;SharedAccessKey=a2V5", NULL, &c), IOTCONN_OK);
	CHECK_RC(iotconn_dps_registrations(c, NULL), IOTCONN_EINVAL);
	CHECK_RC(iotconn_dps_registrations(c, &n), IOTCONN_OK);
	CHECK(n == 0);
	char *hub = (char *)1;
	CHECK_RC(iotconn_dps_assignment(c, &hub, NULL), IOTCONN_OK);
	CHECK(hub == NULL);
	CHECK_RC(iotconn_client_destroy(c), IOTCONN_OK);
}

int main(void)
{
	test_misuse();
	hubsim_t h;
	const char *args[] = {"--hub", "127.0.0.1:0", "--dps-mqtt", "127.0.0.1:0", "--dps-retry-after", "1s",
			      "--enrollment", "dev-c", "--enrollment-group", "fleet", NULL};
	if (hubsim_start_args(&h, NULL, args) != 0)
		return 1;
	CHECK(h.dps_mqtt_addr[0] && h.dps_control_port > 0 && h.hub2_host[0] && h.id_scope[0]);
	/* dev-c starts on hub 1 only, so that the move changes its hub. */
	char hub1[96], json[256];
	snprintf(hub1, sizeof hub1, "localhost:%s", strrchr(h.mqtt_addr, ':') + 1);
	snprintf(json, sizeof json, "{\"iotHub\":\"%s\"}", hub1);
	CHECK(http_request(h.dps_control_port, "POST", "/enrollments/dev-c/move", json, NULL) == 200);
	test_move(&h, hub1);
	test_register_alone(&h);
	hubsim_stop(&h);
	return test_done("test_dps");
}
