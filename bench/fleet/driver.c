/*
 * bench/fleet's driver: N device clients in one process, over the public C ABI only (include/iotconn.h), thread
 * dispatch. It connects them all, then logs every status change and every failed attempt the engine reports,
 * while bench/fleet/run.sh breaks the links at the front.
 *
 *   iotconn_fleet -n N -d DEVICES -H HOST:PORT -c CA [-p POLICY] [-s SPREAD_MS] [-A RATE] [-D] [-o EVENTS]
 *                 [-j THREADS] [-T CONNECT_MS]
 *
 * DEVICES has one "ID KEY" a line (the first N are used); client I (0-based) is the device on line I+1, with the
 * connection string HostName=HOST:PORT;DeviceId=ID;SharedAccessKey=KEY. POLICY is one of the names in `modes`
 * below, or custom:MS[,MS...] (the delay before retry k is the k-th number, the last one repeating). SPREAD_MS is
 * the fleet hint (iotconn_options_t.reconnect_spread_ms; run.sh's "hint" policy: default with 1.1 N/R). -D puts
 * every client on one shared iotconn_dispatcher_t (one callback thread for the fleet). RATE: one admission budget
 * of RATE connects per second (burst 1) shared by every client (iotconn_admission_create).
 *
 * EVENTS (default stdout), one line each, MS = CLOCK_MONOTONIC in milliseconds (the front's clock too):
 *   MS I s STATUS REASON   client I's status changed (the header's enum numbers)
 *   MS I f DELAY           the engine reported a failure (a dropped link or a failed attempt) and the delay before
 *                          its next attempt, as the engine wrote it (a Go duration: 1s, 1.234s, 900ms, 1m0s)
 * The ABI has no per-attempt event, so the second kind comes from the log callback's "attempt N failed (...);
 * next in D" lines: each schedules exactly one attempt. run.sh checks their count against the front's.
 *
 * stdout: "fleet: connected N ms=MS", "fleet: memory rss_kb=KB before_kb=KB threads=T", then one answer per
 * command read from stdin:
 *   arm        "fleet: armed MS": from now on, count the clients whose link drops
 *   wait MS    "fleet: settled MS connected=C gave_up=G last_connect=MS" once every client dropped since arm and
 *              none is still retrying, or "fleet: timeout MS connected=C retrying=R gave_up=G dropped=D" after MS
 *   quit, EOF  flush EVENTS and exit
 */
#include <errno.h>
#include <iotconn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The retry policies by name. A new jitter mode or policy kind is one line here. */
static const struct mode {
	const char *name;
	int kind;   /* IOTCONN_RETRY_* */
	int jitter; /* IOTCONN_JITTER_* (EXPONENTIAL only) */
} modes[] = {
	{"default", IOTCONN_RETRY_EXPONENTIAL, IOTCONN_JITTER_DEFAULT},
	{"full", IOTCONN_RETRY_EXPONENTIAL, IOTCONN_JITTER_FULL},
	{"decorrelated", IOTCONN_RETRY_EXPONENTIAL, IOTCONN_JITTER_DECORRELATED},
	{"none", IOTCONN_RETRY_NONE, IOTCONN_JITTER_DEFAULT},
};

#define MAX_CUSTOM_DELAYS 64

struct custom_delays {
	uint32_t ms[MAX_CUSTOM_DELAYS];
	uint32_t count;
};

struct client {
	iotconn_client_t *handle;
	unsigned idx;
	int status;  /* the last status its callback reported; under mu */
	int dropped; /* its link dropped since the last arm; under mu */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
/* Under mu: the events file and the fleet's counts by status. */
static FILE *events;
static unsigned connected, retrying, gave_up, dropped;
static int armed;
static double last_connect_ms;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static unsigned *count_of(int status)
{
	switch (status) {
	case IOTCONN_STATUS_CONNECTED:
		return &connected;
	case IOTCONN_STATUS_DISCONNECTED_RETRYING:
		return &retrying;
	case IOTCONN_STATUS_DISCONNECTED:
		return &gave_up;
	}
	return NULL; /* Disabled: only after a close, which the driver never does */
}

static void on_status(iotconn_status_t status, iotconn_reason_t reason, void *user)
{
	struct client *c = user;
	double t = now_ms();
	pthread_mutex_lock(&mu);
	fprintf(events, "%.3f %u s %d %d\n", t, c->idx, (int)status, (int)reason);
	unsigned *from = count_of(c->status), *to = count_of((int)status);
	if (from)
		(*from)--;
	if (to)
		(*to)++;
	if (armed && c->status == IOTCONN_STATUS_CONNECTED && !c->dropped) {
		c->dropped = 1;
		dropped++;
	}
	if (status == IOTCONN_STATUS_CONNECTED)
		last_connect_ms = t;
	c->status = (int)status;
	pthread_mutex_unlock(&mu);
	pthread_cond_broadcast(&changed);
}

static void on_log(int level, const char *message, void *user)
{
	struct client *c = user;
	const char *next = strstr(message, "; next in ");
	if (level != IOTCONN_LOG_WARN || strncmp(message, "attempt ", 8) != 0 || next == NULL)
		return;
	double t = now_ms();
	pthread_mutex_lock(&mu);
	fprintf(events, "%.3f %u f %s\n", t, c->idx, next + strlen("; next in "));
	pthread_mutex_unlock(&mu);
}

static int custom_retry(uint32_t attempt, int error_code, const char *error_message, uint32_t *delay_ms, void *user)
{
	(void)error_code, (void)error_message;
	const struct custom_delays *d = user;
	*delay_ms = d->ms[(attempt <= d->count ? attempt : d->count) - 1];
	return 1;
}

/* Parses POLICY into *p (custom delays into *d); 0 on success. */
static int parse_policy(const char *spec, iotconn_retry_policy_t *p, struct custom_delays *d)
{
	iotconn_retry_policy_t init = IOTCONN_RETRY_POLICY_INIT;
	*p = init;
	if (strncmp(spec, "custom:", 7) == 0) {
		const char *s = spec + 7;
		d->count = 0;
		while (*s && d->count < MAX_CUSTOM_DELAYS) {
			char *end;
			unsigned long v = strtoul(s, &end, 10);
			if (end == s || (*end != ',' && *end != '\0') || v > UINT32_MAX)
				return -1;
			d->ms[d->count++] = (uint32_t)v;
			s = *end ? end + 1 : end;
		}
		if (d->count == 0 || *s)
			return -1;
		p->kind = IOTCONN_RETRY_CUSTOM;
		p->custom = custom_retry;
		p->user = d;
		return 0;
	}
	for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
		if (strcmp(spec, modes[i].name) == 0) {
			p->kind = modes[i].kind;
			p->jitter = modes[i].jitter;
			return 0;
		}
	return -1;
}

/* Reads "Name: VALUE kB"-style fields of /proc/self/status; -1 when absent. */
static long proc_status(const char *name)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	size_t n = strlen(name);
	while (f && fgets(line, sizeof line, f))
		if (strncmp(line, name, n) == 0 && line[n] == ':') {
			v = strtol(line + n + 1, NULL, 10);
			break;
		}
	if (f)
		fclose(f);
	return v;
}

struct connector {
	struct client *clients;
	unsigned n, first, step;
	uint32_t timeout_ms;
	int failed;
};

/* Connects clients first, first+step, ... one after the other. */
static void *connect_stripe(void *arg)
{
	struct connector *k = arg;
	for (unsigned i = k->first; i < k->n; i += k->step)
		if (iotconn_connect(k->clients[i].handle, k->timeout_ms) != IOTCONN_OK) {
			fprintf(stderr, "fleet: connect client %u: %s\n", i, iotconn_last_error());
			k->failed = 1;
			return NULL;
		}
	return NULL;
}

/* Answers "wait MS": until settled (see the header comment) or MS passed. */
static void wait_settled(unsigned n, long ms)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += ms / 1000;
	deadline.tv_nsec += (ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	int timed_out = 0;
	pthread_mutex_lock(&mu);
	while (!(armed && dropped == n && retrying == 0) && !timed_out)
		timed_out = pthread_cond_timedwait(&changed, &mu, &deadline) == ETIMEDOUT;
	if (armed && dropped == n && retrying == 0)
		printf("fleet: settled %.3f connected=%u gave_up=%u last_connect=%.3f\n", now_ms(), connected, gave_up,
		       last_connect_ms);
	else
		printf("fleet: timeout %.3f connected=%u retrying=%u gave_up=%u dropped=%u\n", now_ms(), connected,
		       retrying, gave_up, dropped);
	pthread_mutex_unlock(&mu);
	fflush(stdout);
}

static void arm(unsigned n, struct client *clients)
{
	pthread_mutex_lock(&mu);
	for (unsigned i = 0; i < n; i++)
		clients[i].dropped = 0;
	dropped = 0;
	armed = 1;
	printf("fleet: armed %.3f\n", now_ms());
	pthread_mutex_unlock(&mu);
	fflush(stdout);
}

static int usage(void)
{
	fprintf(stderr, "usage: iotconn_fleet -n N -d DEVICES -H HOST:PORT -c CA [-p POLICY] [-o EVENTS] [-j THREADS]"
			" [-T CONNECT_MS]\nPOLICY:");
	for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
		fprintf(stderr, " %s", modes[i].name);
	fprintf(stderr, " custom:MS[,MS...]\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *devices = NULL, *host = NULL, *ca = NULL, *policy = "default", *out = NULL;
	unsigned long n = 0, threads = 16, connect_ms = 120000, spread_ms = 0;
	double admission_rate = 0;
	int opt, shared = 0;
	while ((opt = getopt(argc, argv, "n:d:H:c:p:s:A:Do:j:T:")) != -1) {
		switch (opt) {
		case 'n': n = strtoul(optarg, NULL, 10); break;
		case 'd': devices = optarg; break;
		case 'H': host = optarg; break;
		case 'c': ca = optarg; break;
		case 'p': policy = optarg; break;
		case 's': spread_ms = strtoul(optarg, NULL, 10); break;
		case 'D': shared = 1; break;
		case 'A': admission_rate = strtod(optarg, NULL); break;
		case 'o': out = optarg; break;
		case 'j': threads = strtoul(optarg, NULL, 10); break;
		case 'T': connect_ms = strtoul(optarg, NULL, 10); break;
		default: return usage();
		}
	}
	iotconn_retry_policy_t pol;
	static struct custom_delays delays;
	if (n == 0 || n > 1000000 || !devices || !host || !ca || optind != argc || threads == 0 ||
	    connect_ms == 0 || connect_ms > UINT32_MAX || spread_ms > UINT32_MAX ||
	    parse_policy(policy, &pol, &delays) != 0)
		return usage();
	iotconn_admission_t *admission = NULL;
	if (admission_rate > 0 && iotconn_admission_create(admission_rate, 1, &admission) != IOTCONN_OK) {
		fprintf(stderr, "fleet: admission: %s\n", iotconn_last_error());
		return 1;
	}
	iotconn_dispatcher_t *dispatcher = NULL;
	if (shared && iotconn_dispatcher_create(IOTCONN_DISPATCH_THREAD, &dispatcher) != IOTCONN_OK) {
		fprintf(stderr, "fleet: dispatcher: %s\n", iotconn_last_error());
		return 1;
	}
	events = out ? fopen(out, "w") : stdout;
	if (!events) {
		perror(out);
		return 1;
	}
	static char events_buf[1 << 20]; /* one write per MiB, not per line, while thousands of clients report */
	setvbuf(events, events_buf, _IOFBF, sizeof events_buf);

	FILE *df = fopen(devices, "r");
	if (!df) {
		perror(devices);
		return 1;
	}
	long rss_before = proc_status("VmRSS");
	struct client *clients = calloc(n, sizeof *clients);
	if (!clients) {
		perror("calloc");
		return 1;
	}
	char id[256], key[256], cs[1024];
	for (unsigned i = 0; i < n; i++) {
		if (fscanf(df, "%255s %255s", id, key) != 2) {
			fprintf(stderr, "fleet: %s has fewer than %lu devices\n", devices, n);
			return 1;
		}
		snprintf(cs, sizeof cs, "HostName=%s;DeviceId=%s;SharedAccessKey=%s", host, id, key);
		iotconn_options_t o = IOTCONN_OPTIONS_INIT;
		o.ca_file = ca;
		o.dispatcher = dispatcher;
		o.reconnect_spread_ms = (uint32_t)spread_ms;
		o.admission = admission;
		struct client *c = &clients[i];
		c->idx = i;
		c->status = IOTCONN_STATUS_DISCONNECTED;
		if (iotconn_client_create(cs, &o, &c->handle) != IOTCONN_OK ||
		    iotconn_set_retry_policy(c->handle, &pol) != IOTCONN_OK ||
		    iotconn_register_status_callback(c->handle, on_status, c) != IOTCONN_OK ||
		    iotconn_register_log_callback(c->handle, on_log, c) != IOTCONN_OK) {
			fprintf(stderr, "fleet: client %u: %s\n", i, iotconn_last_error());
			return 1;
		}
	}
	fclose(df);
	/* Every client starts Disconnected: counted so that the first Connected moves it. */
	gave_up = (unsigned)n;

	double start = now_ms();
	if (threads > n)
		threads = n;
	pthread_t *tids = calloc(threads, sizeof *tids);
	struct connector *ks = calloc(threads, sizeof *ks);
	if (!tids || !ks) {
		perror("calloc");
		return 1;
	}
	for (unsigned t = 0; t < threads; t++) {
		ks[t] = (struct connector){clients, (unsigned)n, t, (unsigned)threads, (uint32_t)connect_ms, 0};
		if (pthread_create(&tids[t], NULL, connect_stripe, &ks[t]) != 0) {
			fprintf(stderr, "fleet: pthread_create failed\n");
			return 1;
		}
	}
	int failed = 0;
	for (unsigned t = 0; t < threads; t++) {
		pthread_join(tids[t], NULL);
		failed |= ks[t].failed;
	}
	if (failed)
		return 1;
	printf("fleet: connected %lu ms=%.0f\n", n, now_ms() - start);
	printf("fleet: memory rss_kb=%ld before_kb=%ld threads=%ld\n", proc_status("VmRSS"), rss_before,
	       proc_status("Threads"));
	fflush(stdout);

	char line[128];
	while (fgets(line, sizeof line, stdin)) {
		long ms;
		if (strcmp(line, "arm\n") == 0)
			arm((unsigned)n, clients);
		else if (sscanf(line, "wait %ld", &ms) == 1 && ms > 0)
			wait_settled((unsigned)n, ms);
		else if (strcmp(line, "quit\n") == 0)
			break;
		else
			fprintf(stderr, "fleet: unknown command %s", line);
	}
	/* Exit without destroying the clients: closing thousands one by one takes seconds and adds nothing to the
	 * measurement; the kernel closes their sockets. The lock keeps callbacks from writing during the flush. */
	pthread_mutex_lock(&mu);
	fflush(events);
	fflush(stdout);
	_exit(0);
}
