/* X.509 through the C ABI against an iotconn-hubsim process: a self-signed device (thumbprint) and a CA-signed one
 * connect and send; a certificate rotated on disk is presented by the same client at its next connect; an expired
 * certificate ends Disconnected / Bad_Credential (IOTCONN_EAUTH) with a message naming its expiry. */
#include <stdio.h>
#include <string.h>

#include "harness.h"

static const char *dir; /* the certificates live in hubsim's state directory, removed with it */

/* Escapes a PEM file's text as a JSON string body (newlines as \n). */
static char *pem_json(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	char *out = malloc(1 << 16);
	size_t n = 0;
	int ch;
	while ((ch = fgetc(f)) != EOF && n < (1 << 16) - 3) {
		if (ch == '\n') {
			out[n++] = '\\';
			out[n++] = 'n';
		} else {
			out[n++] = (char)ch;
		}
	}
	out[n] = 0;
	fclose(f);
	return out;
}

static int add_device(hubsim_t *h, const char *json)
{
	char *body = NULL;
	int st = hub_http(h, "POST", "/devices", json, &body);
	if (st != 201)
		fprintf(stderr, "POST /devices %s -> %d %s\n", json, st, body ? body : "");
	free(body);
	return st == 201 ? 0 : -1;
}

static iotconn_client_t *x509_client(hubsim_t *h, const char *dev, const char *name, recorder_t *r)
{
	char cs[256], cert[300], key[300];
	snprintf(cs, sizeof cs, "HostName=localhost:%s;DeviceId=%s;x509=true", strrchr(h->mqtt_addr, ':') + 1, dev);
	snprintf(cert, sizeof cert, "%s/%s.pem", dir, name);
	snprintf(key, sizeof key, "%s/%s-key.pem", dir, name);
	iotconn_options_t o = hubsim_options(h, IOTCONN_DISPATCH_THREAD);
	o.cert_file = cert;
	o.key_file = key;
	iotconn_client_t *c = NULL;
	CHECK_RC(iotconn_client_create(cs, &o, &c), IOTCONN_OK);
	if (c)
		recorder_attach(r, c);
	return c;
}

static void connect_and_send(hubsim_t *h, const char *dev, const char *name)
{
	recorder_t r;
	recorder_init(&r, 4);
	iotconn_client_t *c = x509_client(h, dev, name, &r);
	if (!c)
		return;
	CHECK_RC(iotconn_connect(c, 30000), IOTCONN_OK);
	uint64_t id;
	CHECK_RC(send_text(c, dev, NULL, &id), IOTCONN_OK);
	CHECK(recorder_wait_completions(&r, 1, 30000) == 0 && r.nfailed == 0);
	CHECK_RC(iotconn_client_destroy(c), IOTCONN_OK);
	recorder_free(&r);
}

int main(void)
{
	hubsim_t h;
	if (hubsim_start(&h, NULL) != 0)
		return 1;
	dir = h.dir;
	char out[300], issuer[300], thumb[128], json[1024];

	/* Self-signed: the hub knows its thumbprint. */
	snprintf(out, sizeof out, "%s/self", dir);
	CHECK(hubsim_mint_cert("x-self", out, NULL, 0, 0, thumb, sizeof thumb) == 0);
	snprintf(json, sizeof json, "{\"id\":\"x-self\",\"auth\":\"selfSigned\",\"thumbprints\":[\"%s\"]}", thumb);
	CHECK(add_device(&h, json) == 0);
	connect_and_send(&h, "x-self", "self");

	/* CA-signed: the hub knows the CA; the certificate's CN is the device id. */
	snprintf(issuer, sizeof issuer, "%s/root", dir);
	CHECK(hubsim_mint_cert("root", issuer, NULL, 1, 0, thumb, sizeof thumb) == 0);
	snprintf(out, sizeof out, "%s/signed", dir);
	CHECK(hubsim_mint_cert("x-ca", out, issuer, 0, 0, thumb, sizeof thumb) == 0);
	char root_pem[320];
	snprintf(root_pem, sizeof root_pem, "%s.pem", issuer);
	char *pem = pem_json(root_pem);
	CHECK(pem != NULL);
	char *cas = malloc(strlen(pem ? pem : "") + 32);
	sprintf(cas, "{\"pem\":\"%s\"}", pem ? pem : "");
	CHECK(hub_http(&h, "POST", "/cas", cas, NULL) == 204);
	free(cas);
	free(pem);
	CHECK(add_device(&h, "{\"id\":\"x-ca\",\"auth\":\"certificateAuthority\"}") == 0);
	connect_and_send(&h, "x-ca", "signed");

	/* Rotation: new files under the same names, the hub told of the new thumbprint only; the same client's
	 * next connect (after a TCP reset) presents the new certificate. */
	snprintf(out, sizeof out, "%s/rot", dir);
	CHECK(hubsim_mint_cert("x-rot", out, NULL, 0, 0, thumb, sizeof thumb) == 0);
	snprintf(json, sizeof json, "{\"id\":\"x-rot\",\"auth\":\"selfSigned\",\"thumbprints\":[\"%s\"]}", thumb);
	CHECK(add_device(&h, json) == 0);
	recorder_t r;
	recorder_init(&r, 4);
	iotconn_client_t *c = x509_client(&h, "x-rot", "rot", &r);
	CHECK_RC(iotconn_connect(c, 30000), IOTCONN_OK);
	snprintf(out, sizeof out, "%s/next", dir);
	CHECK(hubsim_mint_cert("x-rot", out, NULL, 0, 0, thumb, sizeof thumb) == 0);
	char from[300], to[300];
	for (int i = 0; i < 2; i++) {
		snprintf(from, sizeof from, "%s/next%s", dir, i ? "-key.pem" : ".pem");
		snprintf(to, sizeof to, "%s/rot%s", dir, i ? "-key.pem" : ".pem");
		CHECK(rename(from, to) == 0);
	}
	snprintf(json, sizeof json, "{\"thumbprints\":[\"%s\"]}", thumb);
	CHECK(hub_http(&h, "PATCH", "/devices/x-rot", json, NULL) == 200);
	CHECK(hub_fault(&h, "{\"kind\":\"kill-tcp\",\"device\":\"x-rot\"}") == 0);
	int at = recorder_wait_status(&r, 0, IOTCONN_STATUS_DISCONNECTED_RETRYING, IOTCONN_REASON_COMMUNICATION_ERROR,
				      30000);
	CHECK(at >= 0);
	CHECK(recorder_wait_status(&r, at + 1, IOTCONN_STATUS_CONNECTED, IOTCONN_REASON_CONNECTION_OK, 30000) > at);
	CHECK_RC(iotconn_client_destroy(c), IOTCONN_OK);
	recorder_free(&r);

	/* Expired: refused by the hub, fatal, and said so. */
	snprintf(out, sizeof out, "%s/old", dir);
	CHECK(hubsim_mint_cert("x-old", out, NULL, 0, 1, thumb, sizeof thumb) == 0);
	snprintf(json, sizeof json, "{\"id\":\"x-old\",\"auth\":\"selfSigned\",\"thumbprints\":[\"%s\"]}", thumb);
	CHECK(add_device(&h, json) == 0);
	recorder_init(&r, 4);
	c = x509_client(&h, "x-old", "old", &r);
	CHECK_RC(iotconn_connect(c, 30000), IOTCONN_EAUTH);
	CHECK(strstr(iotconn_last_error(), "expired at") != NULL);
	CHECK(recorder_wait_status(&r, 0, IOTCONN_STATUS_DISCONNECTED, IOTCONN_REASON_BAD_CREDENTIAL, 10000) >= 0);
	CHECK_RC(iotconn_client_destroy(c), IOTCONN_OK);
	recorder_free(&r);

	hubsim_stop(&h);
	return test_done("test_x509");
}
