/* Test harness for the C tests: a hubsim process per test, its HTTP control API, event recorders and checks. */
#ifndef IOTCONN_TEST_HARNESS_H
#define IOTCONN_TEST_HARNESS_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#include "iotconn.h"

/* ---- checks: a failed check prints where and why, and the test exits non-zero ------------------------------ */

extern int test_failures;

#define CHECK(cond)                                                                                  \
	do {                                                                                         \
		if (!(cond)) {                                                                       \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
			test_failures++;                                                             \
		}                                                                                    \
	} while (0)

/* Checks that an iotconn call returned `want`, printing the library's message otherwise. */
#define CHECK_RC(call, want)                                                                         \
	do {                                                                                         \
		int rc_ = (call);                                                                    \
		if (rc_ != (want)) {                                                                 \
			fprintf(stderr, "%s:%d: %s returned %d (%s: %s), want %d (%s)\n", __FILE__,  \
				__LINE__, #call, rc_, iotconn_strerror(rc_), iotconn_last_error(),   \
				(int)(want), iotconn_strerror(want));                                \
			test_failures++;                                                             \
		}                                                                                    \
	} while (0)

/* Ends the test: prints PASS or the number of failed checks. */
int test_done(const char *name);

/* Milliseconds on the monotonic clock. */
int64_t now_ms(void);

/* ---- hubsim ------------------------------------------------------------------------------------------------- */

#define HUB_MAX_DEVICES 8
#define HUB_LOG_LINES 64

typedef struct hubsim {
	pid_t pid;
	int out_fd;
	pthread_t reader;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int ready, exited;
	char dir[256];
	char mqtt_addr[64];
	char amqp_addr[64];    /* AMQP over TLS */
	char amqp_ws_addr[64]; /* AMQP over WebSocket */
	int control_port;
	char ca_file[512];
	int ndevices;
	char device_id[HUB_MAX_DEVICES][64];
	char conn_str[HUB_MAX_DEVICES][512];
	/* With DPS (hubsim_start_args with --hub, --dps-mqtt, --enrollment): the second hub and the DPS front. */
	char hub2_host[128];
	int hub2_control_port;
	char dps_mqtt_addr[64];
	int dps_control_port;
	char id_scope[64];
	int nenrollments;
	char enrollment_id[HUB_MAX_DEVICES][64]; /* registration or group id */
	char enrollment_key[HUB_MAX_DEVICES][512];
	/* Event lines printed after "hubsim: ready": how many, and the last HUB_LOG_LINES of them. */
	uint64_t nlines;
	char lines[HUB_LOG_LINES][256];
} hubsim_t;

/* Starts build/bin/iotconn-hubsim on 127.0.0.1:0 ports with the given devices (NULL-terminated list of "id") and
 * waits until it printed "hubsim: ready". Returns 0, or -1 with a message on stderr. */
int hubsim_start(hubsim_t *h, const char *const *devices);

/* As hubsim_start, with more command-line arguments (NULL-terminated, at most 16), e.g. "--hub", "127.0.0.1:0",
 * "--dps-mqtt", "127.0.0.1:0", "--enrollment", "dev-1". */
int hubsim_start_args(hubsim_t *h, const char *const *devices, const char *const *args);

/* The primary key hubsim printed for enrollment or group `id`, or NULL. */
const char *hubsim_enrollment_key(const hubsim_t *h, const char *id);

/* Runs `iotconn-hubsim mint-cert --cn CN --out OUT [--issuer ISSUER] [--ca] [--expired]`: writes OUT.pem and
 * OUT-key.pem and stores the SHA-1 thumbprint in thumb (n bytes). Returns 0 or -1. */
int hubsim_mint_cert(const char *cn, const char *out, const char *issuer, int ca, int expired, char *thumb, size_t n);

/* How many event lines hubsim printed so far: the `from` of a later hubsim_wait_line. */
uint64_t hubsim_lines(hubsim_t *h);

/* Waits until an event line printed after the first `from` (among the last HUB_LOG_LINES) contains text, e.g.
 * "hubsim: disconnect dev1 ". Returns 0, or -1 after timeout_ms. */
int hubsim_wait_line(hubsim_t *h, uint64_t from, const char *text, int timeout_ms);

/* Stops hubsim by its PID (SIGTERM, then SIGKILL after 10 s) and removes its state directory. */
void hubsim_stop(hubsim_t *h);

/* The connection string hubsim printed for device `id`, or NULL. */
const char *hubsim_conn_str(const hubsim_t *h, const char *id);

/* The connection string of device `id` over AMQP (websocket 0) or AMQP over WebSocket (1): hubsim's host name for
 * the tokens, its AMQP listener as the gateway. Written into buf; NULL if there is no such device. */
const char *hubsim_amqp_conn_str(const hubsim_t *h, const char *id, int websocket, char *buf, size_t len);

/* Options with hubsim's CA and the given dispatch mode. */
iotconn_options_t hubsim_options(const hubsim_t *h, int dispatch);

/* One HTTP/1.0 request to hubsim's control API. Returns the status code (or -1) and stores the malloc'd
 * response body in *body when body is not NULL. */
int hub_http(const hubsim_t *h, const char *method, const char *path, const char *json, char **body);

/* The same request to another control API of the process: hub 2's or DPS's (control_port of hubsim_t). */
int http_request(int port, const char *method, const char *path, const char *json, char **body);

/* POST /faults with the given JSON; returns 0 on HTTP 200. */
int hub_fault(const hubsim_t *h, const char *json);

/* Counts the messages hubsim recorded for device `id`: total and distinct message ids. Returns 0 or -1. */
int hub_count_messages(const hubsim_t *h, const char *id, size_t *total, size_t *distinct);

/* ---- event recorder: everything a client's callbacks saw ---------------------------------------------------- */

#define REC_MAX_STATUS 64

typedef struct status_event {
	iotconn_status_t status;
	iotconn_reason_t reason;
	int64_t at_ms;
	pthread_t thread;
} status_event_t;

typedef struct recorder {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int nstatus;
	status_event_t status[REC_MAX_STATUS];
	/* completions, indexed by message id (1..max_id) */
	uint64_t max_id;
	int *completions;     /* how many completions each id got */
	int *results;         /* the last result of each id */
	uint64_t ncompleted;  /* total completions */
	uint64_t nfailed;     /* completions that were not DELIVERED */
	int nmessages;        /* C2D messages */
	iotconn_message_t *last_message; /* a copy (iotconn_message_copy) of the last C2D message */
} recorder_t;

void recorder_init(recorder_t *r, uint64_t max_id);
void recorder_free(recorder_t *r);
/* Registers the recorder's status, send and message callbacks on the client. */
void recorder_attach(recorder_t *r, iotconn_client_t *c);
/* Waits until a status event (status, reason) appears at index >= from; returns its index or -1 on timeout. */
int recorder_wait_status(recorder_t *r, int from, iotconn_status_t status, iotconn_reason_t reason,
			 int timeout_ms);
/* Waits until n completions arrived; returns 0 or -1 on timeout. */
int recorder_wait_completions(recorder_t *r, uint64_t n, int timeout_ms);
/* Waits until n C2D messages arrived; returns 0 or -1 on timeout. */
int recorder_wait_messages(recorder_t *r, int n, int timeout_ms);
/* Prints the status events seen (for failure messages). */
void recorder_dump(recorder_t *r);

/* Sends one message with payload text, message id mid (may be NULL) and one property; returns iotconn_send's
 * code and stores the id. */
int send_text(iotconn_client_t *c, const char *text, const char *mid, uint64_t *id);

#endif
