/*
 * A device that finds its hub through the Device Provisioning Service: registers with a symmetric key (or reuses
 * the assignment cached in QUEUE_DIR), sends COUNT messages, and prints the status changes, where it was assigned
 * and how many registrations it made. If the hub refuses it later (moved, deleted) it registers again by itself; a
 * hub that is down is retried without calling DPS.
 *
 *     provision DPS_HOST ID_SCOPE REGISTRATION_ID KEY [CA_FILE] [QUEUE_DIR] [COUNT]
 *
 * With hubsim: iotconn-hubsim --dir /tmp/hub --hub 127.0.0.1:0 --dps-mqtt 127.0.0.1:0 --enrollment dev-7 prints the
 * DPS address ("dps mqtts"), the id scope and the enrollment's key. X.509 instead of a key: set opts.cert_file and
 * opts.key_file and leave symmetric_key NULL. One registration without a client: iotconn_dps_register().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iotconn.h"

static void on_status(iotconn_status_t status, iotconn_reason_t reason, void *user)
{
	(void)user;
	printf("status: %s / %s\n", iotconn_status_str(status), iotconn_reason_str(reason));
	fflush(stdout);
}

struct tally {
	int delivered, failed;
};

static void on_send(uint64_t id, int result, int error_code, void *user)
{
	struct tally *t = user;
	if (result == IOTCONN_SEND_DELIVERED) {
		t->delivered++;
	} else {
		t->failed++;
		fprintf(stderr, "message %llu: %s\n", (unsigned long long)id, iotconn_strerror(error_code));
	}
}

static void print_assignment(iotconn_client_t *client)
{
	char *hub = NULL, *device = NULL;
	uint64_t registrations = 0;
	iotconn_dps_assignment(client, &hub, &device);
	iotconn_dps_registrations(client, &registrations);
	printf("assigned: hub=%s device=%s registrations=%llu\n", hub ? hub : "-", device ? device : "-",
	       (unsigned long long)registrations);
	iotconn_free(hub);
	iotconn_free(device);
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: %s DPS_HOST ID_SCOPE REGISTRATION_ID KEY [CA_FILE] [QUEUE_DIR] [COUNT]\n", argv[0]);
		return 2;
	}
	iotconn_dps_params_t params = IOTCONN_DPS_PARAMS_INIT;
	params.provisioning_host = argv[1];
	params.id_scope = argv[2];
	params.registration_id = argv[3];
	params.symmetric_key = argv[4];
	iotconn_options_t opts = IOTCONN_OPTIONS_INIT;
	opts.ca_file = argc > 5 && strcmp(argv[5], "-") != 0 ? argv[5] : NULL;
	opts.queue_dir = argc > 6 ? argv[6] : NULL;
	opts.dispatch = IOTCONN_DISPATCH_POLL; /* callbacks run in iotconn_poll, on this thread: no locks needed */
	int count = argc > 7 ? atoi(argv[7]) : 5;

	iotconn_client_t *client;
	if (iotconn_client_create_dps(&params, &opts, &client) != IOTCONN_OK) {
		fprintf(stderr, "create: %s\n", iotconn_last_error());
		return 1;
	}
	struct tally tally = {0, 0};
	iotconn_register_status_callback(client, on_status, NULL);
	iotconn_register_send_callback(client, on_send, &tally);
	if (iotconn_connect(client, 120000) != IOTCONN_OK) {
		fprintf(stderr, "connect: %s\n", iotconn_last_error());
		iotconn_client_destroy(client);
		return 1;
	}
	print_assignment(client);
	for (int i = 0; i < count; i++) {
		char payload[32];
		iotconn_message_t msg = IOTCONN_MESSAGE_INIT;
		msg.payload = payload;
		msg.payload_len = (size_t)snprintf(payload, sizeof payload, "{\"n\":%d}", i);
		if (iotconn_send(client, &msg, NULL) != IOTCONN_OK)
			fprintf(stderr, "send: %s\n", iotconn_last_error());
	}
	/* Every message ends in one send callback; bounded: the operation timeout (4 min) expires any left. */
	for (int round = 0; round < 300 && tally.delivered + tally.failed < count; round++)
		iotconn_poll(client, 1000);
	printf("delivered=%d failed=%d\n", tally.delivered, tally.failed);
	print_assignment(client);
	iotconn_client_destroy(client);
	return tally.failed == 0 && tally.delivered == count ? 0 : 1;
}
