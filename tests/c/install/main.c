/* A program outside the iotconn tree, built against an installed iotconn (find_package or pkg-config). */
#include <iotconn.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
	int major = 0;
	const char *v = iotconn_version(&major, NULL, NULL);
	if (strcmp(v, IOTCONN_VERSION_STRING) != 0 || major != IOTCONN_VERSION_MAJOR) {
		fprintf(stderr, "header %s, library %s\n", IOTCONN_VERSION_STRING, v);
		return 1;
	}
	iotconn_client_t *c = NULL;
	int rc = iotconn_client_create("HostName=127.0.0.1:1;DeviceId=d;SharedAccessKey=AAAA", NULL, &c);
	if (rc != 0) {
		fprintf(stderr, "create: %s\n", iotconn_last_error());
		return 1;
	}
	rc = iotconn_client_destroy(c);
	printf("consumer: iotconn %s, status names %s/%s, destroy=%d\n", v,
	       iotconn_status_str(IOTCONN_STATUS_DISCONNECTED_RETRYING),
	       iotconn_reason_str(IOTCONN_REASON_COMMUNICATION_ERROR), rc);
	return rc == 0 ? 0 : 1;
}
