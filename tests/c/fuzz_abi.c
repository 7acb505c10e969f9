/* Fuzz harness for the C ABI: reads bytes as a program of calls into every iotconn_* entry point of the real
 * libiotconn.so, with random, NULL, destroyed, neighbouring and foreign handles, random option, message and retry
 * policy structs (bad sizes, NULL fields, huge lengths), twin requests and method answers, and checks after every
 * call that it returned a documented code and that a failure set a fresh iotconn_last_error(). Sends, twin GETs
 * and reported patches share one id sequence: each id is handed out once, in order, and completes at most once
 * (exactly once where the harness's callbacks saw everything), through the callback of its kind.
 *
 * Why C and not a Go fuzz test inside capi: _test.go files cannot use cgo, and a Go test binary cannot load
 * libiotconn.so (two Go runtimes in one process). Calling the shipped library from C tests the real exported
 * path: the version script, cgo's conversions, the handle table, the trampolines and the thread-local error.
 * tests/fuzz/cabi_test.go runs this harness in --serve mode under `go test -fuzz`, so Go's fuzzer mutates the
 * programs and keeps the corpus; CTest runs a fixed number of PRNG programs.
 *
 *   fuzz_abi --random SEED COUNT   COUNT programs from a deterministic PRNG
 *   fuzz_abi --serve               programs framed on stdin (u32 little-endian length, bytes); one byte back each
 *   fuzz_abi FILE...               each file is one program (FUZZ_ABI_TRACE=1 prints each call)
 *
 * Pointers the harness passes always point at valid memory (a bad data pointer is the caller's undefined
 * behaviour, not the library's); handles may be anything, since the library never dereferences them. Clients
 * only ever connect to a 127.0.0.1 port that is bound but not listening (refused at once). Durable clients use
 * two queue directories of the harness's own, emptied before each program. A broken invariant prints the step
 * and exits with status 3. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iotconn.h"

#define NSLOTS 4
#define MAX_OPS 64
#define MAX_CONNECTS 6 /* per program: each waits up to 20 ms */
#define MAX_IDS 256    /* > MAX_OPS: ids a client can have accepted in one program */
#define MAX_PAYLOAD IOTCONN_MAX_MESSAGE_SIZE
#define SENTINEL_SIZE 0x5e5e5e /* an options size no program produces (see gen_size) */

/* ---- input ---------------------------------------------------------------------------------------------------- */

typedef struct input {
	const uint8_t *p;
	size_t n, i;
} input_t;

static int more(const input_t *in) { return in->i < in->n; }
static uint8_t u8(input_t *in) { return in->i < in->n ? in->p[in->i++] : 0; }
static uint16_t u16(input_t *in) { return (uint16_t)(u8(in) << 8 | u8(in)); }
static uint32_t u32(input_t *in) { return (uint32_t)u16(in) << 16 | u16(in); }
static uint64_t u64(input_t *in) { return (uint64_t)u32(in) << 32 | u32(in); }

/* Strings made for one step, freed after it. */
static char *arena[64];
static int narena;

static char *keep(char *s)
{
	if (narena == (int)(sizeof arena / sizeof arena[0]))
		abort();
	return arena[narena++] = s;
}

static void arena_free(void)
{
	while (narena)
		free(arena[--narena]);
}

/* A NUL-terminated string of up to 47 input bytes (a NUL among them ends it early). */
static char *str(input_t *in)
{
	size_t len = u8(in) % 48;
	char *s = keep(calloc(1, len + 1));
	for (size_t k = 0; k < len; k++)
		s[k] = (char)u8(in);
	return s;
}

/* ---- failures --------------------------------------------------------------------------------------------------- */

static const char *step = "";
static int step_no;

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "fuzz_abi: step %d (%s): ", step_no, step);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	/* _exit, not abort(): the Go runtime's SIGABRT handling inside a c-shared library can hang the process */
	_exit(3);
}

static uint64_t programs, calls, created, accepted, requests, connected_tries, failures; /* for the summary */

/* The message of a call that sets the sentinel error; a failing call must replace it. */
static char sentinel[1024];

static void set_sentinel(void)
{
	iotconn_options_t o = IOTCONN_OPTIONS_INIT;
	o.size = SENTINEL_SIZE;
	iotconn_client_t *c = NULL;
	if (iotconn_client_create("HostName=h;DeviceId=d;x509=true", &o, &c) != IOTCONN_EINVAL || c)
		die("the sentinel call did not fail with IOTCONN_EINVAL");
	if (!sentinel[0])
		snprintf(sentinel, sizeof sentinel, "%s", iotconn_last_error());
	else if (strcmp(sentinel, iotconn_last_error()) != 0)
		die("sentinel message changed: %s", iotconn_last_error());
}

static int named_code(int rc) { return rc < 0 && strcmp(iotconn_strerror(rc), iotconn_strerror(INT32_MIN)) != 0; }

/* Every failure is a named IOTCONN_E* code with a fresh message; `want` is the exact code when the input decides
 * it (1: any). */
static int trace; /* FUZZ_ABI_TRACE=1: print every checked call, to read what a program does */

static void check(int rc, int want)
{
	if (trace)
		fprintf(stderr, "  %2d %-32s -> %d %s\n", step_no, step, rc, rc < 0 ? iotconn_last_error() : "");
	if (rc < 0) {
		failures++;
		if (!named_code(rc))
			die("returned %d, not an IOTCONN_E* code", rc);
		const char *msg = iotconn_last_error();
		if (!msg || !msg[0] || strcmp(msg, sentinel) == 0)
			die("returned %d (%s) without setting iotconn_last_error()", rc, iotconn_strerror(rc));
	}
	if (want != 1 && rc != want)
		die("returned %d (%s: %s), want %d (%s)", rc, iotconn_strerror(rc), rc < 0 ? iotconn_last_error() : "",
		    want, iotconn_strerror(want));
}

/* ---- clients ---------------------------------------------------------------------------------------------------- */

typedef struct slot {
	iotconn_client_t *h; /* the last client created here; kept after destroy as a destroyed handle */
	int live, closed, connectable, dispatch, durable;
	uint64_t recovered; /* messages loaded from the queue directory: ids 1..recovered */
	int exact;            /* the kinds whose callback is ours with this slot as user since before the first id */
	int twin_cb, reported_cb; /* a twin / reported callback is registered: GETs / patches are allowed */
	uint64_t accepted;    /* iotconn_send, iotconn_twin_get and iotconn_twin_report returned ids 1..accepted */
	uint8_t kind[MAX_IDS + 1]; /* the kind of each id (K_*); 0 for recovered ones, whose kind is not known */
	/* written by callbacks (a library thread in THREAD mode), under mu */
	int completions[MAX_IDS + 1];
	uint64_t bad_id;
} slot_t;

/* What an id was handed out for; each kind completes through its own callback. */
enum { K_SEND = 1, K_GET = 2, K_REPORT = 4 };

static slot_t slots[NSLOTS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int foreign_object; /* its address is a foreign handle */
static int refused_port;   /* bound, never listening: connecting is refused */
static int connects;

static slot_t *slot_of_user(void *user)
{
	for (int i = 0; i < NSLOTS; i++)
		if (user == &slots[i])
			return &slots[i];
	return NULL;
}

static void on_status(iotconn_status_t s, iotconn_reason_t r, void *user)
{
	(void)user;
	if (strcmp(iotconn_status_str((int)s), "Unknown") == 0 || strcmp(iotconn_reason_str((int)r), "Unknown") == 0)
		die("status callback with status %d reason %d", (int)s, (int)r);
	/* destroy is refused inside any callback, whatever the handle */
	int rc = iotconn_client_destroy(NULL);
	if (rc != IOTCONN_ESTATE)
		die("iotconn_client_destroy inside a callback returned %d, want IOTCONN_ESTATE", rc);
}

/* Counts a completion of id for the slot user names (none when user is not a slot). */
static void count_completion(void *user, uint64_t id)
{
	slot_t *s = slot_of_user(user);
	if (!s)
		return;
	pthread_mutex_lock(&mu);
	if (id >= 1 && id <= MAX_IDS)
		s->completions[id]++;
	else
		s->bad_id = id;
	pthread_mutex_unlock(&mu);
}

static void on_send(uint64_t id, int result, int code, void *user)
{
	int ok = result == IOTCONN_SEND_DELIVERED ? code == 0
						  : (result == IOTCONN_SEND_EXPIRED || result == IOTCONN_SEND_FAILED) &&
							    named_code(code) && iotconn_last_error()[0];
	if (!ok)
		die("completion of %" PRIu64 " with result %d code %d", id, result, code);
	count_completion(user, id);
}

/* Without a hub a GET or a patch can only fail (IOTCONN_ETIMEOUT, IOTCONN_ECLOSED, ...), with a message. */
static void on_twin(uint64_t id, const char *json, size_t len, int code, void *user)
{
	if (code == 0 || json || len || !named_code(code) || !iotconn_last_error()[0])
		die("twin result of %" PRIu64 " with code %d, %zu bytes, without a hub", id, code, len);
	count_completion(user, id);
}

static void on_reported(uint64_t id, int64_t version, int code, void *user)
{
	if (code == 0 || version || !named_code(code) || !iotconn_last_error()[0])
		die("reported completion of %" PRIu64 " with code %d, version %" PRId64 ", without a hub", id, code,
		    version);
	count_completion(user, id);
}

static void on_desired(int64_t version, const char *json, size_t len, void *user)
{
	(void)json, (void)len, (void)user;
	die("a desired update (version %" PRId64 ") without a hub", version);
}

static void on_method(const char *rid, const char *name, const char *json, size_t len, void *user)
{
	(void)rid, (void)json, (void)len, (void)user;
	die("a method call (%s) without a hub", name);
}

static void on_message(const iotconn_message_t *msg, void *user)
{
	(void)msg;
	(void)user;
	die("a C2D message without a hub");
}

static void on_log(int level, const char *message, void *user)
{
	(void)user;
	if (level < IOTCONN_LOG_ERROR || level > IOTCONN_LOG_DEBUG || !message)
		die("log callback with level %d message %p", level, (const void *)message);
}

static int on_retry(uint32_t attempt, int code, const char *message, uint32_t *delay_ms, void *user)
{
	(void)user;
	if (attempt < 1 || !named_code(code) || !message || !delay_ms)
		die("retry callback with attempt %u code %d", attempt, code);
	*delay_ms = 1;
	return attempt < 3;
}

/* A handle to call with, and the live slot it names (NULL when it names no live client). */
typedef struct target {
	iotconn_client_t *h;
	slot_t *s;
} target_t;

static target_t pick_handle(input_t *in)
{
	uint8_t b = u8(in);
	iotconn_client_t *h = NULL;
	switch (b % 16) {
	case 10:
		break;
	case 11:
		h = (iotconn_client_t *)&foreign_object;
		break;
	case 12:
	case 13: { /* a neighbour of a handle the library gave out */
		uintptr_t base = (uintptr_t)slots[u8(in) % NSLOTS].h;
		h = (iotconn_client_t *)(base + (uintptr_t)(intptr_t)(int8_t)u8(in));
		break;
	}
	case 14:
	case 15:
		h = (iotconn_client_t *)(uintptr_t)u64(in);
		break;
	case 8:
	case 9: /* a slot's client: live, destroyed, or NULL when none was created */
		h = slots[b % NSLOTS].h;
		break;
	default: /* the first live client from slot b on, else that slot's */
		h = slots[b % NSLOTS].h;
		for (int k = 0; k < NSLOTS; k++)
			if (slots[(b + k) % NSLOTS].live) {
				h = slots[(b + k) % NSLOTS].h;
				break;
			}
	}
	target_t t = {h, NULL};
	for (int i = 0; i < NSLOTS; i++)
		if (slots[i].live && slots[i].h == h && h)
			t.s = &slots[i];
	return t;
}

/* Sizes a struct may have: the current one and each earlier version's (it ended where a field was appended). */
#define OPTIONS_V1_SIZE offsetof(iotconn_options_t, queue_overflow)
#define OPTIONS_V2_SIZE offsetof(iotconn_options_t, backoff_reset_after_ms)
#define OPTIONS_V3_SIZE offsetof(iotconn_options_t, dispatcher)
#define OPTIONS_V4_SIZE offsetof(iotconn_options_t, reconnect_spread_ms)
#define OPTIONS_V5_SIZE offsetof(iotconn_options_t, admission)
#define OPTIONS_V6_SIZE offsetof(iotconn_options_t, amqp_pool)
#define MESSAGE_V1_SIZE offsetof(iotconn_message_t, ttl_ms)

/* A struct size: mostly right, else an earlier version's, off by one, doubled, zero, small or huge. */
static size_t gen_size(input_t *in, size_t right, size_t earlier)
{
	static const size_t huge = SIZE_MAX;
	switch (u8(in) % 9) {
	case 8:
		return earlier;
	case 0:
		return 0;
	case 1:
		return right - 1;
	case 2:
		return right + 1;
	case 3:
		return right * 2;
	case 4:
		return u8(in);
	case 5:
		return huge;
	default:
		return right;
	}
}

static uint32_t gen_u32(input_t *in)
{
	static const uint32_t picks[] = {0, 1, 240, 1177, 1178, 3600, UINT32_MAX};
	uint8_t b = u8(in);
	return b < sizeof picks / sizeof picks[0] ? picks[b] : u32(in);
}

static const char *gen_path(input_t *in)
{
	switch (u8(in) % 6) {
	case 0:
	case 4:
	case 5:
		return NULL;
	case 1:
		return "/nonexistent/iotconn.pem";
	case 2:
		return "/dev/null";
	default:
		return str(in);
	}
}

/* Connection strings: to the refused port (connectable), random bytes, or NULL. */
static const char *gen_conn_str(input_t *in, int *connectable)
{
	static const char *const forms[] = {
		"HostName=127.0.0.1:%d;DeviceId=%s;SharedAccessKey=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
		"HostName=127.0.0.1:%d;DeviceId=%s;ModuleId=m1;SharedAccessKeyName=p;SharedAccessKey=AAEC",
		"HostName=127.0.0.1:%d;DeviceId=%s;SharedAccessSignature=SharedAccessSignature sr=127.0.0.1%%2Fdevices"
		"%%2Fd&sig=AAEC&se=1",
		"HostName=127.0.0.1:%d;DeviceId=%s;x509=true",
		"HostName=h.example;GatewayHostName=127.0.0.1:%d;DeviceId=%s;SharedAccessKey=AAEC",
	};
	*connectable = 0;
	uint8_t b = u8(in);
	if (b % 8 == 6)
		return NULL;
	if (b % 8 == 7)
		return str(in);
	char *cs = NULL;
	if (asprintf(&cs, forms[b % 8 % 5], refused_port, b & 0x80 ? str(in) : "dev-1") < 0)
		abort();
	*connectable = 1;
	return keep(cs);
}

/* Durable mode: one of the harness's queue directories, a path that cannot be one, or none. */
static char queue_dirs[2][512];

static const char *gen_queue_dir(input_t *in)
{
	switch (u8(in) % 6) {
	case 0:
		return queue_dirs[0];
	case 1:
		return queue_dirs[1];
	case 2:
		return "/proc/iotconn-fuzz";
	default:
		return NULL;
	}
}

/* Empties a queue directory (one level: the store keeps its files there). */
static void empty_dir(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		char f[512];
		snprintf(f, sizeof f, "%s/%s", path, e->d_name);
		if (unlink(f) != 0)
			die("cannot remove %s: %s", f, strerror(errno));
	}
	closedir(d);
}

static iotconn_options_t *gen_options(input_t *in, iotconn_options_t *o, int *valid)
{
	static const int transports[] = {IOTCONN_TRANSPORT_MQTT, IOTCONN_TRANSPORT_MQTT_WS, IOTCONN_TRANSPORT_AMQP, IOTCONN_TRANSPORT_AMQP_WS, 4,
					 -1, INT32_MIN, INT32_MAX};
	static const int dispatches[] = {IOTCONN_DISPATCH_THREAD, IOTCONN_DISPATCH_POLL, 2, -1};
	static const int overflows[] = {IOTCONN_QUEUE_OVERFLOW_REJECT, IOTCONN_QUEUE_OVERFLOW_DROP_OLDEST, 2, -1};
	*o = (iotconn_options_t)IOTCONN_OPTIONS_INIT;
	*valid = 1;
	switch (u8(in) % 4) {
	case 0:
		return NULL;
	case 1:
		o->dispatch = u8(in) % 2;
		return o;
	case 2: /* the queue's options alone: durable, small, overflowing */
		o->dispatch = u8(in) % 2;
		o->queue_dir = gen_queue_dir(in);
		o->queue_overflow = overflows[u8(in) % 4];
		o->queue_max_messages = u8(in) % 8;
		*valid = o->queue_overflow == IOTCONN_QUEUE_OVERFLOW_REJECT ||
			 o->queue_overflow == IOTCONN_QUEUE_OVERFLOW_DROP_OLDEST;
		return o;
	}
	o->size = gen_size(in, sizeof *o, OPTIONS_V1_SIZE);
	o->transport = transports[u8(in) % 8];
	o->ca_file = gen_path(in);
	o->ca_pem = u8(in) % 2 ? NULL : str(in);
	o->cert_file = gen_path(in);
	o->key_file = gen_path(in);
	o->keepalive_s = gen_u32(in);
	o->sas_lifetime_s = gen_u32(in);
	o->sas_renew_margin_s = gen_u32(in);
	o->queue_max_messages = gen_u32(in);
	o->queue_max_bytes = u8(in) % 2 ? UINT64_MAX : u16(in);
	o->operation_timeout_ms = gen_u32(in);
	o->dispatch = dispatches[u8(in) % 4];
	o->queue_overflow = overflows[u8(in) % 4];
	o->queue_dir = gen_queue_dir(in);
	o->backoff_reset_after_ms = gen_u32(in);
	o->reconnect_spread_ms = gen_u32(in);
	*valid = (o->size == sizeof *o || o->size == OPTIONS_V6_SIZE || o->size == OPTIONS_V5_SIZE || o->size == OPTIONS_V4_SIZE || o->size == OPTIONS_V3_SIZE ||
		  o->size == OPTIONS_V2_SIZE || o->size == OPTIONS_V1_SIZE) &&
		 o->dispatch >= 0 && o->dispatch <= 1;
	return o;
}

typedef struct genmsg {
	iotconn_message_t m;
	iotconn_property_t props[4];
	int valid;    /* iotconn_message_copy accepts it */
	int sendable; /* and iotconn_send too: a payload, no empty property key */
	int empty_key, too_large;
	/* a text field or property is set: the send-side rules (id characters and length, UTF-8, reserved and
	 * repeated names, the topic's length) may refuse it with EINVAL or ETOOLARGE; tests/c/test_api.c and the Go
	 * tests check those rules one by one */
	int ruled;
} genmsg_t;

static uint8_t big[(1 << 20) + 1];

static const char *gen_id(input_t *in)
{
	static char long_id[301];
	if (!long_id[0])
		memset(long_id, 'i', sizeof long_id - 1);
	switch (u8(in) % 4) {
	case 0:
		return NULL;
	case 1:
		return "";
	case 2:
		return long_id;
	default:
		return str(in);
	}
}

static iotconn_message_t *gen_message(input_t *in, genmsg_t *g)
{
	memset(g, 0, sizeof *g);
	iotconn_message_t *m = &g->m;
	*m = (iotconn_message_t)IOTCONN_MESSAGE_INIT;
	uint8_t kind = u8(in) % 4;
	if (kind == 0)
		return NULL;
	m->payload = "hello";
	m->payload_len = 5;
	g->valid = g->sendable = 1;
	if (kind == 1)
		return m;
	m->size = gen_size(in, sizeof *m, MESSAGE_V1_SIZE);
	switch (u8(in) % 5) {
	case 0:
		m->payload = NULL;
		m->payload_len = 0;
		break;
	case 1: {
		static const size_t lens[] = {1, SIZE_MAX, (size_t)1 << 40};
		m->payload = NULL;
		m->payload_len = lens[u8(in) % 3];
		break;
	}
	case 2: {
		char *s = str(in);
		m->payload = s;
		m->payload_len = strlen(s);
		break;
	}
	case 3: {
		static const size_t lens[] = {MAX_PAYLOAD, MAX_PAYLOAD + 1, sizeof big};
		m->payload = big;
		m->payload_len = lens[u8(in) % 3];
		break;
	}
	default:
		m->payload = big;
		m->payload_len = u16(in);
	}
	m->message_id = gen_id(in);
	m->correlation_id = gen_id(in);
	m->content_type = gen_id(in);
	m->content_encoding = gen_id(in);
	int null_field = 0;
	switch (u8(in) % 4) {
	case 0:
		break;
	case 1:
		m->property_count = u8(in) % 2 ? 1 : SIZE_MAX;
		break;
	default:
		m->property_count = u8(in) % 5;
		m->properties = m->property_count ? g->props : NULL;
		for (size_t k = 0; k < m->property_count; k++) {
			uint8_t f = u8(in);
			g->props[k].key = f % 5 == 0 ? NULL : str(in);
			g->props[k].value = f % 7 == 0 ? NULL : str(in);
			null_field |= !g->props[k].key || !g->props[k].value;
			g->empty_key |= g->props[k].key && !g->props[k].key[0];
		}
	}
	m->ttl_ms = u8(in) % 2 ? 0 : gen_u32(in);
	g->valid = (m->size == sizeof *m || m->size == MESSAGE_V1_SIZE) && !(m->payload == NULL && m->payload_len) &&
		   !(m->properties == NULL && m->property_count) && !null_field;
	g->sendable = g->valid && m->payload_len > 0 && !g->empty_key;
	/* generated payloads are at least MAX_PAYLOAD or at most 64 KiB; with a message id (given or generated) the
	 * first ones never fit */
	g->too_large = m->payload_len >= MAX_PAYLOAD;
	g->ruled = (m->message_id && m->message_id[0]) || (m->correlation_id && m->correlation_id[0]) ||
		   (m->content_type && m->content_type[0]) || (m->content_encoding && m->content_encoding[0]) ||
		   m->property_count > 0;
	return m;
}

static int streq(const char *a, const char *b) { return strcmp(a ? a : "", b ? b : "") == 0; }

/* iotconn_message_copy must reproduce every field in one block the caller frees. */
static void check_copy(const iotconn_message_t *m, const iotconn_message_t *c)
{
	if (c->size != sizeof *c || c->payload_len != m->payload_len ||
	    (m->payload_len && memcmp(c->payload, m->payload, m->payload_len) != 0) ||
	    ((const char *)c->payload)[c->payload_len] != 0 || !streq(c->message_id, m->message_id) ||
	    !streq(c->correlation_id, m->correlation_id) || !streq(c->content_type, m->content_type) ||
	    !streq(c->content_encoding, m->content_encoding) || c->property_count != m->property_count)
		die("the copy differs from the message");
	for (size_t k = 0; k < m->property_count; k++)
		if (!streq(c->properties[k].key, m->properties[k].key) ||
		    !streq(c->properties[k].value, m->properties[k].value))
			die("property %zu of the copy differs", k);
}

/* ---- steps ---------------------------------------------------------------------------------------------------- */

/* Every completion of s went to an id it accepted, at most once; exactly once when every callback ran (all) and
 * the one of the id's kind was ours all along. */
static void check_completions(slot_t *s, int all)
{
	pthread_mutex_lock(&mu);
	if (s->bad_id)
		die("completion for id %" PRIu64 ", outside 1..%d", s->bad_id, MAX_IDS);
	for (uint64_t id = 1; id <= MAX_IDS; id++) {
		int n = s->completions[id], want = id <= s->accepted;
		if (n > 1 || (n && !want) || (all && (s->exact & s->kind[id]) && n != want))
			die("id %" PRIu64 " completed %d times (accepted 1..%" PRIu64 ")", id, n, s->accepted);
	}
	pthread_mutex_unlock(&mu);
}

static void reset_slot(slot_t *s)
{
	pthread_mutex_lock(&mu);
	iotconn_client_t *h = s->h;
	memset(s, 0, sizeof *s);
	s->h = h;
	pthread_mutex_unlock(&mu);
}

static void do_destroy(slot_t *s)
{
	step = "iotconn_client_destroy (live)";
	set_sentinel();
	check(iotconn_client_destroy(s->h), 0);
	s->live = 0;
	check_completions(s, s->dispatch == IOTCONN_DISPATCH_THREAD);
}

static void op_create(input_t *in)
{
	slot_t *s = &slots[u8(in) % NSLOTS];
	if (s->live)
		do_destroy(s);
	int connectable, opts_valid;
	const char *cs = gen_conn_str(in, &connectable);
	iotconn_options_t o;
	iotconn_options_t *op = gen_options(in, &o, &opts_valid);
	iotconn_client_t *h = NULL;
	uint8_t b = u8(in);
	int no_out = b % 16 == 0, twin = b & 0x10;
	step = "iotconn_client_create";
	set_sentinel();
	int rc = iotconn_client_create(cs, op, no_out ? NULL : &h);
	check(rc, !cs || no_out || !opts_valid ? IOTCONN_EINVAL : 1);
	if (rc != 0) {
		if (h)
			die("failed but stored a handle");
		return;
	}
	if (!h)
		die("succeeded without a handle");
	for (int i = 0; i < NSLOTS; i++)
		if (slots[i].h == h)
			die("handle %p given out twice", (void *)h);
	reset_slot(s);
	s->h = h;
	s->live = 1;
	created++;
	/* random connection strings never connect: only ours name 127.0.0.1 */
	s->connectable = connectable;
	s->dispatch = op ? op->dispatch : IOTCONN_DISPATCH_THREAD;
	s->durable = op && op->size == sizeof *op && op->queue_dir;
	step = "iotconn_queue_recovered (new client)";
	set_sentinel();
	check(iotconn_queue_recovered(h, &s->recovered), 0);
	if (!s->durable && s->recovered)
		die("%" PRIu64 " messages recovered without a queue directory", s->recovered);
	if (s->recovered > MAX_OPS)
		die("%" PRIu64 " messages recovered; this program sent at most %d", s->recovered, MAX_OPS);
	s->accepted = s->recovered; /* they took ids 1..recovered; our callback was not there before they could end */
	if (twin) { /* twin and reported callbacks from the start, as an app that uses twins has them */
		step = "iotconn_register_twin_callback (new client)";
		set_sentinel();
		check(iotconn_register_twin_callback(h, on_twin, s), 0);
		step = "iotconn_register_reported_callback (new client)";
		set_sentinel();
		check(iotconn_register_reported_callback(h, on_reported, s), 0);
		s->twin_cb = s->reported_cb = 1;
		s->exact |= s->accepted == 0 ? K_GET | K_REPORT : 0;
	}
}

static void op_recovered(input_t *in)
{
	target_t t = pick_handle(in);
	int no_out = u8(in) % 4 == 0;
	uint64_t n = UINT64_MAX;
	step = "iotconn_queue_recovered";
	set_sentinel();
	int rc = iotconn_queue_recovered(t.h, no_out ? NULL : &n);
	check(rc, !t.s ? IOTCONN_EBADHANDLE : no_out ? IOTCONN_EINVAL : 0);
	if (rc == 0 && n != t.s->recovered)
		die("queue_recovered says %" PRIu64 ", at creation %" PRIu64, n, t.s->recovered);
}

static void op_destroy(input_t *in)
{
	target_t t = pick_handle(in);
	if (t.s) {
		do_destroy(t.s);
		return;
	}
	step = "iotconn_client_destroy";
	set_sentinel();
	check(iotconn_client_destroy(t.h), IOTCONN_EBADHANDLE);
}

static void op_connect(input_t *in)
{
	target_t t = pick_handle(in);
	uint32_t timeout = 1 + u8(in) % 20;
	if (t.s && (!t.s->connectable || connects >= MAX_CONNECTS))
		return;
	step = "iotconn_connect";
	set_sentinel();
	int rc = iotconn_connect(t.h, t.s ? timeout : gen_u32(in));
	connects += t.s != NULL;
	connected_tries += t.s != NULL;
	/* nothing listens on the port, so a live client never connects */
	check(rc, !t.s ? IOTCONN_EBADHANDLE : t.s->closed ? IOTCONN_ECLOSED : 1);
	if (rc == 0)
		die("connected to a port nobody listens on");
}

/* Records the id a send, GET or patch was given: the next of s's one sequence. */
static void take_id(slot_t *s, int kind, int with_id, uint64_t id)
{
	s->accepted++;
	if (kind == K_SEND)
		accepted++;
	else
		requests++;
	if (with_id && id != s->accepted)
		die("returned id %" PRIu64 ", want %" PRIu64, id, s->accepted);
	if (s->accepted <= MAX_IDS)
		s->kind[s->accepted] = (uint8_t)kind;
}

static void op_send(input_t *in)
{
	target_t t = pick_handle(in);
	genmsg_t g;
	iotconn_message_t *m = gen_message(in, &g);
	int with_id = u8(in) % 4 != 0;
	uint64_t id = 0;
	step = "iotconn_send";
	set_sentinel();
	int rc = iotconn_send(t.h, m, with_id ? &id : NULL);
	if (!t.s) {
		check(rc, IOTCONN_EBADHANDLE);
		return;
	}
	int want = !m || !g.sendable ? IOTCONN_EINVAL : g.too_large ? IOTCONN_ETOOLARGE : t.s->closed ? IOTCONN_ECLOSED : 1;
	/* an empty property key and a size or id over a limit: either check may come first */
	if (m && g.valid && g.empty_key && (g.too_large || g.ruled) && rc == IOTCONN_ETOOLARGE)
		want = IOTCONN_ETOOLARGE;
	if (m && g.sendable && g.ruled && (rc == IOTCONN_EINVAL || rc == IOTCONN_ETOOLARGE))
		want = rc;
	check(rc, want);
	if (want == 1 && rc != 0 && rc != IOTCONN_EQUEUEFULL && !(t.s->durable && rc == IOTCONN_ESTORE))
		die("a valid message to an open client got %d (%s)", rc, iotconn_last_error());
	if (rc == 0)
		take_id(t.s, K_SEND, with_id, id);
}

/* A reported patch: valid (*want 1), one the library must refuse (*want its code), or random bytes (*want 1,
 * *loose: EINVAL allowed too; "{}" is valid). */
static const char *gen_patch(input_t *in, size_t *len, int *want, int *loose)
{
	static char big_patch[40016]; /* over IoT Hub's 32 KB of reported properties */
	if (!big_patch[0]) {
		memset(big_patch, 'x', sizeof big_patch - 1);
		memcpy(big_patch, "{\"big\":\"", 8);
		memcpy(big_patch + sizeof big_patch - 3, "\"}", 2);
	}
	static const struct {
		const char *json;
		int want;
	} forms[] = {
		{"{\"temp\":21,\"fw\":{\"v\":\"1.2\"}}", 1},
		{"{\"gone\":null}", 1},
		{"[1,2]", IOTCONN_EINVAL},
		{"not json", IOTCONN_EINVAL},
		{"{\"a\":\"\xff\"}", IOTCONN_EINVAL},
		{"{\"a\":1}{\"b\":2}", IOTCONN_EINVAL},
		{"", IOTCONN_EINVAL},
		{big_patch, IOTCONN_ETOOLARGE},
	};
	*loose = 0;
	uint8_t b = u8(in) % 10;
	if (b < sizeof forms / sizeof forms[0]) {
		*len = strlen(forms[b].json);
		*want = forms[b].want;
		return forms[b].json;
	}
	if (b == 8) { /* NULL, with or without a length */
		*len = u8(in) % 2 ? 0 : 5;
		*want = IOTCONN_EINVAL;
		return NULL;
	}
	const char *s = str(in);
	*len = strlen(s);
	*want = *loose = 1;
	return s;
}

/* iotconn_twin_get or iotconn_twin_report: an id of the send sequence, or the documented refusal. */
static void op_twin(input_t *in)
{
	target_t t = pick_handle(in);
	int report = u8(in) % 2, with_id = u8(in) % 4 != 0, want = 0, loose = 0;
	size_t len = 0;
	const char *patch = report ? gen_patch(in, &len, &want, &loose) : NULL;
	uint64_t id = 0;
	step = report ? "iotconn_twin_report" : "iotconn_twin_get";
	set_sentinel();
	int rc = report ? iotconn_twin_report(t.h, patch, len, with_id ? &id : NULL)
			: iotconn_twin_get(t.h, with_id ? &id : NULL);
	if (!t.s)
		want = IOTCONN_EBADHANDLE;
	else if (report && !patch)
		want = IOTCONN_EINVAL;
	else if (!(report ? t.s->reported_cb : t.s->twin_cb))
		want = IOTCONN_ESTATE;
	else if (t.s->closed)
		want = IOTCONN_ECLOSED;
	check(rc, want);
	/* a patch that may go in: queued, or refused by the queue (full, or a durable store's error) */
	if (want == 1 && rc != 0 && rc != IOTCONN_EQUEUEFULL && !(t.s->durable && rc == IOTCONN_ESTORE) &&
	    !(loose && rc == IOTCONN_EINVAL))
		die("a patch to an open client got %d (%s)", rc, iotconn_last_error());
	if (rc == 0)
		take_id(t.s, report ? K_REPORT : K_GET, with_id, id);
}

/* iotconn_method_respond: without a hub no call ever comes, so every answer is refused, for the first reason in
 * the documented order: the handle, the arguments, the payload, a closed client, then the unknown call. */
static void op_respond(input_t *in)
{
	static char big_answer[140000]; /* one JSON string over the 128 KB */
	if (!big_answer[0]) {
		memset(big_answer, 'x', sizeof big_answer - 1);
		big_answer[0] = big_answer[sizeof big_answer - 2] = '"';
	}
	target_t t = pick_handle(in);
	const char *rid = u8(in) % 4 ? str(in) : NULL;
	const char *payload = NULL;
	size_t len = 0;
	int payload_rc = 0; /* the payload's own refusal; 1: random, any */
	switch (u8(in) % 6) {
	case 0: /* no payload */
		break;
	case 1: /* NULL with a length */
		len = 3;
		payload_rc = IOTCONN_EINVAL;
		break;
	case 2:
		payload = "{\"ok\":true}";
		break;
	case 3:
		payload = "{oops";
		payload_rc = IOTCONN_EINVAL;
		break;
	case 4:
		payload = big_answer;
		payload_rc = IOTCONN_ETOOLARGE;
		break;
	default:
		payload = str(in);
		payload_rc = 1;
	}
	if (payload)
		len = strlen(payload);
	int want = !t.s ? IOTCONN_EBADHANDLE
		   : !rid ? IOTCONN_EINVAL
		   : payload_rc ? payload_rc
		   : t.s->closed ? IOTCONN_ECLOSED
				 : IOTCONN_EINVAL;
	step = "iotconn_method_respond";
	set_sentinel();
	int rc = iotconn_method_respond(t.h, rid, (int)(int16_t)u16(in), payload, len);
	check(rc, want);
	if (rc == 0)
		die("answered a method call that never came");
}

static void op_retry_policy(input_t *in)
{
	target_t t = pick_handle(in);
	iotconn_retry_policy_t p = IOTCONN_RETRY_POLICY_INIT, *pp = &p;
	int want = 0;
	uint8_t kind = u8(in) % 4;
	if (kind == 0) {
		pp = NULL;
		want = IOTCONN_EINVAL;
	} else if (kind > 1) {
		p.size = gen_size(in, sizeof p, sizeof p);
		p.kind = u8(in) % 4;
		p.retry_count = (int8_t)u8(in);
		p.min_backoff_ms = u16(in);
		p.max_backoff_ms = u16(in);
		p.delta_backoff_ms = u16(in);
		p.jitter = u8(in) % 4; /* DEFAULT, FULL, DECORRELATED or unknown */
		p.custom = u8(in) % 2 ? on_retry : NULL;
		p.user = (void *)(uintptr_t)u64(in);
		if (p.size != sizeof p || p.kind > IOTCONN_RETRY_CUSTOM || (p.kind == IOTCONN_RETRY_CUSTOM && !p.custom))
			want = IOTCONN_EINVAL;
		else if (p.kind == IOTCONN_RETRY_EXPONENTIAL)
			want = 1; /* the back-off values decide */
	}
	if (t.s && t.s->closed && want == 0)
		want = IOTCONN_ECLOSED;
	step = "iotconn_set_retry_policy";
	set_sentinel();
	check(iotconn_set_retry_policy(t.h, pp), t.s ? want : IOTCONN_EBADHANDLE);
}

static void op_register(input_t *in)
{
	target_t t = pick_handle(in);
	uint8_t which = u8(in) % 8, how = u8(in) % 3;
	void *user = how == 1 && t.s ? (void *)t.s : (void *)(uintptr_t)u64(in);
	int rc;
	step = "iotconn_register_*_callback";
	set_sentinel();
	switch (which) {
	case 0:
		rc = iotconn_register_status_callback(t.h, how ? on_status : NULL, user);
		break;
	case 1:
		rc = iotconn_register_send_callback(t.h, how ? on_send : NULL, user);
		break;
	case 2:
		rc = iotconn_register_message_callback(t.h, how ? on_message : NULL, user);
		break;
	case 3:
		rc = iotconn_register_log_callback(t.h, how ? on_log : NULL, user);
		break;
	case 4:
		rc = iotconn_register_twin_callback(t.h, how ? on_twin : NULL, user);
		break;
	case 5:
		rc = iotconn_register_reported_callback(t.h, how ? on_reported : NULL, user);
		break;
	case 6:
		rc = iotconn_register_desired_callback(t.h, how ? on_desired : NULL, user);
		break;
	default:
		rc = iotconn_register_method_callback(t.h, how ? on_method : NULL, user);
	}
	check(rc, t.s ? 0 : IOTCONN_EBADHANDLE);
	if (!t.s)
		return;
	int kind = which == 1 ? K_SEND : which == 4 ? K_GET : which == 5 ? K_REPORT : 0;
	if (how == 1 && t.s->accepted == 0)
		t.s->exact |= kind;
	else
		t.s->exact &= ~kind;
	t.s->twin_cb = which == 4 ? how != 0 : t.s->twin_cb;
	t.s->reported_cb = which == 5 ? how != 0 : t.s->reported_cb;
}

static void op_poll(input_t *in)
{
	target_t t = pick_handle(in);
	uint32_t timeout = u8(in) % 4;
	step = "iotconn_poll";
	set_sentinel();
	int rc = iotconn_poll(t.h, timeout);
	if (!t.s)
		check(rc, IOTCONN_EBADHANDLE);
	else if (t.s->dispatch == IOTCONN_DISPATCH_THREAD)
		check(rc, IOTCONN_ESTATE);
	else if (rc < 0)
		check(rc, t.s->closed ? IOTCONN_ECLOSED : 0);
}

static void op_status(input_t *in)
{
	target_t t = pick_handle(in);
	uint8_t b = u8(in);
	iotconn_status_t st = (iotconn_status_t)-1;
	iotconn_reason_t r = (iotconn_reason_t)-1;
	step = "iotconn_get_status";
	set_sentinel();
	int rc = iotconn_get_status(t.h, b & 1 ? &st : NULL, b & 2 ? &r : NULL);
	check(rc, t.s ? 0 : IOTCONN_EBADHANDLE);
	if (rc == 0 && (((b & 1) && strcmp(iotconn_status_str((int)st), "Unknown") == 0) ||
			((b & 2) && strcmp(iotconn_reason_str((int)r), "Unknown") == 0)))
		die("status %d reason %d", (int)st, (int)r);
	if (rc == 0 && t.s->closed && (b & 3) == 3 &&
	    (st != IOTCONN_STATUS_DISABLED || r != IOTCONN_REASON_CLIENT_CLOSE))
		die("closed client is %s / %s", iotconn_status_str((int)st), iotconn_reason_str((int)r));
}

static void op_close(input_t *in)
{
	target_t t = pick_handle(in);
	step = "iotconn_close";
	set_sentinel();
	check(iotconn_close(t.h), t.s ? 0 : IOTCONN_EBADHANDLE);
	if (t.s)
		t.s->closed = 1;
}

static void op_copy(input_t *in)
{
	genmsg_t g;
	iotconn_message_t *m = gen_message(in, &g);
	int no_out = u8(in) % 8 == 0;
	iotconn_message_t *copy = NULL;
	step = "iotconn_message_copy";
	set_sentinel();
	int rc = iotconn_message_copy(m, no_out ? NULL : &copy);
	check(rc, m && g.valid && !no_out ? 0 : IOTCONN_EINVAL);
	if (rc == 0)
		check_copy(m, copy);
	iotconn_free(copy);
}

static void op_strings(input_t *in)
{
	static const int picks[] = {0, 1, -1, 3, 4, 7, 8, -15, -16, -17, INT32_MIN, INT32_MAX};
	uint8_t b = u8(in);
	int v = b < sizeof picks / sizeof picks[0] ? picks[b] : (int)u32(in);
	step = "iotconn_*_str";
	const char *s = iotconn_strerror(v), *st = iotconn_status_str(v), *r = iotconn_reason_str(v);
	if (!s || !st || !r)
		die("a NULL name for %d", v);
	if ((strcmp(st, "Unknown") == 0) != (v < 0 || v > IOTCONN_STATUS_DISABLED) ||
	    (strcmp(r, "Unknown") == 0) != (v < 0 || v > IOTCONN_REASON_CLIENT_CLOSE))
		die("status or reason name of %d: %s, %s", v, st, r);
	int major = -1, minor = -1;
	const char *ver = iotconn_version(b & 1 ? &major : NULL, b & 2 ? &minor : NULL, NULL);
	if (strcmp(ver, IOTCONN_VERSION_STRING) != 0 || ((b & 1) && major != IOTCONN_VERSION_MAJOR) ||
	    ((b & 2) && minor != IOTCONN_VERSION_MINOR))
		die("version %s %d.%d", ver, major, minor);
	iotconn_free(NULL);
}

/* Ends a program: close every live client, drain POLL ones (bounded), destroy, and count completions. */
static void cleanup(void)
{
	for (int i = 0; i < NSLOTS; i++) {
		slot_t *s = &slots[i];
		if (!s->live)
			continue;
		step = "cleanup: iotconn_close";
		set_sentinel();
		check(iotconn_close(s->h), 0);
		int drained = s->dispatch == IOTCONN_DISPATCH_THREAD;
		for (int k = 0; k < 200 && !drained; k++) {
			step = "cleanup: iotconn_poll";
			int rc = iotconn_poll(s->h, 10);
			if (rc == IOTCONN_ECLOSED)
				drained = 1;
			else
				check(rc, rc >= 0 ? rc : 0);
		}
		if (!drained)
			die("a closed POLL client still had events after 200 polls");
		step = "cleanup: iotconn_client_destroy";
		set_sentinel();
		check(iotconn_client_destroy(s->h), 0);
		s->live = 0;
		check_completions(s, 1);
	}
}

typedef void (*op_fn)(input_t *);
static const op_fn ops[] = {op_create, op_create, op_destroy, op_connect, op_send,  op_send,  op_send,
			    op_retry_policy, op_register, op_register, op_poll, op_status, op_close, op_copy,
			    op_strings, op_recovered, op_twin, op_twin, op_respond};


/* The watchdog: a program that runs longer than WATCHDOG_MS is a hang in the library (each step is bounded);
 * it names the step and prints the program, then exits with status 4. */
#define WATCHDOG_MS 4000 /* programs take well under a second; cleanup's drain is bounded by 2 s */
static const uint8_t *running_prog;
static size_t running_len;
static uint64_t running_serial; /* programs started; the watchdog sees one stay the same */
static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;

static void *watchdog(void *arg)
{
	(void)arg;
	uint64_t seen = 0;
	for (;;) {
		pthread_mutex_lock(&watch_mu);
		uint64_t serial = running_serial;
		int busy = running_prog != NULL;
		pthread_mutex_unlock(&watch_mu);
		if (busy && serial == seen) {
			pthread_mutex_lock(&watch_mu);
			fprintf(stderr, "fuzz_abi: step %d (%s) did not return within %d ms; program:\n", step_no, step,
				WATCHDOG_MS);
			for (size_t k = 0; k < running_len; k++)
				fprintf(stderr, "%02x", running_prog[k]);
			fputc('\n', stderr);
			_exit(4);
		}
		seen = serial;
		usleep(WATCHDOG_MS * 1000); /* a period, not synchronisation: a program must finish within one */
	}
	return NULL;
}

static void run_program(const uint8_t *data, size_t n)
{
	pthread_mutex_lock(&watch_mu);
	running_prog = data;
	running_len = n;
	running_serial++;
	pthread_mutex_unlock(&watch_mu);
	input_t in = {data, n, 0};
	for (int i = 0; i < NSLOTS; i++)
		memset(&slots[i], 0, sizeof slots[i]);
	connects = 0;
	empty_dir(queue_dirs[0]);
	empty_dir(queue_dirs[1]);
	for (step_no = 0; step_no < MAX_OPS && more(&in); step_no++) {
		ops[u8(&in) % (sizeof ops / sizeof ops[0])](&in);
		arena_free();
		calls++;
	}
	cleanup();
	programs++;
	pthread_mutex_lock(&watch_mu);
	running_prog = NULL;
	pthread_mutex_unlock(&watch_mu);
}

/* ---- modes ---------------------------------------------------------------------------------------------------- */

static int read_full(int fd, void *buf, size_t n)
{
	for (size_t got = 0; got < n;) {
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int serve(void)
{
	static uint8_t buf[1 << 20];
	for (;;) {
		uint8_t hdr[4];
		if (read_full(0, hdr, 4) != 0)
			return 0; /* the driver closed the pipe */
		uint32_t n = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
		if (n > sizeof buf || read_full(0, buf, n) != 0) {
			fprintf(stderr, "fuzz_abi: bad frame of %u bytes\n", n);
			return 2;
		}
		run_program(buf, n);
		if (write(1, "k", 1) != 1)
			return 2;
	}
}

/* xorshift64*: the same programs on every run and machine. */
static uint64_t rng_state;
static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static int run_random(uint64_t seed, long count)
{
	rng_state = seed ? seed : 1;
	uint8_t buf[512];
	for (long p = 0; p < count; p++) {
		size_t n = 16 + rng() % (sizeof buf - 16);
		for (size_t k = 0; k < n; k++)
			buf[k] = (uint8_t)(rng() >> 56);
		run_program(buf, n);
	}
	return 0;
}

static int run_files(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f) {
			perror(argv[i]);
			return 2;
		}
		static uint8_t buf[1 << 20];
		size_t n = fread(buf, 1, sizeof buf, f);
		fclose(f);
		run_program(buf, n);
	}
	return 0;
}

/* A TCP port on 127.0.0.1 that is bound but never listens: connecting to it is refused at once. */
static int bind_refused_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof sa;
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
		perror("fuzz_abi: bind 127.0.0.1:0");
		exit(2);
	}
	return ntohs(sa.sin_port); /* fd stays open for the life of the process */
}

static int run_mode(int argc, char **argv);

int main(int argc, char **argv)
{
	refused_port = bind_refused_port();
	for (size_t k = 0; k < sizeof big; k++)
		big[k] = (uint8_t)(k * 131 + 7);
	trace = getenv("FUZZ_ABI_TRACE") != NULL;
	pthread_t wd;
	pthread_create(&wd, NULL, watchdog, NULL);
	pthread_detach(wd);
	/* The queue directories live under $IOTCONN_FUZZ_DIR when the driver owns one (a killed harness leaves
	 * nothing behind), else under a directory of our own, removed at the end. */
	char own[] = "/tmp/iotconn-fuzz-XXXXXX";
	const char *base = getenv("IOTCONN_FUZZ_DIR");
	if (!base && !(base = mkdtemp(own))) {
		perror("fuzz_abi: mkdtemp");
		return 2;
	}
	for (int i = 0; i < 2; i++)
		if (snprintf(queue_dirs[i], sizeof queue_dirs[i], "%s/q%d", base, i) >= (int)sizeof queue_dirs[i])
			die("IOTCONN_FUZZ_DIR is too long");
	int rc = run_mode(argc, argv);
	if (base == own) {
		for (int i = 0; i < 2; i++) {
			empty_dir(queue_dirs[i]);
			rmdir(queue_dirs[i]);
		}
		rmdir(own);
	}
	return rc;
}

static int run_mode(int argc, char **argv)
{
	int rc;
	if (argc == 2 && strcmp(argv[1], "--serve") == 0)
		return serve();
	if (argc == 4 && strcmp(argv[1], "--random") == 0)
		rc = run_random(strtoull(argv[2], NULL, 10), strtol(argv[3], NULL, 10));
	else if (argc >= 2 && argv[1][0] != '-')
		rc = run_files(argc - 1, argv + 1);
	else {
		fprintf(stderr, "usage: fuzz_abi --random SEED COUNT | --serve | FILE...\n");
		return 2;
	}
	if (rc == 0)
		printf("PASS fuzz_abi: %" PRIu64 " programs, %" PRIu64 " calls (%" PRIu64 " failed as expected), %" PRIu64
		       " clients, %" PRIu64 " sends and %" PRIu64 " twin requests accepted, %" PRIu64
		       " connects refused; every invariant held\n",
		       programs, calls, failures, created, accepted, requests, connected_tries);
	return rc;
}
