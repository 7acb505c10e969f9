#define _GNU_SOURCE
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef IOTCONN_HUBSIM
#error "IOTCONN_HUBSIM (path of iotconn-hubsim) must be defined by the build"
#endif

extern char **environ;

int test_failures;

int test_done(const char *name)
{
	if (test_failures) {
		fprintf(stderr, "FAIL %s: %d check(s) failed\n", name, test_failures);
		return 1;
	}
	printf("PASS %s\n", name);
	return 0;
}

int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec deadline_in(int ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

static void cond_init_monotonic(pthread_cond_t *c)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

/* ---- hubsim ------------------------------------------------------------------------------------------------- */

/* Parses one line hubsim printed. Called with h->mu held. */
static void hubsim_line(hubsim_t *h, const char *line)
{
	char a[64], b[512];
	int port;
	if (sscanf(line, "hubsim: mqtts %63s", h->mqtt_addr) == 1)
		return;
	if (sscanf(line, "hubsim: amqps %63s", h->amqp_addr) == 1)
		return;
	if (sscanf(line, "hubsim: amqp-ws %63s", h->amqp_ws_addr) == 1)
		return;
	if (sscanf(line, "hubsim: control http://127.0.0.1:%d", &port) == 1) {
		h->control_port = port;
		return;
	}
	if (sscanf(line, "hubsim: ca %511s", h->ca_file) == 1)
		return;
	if (sscanf(line, "hubsim: device %63s %511s", a, b) == 2 && h->ndevices < HUB_MAX_DEVICES) {
		snprintf(h->device_id[h->ndevices], sizeof h->device_id[0], "%s", a);
		snprintf(h->conn_str[h->ndevices], sizeof h->conn_str[0], "%s", b);
		h->ndevices++;
		return;
	}
	if (sscanf(line, "hubsim: hub2 %63s mqtts %*s control http://127.0.0.1:%d", a, &port) == 2) {
		snprintf(h->hub2_host, sizeof h->hub2_host, "%s", a); /* not before: hub 2's event lines start alike */
		h->hub2_control_port = port;
		return;
	}
	if (sscanf(line, "hubsim: dps mqtts %63s", h->dps_mqtt_addr) == 1)
		return;
	if (sscanf(line, "hubsim: dps control http://127.0.0.1:%d", &port) == 1) {
		h->dps_control_port = port;
		return;
	}
	if (sscanf(line, "hubsim: dps idscope %63s", h->id_scope) == 1)
		return;
	if ((sscanf(line, "hubsim: dps enrollment %63s %511s", a, b) == 2 ||
	     sscanf(line, "hubsim: dps group %63s %511s", a, b) == 2) &&
	    h->nenrollments < HUB_MAX_DEVICES) {
		snprintf(h->enrollment_id[h->nenrollments], sizeof h->enrollment_id[0], "%s", a);
		snprintf(h->enrollment_key[h->nenrollments], sizeof h->enrollment_key[0], "%s", b);
		h->nenrollments++;
		return;
	}
	if (strcmp(line, "hubsim: ready") == 0) {
		h->ready = 1;
		return;
	}
	if (h->ready)
		snprintf(h->lines[h->nlines++ % HUB_LOG_LINES], sizeof h->lines[0], "%.*s", (int)sizeof h->lines[0] - 1,
			 line); /* a longer line is cut */
}

uint64_t hubsim_lines(hubsim_t *h)
{
	pthread_mutex_lock(&h->mu);
	uint64_t n = h->nlines;
	pthread_mutex_unlock(&h->mu);
	return n;
}

const char *hubsim_enrollment_key(const hubsim_t *h, const char *id)
{
	for (int i = 0; i < h->nenrollments; i++)
		if (strcmp(h->enrollment_id[i], id) == 0)
			return h->enrollment_key[i];
	return NULL;
}

/* Reads hubsim's stdout until it exits: parses the start-up lines and echoes every line to stderr, so a failed
 * test shows the hub's side. Draining also keeps hubsim from blocking on a full pipe. */
static void *hubsim_reader(void *arg)
{
	hubsim_t *h = arg;
	char buf[8192];
	size_t len = 0;
	for (;;) {
		ssize_t n = read(h->out_fd, buf + len, sizeof buf - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = 0;
		char *start = buf, *nl;
		while ((nl = strchr(start, '\n')) != NULL) {
			*nl = 0;
			fprintf(stderr, "  [hub] %s\n", start);
			pthread_mutex_lock(&h->mu);
			hubsim_line(h, start);
			pthread_cond_broadcast(&h->cond);
			pthread_mutex_unlock(&h->mu);
			start = nl + 1;
		}
		len -= (size_t)(start - buf);
		memmove(buf, start, len);
		if (len == sizeof buf - 1)
			len = 0; /* a line longer than the buffer: drop it */
	}
	pthread_mutex_lock(&h->mu);
	h->exited = 1;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

int hubsim_start(hubsim_t *h, const char *const *devices) { return hubsim_start_args(h, devices, NULL); }

int hubsim_start_args(hubsim_t *h, const char *const *devices, const char *const *args)
{
	memset(h, 0, sizeof *h);
	pthread_mutex_init(&h->mu, NULL);
	cond_init_monotonic(&h->cond);
	snprintf(h->dir, sizeof h->dir, "/tmp/iotconn-ctest-XXXXXX");
	if (!mkdtemp(h->dir)) {
		perror("mkdtemp");
		return -1;
	}
	const char *argv[12 + 2 * HUB_MAX_DEVICES + 16];
	int argc = 0;
	argv[argc++] = IOTCONN_HUBSIM;
	argv[argc++] = "--dir";
	argv[argc++] = h->dir;
	argv[argc++] = "--mqtt";
	argv[argc++] = "127.0.0.1:0";
	argv[argc++] = "--control";
	argv[argc++] = "127.0.0.1:0";
	argv[argc++] = "--amqp";
	argv[argc++] = "127.0.0.1:0";
	argv[argc++] = "--amqp-ws";
	argv[argc++] = "127.0.0.1:0";
	for (int i = 0; devices && devices[i] && i < HUB_MAX_DEVICES; i++) {
		argv[argc++] = "--device";
		argv[argc++] = devices[i];
	}
	for (int i = 0; args && args[i] && i < 16; i++)
		argv[argc++] = args[i];
	argv[argc] = NULL;

	int fds[2];
	if (pipe2(fds, O_CLOEXEC) != 0) {
		perror("pipe2");
		return -1;
	}
	/* posix_spawn, not fork: the Go runtime of libiotconn must not be forked. */
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
	int err = posix_spawn(&h->pid, IOTCONN_HUBSIM, &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(fds[1]);
	if (err != 0) {
		fprintf(stderr, "posix_spawn %s: %s\n", IOTCONN_HUBSIM, strerror(err));
		close(fds[0]);
		h->pid = 0;
		return -1;
	}
	h->out_fd = fds[0];
	pthread_create(&h->reader, NULL, hubsim_reader, h);

	struct timespec dl = deadline_in(60000);
	pthread_mutex_lock(&h->mu);
	while (!h->ready && !h->exited)
		if (pthread_cond_timedwait(&h->cond, &h->mu, &dl) == ETIMEDOUT)
			break;
	int ok = h->ready && h->control_port > 0 && h->ca_file[0];
	pthread_mutex_unlock(&h->mu);
	if (!ok) {
		fprintf(stderr, "hubsim did not become ready\n");
		hubsim_stop(h);
		return -1;
	}
	return 0;
}

int hubsim_wait_line(hubsim_t *h, uint64_t from, const char *text, int timeout_ms)
{
	struct timespec dl = deadline_in(timeout_ms);
	int found = 0, timed_out = 0;
	pthread_mutex_lock(&h->mu);
	while (!found) {
		if (h->nlines > HUB_LOG_LINES && from < h->nlines - HUB_LOG_LINES)
			from = h->nlines - HUB_LOG_LINES; /* older lines are gone */
		for (; from < h->nlines && !found; from++)
			found = strstr(h->lines[from % HUB_LOG_LINES], text) != NULL;
		if (found || timed_out || h->exited)
			break;
		timed_out = pthread_cond_timedwait(&h->cond, &h->mu, &dl) == ETIMEDOUT; /* then one last look */
	}
	pthread_mutex_unlock(&h->mu);
	if (!found)
		fprintf(stderr, "hubsim printed no line with \"%s\" within %d ms\n", text, timeout_ms);
	return found ? 0 : -1;
}

/* Waits up to ms for the process to exit, using a pidfd so that the wait is an event with a deadline. */
static int wait_exit(pid_t pid, int ms)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd >= 0) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int n = poll(&p, 1, ms);
		close(fd);
		if (n == 0)
			return -1;
	}
	return waitpid(pid, NULL, 0) == pid ? 0 : -1;
}

int hubsim_mint_cert(const char *cn, const char *out, const char *issuer, int ca, int expired, char *thumb, size_t n)
{
	const char *argv[12] = {IOTCONN_HUBSIM, "mint-cert", "--cn", cn, "--out", out};
	int argc = 6;
	if (issuer) {
		argv[argc++] = "--issuer";
		argv[argc++] = issuer;
	}
	if (ca)
		argv[argc++] = "--ca";
	if (expired)
		argv[argc++] = "--expired";
	argv[argc] = NULL;
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) != 0)
		return -1;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
	pid_t pid;
	int err = posix_spawn(&pid, IOTCONN_HUBSIM, &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(fds[1]);
	if (err != 0) {
		close(fds[0]);
		return -1;
	}
	size_t len = 0;
	for (;;) { /* mint-cert prints one line and exits: EOF ends this loop */
		ssize_t r = read(fds[0], thumb + len, n - 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || (len += (size_t)r) == n - 1)
			break;
	}
	close(fds[0]);
	thumb[len] = 0;
	thumb[strcspn(thumb, "\r\n")] = 0;
	if (wait_exit(pid, 30000) != 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	return thumb[0] ? 0 : -1;
}

void hubsim_stop(hubsim_t *h)
{
	if (h->pid > 0) {
		kill(h->pid, SIGTERM);
		if (wait_exit(h->pid, 10000) != 0) {
			fprintf(stderr, "hubsim did not stop on SIGTERM; killing it\n");
			kill(h->pid, SIGKILL);
			waitpid(h->pid, NULL, 0);
		}
		h->pid = 0;
		pthread_join(h->reader, NULL);
		close(h->out_fd);
	}
	if (h->dir[0]) {
		const char *argv[] = {"rm", "-rf", h->dir, NULL};
		pid_t pid;
		if (posix_spawnp(&pid, "rm", NULL, NULL, (char *const *)argv, environ) == 0)
			waitpid(pid, NULL, 0);
		h->dir[0] = 0;
	}
}

const char *hubsim_conn_str(const hubsim_t *h, const char *id)
{
	for (int i = 0; i < h->ndevices; i++)
		if (strcmp(h->device_id[i], id) == 0)
			return h->conn_str[i];
	return NULL;
}

const char *hubsim_amqp_conn_str(const hubsim_t *h, const char *id, int websocket, char *buf, size_t len)
{
	const char *cs = hubsim_conn_str(h, id);
	const char *addr = websocket ? h->amqp_ws_addr : h->amqp_addr;
	const char *port = strrchr(addr, ':');
	if (cs == NULL || port == NULL)
		return NULL;
	snprintf(buf, len, "%s;GatewayHostName=localhost%s", cs, port);
	return buf;
}

iotconn_options_t hubsim_options(const hubsim_t *h, int dispatch)
{
	iotconn_options_t o = IOTCONN_OPTIONS_INIT;
	o.ca_file = h->ca_file;
	o.dispatch = dispatch;
	return o;
}

/* ---- the control API: HTTP/1.0 over a socket (no chunked replies, the server closes when done) ---------------- */

int hub_http(const hubsim_t *h, const char *method, const char *path, const char *json, char **body)
{
	return http_request(h->control_port, method, path, json, body);
}

int http_request(int port, const char *method, const char *path, const char *json, char **body)
{
	if (body)
		*body = NULL;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = {.tv_sec = 30};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		close(fd);
		return -1;
	}
	size_t blen = json ? strlen(json) : 0;
	char head[512];
	int hl = snprintf(head, sizeof head,
			  "%s %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
			  "Content-Length: %zu\r\n\r\n",
			  method, path, port, blen);
	if (write(fd, head, (size_t)hl) != hl || (blen && write(fd, json, blen) != (ssize_t)blen)) {
		close(fd);
		return -1;
	}
	size_t cap = 1 << 16, len = 0;
	char *resp = malloc(cap);
	for (;;) {
		if (len + 1 == cap)
			resp = realloc(resp, cap *= 2);
		ssize_t n = read(fd, resp + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	resp[len] = 0;
	int status = -1;
	if (sscanf(resp, "HTTP/%*d.%*d %d", &status) != 1)
		status = -1;
	char *sep = strstr(resp, "\r\n\r\n");
	if (body && sep) {
		*body = strdup(sep + 4);
	}
	free(resp);
	return status;
}

int hub_fault(const hubsim_t *h, const char *json)
{
	char *body = NULL;
	int status = hub_http(h, "POST", "/faults", json, &body);
	if (status != 200)
		fprintf(stderr, "POST /faults %s -> %d %s\n", json, status, body ? body : "");
	free(body);
	return status == 200 ? 0 : -1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int hub_count_messages(const hubsim_t *h, const char *id, size_t *total, size_t *distinct)
{
	char path[256], *body = NULL;
	snprintf(path, sizeof path, "/devices/%s/messages", id);
	if (hub_http(h, "GET", path, NULL, &body) != 200 || !body) {
		free(body);
		return -1;
	}
	/* The record is a JSON array of objects, each with one "messageId":"..." (ids never contain quotes). */
	size_t n = 0, cap = 1024;
	char **ids = malloc(cap * sizeof *ids);
	const char *key = "\"messageId\":\"";
	for (char *p = strstr(body, key); p; p = strstr(p, key)) {
		p += strlen(key);
		char *end = strchr(p, '"');
		if (!end)
			break;
		if (n == cap)
			ids = realloc(ids, (cap *= 2) * sizeof *ids);
		ids[n++] = strndup(p, (size_t)(end - p));
		p = end;
	}
	qsort(ids, n, sizeof *ids, cmp_str);
	size_t d = 0;
	for (size_t i = 0; i < n; i++)
		if (i == 0 || strcmp(ids[i], ids[i - 1]) != 0)
			d++;
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
	free(body);
	*total = n;
	*distinct = d;
	return 0;
}

/* ---- recorder ----------------------------------------------------------------------------------------------- */

void recorder_init(recorder_t *r, uint64_t max_id)
{
	memset(r, 0, sizeof *r);
	pthread_mutex_init(&r->mu, NULL);
	cond_init_monotonic(&r->cond);
	r->max_id = max_id;
	r->completions = calloc(max_id + 1, sizeof *r->completions);
	r->results = calloc(max_id + 1, sizeof *r->results);
}

void recorder_free(recorder_t *r)
{
	free(r->completions);
	free(r->results);
	iotconn_free(r->last_message);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->mu);
}

static void on_status(iotconn_status_t s, iotconn_reason_t reason, void *user)
{
	recorder_t *r = user;
	pthread_mutex_lock(&r->mu);
	if (r->nstatus < REC_MAX_STATUS)
		r->status[r->nstatus++] = (status_event_t){s, reason, now_ms(), pthread_self()};
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

static void on_send(uint64_t id, int result, int code, void *user)
{
	recorder_t *r = user;
	pthread_mutex_lock(&r->mu);
	if (id >= 1 && id <= r->max_id) {
		r->completions[id]++;
		r->results[id] = result;
	}
	r->ncompleted++;
	if (result != IOTCONN_SEND_DELIVERED) {
		if (r->nfailed < 5)
			fprintf(stderr, "completion %llu: result %d, %d %s\n", (unsigned long long)id, result, code,
				iotconn_last_error());
		r->nfailed++;
	}
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

static void on_message(const iotconn_message_t *msg, void *user)
{
	recorder_t *r = user;
	iotconn_message_t *copy = NULL;
	int rc = iotconn_message_copy(msg, &copy);
	pthread_mutex_lock(&r->mu);
	if (rc == 0) {
		iotconn_free(r->last_message);
		r->last_message = copy;
	}
	r->nmessages++;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

void recorder_attach(recorder_t *r, iotconn_client_t *c)
{
	CHECK_RC(iotconn_register_status_callback(c, on_status, r), 0);
	CHECK_RC(iotconn_register_send_callback(c, on_send, r), 0);
	CHECK_RC(iotconn_register_message_callback(c, on_message, r), 0);
}

int recorder_wait_status(recorder_t *r, int from, iotconn_status_t status, iotconn_reason_t reason, int timeout_ms)
{
	struct timespec dl = deadline_in(timeout_ms);
	int found = -1;
	pthread_mutex_lock(&r->mu);
	for (;;) {
		for (int i = from; i < r->nstatus; i++)
			if (r->status[i].status == status && r->status[i].reason == reason) {
				found = i;
				break;
			}
		if (found >= 0 || pthread_cond_timedwait(&r->cond, &r->mu, &dl) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&r->mu);
	if (found < 0) {
		fprintf(stderr, "no status %s/%s within %d ms; saw:\n", iotconn_status_str(status),
			iotconn_reason_str(reason), timeout_ms);
		recorder_dump(r);
	}
	return found;
}

int recorder_wait_messages(recorder_t *r, int n, int timeout_ms)
{
	struct timespec dl = deadline_in(timeout_ms);
	pthread_mutex_lock(&r->mu);
	while (r->nmessages < n)
		if (pthread_cond_timedwait(&r->cond, &r->mu, &dl) == ETIMEDOUT)
			break;
	int ok = r->nmessages >= n;
	pthread_mutex_unlock(&r->mu);
	return ok ? 0 : -1;
}

int recorder_wait_completions(recorder_t *r, uint64_t n, int timeout_ms)
{
	struct timespec dl = deadline_in(timeout_ms);
	pthread_mutex_lock(&r->mu);
	while (r->ncompleted < n)
		if (pthread_cond_timedwait(&r->cond, &r->mu, &dl) == ETIMEDOUT)
			break;
	int ok = r->ncompleted >= n;
	uint64_t got = r->ncompleted;
	pthread_mutex_unlock(&r->mu);
	if (!ok)
		fprintf(stderr, "%llu of %llu completions within %d ms\n", (unsigned long long)got,
			(unsigned long long)n, timeout_ms);
	return ok ? 0 : -1;
}

void recorder_dump(recorder_t *r)
{
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->nstatus; i++)
		fprintf(stderr, "  status[%d] %s / %s\n", i, iotconn_status_str(r->status[i].status),
			iotconn_reason_str(r->status[i].reason));
	pthread_mutex_unlock(&r->mu);
}

int send_text(iotconn_client_t *c, const char *text, const char *mid, uint64_t *id)
{
	iotconn_property_t props[] = {{"source", "ctest"}};
	iotconn_message_t m = IOTCONN_MESSAGE_INIT;
	m.payload = text;
	m.payload_len = strlen(text);
	m.message_id = mid;
	m.content_type = "text/plain";
	m.content_encoding = "utf-8";
	m.properties = props;
	m.property_count = 1;
	return iotconn_send(c, &m, id);
}
